"""SDK pieces that need no broker: routing, verification, configuration, import hygiene."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import orjson
import pytest

import holdgate.client as client
from holdgate.client import local_deny, partition_for, verify_verdict
from holdgate.client.routing import GateConfig, GuardSpec
from holdgate.client.verify import Failure, parse_record
from holdgate.events import ActionRequest, Reason, Verdict, encode
from holdgate.reasons import INVALID_VERDICT, NO_PERMIT, TIMEOUT
from holdgate.errors import ConfigError
from holdgate.keys import Signer, TrustStore, generate_keypair
from holdgate.settings import Settings
from holdgate.signing import sign_headers

SIGNER = Signer.generate()
TRUST = TrustStore([SIGNER.public_key])


def test_public_api() -> None:
    assert client.__all__ == ["Gate", "AsyncGate", "local_deny", "verify_verdict",
                              "partition_for", "Checked", "SignedVerdict"]
    assert client.AsyncGate.__name__ == "AsyncGate"


# Java's org.apache.kafka.common.utils.UtilsTest#testMurmur2 vectors (signed int32).
@pytest.mark.parametrize(("key", "java"), [
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
])
def test_partition_for_is_javas_default_partitioner(key: bytes, java: int) -> None:
    for n in (1, 2, 3, 4, 12, 64):
        assert partition_for(key.decode(), n) == (java & 0x7FFFFFFF) % n


def test_partition_for_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError):
        partition_for("a", 0)


def test_config_explicit_kwargs_beat_settings(tmp_path: object) -> None:
    _, public, key_id = generate_keypair(str(tmp_path), "worker")
    s = Settings(bootstrap="h:1", actions_topic="a.x", verdicts_topic="v.x",
                 deadletter_topic="d.x", trusted_keys=str(public))
    assert GateConfig.resolve(bootstrap=None, settings=s, trusted_keys=None).trust.key_ids == \
        [key_id]
    cfg = GateConfig.resolve(bootstrap="h:2", settings=s, trusted_keys=TRUST)
    assert (cfg.bootstrap, cfg.actions_topic, cfg.verdicts_topic, cfg.trust) == \
        ("h:2", "a.x", "v.x", TRUST)


def test_config_reads_env_when_no_settings(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: object) -> None:
    _, public, key_id = generate_keypair(str(tmp_path), "worker")
    monkeypatch.setenv("HOLDGATE_VERDICTS_TOPIC", "env.verdicts")
    monkeypatch.setenv("HOLDGATE_TRUSTED_KEYS", str(public))
    cfg = GateConfig.resolve(bootstrap="h:3", settings=None, trusted_keys=None)
    assert (cfg.bootstrap, cfg.verdicts_topic, cfg.trust.key_ids) == ("h:3", "env.verdicts",
                                                                      [key_id])


def test_a_gate_without_trusted_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOLDGATE_TRUSTED_KEYS", raising=False)
    with pytest.raises(ConfigError, match="HOLDGATE_TRUSTED_KEYS"):
        GateConfig.resolve(bootstrap="h:3", settings=None, trusted_keys=None)


def test_shared_hmac_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLDGATE_SIGNING_KEY", "change-me")
    with pytest.raises(ConfigError, match="holdgate keys generate"):
        Settings.from_env()


def test_guard_spec_binds_arguments_by_name() -> None:
    def refund(invoice_id: str, amount_cents: int, *, reason: str = "dup", **extra: int) -> None:
        ...

    spec = GuardSpec.for_function(
        refund, action="payments.refund",
        resource=lambda invoice_id, **kw: {"type": "Invoice", "id": invoice_id},
        context=lambda amount_cents, reason, **kw: {"amount_cents": amount_cents,
                                                    "reason": reason, **kw})
    resource, context = spec.build(("inv-1", 500), {"trace": 7})
    assert resource == {"type": "Invoice", "id": "inv-1"}
    assert context == {"amount_cents": 500, "reason": "dup", "invoice_id": "inv-1", "trace": 7}
    static = GuardSpec.for_function(refund, action="payments.refund",
                                    resource={"type": "Invoice", "id": "x"}, context=None)
    assert static.build(("inv-1", 1), {}) == ({"type": "Invoice", "id": "x"}, None)


# --------------------------------------------------------------------------- verification
def _request() -> ActionRequest:
    return ActionRequest.create(agent_id="bot-1", action="payments.refund",
                                resource={"type": "Invoice", "id": "inv-1",
                                          "attributes": {"amount_cents": 500}})


def _allow(request: ActionRequest, **changes: object) -> Verdict:
    now = time.time()
    verdict = Verdict(request_id=request.request_id, agent_id=request.agent_id,
                      decision="allow", reasons=(Reason("PERMITTED"),), policy_version="p1",
                      action_digest=request.digest, decided_at=now, expires_at=now + 30)
    return replace(verdict, **changes)  # type: ignore[arg-type]


def _received(verdict: Verdict, signer: Signer | None = SIGNER,
              tamper: bool = False) -> tuple[str | None, Verdict | Failure]:
    value = encode(verdict)
    headers = sign_headers(signer, value) if signer is not None else ()
    if tamper:
        value = value.replace(b'"p1"', b'"p2"')
    return parse_record(value, headers, TRUST)


def test_valid_signed_allow_passes() -> None:
    request = _request()
    _, verdict = _received(_allow(request))
    assert isinstance(verdict, Verdict) and verdict.key_id == SIGNER.key_id
    assert verify_verdict(verdict, request, time.time()) is verdict


@pytest.mark.parametrize(("change", "message"), [
    ({"request_id": "00000000-0000-0000-0000-000000000000"}, "not"),
    ({"agent_id": "bot-2"}, "agent"),
    ({"action_digest": "sha256:00"}, "digest mismatch"),
    ({"expires_at": 1.0}, "expired"),
    ({"expires_at": "never"}, "could not be checked"),
    ({"decided_at": 4e9}, "after the deadline"),
])
def test_bad_allow_becomes_invalid_verdict(change: dict[str, object], message: str) -> None:
    request = replace(_request(), deadline=time.time() + 60)
    _, signed = _received(_allow(request, **change))       # validly signed: only `change` fails
    assert isinstance(signed, Verdict)
    verdict = verify_verdict(signed, request, time.time())
    assert verdict.decision == "deny" and verdict.codes == [INVALID_VERDICT]
    assert message in verdict.reasons[0].message
    assert verdict.request_id == request.request_id and verdict.policy_version == "local"


@pytest.mark.parametrize(("signer", "tamper", "message"), [
    (None, False, "unsigned"),
    (Signer.generate(), False, "unknown key"),
    (SIGNER, True, "does not verify"),
])
def test_an_allow_without_a_trusted_signature_is_refused(signer: Signer | None, tamper: bool,
                                                         message: str) -> None:
    request = _request()
    rid, result = _received(_allow(request), signer, tamper)
    assert rid == request.request_id and isinstance(result, Failure)
    assert result.code == INVALID_VERDICT and message in result.message


def test_key_rotation_old_and_new_keys_both_verify() -> None:
    old, new = Signer.generate(), Signer.generate()
    trust = TrustStore([old.public_key, new.public_key])
    request = _request()
    for signer in (old, new):
        value = encode(_allow(request))
        _, verdict = parse_record(value, sign_headers(signer, value), trust)
        assert isinstance(verdict, Verdict) and verdict.key_id == signer.key_id
    retired = TrustStore([new.public_key])                   # the old key rotated out
    value = encode(_allow(request))
    assert isinstance(parse_record(value, sign_headers(old, value), retired)[1], Failure)


def test_worker_deny_is_returned_as_is_even_unsigned() -> None:
    request = _request()
    deny = _allow(request, decision="deny", reasons=(Reason(NO_PERMIT, "nope"),),
                  action_digest="sha256:other")
    _, received = _received(deny, signer=None)
    assert received == deny
    assert verify_verdict(received, request, time.time()) is received  # type: ignore[arg-type]


def test_local_deny_is_immediately_expired_and_bound() -> None:
    request = _request()
    verdict = local_deny(request, code=TIMEOUT, message="slow", now=100.0)
    assert (verdict.decision, verdict.codes, verdict.policy_version) == ("deny", [TIMEOUT],
                                                                          "local")
    assert verdict.decided_at == verdict.expires_at == 100.0
    assert verdict.action_digest == request.digest and verdict.key_id is None
    assert not verify_verdict(verdict, request, 100.0).allowed


def test_parse_record() -> None:
    request = _request()
    verdict = _allow(request)
    assert _received(verdict) == (request.request_id, replace(verdict, key_id=SIGNER.key_id))
    rid, failure = parse_record(orjson.dumps({"request_id": "r-1", "decision": "allow"}), (),
                                TRUST)
    assert rid == "r-1" and isinstance(failure, Failure) and failure.code == INVALID_VERDICT
    assert parse_record(b"\xff not json", (), TRUST)[0] is None
    assert parse_record(None, (), TRUST)[0] is None


# --------------------------------------------------------------------------- hygiene
def test_import_hygiene_in_a_fresh_interpreter() -> None:
    code = (
        "import sys, holdgate.client\n"
        "heavy = ('faust', 'numpy', 'sklearn', 'cedarpy', 'aiokafka', 'mode')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "holdgate.client.AsyncGate\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'faust', 'numpy', 'sklearn', "
        "'cedarpy', 'aiokafka'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == ["[]", "['aiokafka']"]
