"""The asyncio gate (aiokafka): the same contract as `Gate`, for agent runtimes on an event loop.

One `AsyncGate` owns ONE producer and ONE consumer for any number of
concurrent `check()` tasks.  A single background task owns the consumer: it
connects, discovers the topics, extends the manual assignment when a new agent
appears and dispatches verdicts by request_id to waiting futures.  A check
sends only after its agent's verdict partition is assigned with a *resolved*
position, and registers its pending future before sending, so no verdict can
be missed.

aiokafka's `assign()` forgets the positions of partitions it already had, so
extending the assignment re-seeks those to where they were: otherwise verdicts
for checks in flight on them could be skipped.

This is the only module that imports aiokafka.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from holdgate.client.core import GateCore
from holdgate.client.routing import (AgentSlot, GuardSpec, metadata_failure, new_request,
                                     unready_by_partition)
from holdgate.client.verify import Failure, local_deny, parse_record, verify_verdict
from holdgate.errors import ActionDenied
from holdgate.events import ActionRequest, Resource, Verdict, encode
from holdgate.reasons import TIMEOUT, UNAVAILABLE
from holdgate.settings import Settings

__all__ = ["AsyncGate"]

log = logging.getLogger("holdgate.client")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class AsyncGate(GateCore[asyncio.Event]):
    """Asyncio pre-execution gate; use as ``async with AsyncGate(...) as gate``."""

    def __init__(self, *, bootstrap: str | None = None, agent_id: str | None = None,
                 settings: Settings | None = None, signing_key: str | bytes | None = None,
                 default_timeout: float = 5.0, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05, linger_ms: int = 1) -> None:
        super().__init__(name="AsyncGate", bootstrap=bootstrap, agent_id=agent_id,
                         settings=settings, signing_key=signing_key,
                         default_timeout=default_timeout, connect_timeout=connect_timeout,
                         poll_interval=poll_interval, linger_ms=linger_ms)
        self._pending: dict[str, asyncio.Future[Verdict | Failure]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> AsyncGate:
        """Start connecting in the background (idempotent); never raises for the broker."""
        if self._task is None and not self._closed:
            self._wake = asyncio.Event()
            if self._agent_id:
                self._want(self._agent_id)      # warm up: assign before the first check
            self._task = asyncio.create_task(self._run(), name="holdgate-gate-poll")
        return self

    async def close(self) -> None:
        """Stop the poll task, deny every waiting check (UNAVAILABLE) and stop the clients."""
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is not None:
            if self._wake is not None:
                self._wake.set()
            # The loop sees _closed within one poll interval; only a connect attempt in
            # progress is cut short by cancellation (it cleans up after itself).
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
        self._fail_all("gate is closed")

    async def __aenter__(self) -> AsyncGate:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public API
    async def check(self, *, action: str, resource: Resource | Mapping[str, Any],
                    context: Mapping[str, Any] | None = None, timeout: float | None = None,
                    agent_id: str | None = None) -> Verdict:
        """Publish the action and await its verified verdict; any failure is a deny.

        Raises only for caller bugs: `ValidationError` for an action that breaks
        the wire schema, `ConfigError` when no agent id is known.
        """
        request = new_request(gate="AsyncGate", default_agent=self._agent_id,
                              agent_id=agent_id, action=action, resource=resource,
                              context=context)
        agent = request.agent_id
        wait = self._default_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if self._closed:
            return self._unavailable(request, "gate is closed")
        await self.start()
        slot = self._want(agent)
        try:
            await asyncio.wait_for(slot.ready.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return self._unavailable(request, f"gate not ready within {wait:g}s: {self._status}")
        producer = self._producer
        if slot.error is not None or slot.partition is None or producer is None:
            return self._unavailable(request, slot.error or self._status)
        future: asyncio.Future[Verdict | Failure] = loop.create_future()
        self._pending[request.request_id] = future
        if self._closed:              # close() ran while we waited for readiness
            self._pending.pop(request.request_id, None)
            return self._unavailable(request, "gate is closed")
        try:
            delivery = await asyncio.wait_for(
                producer.send(self._cfg.actions_topic, value=encode(request),
                              key=agent.encode(), partition=slot.partition),
                max(0.0, deadline - loop.time()))
        except Exception as exc:
            self._pending.pop(request.request_id, None)
            return self._unavailable(request, f"could not publish the action: {exc!r}")
        self._stats["sent"] += 1
        delivery.add_done_callback(functools.partial(self._on_delivery, request.request_id))
        done, _ = await asyncio.wait({future}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            self._pending.pop(request.request_id, None)
            future.cancel()
            self._stats["timeouts"] += 1
            return local_deny(request, code=TIMEOUT, message=(
                f"no verdict within {wait:g}s; a verdict arriving later is ignored"))
        result = future.result()
        if isinstance(result, Failure):
            if result.code == UNAVAILABLE:
                self._stats["unavailable"] += 1
            return local_deny(request, code=result.code, message=result.message)
        return verify_verdict(result, request, self._cfg.key, time.time())

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
        return frozenset(self._ready_partitions)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for operators: sent, verdicts, ignored (late/foreign), timeouts, unavailable."""
        return dict(self._stats)

    # ------------------------------------------------------------------ check helpers
    def _unavailable(self, request: ActionRequest, message: str) -> Verdict:
        self._stats["unavailable"] += 1
        return local_deny(request, code=UNAVAILABLE, message=message)

    def _want(self, agent_id: str) -> AgentSlot[asyncio.Event]:
        slot = self._slots.get(agent_id)
        if slot is not None and slot.reusable:
            return slot
        slot = AgentSlot(agent_id, asyncio.Event())
        self._slots[agent_id] = slot
        self._requests.append(slot)
        if self._wake is not None:
            self._wake.set()
        return slot

    def _resolve(self, request_id: str | None, result: Verdict | Failure) -> bool:
        future = self._pending.pop(request_id, None) if request_id is not None else None
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    def _on_delivery(self, request_id: str, delivery: asyncio.Future[Any]) -> None:
        exc = None if delivery.cancelled() else delivery.exception()
        if delivery.cancelled() or exc is not None:
            self._resolve(request_id, Failure(
                UNAVAILABLE, f"could not publish the action: {exc or 'cancelled'!r}"))

    def _fail_all(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(Failure(UNAVAILABLE, message))
        self._fail_requests(message)

    def _fail_requests(self, message: str) -> None:
        requests, self._requests = self._requests, []
        self._fail_slots(requests, message)

    # ------------------------------------------------------------------ poll task
    async def _run(self) -> None:
        backoff = 0.2
        final = "gate is closed"
        try:
            while not self._closed:
                if self._consumer is None:
                    try:
                        await asyncio.wait_for(self._connect(), self._connect_timeout)
                        backoff = 0.2
                    except Exception as exc:
                        self._status = f"broker {self._cfg.bootstrap} unreachable: {exc!r}"
                        log.warning("holdgate gate: %s", self._status)
                        self._fail_requests(self._status)
                        await self._sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                    continue
                try:
                    await self._serve_requests()
                    if self._ready_partitions:
                        self._dispatch(await self._consumer.getmany(timeout_ms=self._poll_ms))
                    else:
                        await self._sleep(self._poll_ms / 1000)
                except Exception as exc:  # keep serving; waiting checks time out closed
                    self._status = f"consumer error: {exc!r}"
                    log.warning("holdgate gate: %s", self._status, exc_info=True)
                    await self._sleep(backoff)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: fail closed, loudly
            log.exception("holdgate gate poll task stopped")
            final = self._status = f"gate poll task failed: {exc!r}"
            self._closed = True
        finally:
            self._fail_all(final)
            await asyncio.shield(self._stop_clients())

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for a new agent or for close()."""
        assert self._wake is not None
        if not self._wake.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=seconds)
            finally:
                waiter.cancel()
        self._wake.clear()

    async def _connect(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._cfg.bootstrap, client_id=self._cfg.client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
            fetch_max_wait_ms=100, request_timeout_ms=10000)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._cfg.bootstrap, client_id=self._cfg.client_id,
            acks="all", enable_idempotence=True, linger_ms=self._linger_ms,
            request_timeout_ms=10000)
        try:
            await consumer.start()
            await producer.start()
        except BaseException:
            await asyncio.shield(asyncio.gather(consumer.stop(), producer.stop(),
                                                return_exceptions=True))
            raise
        self._consumer, self._producer = consumer, producer
        self._status = f"connected to {self._cfg.bootstrap}"

    async def _discover(self) -> int:
        """Partition count of the gate's topics, checked to exist and to match."""
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        topics = await consumer.topics()
        names = (self._cfg.actions_topic, self._cfg.verdicts_topic)
        missing = [t for t in names if t not in topics]
        if missing:
            raise LookupError(self._cfg.missing_topics_message(missing))
        # The producer's metadata gets warmed on the way: send() must never wait for it.
        actions, verdicts = [len(await producer.partitions_for(t)) for t in names]
        if actions != verdicts:
            raise LookupError(self._cfg.partition_counts_message(actions, verdicts))
        return actions

    async def _serve_requests(self) -> None:
        """Make queued agents ready: extend the assignment, seek to end, resolve positions."""
        requests, self._requests = self._requests, []
        if not requests:
            return
        try:
            await self._make_ready(requests)
        except BaseException as exc:  # never leave a check waiting on a dead request
            self._fail_slots([s for s in requests if not s.ready.is_set()],
                             f"gate setup failed: {exc!r}")
            raise

    async def _make_ready(self, requests: list[AgentSlot[asyncio.Event]]) -> None:
        if self._partitions is None:
            try:
                self._partitions = await asyncio.wait_for(self._discover(),
                                                          self._connect_timeout)
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
        wanted = {TopicPartition(topic, p) for p in todo}
        try:
            await asyncio.wait_for(self._extend_assignment(consumer, wanted),
                                   self._connect_timeout)
        except Exception as exc:
            self._fail_slots([s for slots in todo.values() for s in slots],
                             f"cannot read verdicts partitions {sorted(todo)} of {topic}: {exc!r}")
            return
        self._ready_partitions.update(todo)
        for slots in todo.values():
            for slot in slots:
                slot.ready.set()
        self._status = "ready"

    async def _extend_assignment(self, consumer: AIOKafkaConsumer,
                                 wanted: set[TopicPartition]) -> None:
        old = consumer.assignment()
        new = wanted - old
        if new:
            # position() of an already-read partition is its consumed offset: no I/O.
            keep = {tp: await consumer.position(tp) for tp in old}
            consumer.assign(list(old | new))
            for tp, offset in keep.items():
                consumer.seek(tp, offset)
            await consumer.seek_to_end(*new)
        for tp in wanted:
            await consumer.position(tp)      # resolved before any action of it is sent

    def _dispatch(self, batch: Mapping[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                request_id, result = parse_record(record.value)
                if self._resolve(request_id, result):
                    self._stats["verdicts"] += 1
                else:
                    self._stats["ignored"] += 1   # another gate's, or late after a timeout

    async def _stop_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = None
        for client in (consumer, producer):
            if client is not None:
                try:
                    await asyncio.wait_for(client.stop(), 5)
                except Exception:
                    log.debug("aiokafka client stop failed", exc_info=True)
