"""Exact records of a topic range, read_committed: what audit and explain stand on.

`stream.history` hands the runner `RawRecord`s; an auditor needs more of each
record: its headers (the verdict signature lives there), its offset (where it
sits in the decision log) and which offsets of the range hold *no* record a
read_committed consumer may see (transaction markers, aborted batches).  So
this module reads a range given as offsets per partition and yields `LogRecord`s
that keep all of that, byte for byte.

Bounds are offsets, not times, because only offsets say that a range is whole:
``[first, end)`` read to its end leaves no committed record out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from holdgate.errors import ConfigError
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings

__all__ = ["LogRecord", "open_consumer", "partition_count", "offset_bounds", "scan"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One committed record exactly as the broker holds it."""

    topic: str
    partition: int
    offset: int
    timestamp: float            # seconds (CreateTime or LogAppendTime, as the topic says)
    log_append_time: bool       # True: the broker stamped it (the actions topic)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def open_consumer(settings: Settings, client_id: str) -> Any:
    """A manual-assignment consumer that sees committed records only (SASL/TLS as set)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                         isolation_level="read_committed", client_id=client_id,
                         **kafka_python_options(settings))


def partition_count(consumer: Any, topic: str) -> int:
    """The topic's partition count as the broker reports it (not as settings guess it)."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ConfigError(f"topic {topic} does not exist on this broker")
    return len(parts)


def offset_bounds(consumer: Any, topic: str, partitions: Sequence[int],
                  start: float | None = None, end: float | None = None
                  ) -> dict[int, tuple[int, int]]:
    """``{partition: (first, end)}`` offsets of records stamped in ``[start, end)``.

    None for `start` means the partition's first retained record, None for
    `end` its current (last stable) end.  Partitions with nothing in range keep
    an empty ``(end, end)`` bound, so a caller can still say "checked, empty".
    """
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    ends = consumer.end_offsets(tps)
    begins = consumer.beginning_offsets(tps)
    first_at = consumer.offsets_for_times({tp: int(start * 1000) for tp in tps}) \
        if start is not None else {}
    last_at = consumer.offsets_for_times({tp: int(end * 1000) for tp in tps}) \
        if end is not None else {}
    bounds: dict[int, tuple[int, int]] = {}
    for tp in tps:
        stop = ends[tp]
        if end is not None and last_at.get(tp) is not None:
            stop = last_at[tp].offset
        if start is None:
            first = begins[tp]
        else:
            first = first_at[tp].offset if first_at.get(tp) is not None else ends[tp]
        first = min(first, stop)
        bounds[tp.partition] = (first, stop)
    return bounds


def scan(consumer: Any, topic: str, bounds: Mapping[int, tuple[int, int]], *,
         progress: Any = None, timeout: float = 120.0) -> Iterator[LogRecord]:
    """Every committed record of ``bounds``, in offset order within each partition.

    Partitions interleave (their relative order means nothing).  Stopping the
    iteration early is fine.  A range that stops moving for `timeout` seconds
    (a transaction left open below its end) raises rather than hang.
    """
    from kafka import TopicPartition

    pending = {TopicPartition(topic, p): b for p, b in bounds.items() if b[0] < b[1]}
    if progress is not None:
        progress.reset(total=sum(e - f for f, e in pending.values()))
    consumer.assign(list(pending))
    if pending:
        consumer.resume(*pending)     # an earlier scan paused the partitions it finished
    for tp, (first, _) in pending.items():
        consumer.seek(tp, first)
    stalled = time.monotonic()
    while pending:
        batch = consumer.poll(timeout_ms=500, max_records=5000)
        if not batch:
            # read_committed: markers and aborted records leave holes below the end
            for tp in list(pending):
                if consumer.position(tp) >= pending[tp][1]:
                    del pending[tp]
                    consumer.pause(tp)
            if pending and time.monotonic() - stalled > timeout:
                raise ConfigError(f"reading {topic} stalled below offsets "
                                  f"{ {tp.partition: b[1] for tp, b in pending.items()} } "
                                  f"for {timeout:.0f}s (an open transaction?)")
            continue
        stalled = time.monotonic()
        for tp, records in batch.items():
            if tp not in pending:
                continue
            last = pending[tp][1]
            for r in records:
                if r.offset >= last:
                    break
                yield LogRecord(topic=topic, partition=tp.partition, offset=r.offset,
                                timestamp=r.timestamp / 1000.0,
                                log_append_time=r.timestamp_type == 1, key=r.key,
                                value=r.value,
                                headers=tuple((k, bytes(v or b"")) for k, v in r.headers or ()))
            if progress is not None:
                progress.update(len(records))
            if tp in pending and (consumer.position(tp) >= last
                                  or (records and records[-1].offset >= last - 1)):
                del pending[tp]
                consumer.pause(tp)
