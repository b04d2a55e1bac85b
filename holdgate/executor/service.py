"""The executor as a service: read actions and verdicts from Kafka, run verified allows once.

For tools that should not run inside the agent's process at all: the agent
only publishes its intended action (with the SDK or any Kafka client) and the
service, holding the tool's credentials, runs it when, and only when, the
worker's signed allow for those exact bytes arrives.

How it reads: one kafka-python consumer, read_committed (a verdict of an
aborted worker transaction never counts), *manually assigned* to the actions
and verdicts partitions it serves (all by default; the same numbers of both
topics, since actions and verdicts are co-partitioned by agent), no consumer
group and no committed offsets.  On start it seeks both topics to `lookback`
seconds ago: anything older carries a verdict that has expired anyway, and
what it already ran is refused by the replay store, so a restart neither
loses a live allow nor runs one twice.  Several instances may split the
partitions between them (`partitions=`); instances that overlap must share
one replay store file.

How it decides: each verdict's signature, decision and expiry are checked on
arrival (`Executor.verify_record`); a signed deny discards its action (a
decision that is not final, such as one pending an approval, does not), a
verified allow waits for its action in the `Joiner` (keyed by action digest),
and the pair goes through `Executor.execute` with the handlers by action name:
every check again, then the replay claim, then the handler.  Only actions and
allows for registered action names are buffered at all.  Handlers run on the
service's thread, one at a time.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple, Self

import orjson

from holdgate.client.proof import SignedVerdict
from holdgate.errors import ConfigError
from holdgate.events import ActionRequest, decode_request, decode_verdict
from holdgate.executor.executor import MAX_ACTION_BYTES, Executor, Handler
from holdgate.executor.join import Joiner, Match
from holdgate.executor.refusals import NOT_ALLOWED, REPLAYED, ExecutionRefused, Refusal
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings

__all__ = ["COUNTERS", "ExecutorService", "Record"]

log = logging.getLogger("holdgate.executor")

COUNTERS = ("actions", "verdicts", "executed", "failed", "denied", "refused", "replayed",
            "unhandled")
Record = tuple[str, "bytes | None", "tuple[tuple[str, bytes], ...]"]  # (topic, value, headers)


class _Raw(NamedTuple):
    """A verdict record not yet verified (`Executor.verify_record` takes any such pair)."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class ExecutorService:
    """Consume, join, verify and run; see the module docstring.

    `on_refusal(refusal)`, `on_executed(request, result)` and
    `on_error(request, exc)` are called on the service thread (metrics, audit).
    `kafka_options` are spread into the kafka-python consumer; by default the
    TLS/SASL options of `settings`, like every other holdgate client.
    """

    def __init__(self, *, settings: Settings, executor: Executor,
                 handlers: Mapping[str, Handler[Any]],
                 partitions: Collection[int] | None = None, lookback: float = 300.0,
                 joiner: Joiner | None = None, poll_interval: float = 0.2,
                 on_refusal: Callable[[Refusal], None] | None = None,
                 on_executed: Callable[[ActionRequest, Any], None] | None = None,
                 on_error: Callable[[ActionRequest, BaseException], None] | None = None,
                 kafka_options: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not handlers:
            raise ConfigError("an executor service needs at least one handler")
        self.settings, self.executor = settings, executor
        self.handlers = dict(handlers)
        self.partitions = None if partitions is None else sorted(set(partitions))
        self.lookback, self.poll_interval = lookback, poll_interval
        self.joiner = joiner or Joiner()
        self._on_refusal, self._on_executed, self._on_error = on_refusal, on_executed, on_error
        self._clock = clock
        self._kafka_options = dict(kafka_python_options(settings) if kafka_options is None
                                   else kafka_options)
        self.stats = dict.fromkeys(COUNTERS, 0)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ records (no I/O)
    def process(self, records: Iterable[Record], now: float | None = None) -> None:
        """Handle records in arrival order: the whole service minus Kafka (a test seam)."""
        at = self._clock() if now is None else now
        for topic, value, headers in records:
            if topic == self.settings.verdicts_topic:
                match = self._verdict(value, headers, at)
            elif topic == self.settings.actions_topic:
                match = self._action(value, at)
            else:
                continue
            if match is not None:
                self._run(match)
        self.joiner.expire(at)

    def _action(self, value: bytes | None, now: float) -> Match | None:
        if not value:
            return None
        self.stats["actions"] += 1
        try:
            obj = orjson.loads(value)
            name = obj.get("action") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            return None              # the worker dead-letters it; there is nothing to run
        if name not in self.handlers:
            return None
        return self.joiner.add_action(bytes(value), now)

    def _verdict(self, value: bytes | None, headers: Any, now: float) -> Match | None:
        self.stats["verdicts"] += 1
        record = _Raw(bytes(value or b""), tuple(headers or ()))
        try:
            verdict = self.executor.verify_record(record, now=now)
        except ExecutionRefused as exc:
            if exc.code == NOT_ALLOWED and value:
                decided = decode_verdict(value)       # its signature verified already
                if decided.decision == "deny":        # final: its action never runs here
                    self.stats["denied"] += 1
                    self.joiner.discard(decided.action_digest)
                    return None
                # Not final (e.g. pending an approval): an allow may follow for the same
                # bytes, so the action keeps waiting (for at most the joiner's hold).
            self._refused(exc.refusal)
            return None
        name = verdict.request.get("action") if isinstance(verdict.request, dict) else None
        if name is not None and name not in self.handlers:
            self.stats["unhandled"] += 1              # another executor's action
            return None
        signed = SignedVerdict(record.value, record.headers, verdict)
        return self.joiner.add_verdict(signed, verdict.action_digest, verdict.expires_at, now)

    def _run(self, match: Match) -> None:
        try:
            result = self.executor.execute(match.signed, match.action, self.handlers)
        except ExecutionRefused as exc:
            self._refused(exc.refusal)
            return
        except Exception as exc:  # a failing tool must not stop the service
            self.stats["failed"] += 1
            log.exception("handler failed; the request stays recorded and is not retried")
            if self._on_error is not None:
                self._on_error(decode_request(match.action, max_bytes=MAX_ACTION_BYTES), exc)
            return
        self.stats["executed"] += 1
        if self._on_executed is not None:
            self._on_executed(decode_request(match.action, max_bytes=MAX_ACTION_BYTES), result)

    def _refused(self, refusal: Refusal) -> None:
        self.stats["replayed" if refusal.code == REPLAYED else "refused"] += 1
        log.info("executor refused: %s", refusal)
        if self._on_refusal is not None:
            self._on_refusal(refusal)

    # ------------------------------------------------------------------ Kafka loop
    def run(self) -> None:
        """Consume until `stop()`; raises if the consumer cannot be set up."""
        consumer = self._open()
        try:
            self._ready.set()
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=int(self.poll_interval * 1000))
                # Order across topics does not matter: the joiner waits for either side.
                self.process((r.topic, r.value, tuple(r.headers or ()))
                             for recs in batch.values() for r in recs)
        finally:
            consumer.close(autocommit=False)

    def _open(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        s = self.settings
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, client_id=f"{s.app_id}-executor",
                                 group_id=None, enable_auto_commit=False,
                                 isolation_level="read_committed", auto_offset_reset="latest",
                                 **self._kafka_options)
        try:
            tps = []
            for topic in (s.actions_topic, s.verdicts_topic):
                available = consumer.partitions_for_topic(topic)
                if not available:
                    raise ConfigError(f"topic {topic!r} does not exist (start the worker first)")
                wanted = available if self.partitions is None else set(self.partitions)
                missing = set(wanted) - set(available)
                if missing:
                    raise ConfigError(f"{topic!r} has no partitions {sorted(missing)}")
                tps += [TopicPartition(topic, p) for p in sorted(wanted)]
            consumer.assign(tps)
            since = int((self._clock() - self.lookback) * 1000)
            found = consumer.offsets_for_times(dict.fromkeys(tps, since))
            for tp in tps:
                hit = found.get(tp)
                if hit is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
                consumer.position(tp)         # resolve now: nothing published later is missed
        except BaseException:
            consumer.close(autocommit=False)
            raise
        return consumer

    def start(self, timeout: float = 30.0) -> Self:
        """Run in a background thread; returns once the consumer is positioned."""
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # surfaced by start()
                self._failure = exc
                log.exception("executor service stopped")
                self._ready.set()

        self._thread = threading.Thread(target=target, name="holdgate-executor", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"executor service not ready within {timeout}s")
        if self._failure is not None:
            raise self._failure
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Until the background service stops (True) or `timeout` (False); re-raises its failure."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self._failure is not None:
            raise self._failure
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end (it does within `poll_interval`) and wait up to `timeout`."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
