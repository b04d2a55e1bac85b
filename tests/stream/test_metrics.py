"""Worker observability without Kafka: counters, exposition, readiness, HTTP, logging, bounds.

The driver is replaced by a small stand-in exposing what the observability
code reads (stats, lanes, controls, broker watch); the real worker is covered
by tests/e2e/test_operate_e2e.py.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, UnknownMemberIdError
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from holdgate.cli.localkafka import free_port
from holdgate.events import ActionRequest, encode
from holdgate.keys import Signer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.health import BrokerWatch, Observer, bounded, readiness
from holdgate.stream.metrics import DriverStats, WorkerMetrics, deadletter_code
from holdgate.stream.worker import LogTamer, SafeFormatter

T0 = 1_790_000_000.0


# ---------------------------------------------------------------- counters

def _decided_batch() -> Any:
    engine = PolicyEngine(PolicyBundle.load(default_bundle_path()))
    runner = Runner(snapshot=Snapshot(engine=engine, policy_version="v", partitions=1),
                    store=MemoryStore(), partitions=1, signer=Signer.generate())
    reqs = [ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                                 resource={"type": "Ticket", "id": f"T-{i}"}, occurred_at=T0)
            for i in range(3)]
    reqs.append(ActionRequest.create(agent_id="rogue-agent-9", action="records.read",
                                     resource={"type": "Record", "id": "r"}, occurred_at=T0))
    raws = [RawRecord(key=r.agent_id.encode(), value=encode(r), partition=0, offset=i,
                      timestamp=T0) for i, r in enumerate(reqs)]
    raws.append(RawRecord(key=None, value=b"\xffnot json", partition=0, offset=4,
                          timestamp=T0))
    return runner.run(raws, decided_at=T0 + 0.01)


def test_driver_stats_count_decisions_codes_and_dead_letters() -> None:
    out = _decided_batch()
    stats = DriverStats()
    stats.count(out)
    assert stats.decisions == {"allow": 3, "deny": 1}
    assert stats.reasons == {("allow", "PERMITTED"): 3, ("deny", "UNKNOWN_AGENT"): 1}
    assert stats.deadletter_codes == {"MALFORMED": 1} and stats.deadletters == 1
    assert (stats.batches, stats.actions, stats.allowed, stats.denied) == (1, 4, 3, 1)


@pytest.mark.parametrize("letter, code", [
    (b'{"error": "TOO_LARGE: 70000 bytes"}', "TOO_LARGE"),
    (b'{"error": "something odd"}', "UNKNOWN"),
    (b"not json", "UNKNOWN"),
])
def test_deadletter_code(letter: bytes, code: str) -> None:
    assert deadletter_code(letter) == code


# ---------------------------------------------------------------- a stand-in driver

@dataclass
class FakeLane:
    ready: bool = True
    status: str = "ready"
    position: int | None = 0


@dataclass
class FakeDriver:
    lanes: dict[int, FakeLane] = field(default_factory=dict)
    stats: DriverStats = field(default_factory=DriverStats)
    stopping: bool = False
    consumer: Any = None
    broker: BrokerWatch = field(default_factory=lambda: BrokerWatch("h:1"))
    store: Any = field(default_factory=MemoryStore)

    def __post_init__(self) -> None:
        caught_up = asyncio.Event()
        caught_up.set()
        self.controls = SimpleNamespace(caught_up=caught_up, values={},
                                        rejected=SimpleNamespace(count=0))
        self.settings = SimpleNamespace(control_topic="c", actions_topic="a")
        snapshot = SimpleNamespace(policy_version="sha256:abc", model_version=None,
                                   shadow=None, unavailable=None)
        self.runner = SimpleNamespace(snapshot=snapshot, worker_id="w-1")
        self.versions = SimpleNamespace(caught_up=caught_up, swaps=0, failures=0)

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self.lanes)


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, frozenset[Any]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_exposition_reads_driver_stats_at_scrape_time() -> None:
    driver = FakeDriver(lanes={0: FakeLane(), 1: FakeLane(False, "restoring", None)})
    metrics = WorkerMetrics(process=False)
    metrics.attach(driver)  # type: ignore[arg-type]
    driver.stats.count(_decided_batch())
    driver.stats.restored(0, 7, 1.5)
    driver.stats.aborted, driver.stats.fenced = 3, 1
    metrics.batch([RawRecord(key=b"a", value=b"", partition=0, offset=0, topic="a",
                             timestamp=100.0)], "a", 0.002, 0.01, committed_at=100.25)
    s = _samples(metrics)
    assert s[("holdgate_decisions_total", frozenset({("decision", "allow")}))] == 3
    assert s[("holdgate_decisions_total", frozenset({("decision", "pending")}))] == 0
    assert s[("holdgate_decision_reasons_total",
              frozenset({("decision", "deny"), ("code", "UNKNOWN_AGENT")}))] == 1
    assert s[("holdgate_deadletters_total", frozenset({("code", "MALFORMED")}))] == 1
    assert s[("holdgate_aborted_transactions_total", frozenset({("cause", "fenced")}))] == 1
    assert s[("holdgate_aborted_transactions_total", frozenset({("cause", "error")}))] == 2
    assert s[("holdgate_restored_records_total", frozenset())] == 7
    assert s[("holdgate_restore_seconds", frozenset({("partition", "0")}))] == 1.5
    assert s[("holdgate_partition_ready", frozenset({("partition", "1")}))] == 0
    assert s[("holdgate_ready", frozenset())] == 0
    assert s[("holdgate_decision_latency_seconds_bucket", frozenset({("le", "0.25")}))] == 1
    assert s[("holdgate_decision_latency_seconds_bucket", frozenset({("le", "0.1")}))] == 0
    [info] = [dict(labels) for name, labels in s if name == "holdgate_worker_info"]
    assert info == {"worker_id": "w-1", "policy_version": "sha256:abc", "model_version": "none",
                    "shadow_policy_version": "none", "shadow_model_version": "none",
                    "version": info["version"]}
    driver.stats.count(_decided_batch())          # read again at the next scrape
    assert _samples(metrics)[("holdgate_decisions_total",
                              frozenset({("decision", "allow")}))] == 6


def test_two_workers_in_one_process_have_separate_registries() -> None:
    a, b = WorkerMetrics(process=False), WorkerMetrics(process=False)
    a.attach(FakeDriver()), b.attach(FakeDriver())  # type: ignore[arg-type]
    a.batch_size.observe(5)
    assert _samples(a)[("holdgate_batch_size_count", frozenset())] == 1
    assert _samples(b)[("holdgate_batch_size_count", frozenset())] == 0


# ---------------------------------------------------------------- readiness and HTTP

def test_readiness_says_what_it_waits_for() -> None:
    driver = FakeDriver()
    r = readiness(driver)  # type: ignore[arg-type]
    assert not r.ready and "no actions partition assigned" in r.reasons[0]
    driver.lanes = {0: FakeLane(), 1: FakeLane(False, "restoring state from the changelog")}
    driver.controls.caught_up.clear()
    driver.broker.down_since = time.monotonic() - 5
    r = readiness(driver)  # type: ignore[arg-type]
    assert not r.ready and r.partitions == {0: "ready", 1: "restoring state from the changelog"}
    text = " | ".join(r.reasons)
    assert "control table c not read to its end" in text and "broker unreachable for 5s" in text
    assert "partitions not ready: 1: restoring state from the changelog" in text
    driver.lanes[1] = FakeLane()
    driver.controls.caught_up.set()
    driver.broker.down_since = None
    assert readiness(driver).ready  # type: ignore[arg-type]
    driver.stopping = True
    assert readiness(driver).reasons == ("stopping",)  # type: ignore[arg-type]


async def _get(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_http_endpoints() -> None:
    driver = FakeDriver(lanes={0: FakeLane(False, "fencing the previous owner")})
    metrics = WorkerMetrics(process=False)
    observer = Observer(driver, metrics, port=0)  # type: ignore[arg-type]
    await observer.start()                        # port 0: no endpoint at all
    assert observer._server is None
    await observer.close()
    observer = Observer(driver, metrics, port=free_port())  # type: ignore[arg-type]
    await observer.start()
    try:
        port = observer.port
        status, _, body = await _get(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503
        waiting = "fencing the previous owner"
        assert json.loads(body) == {"ready": False, "partitions": {"0": waiting},
                                    "reasons": [f"partitions not ready: 0: {waiting}"]}
        driver.lanes[0] = FakeLane()
        status, _, body = await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert status == 200 and json.loads(body)["ready"] is True
        status, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"holdgate_decisions_total" in body
        status, headers, _ = await _get(
            port, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n")
        assert headers["content-type"].startswith("application/openmetrics-text")
        status, _, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, _, body = await _get(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b""
        assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await _get(port, b"GET /other HTTP/1.1\r\n\r\n"))[0] == 404
    finally:
        await observer.close()


# ---------------------------------------------------------------- bounds

async def test_bounded_returns_even_if_the_awaited_ignores_cancellation() -> None:
    async def stubborn() -> None:
        for _ in range(3):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue                           # like a client that swallows cancels

    t0 = time.monotonic()
    assert await bounded(stubborn(), 0.2, "stubborn") is False
    assert time.monotonic() - t0 < 1.0
    assert await bounded(asyncio.sleep(0), 1.0, "quick") is True

    async def fails() -> None:
        raise RuntimeError("no")

    assert await bounded(fails(), 1.0, "fails") is False


# ---------------------------------------------------------------- the broker watch

def test_broker_watch_logs_loss_once_reminds_rarely_and_recovery_once(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = BrokerWatch("h:9092", remind_every=60.0)
    caplog.set_level(logging.INFO)
    assert watch.client_error("Unable connect to node 1") is False   # not declared yet
    watch.observe(False, 100.0)
    for i in range(50):                                              # the flood: muted
        assert watch.client_error(f"Unable connect to node 1 ({i})") is True
        watch.observe(False, 100.0 + i)
    watch.observe(False, 161.0)                                      # one reminder a minute
    watch.observe(True, 170.0)
    watch.observe(True, 171.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("broker h:9092 unreachable (Unable connect to node 1)")
    assert lines[1].startswith("broker h:9092 still unreachable after 61s (50 client")
    assert lines[2] == ("broker h:9092 reachable again after 70s (50 client log lines "
                        "suppressed meanwhile)")
    assert watch.outages == 1 and watch.down_since is None
    assert watch.client_error("later") is False


# ---------------------------------------------------------------- logging

def _logger(tamer: LogTamer, name: str = "holdgate.test") -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(tamer)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_control_characters_are_escaped_one_line_per_record() -> None:
    logger, out = _logger(LogTamer())
    logger.warning("agent %s said %r", "evil\x1b[31m\nFAKE ERROR line", "a\rb")
    logger.info("trailing newline\n")
    assert out.getvalue().splitlines() == [
        "WARNING holdgate.test: agent evil\\x1b[31m\\nFAKE ERROR line said 'a\\rb'",
        "INFO holdgate.test: trailing newline"]


def test_repeated_warnings_are_rate_limited_with_a_count() -> None:
    logger, out = _logger(LogTamer(window=0.3, burst=2))
    for i in range(10):
        logger.warning("partition %d: not ready", i)
    logger.warning("another template")
    time.sleep(0.35)
    logger.warning("partition %d: not ready", 99)
    assert out.getvalue().splitlines() == [
        "WARNING holdgate.test: partition 0: not ready",
        "WARNING holdgate.test: partition 1: not ready",
        "WARNING holdgate.test: another template",
        "WARNING holdgate.test: partition 99: not ready [8 similar messages suppressed]"]


def test_client_false_alarms_are_demoted_and_real_ones_kept_on_one_line() -> None:
    tamer = LogTamer()
    client, out = _logger(tamer, "aiokafka.consumer.group_coordinator")
    client.setLevel(logging.WARNING)
    client.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    client.warning("Marking the coordinator dead (node %s)for group %s.", 1, "g")
    client.error("Group Coordinator Request failed: %s", UnknownMemberIdError())
    try:
        raise ConnectionError("reset\nby peer")
    except ConnectionError:
        client.exception("Unexpected error in sender routine")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("ERROR aiokafka.consumer.group_coordinator: Group Coordinator "
                               "Request failed: [Error 25] UnknownMemberIdError")
    assert lines[1] == ("ERROR aiokafka.consumer.group_coordinator: Unexpected error in "
                        "sender routine (ConnectionError: reset by peer)")


def test_client_lines_are_muted_while_an_outage_is_declared() -> None:
    watch = BrokerWatch("h:1")
    tamer = LogTamer(watch=watch)
    client, out = _logger(tamer, "aiokafka")
    client.error("Unable connect to node with id %s: %s", 1, "refused")
    watch.observe(False, 1.0)
    for _ in range(100):
        client.error("Unable to update metadata from %s", [1])
    assert out.getvalue().count("\n") == 1 and watch.suppressed == 100
