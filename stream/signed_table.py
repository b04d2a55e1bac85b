"""A compacted topic read in full, then followed: the latest verified record per key.

Controls (and published policies and models) reach every worker this way.
Every record must carry a valid signature by a trusted operator key (record
headers, `holdgate.signing`); an unsigned or badly signed record changes
nothing and is counted and logged, at a bounded rate.  A worker reads the
table to its end before it decides anything, so a revocation survives any
restart; afterwards it follows the topic and swaps its snapshot between two
batches when the table changes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from holdgate.keys import TrustStore
from holdgate.signing import read_signature, verify_record

__all__ = ["SignedTable", "Rejected", "follow"]

log = logging.getLogger("holdgate.worker")
T = TypeVar("T")


@dataclass
class Rejected:
    count: int = 0
    last: str = ""
    logged_at: float = 0.0


@dataclass
class SignedTable(Generic[T]):
    """Latest verified value per key of `topic`; `parse` turns bytes into T (or raises)."""

    bootstrap: str
    topic: str
    trust: TrustStore
    parse: Callable[[bytes], T]
    client_options: dict[str, Any] = field(default_factory=dict)
    values: dict[str, T] = field(default_factory=dict)
    signers: dict[str, str] = field(default_factory=dict)     # key -> key id that signed it
    version: int = 0                                          # bumps on every change
    rejected: Rejected = field(default_factory=Rejected)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    on_reject: Callable[[], None] | None = None      # a record was refused (reporting)
    _consumer: AIOKafkaConsumer | None = None

    async def run(self, on_change: Callable[[], None]) -> None:
        """Catch up with the topic, then follow it until cancelled."""
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", client_id=f"holdgate-{self.topic}",
            fetch_max_wait_ms=200, **self.client_options)
        await consumer.start()
        try:
            # A group-less consumer has no subscription to load metadata for: fetch it.
            cluster = await consumer._client.fetch_all_metadata()
            parts = cluster.partitions_for_topic(self.topic)
            if not parts:
                raise LookupError(f"topic {self.topic} does not exist")
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while not self.caught_up.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                if self._apply(batch):
                    on_change()
                if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self.caught_up.set()
            while True:
                if self._apply(await consumer.getmany(timeout_ms=500)):
                    on_change()
        finally:
            await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 5.0)
            except Exception:  # noqa: BLE001 - shutting down whatever the broker's state
                log.debug("table consumer stop failed", exc_info=True)

    def _apply(self, batch: dict[Any, list[Any]]) -> bool:
        changed = False
        for records in batch.values():
            for record in records:
                changed |= self.offer(record.key, record.value, record.headers)
        if changed:
            self.version += 1
        return changed

    def offer(self, key: bytes | None, value: bytes | None, headers: Any) -> bool:
        """Apply one record; True when it changed the table."""
        problem = verify_record(self.trust, value, headers)
        if problem is None:
            try:
                parsed = self.parse(value or b"")
            except Exception as exc:  # noqa: BLE001 - a signed but unreadable record
                problem = f"signed but unreadable: {exc}"
        if problem is not None:
            self._reject(key, problem)
            return False
        name = (key or b"").decode("utf-8", "replace")
        self.values[name] = parsed
        self.signers[name] = read_signature(headers)[0] or ""
        return True

    def _reject(self, key: bytes | None, problem: str) -> None:
        r = self.rejected
        r.count += 1
        if self.on_reject is not None:
            self.on_reject()
        r.last = f"{(key or b'').decode('utf-8', 'replace')[:80]}: {problem}"
        now = time.monotonic()
        if now - r.logged_at > 10.0:          # once, then at most every 10 s
            r.logged_at = now
            log.warning("ignored a record on %s (%d so far): %s", self.topic, r.count, r.last)


async def follow(table: SignedTable[Any], on_change: Callable[[], None]) -> None:
    """`table.run` for as long as the worker runs: a broker outage or a topic that does
    not exist yet is retried (with backoff), never the end of the table."""
    backoff = 0.5
    while True:
        try:
            await table.run(on_change)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried; readers see caught_up unset meanwhile
            log.log(logging.DEBUG if table.caught_up.is_set() else logging.WARNING,
                    "reading %s failed (%r); retrying in %.1fs", table.topic, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
