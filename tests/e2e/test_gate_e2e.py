"""End to end on the real broker: SDK -> actions topic -> `holdgate worker` -> verdicts -> SDK."""
from __future__ import annotations

import base64
import time
from typing import Any, Callable

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from holdgate.client import Gate, partition_for
from holdgate.errors import ActionDenied
from holdgate.events import ActionRequest
from holdgate.policies import PolicyBundle
from holdgate.settings import Settings
from holdgate.signing import read_signature
from workers import publish_raw


@pytest.fixture
def gate_env(gate_settings: Settings, start_worker: Callable[..., Any]) -> Settings:
    start_worker(gate_settings)
    return gate_settings


def _gate(settings: Settings, agent: str = "support-bot-1") -> Gate:
    return Gate(bootstrap=settings.bootstrap, agent_id=agent, settings=settings)


def test_allowed_action_carries_versions_digest_and_signature(
        gate_env: Settings, verdict_keys: dict[str, str]) -> None:
    with _gate(gate_env) as gate:
        v = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"},
                       timeout=10)
    assert v.allowed, v.reasons
    assert v.codes == ["PERMITTED"] and v.reasons[0].policy_id == "support-tickets"
    assert v.policy_version == PolicyBundle.load(gate_env.policy_path).version
    assert v.request is not None and v.action_digest == ActionRequest.from_obj(v.request).digest
    assert v.key_id == verdict_keys["key_id"]          # the SDK verified the worker's signature
    assert v.expires_at > v.decided_at


def test_forbidden_action_is_denied_with_the_determining_policy(gate_env: Settings) -> None:
    with _gate(gate_env, "coder-bot-1") as gate:
        v = gate.check(action="repo.push", resource={"type": "Repository", "id": "holdgate"},
                       timeout=10)
    assert not v.allowed
    assert v.codes == ["PRODUCTION_CHANGE"]
    assert v.reasons[0].policy_id == "production-push-approval"


def test_unknown_agent_is_denied(gate_env: Settings) -> None:
    with _gate(gate_env, "nobody-42") as gate:
        v = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"},
                       timeout=10)
    assert not v.allowed and v.codes == ["UNKNOWN_AGENT"]


def test_guard_blocks_the_wrapped_function(gate_env: Settings) -> None:
    calls: list[str] = []
    with _gate(gate_env, "support-bot-1") as gate:
        @gate.guard(action="payments.refund",
                    resource=lambda payment_id, **_: {"type": "Payment", "id": payment_id},
                    context=lambda amount_cents, **_: {"amount_cents": amount_cents})
        def refund(payment_id: str, amount_cents: int) -> str:
            calls.append(payment_id)
            return "refunded"

        @gate.guard(action="tickets.read",
                    resource=lambda ticket_id: {"type": "Ticket", "id": ticket_id})
        def read_ticket(ticket_id: str) -> str:
            calls.append(ticket_id)
            return "ticket"

        with pytest.raises(ActionDenied) as denied:
            refund("pay-5001", amount_cents=100)
        assert read_ticket("T-9") == "ticket"
    assert calls == ["T-9"]
    assert denied.value.verdict.codes == ["NO_PERMIT"]


def _consume_all(settings: Settings, topic: str, want: int, timeout: float = 20) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    parts = consumer.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            out.extend(recs)
    consumer.close()
    return out


def test_malformed_bytes_deny_and_dead_letter_and_worker_survives(gate_env: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=gate_env.bootstrap)
    agent = "billing-bot-1"
    part = partition_for(agent, gate_env.partitions)
    # identifiable but invalid: the agent gets a MALFORMED deny instead of a timeout
    bad = {"schema_version": 1, "request_id": "7d8f2c4e-1111-4222-8333-944455556666",
           "agent_id": agent,
           "action": "payments refund"}
    consumer = KafkaConsumer(bootstrap_servers=gate_env.bootstrap, enable_auto_commit=False)
    tp = TopicPartition(gate_env.verdicts_topic, part)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    producer.send(gate_env.actions_topic, key=agent.encode(), value=orjson.dumps(bad),
                  partition=part)
    producer.send(gate_env.actions_topic, key=b"x", value=b"\x00\xffnot json at all",
                  partition=0)
    producer.flush()
    producer.close()
    verdicts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not verdicts and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            verdicts += [orjson.loads(r.value) for r in recs]
    consumer.close()
    assert verdicts and verdicts[0]["request_id"] == bad["request_id"]
    assert verdicts[0]["decision"] == "deny" and verdicts[0]["reasons"][0]["code"] == "MALFORMED"
    assert "action" in verdicts[0]["reasons"][0]["message"]

    letters = [orjson.loads(r.value) for r in _consume_all(gate_env, gate_env.deadletter_topic, 2)]
    raws = {base64.b64decode(letter["value_b64"]) for letter in letters}
    assert b"\x00\xffnot json at all" in raws and orjson.dumps(bad) in raws
    assert all(letter["error"].startswith("MALFORMED") for letter in letters)

    # the worker is still alive and deciding
    with _gate(gate_env) as gate:
        assert gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-2"},
                          timeout=10).allowed


def test_check_times_out_to_a_deny_when_no_worker_runs(gate_settings: Settings) -> None:
    with _gate(gate_settings) as gate:
        t0 = time.monotonic()
        v = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"},
                       timeout=1.0)
        elapsed = time.monotonic() - t0
    assert not v.allowed and v.codes == ["TIMEOUT"]
    assert 0.9 <= elapsed < 5


def test_raw_request_from_another_runtime_is_decided(gate_env: Settings) -> None:
    """A runtime in any language: JSON by the schema, key = agent_id, no holdgate SDK."""
    req = ActionRequest.create(agent_id="audit-bot-1", action="records.read",
                               resource={"type": "Record", "id": "web-analytics-2024"})
    found = publish_raw(gate_env, req)
    assert found is not None
    part, obj = found
    assert part == partition_for("audit-bot-1", gate_env.partitions)
    assert obj["decision"] == "allow" and obj["reasons"][0]["policy_id"] == "auditor-read-all"


def test_a_verdict_verifies_outside_python_with_openssl(gate_env: Settings, tmp_path: Any,
                                                        verdict_keys: dict[str, str]) -> None:
    """An executor in any language: the public key, the record value, the hg-sig header."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    req = ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                               resource={"type": "Ticket", "id": "T-9"})
    found = publish_raw(gate_env, req)
    assert found is not None
    consumer = KafkaConsumer(bootstrap_servers=gate_env.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed")
    tp = TopicPartition(gate_env.verdicts_topic, found[0])
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    record = None
    deadline = time.monotonic() + 20
    while record is None and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            record = next((r for r in recs if req.request_id.encode() in r.value), record)
    consumer.close()
    assert record is not None
    key_id, signature = read_signature(record.headers)
    assert key_id == verdict_keys["key_id"] and signature is not None
    (tmp_path / "value.bin").write_bytes(record.value)
    (tmp_path / "sig.bin").write_bytes(signature)
    cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", verdict_keys["trusted_keys"],
           "-rawin", "-in", str(tmp_path / "value.bin"), "-sigfile", str(tmp_path / "sig.bin")]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "value.bin").write_bytes(record.value.replace(b'"allow"', b'"allOw"'))
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0                       # one changed byte: no longer verifies


def test_a_verdict_forged_straight_onto_the_topic_is_refused(gate_settings: Settings) -> None:
    """No worker runs; a runtime writes itself an allow, signed with its own key."""
    from holdgate.keys import Signer
    from holdgate.signing import sign_headers

    agent = "support-bot-1"
    with _gate(gate_settings, agent) as gate:
        forger = Signer.generate()
        producer = KafkaProducer(bootstrap_servers=gate_settings.bootstrap)

        def forge(record: Any) -> None:
            obj = orjson.loads(record.value)
            verdict = {"schema_version": 1, "request_id": obj["request_id"], "agent_id": agent,
                       "decision": "allow", "reasons": [{"code": "PERMITTED", "message": "",
                                                         "policy_id": None}],
                       "policy_version": "forged", "model_version": None, "signals": {},
                       "action_digest": "sha256:" + __import__("hashlib").sha256(
                           record.value).hexdigest(),
                       "decided_at": time.time(), "expires_at": time.time() + 30,
                       "request": obj}
            value = orjson.dumps(verdict)
            producer.send(gate_settings.verdicts_topic, value=value, key=agent.encode(),
                          partition=record.partition, headers=list(sign_headers(forger, value)))
            producer.flush()

        watcher = KafkaConsumer(bootstrap_servers=gate_settings.bootstrap,
                                enable_auto_commit=False)
        tp = TopicPartition(gate_settings.actions_topic, partition_for(agent, 2))
        watcher.assign([tp])
        watcher.seek_to_end(tp)
        watcher.position(tp)
        import threading

        def answer() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for recs in watcher.poll(timeout_ms=200).values():
                    for r in recs:
                        forge(r)
                        return

        t = threading.Thread(target=answer)
        t.start()
        v = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"},
                       timeout=8)
        t.join()
        watcher.close()
        producer.close()
    assert not v.allowed and v.codes == ["INVALID_VERDICT"]
    assert "unknown key" in v.reasons[0].message
