"""Taking a partition over: fence the previous owner, restore its state, find where to start.

Split from `holdgate.stream.kafka_driver` (which mixes this in): everything a
lane goes through between "assigned" and "ready", in order:

1. the operator controls are read to their end (a revocation survives restarts);
2. the published policy and model versions are read and loaded
   (`holdgate.stream.swap`); if their topics cannot be read for
   `VERSIONS_WAIT` seconds, the worker decides on, but under a snapshot that
   denies everything ``STATE_RECOVERING``: nothing is decided under a guess;
3. two transactional producers start with the partition's ids, which fences a
   zombie owner and ends its open transactions;
4. the changelog tail is restored into the local store;
5. the start offset is the state's own mark, checked against the group's
   committed offset (they disagree only when state was lost).

The mixin expects of its host: ``settings``, ``store``, ``stats``, ``controls``,
``versions``, ``broker``, ``runner``, ``_consumer``, ``_lanes``, ``_stopping``,
``_tps(p)``, ``_close_producers(lane)`` and ``_unavailable()``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from holdgate.kafka_options import aiokafka_options
from holdgate.stream.edges import RawRecord
from holdgate.stream.health import bounded
from holdgate.stream.marks import MARK_KEY, PartitionMark
from holdgate.stream.restore import restore

__all__ = ["Lane", "LanePreparation", "VERSIONS_WAIT"]

log = logging.getLogger("holdgate.worker")

#: Seconds a lane waits for the published versions before deciding under "unknown".
VERSIONS_WAIT = 20.0

#: Bytes per record batch of a lane's producers.  aiokafka's default (16 KiB) holds about a
#: dozen verdicts: a full batch makes `send` wait for the sender, which then adds the
#: transaction's partitions and produces in several sequential round trips per batch
#: (seen as 1.7 AddPartitionsToTxn and 3 Produce requests per transaction).  A whole
#: micro-batch fits here; it stays under the broker's default message.max.bytes (1 MiB).
BATCH_BYTES = 512 * 1024


@dataclass
class Lane:
    """One assigned actions partition: its transactional producer and where it stands."""

    partition: int
    producers: list[AIOKafkaProducer] = field(default_factory=list)
    turn: int = 0                    # which of the two producers carries the next batch
    position: int | None = None      # next offset to decide (the mark's next_offset)
    approvals_position: int | None = None   # next approval offset (the committed one)
    ready: bool = False
    status: str = "waiting to be prepared"   # what /readyz says while not ready
    in_txn: bool = False             # a batch transaction is open on producers[turn]
    task: asyncio.Task[None] | None = None          # preparing the lane
    sweep_due: float = 0.0
    #: Records fetched while a batch commits: the lane's next batch (`LaneBatches._drain`).
    backlog: list[RawRecord] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None         # deciding and committing the backlog
    throttled: bool = False          # paused in the consumer while the backlog is full


async def _seek(consumer: AIOKafkaConsumer, tp: Any, start: int | None) -> int | None:
    """Position `tp` at `start`, or at its beginning when None; returns `start`."""
    if start is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, start)
    return start


class LanePreparation:
    """Mixin of `KafkaDriver`: the way from an assigned partition to a ready lane."""

    settings: Any
    store: Any
    stats: Any
    controls: Any
    versions: Any
    broker: Any
    status: Any
    _consumer: Any
    _lanes: dict[int, Lane]
    _stopping: asyncio.Event

    def _tps(self, p: int) -> list[Any]:
        raise NotImplementedError

    async def _close_producers(self, lane: Lane) -> None:
        raise NotImplementedError

    def _unavailable(self) -> None:
        raise NotImplementedError

    async def _await_versions(self, lane: Lane) -> None:
        if self.versions.caught_up.is_set():
            return
        lane.status = "waiting for the published policy and model versions"
        try:
            await asyncio.wait_for(self.versions.caught_up.wait(), VERSIONS_WAIT)
        except asyncio.TimeoutError:
            self._unavailable()

    async def _prepare(self, lane: Lane, delay: float = 0.0) -> None:
        """Fence the previous owner, restore state, decide where to start; then resume."""
        p = lane.partition
        backoff = max(delay, 0.0)
        while not self._stopping.is_set() and self._lanes.get(p) is lane:
            if backoff:
                await asyncio.sleep(backoff)
            try:
                await self._prepare_once(lane)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker trouble: retry, partition stays paused
                log.log(logging.DEBUG if self.broker.down_since else logging.WARNING,
                        "partition %d: not ready yet (%r); retrying", p, exc)
                lane.status = f"retrying after: {exc!r}"[:200]
                self.broker.suspect(f"partition {p} not ready: {exc!r}")
                await self._close_producers(lane)
                backoff = min(max(backoff * 2, 0.5), 5.0)

    async def _prepare_once(self, lane: Lane) -> None:
        s, p = self.settings, lane.partition
        consumer = self._consumer
        assert consumer is not None
        t0 = time.monotonic()
        # Nothing is decided before every control in force is known (revocations survive
        # restarts); the table follows the topic from then on.
        lane.status = "waiting for the control table to be read to its end"
        await asyncio.wait_for(self.controls.caught_up.wait(), 30.0)
        await self._await_versions(lane)
        lane.status = "fencing the previous owner (starting transactional producers)"
        lane.producers = [AIOKafkaProducer(
            bootstrap_servers=s.bootstrap, client_id=f"{s.app_id}-decide-{p}{side}",
            transactional_id=f"{s.app_id}.decide.{p}.{side}", transaction_timeout_ms=max(
                10_000, int(s.session_timeout * 1000)), linger_ms=0, retry_backoff_ms=20,
            request_timeout_ms=10_000, max_request_size=4 * 2**20,
            max_batch_size=BATCH_BYTES, **aiokafka_options(s))
            for side in "ab"]
        # Starting them fences the previous owner and ends its open transactions.
        await asyncio.wait_for(asyncio.gather(*(pr.start() for pr in lane.producers)), 30.0)
        tp, atp = self._tps(p)
        committed = await consumer.committed(tp)
        approvals_committed = await consumer.committed(atp)
        lane.status = "restoring state from the changelog"
        restorer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                    client_id=f"{s.app_id}-restore-{p}",
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    **aiokafka_options(s))
        await restorer.start()
        try:
            [stats] = await restore(restorer, s.changelog_topic, [p], self.store)
        finally:
            await bounded(restorer.stop(), 5.0, "restore consumer stop")
        start = lane.position = await _seek(consumer, tp, self._start_offset(p, committed))
        lane.approvals_position = await _seek(consumer, atp,
                                              self._approvals_start(p, approvals_committed))
        lane.ready = True
        self.status.changed()
        consumer.resume(tp, atp)
        self.stats.restored(p, stats.records, time.monotonic() - t0)
        log.info("partition %d ready in %.2fs (restored %d changelog records, start %s)", p,
                 self.stats.last_restore_seconds, stats.records, start)

    def _approvals_start(self, p: int, committed: int | None) -> int | None:
        """Where approvals resume: the mark's, or the group's if further (lost state)."""
        blob = self.store.get(p, MARK_KEY)
        mark = PartitionMark.from_bytes(blob) if blob is not None else None
        folded = mark.approvals_next if mark is not None else None
        if folded is None or committed is None:
            return committed if folded is None else folded
        return max(folded, committed)

    def _start_offset(self, p: int, committed: int | None) -> int | None:
        """Where to resume: the state's own mark, checked against the group offset.

        The group offset is committed only after a batch's transaction, so it
        is never ahead of the mark; it is ahead only when state was lost
        (changelog deleted or truncated): then the partition is held in
        STATE_RECOVERING from its next action on.
        """
        blob = self.store.get(p, MARK_KEY)
        mark = PartitionMark.from_bytes(blob) if blob is not None else None
        folded = mark.next_offset if mark is not None else None
        if folded is None and not committed:
            return None                               # a new partition: from the beginning
        if folded is not None and (committed is None or folded >= committed):
            return folded
        log.warning("partition %d: state covers actions up to %s but %d were consumed: state "
                    "was lost; holding the partition in STATE_RECOVERING", p, folded, committed)
        lost = mark or PartitionMark()
        lost.hold_pending = True
        lost.next_offset = committed
        self.store.apply(p, {MARK_KEY: lost.to_bytes()})
        self.stats.holds += 1
        return committed
