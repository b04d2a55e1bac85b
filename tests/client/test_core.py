"""The sans-I/O protocol core, driven by hand: no broker, no threads, a fake clock."""
from __future__ import annotations

from dataclasses import replace

import pytest

from holdgate.client.core import RETRY_AFTER, GateCore
from holdgate.client.routing import GateConfig, partition_for
from holdgate.client.steps import Deny, Pending, Send, Step, Work
from holdgate.client.transport import TransportError
from holdgate.client.verify import Failure
from holdgate.events import Reason, Verdict, action_digest, decode_request, encode
from holdgate.reasons import INVALID_VERDICT, PERMITTED, TIMEOUT, UNAVAILABLE
from holdgate.keys import Signer, TrustStore
from holdgate.signing import sign_headers

SIGNER = Signer.generate()
AGENT = "bot-1"
CONFIG = GateConfig(bootstrap="h:9092", actions_topic="t.actions", verdicts_topic="t.verdicts",
                    trust=TrustStore([SIGNER.public_key]), client_id="c")
COUNTS = {"t.actions": 4, "t.verdicts": 4}


class FakeClock:
    def __init__(self) -> None:
        self.mono, self.wall = 100.0, 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def new_core(clock: FakeClock) -> GateCore:
    return GateCore(CONFIG, name="Gate", agent_id=AGENT, default_timeout=2.0, clock=clock)


def bring_up(core: GateCore, producer: object) -> None:
    """Play the driver through set-up, answering every step with success."""
    for expected in (Work.CONNECT, Work.OPEN_PRODUCER, Work.DISCOVER, Work.PREPARE,
                     Work.ASSIGN):
        step = core.next_work()
        assert isinstance(step, Step) and step.work is expected, (step, expected)
        if expected is Work.CONNECT:
            core.consumer_opened()
        elif expected is Work.OPEN_PRODUCER:
            core.producer_opened(producer)
        elif expected is Work.DISCOVER:
            core.discovered(COUNTS)
        elif expected is Work.PREPARE:
            core.producer_prepared()
        else:
            assert step.partitions == {partition_for(AGENT, 4)}
            core.assigned(step.partitions, {})
    assert core.next_work() is None


def check(core: GateCore, **kw: object) -> Pending:
    return core.begin(action="tickets.read", resource={"type": "Ticket", "id": "t-1"},
                      context=None, timeout=kw.pop("timeout", None), agent_id=None, **kw)


def allow(p: Pending, **changes: object) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    now = p.request.occurred_at                      # the fake clock's wall time
    verdict = Verdict(request_id=p.request_id, agent_id=AGENT, decision="allow",
                      reasons=(Reason(PERMITTED),), policy_version="p1", action_digest=p.digest,
                      decided_at=now, expires_at=now + 30)
    value = encode(replace(verdict, **changes))  # type: ignore[arg-type]
    return value, sign_headers(SIGNER, value)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_setup_runs_in_order_and_a_check_is_sent_only_when_ready(clock: FakeClock) -> None:
    core = new_core(clock)
    p = check(core)
    assert core.admit(p) is None                     # nothing is set up: wait
    producer = object()
    bring_up(core, producer)
    admission = core.admit(p)
    assert admission == Send(partition_for(AGENT, 4), producer)
    assert core.assigned_partitions == {partition_for(AGENT, 4)} and core.status == "ready"


def test_request_carries_its_deadline_and_the_digest_of_its_bytes(clock: FakeClock) -> None:
    core = new_core(clock)
    p = check(core, timeout=1.5)
    request = decode_request(p.value)               # exactly the bytes that are published
    assert request == p.request
    # the worker's deadline keeps the last fifth (at most 1 s) of the wait for delivery
    assert request.occurred_at == clock.wall and request.deadline == pytest.approx(clock.wall + 1.2)
    assert p.deadline == clock.mono + 1.5
    assert p.digest == action_digest(p.value) and p.key == AGENT.encode()
    assert check(core).request.deadline == pytest.approx(clock.wall + 1.6)  # the gate's default
    # the margin is capped at 1 s
    assert check(core, timeout=30).request.deadline == pytest.approx(clock.wall + 29.0)


def test_verdict_resolves_its_check_and_is_verified(clock: FakeClock) -> None:
    core = new_core(clock)
    bring_up(core, object())
    p, other = check(core), check(core)
    core.admit(p), core.admit(other)
    assert core.receive([allow(p), (b'{"request_id": "someone-else"}', ())]) == [p]
    verdict = core.finish(p)
    assert verdict.allowed and verdict.codes == [PERMITTED]
    stats = core.stats
    assert (stats["verdicts"], stats["ignored"]) == (1, 1)


def test_allow_must_bind_the_bytes_published(clock: FakeClock) -> None:
    core = new_core(clock)
    bring_up(core, object())
    p = check(core)
    core.admit(p)
    core.receive([allow(p, action_digest=action_digest(p.value + b" "))])
    verdict = core.finish(p)
    assert verdict.codes == [INVALID_VERDICT] and "digest" in verdict.reasons[0].message


def test_timeout_fences_the_producer_only_when_the_action_is_unacknowledged(
        clock: FakeClock) -> None:
    core = new_core(clock)
    producer = object()
    bring_up(core, producer)
    acked, unacked = check(core), check(core)
    core.admit(acked), core.admit(unacked)
    core.delivered(acked, None)
    verdict, fence = core.expire(acked)
    assert verdict.codes == [TIMEOUT] and fence is None
    verdict, fence = core.expire(unacked)
    assert verdict.codes == [TIMEOUT] and fence is producer
    core.receive([allow(acked)])                     # late: the check has returned
    assert core.stats["ignored"] == 1 and core.stats["timeouts"] == 2


def test_fenced_producer_denies_its_unacked_checks_and_is_replaced(clock: FakeClock) -> None:
    core = new_core(clock)
    old, new = object(), object()
    bring_up(core, old)
    acked, unacked = check(core), check(core)
    core.admit(acked), core.admit(unacked)
    core.delivered(acked, None)
    assert core.producer_fault(old, "broker gone") == [unacked]
    assert isinstance(unacked.result, Failure) and unacked.result.code == UNAVAILABLE
    denied = core.admit(check(core))                 # recovering: deny at once, say why
    assert isinstance(denied, Deny) and "broker gone" in denied.verdict.reasons[0].message
    assert core.next_work() == Step(Work.OPEN_PRODUCER)
    core.producer_opened(new)
    assert core.next_work() == Step(Work.PREPARE)
    core.producer_prepared()
    assert core.producer_fault(old, "stale report") == []       # old handle: no effect
    assert core.admit(fresh := check(core)) == Send(partition_for(AGENT, 4), new)
    assert core.receive([allow(acked), allow(fresh)]) == [acked, fresh]
    assert core.stats["fences"] == 1


def test_delivery_failure_is_an_unavailable_deny(clock: FakeClock) -> None:
    core = new_core(clock)
    bring_up(core, object())
    p = check(core)
    core.admit(p)
    assert core.delivered(p, TransportError("delivery failed: KafkaTimeoutError")) is p
    verdict = core.finish(p)
    assert verdict.codes == [UNAVAILABLE] and "KafkaTimeoutError" in verdict.reasons[0].message


def test_setup_failure_is_answered_from_cache_then_retried(clock: FakeClock) -> None:
    core = new_core(clock)
    core.consumer_opened()
    core.producer_opened(object())
    assert core.next_work() == Step(Work.DISCOVER)
    core.discovered({"t.actions": 4})               # verdicts topic missing
    denied = core.admit(check(core))
    assert isinstance(denied, Deny) and "'t.verdicts'" in denied.verdict.reasons[0].message
    assert core.next_work() is None                  # no retry loop while cached
    clock.advance(RETRY_AFTER / 2)
    assert isinstance(core.admit(check(core)), Deny)
    clock.advance(RETRY_AFTER)
    assert core.admit(check(core)) is None           # stale failure: set up again
    assert core.next_work() == Step(Work.DISCOVER)
    core.discovered({"t.actions": 4, "t.verdicts": 2})
    denied = core.admit(check(core))
    assert isinstance(denied, Deny) and "must match" in denied.verdict.reasons[0].message


def test_reconnect_attempts_back_off(clock: FakeClock) -> None:
    core = new_core(clock)
    waits = []
    for _ in range(5):
        assert core.next_work() == Step(Work.CONNECT)
        core.consumer_failed("broker h:9092 unreachable")
        denied = core.admit(check(core))                 # a check right now: deny from cache
        assert isinstance(denied, Deny) and "unreachable" in denied.verdict.reasons[0].message
        wait = core.next_work()
        assert isinstance(wait, float)
        waits.append(wait)
        clock.advance(wait)
    assert waits == sorted(waits) and waits[0] == pytest.approx(0.2) and waits[-1] <= 2.0


def test_consumer_fault_denies_every_check_and_reassigns_at_the_end(clock: FakeClock) -> None:
    core = new_core(clock)
    producer = object()
    bring_up(core, producer)
    p = check(core)
    core.admit(p)
    core.delivered(p, None)
    assert core.producer_fault(producer, "consumer broke") == []
    assert core.consumer_fault("consumer broke") == [p]
    assert core.assigned_partitions == frozenset()
    assert isinstance(core.admit(check(core)), Deny)
    core.next_work(), core.consumer_opened()
    core.next_work(), core.producer_opened(object())
    assert core.next_work() == Step(Work.PREPARE)    # partition count is still known
    core.producer_prepared()
    step = core.next_work()                          # the agent is re-assigned eagerly
    assert step == Step(Work.ASSIGN, frozenset({partition_for(AGENT, 4)}))


def test_position_failure_fails_only_that_partitions_agents(clock: FakeClock) -> None:
    core = new_core(clock)
    bring_up(core, object())
    other = next(a for a in (f"bot-{i}" for i in range(100))
                 if partition_for(a, 4) != partition_for(AGENT, 4))
    p = core.begin(action="tickets.read", resource={"type": "Ticket", "id": "t"},
                   context=None, timeout=None, agent_id=other)
    assert core.admit(p) is None
    step = core.next_work()
    assert isinstance(step, Step) and step.partitions == {partition_for(other, 4)}
    core.assigned(step.partitions, {partition_for(other, 4): "offset lookup timed out"})
    denied = core.admit(p)
    assert isinstance(denied, Deny) and "offset lookup timed out" in \
        denied.verdict.reasons[0].message
    assert isinstance(core.admit(check(core)), Send)  # the default agent is unaffected


def test_not_ready_and_closed(clock: FakeClock) -> None:
    core = new_core(clock)
    p = check(core, timeout=0.5)
    verdict = core.not_ready(p)
    assert verdict.codes == [UNAVAILABLE]
    assert "not ready within 0.5s: connecting to h:9092" in verdict.reasons[0].message
    bring_up(core, object())
    waiting = check(core)
    core.admit(waiting)
    assert core.close() == [waiting]
    assert core.finish(waiting).reasons[0].message == "gate is closed"
    denied = core.admit(check(core))
    assert isinstance(denied, Deny) and denied.verdict.reasons[0].message == "gate is closed"
    assert core.next_work() is None and core.stats["unavailable"] == 3


def test_check_needs_an_agent(clock: FakeClock) -> None:
    core = GateCore(CONFIG, name="Gate", agent_id=None, default_timeout=1.0, clock=clock)
    with pytest.raises(Exception, match="no agent_id"):
        check(core)
    assert core.next_work() == Step(Work.CONNECT)
    core.consumer_opened(), core.producer_opened(object())
    assert core.next_work() is None                  # no agent yet: nothing to discover
