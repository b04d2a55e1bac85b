"""The live driver: actions from Kafka through the runner, exactly once, per partition.

Each batch of a partition is one Kafka transaction holding its verdicts, its
dead letters, the changed agent states and the partition's mark (changelog).
The mark records the next action (and approval) offset to decide, so a
``read_committed`` reader sees a batch's verdicts if and only if its state and
position moved too.  The consumer group's offsets are committed after the
transaction, off the decision's path (`holdgate.stream.offsets`): they trail
the marks and only tell lost state from a restart.  A
crash at any point either loses the whole batch (it is decided again, from the
state that did not count it, with the same inputs) or none of it.  The group
offset is never ahead of the mark unless the changelog was lost, which is how
lost state is told from a normal restart.  Actions are read with ``read_committed`` too, so an
aborted producer transaction is never decided and its markers are just offsets
the consumer steps over.

Lanes: the loop only fetches; each partition's lane decides and commits its
own batches, one after another, without waiting for other partitions
(`holdgate.stream.lane_batches` says why and how).

Fencing: every actions partition has its own transactional ids
(``<app_id>.decide.<partition>.{a,b}``).  A worker taking a partition over
starts producers with those ids, which fences the previous owner (a zombie's
late commit fails) and completes or aborts its open transactions *before* the
new owner restores state.  aiokafka's TxnOffsetCommit carries no group
generation (KIP-447), so these per-partition ids are what keep zombies out.
Two ids alternate from batch to batch: a transaction started right after the
previous one's commit on the same id is refused until its markers are written
(KAFKA-5477), which costs a 20 ms retry; the other id has no such wait.

Membership: static (``group.instance.id``), so a crashed worker that restarts
within the session timeout gets its partitions back without a rebalance and
restores only its changelog tail from the local RocksDB store.

Approvals: the approvals topic is co-partitioned with the actions and
subscribed with the range assignor, so partition p of both goes to the same
worker: the lane of p reads the tokens that lift p's held actions, and their
offsets are committed in the same transaction as the verdicts they produce.

Versions: the published policy and model (and any shadow candidate) are
followed (`holdgate.stream.swap`) and the runner's snapshot is swapped between
two batches, keeping the controls in force; lanes get ready only once the
versions are known (`holdgate.stream.lanes`).  Each worker publishes its signed
status (`holdgate.stream.status_pub`) for `holdgate status`.

Stopping: `stop()` ends the loop whatever the broker's state; a batch still
committing gets a short grace, then is given up like a crash, and every call on
the broker while stopping is bounded (`holdgate.stream.health`).  Counters and
metrics live in `holdgate.stream.metrics`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from holdgate.controls import Control, Controls
from holdgate.kafka_options import aiokafka_options
from holdgate.settings import Settings
from holdgate.status import WorkerStatus
from holdgate.stream.core import Snapshot
from holdgate.stream.heap import settle
from holdgate.stream.health import (BrokerWatch, bounded, lifecycle, release_producers,
                                   unless_set)
from holdgate.stream.lane_batches import CLOSE_BOUND, LaneBatches, committing
from holdgate.stream.lanes import Lane
from holdgate.stream.metrics import DriverStats, WorkerMetrics
from holdgate.stream.offsets import GroupOffsets
from holdgate.stream.runner import BatchOutput, Runner
from holdgate.stream.signed_table import SignedTable, follow
from holdgate.stream.status_pub import StatusPublisher
from holdgate.stream.swap import VERSIONS_UNKNOWN, Versions
from holdgate.stream.store import RocksStore

__all__ = ["KafkaDriver", "DriverStats"]

log = logging.getLogger("holdgate.worker")

class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, driver: KafkaDriver) -> None:
        self.driver = driver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.driver._revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Range assignment gives partition p of the actions and the approvals topics to
        # the same member: one lane per partition number handles both.
        self.driver._assign({tp.partition for tp in assigned})


class KafkaDriver(LaneBatches):
    """Runs until `stop()`: consume; each partition's lane decides and commits on its own."""

    def __init__(self, settings: Settings, runner: Runner, store: RocksStore, *,
                 instance_id: str | None = None,
                 on_batch: Callable[[BatchOutput, float], None] | None = None,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.runner = runner
        self.store = store
        self.instance_id = instance_id
        self.on_batch = on_batch
        self.metrics = metrics
        self.stats = DriverStats()
        self.broker = BrokerWatch(settings.bootstrap)
        self._lanes: dict[int, Lane] = {}
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._topic = settings.actions_topic
        self._approvals = settings.approvals_topic
        self.controls: SignedTable[Control] = SignedTable(
            settings.bootstrap, settings.control_topic, settings.operators(),
            Control.from_bytes, client_options=aiokafka_options(settings))
        self._tasks: list[asyncio.Task[None]] = []
        self.versions = Versions(settings, runner.snapshot, self._swap)
        self.status = StatusPublisher(settings, runner.signer, self.describe)
        self.versions.on_report = self.status.changed
        self.offsets = GroupOffsets(lambda: self._consumer, lambda p: p in self._lanes)

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready_partitions(self) -> list[int]:
        return sorted(p for p, lane in self._lanes.items() if lane.ready)

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self._lanes)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def lanes(self) -> Mapping[int, Lane]:
        """Assigned partitions, read-only (readiness and metrics read them)."""
        return MappingProxyType(self._lanes)

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer

    async def _probe_topics(self) -> Any:
        """The broker watch's probe: a metadata round trip on the group consumer."""
        if self._consumer is None:
            raise ConnectionError("the consumer is not started")
        return await self._consumer.topics()

    def stop(self) -> None:
        self._stopping.set()

    def _controls_changed(self) -> None:
        """Swap the snapshot's controls; the next batch decides under them (never mid-batch)."""
        controls = Controls.latest(self.controls.values, self.controls.version)
        self.runner.snapshot = dataclasses.replace(self.runner.snapshot, controls=controls)
        lifecycle.info("operator controls now in force: %d active (%s)", len(controls),
                       "; ".join(c.key for c in controls) or "none")

    def _swap(self, snapshot: Snapshot) -> None:
        """A new published set: in force from the next batch, with the controls in force."""
        self.runner.snapshot = dataclasses.replace(snapshot,
                                                   controls=self.runner.snapshot.controls)
        settle()          # the previous versions' objects are garbage now; freeze the new
        self.status.changed()

    def _unavailable(self) -> None:
        """The versions' topics cannot be read: decide on, but deny STATE_RECOVERING."""
        if not self.versions.caught_up.is_set() and self.runner.snapshot.unavailable is None:
            log.error("the published policy/model versions could not be read within the "
                      "wait; every action is denied STATE_RECOVERING until they can")
            self.runner.snapshot = dataclasses.replace(self.runner.snapshot,
                                                       unavailable=VERSIONS_UNKNOWN)

    def describe(self) -> WorkerStatus:
        """What this worker decides with, for the status topic."""
        v = self.versions
        snapshot = self.runner.snapshot
        problems = list(v.problems)
        if snapshot.unavailable:
            problems.append(snapshot.unavailable)
        ready = self.ready_partitions
        return WorkerStatus(
            worker=self.runner.worker_id, host=socket.gethostname(), pid=os.getpid(),
            enforced={"policy": snapshot.policy_version, "model": snapshot.model_version},
            shadow=dict(v.shadow), since=v.since, updated_at=time.time(), partitions=ready,
            ready=bool(self._lanes) and len(ready) == len(self._lanes)
            and snapshot.unavailable is None, problems=problems[:50])

    async def run(self) -> None:
        s = self.settings
        if not len(self.controls.trust):
            log.warning("no operator keys (HOLDGATE_OPERATOR_KEYS): control records (revoke, "
                        "suspend) will be ignored")
        self._tasks += [asyncio.ensure_future(follow(self.controls, self._controls_changed)),
                        asyncio.ensure_future(self.versions.run()),
                        asyncio.ensure_future(self.status.run()),
                        asyncio.ensure_future(self.broker.run(self._probe_topics)),
                        asyncio.ensure_future(self.offsets.run(self._stopping))]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, client_id=f"{s.app_id}-worker", group_id=s.app_id,
            group_instance_id=self.instance_id, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, s.session_timeout / 4) * 1000),
            max_poll_interval_ms=300_000, fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 2**20, request_timeout_ms=max(
                40_000, int(s.session_timeout * 1000) + 5000),
            partition_assignment_strategy=(RangePartitionAssignor,), **aiokafka_options(s))
        try:
            started = await unless_set(self._stopping, self._consumer.start())
            if started is not None:
                started.result()
                self._consumer.subscribe([self._topic, self._approvals],
                                         listener=_Listener(self))
                await self._loop()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Release everything within a few seconds, reachable broker or not."""
        for task in self._tasks:
            task.cancel()
        if self.broker.down_since is None:     # the last batches' offsets, if it is quick
            await bounded(self.offsets.flush(), 2.0, "final group offset commit")
        for lane in self._lanes.values():
            for task in [t for t in (lane.task, lane.drain) if t is not None]:
                task.cancel()
        closing: list[Awaitable[Any]] = [self._close_lane(p) for p in list(self._lanes)]
        if self._consumer is not None:      # static member: its partitions wait for it
            closing.append(bounded(self._consumer.stop(), CLOSE_BOUND, "consumer stop"))
        await asyncio.gather(*closing)

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        """Fetch, and hand each partition's records to its lane (`LaneBatches`)."""
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            fetch = await unless_set(self._stopping, consumer.getmany(
                timeout_ms=200, max_records=self.settings.batch_max))
            if fetch is None:
                break
            self._dispatch(fetch.result())
        await self._finish_lanes()

    # ------------------------------------------------------------------ rebalancing
    def _assign(self, partitions: set[int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        for p in sorted(partitions):
            if p in self._lanes:
                continue
            lane = self._lanes[p] = Lane(p)
            consumer.pause(*self._tps(p))
            lane.task = asyncio.ensure_future(self._prepare(lane))
        log.info("assigned actions partitions %s", sorted(partitions))

    def _tps(self, p: int) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p), TopicPartition(self._approvals, p)]

    async def _revoke(self, partitions: set[int]) -> None:
        lanes = [lane for p in sorted(partitions) if (lane := self._lanes.get(p)) is not None]
        for lane in lanes:
            lane.ready = False            # no new batch starts; one committing finishes
            lane.backlog.clear()
        busy = committing(lanes)
        if busy:
            await asyncio.wait(busy)
        # what they committed goes to the group before they leave (best effort: the
        # next owner resumes from the marks anyway)
        await self.offsets.flush(set(partitions))
        for lane in lanes:
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(*(self._close_lane(p) for p in partitions),
                             return_exceptions=True)
        log.info("revoked actions partitions %s", sorted(partitions))
        self.status.changed()

    async def _close_lane(self, partition: int) -> None:
        lane = self._lanes.pop(partition, None)
        if lane is not None:
            lane.ready = False
            await self._close_producers(lane)

    async def _close_producers(self, lane: Lane) -> None:
        producers, lane.producers = lane.producers, []
        open_txn = producers[lane.turn] if lane.in_txn and producers \
            and self.broker.down_since is None else None     # no abort reaches a lost broker
        lane.in_txn = False
        await release_producers(producers, open_txn, CLOSE_BOUND)
