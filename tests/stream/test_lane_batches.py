"""Lanes decide on their own: a partition whose commit is slow never holds up another.

A real `KafkaDriver` (never started) is fed fetches by hand (`_dispatch`, as its
loop does) and commits through stand-in producers whose transactions finish
when a test says.  Broker-backed behaviour (crashes, fencing, rebalances) is
covered by tests/e2e/test_exactly_once.py and test_scale_out_e2e.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition
from test_driver_commit import SlowProducer

from holdgate.events import ActionRequest, decode_verdict, encode
from holdgate.keys import Signer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.routing import partition_for
from holdgate.settings import Settings
from holdgate.stream import MemoryStore, Runner, Snapshot
from holdgate.stream.kafka_driver import KafkaDriver
from holdgate.stream.lanes import Lane
from holdgate.stream.marks import MARK_KEY, PartitionMark

PARTS = 2
AGENTS = {p: next(f"support-bot-{i}" for i in range(100)
                  if partition_for(f"support-bot-{i}", PARTS) == p) for p in range(PARTS)}


class GatedProducer(SlowProducer):
    """A transactional producer whose commits wait for `gate` (set: commit at once)."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(delay=0.0)
        self.gate = gate

    async def commit_transaction(self) -> None:
        await self.gate.wait()
        await super().commit_transaction()


class Consumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed = offsets


class Fetched:
    """What aiokafka's getmany hands over, as far as the driver reads it."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self.key, self.value, self.offset = key, value, offset
        self.timestamp, self.timestamp_type, self.headers = int(time.time() * 1000), 1, ()


class Rig:
    def __init__(self, tmp_path: Any, batch_max: int = 256) -> None:
        settings = Settings(bootstrap="127.0.0.1:1", datadir=str(tmp_path), partitions=PARTS,
                            batch_max=batch_max)
        engine = PolicyEngine(PolicyBundle.load(default_bundle_path()))
        self.store = MemoryStore()
        runner = Runner(snapshot=Snapshot(engine=engine, policy_version="v", partitions=PARTS),
                        store=self.store, partitions=PARTS, signer=Signer.generate())
        self.driver = KafkaDriver(settings, runner, self.store)  # type: ignore[arg-type]
        self.consumer = self.driver._consumer = Consumer()       # type: ignore[assignment]
        self.gates = {p: asyncio.Event() for p in range(PARTS)}
        self.producers = {p: [GatedProducer(self.gates[p]) for _ in "ab"] for p in range(PARTS)}
        for p in range(PARTS):
            self.driver._lanes[p] = Lane(p, producers=self.producers[p],  # type: ignore[arg-type]
                                         ready=True, position=0, approvals_position=0)
        self.offsets = [0] * PARTS

    def fetch(self, partition: int, n: int) -> None:
        records = []
        for _ in range(n):
            req = ActionRequest.create(agent_id=AGENTS[partition], action="tickets.read",
                                       resource={"type": "Ticket", "id": "T-1"},
                                       deadline=time.time() + 30)
            records.append(Fetched(req.agent_id.encode(), encode(req), self.offsets[partition]))
            self.offsets[partition] += 1
        self.driver._dispatch({TopicPartition(self.driver.settings.actions_topic, partition):
                               records})

    def verdicts(self, partition: int) -> list[list[Any]]:
        topic = self.driver.settings.verdicts_topic
        txns = [t for pr in self.producers[partition] for t in pr.committed]
        return [[decode_verdict(v) for t, v in txn if t == topic and v] for txn in txns]

    def mark(self, partition: int) -> int | None:
        mark = PartitionMark.from_bytes(self.store.get(partition, MARK_KEY) or b"")
        return None if mark is None else mark.next_offset


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_stuck_commit_holds_only_its_own_partition(tmp_path: Any) -> None:
    async def scenario() -> None:
        rig = Rig(tmp_path)
        rig.gates[1].set()                      # partition 1 commits at once
        rig.fetch(0, 3)                         # partition 0's commit hangs
        await _settle()
        rig.fetch(1, 2)
        await _settle()
        assert [len(t) for t in rig.verdicts(1)] == [2] and rig.mark(1) == 2
        assert rig.verdicts(0) == [] and rig.mark(0) is None   # nothing visible or applied
        rig.fetch(0, 4)                         # arrive while 0's first batch commits
        await _settle()
        rig.gates[0].set()
        await asyncio.wait([lane.drain for lane in rig.driver._lanes.values()
                            if lane.drain is not None])
        # One batch after the other, the second with everything that arrived meanwhile.
        assert [len(t) for t in rig.verdicts(0)] == [3, 4]
        assert [v.seq for t in rig.verdicts(0) for v in t] == list(range(7))
        assert rig.mark(0) == 7 and rig.driver._lanes[0].position == 7
        assert rig.driver.stats.batches == 3
    asyncio.run(scenario())


def test_a_full_backlog_pauses_its_partition_until_the_lane_takes_it(tmp_path: Any) -> None:
    async def scenario() -> None:
        rig = Rig(tmp_path, batch_max=4)
        tps = set(rig.driver._tps(0))
        rig.fetch(0, 2)                         # decided at once, commit hangs
        await _settle()
        rig.fetch(0, 4)                         # a full batch waits behind it
        assert rig.consumer.paused == tps
        rig.gates[0].set()
        await asyncio.wait([rig.driver._lanes[0].drain])  # type: ignore[list-item]
        assert rig.consumer.paused == set() and [len(t) for t in rig.verdicts(0)] == [2, 4]
    asyncio.run(scenario())


def test_a_revoke_waits_for_the_commit_in_flight_and_drops_what_is_queued(tmp_path: Any
                                                                          ) -> None:
    async def scenario() -> None:
        rig = Rig(tmp_path)
        rig.fetch(0, 2)
        await _settle()
        rig.fetch(0, 3)                         # queued behind the stuck commit
        revoke = asyncio.ensure_future(rig.driver._revoke({0}))
        await _settle()
        assert not revoke.done()                # the batch in flight is not cut off
        rig.gates[0].set()
        await revoke
        assert [len(t) for t in rig.verdicts(0)] == [2]   # the queued 3: the next owner's
        assert 0 not in rig.driver._lanes and rig.mark(0) == 2
        assert rig.consumer.committed == {TopicPartition(rig.driver.settings.actions_topic,
                                                         0): 2}   # flushed before leaving
    asyncio.run(scenario())


def test_records_before_the_lanes_position_are_not_decided_again(tmp_path: Any) -> None:
    async def scenario() -> None:
        rig = Rig(tmp_path)
        rig.gates[0].set()
        rig.fetch(0, 3)
        await asyncio.wait([rig.driver._lanes[0].drain])  # type: ignore[list-item]
        rig.offsets[0] = 1                      # a stale prefetch from before a seek
        rig.fetch(0, 4)
        await asyncio.wait([rig.driver._lanes[0].drain])  # type: ignore[list-item]
        assert [len(t) for t in rig.verdicts(0)] == [3, 2]   # offsets 3 and 4 only
        assert rig.mark(0) == 5
    asyncio.run(scenario())
