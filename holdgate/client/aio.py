"""The asyncio gate: the same contract as `Gate`, for agent runtimes on an event loop.

`AsyncGate` drives the protocol core (`holdgate.client.core`) with two tasks
over an `AsyncTransport` (aiokafka by default): a *reader* that polls the
consumer and resolves the futures of waiting checks the moment their verdicts
arrive, and a *maintainer* that does set-up (connect, discover, assign) and
replaces a broken client.  The two share the consumer under an asyncio lock;
a check itself only sends and awaits its future, so there is no thread hop.

A check that gives up (timeout, cancellation) with its action still
unacknowledged fences the producer before it returns: the action is dropped,
never delivered late.  The blocking `Gate` (`holdgate.client.sync`) is this
gate on an event loop of its own, so this is the one driver of the protocol.
This is the only module, with `kafka_async`, that imports aiokafka.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import Any, Awaitable, Callable, Literal, Mapping, Sequence, TypeVar, overload

from holdgate.client.core import GateCore
from holdgate.client.kafka_async import AioKafkaTransport
from holdgate.client.metrics import GateMetrics
from holdgate.client.proof import Checked, checked
from holdgate.client.routing import GateConfig, GuardSpec
from holdgate.client.steps import Deny, Pending, Step, Work
from holdgate.client.transport import (AsyncConsumer, AsyncProducer, AsyncTransport,
                                       ClientTimeouts, TransportError)
from holdgate.errors import ActionDenied
from holdgate.events import Resource, Verdict
from holdgate.keys import TrustStore
from holdgate.settings import Settings

__all__ = ["AsyncGate"]

log = logging.getLogger("holdgate.client")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

UNACKED_AT_TIMEOUT = "a check timed out with its action still unacknowledged"


class _Signal:
    """Wake every waiter once ("something changed"); waiters re-check the state."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass


class AsyncGate:
    """Asyncio pre-execution gate; use as ``async with AsyncGate(...) as gate``.

    `transport` replaces Kafka (see `holdgate.client.mock`).
    """

    def __init__(self, *, bootstrap: str | None = None, agent_id: str | None = None,
                 settings: Settings | None = None,
                 trusted_keys: TrustStore | str | Sequence[str] | None = None,
                 default_timeout: float = 5.0, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05, linger_ms: int = 1,
                 transport: AsyncTransport | None = None) -> None:
        config = GateConfig.resolve(bootstrap=bootstrap, settings=settings,
                                    trusted_keys=trusted_keys)
        self._core = GateCore(config, name="AsyncGate", agent_id=agent_id,
                              default_timeout=default_timeout)
        if transport is None:
            transport = AioKafkaTransport(
                config, ClientTimeouts.for_gate(default_timeout=default_timeout),
                linger_ms=linger_ms)
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._slice = max(0.001, poll_interval)
        self._consumer: AsyncConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._fenced: set[AsyncProducer] = set()        # closing in the background
        self._closed = False
        # Made inside the running loop by start():
        self._changed: _Signal | None = None
        self._work: asyncio.Event | None = None
        self._consumer_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> AsyncGate:
        """Start connecting in the background (idempotent); never raises for the broker."""
        if not self._tasks and not self._closed:
            self._changed, self._work = _Signal(), asyncio.Event()
            self._consumer_lock = asyncio.Lock()
            self._tasks = [asyncio.create_task(self._maintain(), name="holdgate-gate-maintain"),
                           asyncio.create_task(self._read(), name="holdgate-gate-read")]
        return self

    async def close(self) -> None:
        """Fence the producer, deny every waiting check (UNAVAILABLE), stop the clients."""
        if self._closed:
            return
        self._closed = True
        self._shut("gate is closed")
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.close()
        fenced = list(self._fenced)
        if fenced:
            await asyncio.wait([asyncio.ensure_future(p.wait_closed()) for p in fenced],
                               timeout=5.0)

    async def __aenter__(self) -> AsyncGate:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public API
    @overload
    async def check(self, *, action: str, resource: Resource | Mapping[str, Any],
                    context: Mapping[str, Any] | None = ..., timeout: float | None = ...,
                    agent_id: str | None = ..., wait_for_approval: float = ...,
                    with_proof: Literal[False] = ...) -> Verdict: ...
    @overload
    async def check(self, *, action: str, resource: Resource | Mapping[str, Any],
                    context: Mapping[str, Any] | None = ..., timeout: float | None = ...,
                    agent_id: str | None = ...,
              wait_for_approval: float = ..., with_proof: Literal[True]) -> Checked: ...

    async def check(self, *, action: str, resource: Resource | Mapping[str, Any],
                    context: Mapping[str, Any] | None = None, timeout: float | None = None,
                    agent_id: str | None = None, wait_for_approval: float = 0.0,
                    with_proof: bool = False) -> Verdict | Checked:
        """Publish the action and await its verified verdict; any failure is a deny.

        `wait_for_approval` and `with_proof`: see `Gate.check`.  Raises only for
        caller bugs: `ValidationError` for an action that breaks the wire
        schema, `ConfigError` when no agent id is known.
        """
        p = self._core.begin(action=action, resource=resource, context=context,
                             timeout=timeout, agent_id=agent_id,
                             approval_wait=wait_for_approval)
        verdict = await self._check(p)
        return checked(p, verdict) if with_proof else verdict

    async def _check(self, p: Pending) -> Verdict:
        clock = self._core.clock
        p.waker = asyncio.get_running_loop().create_future()
        await self.start()
        assert self._changed is not None and self._work is not None
        while (admission := self._core.admit(p)) is None:
            self._work.set()
            left = p.deadline - clock.monotonic()
            if left <= 0:
                return self._core.not_ready(p)
            await self._changed.wait(left)
        if isinstance(admission, Deny):
            return admission.verdict
        # asyncio.timeout, not wait_for: no extra task per check on the verdict path.
        try:
            try:
                async with asyncio.timeout(max(0.0, p.deadline - clock.monotonic())):
                    await admission.producer.send(admission.partition, p.key, p.value,
                                                  functools.partial(self._on_delivery, p))
            except TimeoutError:              # no metadata or no room before the deadline
                return self._core.send_failed(
                    p, TransportError("the action could not be queued before the deadline"))
            except Exception as exc:
                verdict = self._core.send_failed(p, exc)
                if getattr(exc, "fatal", False):
                    self._fence(admission.producer, f"send failed: {exc}")
                return verdict
            self._core.sent(p)
            while p.result is None and (left := p.deadline - clock.monotonic()) > 0:
                try:
                    async with asyncio.timeout(left):
                        await p.waker
                except TimeoutError:      # or the deadline moved on (waiting for an approval)
                    pass
                if p.result is None and p.waker.done():
                    p.waker = asyncio.get_running_loop().create_future()
        except BaseException:                 # cancelled: never deliver after we leave
            fence = self._core.abandon(p)
            if fence is not None:
                self._fence(fence, "a check was cancelled with its action unacknowledged")
            raise
        if p.result is not None:
            return self._core.finish(p)
        verdict, fence = self._core.expire(p)
        if fence is not None:
            self._fence(fence, UNACKED_AT_TIMEOUT)
        return verdict

    def guard(self, *, action: str, resource: Mapping[str, Any] | Callable[..., Any],
              context: Mapping[str, Any] | Callable[..., Any] | None = None,
              timeout: float | None = None, agent_id: str | None = None) -> Callable[[F], F]:
        """Decorator for async functions: await them only on a verified allow."""

        def decorate(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__qualname__} is not async: guard it with Gate")
            spec = GuardSpec.for_function(fn, action=action, resource=resource, context=context)

            @functools.wraps(fn)
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                res, ctx = spec.build(args, kwargs)
                verdict = await self.check(action=spec.action, resource=res, context=ctx,
                                           timeout=timeout, agent_id=agent_id)
                if not verdict.allowed:
                    raise ActionDenied(verdict)
                return await fn(*args, **kwargs)

            return guarded  # type: ignore[return-value]

        return decorate

    def assigned_partitions(self) -> frozenset[int]:
        """Verdict partitions this gate reads (only those of the agents it has served)."""
        return self._core.assigned_partitions

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sent, verdicts, ignored (late/foreign), timeouts, unavailable, fences."""
        return self._core.stats

    @property
    def metrics(self) -> GateMetrics:
        """Checks by outcome, local denies by code, hold latency; see `holdgate.client.metrics`."""
        return self._core.metrics

    # ------------------------------------------------------------------ events
    @staticmethod
    def _wake(woken: list[Pending]) -> None:
        for p in woken:
            if not p.waker.done():
                p.waker.set_result(None)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.notify()
        if self._work is not None:
            self._work.set()

    def _on_delivery(self, p: Pending, error: TransportError | None) -> None:
        woken = self._core.delivered(p, error)
        if woken is not None:
            self._wake([woken])
        if error is not None and error.fatal and p.producer is self._core.producer:
            self._fence(p.producer, f"delivery failed: {error}")

    def _fence(self, producer: AsyncProducer, reason: str) -> None:
        """Drop `producer`'s unacknowledged actions, then deny their checks; replace it."""
        producer.fence()
        self._fenced.add(producer)
        closing = asyncio.ensure_future(producer.wait_closed())
        closing.add_done_callback(lambda _: self._fenced.discard(producer))
        self._wake(self._core.producer_fault(producer, reason))
        self._notify()

    def _shut(self, message: str) -> None:
        producer = self._core.producer
        if producer is not None:
            producer.fence()
            self._fenced.add(producer)
        self._wake(self._core.close(message))
        self._notify()

    async def _consumer_broken(self, consumer: AsyncConsumer, reason: str) -> None:
        """Reset the whole session: checks waiting are denied, the producer is fenced."""
        log.warning("holdgate gate: %s; reconnecting", reason)
        producer = self._core.producer
        if producer is not None:
            self._fence(producer, reason)
        self._wake(self._core.consumer_fault(reason))
        if self._consumer is consumer:
            self._consumer = None
        self._notify()
        await consumer.close()

    # ------------------------------------------------------------------ tasks
    async def _read(self) -> None:
        """Poll the consumer while partitions are assigned; resolve checks as verdicts come."""
        assert self._changed is not None and self._consumer_lock is not None
        while not self._closed:
            consumer = self._consumer
            if consumer is None or not self._core.assigned_partitions:
                await self._changed.wait(None)
                continue
            async with self._consumer_lock:
                if consumer is not self._consumer:
                    continue
                try:
                    values = await consumer.poll(self._slice)
                except TransportError as exc:
                    await self._consumer_broken(consumer, str(exc))
                    continue
            if values:
                self._wake(self._core.receive(values))

    async def _maintain(self) -> None:
        assert self._work is not None
        message = "gate is closed"
        try:
            while not self._closed:
                self._work.clear()
                step = self._core.next_work()
                if isinstance(step, Step):
                    await self._perform(step)
                    continue
                try:
                    await asyncio.wait_for(self._work.wait(), step)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: fail closed, loudly
            log.exception("holdgate gate maintenance task stopped")
            message = f"gate maintenance task failed: {exc!r}"
            self._closed = True
            self._shut(message)

    async def _perform(self, step: Step) -> None:
        assert self._consumer_lock is not None
        cfg, timeout = self._core.config, self._connect_timeout
        if step.work is Work.CONNECT:
            try:
                consumer = await asyncio.wait_for(self._transport.open_consumer(), timeout)
            except Exception as exc:
                self._core.consumer_failed(f"broker {cfg.bootstrap} unreachable: {exc!r}")
            else:
                self._consumer = consumer
                self._core.consumer_opened()
        elif step.work is Work.OPEN_PRODUCER:
            try:
                producer = await asyncio.wait_for(self._transport.open_producer(), timeout)
            except Exception as exc:
                self._core.producer_failed(f"cannot open a producer on {cfg.bootstrap}: {exc!r}")
            else:
                if self._closed:
                    producer.fence()
                    self._fenced.add(producer)
                    return
                self._core.producer_opened(producer)
        elif step.work is Work.PREPARE:
            producer = self._core.producer
            try:
                await asyncio.wait_for(producer.prepare(), timeout)
            except Exception as exc:
                stale = self._core.producer_failed(
                    f"no metadata for {cfg.actions_topic!r}: {exc!r}")
                if stale is not None:
                    stale.fence()
                    self._fenced.add(stale)
            else:
                if self._core.producer is producer:
                    self._core.producer_prepared()
        else:
            async with self._consumer_lock:
                await self._consumer_step(step, timeout)
        self._notify()

    async def _consumer_step(self, step: Step, timeout: float) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if step.work is Work.DISCOVER:
            topics = (self._core.config.actions_topic, self._core.config.verdicts_topic)
            try:
                counts = await asyncio.wait_for(consumer.partition_counts(topics), timeout)
            except Exception as exc:
                self._core.discovery_failed(repr(exc))
            else:
                self._core.discovered(counts)
            return
        try:
            errors = await asyncio.wait_for(consumer.assign(step.partitions), timeout)
        except Exception as exc:
            errors = dict.fromkeys(step.partitions, repr(exc))
        self._core.assigned(step.partitions, errors)
