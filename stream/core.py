"""The decision core: decoded actions and per-agent state in, `Decision` objects out.

Pure and deterministic: no bytes, no signing, no wall clock, no Kafka, no
Faust.  Everything a decision depends on is an argument: the action (with the
partition, offset and *event time* it was recorded at), the agent's state, the
partition's recovery mark, the frozen `Snapshot` (policy engine, signal model,
limits) and ``decided_at``, the moment the driver decides (only the deadline
check reads it).  The live worker, `replay`, `backtest`, the bench and the tests
all reach decisions through `decide`, so a history replayed under the same
snapshot reproduces every recorded decision.

Per action, in order:

1. operator controls (revoked agents, suspended actions, agents or roles) and
   clock skew: refused before any state is touched (the routing contract, an
   agent on its own partition, is checked by the decoding edge);
2. a request id the agent already had decided is a duplicate: no second decision;
3. the agent's state is loaded (reset when idle longer than ``idle_ttl`` of
   event time: the same answer whether or not a sweep already deleted it);
4. signals observe the action (every admitted attempt counts, denied ones too);
5. a partition whose state was lost is held (``STATE_RECOVERING``), else Cedar;
6. an action decided after its deadline is ``EXPIRED``, whatever Cedar said.

A snapshot may carry a *shadow* candidate (another policy engine and/or signal
model): every action that reaches Cedar is also decided under it, from the
same counters (a shadow model re-reads them, `SignalComputer.rederive`), and
the result is recorded in `Decision.shadow`, never enforced and never fed back
into state.  With no shadow, nothing of this runs.

A batch is processed in *waves* of at most one action per agent (observe, then
Cedar, then feed the outcomes back), so every signal equals what one-at-a-time
processing gives, whatever the batch boundaries are.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, MutableMapping, Protocol, Sequence

from holdgate import reasons as rc
from holdgate.controls import Controls
from holdgate.events import ActionRequest, Decided, Reason
from holdgate.fastinit import fast_init
from holdgate.models.state import AgentState, request_key
from holdgate.routing import partition_for
from holdgate.stream.marks import PartitionMarks

__all__ = ["Snapshot", "Shadow", "Action", "Decision", "PolicySource", "SignalSource",
           "decide", "redecide", "event_view"]

Outcome = Literal["allow", "deny", "pending"]


class PolicySource(Protocol):
    """What the core needs of the Cedar engine (`holdgate.policies.PolicyEngine`)."""

    def decide_many(self, items: Sequence[tuple[ActionRequest, Mapping[str, int]]]
                    ) -> list[Any]: ...


class SignalSource(Protocol):
    """Per-agent behavioural signals (`holdgate.models.SignalComputer`)."""

    @property
    def model_version(self) -> str: ...

    def observe_batch(self, states: MutableMapping[str, Any],
                      requests: Sequence[ActionRequest]) -> list[dict[str, int]]: ...

    def record_outcomes(self, states: MutableMapping[str, Any],
                        requests: Sequence[ActionRequest], denied: Sequence[bool]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Shadow:
    """A candidate decided beside the enforced snapshot, for the record only.

    `signals` None: the enforced signals as they are (a policy-only candidate);
    else a computer with the candidate model that re-reads the same counters.
    """

    engine: PolicySource
    policy_version: str
    signals: Any = None
    model_version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything a decision depends on besides the action and the agent's state.

    Frozen: a driver swaps the whole snapshot between two batches, never part of
    it under one, so every verdict names versions that really decided it.
    """

    engine: PolicySource
    policy_version: str
    signals: SignalSource | None = None
    max_clock_skew: float = 10.0
    recovery_hold: float = 60.0
    idle_ttl: float = 86_400.0
    partitions: int | None = None      # set: verdicts go to the agent's partition
    controls: Controls | None = None   # operator kill switch, applied before anything else
    roles: Mapping[str, str] = field(default_factory=dict)   # agent -> role (entity store)
    shadow: Shadow | None = None       # a candidate decided beside, never enforced
    unavailable: str | None = None     # set: deny everything STATE_RECOVERING (this reason)

    @property
    def model_version(self) -> str | None:
        return self.signals.model_version if self.signals is not None else None


@fast_init
@dataclass(frozen=True, slots=True)
class Action:
    """A decoded, validated action and where and when it was recorded."""

    request: ActionRequest
    digest: str                 # action_digest of the record value as published
    partition: int
    offset: int | None          # None: not read from Kafka (a JSON Lines history)
    event_time: float           # broker append time, or occurred_at for a file history
    published: Any = None       # the JSON object as published (goes into the verdict)
    decided_at: float | None = None   # replay: when the recorded verdict was decided


@fast_init
@dataclass(frozen=True, slots=True)
class Decision(Decided):
    """One decision, before it is sealed into a signed wire verdict."""

    request_id: str
    agent_id: str
    decision: Outcome
    reasons: tuple[Reason, ...]
    signals: Mapping[str, int]
    policy_version: str
    model_version: str | None
    partition: int              # where the agent listens for it
    offset: int | None
    event_time: float
    digest: str
    request: Any = None         # the request as published; None when it could not be parsed
    deadline: float | None = None
    duplicate: bool = False     # a request id already decided: dead-lettered, not answered
    awaiting: str | None = None  # pending: the approver role(s) that can lift the hold
    shadow: Mapping[str, Any] | None = None   # the shadow candidate's decision (the record)


_RECOVERING = (Reason(rc.STATE_RECOVERING, "per-agent state for this partition was lost; "
                      "limits that cannot be counted are not enforced by guesswork"),)
_NO_REASON = (Reason(rc.NO_PERMIT, "no reason"),)


@dataclass(slots=True)
class _Slot:
    index: int                  # position in the batch
    action: Action
    view: ActionRequest         # what the signals see (event time clamped to the broker's)
    key: bytes                  # request_key of the request id
    holding: bool = False
    signals: Mapping[str, int] = field(default_factory=dict)
    outcome: Outcome = "deny"
    reasons: tuple[Reason, ...] = _RECOVERING
    awaiting: str | None = None
    final: Decision | None = None
    shadow: dict[str, Any] | None = None


def decide(snapshot: Snapshot, actions: Sequence[Action],
           states: MutableMapping[str, AgentState], marks: PartitionMarks,
           decided_at: float) -> list[Decision]:
    """Decide `actions` in order; `states` and `marks` are updated in place.

    `states` maps agent id to `AgentState` (an object with a ``corrupt`` set of
    agent ids whose stored blob did not decode is honoured).  Returns one
    `Decision` per action, in order (duplicates flagged, see `Decision.duplicate`).
    """
    slots: list[_Slot] = []
    out: list[Decision | None] = [None] * len(actions)
    for i, action in enumerate(actions):
        early = _admission(snapshot, action)
        marks.observe(action.partition, action.event_time)
        if early is not None:
            out[i] = _decision(snapshot, action, "deny", early, {})
        else:
            slots.append(_Slot(i, action, event_view(action),
                               request_key(action.request.request_id)))
    corrupt: set[str] = getattr(states, "corrupt", set())
    for wave in _waves(slots):
        _decide_wave(snapshot, wave, states, marks, corrupt, decided_at)
    for slot in slots:
        out[slot.index] = slot.final
    assert all(d is not None for d in out), "every action gets a decision"
    return out  # type: ignore[return-value]


def _admission(snapshot: Snapshot, action: Action) -> tuple[Reason, ...] | None:
    """Checks before any state is touched: operator controls, then the clock.

    (The routing contract is the edge's.)  A revoked or suspended agent's
    attempts do not touch its state: it is stopped, not learned from.
    """
    request = action.request
    if snapshot.unavailable is not None:        # e.g. published versions not known yet
        return (Reason(rc.STATE_RECOVERING, snapshot.unavailable),)
    if snapshot.controls is not None:
        stopped = snapshot.controls.check(request.agent_id, snapshot.roles.get(request.agent_id),
                                          request.action)
        if stopped is not None:
            return (stopped,)
    skew = request.occurred_at - action.event_time
    if abs(skew) > snapshot.max_clock_skew:
        direction = "ahead of" if skew > 0 else "behind"
        source = "broker's" if action.offset is not None else "recorded"
        return (Reason(rc.CLOCK_SKEW, f"occurred_at is {abs(skew):.1f}s {direction} the "
                       f"{source} time (limit {snapshot.max_clock_skew:.0f}s)"),)
    return None


def _load(states: MutableMapping[str, AgentState], agent: str, now: float,
          idle_ttl: float) -> AgentState:
    state = states.get(agent)
    if state is None or (state.clock and now - state.clock > idle_ttl):
        state = AgentState()       # idle longer than idle_ttl: forgotten, swept or not
        states[agent] = state
    return state


def _decide_wave(snapshot: Snapshot, wave: list[_Slot], states: MutableMapping[str, AgentState],
                 marks: PartitionMarks, corrupt: set[str], decided_at: float) -> None:
    """One action per agent: admit, observe, decide, feed outcomes back."""
    live: list[_Slot] = []
    for slot in wave:
        request = slot.action.request
        state = _load(states, request.agent_id, slot.view.occurred_at, snapshot.idle_ttl)
        if state.has_request(slot.key):
            slot.final = _decision(snapshot, slot.action, "deny", (Reason(
                rc.DUPLICATE_REQUEST, "request_id already decided for this agent"),), {},
                duplicate=True)
            continue
        live.append(slot)
    if snapshot.signals is not None and live:
        observed = snapshot.signals.observe_batch(states, [s.view for s in live])
        for slot, sig in zip(live, observed, strict=True):
            slot.signals = sig
    todo: list[_Slot] = []
    for slot in live:
        action = slot.action
        if action.request.agent_id in corrupt:
            marks.force_hold(action.partition, action.event_time)
        slot.holding = marks.holding(action.partition, action.event_time)
        if not slot.holding:
            todo.append(slot)
    if todo:
        answers = snapshot.engine.decide_many([(s.action.request, s.signals) for s in todo])
        for slot, answer in zip(todo, answers, strict=True):
            slot.outcome = answer.decision if answer.decision in ("allow", "pending") else "deny"
            slot.reasons = tuple(answer.reasons) or _NO_REASON
            slot.awaiting = getattr(answer, "awaiting", None)
    if snapshot.shadow is not None and todo:
        _shadow(snapshot.shadow, todo, states, decided_at)
    if snapshot.signals is not None and live:
        snapshot.signals.record_outcomes(states, [s.view for s in live],
                                         [s.outcome != "allow" for s in live])
    for slot in live:
        agent = slot.action.request.agent_id
        state = states[agent]
        state.remember_request(slot.key)
        states[agent] = state          # assigned back: a store persists only assignments
        at = slot.action.decided_at if slot.action.decided_at is not None else decided_at
        outcome, reasons = _expire(slot.action, slot.outcome, slot.reasons, at,
                                   slot.action.event_time)
        slot.final = _decision(snapshot, slot.action, outcome, reasons, slot.signals,
                               awaiting=slot.awaiting if outcome == "pending" else None,
                               shadow=slot.shadow)


def _shadow(shadow: Shadow, todo: list[_Slot], states: MutableMapping[str, AgentState],
            decided_at: float) -> None:
    """Decide the wave's Cedar-bound actions under the candidate too (record only)."""
    if shadow.signals is None:
        signals = [s.signals for s in todo]
    else:
        clocks = [states[s.action.request.agent_id].clock for s in todo]
        signals = shadow.signals.rederive([s.signals for s in todo], [s.view for s in todo],
                                          clocks)
    answers = shadow.engine.decide_many([(s.action.request, sig)
                                         for s, sig in zip(todo, signals, strict=True)])
    for slot, answer, sig in zip(todo, answers, signals, strict=True):
        outcome: Outcome = answer.decision if answer.decision in ("allow", "pending") \
            else "deny"
        at = slot.action.decided_at if slot.action.decided_at is not None else decided_at
        outcome, reasons = _expire(slot.action, outcome, tuple(answer.reasons) or _NO_REASON,
                                   at, slot.action.event_time)
        slot.shadow = {
            "decision": outcome,
            "reasons": [{"code": r.code, "message": r.message, "policy_id": r.policy_id}
                        for r in reasons],
            "policy_version": shadow.policy_version, "model_version": shadow.model_version,
            # a policy-only candidate reads the enforced signals themselves: nothing differs
            "signals": {} if sig is slot.signals else
            {k: v for k, v in sig.items() if slot.signals.get(k) != v}}


def _expire(action: Action, outcome: Outcome, reasons: tuple[Reason, ...], decided_at: float,
            event_time: float) -> tuple[Outcome, tuple[Reason, ...]]:
    """After its deadline an action is denied EXPIRED, whatever the policy said.

    The policy's own answer follows the EXPIRED reason, for the record (and for
    the counters: the 1 h windows saw it as what the policy decided).
    """
    deadline = action.request.deadline
    if deadline is None or max(decided_at, event_time) <= deadline:
        return outcome, reasons
    late = max(decided_at, event_time) - deadline
    return "deny", (Reason(rc.EXPIRED, f"decided {late:.3f}s after the request's deadline; "
                           "the runtime stopped waiting"),) + reasons


def redecide(snapshot: Snapshot, action: Action, signals: Mapping[str, int],
             approval: Mapping[str, Any], decided_at: float, event_time: float) -> Decision:
    """Decide a held action again, with a verified approval (the worker checked the token).

    The action was counted when it was first held, so the signals it was held
    with are reused and no state changes: only the operator controls in force
    now, the policies with ``context.approval`` and the deadline decide.
    """
    request = action.request
    if snapshot.unavailable is not None:
        return _decision(snapshot, action, "deny",
                         (Reason(rc.STATE_RECOVERING, snapshot.unavailable),), signals)
    if snapshot.controls is not None:
        stopped = snapshot.controls.check(request.agent_id, snapshot.roles.get(request.agent_id),
                                          request.action)
        if stopped is not None:
            return _decision(snapshot, action, "deny", (stopped,), signals)
    approved = dataclasses.replace(request, context={**request.context,
                                                     "approval": dict(approval)})
    answer = snapshot.engine.decide_many([(approved, signals)])[0]
    outcome: Outcome = answer.decision if answer.decision in ("allow", "pending") else "deny"
    outcome, reasons = _expire(action, outcome, tuple(answer.reasons) or _NO_REASON,
                               decided_at, event_time)
    return _decision(snapshot, action, outcome, reasons, signals,
                     awaiting=getattr(answer, "awaiting", None) if outcome == "pending"
                     else None)


def _decision(snapshot: Snapshot, action: Action, outcome: Outcome,
              reasons: tuple[Reason, ...], signals: Mapping[str, int], *,
              awaiting: str | None = None, shadow: Mapping[str, Any] | None = None,
              duplicate: bool = False) -> Decision:
    # Built once with every field: a frozen dataclass costs ~5 µs to build, and a
    # `dataclasses.replace` afterwards built every decision twice (bench/decide.py).
    request = action.request
    partition = action.partition
    if snapshot.partitions:
        partition = partition_for(request.agent_id, snapshot.partitions)  # where it listens
    return Decision(
        request_id=request.request_id, agent_id=request.agent_id, decision=outcome,
        reasons=reasons, signals=dict(signals), policy_version=snapshot.policy_version,
        model_version=snapshot.model_version, partition=partition, offset=action.offset,
        event_time=action.event_time, digest=action.digest,
        request=action.published if action.published is not None else request.to_obj(),
        deadline=request.deadline, duplicate=duplicate, awaiting=awaiting, shadow=shadow)


def _waves(slots: list[_Slot]) -> list[list[_Slot]]:
    """Split a batch so that each wave holds at most one action per agent, in order."""
    waves: list[list[_Slot]] = []
    seen: dict[str, int] = {}
    for slot in slots:
        agent = slot.action.request.agent_id
        k = seen.get(agent, 0)
        seen[agent] = k + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(slot)
    return waves


def event_view(action: Action) -> ActionRequest:
    """The request as the counters see it: never later than it was recorded.

    The actions topic uses LogAppendTime, so the event time is the broker's,
    stored in the log (a replay reads the same value).  An agent that stamps
    its actions into the future to spread a burst over more seconds gains
    nothing; stamping into the past is capped by the per-agent clock, which
    never moves backwards.
    """
    request = action.request
    if request.occurred_at > action.event_time:
        return dataclasses.replace(request, occurred_at=action.event_time)
    return request
