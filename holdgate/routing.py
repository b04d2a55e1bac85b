"""The routing contract: which partition an agent's actions and verdicts live on.

* an action is produced with ``key = agent_id`` (UTF-8) to partition
  ``partition_for(agent_id, n)``, ``n`` being the actions topic's partition count;
* the worker answers on the verdicts topic at the SAME partition number, key
  ``agent_id``; both topics (and the state changelog) have the same count.

So one worker owns every action of an agent (its counters cannot be split across
workers) and a client reads only its own agents' verdict partitions.
``partition_for`` is Kafka's Java default partitioner, so a runtime in any
language using its stock client with key = agent_id lands on the same partition.
"""
from __future__ import annotations

from kafka.partitioner.default import murmur2

__all__ = ["partition_for"]

_CACHE: dict[tuple[str, int], int] = {}
_CACHE_MAX = 1 << 16


def partition_for(agent_id: str, partitions: int) -> int:
    """Partition of `agent_id` among `partitions`, exactly as Kafka's Java default partitioner.

    Note the parentheses: ``(murmur2(key) & 0x7fffffff) % n``.  Written without
    them, Python's precedence would compute ``murmur2(key) & (0x7fffffff % n)``.

    >>> partition_for("billing-bot-1", 4) == partition_for("billing-bot-1", 4)
    True
    """
    hit = _CACHE.get((agent_id, partitions))
    if hit is not None:
        return hit
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    if len(_CACHE) >= _CACHE_MAX:       # murmur2 is pure Python (~2 µs): worth remembering
        _CACHE.clear()
    part = _CACHE[(agent_id, partitions)] = \
        (murmur2(agent_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
    return part
