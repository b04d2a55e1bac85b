"""Per-agent state for one batch, over a partitioned byte store.

The store holds, per partition, `AgentState.to_bytes()` per agent id plus the
partition's mark (`holdgate.stream.marks`).  A batch loads only the agents it
touches, the core mutates them, and `BatchStates.writes` hands back each
changed state once, grouped by partition.  The driver decides when writes
become durable: the worker puts them on the changelog in the batch's Kafka
transaction and applies them to its local store once that committed; replay
applies them at once to memory.  Every agent is pinned to one partition (the
routing contract), so its state lives on exactly one worker and moves with the
partition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, MutableMapping, Protocol

from holdgate.errors import ModelError
from holdgate.models import AgentState

__all__ = ["StateStore", "MemoryStore", "BatchStates", "Writes", "idle_agents"]

#: partition -> key -> blob (None deletes the key)
Writes = dict[int, dict[str, bytes | None]]


class StateStore(Protocol):
    """Byte-level, partitioned store: RocksDB in the worker, a dict in replays and tests."""

    def get(self, partition: int, key: str) -> bytes | None: ...

    def apply(self, partition: int, writes: Mapping[str, bytes | None],
              checkpoint: int | None = None) -> None: ...

    def checkpoint(self, partition: int) -> int | None: ...

    def keys(self, partition: int) -> Iterator[str]: ...

    def drop(self, partition: int) -> None: ...


@dataclass
class MemoryStore:
    """In-memory store: replays, backtests, benches and unit tests run the same code."""

    data: dict[int, dict[str, bytes]] = field(default_factory=dict)
    checkpoints: dict[int, int] = field(default_factory=dict)

    def get(self, partition: int, key: str) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def apply(self, partition: int, writes: Mapping[str, bytes | None],
              checkpoint: int | None = None) -> None:
        part = self.data.setdefault(partition, {})
        for key, value in writes.items():
            if value is None:
                part.pop(key, None)
            else:
                part[key] = value
        if checkpoint is not None:
            self.checkpoints[partition] = checkpoint

    def checkpoint(self, partition: int) -> int | None:
        return self.checkpoints.get(partition)

    def keys(self, partition: int) -> Iterator[str]:
        return iter(list(self.data.get(partition, {})))

    def drop(self, partition: int) -> None:
        self.data.pop(partition, None)
        self.checkpoints.pop(partition, None)


class BatchStates(MutableMapping[str, AgentState]):
    """A lazily decoded view of the agents one batch touches; writes are buffered.

    A stored blob that does not decode is reported in ``corrupt`` (the core
    then holds the agent's partition) and reads as absent.
    """

    def __init__(self, store: StateStore, partition_of: Callable[[str], int]) -> None:
        self._store = store
        self._partition_of = partition_of
        self._cache: dict[str, AgentState | None] = {}
        self._dirty: set[str] = set()
        self.corrupt: set[str] = set()

    def __getitem__(self, key: str) -> AgentState:
        if key not in self._cache:
            blob = self._store.get(self._partition_of(key), key)
            state = None
            if blob is not None:
                try:
                    state = AgentState.from_bytes(blob)
                except ModelError:
                    self.corrupt.add(key)
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

    def writes(self) -> Writes:
        """Every changed state, encoded once, by partition; clears the dirty set."""
        out: Writes = {}
        for key in sorted(self._dirty):
            state = self._cache.get(key)
            out.setdefault(self._partition_of(key), {})[key] = \
                None if state is None else state.to_bytes()
        self._dirty.clear()
        return out


def idle_agents(store: StateStore, partition: int, event_time: float,
                idle_ttl: float) -> list[str]:
    """Agents of `partition` unseen for more than `idle_ttl` of its event time.

    Deleting them only reclaims space: the core already treats such an agent
    as new (see `holdgate.stream.core`), so a sweep never changes a decision
    and may run whenever the driver likes.  Unreadable blobs are kept for the
    core, which holds their partition.
    """
    idle = []
    for key in store.keys(partition):
        if key.startswith("~"):
            continue
        blob = store.get(partition, key)
        if blob is None:
            continue
        try:
            seen = AgentState.from_bytes(blob).last_seen
        except ModelError:
            continue
        if event_time - seen > idle_ttl:
            idle.append(key)
    return idle
