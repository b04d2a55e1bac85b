"""Agent payloads end to end on the real broker: floats, nulls and MCP tool names decided by a
`holdgate worker`, and records that must be refused (no key, duplicate keys, a lone
surrogate) answered with a MALFORMED deny instead of a timeout."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from workers import publish_raw

from holdgate.client import Gate, partition_for
from holdgate.events import action_digest
from holdgate.settings import Settings

AGENT = "support-bot-1"


@pytest.fixture
def gate_env(gate_settings: Settings, start_worker: Callable[..., Any]) -> Settings:
    start_worker(gate_settings)
    return gate_settings


def _record(request_id: str, context: bytes, *, action: bytes = b"send_email") -> bytes:
    return (b'{"schema_version":1,"request_id":"%s","agent_id":"%s","action":"%s",'
            b'"resource":{"type":"Email","id":"welcome-cus-1002"},"context":%s,'
            b'"occurred_at":%.3f}') % (request_id.encode(), AGENT.encode(), action, context,
                                       time.time())


def test_sdk_floats_nulls_and_an_mcp_tool_are_decided(gate_env: Settings) -> None:
    with Gate(bootstrap=gate_env.bootstrap, agent_id=AGENT, settings=gate_env) as gate:
        allowed = gate.check(action="send_email",
                             resource={"type": "Email", "id": "welcome-cus-1002"},
                             context={"spam_score": 0.12, "cc": None,
                                      "thread": {"id": "th-9", "parent": None}}, timeout=10)
        spammy = gate.check(action="send_email", resource={"type": "Email", "id": "w-2"},
                            context={"spam_score": 0.93}, timeout=10)
        wrong_kind = gate.check(action="send_email", resource={"type": "Email", "id": "w-3"},
                                context={"spam_score": 0}, timeout=10)
    assert allowed.allowed, allowed.reasons
    assert allowed.reasons[0].policy_id == "support-mcp-send-email"
    assert allowed.request is not None and allowed.request["context"] == {
        "spam_score": 0.12, "thread": {"id": "th-9"}}             # the SDK sends the view
    assert spammy.codes == ["NO_PERMIT"]
    assert wrong_kind.codes == ["POLICY_ERROR"] and "decimal" in wrong_kind.reasons[0].message
    with Gate(bootstrap=gate_env.bootstrap, agent_id="billing-bot-1", settings=gate_env) as gate:
        refund = gate.check(action="payments.refund",
                            resource={"type": "Payment", "id": "pay-5001"},
                            context={"amount_cents": 4500.0}, timeout=10)
    assert not refund.allowed and set(refund.codes) == {"POLICY_ERROR"}   # schema says Long


def test_raw_floats_and_nulls_from_another_runtime_bind_the_exact_bytes(
        gate_env: Settings) -> None:
    request_id = "3f1c2b4a-5d6e-4f70-8192-a3b4c5d6e7f8"
    value = _record(request_id, b'{"spam_score":1.2e-1,"cc":null,"thread":{"parent":null}}')
    found = publish_raw(gate_env, value)
    assert found is not None
    verdict = found[1]
    assert verdict["decision"] == "allow", verdict["reasons"]
    assert verdict["action_digest"] == action_digest(value)      # the bytes as published
    assert verdict["request"]["context"]["cc"] is None           # echoed as sent


def _send(settings: Settings, value: bytes, key: bytes | None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    producer.send(settings.actions_topic, key=key, value=value,
                  partition=partition_for(AGENT, settings.partitions))
    producer.flush()
    producer.close()


def _verdicts_for(settings: Settings, request_ids: set[str],
                  timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed")
    tp = TopicPartition(settings.verdicts_topic, partition_for(AGENT, settings.partitions))
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while set(found) != request_ids and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                verdict = orjson.loads(record.value)
                if verdict["request_id"] in request_ids:
                    found[verdict["request_id"]] = verdict
    consumer.close()
    return found


def test_refused_records_get_a_malformed_deny_not_a_timeout(gate_env: Settings) -> None:
    keyless = "00000000-0000-4000-8000-00000000000a"
    duplicate = "00000000-0000-4000-8000-00000000000b"
    surrogate = "00000000-0000-4000-8000-00000000000c"
    _send(gate_env, _record(keyless, b'{"spam_score":0.1}'), None)      # right partition, no key
    _send(gate_env, _record(duplicate, b'{"spam_score":0.1,"spam_score":0.9}'), AGENT.encode())
    # keys sorted as Go writes them: the context's own request_id comes before the real one
    _send(gate_env, (b'{"action":"send_email","agent_id":"%s","context":{"note":"\\ud800",'
                     b'"request_id":"11111111-2222-4333-8444-555555555555"},"occurred_at":%.3f,'
                     b'"request_id":"%s","resource":{"id":"e","type":"Email"},"schema_version":1}'
                     % (AGENT.encode(), time.time(), surrogate.encode())), AGENT.encode())
    verdicts = _verdicts_for(gate_env, {keyless, duplicate, surrogate})
    assert set(verdicts) == {keyless, duplicate, surrogate}
    messages = {rid: v["reasons"][0]["message"] for rid, v in verdicts.items()}
    assert all(v["decision"] == "deny" and v["reasons"][0]["code"] == "MALFORMED"
               for v in verdicts.values()), messages
    assert "record key must be the agent_id" in messages[keyless]
    assert "context.spam_score" in messages[duplicate] and "twice" in messages[duplicate]
    assert "surrogate" in messages[surrogate]
    # and the worker keeps deciding
    with Gate(bootstrap=gate_env.bootstrap, agent_id=AGENT, settings=gate_env) as gate:
        assert gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"},
                          timeout=10).allowed
