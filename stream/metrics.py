"""What one worker has done, as numbers: `DriverStats` and its Prometheus view.

`DriverStats` is the one set of counters the driver keeps (plain ints: tests,
logs and the bench read them without Prometheus).  `WorkerMetrics` turns them
into Prometheus samples *when scraped* (a custom collector), so there is no
second set of counters to keep in step with the first.  Only what needs
buckets is observed as it happens: the latency and size histograms, fed by the
driver once a batch's transaction has committed (an aborted batch did not
happen, so it is not measured either).  Gauges that describe the present (lag,
readiness, versions, state size) are computed at scrape time from the driver.

Every worker gets its own `CollectorRegistry`, never the process-global one:
a test (or a process embedding several drivers) can run many side by side.
docs/metrics.md lists every name.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily,
                                    Metric)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from holdgate.stream.edges import RawRecord
from holdgate.stream.runner import BatchOutput
from holdgate.stream.state import StateStore

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.stream.kafka_driver import KafkaDriver

__all__ = ["DriverStats", "WorkerMetrics", "deadletter_code", "lag", "LATENCY_BUCKETS",
           "BATCH_SIZE_BUCKETS"]

log = logging.getLogger("holdgate.worker")

#: Seconds; a hold is usually milliseconds, a stalled worker shows in the tail.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
_CODE = re.compile(r"^([A-Z][A-Z0-9_]*):")


def deadletter_code(letter: bytes) -> str:
    """The reason code a dead letter starts its ``error`` with (``UNKNOWN`` if none)."""
    try:
        error = str(orjson.loads(letter).get("error") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return "UNKNOWN"
    match = _CODE.match(error)
    return match.group(1) if match else "UNKNOWN"


@dataclass
class DriverStats:
    """Counters an operator (and the metrics endpoint) reads; only committed batches count."""

    batches: int = 0
    actions: int = 0
    allowed: int = 0
    denied: int = 0                  # every non-allow, pending holds included
    deadletters: int = 0
    aborted: int = 0                 # batch transactions that failed (fenced ones too)
    fenced: int = 0                  # of those, fenced by another worker
    redone: int = 0                  # batches aborted and decided again: an allow's deadline
                                     # passed before its transaction could commit
    restored_records: int = 0
    holds: int = 0                   # partitions found with lost state (STATE_RECOVERING)
    codes: dict[str, int] = field(default_factory=dict)      # reason code -> decisions
    decisions: dict[str, int] = field(default_factory=dict)  # allow|deny|pending -> count
    reasons: dict[tuple[str, str], int] = field(default_factory=dict)  # (decision, code)
    deadletter_codes: dict[str, int] = field(default_factory=dict)
    restore_seconds: dict[int, float] = field(default_factory=dict)    # partition -> last
    last_restore_seconds: float = 0.0

    def count(self, out: BatchOutput) -> None:
        """Add one committed batch (a decision with two codes counts once per code)."""
        self.batches += 1
        self.actions += len(out.decisions)
        self.allowed += out.allowed
        self.denied += out.denied
        self.deadletters += len(out.deadletters)
        for d in out.decisions:
            self.decisions[d.decision] = self.decisions.get(d.decision, 0) + 1
            for code in {r.code for r in d.reasons}:
                self.codes[code] = self.codes.get(code, 0) + 1
                key = (d.decision, code)
                self.reasons[key] = self.reasons.get(key, 0) + 1
        for letter in out.deadletters:
            code = deadletter_code(letter)
            self.deadletter_codes[code] = self.deadletter_codes.get(code, 0) + 1

    def restored(self, partition: int, records: int, seconds: float) -> None:
        self.restored_records += records
        self.restore_seconds[partition] = self.last_restore_seconds = seconds


class WorkerMetrics:
    """The worker's registry: histograms observed per batch, the rest read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.driver: KafkaDriver | None = None
        self.state_agents: dict[int, int] = {}     # refreshed off the loop, see refresh_state
        self.state_bytes: int | None = None
        self.loop_lag = 0.0
        self.latency = Histogram(
            "holdgate_decision_latency_seconds", "Broker append time of an action record to "
            "the commit of the transaction holding its verdict.", buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.decide_seconds = Histogram(
            "holdgate_batch_decide_seconds", "Time the runner took to decide and sign one "
            "partition's batch.", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.commit_seconds = Histogram(
            "holdgate_batch_commit_seconds", "Time one batch's Kafka transaction took, from "
            "begin to commit.", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "holdgate_batch_size", "Records (actions and approval tokens) per committed "
            "batch of one partition.", buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.registry.register(_DriverCollector(self))
        if process:
            ProcessCollector(registry=self.registry)

    def attach(self, driver: KafkaDriver) -> None:
        self.driver = driver

    def batch(self, raws: Sequence[RawRecord], actions_topic: str, decide_seconds: float,
              commit_seconds: float, committed_at: float) -> None:
        """One committed batch of one partition (called by the driver after the commit).

        Latency is observed per action record with a broker append time (approval
        tokens wait for humans: they would only blur it).
        """
        self.batch_size.observe(len(raws))
        self.decide_seconds.observe(decide_seconds)
        self.commit_seconds.observe(commit_seconds)
        for raw in raws:
            if raw.timestamp is not None and raw.topic == actions_topic:
                self.latency.observe(max(0.0, committed_at - raw.timestamp))

    async def refresh_state(self, every: float = 30.0) -> None:
        """Keep the state-size gauges fresh, off the event loop (a key scan is O(agents))."""
        while True:
            driver = self.driver
            if driver is not None:
                partitions = list(driver.assigned_partitions)
                try:
                    self.state_agents, self.state_bytes = await asyncio.to_thread(
                        _state_size, driver.store, partitions)
                except Exception:  # a gauge must never stop the worker
                    log.debug("state size scan failed", exc_info=True)
            await asyncio.sleep(every)


def _state_size(store: StateStore, partitions: list[int]) -> tuple[dict[int, int], int | None]:
    """Agents per partition (keys not starting with ``~``) and the store's bytes on disk."""
    agents = {p: sum(1 for k in store.keys(p) if not k.startswith("~")) for p in partitions}
    path = getattr(store, "path", None)
    size = None
    if path is not None:
        try:
            size = sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
        except OSError:
            size = None
    return agents, size


class _DriverCollector(Collector):
    """Samples computed from the driver at scrape time (counters from `DriverStats`)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []      # names vary with what the driver has seen; checked at scrape time

    def collect(self) -> Iterator[Metric]:
        driver = self.metrics.driver
        if driver is None:
            return
        yield from _counters(driver.stats)
        yield from self._partitions(driver)
        yield from self._worker(driver)

    def _partitions(self, driver: KafkaDriver) -> Iterator[Metric]:
        ready = GaugeMetricFamily("holdgate_partition_ready", "1 when an assigned actions "
                                  "partition is restored and decides, else 0.",
                                  labels=["partition"])
        lag_family = GaugeMetricFamily("holdgate_consumer_lag_records", "Committed actions not yet "
                                "decided: last stable offset minus the next offset to decide.",
                                labels=["partition"])
        restore = GaugeMetricFamily("holdgate_restore_seconds", "How long the last restore "
                                    "of the partition's state took.", labels=["partition"])
        agents = GaugeMetricFamily("holdgate_state_agents", "Agents with state in the local "
                                   "store (refreshed every 30 s).", labels=["partition"])
        for p, lane in sorted(driver.lanes.items()):
            ready.add_metric([str(p)], 1.0 if lane.ready else 0.0)
        for p, behind in lag(driver).items():
            lag_family.add_metric([str(p)], float(behind))
        for p, seconds in sorted(driver.stats.restore_seconds.items()):
            restore.add_metric([str(p)], seconds)
        for p, count in sorted(self.metrics.state_agents.items()):
            agents.add_metric([str(p)], float(count))
        yield from (ready, lag_family, restore, agents)
        if self.metrics.state_bytes is not None:
            yield GaugeMetricFamily("holdgate_state_disk_bytes", "Bytes of the local state "
                                    "store's files on disk.", value=self.metrics.state_bytes)

    def _worker(self, driver: KafkaDriver) -> Iterator[Metric]:
        from holdgate.stream.health import readiness

        snapshot = driver.runner.snapshot
        info = InfoMetricFamily("holdgate_worker", "Versions deciding now (a hot swap "
                                "changes them).")
        shadow = snapshot.shadow
        info.add_metric([], {"worker_id": driver.runner.worker_id,
                             "policy_version": snapshot.policy_version,
                             "model_version": snapshot.model_version or "none",
                             "shadow_policy_version": shadow.policy_version if shadow else "none",
                             "shadow_model_version": (shadow.model_version or "none")
                             if shadow else "none",
                             "version": _version()})
        yield info
        yield CounterMetricFamily("holdgate_version_swaps", "Snapshots swapped in from "
                                  "published policies and models.", value=driver.versions.swaps)
        yield CounterMetricFamily("holdgate_version_load_failures", "Published versions that "
                                  "could not be loaded (the versions in force stayed).",
                                  value=driver.versions.failures)
        yield GaugeMetricFamily("holdgate_ready", "1 when /readyz answers 200.",
                                value=1.0 if readiness(driver).ready else 0.0)
        yield GaugeMetricFamily("holdgate_controls_active", "Operator controls (revoke, "
                                "suspend) in force.", value=len(driver.controls.values))
        yield CounterMetricFamily("holdgate_control_records_rejected", "Control records "
                                  "ignored: unsigned, untrusted or unreadable.",
                                  value=driver.controls.rejected.count)
        broker = driver.broker
        yield GaugeMetricFamily("holdgate_broker_up", "0 while the worker cannot reach the "
                                "broker.", value=0.0 if broker.down_since else 1.0)
        yield CounterMetricFamily("holdgate_broker_outages", "Times the broker became "
                                  "unreachable.", value=broker.outages)
        yield GaugeMetricFamily("holdgate_event_loop_lag_seconds", "How late the event "
                                "loop last woke a 0.5 s timer.", value=self.metrics.loop_lag)


def lag(driver: KafkaDriver) -> dict[int, int]:
    """Per ready partition: committed actions not decided yet (last stable offset - next).

    Read from the consumer's last fetch response: free, and stale only while a
    partition is not fetched (paused, not ready: then it has no sample).  A
    transaction marker written by a transactional producer counts as one.
    """
    consumer, out = driver.consumer, dict[int, int]()
    if consumer is None:
        return out
    for p, lane in sorted(driver.lanes.items()):
        tp = TopicPartition(driver.settings.actions_topic, p)
        end = consumer.last_stable_offset(tp)
        if end is None or end < 0:
            end = consumer.highwater(tp)
        if lane.ready and end is not None:      # no batch yet: counted from offset 0
            out[p] = max(0, end - (lane.position or 0))
    return out


def _counters(st: DriverStats) -> Iterator[Metric]:
    decisions = CounterMetricFamily("holdgate_decisions", "Decisions committed, by decision.",
                                    labels=["decision"])
    for decision in ("allow", "deny", "pending"):
        decisions.add_metric([decision], st.decisions.get(decision, 0))
    reasons = CounterMetricFamily("holdgate_decision_reasons", "Decisions committed, by "
                                  "decision and reason code (once per distinct code).",
                                  labels=["decision", "code"])
    for (decision, code), n in sorted(st.reasons.items()):
        reasons.add_metric([decision, code], n)
    letters = CounterMetricFamily("holdgate_deadletters", "Records dead-lettered, by code.",
                                  labels=["code"])
    for code, n in sorted(st.deadletter_codes.items()):
        letters.add_metric([code], n)
    aborted = CounterMetricFamily("holdgate_aborted_transactions", "Batch transactions that "
                                  "failed; the batch is decided again.", labels=["cause"])
    aborted.add_metric(["fenced"], st.fenced)
    aborted.add_metric(["error"], st.aborted - st.fenced)
    yield from (decisions, reasons, letters, aborted)
    yield CounterMetricFamily("holdgate_batches", "Batch transactions committed.",
                              value=st.batches)
    yield CounterMetricFamily("holdgate_recovery_holds", "Partitions found with lost state "
                              "and held in STATE_RECOVERING.", value=st.holds)
    yield CounterMetricFamily("holdgate_restored_records", "Changelog records restored into "
                              "the local store.", value=st.restored_records)


_VERSION: list[str] = []


def _version() -> str:
    if not _VERSION:
        try:
            from importlib.metadata import version

            _VERSION.append(version("holdgate"))
        except Exception:  # noqa: BLE001 - not installed as a distribution
            _VERSION.append("unknown")
    return _VERSION[0]
