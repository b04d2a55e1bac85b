"""The Faust application: consume intended actions, decide in micro-batches, publish verdicts.

Micro-batching (`take_events` with a small `within`) is what keeps the cost per
action flat under load: Cedar, signal scoring and encoding run once per batch,
and each touched agent's state is written to the changelog once per batch.
Each verdict goes to the partition number its action came from, so a client
reads only the verdict partitions of its own agents.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import faust

from holdgate.client.routing import partition_for
from holdgate.settings import Settings
from holdgate.stream.decider import Decider
from holdgate.stream.records import RawRecord
from holdgate.stream.recovery import RecoveryGuard
from holdgate.stream.state import BatchStates, Watermarks, evict_idle

__all__ = ["create_app", "TableBackend"]

log = logging.getLogger(__name__)


class TableBackend:
    """StateBackend over a Faust table with raw bytes keys/values and explicit partitions.

    Writes go straight to the changelog partition of the agent (not Faust's
    "current event" partition, which in a micro-batch may belong to another
    agent), then to the local store.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        value = self.table.data.get(key.encode())
        return bytes(value) if value is not None else None

    def put(self, partition: int, key: str, value: bytes) -> None:
        kb = key.encode()
        self.table.send_changelog(partition, kb, value, key_serializer="raw",
                                  value_serializer="raw")
        self.table.data[kb] = value

    def delete(self, partition: int, key: str) -> None:
        kb = key.encode()
        self.table.send_changelog(partition, kb, None, key_serializer="raw",
                                  value_serializer="raw")
        self.table.data.pop(kb, None)

    def keys(self) -> Iterator[str]:
        return iter([k.decode() if isinstance(k, bytes) else str(k)
                     for k in list(self.table.data.keys())])


def _append_time(message: Any) -> float | None:
    """The broker's LogAppendTime (seconds), or None when the record has no usable one."""
    ts = getattr(message, "timestamp", None)
    if not ts or getattr(message, "timestamp_type", 1) != 1:
        return None
    return float(ts)


def create_app(settings: Settings, decider: Decider) -> faust.App:
    """Build the worker app; every topic is raw bytes because the decider owns the codec."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        datadir=settings.datadir,
        store="memory://",
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_host="127.0.0.1",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,    # holdgate.topics makes them and checks co-partitioning
        producer_acks=-1,
        producer_linger_ms=1,
        consumer_auto_offset_reset="earliest",
        stream_recovery_delay=0.05,
        broker_commit_interval=1.0,
        # A crashed worker's partitions move after this long; until then its agents
        # time out (deny).  Faust's 60 s default is a minute of fail-closed outage.
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 4),
        key_serializer="raw",
        value_serializer="raw",
    )
    actions = app.topic(settings.actions_topic, key_serializer="raw", value_serializer="raw",
                        partitions=settings.partitions)
    verdicts = app.topic(settings.verdicts_topic, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)
    deadletter = app.topic(settings.deadletter_topic, key_serializer="raw",
                           value_serializer="raw")
    table = app.Table(settings.state_table, default=None, partitions=settings.partitions,
                      key_type=bytes, value_type=bytes,
                      changelog_topic=app.topic(settings.changelog_topic, key_serializer="raw",
                                                value_serializer="raw",
                                                partitions=settings.partitions,
                                                compacting=True))
    backend = TableBackend(table)
    guard = RecoveryGuard(Watermarks(backend), settings.recovery_hold)
    parts = settings.partitions

    def partition_of(agent: str) -> int:
        return partition_for(agent, parts)

    partition_time: dict[int, float] = {}   # max event time seen per assigned partition

    @app.agent(actions, name="decide")
    async def decide(stream: Any) -> None:  # faust.Stream; its stub lacks take_events
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within):
            records = [RawRecord(key=e.message.key, value=e.message.value,
                                 partition=e.message.partition, offset=e.message.offset,
                                 topic=e.message.topic, timestamp=_append_time(e.message))
                       for e in events]
            states = BatchStates(backend, partition_of)
            result = decider.decide_batch(records, states, guard)
            states.flush()
            guard.flush()
            for out in result.verdicts:
                await verdicts.send(key=out.key, value=out.value, partition=out.partition)
            for letter in result.deadletters:
                await deadletter.send(value=letter)
            for p, t in result.event_times.items():
                if t > partition_time.get(p, 0.0):
                    partition_time[p] = t

    @app.timer(interval=max(1.0, min(60.0, settings.idle_ttl / 10)))
    async def evict_idle_agents() -> None:
        """Drop agents unseen for idle_ttl of their partition's event time (bounded memory)."""
        t0 = time.perf_counter()
        evicted = evict_idle(backend, partition_of, partition_time, settings.idle_ttl)
        if evicted:
            log.info("evicted %d idle agent(s) in %.1f ms", evicted,
                     (time.perf_counter() - t0) * 1000)

    @app.timer(interval=60.0)
    async def report_costs() -> None:
        """Where the time goes, per action, since the last report (log level info)."""
        tm = decider.timings
        n = tm.get("actions", 0.0)
        if n:
            log.info("decided %d actions; µs/action: decode %.1f, signals %.1f, policy %.1f, "
                     "encode %.1f", n, *(tm.get(k, 0.0) / n * 1e6
                                          for k in ("decode", "signals", "policy", "encode")))
            for key in tm:
                tm[key] = 0.0

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else ())
        for tp in revoked:
            if tp.topic == settings.actions_topic:
                partition_time.pop(tp.partition, None)

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        log.warning("holdgate worker ready: %s -> %s (policy %s, model %s)",
                    settings.actions_topic, settings.verdicts_topic, decider.policy_version,
                    decider.model_version)

    return app
