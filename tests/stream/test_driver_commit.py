"""The driver's commit step without a broker: late allows are re-decided, offsets trail marks.

A real `KafkaDriver` (never started) commits batches of a real `Runner` through
stand-in transactional producers whose sends take as long as a test says, so a
commit can be made to finish after a request's deadline.  The broker-backed
behaviour (crashes, fencing, restarts) is covered by tests/e2e/test_exactly_once.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from holdgate import reasons as rc
from holdgate.events import ActionRequest, decode_verdict, encode
from holdgate.keys import Signer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.settings import Settings
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.kafka_driver import KafkaDriver
from holdgate.stream.lanes import Lane
from holdgate.stream.marks import MARK_KEY, PartitionMark


class SlowProducer:
    """Records what a transaction did; each send completes after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.committed: list[list[tuple[str, bytes | None]]] = []
        self.aborted = 0
        self._open: list[tuple[str, bytes | None]] = []

    async def begin_transaction(self) -> None:
        self._open = []

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[Any]:
        self._open.append((topic, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        offset = len(self._open)
        asyncio.get_running_loop().call_later(
            self.delay, lambda: done.done() or done.set_result(type("M", (), {"offset": offset})))
        return done

    async def commit_transaction(self) -> None:
        self.committed.append(self._open)

    async def abort_transaction(self) -> None:
        self.aborted += 1


def _driver(tmp_path: Any) -> tuple[KafkaDriver, Runner]:
    settings = Settings(bootstrap="127.0.0.1:1", datadir=str(tmp_path), partitions=1)
    engine = PolicyEngine(PolicyBundle.load(default_bundle_path()))
    store = MemoryStore()
    runner = Runner(snapshot=Snapshot(engine=engine, policy_version="v", partitions=1),
                    store=store, partitions=1, signer=Signer.generate())
    return KafkaDriver(settings, runner, store), runner  # type: ignore[arg-type]


def _raws(deadline_in: float, n: int = 3) -> list[RawRecord]:
    now = time.time()
    reqs = [ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                                 resource={"type": "Ticket", "id": f"T-{i}"}, occurred_at=now,
                                 deadline=now + deadline_in) for i in range(n)]
    return [RawRecord(key=r.agent_id.encode(), value=encode(r), partition=0, offset=i,
                      topic="holdgate.actions", timestamp=now) for i, r in enumerate(reqs)]


def _verdicts(producer: SlowProducer, topic: str) -> list[Any]:
    [txn] = producer.committed
    return [decode_verdict(v) for t, v in txn if t == topic and v is not None]


async def _commit(driver: KafkaDriver, runner: Runner, raws: list[RawRecord],
                  delay: float) -> tuple[Lane, list[SlowProducer]]:
    producers = [SlowProducer(delay), SlowProducer(delay)]
    lane = Lane(0, producers=producers, ready=True)       # type: ignore[arg-type]
    driver._lanes[0] = lane
    out = runner.run(raws, decided_at=time.time())
    assert all(d.allowed for d in out.decisions)          # decided in time
    await driver._commit_or_redo(lane, out, raws, 0.0)
    return lane, producers


def test_allow_that_would_commit_after_its_deadline_is_aborted_and_expires(tmp_path: Any
                                                                           ) -> None:
    driver, runner = _driver(tmp_path)
    raws = _raws(deadline_in=0.2)
    lane, (first, second) = asyncio.run(_commit(driver, runner, raws, delay=0.4))
    assert first.aborted == 1 and first.committed == []   # nothing of it became visible
    verdicts = _verdicts(second, driver.settings.verdicts_topic)   # the other id, at once
    assert [v.decision for v in verdicts] == ["deny"] * 3
    assert {v.reasons[0].code for v in verdicts} == {rc.EXPIRED}
    assert driver.stats.redone == 1 and driver.stats.batches == 1
    assert lane.position == 3 and lane.turn == 0          # moved on, alternated twice
    mark = PartitionMark.from_bytes(runner.store.get(0, MARK_KEY) or b"")
    assert mark is not None and mark.next_offset == 3


def test_allow_committed_in_time_is_committed_once(tmp_path: Any) -> None:
    driver, runner = _driver(tmp_path)
    lane, (first, second) = asyncio.run(_commit(driver, runner, _raws(deadline_in=5.0),
                                                delay=0.01))
    assert first.aborted == 0 and second.committed == []
    assert [v.decision for v in _verdicts(first, driver.settings.verdicts_topic)] == \
        ["allow"] * 3
    assert driver.stats.redone == 0 and lane.turn == 1
    # the group offset is due only now, after the transaction: it can never lead the mark
    assert driver.offsets._due == {TopicPartition("holdgate.actions", 0): 3}


def test_group_offsets_commit_coalesced_and_retry_after_a_failure() -> None:
    calls: list[dict[TopicPartition, int]] = []
    fail = [True]

    class Consumer:
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            calls.append(dict(offsets))
            if fail[0]:
                raise RuntimeError("rebalance in progress")

    from holdgate.stream.offsets import GroupOffsets
    tp0, tp1 = TopicPartition("a", 0), TopicPartition("a", 1)
    offsets = GroupOffsets(lambda: Consumer(), lambda p: p != 1)

    async def go() -> None:
        offsets.due({tp0: 5})
        offsets.due({tp0: 9, tp1: 2})                     # coalesced: the latest per partition
        assert not await offsets.flush()                  # fails: kept for the next one
        fail[0] = False
        offsets.due({tp0: 7})                             # older than what is pending: ignored
        assert await offsets.flush()
        assert await offsets.flush()                      # nothing due: no request

    asyncio.run(go())
    assert calls == [{tp0: 9}, {tp0: 9}]                  # partition 1 is not ours any more
