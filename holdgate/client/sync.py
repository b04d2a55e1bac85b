"""The blocking gate (kafka-python): publish the intended action, hold, act only on an allow.

One `Gate` owns ONE producer and ONE consumer however many threads call
`check()`.  A single background thread owns the consumer (kafka-python's
consumer is not thread-safe): it connects, discovers the topics, extends the
manual assignment when a new agent shows up, and dispatches each verdict by
request_id to the waiting check.  The producer is thread-safe and is used
directly by the checking threads, so a check costs one send and one wait.

Ordering that makes a verdict impossible to miss: a check sends only after the
poll thread has assigned its agent's verdict partition, sought to the end and
*resolved* the position; the pending entry is registered before the send.

Every failure mode is a deny `Verdict` from `check()` (UNAVAILABLE, TIMEOUT,
INVALID_VERDICT), never an exception and never a hang past the timeout.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Mapping, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from holdgate.client.core import GateCore
from holdgate.client.routing import (AgentSlot, GuardSpec, metadata_failure, new_request,
                                     unready_by_partition)
from holdgate.client.verify import Failure, local_deny, parse_record, verify_verdict
from holdgate.errors import ActionDenied
from holdgate.events import ActionRequest, Resource, Verdict, encode
from holdgate.reasons import TIMEOUT, UNAVAILABLE
from holdgate.settings import Settings

__all__ = ["Gate"]

log = logging.getLogger("holdgate.client")
F = TypeVar("F", bound=Callable[..., Any])


class Gate(GateCore[threading.Event]):
    """Synchronous pre-execution gate; share one instance across threads and agents."""

    def __init__(self, *, bootstrap: str | None = None, agent_id: str | None = None,
                 settings: Settings | None = None, signing_key: str | bytes | None = None,
                 default_timeout: float = 5.0, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05, linger_ms: int = 1) -> None:
        super().__init__(name="Gate", bootstrap=bootstrap, agent_id=agent_id, settings=settings,
                         signing_key=signing_key, default_timeout=default_timeout,
                         connect_timeout=connect_timeout, poll_interval=poll_interval,
                         linger_ms=linger_ms)
        self._lock = threading.Lock()           # guards _pending, _slots, _requests
        self._pending: dict[str, tuple[ActionRequest, Future[Verdict | Failure]]] = {}
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        if agent_id:
            self._want(agent_id)                # warm up: assign before the first check
        self._thread = threading.Thread(target=self._run, name="holdgate-gate-poll",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def check(self, *, action: str, resource: Resource | Mapping[str, Any],
              context: Mapping[str, Any] | None = None, timeout: float | None = None,
              agent_id: str | None = None) -> Verdict:
        """Publish the action and wait for its verified verdict; any failure is a deny.

        Raises only for caller bugs: `ValidationError` for an action that breaks
        the wire schema, `ConfigError` when no agent id is known.
        """
        request = new_request(gate="Gate", default_agent=self._agent_id, agent_id=agent_id,
                              action=action, resource=resource, context=context)
        agent = request.agent_id
        wait = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        if self._closed.is_set():
            return self._unavailable(request, "gate is closed")
        slot = self._want(agent)
        if not slot.ready.wait(max(0.0, deadline - time.monotonic())):
            return self._unavailable(request, f"gate not ready within {wait:g}s: {self._status}")
        if slot.error is not None or slot.partition is None or self._producer is None:
            return self._unavailable(request, slot.error or self._status)
        future: Future[Verdict | Failure] = Future()
        with self._lock:
            self._pending[request.request_id] = (request, future)
        if self._closed.is_set():     # close() raced us and already failed the pending table
            self._take(request.request_id)
            return self._unavailable(request, "gate is closed")
        try:
            sent = self._producer.send(self._cfg.actions_topic, value=encode(request),
                                       key=agent.encode(), partition=slot.partition)
        except Exception as exc:
            self._take(request.request_id)
            return self._unavailable(request, f"could not publish the action: {exc!r}")
        self._count("sent")
        sent.add_errback(self._on_send_error, request.request_id)
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            if self._take(request.request_id) is not None:
                self._count("timeouts")
                return local_deny(request, code=TIMEOUT, message=(
                    f"no verdict within {wait:g}s; a verdict arriving later is ignored"))
            result = future.result()          # resolved in the same instant: use it
        if isinstance(result, Failure):
            if result.code == UNAVAILABLE:
                self._count("unavailable")
            return local_deny(request, code=result.code, message=result.message)
        return verify_verdict(result, request, self._cfg.key, time.time())

    def guard(self, *, action: str, resource: Mapping[str, Any] | Callable[..., Any],
              context: Mapping[str, Any] | Callable[..., Any] | None = None,
              timeout: float | None = None, agent_id: str | None = None) -> Callable[[F], F]:
        """Decorator: run the function only on a verified allow, else raise `ActionDenied`."""

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__qualname__} is async: guard it with AsyncGate")
            spec = GuardSpec.for_function(fn, action=action, resource=resource, context=context)

            @functools.wraps(fn)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                res, ctx = spec.build(args, kwargs)
                verdict = self.check(action=spec.action, resource=res, context=ctx,
                                     timeout=timeout, agent_id=agent_id)
                if not verdict.allowed:
                    raise ActionDenied(verdict)
                return fn(*args, **kwargs)

            return guarded  # type: ignore[return-value]

        return decorate

    def assigned_partitions(self) -> frozenset[int]:
        """Verdict partitions this gate reads (only those of the agents it has served)."""
        with self._lock:
            return frozenset(self._ready_partitions)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for operators: sent, verdicts, ignored (late/foreign), timeouts, unavailable."""
        with self._lock:
            return dict(self._stats)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the poll thread, deny every waiting check (UNAVAILABLE) and close the clients."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        # A connect attempt cannot be interrupted; it finishes in the background and
        # the poll thread closes whatever it opened, so don't make the caller wait for it.
        self._thread.join(timeout if self._consumer is not None else min(timeout, 0.5))
        self._fail_all("gate is closed")

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ check helpers
    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _unavailable(self, request: ActionRequest, message: str) -> Verdict:
        self._count("unavailable")
        return local_deny(request, code=UNAVAILABLE, message=message)

    def _want(self, agent_id: str) -> AgentSlot[threading.Event]:
        """The agent's slot; queue it for the poll thread unless ready or recently failed."""
        with self._lock:
            slot = self._slots.get(agent_id)
            if slot is not None and slot.reusable:
                return slot
            slot = AgentSlot(agent_id, threading.Event())
            self._slots[agent_id] = slot
            self._requests.append(slot)
        self._wake.set()
        return slot

    def _take(self, request_id: str) -> Future[Verdict | Failure] | None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
        return None if entry is None else entry[1]

    def _resolve(self, request_id: str | None, result: Verdict | Failure) -> bool:
        future = self._take(request_id) if request_id is not None else None
        if future is None:
            return False
        future.set_result(result)
        return True

    def _on_send_error(self, request_id: str, exc: BaseException) -> None:
        self._resolve(request_id, Failure(UNAVAILABLE, f"could not publish the action: {exc!r}"))

    def _fail_all(self, message: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            requests, self._requests = self._requests, []
        for _, future in pending.values():
            future.set_result(Failure(UNAVAILABLE, message))
        self._fail_slots(requests, message)

    # ------------------------------------------------------------------ poll thread
    def _run(self) -> None:
        backoff = 0.2
        final = "gate is closed"
        try:
            while not self._closed.is_set():
                if self._consumer is None:
                    try:
                        self._connect()
                        backoff = 0.2
                    except Exception as exc:
                        self._status = f"broker {self._cfg.bootstrap} unreachable: {exc!r}"
                        log.warning("holdgate gate: %s", self._status)
                        self._fail_requests(self._status)
                        self._closed.wait(backoff)
                        backoff = min(backoff * 2, 5.0)
                    continue
                try:
                    self._serve_requests()
                    if self._ready_partitions:
                        self._dispatch(self._consumer.poll(timeout_ms=self._poll_ms))
                    else:
                        self._wake.wait(self._poll_ms / 1000)
                        self._wake.clear()
                except Exception as exc:  # keep serving; waiting checks time out closed
                    self._status = f"consumer error: {exc!r}"
                    log.warning("holdgate gate: %s", self._status, exc_info=True)
                    self._closed.wait(backoff)
        except BaseException as exc:  # a bug: fail closed, loudly
            log.exception("holdgate gate poll thread stopped")
            final = self._status = f"gate poll thread failed: {exc!r}"
            self._closed.set()
        finally:
            self._fail_all(final)
            self._close_clients()

    def _connect(self) -> None:
        bootstrap_ms = int(self._connect_timeout * 1000)
        consumer = KafkaConsumer(
            bootstrap_servers=self._cfg.bootstrap, client_id=self._cfg.client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
            fetch_max_wait_ms=100, request_timeout_ms=10000, bootstrap_timeout_ms=bootstrap_ms)
        try:
            producer = KafkaProducer(
                bootstrap_servers=self._cfg.bootstrap, client_id=self._cfg.client_id,
                acks="all", enable_idempotence=True, linger_ms=self._linger_ms,
                max_block_ms=bootstrap_ms, request_timeout_ms=10000,
                bootstrap_timeout_ms=bootstrap_ms)
        except Exception:
            consumer.close(autocommit=False)
            raise
        self._consumer, self._producer = consumer, producer
        self._status = f"connected to {self._cfg.bootstrap}"

    def _fail_requests(self, message: str) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        self._fail_slots(requests, message)

    def _discover(self) -> int:
        """Partition count of the gate's topics, checked to exist and to match."""
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        counts = {t: len(consumer.partitions_for_topic(t))
                  for t in (self._cfg.actions_topic, self._cfg.verdicts_topic)}
        missing = [t for t, n in counts.items() if n == 0]
        if missing:
            raise LookupError(self._cfg.missing_topics_message(missing))
        actions, verdicts = counts[self._cfg.actions_topic], counts[self._cfg.verdicts_topic]
        if actions != verdicts:
            raise LookupError(self._cfg.partition_counts_message(actions, verdicts))
        producer.partitions_for(self._cfg.actions_topic)  # warm: send() must never block on it
        return actions

    def _serve_requests(self) -> None:
        """Make queued agents ready: extend the assignment, seek to end, resolve positions."""
        with self._lock:
            requests, self._requests = self._requests, []
        if not requests:
            return
        try:
            self._make_ready(requests)
        except BaseException as exc:   # never leave a check waiting on a dead request
            self._fail_slots([s for s in requests if not s.ready.is_set()],
                             f"gate setup failed: {exc!r}")
            raise

    def _make_ready(self, requests: list[AgentSlot[threading.Event]]) -> None:
        if self._partitions is None:
            try:
                self._partitions = self._discover()
            except Exception as exc:
                self._status = metadata_failure(exc)
                self._fail_slots(requests, self._status)
                return
        consumer = self._consumer
        assert consumer is not None
        todo = unready_by_partition(requests, self._partitions, self._ready_partitions)
        if not todo:
            return
        topic = self._cfg.verdicts_topic
        new = [TopicPartition(topic, p) for p in todo
               if TopicPartition(topic, p) not in consumer.assignment()]
        if new:
            consumer.assign(list(consumer.assignment() | set(new)))  # keeps old positions
            consumer.seek_to_end(*new)
        for partition, slots in todo.items():
            tp = TopicPartition(topic, partition)
            try:
                position = consumer.position(tp, timeout_ms=int(self._connect_timeout * 1000))
            except Exception as exc:
                position, error = None, f"{exc!r}"
            else:
                error = "offset lookup timed out"
            if position is None:
                self._fail_slots(slots, f"cannot read verdicts partition {topic}[{partition}]: "
                                        f"{error}")
                continue
            with self._lock:
                self._ready_partitions.add(partition)
            for slot in slots:
                slot.ready.set()
        self._status = "ready"

    def _dispatch(self, batch: Mapping[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                request_id, result = parse_record(record.value)
                if self._resolve(request_id, result):
                    self._count("verdicts")
                else:
                    self._count("ignored")   # another gate's, or late after a timeout

    def _close_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = None
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.debug("consumer close failed", exc_info=True)
        if producer is not None:
            try:
                producer.close(timeout=2)
            except Exception:
                log.debug("producer close failed", exc_info=True)
