"""The gates' Kafka I/O over aiokafka: the `AsyncTransport` seam, implemented.

Why it touches two aiokafka internals, both in `fence()`:

* an idempotent aiokafka producer never expires a batch it can retry (it
  retries until the broker takes it, however late), and ``stop()`` *flushes*,
  that is, waits for delivery.  A fence must do the opposite: cancel the
  sender task (so nothing more is drained onto the wire) and fail every
  queued batch (``_message_accumulator.fail_all``) — synchronously, before the
  check that asked for it returns.  The connections are then closed in the
  background (`wait_closed`).
* a producer whose sender died (``OutOfOrderSequenceNumber`` or
  ``UnknownProducerId`` after a broker restart, ``ProducerFenced``) refuses
  every later send with that error; the gate fences and replaces it.

aiokafka's ``assign()`` forgets the positions of partitions it already had,
so extending the assignment re-seeks those to where they were.

Only `holdgate.client.aio` imports this module, and `Gate` imports that when the
first gate is made: importing `holdgate.client` does not load aiokafka.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Collection, Mapping, Sequence

import aiokafka.errors as aerrors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from holdgate.client.routing import GateConfig
from holdgate.client.transport import (Received, AsyncConsumer, AsyncProducer, AsyncTransport,
                                       ClientTimeouts, OnDelivery, TransportError)

__all__ = ["AioKafkaTransport"]

log = logging.getLogger("holdgate.client")

CONSUMER_REQUEST_MS = 10_000
FETCH_MAX_WAIT_MS = 100
STOP_TIMEOUT = 5.0

_RECORD_ERRORS = (aerrors.MessageSizeTooLargeError, aerrors.CorruptRecordException)


def _error(what: str, exc: BaseException) -> TransportError:
    return TransportError(f"{what}: {exc!r}", fatal=not isinstance(exc, _RECORD_ERRORS))


async def _stop(client: Any, what: str) -> None:
    try:
        await asyncio.wait_for(client.stop(), STOP_TIMEOUT)
    except Exception:
        log.debug("stopping the aiokafka %s failed", what, exc_info=True)


class AioKafkaTransport(AsyncTransport):
    """Opens aiokafka producer and consumer sessions for one `AsyncGate`."""

    def __init__(self, config: GateConfig, timeouts: ClientTimeouts, *, linger_ms: int) -> None:
        self.config, self.timeouts, self.linger_ms = config, timeouts, linger_ms

    async def open_consumer(self) -> _AioConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap, client_id=self.config.client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
            isolation_level="read_committed",   # a verdict of an aborted transaction never counts
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, request_timeout_ms=CONSUMER_REQUEST_MS,
            **self.config.security.aiokafka())
        try:
            await consumer.start()
        except BaseException:
            await asyncio.shield(_stop(consumer, "consumer"))
            raise
        return _AioConsumer(consumer, self.config.verdicts_topic)

    async def open_producer(self) -> _AioProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap, client_id=self.config.client_id,
            acks="all", enable_idempotence=True, linger_ms=self.linger_ms,
            request_timeout_ms=self.timeouts.request_ms, **self.config.security.aiokafka())
        try:
            await producer.start()
        except BaseException:
            await asyncio.shield(_stop(producer, "producer"))
            raise
        return _AioProducer(producer, self.config.actions_topic)


class _AioProducer(AsyncProducer):
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.raw, self.topic = producer, topic
        self._closing: asyncio.Task[None] | None = None

    async def send(self, partition: int, key: bytes, value: bytes,
                   on_delivery: OnDelivery) -> None:
        if self._closing is not None:
            raise TransportError("the producer was fenced")
        try:
            future = await self.raw.send(self.topic, value=value, key=key, partition=partition)
        except Exception as exc:
            raise _error("the producer refused the action", exc) from exc

        def done(f: asyncio.Future[Any]) -> None:
            if self._closing is not None:  # our own fence failed it: expected, no new fault
                on_delivery(None if not (f.cancelled() or f.exception()) else TransportError(
                    "action dropped: its producer was fenced", fatal=False))
            elif f.cancelled():
                on_delivery(TransportError("delivery cancelled"))
            elif f.exception() is not None:
                on_delivery(_error("delivery failed", f.exception()))  # type: ignore[arg-type]
            else:
                on_delivery(None)

        future.add_done_callback(done)

    async def prepare(self) -> None:
        await self.raw.partitions_for(self.topic)

    def fence(self) -> None:
        if self._closing is not None:
            return
        sender: Any = getattr(self.raw, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is not None and not task.done():
            task.cancel()                  # drains nothing more onto the wire
        accumulator: Any = getattr(self.raw, "_message_accumulator", None)
        if accumulator is not None:
            accumulator.fail_all(aerrors.KafkaError("producer fenced by the holdgate client"))
        else:                              # pragma: no cover - other aiokafka layouts
            log.warning("aiokafka has no message accumulator: fencing by stop() only")
        self._closing = asyncio.ensure_future(_stop(self.raw, "producer"))

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.wait({self._closing}, timeout=STOP_TIMEOUT)


class _AioConsumer(AsyncConsumer):
    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.raw, self.topic = consumer, topic

    async def partition_counts(self, topics: Sequence[str]) -> Mapping[str, int]:
        # The public topics() reads fresh metadata but returns only the names, and
        # partitions_for_topic() reads the consumer's own (possibly older) metadata:
        # take the counts from the same fresh snapshot.
        cluster = await self.raw._client.fetch_all_metadata()
        return {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}

    async def assign(self, partitions: Collection[int]) -> Mapping[int, str]:
        wanted = {TopicPartition(self.topic, p) for p in partitions}
        old = self.raw.assignment()
        new = wanted - old
        if new:
            # position() of a partition already read is its consumed offset: no I/O.
            keep = {tp: await self.raw.position(tp) for tp in old}
            self.raw.assign(list(old | new))
            for tp, offset in keep.items():
                self.raw.seek(tp, offset)
            await self.raw.seek_to_end(*new)
        errors: dict[int, str] = {}
        for tp in wanted:
            try:
                await self.raw.position(tp)    # resolved before any action of it is sent
            except Exception as exc:
                errors[tp.partition] = repr(exc)
        return errors

    async def poll(self, timeout: float) -> list[Received]:
        try:
            batch = await self.raw.getmany(timeout_ms=max(0, int(timeout * 1000)))
        except Exception as exc:
            raise TransportError(f"verdict consumer failed: {exc!r}") from exc
        return [(record.value, tuple(record.headers or ())) for records in batch.values()
                for record in records]

    async def close(self) -> None:
        await _stop(self.raw, "consumer")
