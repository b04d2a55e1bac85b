"""The decision pipeline for one micro-batch: decode ▶ validate ▶ signals ▶ Cedar ▶ verdict.

Pure and synchronous: the Faust agent hands it raw records and produces what
it returns; `bench/` and the unit tests drive the very same object.
Nothing here may raise out of `decide_batch`: a bad record becomes a
dead-letter (and a MALFORMED deny when the waiting agent can be identified),
and an unexpected bug denies the whole batch with INTERNAL_ERROR.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, MutableMapping, Protocol, Sequence

from holdgate import reasons as rc
from holdgate.errors import ValidationError
from holdgate.events import ActionRequest, Reason, Verdict, action_digest, decode_request, encode
from holdgate.client.routing import partition_for
from holdgate.signing import sign
from holdgate.stream.recovery import RecoveryGuard
from holdgate.stream.records import (BatchResult, Outgoing, RawRecord, deadletter_record,
                                     recover_identity)

__all__ = ["Decider", "SignalSource", "PolicySource"]

log = logging.getLogger(__name__)


class PolicySource(Protocol):
    """What the decider needs of the Cedar engine (holdgate.policies.PolicyEngine)."""

    def decide_many(self, items: Sequence[tuple[ActionRequest, dict[str, int]]]) -> list[Any]: ...


class SignalSource(Protocol):
    """Per-agent behavioural signals (holdgate.models); state lives in a Faust table."""

    @property
    def model_version(self) -> str: ...

    def observe_batch(self, states: MutableMapping[str, Any],
                      requests: Sequence[ActionRequest]) -> list[dict[str, int]]: ...

    def record_outcomes(self, states: MutableMapping[str, Any],
                        requests: Sequence[ActionRequest], denied: Sequence[bool]) -> None: ...


@dataclass
class Decider:
    """Turns a batch of raw action records into verdicts and dead letters."""

    engine: PolicySource
    policy_version: str
    signing_key: bytes | None = None
    verdict_ttl: float = 30.0
    max_clock_skew: float = 10.0
    worker_id: str = "holdgate"
    partitions: int | None = None     # set: enforce the agent -> partition routing contract
    signals: SignalSource | None = None
    clock: Callable[[], float] = time.time
    timings: dict[str, float] = field(default_factory=lambda: {
        "decode": 0.0, "signals": 0.0, "policy": 0.0, "encode": 0.0, "actions": 0.0})

    @property
    def model_version(self) -> str | None:
        return self.signals.model_version if self.signals is not None else None

    def decide_batch(self, records: Sequence[RawRecord],
                     states: MutableMapping[str, Any] | None = None,
                     guard: RecoveryGuard | None = None) -> BatchResult:
        result = BatchResult()
        try:
            self._decide(records, states if states is not None else {}, guard, result)
        except Exception as exc:  # a bug must deny, never crash the worker or drop records
            log.exception("decision batch failed; denying %d record(s)", len(records))
            result = BatchResult()
            for raw in records:
                self._malformed(raw, f"internal error: {exc!r}", result, code=rc.INTERNAL_ERROR)
        return result

    def _admit(self, raw: RawRecord, request: ActionRequest, now: float,
               result: BatchResult) -> bool:
        """Checks before any state is touched: clock skew and the routing contract."""
        # Compared with the broker's append time when there is one (deterministic under
        # replay), else with the worker's clock.
        ref, clock = (raw.timestamp, "broker") if raw.timestamp is not None else (now, "gate")
        skew = request.occurred_at - ref
        if abs(skew) > self.max_clock_skew:
            direction = "ahead of" if skew > 0 else "behind"
            self._emit(raw, request, "deny", (Reason(
                rc.CLOCK_SKEW, f"occurred_at is {abs(skew):.1f}s {direction} the {clock}'s "
                f"clock (limit {self.max_clock_skew:.0f}s)"),), {}, now, result)
            return False
        if self.partitions and raw.offset >= 0:
            expected = partition_for(request.agent_id, self.partitions)
            if raw.partition != expected:
                # An agent spread over partitions would split its counters across
                # workers and slip under every rate limit: refuse it.
                self._malformed(raw, f"agent {request.agent_id!r} must be published to partition "
                                f"{expected} (murmur2 of agent_id), not {raw.partition}", result)
                return False
        return True

    def _decide(self, records: Sequence[RawRecord], states: MutableMapping[str, Any],
                guard: RecoveryGuard | None, result: BatchResult) -> None:
        t0 = time.perf_counter()
        now = self.clock()
        slots: list[_Slot] = []
        for raw in records:
            request = self._decode(raw, result)
            if request is None or not self._admit(raw, request, now, result):
                if guard is not None:   # consumed all the same: the watermark moves on
                    guard.classify(raw.partition, raw.offset, now)
                continue
            status = guard.classify(raw.partition, raw.offset, request.occurred_at) \
                if guard is not None else "ok"
            slots.append(_Slot(raw, request, _event_view(request, raw), status))
            if request.occurred_at > result.event_times.get(raw.partition, 0.0):
                result.event_times[raw.partition] = request.occurred_at
        t1 = time.perf_counter()
        corrupt: set[str] = getattr(states, "corrupt", set())
        for wave in _waves(slots):      # times itself: signals and policy
            self._decide_wave(wave, states, guard, corrupt)
        t2 = time.perf_counter()
        for slot in slots:
            self._emit(slot.raw, slot.request, slot.decision, slot.reasons, slot.signals, now,
                       result)
        tm = self.timings
        tm["decode"] += t1 - t0
        tm["encode"] += time.perf_counter() - t2
        tm["actions"] += len(records)

    def _decide_wave(self, wave: list[_Slot], states: MutableMapping[str, Any],
                     guard: RecoveryGuard | None, corrupt: set[str]) -> None:
        """One action per agent: observe, decide, feed outcomes back.

        Waves make every signal (deny ratio included) exactly what one-at-a-time
        processing gives, whatever the batch boundaries: a replay reproduces it.
        """
        live = [s for s in wave if s.status != "replayed"]
        t0 = time.perf_counter()
        if self.signals is not None:
            for slot, sig in zip(live, self._observe(states, [s.view for s in live]), strict=True):
                slot.signals = sig
            for slot in wave:
                if slot.status == "replayed":   # redelivered: already in the counters
                    scratch = _scratch(states, slot.request.agent_id)
                    slot.signals = self._observe(scratch, [slot.view])[0]
        t1 = time.perf_counter()
        for slot in wave:
            if slot.request.agent_id in corrupt and guard is not None:
                guard.force_hold(slot.raw.partition, slot.request.occurred_at)
                slot.status = "recovering"
        todo = [s for s in wave if s.status != "recovering"]
        if todo:
            out = self.engine.decide_many([(s.request, s.signals) for s in todo])
            for slot, decision in zip(todo, out, strict=True):
                slot.decision = "allow" if decision.decision == "allow" else "deny"
                slot.reasons = tuple(decision.reasons) or (Reason(rc.NO_PERMIT, "no reason"),)
        if self.signals is not None and live:
            self.signals.record_outcomes(states, [s.request for s in live],
                                         [s.decision != "allow" for s in live])
        self.timings["signals"] += t1 - t0
        self.timings["policy"] += time.perf_counter() - t1

    def _observe(self, states: MutableMapping[str, Any],
                 requests: list[ActionRequest]) -> list[dict[str, int]]:
        if self.signals is None or not requests:
            return [{} for _ in requests]
        return self.signals.observe_batch(states, requests)

    def _decode(self, raw: RawRecord, result: BatchResult) -> ActionRequest | None:
        try:
            if raw.value is None:
                raise ValidationError("$", "empty record (tombstone) on the actions topic")
            request = decode_request(raw.value)
        except ValidationError as exc:
            self._malformed(raw, str(exc), result)
            return None
        if raw.key is not None and raw.key != request.agent_id.encode():
            # Keyed by someone else: its partition (and so its state) would be wrong.
            self._malformed(raw, f"record key {raw.key[:64]!r} differs from agent_id", result)
            return None
        return request

    def _malformed(self, raw: RawRecord, error: str, result: BatchResult,
                   code: str = rc.MALFORMED) -> None:
        result.deadletters.append(deadletter_record(raw, f"{code}: {error}",
                                                    worker=self.worker_id))
        identity = recover_identity(raw.value, raw.key)
        if identity is None:
            return
        request_id, agent_id = identity
        now = self.clock()
        verdict = Verdict(
            request_id=request_id, agent_id=agent_id, decision="deny",
            reasons=(Reason(code, error),), policy_version=self.policy_version,
            model_version=self.model_version,
            action_digest=action_digest({"unparsed_sha": _raw_digest(raw.value)}),
            decided_at=now, expires_at=now)
        self._append(raw.partition, agent_id, verdict, result)

    def _emit(self, raw: RawRecord, request: ActionRequest, decision: str,
              reasons: tuple[Reason, ...], signals: dict[str, int], now: float,
              result: BatchResult) -> None:
        req_obj = request.to_obj()
        verdict = Verdict(
            request_id=request.request_id, agent_id=request.agent_id,
            decision="allow" if decision == "allow" else "deny", reasons=reasons,
            policy_version=self.policy_version, model_version=self.model_version,
            signals=dict(signals), action_digest=action_digest(req_obj), decided_at=now,
            expires_at=now + self.verdict_ttl if decision == "allow" else now,
            request=req_obj)
        self._append(raw.partition, request.agent_id, verdict, result)

    def _append(self, partition: int, agent_id: str, verdict: Verdict,
                result: BatchResult) -> None:
        signed = sign(verdict, self.signing_key)
        result.verdicts.append(Outgoing(partition, agent_id.encode(), encode(signed)))
        if verdict.decision == "allow":
            result.allowed += 1
        else:
            result.denied += 1


def _raw_digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


_RECOVERING = (Reason(rc.STATE_RECOVERING, "per-agent state for this partition is not caught "
                      "up; limits that cannot be counted are not enforced by guesswork"),)


@dataclass
class _Slot:
    """One admitted action on its way through the batch."""

    raw: RawRecord
    request: ActionRequest
    view: ActionRequest          # what the signals see (event time clamped to the broker's)
    status: str                  # ok | replayed | recovering (see RecoveryGuard)
    signals: dict[str, int] = field(default_factory=dict)
    decision: str = "deny"
    reasons: tuple[Reason, ...] = _RECOVERING


def _waves(slots: list[_Slot]) -> list[list[_Slot]]:
    """Split a batch so that each wave holds at most one action per agent, in order."""
    waves: list[list[_Slot]] = []
    seen: dict[str, int] = {}
    for slot in slots:
        k = seen.get(slot.request.agent_id, 0)
        seen[slot.request.agent_id] = k + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(slot)
    return waves


def _event_view(request: ActionRequest, raw: RawRecord) -> ActionRequest:
    """The request as the counters see it: never later than the broker appended it.

    The actions topic uses LogAppendTime, so the record timestamp is the
    broker's, stored in the log (a replay sees the same value).  An agent that
    stamps its actions into the future to spread a burst over more seconds
    gains nothing; stamping into the past is already capped by the per-agent
    clock that never moves backwards.
    """
    if raw.timestamp is not None and request.occurred_at > raw.timestamp:
        return dataclasses.replace(request, occurred_at=raw.timestamp)
    return request


def _scratch(states: MutableMapping[str, Any], agent_id: str) -> dict[str, Any]:
    """A throwaway copy of one agent's state: a redelivered action is already counted."""
    state = states.get(agent_id)
    return {} if state is None else {agent_id: copy.deepcopy(state)}
