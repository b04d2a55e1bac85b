"""The protocol core and pending verdicts: a hold is a deny, unless the check waits for its
approval.

Driven by hand like tests/client/test_core.py (its helpers): no broker, a fake clock.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from test_core import AGENT, SIGNER, FakeClock, bring_up, check, new_core

from holdgate.client.core import GateCore
from holdgate.client.steps import Pending
from holdgate.events import Reason, Verdict, decode_request, encode
from holdgate.reasons import PERMITTED, TIMEOUT
from holdgate.signing import sign_headers

Record = tuple[bytes, tuple[tuple[str, bytes], ...]]


def verdict(p: Pending, clock: FakeClock, decision: str, *, signed: bool = True,
            **changes: object) -> Record:
    """A worker verdict for `p`, decided now (the fake wall clock)."""
    now = clock.wall
    if decision == "pending":
        base = Verdict(request_id=p.request_id, agent_id=AGENT, decision="pending",
                       reasons=(Reason("SENSITIVE_DATA", "needs a human approval"),),
                       policy_version="p1", action_digest=p.digest, decided_at=now,
                       expires_at=now, awaiting="human")
    else:
        base = Verdict(request_id=p.request_id, agent_id=AGENT, decision=decision,
                       reasons=(Reason(PERMITTED),), policy_version="p1",
                       action_digest=p.digest, decided_at=now, expires_at=now + 30)
    value = encode(replace(base, **changes))  # type: ignore[arg-type]
    return value, sign_headers(SIGNER, value) if signed else ()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(clock: FakeClock) -> GateCore:
    core = new_core(clock)
    bring_up(core, object())
    return core


def test_request_deadline_covers_the_approval_wait(clock: FakeClock) -> None:
    core = new_core(clock)
    p = check(core, timeout=1.5, approval_wait=60.0)
    request = decode_request(p.value)                    # the bytes that are published
    assert request.deadline == pytest.approx(request.occurred_at + 1.2 + 60.0)
    assert request.occurred_at == clock.wall
    assert p.deadline == clock.mono + 1.5                 # the check itself waits 1.5 s first
    assert check(core, timeout=1.5).request.deadline == pytest.approx(clock.wall + 1.2)


def test_without_approval_wait_a_pending_verdict_resolves_the_check_at_once(
        core: GateCore, clock: FakeClock) -> None:
    p = check(core)
    core.admit(p)
    assert core.receive([verdict(p, clock, "pending")]) == [p]
    result = core.finish(p)
    assert result.decision == "pending" and not result.allowed
    assert result.awaiting == "human" and result.key_id == SIGNER.key_id
    assert not core.has_pending
    assert (core.stats["held"], core.stats["verdicts"]) == (0, 1)


def test_with_approval_wait_a_pending_verdict_waits_once_for_the_final_one(
        core: GateCore, clock: FakeClock) -> None:
    p = check(core, timeout=2.0, approval_wait=60.0)
    core.admit(p)
    first_deadline = p.deadline
    pending = verdict(p, clock, "pending")
    assert core.receive([pending]) == []                 # not resolved: still waiting
    assert p.result is None and core.has_pending
    assert p.deadline == first_deadline + 60.0
    assert core.stats["held"] == 1 and core.stats["verdicts"] == 0
    clock.advance(30.0)                                  # past the 2 s, within the approval wait
    assert core.receive([verdict(p, clock, "allow")]) == [p]
    result = core.finish(p)
    assert result.allowed and result.key_id == SIGNER.key_id, result
    assert p.deadline == first_deadline + 60.0
    assert not core.has_pending and core.stats["held"] == 1


def test_the_deadline_moves_only_once(core: GateCore, clock: FakeClock) -> None:
    p = check(core, timeout=2.0, approval_wait=60.0)
    core.admit(p)
    first_deadline = p.deadline
    pending = verdict(p, clock, "pending")
    core.receive([pending])
    woken = core.receive([pending])                      # a second pending: no more waiting
    assert p.deadline == first_deadline + 60.0 and core.stats["held"] == 1
    assert woken == [p] and not core.finish(p).allowed


def test_no_final_verdict_returns_the_held_pending_one_not_a_timeout(
        core: GateCore, clock: FakeClock) -> None:
    producer = core.producer
    p = check(core, timeout=2.0, approval_wait=10.0)
    core.admit(p)
    core.delivered(p, None)                              # acked
    pending = verdict(p, clock, "pending")
    core.receive([pending])
    clock.advance(12.5)                                  # 2 s + 10 s are up
    assert p.deadline <= clock.mono
    result, fence = core.expire(p)
    assert fence is None and producer is not None
    assert result.decision == "pending" and not result.allowed
    assert TIMEOUT not in result.codes and result.awaiting == "human"
    assert result.key_id == SIGNER.key_id and p.record == pending
    assert core.stats["timeouts"] == 0 and not core.has_pending
    core.receive([verdict(p, clock, "allow")])           # an approval after the check returned
    assert core.stats["ignored"] == 1


def test_without_any_verdict_the_approval_wait_does_not_extend_the_timeout(
        core: GateCore, clock: FakeClock) -> None:
    p = check(core, timeout=2.0, approval_wait=60.0)
    core.admit(p)
    core.delivered(p, None)
    assert p.deadline == clock.mono + 2.0                # only a pending verdict extends it
    clock.advance(2.0)
    result, fence = core.expire(p)
    assert result.codes == [TIMEOUT] and fence is None


def test_an_unsigned_pending_record_is_never_an_allow(core: GateCore, clock: FakeClock) -> None:
    p = check(core)
    core.admit(p)
    core.receive([verdict(p, clock, "pending", signed=False)])
    result = core.finish(p)
    assert not result.allowed and result.key_id is None

    # An unsigned pending record does not start the wait for an approval (a forger could
    # only stall the runtime with it): it resolves the check at once, as a deny.
    waiting = check(core, timeout=2.0, approval_wait=10.0)
    core.admit(waiting)
    deadline = waiting.deadline
    core.receive([verdict(waiting, clock, "pending", signed=False)])
    assert waiting.deadline == deadline and core.stats["held"] == 0
    result = core.finish(waiting)
    assert not result.allowed and result.decision == "pending" and result.key_id is None
    late = core.receive([verdict(waiting, clock, "allow", signed=False)])   # a forged lift
    assert late == []                                 # nobody is waiting for it any more


def test_an_unsigned_held_pending_expires_as_a_deny(core: GateCore, clock: FakeClock) -> None:
    p = check(core, timeout=2.0, approval_wait=10.0)
    core.admit(p)
    core.delivered(p, None)
    core.receive([verdict(p, clock, "pending", signed=False)])
    clock.advance(20.0)
    result, fence = core.expire(p)
    assert not result.allowed and result.key_id is None and fence is None
