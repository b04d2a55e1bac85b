"""Executor: every check has its own refusal code; an allow runs once, with the verified request."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from executor_helpers import NOW, Clock, make, sign

from holdgate.client.proof import Checked, SignedVerdict
from holdgate.errors import ConfigError, HoldgateError
from holdgate.events import ActionRequest
from holdgate.executor import ExecutionRefused, Executor, ReplayStore
from holdgate.executor import refusals as r
from holdgate.keys import Signer, TrustStore
from holdgate.signing import KID_HEADER, SIG_HEADER, sign_headers


class Tool:
    """A handler that counts its runs and what it was asked to do."""

    def __init__(self) -> None:
        self.runs: list[ActionRequest] = []

    def __call__(self, request: ActionRequest) -> str:
        self.runs.append(request)
        return f"refunded {request.context['amount_cents']}"


def refused(executor: Executor, signed: SignedVerdict | None, action: bytes | None,
            tool: Callable[[ActionRequest], Any] | None = None) -> ExecutionRefused:
    with pytest.raises(ExecutionRefused) as info:
        executor.execute(signed, action, tool or Tool())
    assert isinstance(info.value, HoldgateError)
    return info.value


def test_a_verified_allow_runs_once_with_the_request_from_the_verified_bytes(
        executor: Executor, signer: Signer) -> None:
    m, tool = make(signer, amount=250), Tool()
    assert executor.execute(m.signed, m.action, tool) == "refunded 250"
    assert tool.runs == [m.request]
    assert executor.replay.state(m.request.request_id) == "done"
    auth = executor.verify(m.signed, m.action)                 # verify alone claims nothing
    assert auth.verdict.key_id == signer.key_id and auth.action == m.action


def test_execute_checked_takes_what_the_gate_returned(executor: Executor,
                                                      signer: Signer) -> None:
    m, tool = make(signer), Tool()
    assert executor.execute_checked(Checked(m.verdict, m.action, m.signed), tool)
    assert len(tool.runs) == 1


def test_no_record_is_refused(executor: Executor, signer: Signer) -> None:
    m = make(signer)
    assert refused(executor, None, m.action).code == r.NO_VERDICT
    err = refused(executor, SignedVerdict(b"", (), m.verdict), m.action)
    assert err.code == r.NO_VERDICT


def test_unsigned_is_refused(executor: Executor, signer: Signer) -> None:
    m = make(signer)
    bare = SignedVerdict(m.signed.value, (), m.verdict)
    assert refused(executor, bare, m.action).code == r.UNSIGNED
    sig_only = SignedVerdict(m.signed.value, (m.signed.headers[0],), m.verdict)
    assert refused(executor, sig_only, m.action).code == r.UNSIGNED


def test_unknown_key_is_refused(executor: Executor) -> None:
    m = make(Signer.generate())                              # a perfectly signed forgery
    err = refused(executor, m.signed, m.action)
    assert err.code == r.UNKNOWN_KEY and err.request_id is None


def test_bad_signature_is_refused(executor: Executor, signer: Signer) -> None:
    m = make(signer)
    tampered = m.signed.value.replace(b'"policy_version":"test"', b'"policy_version":"tesT"')
    assert tampered != m.signed.value
    err = refused(executor, SignedVerdict(tampered, m.signed.headers, m.verdict), m.action)
    assert err.code == r.BAD_SIGNATURE
    # a trusted key id with another key's signature
    forged = sign_headers(Signer.generate(), m.signed.value)[0]
    headers = (forged, (KID_HEADER, signer.key_id.encode()))
    err = refused(executor, SignedVerdict(m.signed.value, headers, m.verdict), m.action)
    assert err.code == r.BAD_SIGNATURE


def test_a_deny_is_refused_and_the_parsed_field_is_never_trusted(
        executor: Executor, signer: Signer) -> None:
    deny = make(signer, decision="deny")
    assert refused(executor, deny.signed, deny.action).code == r.NOT_ALLOWED
    allow = make(signer)
    # The bytes say deny; the attached parsed verdict says allow: the bytes win.
    lying = SignedVerdict(deny.signed.value, deny.signed.headers, allow.verdict)
    assert refused(executor, lying, deny.action).code == r.NOT_ALLOWED


def test_a_different_action_is_refused_by_digest(executor: Executor, signer: Signer) -> None:
    m = make(signer, amount=100)
    other = orjson.loads(m.action)
    other["context"]["amount_cents"] = 100_000              # same request_id, bigger refund
    tool = Tool()
    assert refused(executor, m.signed, orjson.dumps(other), tool).code == r.DIGEST_MISMATCH
    # even re-serialised identical content with other bytes is not what the worker saw
    spaced = orjson.dumps(orjson.loads(m.action), option=orjson.OPT_INDENT_2)
    assert refused(executor, m.signed, spaced, tool).code == r.DIGEST_MISMATCH
    assert tool.runs == []


def test_a_verdict_for_another_request_or_agent_is_refused(executor: Executor,
                                                           signer: Signer) -> None:
    a, b = make(signer), make(signer)
    assert refused(executor, a.signed, b.action).code == r.MISMATCHED_REQUEST
    other_agent = make(signer, request_id=a.request.request_id, agent_id="billing-bot-2")
    assert refused(executor, a.signed, other_agent.action).code == r.MISMATCHED_REQUEST


def test_expired_is_refused(executor: Executor, signer: Signer, clock: Clock) -> None:
    m = make(signer, ttl=30.0)
    clock.now = m.verdict.expires_at                         # now < expires_at is required
    err = refused(executor, m.signed, m.action)
    assert err.code == r.EXPIRED and err.request_id == m.request.request_id


def test_decided_after_the_deadline_is_refused(executor: Executor, signer: Signer) -> None:
    m = make(signer, timeout=1.0, decided_after=1.5)         # the runtime had given up
    assert refused(executor, m.signed, m.action).code == r.LATE
    on_time = make(signer, timeout=1.0, decided_after=1.0)   # exactly at the deadline: fine
    assert executor.execute(on_time.signed, on_time.action, Tool())


def test_a_reused_request_id_is_refused(executor: Executor, signer: Signer) -> None:
    m, tool = make(signer), Tool()
    executor.execute(m.signed, m.action, tool)
    err = refused(executor, m.signed, m.action, tool)
    assert err.code == r.REPLAYED and len(tool.runs) == 1


def test_a_reused_request_id_is_refused_after_an_executor_restart(
        make_executor: Callable[..., Executor], signer: Signer, replay_path: Path) -> None:
    m, tool = make(signer), Tool()
    first = make_executor()
    first.execute(m.signed, m.action, tool)
    first.close()
    again = make_executor()                                 # same file, new process state
    assert refused(again, m.signed, m.action, tool).code == r.REPLAYED
    assert len(tool.runs) == 1 and replay_path.exists()


def test_a_crash_mid_run_never_allows_a_second_run(executor: Executor, signer: Signer) -> None:
    m = make(signer)

    def crashes(request: ActionRequest) -> None:
        raise RuntimeError("tool blew up half way")

    with pytest.raises(RuntimeError):
        executor.execute(m.signed, m.action, crashes)
    assert executor.replay.state(m.request.request_id) == "failed"
    assert refused(executor, m.signed, m.action).code == r.REPLAYED


def test_handlers_by_action_name(executor: Executor, signer: Signer) -> None:
    m, tool = make(signer), Tool()
    err = refused(executor, m.signed, m.action, {"tickets.read": tool})  # type: ignore[arg-type]
    assert err.code == r.NO_HANDLER
    assert executor.replay.state(m.request.request_id) is None        # nothing recorded
    assert executor.execute(m.signed, m.action, {"payments.refund": tool})
    assert len(tool.runs) == 1


def test_malformed_records_are_refused(executor: Executor, signer: Signer) -> None:
    m = make(signer)
    assert refused(executor, sign(signer, b"not json"), m.action).code == r.MALFORMED_VERDICT
    obj = orjson.loads(m.signed.value)
    obj["expires_at"] = "tomorrow"
    assert refused(executor, sign(signer, orjson.dumps(obj)), m.action).code == \
        r.MALFORMED_VERDICT
    obj["expires_at"] = None                                 # what orjson makes of inf/nan
    assert refused(executor, sign(signer, orjson.dumps(obj)), m.action).code == \
        r.MALFORMED_VERDICT
    assert refused(executor, m.signed, b"").code == r.MALFORMED_ACTION
    assert refused(executor, m.signed, b"{oops").code == r.MALFORMED_ACTION


def test_key_rotation_accepts_every_trusted_key(make_executor: Callable[..., Executor],
                                                signer: Signer, tmp_path: Path) -> None:
    new = Signer.generate()
    both = make_executor(signer, new)
    old_made, new_made = make(signer), make(new)
    assert both.execute(old_made.signed, old_made.action, Tool())
    assert both.execute(new_made.signed, new_made.action, Tool())
    retired = make_executor(new, path=tmp_path / "other.sqlite3")   # old key rotated out
    later = make(signer)
    assert refused(retired, later.signed, later.action).code == r.UNKNOWN_KEY
    fresh = make(new)
    assert retired.execute(fresh.signed, fresh.action, Tool())


def test_an_executor_without_keys_is_a_config_error(replay_path: Path) -> None:
    with pytest.raises(ConfigError):
        Executor(trust=TrustStore(), replay=ReplayStore(replay_path))


def test_every_refusal_code_is_distinct() -> None:
    assert len(set(r.CODES)) == len(r.CODES)
    assert NOW > 0 and SIG_HEADER == "hg-sig"


def test_a_batch_signed_verdict_runs_and_a_proof_from_its_batch_mate_does_not(
        executor: Executor, signer: Signer) -> None:
    """The worker signs a micro-batch once; each verdict proves itself with its Merkle path."""
    from holdgate.signing import sign_batch
    made = [make(signer, amount=100 + i) for i in range(3)]
    headers = sign_batch(signer, [m.signed.value for m in made])
    mixed = SignedVerdict(made[0].signed.value, headers[1], made[0].verdict)
    tool = Tool()
    assert refused(executor, mixed, made[0].action, tool).code == r.BAD_SIGNATURE
    for m, h in zip(made, headers):
        assert executor.execute(SignedVerdict(m.signed.value, h, m.verdict), m.action, tool) \
            == f"refunded {m.request.context['amount_cents']}"
    assert [t.request_id for t in tool.runs] == [m.request.request_id for m in made]
