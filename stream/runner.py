"""The runner: the one per-batch sequence every driver calls.

    records ▶ decode ▶ load states and marks ▶ decide (core) ▶ seal ▶ BatchOutput

`BatchOutput` holds everything the batch produced: signed verdicts, dead
letters, the changed agent states and partition marks (``writes``) and the
next offset per partition.  The *driver* makes it durable: the Kafka worker
publishes verdicts, dead letters and state writes together with the consumed
offsets in one transaction and then calls `Runner.apply`; `replay` applies
straight to memory.  The runner never touches Kafka, never reads the clock
(``decided_at`` is given) and never raises for any input: an unexpected bug
denies the whole batch with ``INTERNAL_ERROR`` and dead-letters it.
"""
from __future__ import annotations

import logging
import time

import orjson
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from holdgate import reasons as rc
from holdgate.approvals import ApproverKeys
from holdgate.events import MAX_RECORD_BYTES
from holdgate.keys import Signer
from holdgate.routing import partition_for
from holdgate.stream import core
from holdgate.stream.core import Action, Decision, Snapshot
from holdgate.stream.edges import (Outgoing, RawRecord, Rejected, dead_letter, decode,
                                   rejected_decision, seal, sign_verdicts)
from holdgate.stream.holds import HOLD_MAX, PENDING_PREFIX, lift, pending_entry, pending_key
from holdgate.stream.marks import MARK_KEY, PartitionMark, PartitionMarks
from holdgate.stream.state import BatchStates, StateStore, Writes, idle_agents

__all__ = ["Runner", "BatchOutput"]

log = logging.getLogger(__name__)


@dataclass
class BatchOutput:
    """What one batch produced; nothing of it is durable until the driver says so."""

    verdicts: list[Outgoing] = field(default_factory=list)
    deadletters: list[bytes] = field(default_factory=list)
    writes: Writes = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)     # actions, per partition
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # every consumed topic
    allowed: int = 0
    denied: int = 0
    sources: list[RawRecord] = field(default_factory=list)  # track_sources: each decision's


@dataclass
class Runner:
    """Decides batches of raw records against a swappable `Snapshot` and a state store."""

    snapshot: Snapshot
    store: StateStore
    partitions: int
    verdict_ttl: float = 30.0
    signer: Signer | None = None
    max_action_bytes: int = MAX_RECORD_BYTES
    worker_id: str = "holdgate"
    sealing: bool = True        # False: decisions only, no signed verdict bytes (replay)
    approvals_topic: str = ""   # records of this topic are approval tokens (stream.holds)
    approvers: ApproverKeys | None = None
    #: How a batch sees agent states; None: a `BatchStates` over `store` (decoded per batch,
    #: encoded back as ``writes``).  Only replays set one (`holdgate.stream.replay`).
    state_view: Callable[[StateStore, Callable[[str], int]], Any] | None = None  # ~BatchStates
    track_sources: bool = False  # BatchOutput.sources[i] is the record of decisions[i] (replay)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "decide", "seal", "actions"), 0.0))

    def partition_of(self, agent_id: str) -> int:
        return partition_for(agent_id, self.partitions)

    def run(self, records: Sequence[RawRecord], *, decided_at: float) -> BatchOutput:
        """Decide one batch; `decided_at` is the driver's clock for this batch."""
        try:
            out = self._run(records, decided_at)
        except Exception as exc:  # a bug must deny, never crash the driver or drop records
            log.exception("decision batch failed; denying %d record(s)", len(records))
            out = self._fail(records, exc, decided_at)
        if self.signer is not None and out.verdicts:
            t0 = time.perf_counter()
            try:
                out.verdicts = sign_verdicts(self.signer, out.verdicts)
            except Exception:  # unsigned verdicts still deny: no reader acts on them
                log.exception("signing %d verdict(s) failed; they go out unsigned",
                              len(out.verdicts))
            self.timings["seal"] += time.perf_counter() - t0
        return out

    def _run(self, all_records: Sequence[RawRecord], decided_at: float) -> BatchOutput:
        snapshot = self.snapshot
        out = BatchOutput()
        t0 = time.perf_counter()
        for raw in all_records:
            if raw.offset is not None:
                out.offsets[(raw.topic, raw.partition)] = max(
                    out.offsets.get((raw.topic, raw.partition), 0), raw.offset + 1)
        approvals = [r for r in all_records if self.approvals_topic and
                     r.topic == self.approvals_topic]
        records = [r for r in all_records if not (self.approvals_topic and
                                                  r.topic == self.approvals_topic)]
        items: list[Action | Rejected] = [
            decode(raw, max_bytes=self.max_action_bytes, now=decided_at,
                   partitions=self.partitions) for raw in records]
        t1 = time.perf_counter()
        states = BatchStates(self.store, self.partition_of) if self.state_view is None \
            else self.state_view(self.store, self.partition_of)
        marks = PartitionMarks(lambda p: self.store.get(p, MARK_KEY), snapshot.recovery_hold)
        actions = [item for item in items if isinstance(item, Action)]
        decided = iter(core.decide(snapshot, actions, states, marks, decided_at))
        t2 = time.perf_counter()
        held: Writes = {}
        for raw, item in zip(records, items, strict=True):
            if raw.offset is not None:
                marks.advance(raw.partition, raw.offset + 1)
                out.next_offsets[raw.partition] = max(out.next_offsets.get(raw.partition, 0),
                                                      raw.offset + 1)
            if isinstance(item, Rejected):
                out.deadletters.append(dead_letter(raw, f"{item.code}: {item.error}",
                                                   worker=self.worker_id,
                                                   received_at=decided_at))
                decision = rejected_decision(item, snapshot)
                if decision is None:
                    continue
            else:
                decision = next(decided)
                if decision.duplicate:
                    out.deadletters.append(dead_letter(
                        raw, f"{rc.DUPLICATE_REQUEST}: request_id {decision.request_id} was "
                        "already decided for this agent; not decided again",
                        worker=self.worker_id, received_at=decided_at))
                    continue
            seq = marks.next_seq(raw.partition) if raw.offset is not None and \
                decision.partition == raw.partition else None
            self._emit(decision, raw, decided_at, out, seq)
            if decision.decision == "pending":
                held.setdefault(decision.partition, {})[pending_key(decision.request_id)] = \
                    pending_entry(decision, raw)
        for raw in approvals:
            if raw.offset is not None:
                marks.advance_approvals(raw.partition, raw.offset + 1)
            self._approval(raw, held, marks, decided_at, out)
        out.writes = states.writes()
        for partition, part in held.items():
            out.writes.setdefault(partition, {}).update(part)
        for partition, blob in marks.written().items():
            out.writes.setdefault(partition, {})[MARK_KEY] = blob
        tm = self.timings
        tm["decode"] += t1 - t0
        tm["decide"] += t2 - t1
        tm["seal"] += time.perf_counter() - t2
        tm["actions"] += len(records)
        return out

    def _approval(self, raw: RawRecord, held: Writes, marks: PartitionMarks,
                  decided_at: float, out: BatchOutput) -> None:
        """An approval token: lift its hold (a final verdict) or dead-letter why not."""
        def find(partition: int, key: str) -> bytes | None:
            if key in held.get(partition, {}):
                return held[partition][key]
            return self.store.get(partition, key)

        lifted = lift(self.snapshot, self.approvers, raw, find, decided_at,
                      self.max_action_bytes)
        if lifted.decision is None or lifted.partition is None:
            out.deadletters.append(dead_letter(raw, lifted.refused or rc.APPROVAL_INVALID,
                                               worker=self.worker_id, received_at=decided_at))
            return
        if lifted.delete is not None:
            held.setdefault(lifted.partition, {})[lifted.delete] = None
        if lifted.update is not None:
            held.setdefault(lifted.partition, {})[lifted.update[0]] = lifted.update[1]
        seq = marks.next_seq(raw.partition) if raw.offset is not None and \
            lifted.partition == raw.partition else None
        self._emit(lifted.decision, raw, decided_at, out, seq)

    def _emit(self, decision: Decision, raw: RawRecord, decided_at: float,
              out: BatchOutput, seq: int | None = None) -> None:
        out.decisions.append(decision)
        if self.track_sources:
            out.sources.append(raw)
        if self.sealing:
            at = raw.decided_at if raw.decided_at is not None else decided_at
            out.verdicts.append(seal(decision, decided_at=at, ttl=self.verdict_ttl, seq=seq))
        if decision.allowed:
            out.allowed += 1
        else:
            out.denied += 1

    def _fail(self, records: Sequence[RawRecord], exc: Exception,
              decided_at: float) -> BatchOutput:
        """Deny every identifiable record INTERNAL_ERROR; state is left untouched."""
        out = BatchOutput()
        approvals_next: dict[int, int] = {}
        error = f"internal error: {exc!r}"[:500]
        for raw in records:
            if raw.offset is not None:
                out.offsets[(raw.topic, raw.partition)] = max(
                    out.offsets.get((raw.topic, raw.partition), 0), raw.offset + 1)
            if self.approvals_topic and raw.topic == self.approvals_topic:
                if raw.offset is not None:
                    approvals_next[raw.partition] = max(approvals_next.get(raw.partition, 0),
                                                        raw.offset + 1)
                out.deadletters.append(dead_letter(raw, f"{rc.INTERNAL_ERROR}: {error}",
                                                   worker=self.worker_id,
                                                   received_at=decided_at))
                continue
            if raw.offset is not None:
                out.next_offsets[raw.partition] = max(out.next_offsets.get(raw.partition, 0),
                                                      raw.offset + 1)
            out.deadletters.append(dead_letter(raw, f"{rc.INTERNAL_ERROR}: {error}",
                                               worker=self.worker_id, received_at=decided_at))
            item = decode(raw, max_bytes=self.max_action_bytes, now=decided_at)
            identity = (item.request.request_id, item.request.agent_id) \
                if isinstance(item, Action) else item.identity
            decision = rejected_decision(
                Rejected(raw, rc.INTERNAL_ERROR, error, identity, item.event_time),
                self.snapshot)
            if decision is not None:
                self._emit(decision, raw, decided_at, out)
        # The consumed offsets move on in the marks too, or the next take-over would
        # mistake these records for lost state.
        marks = PartitionMarks(lambda p: self.store.get(p, MARK_KEY), 0.0)
        for partition, offset in out.next_offsets.items():
            marks.advance(partition, offset)
        for partition, offset in approvals_next.items():
            marks.advance_approvals(partition, offset)
        for partition, blob in marks.written().items():
            out.writes.setdefault(partition, {})[MARK_KEY] = blob
        return out

    def apply(self, writes: Writes, checkpoints: Mapping[int, int] | None = None) -> None:
        """Make a batch's state writes local (after the driver made them durable)."""
        for partition, part in writes.items():
            self.store.apply(partition, part, (checkpoints or {}).get(partition))

    def sweep(self, partition: int) -> dict[str, bytes | None]:
        """Deletes for the partition's idle agents (never changes a decision, see state)."""
        blob = self.store.get(partition, MARK_KEY)
        if blob is None:
            return {}
        mark = PartitionMark.from_bytes(blob)
        if mark is None or not mark.event_time:
            return {}
        stale: dict[str, bytes | None] = dict.fromkeys(idle_agents(
            self.store, partition, mark.event_time, self.snapshot.idle_ttl))
        for key in self.store.keys(partition):       # holds nobody can lift any more
            if key.startswith(PENDING_PREFIX):
                entry = orjson.loads(self.store.get(partition, key) or b"{}")
                until = entry.get("deadline") or (entry.get("timestamp") or 0.0) + HOLD_MAX
                if until < mark.event_time:
                    stale[key] = None
        return stale
