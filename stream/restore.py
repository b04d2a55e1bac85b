"""Bring a partition's local store up to the changelog: only the tail after its checkpoint.

The changelog is written in the same Kafka transactions as the verdicts and
the consumed offsets, and read here with ``read_committed``: an aborted
batch's state never comes back, a committed one always does.  The cost of a
restart is the tail written since the store's checkpoint (usually nothing),
not the history; a worker that never had the partition reads the compacted
changelog once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from holdgate.stream.state import StateStore

__all__ = ["RestoreStats", "restore"]

log = logging.getLogger(__name__)

_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class RestoreStats:
    partition: int
    records: int
    seconds: float
    from_offset: int
    to_offset: int
    wiped: bool


async def restore(consumer: AIOKafkaConsumer, topic: str, partitions: Sequence[int],
                  store: StateStore, *, timeout: float = 300.0) -> list[RestoreStats]:
    """Catch `store` up with `topic` for `partitions` (consumer: no group, read_committed)."""
    t0 = time.monotonic()
    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return []
    consumer.assign(tps)
    begins = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)           # last stable offsets (read_committed)
    todo: dict[TopicPartition, int] = {}
    starts: dict[int, int] = {}
    wiped: set[int] = set()
    for tp in tps:
        checkpoint = store.checkpoint(tp.partition)
        start = begins[tp] if checkpoint is None else checkpoint + 1
        if checkpoint is not None and (start < begins[tp] or start > ends[tp]):
            # The log no longer holds what came after our checkpoint (truncated), or is
            # younger than the store (the topic was recreated): start over from the log.
            log.warning("state of partition %d is not continuous with %s (checkpoint %d, "
                        "log %d..%d): restoring it from the beginning", tp.partition, topic,
                        checkpoint, begins[tp], ends[tp])
            store.drop(tp.partition)
            wiped.add(tp.partition)
            start = begins[tp]
        starts[tp.partition] = start
        if start < ends[tp]:
            consumer.seek(tp, start)
            todo[tp] = ends[tp]
    counts = dict.fromkeys(partitions, 0)
    deadline = time.monotonic() + timeout
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"restoring {topic} {sorted(tp.partition for tp in todo)} "
                               f"took longer than {timeout:.0f}s")
        batches = await consumer.getmany(*todo, timeout_ms=500, max_records=_CHUNK)
        for tp, records in batches.items():
            writes: dict[str, bytes | None] = {}
            for record in records:
                writes[record.key.decode("utf-8", "replace")] = record.value
            if records:
                store.apply(tp.partition, writes, records[-1].offset)
                counts[tp.partition] += len(records)
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                del todo[tp]
    seconds = time.monotonic() - t0
    return [RestoreStats(p, counts[p], seconds, starts[p], ends[TopicPartition(topic, p)],
                         p in wiped) for p in partitions]
