"""Keeping the worker answerable: bounded waits, the broker watch, readiness and HTTP.

* `bounded`: every await on the broker during shutdown and probing has a time
  limit that holds even when the awaited call ignores cancellation (aiokafka
  shields its transaction futures; ``asyncio.wait_for`` would wait for them).
* `BrokerWatch`: whether the broker is reachable, declared *once* when it is
  lost and once when it is back.  The Kafka clients log every failed
  connection (dozens of lines a second); while an outage is declared the log
  filter (`holdgate.stream.worker`) drops their lines and the watch counts
  them, reminds at most once a minute and sums them up on recovery.
* `readiness`: what ``/readyz`` answers and why, per partition.
* `Observer`: the HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``) on
  the worker's own event loop (`asyncio.start_server`, no web framework) plus
  the small tasks that keep gauges fresh and log readiness changes.  Being on
  the same loop is the point of ``/healthz``: if it answers, the loop runs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.stream.kafka_driver import KafkaDriver
    from holdgate.stream.metrics import WorkerMetrics

__all__ = ["bounded", "unless_set", "release_producers", "BrokerWatch", "Readiness", "readiness",
           "Observer", "lifecycle"]

log = logging.getLogger("holdgate.worker")
#: Start, ready, outage, recovery, stop: INFO, yet shown at the default level (worker.py).
lifecycle = logging.getLogger("holdgate.lifecycle")

_MAX_REQUEST = 16 * 1024


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read an abandoned task's outcome so asyncio does not log it as an ERROR at exit."""
    if not task.cancelled():
        task.exception()


async def bounded(aw: Awaitable[Any], seconds: float, what: str) -> bool:
    """Await `aw` for at most `seconds`; False when it failed, was cancelled or was abandoned."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.debug("%s did not finish within %.1fs: abandoned", what, seconds)
        return False
    if task.cancelled():
        return False
    if task.exception() is not None:
        log.debug("%s failed: %r", what, task.exception())
        return False
    return True


async def unless_set(stop: asyncio.Event, aw: Awaitable[Any]) -> asyncio.Future[Any] | None:
    """Await `aw` unless `stop` is set first: its finished task, or None (`aw` cancelled)."""
    task, stopped = asyncio.ensure_future(aw), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task
    task.cancel()
    task.add_done_callback(_retrieve)
    return None


async def release_producers(producers: list[Any], open_txn: Any, bound: float) -> None:
    """Abort `open_txn`'s transaction (if any), then stop every producer; each step bounded.

    Aborting at once frees the partition's read_committed readers (the SDK's
    verdict consumers) instead of leaving them behind an open transaction until
    the next owner fences it.
    """
    if open_txn is not None:
        await bounded(open_txn.abort_transaction(), bound, "abort of the open transaction")
    await asyncio.gather(*(bounded(p.stop(), bound, "producer stop") for p in producers))


@dataclass
class BrokerWatch:
    """Whether the broker answers; see the module docstring."""

    bootstrap: str
    down_since: float | None = None     # monotonic; None while the broker answers
    outages: int = 0
    suppressed: int = 0                 # client log lines dropped during this outage
    last_error: str = ""
    remind_every: float = 60.0
    _suspect: bool = False
    _reminded: float = 0.0

    def client_error(self, message: str) -> bool:
        """A Kafka client logged a warning or an error; True: drop it (outage reported)."""
        self.last_error = message[:300]
        self._suspect = True
        if self.down_since is not None:
            self.suppressed += 1
            return True
        return False

    def suspect(self, why: str) -> None:
        """The driver saw a broker call fail: probe soon."""
        self.last_error, self._suspect = why[:300], True

    async def run(self, probe: Callable[[], Awaitable[Any]], *, interval: float = 0.5,
                  timeout: float = 5.0) -> None:
        """Probe only on suspicion (no traffic while healthy), every second while down."""
        while True:
            await asyncio.sleep(interval if self.down_since is None else 1.0)
            if self.down_since is None and not self._suspect:
                continue
            self._suspect = False
            self.observe(await bounded(probe(), timeout, "broker probe"), time.monotonic())

    def observe(self, reachable: bool, now: float) -> None:
        """One probe's answer: log the change of state once, remind at a bounded rate."""
        if reachable and self.down_since is not None:
            lifecycle.info("broker %s reachable again after %.0fs (%d client log lines "
                           "suppressed meanwhile)", self.bootstrap, now - self.down_since,
                           self.suppressed)
            self.down_since, self.suppressed = None, 0
        elif not reachable and self.down_since is None:
            self.down_since = self._reminded = now
            self.outages += 1
            log.error("broker %s unreachable (%s); nothing is decided until it is back and "
                      "agents' checks fail closed (TIMEOUT); client errors are suppressed "
                      "until then", self.bootstrap, self.last_error or "no answer")
        elif not reachable and self.down_since is not None \
                and now - self._reminded >= self.remind_every:
            self._reminded = now
            log.error("broker %s still unreachable after %.0fs (%d client log lines "
                      "suppressed; last: %s)", self.bootstrap, now - self.down_since,
                      self.suppressed, self.last_error)


@dataclass(frozen=True)
class Readiness:
    """Whether this worker decides all it was given, and if not, what it waits for."""

    ready: bool
    reasons: tuple[str, ...]
    partitions: dict[int, str] = field(default_factory=dict)   # partition -> status

    def to_json(self) -> bytes:
        return orjson.dumps({"ready": self.ready, "reasons": list(self.reasons),
                             "partitions": {str(p): s for p, s in self.partitions.items()}})


def readiness(driver: KafkaDriver) -> Readiness:
    """Ready: an assignment, every assigned partition restored, controls caught up, broker up."""
    reasons: list[str] = []
    if driver.stopping:
        reasons.append("stopping")
    if not driver.controls.caught_up.is_set():
        reasons.append(f"control table {driver.settings.control_topic} not read to its end "
                       "yet (revocations in force are not known)")
    unavailable = driver.runner.snapshot.unavailable
    if unavailable:
        reasons.append(f"denying everything STATE_RECOVERING: {unavailable}")
    elif not driver.versions.caught_up.is_set():
        reasons.append("published policy and model versions not read yet")
    if driver.broker.down_since is not None:
        reasons.append(f"broker unreachable for "
                       f"{time.monotonic() - driver.broker.down_since:.0f}s")
    statuses = {p: "ready" if lane.ready else lane.status for p, lane in
                sorted(driver.lanes.items())}
    if not statuses:
        reasons.append("no actions partition assigned (joining the group, rebalancing, or "
                       "more workers than partitions)")
    waiting = {p: s for p, s in statuses.items() if s != "ready"}
    if waiting:
        reasons.append("partitions not ready: " + "; ".join(
            f"{p}: {s}" for p, s in sorted(waiting.items())))
    return Readiness(not reasons, tuple(reasons), statuses)


class Observer:
    """The HTTP endpoints and the background tasks of observability, for one driver."""

    def __init__(self, driver: KafkaDriver, metrics: WorkerMetrics, *, port: int,
                 host: str = "127.0.0.1") -> None:
        self.driver, self.metrics = driver, metrics
        self.host, self.port = host, port
        self.started = time.monotonic()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the gauges' tasks; bind the HTTP port unless it is 0 (then no endpoint)."""
        self.metrics.attach(self.driver)
        self._tasks = [asyncio.ensure_future(t) for t in (
            self._loop_lag(), self._log_readiness(), self.metrics.refresh_state())]
        if self.port:
            self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                      limit=_MAX_REQUEST)
            self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await bounded(self._server.wait_closed(), 1.0, "HTTP server close")

    # ------------------------------------------------------------------ tasks
    async def _loop_lag(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.5)
            self.metrics.loop_lag = max(0.0, time.monotonic() - t0 - 0.5)

    async def _log_readiness(self) -> None:
        was = False
        while True:
            await asyncio.sleep(0.5)
            now = readiness(self.driver)
            if now.ready and not was:
                lifecycle.info("ready: deciding actions partitions %s of %s", sorted(
                    now.partitions), self.driver.settings.actions_topic)
            elif was and not now.ready and not self.driver.stopping:
                lifecycle.info("not ready: %s", "; ".join(now.reasons))
            was = now.ready

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            status, ctype, body = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception as exc:  # noqa: BLE001 - a broken scrape must not stop the worker
            log.warning("HTTP request failed: %r", exc)
            status, ctype, body = "500 Internal Server Error", "text/plain", b"error\n"
        method = head.split(b" ", 1)[0]
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                     .encode() + (b"" if method == b"HEAD" else body))
        try:
            await bounded(writer.drain(), 5.0, "HTTP response")
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        method, target, *_ = lines[0].split(" ") + ["", ""]
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            encoder, ctype = choose_encoder(headers.get("accept", ""))
            return "200 OK", ctype, encoder(self.metrics.registry)
        if path == "/healthz":
            return self._healthz()
        if path == "/readyz":
            ready = readiness(self.driver)
            return ("200 OK" if ready.ready else "503 Service Unavailable",
                    "application/json", ready.to_json())
        return "404 Not Found", "text/plain", b"try /metrics, /healthz or /readyz\n"

    def _healthz(self) -> tuple[str, str, bytes]:
        """Alive: this answer itself proves the loop runs; a long stall before it shows too."""
        lag = self.metrics.loop_lag
        ok = lag < 5.0
        body = orjson.dumps({"status": "ok" if ok else "event loop stalled",
                             "loop_lag_seconds": round(lag, 4),
                             "uptime_seconds": round(time.monotonic() - self.started, 1)})
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
