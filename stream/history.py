"""History as input: the actions topic over a time range, or a JSON Lines file.

Both yield `RawRecord`s for the runner, so `replay`, `backtest` and `fit` see
history exactly as the live worker saw it:

* **topic**: ``--from/--to`` (ISO times or durations such as ``1h``, meaning
  that long before now); start and end offsets are found by timestamp, actions
  are read ``read_committed`` (an aborted action was never decided) and each
  keeps its partition, offset and broker append time (the live event time).
  The verdicts recorded for them are read alongside, for comparison.
* **file**: one ActionRequest JSON object per line, exactly as published
  (``-`` reads standard input).  A file has no broker time: ``occurred_at``
  is the event time, so ``CLOCK_SKEW`` and broker-time ``EXPIRED`` denies of
  the live run are not reproduced from a file (they are from the topic).
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from holdgate.errors import ConfigError
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings
from holdgate.stream.edges import RawRecord

__all__ = ["parse_when", "read_jsonl", "TopicHistory", "read_topic", "export_line"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from an ISO 8601 time (UTC unless it says) or a duration ago (``90m``)."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is neither an ISO time (2026-11-29T10:00:00Z) nor a "
                          "duration (30s, 15m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def read_jsonl(path: str | Path) -> Iterator[RawRecord]:
    """Records from a JSON Lines history ('-' is standard input); blank lines are skipped."""
    stream: IO[bytes]
    own = str(path) != "-"
    try:
        stream = open(path, "rb") if own else sys.stdin.buffer
    except OSError as exc:
        raise ConfigError(f"cannot read history {path}: {exc.strerror}") from None
    try:
        for number, line in enumerate(stream, 1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            # A file has no partitions; the runner routes state and verdicts by agent.
            yield RawRecord(key=None, value=value, partition=0, offset=None,
                            topic=f"{path}:{number}")
    finally:
        if own:
            stream.close()


def export_line(value: bytes | None) -> bytes | None:
    """A record value as one JSON Lines line, or None when it is not a JSON object.

    Values are kept byte for byte (so their action digest stays the same); only
    a value spread over several lines is re-serialised compactly, since a line
    cannot hold it otherwise.
    """
    if not value:
        return None
    if b"\n" not in value and b"\r" not in value:
        try:
            return value if isinstance(orjson.loads(value), dict) else None
        except orjson.JSONDecodeError:
            return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(obj) if isinstance(obj, dict) else None


@dataclass
class TopicHistory:
    """Actions in a time range with the verdicts recorded for them."""

    records: list[RawRecord] = field(default_factory=list)
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    from_offsets: dict[int, int] = field(default_factory=dict)
    skipped_verdicts: int = 0


def read_topic(settings: Settings, start: float, end: float, *,
               with_verdicts: bool = True, progress: Any = None) -> TopicHistory:
    """Read ``[start, end)`` of the actions topic (and its verdicts) with read_committed."""
    from kafka import KafkaConsumer

    if end <= start:
        raise ConfigError("--to must be after --from")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", client_id="holdgate-history",
                             consumer_timeout_ms=1000, **kafka_python_options(settings))
    try:
        history = TopicHistory()
        tps = _partitions(consumer, settings.actions_topic)
        for tp, record in _range(consumer, tps, start, end, history.from_offsets, progress):
            ts = record.timestamp / 1000.0 if record.timestamp_type == 1 else None
            history.records.append(RawRecord(
                key=record.key, value=record.value, partition=tp.partition,
                offset=record.offset, topic=tp.topic, timestamp=ts))
        if with_verdicts and history.records:
            vtps = _partitions(consumer, settings.verdicts_topic)
            # verdicts come after their actions: look a little past the range's end
            for _, record in _range(consumer, vtps, start, end + 600.0, {}, None):
                try:
                    obj = orjson.loads(record.value)
                    history.recorded.setdefault(obj["request_id"], obj)
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    history.skipped_verdicts += 1
        return history
    finally:
        consumer.close()


def _partitions(consumer: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ConfigError(f"topic {topic} does not exist on this broker")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def _range(consumer: Any, tps: list[Any], start: float, end: float,
           from_offsets: dict[int, int], progress: Any) -> Iterator[tuple[Any, Any]]:
    """(tp, record) for records with start <= timestamp < end, partition by partition."""
    begin = consumer.offsets_for_times({tp: int(start * 1000) for tp in tps})
    stop = consumer.offsets_for_times({tp: int(end * 1000) for tp in tps})
    ends = consumer.end_offsets(tps)
    bounds = {}
    for tp in tps:
        first = begin[tp].offset if begin.get(tp) is not None else ends[tp]
        last = stop[tp].offset if stop.get(tp) is not None else ends[tp]
        if first < last:
            bounds[tp] = (first, last)
            from_offsets[tp.partition] = first
    if progress is not None:
        progress.reset(total=sum(b - a for a, b in bounds.values()))
    consumer.assign(list(bounds))
    for tp, (first, _) in bounds.items():
        consumer.seek(tp, first)
    pending = dict(bounds)
    while pending:
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        if not batch:
            # read_committed: markers and aborted records leave holes before `last`
            for tp in list(pending):
                if consumer.position(tp) >= pending[tp][1]:
                    del pending[tp]
            continue
        for tp, records in batch.items():
            if tp not in pending:
                continue
            last = pending[tp][1]
            for record in records:
                if record.offset >= last:
                    break
                yield tp, record
            if progress is not None:
                progress.update(len(records))
            if consumer.position(tp) >= last or (records and records[-1].offset >= last - 1):
                del pending[tp]
                consumer.pause(tp)
