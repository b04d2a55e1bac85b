"""Per-partition marks: how far state has folded the actions in, and recovery holds.

One small record per partition lives beside the agent states (same store, same
changelog partition, written in the same transaction), so it can never
disagree with them:

* ``next_offset``: the first action offset whose effect is NOT in the state.
  The worker compares it with the consumer group's committed offset when it
  takes a partition over; since both are written in one Kafka transaction they
  agree unless state was lost (changelog deleted or truncated), which is the
  only thing ``STATE_RECOVERING`` means.
* ``hold_until``: event time until which the partition's actions are denied
  ``STATE_RECOVERING`` after state was lost.  They are still counted, so when
  the hold ends (``recovery_hold`` of event time, the longest guard window) the
  counters are whole again.  ``hold_pending`` starts the hold at the first
  action seen after the loss, on event time, so a replay holds identically.
* ``event_time``: the latest event time seen, the clock of idle eviction.
* ``approvals_next``: the first offset of the co-numbered approvals partition
  not yet applied.  With ``next_offset`` it is where a take-over resumes: the
  group's committed offsets trail the marks (committed after the transaction,
  off the decision's path) and only serve to tell lost state from a restart.
* ``seq``: the next verdict sequence number of this partition.  Every verdict
  the partition's own batches publish to the same partition number gets the
  next one (in the same transaction as the mark), so an audit export can tell
  a removed or reordered verdict from the signed verdicts alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import orjson

__all__ = ["MARK_KEY", "PartitionMark", "PartitionMarks"]

#: Store/changelog key of a partition's mark ('~' never starts an agent id).
MARK_KEY = "~mark"


@dataclass(slots=True)
class PartitionMark:
    next_offset: int | None = None
    hold_until: float = 0.0
    hold_pending: bool = False
    event_time: float = 0.0
    seq: int = 0
    approvals_next: int | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps({"next_offset": self.next_offset, "hold_until": self.hold_until,
                             "hold_pending": self.hold_pending, "event_time": self.event_time,
                             "seq": self.seq, "approvals_next": self.approvals_next})

    @classmethod
    def from_bytes(cls, blob: bytes) -> PartitionMark | None:
        """Parse a stored mark; None when it is unreadable (treated as lost state)."""
        try:
            obj = orjson.loads(blob)
            offset = obj["next_offset"]
            approvals = obj.get("approvals_next")       # absent in marks written before it
            return cls(next_offset=None if offset is None else int(offset),
                       hold_until=float(obj["hold_until"]),
                       hold_pending=bool(obj["hold_pending"]),
                       event_time=float(obj["event_time"]), seq=int(obj.get("seq", 0)),
                       approvals_next=None if approvals is None else int(approvals))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class PartitionMarks:
    """The marks one batch touches: loaded lazily, written back by the runner."""

    def __init__(self, load: Callable[[int], bytes | None], hold_seconds: float) -> None:
        self._load = load
        self.hold_seconds = hold_seconds
        self._marks: dict[int, PartitionMark] = {}
        self.dirty: set[int] = set()

    def get(self, partition: int) -> PartitionMark:
        mark = self._marks.get(partition)
        if mark is None:
            blob = self._load(partition)
            mark = PartitionMark.from_bytes(blob) if blob is not None else PartitionMark()
            if mark is None:          # unreadable: whatever it described is lost
                mark = PartitionMark(hold_pending=True)
                self.dirty.add(partition)
            self._marks[partition] = mark
        return mark

    def observe(self, partition: int, event_time: float) -> None:
        mark = self.get(partition)
        if event_time > mark.event_time:
            mark.event_time = event_time
            self.dirty.add(partition)

    def holding(self, partition: int, event_time: float) -> bool:
        """Is the partition held at this event time?  Starts a pending hold."""
        mark = self.get(partition)
        if mark.hold_pending:
            mark.hold_pending = False
            mark.hold_until = max(mark.hold_until, event_time + self.hold_seconds)
            self.dirty.add(partition)
        return event_time < mark.hold_until

    def force_hold(self, partition: int, event_time: float) -> None:
        """An agent's stored state was unreadable: hold its whole partition from here."""
        mark = self.get(partition)
        mark.hold_until = max(mark.hold_until, event_time + self.hold_seconds)
        self.dirty.add(partition)

    def lose(self, partition: int) -> None:
        """State of the partition is known lost: hold from its next action on."""
        self.get(partition).hold_pending = True
        self.dirty.add(partition)

    def next_seq(self, partition: int) -> int:
        mark = self.get(partition)
        seq, mark.seq = mark.seq, mark.seq + 1
        self.dirty.add(partition)
        return seq

    def advance(self, partition: int, next_offset: int) -> None:
        mark = self.get(partition)
        if mark.next_offset is None or next_offset > mark.next_offset:
            mark.next_offset = next_offset
            self.dirty.add(partition)

    def advance_approvals(self, partition: int, next_offset: int) -> None:
        mark = self.get(partition)
        if mark.approvals_next is None or next_offset > mark.approvals_next:
            mark.approvals_next = next_offset
            self.dirty.add(partition)

    def written(self) -> dict[int, bytes]:
        """Encoded marks of every partition changed since the last call."""
        out = {p: self._marks[p].to_bytes() for p in sorted(self.dirty)}
        self.dirty.clear()
        return out
