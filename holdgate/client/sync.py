"""The blocking gate: publish the intended action, hold, act only on an allow.

`Gate` drives the protocol core (`holdgate.client.core`) with threads, over a
`Transport` (kafka-python by default).  One gate owns one producer and one
consumer however many threads call `check()`.

Who reads the consumer: a waiting check, whenever there is one (`Baton`,
leader/followers), so a lone check reads its own verdict with no thread hop.
The maintenance thread does set-up (connect, discover, assign, replace a
broken client) and drains the consumer when no check is waiting, so late
verdicts are counted.

Every failure mode is a deny `Verdict` from `check()` (UNAVAILABLE, TIMEOUT,
INVALID_VERDICT), never an exception and never a hang past the timeout; a
check that gives up with its action unacknowledged fences the producer first.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar, overload

from holdgate.client.baton import Baton
from holdgate.client.core import GateCore
from holdgate.client.kafka_sync import KafkaTransport
from holdgate.client.metrics import GateMetrics
from holdgate.client.proof import Checked, checked
from holdgate.client.routing import GateConfig, GuardSpec
from holdgate.client.steps import Deny, Pending, Send, Step, Work
from holdgate.client.transport import (Received, ClientTimeouts, Consumer, Producer, Transport,
                                       TransportError)
from holdgate.errors import ActionDenied
from holdgate.events import Resource, Verdict
from holdgate.keys import TrustStore
from holdgate.settings import Settings

__all__ = ["Gate"]

log = logging.getLogger("holdgate.client")
F = TypeVar("F", bound=Callable[..., Any])

UNACKED_AT_TIMEOUT = "a check timed out with its action still unacknowledged"


class Gate:
    """Synchronous pre-execution gate; share one instance across threads and agents.

    `poll_interval` bounds how long the reading thread waits on the network
    before it looks for set-up work; verdicts themselves are read the moment
    they arrive.  `transport` replaces Kafka (see `holdgate.client.mock`).
    """

    def __init__(self, *, bootstrap: str | None = None, agent_id: str | None = None,
                 settings: Settings | None = None,
                 trusted_keys: TrustStore | str | Sequence[str] | None = None,
                 default_timeout: float = 5.0, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05, linger_ms: int = 1,
                 transport: Transport | None = None) -> None:
        config = GateConfig.resolve(bootstrap=bootstrap, settings=settings,
                                    trusted_keys=trusted_keys)
        self._core = GateCore(config, name="Gate", agent_id=agent_id,
                              default_timeout=default_timeout)
        if transport is None:
            transport = KafkaTransport(config, ClientTimeouts.for_gate(
                default_timeout=default_timeout, connect_timeout=connect_timeout,
                linger_ms=linger_ms), linger_ms=linger_ms)
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._slice = max(0.001, poll_interval)
        self._lock = threading.Lock()                 # guards the core and the fields below
        self._changed = threading.Condition(self._lock)
        self._work = threading.Event()                # wakes the maintenance thread
        self._closed = threading.Event()
        self._baton = Baton()                         # who reads the consumer
        self._faults: list[tuple[Producer, str]] = []  # reported on client threads
        self._consumer: Consumer | None = None
        self._thread = threading.Thread(target=self._maintain, name="holdgate-gate",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    @overload
    def check(self, *, action: str, resource: Resource | Mapping[str, Any],
              context: Mapping[str, Any] | None = ..., timeout: float | None = ...,
              agent_id: str | None = ...,
              wait_for_approval: float = ..., with_proof: Literal[False] = ...) -> Verdict: ...
    @overload
    def check(self, *, action: str, resource: Resource | Mapping[str, Any],
              context: Mapping[str, Any] | None = ..., timeout: float | None = ...,
              agent_id: str | None = ...,
              wait_for_approval: float = ..., with_proof: Literal[True]) -> Checked: ...

    def check(self, *, action: str, resource: Resource | Mapping[str, Any],
              context: Mapping[str, Any] | None = None, timeout: float | None = None,
              agent_id: str | None = None, wait_for_approval: float = 0.0,
              with_proof: bool = False) -> Verdict | Checked:
        """Publish the action and wait for its verified verdict; any failure is a deny.

        `wait_for_approval`: seconds a *pending* verdict (the policy wants an
        approver's signature, `holdgate approve`) may wait on for the final one;
        0 returns the pending verdict at once, which is a deny like any other.
        `with_proof`: a `Checked` (the verdict, the action bytes, the worker's
        signed record) for an executor to verify itself (`holdgate.executor`).
        Raises only for caller bugs: `ValidationError` for an action that
        breaks the wire schema, `ConfigError` when no agent id is known.
        """
        p = self._core.begin(action=action, resource=resource, context=context,
                             timeout=timeout, agent_id=agent_id,
                             approval_wait=wait_for_approval)
        verdict = self._check(p)
        return checked(p, verdict) if with_proof else verdict

    def _check(self, p: Pending) -> Verdict:
        p.waker = threading.Event()
        with self._lock:
            while (admission := self._core.admit(p)) is None:
                self._work.set()
                left = p.deadline - self._core.clock.monotonic()
                if left <= 0:
                    return self._core.not_ready(p)
                self._changed.wait(left)
            if isinstance(admission, Deny):
                return admission.verdict
        self._baton.join(p)                     # before sending: the idle drain keeps off
        try:
            return self._send_and_wait(p, admission)
        finally:
            self._baton.leave(p)

    def _send_and_wait(self, p: Pending, admission: Send) -> Verdict:
        try:
            admission.producer.send(admission.partition, p.key, p.value,
                                    functools.partial(self._on_delivery, p))
        except Exception as exc:
            with self._lock:
                verdict = self._core.send_failed(p, exc)
            if getattr(exc, "fatal", True):
                self._fence(admission.producer, f"send failed: {exc}")
            return verdict
        with self._lock:
            self._core.sent(p)
        try:
            self._await(p)
        except BaseException:               # interrupted: never deliver after we leave
            with self._lock:
                fence = self._core.abandon(p)
            if fence is not None:
                self._fence(fence, "a check was interrupted with its action unacknowledged")
            raise
        with self._lock:
            if p.result is not None:
                return self._core.finish(p)
            verdict, fence = self._core.expire(p)
        if fence is not None:
            self._fence(fence, UNACKED_AT_TIMEOUT)
        return verdict

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
            return self._core.assigned_partitions

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sent, verdicts, ignored (late/foreign), timeouts, unavailable, fences."""
        with self._lock:
            return self._core.stats

    @property
    def metrics(self) -> GateMetrics:
        """Checks by outcome, local denies by code, hold latency; see `holdgate.client.metrics`."""
        with self._lock:
            return self._core.metrics

    def close(self, timeout: float = 5.0) -> None:
        """Fence the producer, deny every waiting check (UNAVAILABLE), stop and close."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._shut("gate is closed")
        # A connect attempt cannot be interrupted; it finishes in the background and
        # the maintenance thread closes whatever it opened, so don't wait for it.
        self._thread.join(timeout if self._consumer is not None else min(timeout, 0.5))

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting for verdicts
    def _await(self, p: Pending) -> None:
        """Until `p` is resolved or its deadline: lead (poll) when the baton is free, else wait."""
        event: threading.Event = p.waker
        while p.result is None:
            left = p.deadline - self._core.clock.monotonic()
            if left <= 0:
                return
            if self._consumer is not None and self._baton.try_take():
                try:
                    self._lead(p)
                finally:
                    self._baton.give_back()
            else:
                event.wait(left)
                event.clear()

    def _lead(self, p: Pending) -> None:
        consumer = self._consumer
        while consumer is not None and p.result is None and not self._baton.wanted:
            left = p.deadline - self._core.clock.monotonic()
            if left <= 0:
                return
            try:
                values = consumer.poll(min(left, self._slice))
            except TransportError as exc:
                self._consumer_broken(str(exc))
                return
            if values:
                self._dispatch(values)

    def _dispatch(self, values: list[Received]) -> None:
        with self._lock:
            for woken in self._core.receive(values):
                woken.waker.set()

    # ------------------------------------------------------------------ faults
    def _on_delivery(self, p: Pending, error: TransportError | None) -> None:
        """Producer callback (kafka-python's thread): settle the record, report a fault."""
        with self._lock:
            woken = self._core.delivered(p, error)
            if woken is not None:
                woken.waker.set()
            if error is not None and error.fatal and p.producer is self._core.producer:
                self._faults.append((p.producer, f"delivery failed: {error}"))
                self._work.set()            # fenced on the maintenance thread, not this one

    def _fence(self, producer: Producer, reason: str) -> None:
        """Drop `producer`'s unacknowledged actions, then deny their checks; replace it."""
        producer.fence()
        with self._lock:
            for woken in self._core.producer_fault(producer, reason):
                woken.waker.set()
            self._changed.notify_all()
        self._work.set()

    def _consumer_broken(self, reason: str) -> None:
        """Called holding the baton: reset the whole session (checks waiting are denied)."""
        log.warning("holdgate gate: %s; reconnecting", reason)
        with self._lock:
            producer = self._core.producer
        if producer is not None:
            producer.fence()
        with self._lock:
            woken = self._core.producer_fault(producer, reason) if producer is not None else []
            woken += self._core.consumer_fault(reason)
            for p in woken:
                p.waker.set()
            consumer, self._consumer = self._consumer, None
            self._changed.notify_all()
        if consumer is not None:
            consumer.close()
        self._work.set()

    def _shut(self, message: str) -> None:
        with self._lock:
            producer = self._core.producer
        if producer is not None:
            producer.fence()
        with self._lock:
            for p in self._core.close(message):
                if p.waker is not None:
                    p.waker.set()
            self._changed.notify_all()
        self._work.set()

    # ------------------------------------------------------------------ maintenance thread
    def _maintain(self) -> None:
        message = "gate is closed"
        try:
            while not self._closed.is_set():
                self._work.clear()
                with self._lock:
                    faults, self._faults = self._faults, []
                for producer, reason in faults:
                    self._fence(producer, reason)
                with self._lock:
                    step = self._core.next_work()
                if isinstance(step, Step):
                    self._perform(step)
                    continue
                self._work.wait(self._slice if step is None else min(step, self._slice))
                if step is None:
                    self._drain()
        except BaseException as exc:  # a bug: fail closed, loudly
            log.exception("holdgate gate maintenance thread stopped")
            message = f"gate maintenance thread failed: {exc!r}"
        finally:
            self._closed.set()
            self._shut(message)
            with self._baton.hold():
                consumer, self._consumer = self._consumer, None
            if consumer is not None:
                consumer.close()

    def _drain(self) -> None:
        """No check is reading: take what arrived (late verdicts), without blocking anyone."""
        consumer = self._consumer
        if consumer is None or not self._baton.take_idle():
            return
        try:
            values = consumer.poll(0)
            if values:
                self._dispatch(values)
        except TransportError as exc:
            self._consumer_broken(str(exc))
        finally:
            self._baton.give_back()

    def _perform(self, step: Step) -> None:
        cfg, timeout = self._core.config, self._connect_timeout
        if step.work is Work.CONNECT:
            try:
                consumer = self._transport.open_consumer(timeout)
            except Exception as exc:
                message = f"broker {cfg.bootstrap} unreachable: {exc!r}"
                self._report(lambda c: c.consumer_failed(message))
                return
            if self._closed.is_set():
                consumer.close()
                return
            with self._baton.hold():
                self._consumer = consumer
            self._report(lambda c: c.consumer_opened())
        elif step.work is Work.OPEN_PRODUCER:
            try:
                producer = self._transport.open_producer(timeout)
            except Exception as exc:
                message = f"cannot open a producer on {cfg.bootstrap}: {exc!r}"
                self._report(lambda c: c.producer_failed(message))
                return
            if self._closed.is_set():
                producer.fence()
                return
            self._report(lambda c: c.producer_opened(producer))
        elif step.work is Work.PREPARE:
            self._prepare(timeout)
        else:
            with self._baton.hold():
                self._consumer_step(step, timeout)

    def _prepare(self, timeout: float) -> None:
        with self._lock:
            producer = self._core.producer
        try:
            producer.prepare(timeout)
        except Exception as exc:
            with self._lock:
                producer = self._core.producer_failed(
                    f"no metadata for {self._core.config.actions_topic!r}: {exc!r}")
            if producer is not None:
                producer.fence()
            return
        self._report(lambda c: c.producer_prepared() if c.producer is producer else None)

    def _consumer_step(self, step: Step, timeout: float) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if step.work is Work.DISCOVER:
            topics = (self._core.config.actions_topic, self._core.config.verdicts_topic)
            try:
                counts = consumer.partition_counts(topics, timeout)
            except Exception as exc:
                message = repr(exc)
                self._report(lambda c: c.discovery_failed(message))
            else:
                self._report(lambda c: c.discovered(counts))
        else:
            try:
                errors = consumer.assign(step.partitions, timeout)
            except Exception as exc:
                errors = dict.fromkeys(step.partitions, repr(exc))
            self._report(lambda c: c.assigned(step.partitions, errors))

    def _report(self, event: Callable[[GateCore], None]) -> None:
        with self._lock:
            event(self._core)
            self._changed.notify_all()
