"""ExecutorService without Kafka: records in, handlers run for verified allows only, once."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from executor_helpers import NOW, Clock, make, sign

from holdgate.client.proof import SignedVerdict
from holdgate.events import ActionRequest
from holdgate.executor import Executor, ExecutorService, Refusal
from holdgate.executor import refusals as r
from holdgate.keys import Signer
from holdgate.settings import Settings

SETTINGS = Settings(bootstrap="unused:9092", actions_topic="a", verdicts_topic="v",
                    deadletter_topic="d")


class Harness:
    def __init__(self, executor: Executor, clock: Clock) -> None:
        self.runs: list[ActionRequest] = []
        self.refusals: list[Refusal] = []
        self.executed: list[tuple[ActionRequest, Any]] = []
        self.service = ExecutorService(
            settings=SETTINGS, executor=executor, clock=clock,
            handlers={"payments.refund": self.refund},
            on_refusal=self.refusals.append,
            on_executed=lambda req, res: self.executed.append((req, res)))

    def refund(self, request: ActionRequest) -> str:
        self.runs.append(request)
        return "ok"

    def action(self, action: bytes) -> None:
        self.service.process([("a", action, ())])

    def verdict(self, signed: SignedVerdict) -> None:
        self.service.process([("v", signed.value, signed.headers)])


def harness(make_executor: Callable[..., Executor], clock: Clock) -> Harness:
    return Harness(make_executor(), clock)


def test_an_allow_runs_once_in_either_order(make_executor: Callable[..., Executor],
                                            signer: Signer, clock: Clock) -> None:
    h = harness(make_executor, clock)
    first, second = make(signer), make(signer)
    h.action(first.action)
    h.verdict(first.signed)
    h.verdict(second.signed)
    h.action(second.action)
    assert [req.request_id for req in h.runs] == [first.request.request_id,
                                                  second.request.request_id]
    assert [res for _, res in h.executed] == ["ok", "ok"]
    # the same records again (a restart re-reading the lookback window): refused, not rerun
    h.action(first.action)
    h.verdict(first.signed)
    assert len(h.runs) == 2 and h.refusals[-1].code == r.REPLAYED
    assert h.service.stats["executed"] == 2 and h.service.stats["replayed"] == 1


def test_a_deny_never_runs_and_discards_its_action(make_executor: Callable[..., Executor],
                                                   signer: Signer, clock: Clock) -> None:
    h = harness(make_executor, clock)
    deny = make(signer, decision="deny")
    h.action(deny.action)
    h.verdict(deny.signed)
    assert h.runs == [] and h.service.stats["denied"] == 1
    assert h.service.joiner.waiting == (0, 0)


def test_forged_and_unsigned_allows_never_run(make_executor: Callable[..., Executor],
                                              signer: Signer, clock: Clock) -> None:
    h = harness(make_executor, clock)
    forged = make(Signer.generate())
    h.action(forged.action)
    h.verdict(forged.signed)
    h.verdict(SignedVerdict(forged.signed.value, (), forged.verdict))
    h.verdict(sign(signer, b"garbage"))
    assert h.runs == []
    assert [x.code for x in h.refusals] == [r.UNKNOWN_KEY, r.UNSIGNED, r.MALFORMED_VERDICT]
    assert h.service.joiner.waiting == (1, 0)              # the forged allow is not buffered


def test_a_late_verdict_is_refused_even_when_joined(make_executor: Callable[..., Executor],
                                                    signer: Signer, clock: Clock) -> None:
    h = harness(make_executor, clock)
    late = make(signer, timeout=1.0, decided_after=2.0)
    h.action(late.action)
    h.verdict(late.signed)
    assert h.runs == [] and [x.code for x in h.refusals] == [r.LATE]


def test_unhandled_actions_are_not_buffered(make_executor: Callable[..., Executor],
                                            signer: Signer, clock: Clock) -> None:
    h = harness(make_executor, clock)
    other = make(signer, action="tickets.read")
    h.action(other.action)
    h.verdict(other.signed)
    h.action(b"not json")
    assert h.runs == [] and h.service.joiner.waiting == (0, 0)
    assert h.service.stats["unhandled"] == 1


def test_a_failing_handler_is_reported_and_not_retried(make_executor: Callable[..., Executor],
                                                       signer: Signer, clock: Clock) -> None:
    errors: list[tuple[ActionRequest, BaseException]] = []
    calls: list[str] = []

    def broken(request: ActionRequest) -> None:
        calls.append(request.request_id)
        raise RuntimeError("tool down")

    service = ExecutorService(settings=SETTINGS, executor=make_executor(), clock=clock,
                              handlers={"payments.refund": broken},
                              on_error=lambda req, exc: errors.append((req, exc)))
    m = make(signer)
    for _ in range(2):
        service.process([("a", m.action, ()), ("v", m.signed.value, m.signed.headers)],
                        now=NOW)
    assert len(calls) == 1 and errors[0][0].request_id == m.request.request_id
    assert service.stats["failed"] == 1 and service.stats["replayed"] == 1


def test_a_decision_that_is_not_final_keeps_the_action_waiting(
        make_executor: Callable[..., Executor], signer: Signer, clock: Clock) -> None:
    """Only a final deny discards: an allow may follow a pending decision for the same bytes."""
    h = harness(make_executor, clock)
    m = make(signer)
    pending = orjson.loads(m.signed.value)
    pending.update(decision="pending", reasons=[{"code": "APPROVAL_REQUIRED", "message": "",
                                                 "policy_id": None}])
    h.action(m.action)
    h.verdict(sign(signer, orjson.dumps(pending)))
    assert h.runs == [] and h.service.joiner.waiting == (1, 0)
    assert h.refusals[0].code in (r.NOT_ALLOWED, r.MALFORMED_VERDICT)
    h.verdict(m.signed)                                   # the final allow, later
    assert [req.request_id for req in h.runs] == [m.request.request_id]
