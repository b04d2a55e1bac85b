"""Start a worker: load and check everything first, refuse to run on anything invalid.

An invalid policy bundle, mismatched topics or an unusable state folder stop
the worker before it consumes a single action, with a message saying what to
fix: a gate that runs with a broken policy would be worse than one that is
down (agents fail closed on timeout either way).  Once running, SIGTERM or
SIGINT stops it within seconds whatever the broker's state (a second one exits
at once), and it serves /metrics, /healthz and /readyz on HOLDGATE_WEB_PORT.

Logging is for operators: one line per record (control characters escaped),
the worker's lifecycle (starting, ready, stopping, broker lost and back) at
INFO yet visible at the default level, the Kafka clients' known false alarms
demoted, their flood during a broker outage replaced by one line when it starts
and one when it ends, and any other repeated warning rate-limited with a count
of what was suppressed.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Coroutine

from holdgate.errors import ConfigError
from holdgate.keys import Signer
from holdgate.settings import Settings
from holdgate.stream.core import Snapshot
from holdgate.stream.runner import Runner
from holdgate.stream.state import StateStore

__all__ = ["build_snapshot", "build_runner", "run_worker", "instance_id", "configure_logging",
           "LogTamer", "SafeFormatter"]

log = logging.getLogger("holdgate.worker")


def build_snapshot(settings: Settings) -> Snapshot:
    """The policy engine and signal model the settings name, loaded and validated."""
    from holdgate.models import SignalComputer
    from holdgate.models.baseline_model import BaselineModel
    from holdgate.policies import PolicyBundle, PolicyEngine

    bundle = PolicyBundle.load(settings.policy_path)
    model = BaselineModel.load(settings.model) if settings.model else None
    signals = SignalComputer(model=model, roles=bundle.agent_roles) \
        if settings.signals == "on" else None
    return Snapshot(engine=PolicyEngine(bundle), policy_version=bundle.version,
                    signals=signals, roles=bundle.agent_roles,
                    max_clock_skew=settings.max_clock_skew,
                    recovery_hold=settings.recovery_hold, idle_ttl=settings.idle_ttl,
                    partitions=settings.partitions)


def build_runner(settings: Settings, store: StateStore, snapshot: Snapshot | None = None,
                 worker_id: str | None = None, signer: Signer | None = None) -> Runner:
    """A runner for the settings; `signer` is the worker's key (replays decide unsigned)."""
    return Runner(snapshot=snapshot or build_snapshot(settings), store=store,
                  partitions=settings.partitions, verdict_ttl=settings.verdict_ttl,
                  signer=signer, max_action_bytes=settings.max_action_bytes,
                  worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                  approvals_topic=settings.approvals_topic, approvers=settings.approvers())


def instance_id(settings: Settings) -> str:
    """Static membership id: the same worker (host + state folder) after a restart."""
    if settings.instance_id:
        return settings.instance_id
    where = str(Path(settings.datadir).resolve())
    return f"{socket.gethostname()}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; raises HoldgateError subclasses on bad setup."""
    from holdgate.stream.heap import settle
    from holdgate.stream.kafka_driver import KafkaDriver
    from holdgate.stream.metrics import WorkerMetrics
    from holdgate.stream.store import RocksStore
    from holdgate.topics import ensure_topics

    tamer = configure_logging(settings.log_level)
    signer = settings.signer()             # no key, no worker: never an unsigned verdict
    snapshot = build_snapshot(settings)
    ensure_topics(settings)
    store = RocksStore(Path(settings.datadir) / "state")
    try:
        runner = build_runner(settings, store, snapshot, signer=signer)
        driver = KafkaDriver(settings, runner, store, instance_id=instance_id(settings),
                             metrics=WorkerMetrics())
        tamer.watch = driver.broker
        settle()                           # libraries, bundle, model: out of the GC's walk
        _run(_serve(driver))
    finally:
        store.close()


#: Seconds after the first SIGTERM/SIGINT before the process exits whatever it is doing.
HARD_STOP = 12.0


async def _serve(driver: Any) -> None:
    from holdgate.stream.health import Observer, lifecycle

    s = driver.settings
    stopper = _Stopper(driver, asyncio.get_running_loop())
    stopper.install()
    assert driver.metrics is not None
    observer = Observer(driver, driver.metrics, port=s.web_port, host=s.web_host)
    try:
        await observer.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics and health on {s.web_host}:{s.web_port} "
                          f"(HOLDGATE_WEB_PORT): {exc.strerror or exc}") from None
    web = f"http://{s.web_host}:{observer.port}/ (metrics, healthz, readyz)" if s.web_port \
        else "no HTTP endpoint (HOLDGATE_WEB_PORT=0)"
    lifecycle.info("holdgate worker starting: %s -> %s (policy %s, model %s); %s",
                   s.actions_topic, s.verdicts_topic, driver.runner.snapshot.policy_version,
                   driver.runner.snapshot.model_version, web)
    try:
        await driver.run()
    finally:
        await observer.close()
        if stopper.since is not None:
            lifecycle.info("stopped %.1fs after %s", time.monotonic() - stopper.since,
                           stopper.reason)


class _Stopper:
    """SIGTERM/SIGINT: stop the driver; a second signal, or HARD_STOP seconds, exits now.

    Plain `signal.signal` handlers, not the loop's: they run even while the loop
    is busy, and the exits they take need no loop at all.
    """

    def __init__(self, driver: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.driver, self.loop = driver, loop
        self.since: float | None = None
        self.reason = ""

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.since is not None:          # the second one: no more waiting
            os.write(2, f"holdgate worker: {name} again, exiting now\n".encode())
            os._exit(128 + signum)
        self.since, self.reason = time.monotonic(), name
        threading.Thread(target=self._hard_stop, name="holdgate-hard-stop",
                         daemon=True).start()
        self.loop.call_soon_threadsafe(self._stop, name)

    def _stop(self, name: str) -> None:
        from holdgate.stream.health import lifecycle

        broker = self.driver.broker
        outage = f" while the broker has been unreachable for " \
            f"{time.monotonic() - broker.down_since:.0f}s" if broker.down_since else ""
        lifecycle.info("stopping: %s received%s; exiting within %.0fs", name, outage,
                       HARD_STOP)
        self.driver.stop()

    def _hard_stop(self) -> None:
        time.sleep(HARD_STOP)
        log.error("stop did not complete within %.0fs; exiting anyway (a batch in flight is "
                  "aborted by the broker or fenced by the partition's next owner)", HARD_STOP)
        logging.shutdown()
        os._exit(1)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` without its unbounded wait for every task to acknowledge cancellation.

    Kafka clients abandoned by a bounded shutdown may never finish cancelling;
    they get one second.  Executor threads (the state-size scan) are waited for,
    because the store is closed right after.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        loop.set_exception_handler(_quiet)
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    log.debug("at exit: %s", context.get("message"), exc_info=context.get("exception"))


# ---------------------------------------------------------------------- logging
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CLIENTS = ("aiokafka", "kafka")
#: Coordinator errors the client logs and then retries by itself: normal while the
#: broker creates __consumer_offsets at first start and when a coordinator moves.
_RETRIED = {"GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError",
            "CoordinatorNotAvailableError", "NotCoordinatorError",
            "CoordinatorLoadInProgressError", "GroupLoadInProgressError"}


def _benign(record: logging.LogRecord) -> bool:
    """A client line that reads as a problem but is routine (demoted to INFO)."""
    msg = record.msg if isinstance(record.msg, str) else ""
    if msg.startswith("Marking the coordinator dead"):
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return msg.startswith("Group Coordinator Request failed") and bool(args) \
        and type(args[0]).__name__ in _RETRIED


class SafeFormatter(logging.Formatter):
    """One record, one line: control characters in a message are escaped, never written.

    Messages quote things the worker does not control (a client's stray newline,
    an exception's repr, an agent id with a terminal escape in it).  Tracebacks
    stay multi-line.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: repr(m.group())[1:-1], record.message.rstrip())
        cause = getattr(record, "hg_cause", None)
        if cause:
            record.message += f" ({_CONTROL.sub(' ', str(cause))[:300]})"
        suppressed = getattr(record, "hg_suppressed", 0)
        if suppressed:
            record.message += f" [{suppressed} similar messages suppressed]"
        return super().formatMessage(record)


class LogTamer(logging.Filter):
    """Handler filter: demote the clients' false alarms, shorten their tracebacks to one
    line, mute them during a declared outage (`BrokerWatch` counts them), and let any WARNING+
    template through at most `burst` times per `window` seconds (a client's: once), the next
    one saying how many were dropped."""

    def __init__(self, *, window: float = 60.0, burst: int = 5, watch: Any = None) -> None:
        super().__init__()
        self.window, self.burst, self.watch = window, burst, watch
        self._seen: dict[tuple[str, str, int], list[float]] = {}  # start, count, dropped
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_CLIENTS):
            if _benign(record):
                record.levelno, record.levelname = logging.INFO, "INFO"
                if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
                    return False
            if record.exc_info and record.exc_info[1] is not None:    # one line, not a trace
                exc = record.exc_info[1]
                record.hg_cause, record.exc_info, record.exc_text = \
                    f"{type(exc).__name__}: {exc}", None, None
            if record.levelno >= logging.WARNING and self.watch is not None \
                    and self.watch.client_error(_text(record)):
                return False
        return record.levelno < logging.WARNING or self._rate(record)

    def _rate(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200], record.levelno)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.window:
                if len(self._seen) > 2000:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if seen is not None and seen[2]:
                    record.hg_suppressed = int(seen[2])
                return True
            if seen[1] < (1 if record.name.startswith(_CLIENTS) else self.burst):
                seen[1] += 1
                return True
            seen[2] += 1
            return False


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is still an error line
        return str(record.msg)


def configure_logging(level: str) -> LogTamer:
    """Set up the worker's logging (see the module docstring); returns the filter."""
    level = level.upper()
    logging.basicConfig(level=level, format=_FORMAT)
    tamer = LogTamer()
    debug = level == "DEBUG"
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter(_FORMAT))
        if not debug:                        # debugging: every line, as the clients wrote it
            handler.addFilter(tamer)
    if not debug:                            # the clients' INFO lines are not ours to show
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    lifecycle = logging.getLogger("holdgate.lifecycle")
    lifecycle.setLevel(logging.INFO if logging.getLogger().isEnabledFor(logging.WARNING)
                       else logging.NOTSET)
    return tamer
