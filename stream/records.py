"""What goes in and out of the decision pipeline, independent of Faust.

Keeping the pipeline free of Faust types makes it testable and benchmarkable
on its own, and lets the replay/backtest tools drive the exact same code.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["RawRecord", "Outgoing", "BatchResult", "deadletter_record", "recover_identity"]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed action record, exactly as it came off the topic."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int = -1
    topic: str = ""
    timestamp: float | None = None   # broker append time (LogAppendTime), seconds


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce: the verdict goes back to its action's partition number."""

    partition: int
    key: bytes
    value: bytes


@dataclass
class BatchResult:
    verdicts: list[Outgoing] = field(default_factory=list)
    deadletters: list[bytes] = field(default_factory=list)
    allowed: int = 0
    denied: int = 0
    event_times: dict[int, float] = field(default_factory=dict)  # partition -> max occurred_at


def deadletter_record(raw: RawRecord, error: str, *, worker: str) -> bytes:
    """Everything needed to find, understand and re-drive a bad record; nothing dropped."""
    value = raw.value or b""
    return orjson.dumps({
        "error": error,
        "topic": raw.topic, "partition": raw.partition, "offset": raw.offset,
        "key_b64": base64.b64encode(raw.key).decode() if raw.key is not None else None,
        "value_b64": base64.b64encode(value).decode(),
        "received_at": time.time(), "worker": worker,
    })


def recover_identity(value: bytes | None, key: bytes | None) -> tuple[str, str] | None:
    """Best effort (request_id, agent_id) from a record that failed validation.

    Enough to send the waiting agent a MALFORMED deny instead of leaving it to
    time out; never enough to decide anything else.
    """
    if not value:
        return None
    try:
        obj: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    request_id, agent_id = obj.get("request_id"), obj.get("agent_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
        return None
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 128:
        if key:
            agent_id = key.decode("utf-8", "replace")[:128]
        else:
            return None
    return request_id, agent_id
