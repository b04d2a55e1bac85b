"""Per-agent state for one micro-batch, over a changelog-backed Faust table.

The table stores `AgentState.to_bytes()` per agent id.  A batch loads only the
agents it touches, the signal computer mutates them, and `flush` writes each
dirty state once, to the changelog partition of that agent's action partition
(the routing contract pins every agent to one partition, so its state lives on
exactly one worker and moves with the partition on a rebalance).

The table also keeps one watermark record per partition: the last action
offset folded into state and, after a gap, the event time until which the
partition is held in `STATE_RECOVERING`.  A gap means actions were consumed
whose effect on the counters is lost (state deleted, changelog truncated,
crash between commit and flush): such limits cannot be counted, so they are not
enforced by guesswork; the gate denies until the windows have refilled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, MutableMapping, Protocol

import orjson

from holdgate.errors import ModelError
from holdgate.models import AgentState

__all__ = ["StateBackend", "DictBackend", "BatchStates", "Watermarks", "PartitionMark",
           "watermark_key", "evict_idle"]


class StateBackend(Protocol):
    """Byte-level store: the Faust table in the worker, a dict in tests and replays."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, partition: int, key: str, value: bytes) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def keys(self) -> Iterator[str]: ...


@dataclass
class DictBackend:
    """In-memory backend: replays, backtests and unit tests run the same code."""

    data: dict[str, bytes] = field(default_factory=dict)

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, partition: int, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, partition: int, key: str) -> None:
        self.data.pop(key, None)

    def keys(self) -> Iterator[str]:
        return iter(list(self.data))


def watermark_key(partition: int) -> str:
    # '~' can never start an agent id (they start alphanumeric), so no collision.
    return f"~watermark/{partition}"


class BatchStates(MutableMapping[str, AgentState]):
    """A lazily decoded view of the agents one batch touches; writes are buffered."""

    def __init__(self, backend: StateBackend, partition_of: Callable[[str], int]) -> None:
        self._backend = backend
        self._partition_of = partition_of
        self._cache: dict[str, AgentState | None] = {}
        self._dirty: set[str] = set()
        self.corrupt: set[str] = set()

    def __getitem__(self, key: str) -> AgentState:
        if key not in self._cache:
            blob = self._backend.get(key)
            state = None
            if blob is not None:
                try:
                    state = AgentState.from_bytes(blob)
                except ModelError:
                    self.corrupt.add(key)  # the decider denies this agent STATE_RECOVERING
            self._cache[key] = state
        state = self._cache[key]
        if state is None:
            raise KeyError(key)
        return state

    def __setitem__(self, key: str, value: AgentState) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        self._cache[key] = None
        self._dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, v in self._cache.items() if v is not None)

    def __len__(self) -> int:
        return sum(v is not None for v in self._cache.values())

    def flush(self) -> int:
        """Write every dirty state once; returns the number of changelog records."""
        for key in self._dirty:
            state = self._cache.get(key)
            part = self._partition_of(key)
            if state is None:
                self._backend.delete(part, key)
            else:
                self._backend.put(part, key, state.to_bytes())
        written = len(self._dirty)
        self._dirty.clear()
        return written


@dataclass
class PartitionMark:
    offset: int = -1              # last action offset folded into state; -1: none yet
    hold_until: float = 0.0       # event time until which the partition is recovering


class Watermarks:
    """Reads and writes the per-partition watermark records in the same table."""

    def __init__(self, backend: StateBackend) -> None:
        self._backend = backend

    def get(self, partition: int) -> PartitionMark | None:
        blob = self._backend.get(watermark_key(partition))
        if blob is None:
            return None
        try:
            obj = orjson.loads(blob)
            return PartitionMark(int(obj["offset"]), float(obj["hold_until"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return PartitionMark(offset=-2)   # unreadable: treated as a gap

    def put(self, partition: int, mark: PartitionMark) -> None:
        self._backend.put(partition, watermark_key(partition), orjson.dumps(
            {"offset": mark.offset, "hold_until": mark.hold_until}))


def evict_idle(backend: StateBackend, partition_of: Callable[[str], int],
               partition_time: dict[int, float], idle_ttl: float) -> int:
    """Delete (tombstone) agents unseen for `idle_ttl` of their partition's event time.

    Event time, not the wall clock: a replay evicts the same agents, and a quiet
    partition keeps its agents until its own traffic moves time on.  Partitions
    this worker has no time for (not assigned, nothing seen yet) are left alone.
    """
    evicted = 0
    for agent in backend.keys():
        if agent.startswith("~"):
            continue
        part = partition_of(agent)
        now = partition_time.get(part)
        blob = backend.get(agent)
        if now is None or blob is None:
            continue
        try:
            idle = now - AgentState.from_bytes(blob).last_seen
        except ModelError:
            continue            # left for the decider, which holds the partition
        if idle > idle_ttl:
            backend.delete(part, agent)
            evicted += 1
    return evicted
