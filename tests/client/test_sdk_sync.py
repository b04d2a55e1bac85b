"""Gate (an AsyncGate on its own loop thread) against the real broker: round trips, routing."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pytest
from aiokafka import TopicPartition
from test_sdk_responder import ALLOWED_ACTION, Responder, agents_by_partition

from holdgate.client import Gate, partition_for, verify_verdict
from holdgate.errors import ActionDenied
from holdgate.cli.localkafka import free_port
from holdgate.reasons import INVALID_VERDICT, NO_PERMIT, TIMEOUT, UNAVAILABLE
from holdgate.settings import Settings

pytestmark = pytest.mark.kafka


AGENT = "support-bot-1"
TICKET = {"type": "Ticket", "id": "t-1", "attributes": {"priority": 2}}


@pytest.fixture
def gate(gate_settings: Settings) -> Iterator[Gate]:
    with Gate(settings=gate_settings, agent_id=AGENT, default_timeout=2.0) as g:
        yield g


def test_allow_round_trip(gate: Gate, responder: Responder, gate_settings: Settings) -> None:
    verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, context={"channel": "email"})
    assert verdict.allowed and verdict.codes == ["PERMITTED"]
    assert verdict.policy_version == "test" and verdict.key_id
    request = responder.seen[0][1]
    assert verdict.request_id == request.request_id and request.context == {"channel": "email"}
    assert verify_verdict(verdict, request, time.time()) is verdict


def test_deny_round_trip_keeps_worker_reasons(gate: Gate, responder: Responder) -> None:
    verdict = gate.check(action="tickets.delete", resource=TICKET)
    assert not verdict.allowed
    assert verdict.codes == [NO_PERMIT] and verdict.policy_version == "test"


def test_timeout_without_responder_is_a_local_deny(gate: Gate) -> None:
    started = time.monotonic()
    verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.5
    assert verdict.decision == "deny" and verdict.codes == [TIMEOUT]
    assert verdict.policy_version == "local" and verdict.expires_at == verdict.decided_at
    assert verdict.agent_id == AGENT and verdict.action_digest.startswith("sha256:")


def test_late_verdict_after_timeout_is_ignored(gate: Gate, responder: Responder) -> None:
    late = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=0.5,
                      context={"delay_ms": 1200})
    assert late.codes == [TIMEOUT]
    responder.wait_replied(1)
    deadline = time.monotonic() + 3
    while gate.stats["ignored"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gate.stats["ignored"] == 1 and gate.stats["verdicts"] == 0
    assert gate.check(action=ALLOWED_ACTION, resource=TICKET).allowed


@pytest.mark.parametrize(("mode", "message"), [
    ("tamper", "does not verify"),
    ("wrong_key", "unknown key"),
    ("unsigned", "unsigned"),
    ("expired", "expired"),
    ("bad_digest", "digest mismatch"),
    ("garbage", "does not decode"),
])
def test_untrustworthy_allow_is_invalid_verdict(gate: Gate, responder: Responder,
                                                mode: str, message: str) -> None:
    started = time.monotonic()
    verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, context={"respond": mode})
    assert verdict.decision == "deny" and verdict.codes == [INVALID_VERDICT]
    assert message in verdict.reasons[0].message
    assert time.monotonic() - started < 1.5      # resolved by the reply, not by the timeout


def test_guard_runs_only_on_allow(gate: Gate, responder: Responder) -> None:
    calls: list[tuple[str, int]] = []

    @gate.guard(action=ALLOWED_ACTION,
                resource=lambda ticket_id, **kw: {"type": "Ticket", "id": ticket_id},
                context=lambda ticket_id, lines=10, **kw: {"lines": lines})
    def read(ticket_id: str, lines: int = 10) -> str:
        calls.append((ticket_id, lines))
        return f"body of {ticket_id}"

    @gate.guard(action="tickets.delete",
                resource=lambda ticket_id, **kw: {"type": "Ticket", "id": ticket_id})
    def delete(ticket_id: str) -> None:
        calls.append((ticket_id, -1))

    assert read("t-9", 3) == "body of t-9"
    assert read.__name__ == "read" and calls == [("t-9", 3)]
    with pytest.raises(ActionDenied) as denied:
        delete("t-9")
    assert denied.value.verdict.codes == [NO_PERMIT] and calls == [("t-9", 3)]
    sent = {r.action: r for _, r in responder.seen}
    assert sent[ALLOWED_ACTION].resource.id == "t-9" and sent[ALLOWED_ACTION].context == {
        "lines": 3}


def test_guard_refuses_async_functions(gate: Gate) -> None:
    with pytest.raises(TypeError, match="AsyncGate"):
        @gate.guard(action=ALLOWED_ACTION, resource=TICKET)
        async def read() -> None: ...


def test_200_concurrent_checks_from_16_threads(gate: Gate, responder: Responder) -> None:
    actions = [ALLOWED_ACTION if i % 3 else "tickets.delete" for i in range(200)]

    def one(i: int) -> tuple[bool, str]:
        v = gate.check(action=actions[i], resource={"type": "Ticket", "id": f"t-{i}"},
                       context={"i": i})
        return v.allowed, v.request_id

    clients = threading.active_count()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    assert [ok for ok, _ in results] == [a == ALLOWED_ACTION for a in actions]
    assert len({rid for _, rid in results}) == 200
    stats = gate.stats
    assert stats["sent"] == 200 and stats["verdicts"] == 200 and stats["timeouts"] == 0
    assert threading.active_count() <= clients      # no client or thread per check


def test_two_agents_on_different_partitions_share_one_gate(
        gate_settings: Settings, responder: Responder) -> None:
    agents = agents_by_partition(responder.partitions)
    with Gate(settings=gate_settings, default_timeout=2.0) as gate:
        for agent in agents.values():
            verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, agent_id=agent)
            assert verdict.allowed and verdict.agent_id == agent
        assert gate.assigned_partitions() == frozenset(agents)
    assert {(p, r.agent_id) for p, r in responder.seen} == set(agents.items())


def test_assignment_holds_only_the_agents_partitions(gate_settings: Settings,
                                                     responder: Responder) -> None:
    agents = agents_by_partition(2)
    a0, a1 = agents[0], agents[1]
    topic = gate_settings.verdicts_topic
    with Gate(settings=gate_settings, agent_id=a0, default_timeout=2.0) as gate:
        assert gate.check(action=ALLOWED_ACTION, resource=TICKET).allowed
        assert consumer_assignment(gate) == {TopicPartition(topic, 0)}
        assert gate.check(action=ALLOWED_ACTION, resource=TICKET, agent_id=a1).allowed
        assert consumer_assignment(gate) == {TopicPartition(topic, 0), TopicPartition(topic, 1)}


def consumer_assignment(gate: Gate) -> set[TopicPartition]:
    """The Kafka consumer's own assignment, read on the gate's loop (which owns it)."""
    async def read() -> set[TopicPartition]:
        consumer = gate._gate._consumer
        assert consumer is not None
        return set(consumer.raw.assignment())   # type: ignore[attr-defined]

    return gate._runner.run(read(), 5.0)


def test_adding_an_agent_keeps_in_flight_verdicts(gate_settings: Settings,
                                                  responder: Responder) -> None:
    """Extending the assignment must not move the positions of partitions already read."""
    agents = agents_by_partition(2)
    a0, a1 = agents[0], agents[1]
    with Gate(settings=gate_settings, agent_id=a0, default_timeout=3.0) as gate:
        assert gate.check(action=ALLOWED_ACTION, resource=TICKET).allowed
        with ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(gate.check, action=ALLOWED_ACTION, resource=TICKET,
                                context={"delay_ms": 300}) for _ in range(8)]
            time.sleep(0.1)     # those are in flight; now a new partition joins
            assert gate.check(action=ALLOWED_ACTION, resource=TICKET, agent_id=a1).allowed
            assert all(f.result().allowed for f in slow)


def test_missing_topics_deny_unavailable_quickly(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()           # topics never created; broker won't auto-create
    with Gate(settings=settings, agent_id=AGENT) as gate:
        for _ in range(2):
            started = time.monotonic()
            verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=3.0)
            assert time.monotonic() - started < 1.5
            assert verdict.codes == [UNAVAILABLE]
            assert settings.actions_topic in verdict.reasons[0].message


def test_unreachable_broker_denies_within_timeout(gate_settings: Settings) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with Gate(settings=gate_settings, bootstrap=bootstrap, agent_id=AGENT) as gate:
        started = time.monotonic()
        verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.0)
        assert time.monotonic() - started < 1.5
        assert verdict.codes == [UNAVAILABLE] and bootstrap in verdict.reasons[0].message


def test_closed_gate_denies(gate_settings: Settings) -> None:
    gate = Gate(settings=gate_settings, agent_id=AGENT)
    gate.close()
    verdict = gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.0)
    assert verdict.codes == [UNAVAILABLE] and "closed" in verdict.reasons[0].message


def test_partition_matches_the_contract(gate: Gate, responder: Responder) -> None:
    gate.check(action=ALLOWED_ACTION, resource=TICKET)
    assert responder.seen[0][0] == partition_for(AGENT, responder.partitions)
