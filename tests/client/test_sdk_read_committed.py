"""Both gates read verdicts read_committed: an aborted verdict never reaches a check.

The worker writes verdicts in Kafka transactions; a verdict of a transaction it
aborted (a batch that failed, a zombie fenced off) must never be acted on.  The
responder writes one verdict per transaction on request and commits or aborts it.
"""
from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from test_sdk_responder import ALLOWED_ACTION, Responder

from holdgate.client import AsyncGate, Gate
from holdgate.reasons import TIMEOUT
from holdgate.settings import Settings

pytestmark = pytest.mark.kafka

TICKET = {"type": "Ticket", "id": "t-1"}
FIRST = 30.0     # the responder's first transaction may wait for the broker's transaction log


def written_request_ids(settings: Settings) -> set[str]:
    """Request ids of every verdict record in the log, aborted ones included."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_uncommitted")
    try:
        tps = [TopicPartition(settings.verdicts_topic, p)
               for p in consumer.partitions_for_topic(settings.verdicts_topic)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < ends[tp] for tp in tps) \
                and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                seen.update(orjson.loads(r.value)["request_id"] for r in records)
        return seen
    finally:
        consumer.close(autocommit=False)


def test_gate_acts_only_on_committed_verdicts(gate_settings: Settings,
                                              responder: Responder) -> None:
    with Gate(settings=gate_settings, agent_id="bot-rc-sync", default_timeout=2.0) as gate:
        first = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=FIRST,
                           context={"respond": "committed"})
        assert first.allowed and first.policy_version == "test"
        aborted = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.5,
                             context={"respond": "aborted"})
        assert aborted.codes == [TIMEOUT]
        after = gate.check(action=ALLOWED_ACTION, resource=TICKET,
                           context={"respond": "committed"})
        assert after.allowed and after.policy_version == "test"
        assert gate.stats["ignored"] == 0            # not even seen as a foreign record
    responder.wait_replied(3)
    # The aborted allow was written, signed and valid: only read_committed kept it out.
    assert aborted.request_id in written_request_ids(gate_settings)


async def test_async_gate_acts_only_on_committed_verdicts(gate_settings: Settings,
                                                          responder: Responder) -> None:
    async with AsyncGate(settings=gate_settings, agent_id="bot-rc-async",
                         default_timeout=2.0) as gate:
        first = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=FIRST,
                                 context={"respond": "committed"})
        assert first.allowed and first.policy_version == "test"
        aborted = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.5,
                                   context={"respond": "aborted"})
        assert aborted.codes == [TIMEOUT]
        after = await gate.check(action=ALLOWED_ACTION, resource=TICKET,
                                 context={"respond": "committed"})
        assert after.allowed and after.policy_version == "test"
        assert gate.stats["ignored"] == 0
    assert aborted.request_id in written_request_ids(gate_settings)
