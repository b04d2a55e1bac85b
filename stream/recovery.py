"""Fail closed while per-agent counters cannot be trusted (`STATE_RECOVERING`).

Faust already pauses a partition's stream while its table is being restored
from the changelog, and the SDK turns that wait into a TIMEOUT deny.  What
Faust cannot see is state that was *lost*: a changelog deleted or truncated, a
watermark that does not reach the offset being consumed, a state blob that no
longer decodes.  Counting from zero there would reset every rate limit, so the
partition is held instead: its actions are still counted (the windows refill)
but denied with STATE_RECOVERING until `hold_seconds` of event time have
passed, long enough for the guard windows to be whole again.  Event time keeps
this deterministic under replay.
"""
from __future__ import annotations

from typing import Literal

from holdgate.stream.state import PartitionMark, Watermarks

__all__ = ["RecoveryGuard", "Status"]

Status = Literal["ok", "replayed", "recovering"]


class RecoveryGuard:
    """Classifies each consumed action against its partition's watermark."""

    def __init__(self, marks: Watermarks, hold_seconds: float) -> None:
        self._marks = marks
        self.hold_seconds = hold_seconds
        self._batch: dict[int, PartitionMark] = {}
        self.gaps = 0

    def _mark(self, partition: int, offset: int, occurred_at: float) -> PartitionMark:
        mark = self._batch.get(partition)
        if mark is None:
            mark = self._marks.get(partition)
            if mark is None:
                # Nothing recorded: a brand-new partition starts at offset 0; anything
                # later means actions were consumed whose state we do not have.
                mark = PartitionMark()
                if offset > 0:
                    self._gap(mark, occurred_at)
            self._batch[partition] = mark
        return mark

    def _gap(self, mark: PartitionMark, occurred_at: float) -> None:
        self.gaps += 1
        mark.hold_until = max(mark.hold_until, occurred_at + self.hold_seconds)

    def classify(self, partition: int, offset: int, occurred_at: float) -> Status:
        if offset < 0:              # not from a topic (bench, unit tests): nothing to check
            return "ok"
        mark = self._mark(partition, offset, occurred_at)
        if 0 <= offset <= mark.offset:
            return "replayed"       # redelivered after a crash: already in the counters
        if mark.offset != -1 and offset > mark.offset + 1:
            self._gap(mark, occurred_at)
        mark.offset = offset
        return "recovering" if occurred_at < mark.hold_until else "ok"

    def force_hold(self, partition: int, occurred_at: float) -> None:
        """An agent's state blob was unreadable: hold its whole partition."""
        mark = self._batch.setdefault(partition, self._marks.get(partition) or PartitionMark())
        self._gap(mark, occurred_at)

    def flush(self) -> None:
        """Persist the batch's marks next to the states (same changelog, same partition)."""
        for partition, mark in self._batch.items():
            self._marks.put(partition, mark)
        self._batch.clear()
