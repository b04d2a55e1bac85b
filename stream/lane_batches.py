"""A partition's lane at work: queue what was fetched, decide it, commit it, one batch at a time.

Why lanes do not wait for each other: a batch's transaction takes several
broker round trips.  With one loop over all partitions, every partition waited
for the slowest commit before anything new was even fetched, and a check spent
more time queued behind other partitions' commits than in its own (a closed
loop of 8 checks: 15 ms of its 26 ms p50 before its batch started).  Now the
driver's loop only fetches and queues (`_dispatch`); each lane drains its own
queue (`_drain`): its next batch starts the moment its previous one committed,
with everything that arrived meanwhile, so batches grow with load by
themselves, and other partitions never wait for it.  Within a partition
batches stay strictly sequential, each deciding on the state the previous one
committed: exactly once is unchanged.  A lane whose queue holds a full batch
is paused in the consumer until it takes it, so memory stays bounded.

A mixin of `KafkaDriver` (`holdgate.stream.kafka_driver` has the transaction
and fencing story); `LanePreparation` (`holdgate.stream.lanes`) makes lanes ready.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

from aiokafka import TopicPartition
from aiokafka.errors import (InvalidProducerEpoch, ProducerFenced,
                             TransactionalIdAuthorizationFailed)

from holdgate.stream.edges import RawRecord
from holdgate.stream.health import lifecycle
from holdgate.stream.lanes import Lane, LanePreparation
from holdgate.stream.runner import BatchOutput

__all__ = ["LaneBatches", "COMMIT_GRACE", "CLOSE_BOUND", "committing"]

log = logging.getLogger("holdgate.worker")

_FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)
COMMIT_GRACE = 2.0      # seconds a batch still committing gets once stop() was called
CLOSE_BOUND = 1.5       # seconds each close step may take while stopping


def _append_time(record: Any) -> float | None:
    """The broker's LogAppendTime in seconds, or None without a usable one."""
    if record.timestamp is None or record.timestamp_type != 1:
        return None
    return record.timestamp / 1000.0


def committing(lanes: Iterable[Lane]) -> list[asyncio.Task[None]]:
    """The drains of `lanes` still deciding or committing a batch."""
    return [lane.drain for lane in lanes if lane.drain is not None and not lane.drain.done()]


class LaneBatches(LanePreparation):
    """Mixin of `KafkaDriver`: from fetched records to committed batches, per lane."""

    runner: Any
    metrics: Any
    on_batch: Any
    offsets: Any
    _topic: str
    _approvals: str

    def _dispatch(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Queue fetched records on their lanes and start each idle lane's drain."""
        touched: set[int] = set()
        # Actions first, approvals after: a token in the same fetch as the action it
        # approves finds its hold (the runner orders a batch the same way).
        for tp, records in sorted(batches.items(), key=lambda kv: kv[0].topic != self._topic):
            lane = self._lanes.get(tp.partition)
            if lane is None or not lane.ready or not records:
                continue          # not ours (any more): its new owner decides them
            lane.backlog.extend(
                RawRecord(key=r.key, value=r.value, partition=tp.partition, offset=r.offset,
                          topic=tp.topic, timestamp=_append_time(r),
                          headers=tuple(r.headers or ())) for r in records)
            touched.add(tp.partition)
        for p in touched:
            lane = self._lanes[p]
            if lane.drain is None or lane.drain.done():
                lane.drain = asyncio.ensure_future(self._drain(lane))
            if len(lane.backlog) >= self.settings.batch_max and not lane.throttled \
                    and self._consumer is not None:
                # A full batch is waiting for the commit in flight: fetch no more of it.
                self._consumer.pause(*self._tps(p))
                lane.throttled = True

    async def _drain(self, lane: Lane) -> None:
        """Decide and commit the lane's queued records, batch after batch, until none is left."""
        try:
            while lane.backlog and lane.ready and not self._stopping.is_set():
                raws, lane.backlog = self._unseen(lane, lane.backlog), []
                if lane.throttled and self._consumer is not None:
                    self._consumer.resume(*self._tps(lane.partition))
                    lane.throttled = False
                if raws:
                    await self._decide_lane(lane, raws)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: the batch did not happen, retake
            log.exception("partition %d: batch failed outside its transaction",
                          lane.partition)
            await self._lost_batch(lane, exc)

    def _unseen(self, lane: Lane, raws: list[RawRecord]) -> list[RawRecord]:
        """Drop records before where the lane stands (fetched before a seek moved it)."""
        start, approvals = lane.position, lane.approvals_position
        return [r for r in raws if r.offset is None or
                (start is None or r.offset >= start if r.topic == self._topic
                 else approvals is None or r.offset >= approvals)]

    async def _decide_lane(self, lane: Lane, raws: list[RawRecord]) -> None:
        p = lane.partition
        t0 = time.perf_counter()
        out = self.runner.run(raws, decided_at=time.time())
        if time.monotonic() >= lane.sweep_due:
            lane.sweep_due = time.monotonic() + self._sweep_interval()
            sweep = self.runner.sweep(p)
            if sweep:
                out.writes.setdefault(p, {}).update(sweep)
        await self._commit_or_redo(lane, out, raws, time.perf_counter() - t0)

    async def _finish_lanes(self) -> None:
        """On stop: batches still committing get COMMIT_GRACE, then are given up.

        Given up is a crash to Kafka: the transaction is aborted (bounded) or
        fenced by the next owner, nothing was applied locally, it is decided again.
        """
        busy = committing(self._lanes.values())
        if not busy:
            return
        _, pending = await asyncio.wait(busy, timeout=COMMIT_GRACE)
        if pending:
            lifecycle.info("stopping: gave up %d batch(es) still committing after %.0fs "
                           "(broker unreachable?); they will be decided again", len(pending),
                           COMMIT_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CLOSE_BOUND)

    async def _commit_or_redo(self, lane: Lane, out: BatchOutput, raws: list[RawRecord],
                              decide_seconds: float) -> None:
        """Commit; a batch whose allow outlived its deadline is decided again, now.

        An allow decided in time but committed after its request's deadline would
        reach a runtime that already gave up (and any executor following the
        verdicts).  `_commit` aborts such a batch instead; nothing of it was
        applied, so deciding the same records again at the current time gives
        their EXPIRED denies (and the rest the same answers, one transaction).
        """
        # Ends: each round decides at a later time, so a late allow is EXPIRED the next.
        while not await self._commit(lane, out, raws, decide_seconds):
            self.stats.redone += 1
            if not lane.ready or self._stopping.is_set():
                return
            t0 = time.perf_counter()
            out = self.runner.run(raws, decided_at=time.time())
            decide_seconds = time.perf_counter() - t0

    def _sweep_interval(self) -> float:
        return max(60.0, min(3600.0, self.settings.idle_ttl / 24))

    async def _commit(self, lane: Lane, out: BatchOutput, raws: list[RawRecord],
                      decide_seconds: float) -> bool:
        """One transaction: verdicts + dead letters + state, then the local store.

        False: aborted because an allow's deadline passed before the commit; the
        caller decides the batch again.  True: committed, or lost (re-preparing).
        """
        s, p = self.settings, lane.partition
        producer = lane.producers[lane.turn]
        writes = out.writes.get(p, {})
        due = min((d.deadline for d in out.decisions if d.allowed and d.deadline is not None),
                  default=None)
        t0 = time.perf_counter()
        try:
            await producer.begin_transaction()
            lane.in_txn = True
            sends = [await producer.send(s.verdicts_topic, v.value, key=v.key,
                                         partition=v.partition, headers=list(v.headers))
                     for v in out.verdicts]
            sends += [await producer.send(s.deadletter_topic, letter, partition=0)
                      for letter in out.deadletters]
            state_sends = [await producer.send(s.changelog_topic, value, key=key.encode(),
                                               partition=p) for key, value in writes.items()]
            await asyncio.gather(*sends, *state_sends)
            if due is not None and time.time() > due:
                await producer.abort_transaction()
                lane.in_txn = False
                lane.turn ^= 1            # the other id: no wait for this one's markers
                return False
            await producer.commit_transaction()
            lane.in_txn = False
        except Exception as exc:  # noqa: BLE001 - any failure: this batch did not happen
            self.stats.aborted += 1
            self.stats.fenced += isinstance(exc, _FENCED)
            await self._lost_batch(lane, exc)
            return True
        commit_seconds = time.perf_counter() - t0
        lane.turn ^= 1
        self.offsets.due({TopicPartition(topic, part): offset
                          for (topic, part), offset in out.offsets.items()})
        checkpoint = max(f.result().offset for f in state_sends) if state_sends else None
        self.store.apply(p, writes, checkpoint)
        lane.position = out.offsets.get((self._topic, p), lane.position)
        lane.approvals_position = out.offsets.get((self._approvals, p),
                                                  lane.approvals_position)
        self.stats.count(out)
        committed_at = time.time()
        if self.metrics is not None:
            self.metrics.batch(raws, self._topic, decide_seconds, commit_seconds, committed_at)
        if self.on_batch is not None:
            self.on_batch(out, committed_at)
        return True

    async def _lost_batch(self, lane: Lane, exc: BaseException) -> None:
        """The transaction failed: nothing of the batch is visible; take the lane again."""
        p = lane.partition
        if isinstance(exc, _FENCED):
            log.warning("partition %d: fenced by another worker (%s); leaving it to its new "
                        "owner", p, type(exc).__name__)
        else:
            log.warning("partition %d: batch transaction failed (%r); re-preparing the "
                        "partition, the batch will be decided again", p, exc)
            self.broker.suspect(f"batch transaction failed: {exc!r}")
        lane.ready, lane.in_txn, lane.throttled = False, False, False
        lane.backlog.clear()              # read again from the mark once re-prepared
        lane.status = "re-preparing after a failed batch transaction"
        if self._consumer is not None and p in self._lanes:
            self._consumer.pause(*self._tps(p))
        await self._close_producers(lane)
        if not isinstance(exc, _FENCED) and p in self._lanes:
            lane.task = asyncio.ensure_future(self._prepare(lane, delay=0.5))
