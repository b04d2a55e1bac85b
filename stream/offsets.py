"""The consumer group's committed offsets, committed off the decision's path.

Where a lane resumes is the partition's mark (`holdgate.stream.marks`), which is
written in the batch's transaction with its verdicts and states.  The group's
offsets only have to trail it: they tell lost state from a restart (a group
offset ahead of the mark means the changelog lost something) and they are what
lag tools read.  Committing them inside every transaction cost two more
sequential broker round trips per batch (AddOffsetsToTxn, TxnOffsetCommit) and
an offsets-topic write with its own transaction marker; here they are committed
after the transaction, coalesced (at most one request per `INTERVAL`, one in
flight), so they can never run ahead of a committed mark and cost the broker a
few requests a second whatever the batch rate.  A failed or lost commit only leaves them further
behind, which costs nothing but a larger "lag" until the next one.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Mapping

from aiokafka import TopicPartition

from holdgate.stream.health import bounded

__all__ = ["GroupOffsets"]

log = logging.getLogger("holdgate.worker")

#: Seconds one group commit may take before it is given up (the next one retries).
COMMIT_BOUND = 10.0

#: Seconds between two group commits: the offsets lag the marks by about this much.
INTERVAL = 0.2


class GroupOffsets:
    """Offsets of committed batches, waiting to be committed to the consumer group."""

    def __init__(self, consumer: Callable[[], Any], owned: Callable[[int], bool], *,
                 interval: float = INTERVAL) -> None:
        self._consumer = consumer
        self.interval = interval
        self._owned = owned
        self._due: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self.commits = 0
        self.failures = 0

    def due(self, offsets: Mapping[TopicPartition, int]) -> None:
        """A batch's transaction committed: its next offsets may now be committed."""
        for tp, offset in offsets.items():
            if offset > self._due.get(tp, -1):
                self._due[tp] = offset
        if self._due:
            self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(self.interval)      # what comes meanwhile goes in the next

    async def flush(self, partitions: set[int] | None = None) -> bool:
        """Commit what is due (of `partitions`, or all we still own); False if it failed."""
        consumer = self._consumer()
        take = {tp: o for tp, o in self._due.items()
                if (partitions is None or tp.partition in partitions)
                and (partitions is not None or self._owned(tp.partition))}
        for tp in take:
            del self._due[tp]
        if not take or consumer is None:
            return True
        if await bounded(consumer.commit(take), COMMIT_BOUND, "group offset commit"):
            self.commits += 1
            return True
        self.failures += 1
        log.debug("group offset commit failed; retried with the next batch")
        for tp, offset in take.items():              # not superseded meanwhile: retry them
            if offset > self._due.get(tp, -1) and self._owned(tp.partition):
                self._due[tp] = offset
        return False
