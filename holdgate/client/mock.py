"""An in-memory Kafka for tests: run a `Gate` or an `AsyncGate` without a broker.

The test seam of the SDK, in the spirit of ``httpx.MockTransport``: a
`MockBroker` holds the actions log and the verdict partitions, a *handler*
plays the worker, and `MockTransport` hands either gate producer and consumer
sessions over it (both gates run on an event loop: `Gate` on its own thread's,
see `holdgate.client.sync`; `AsyncMockTransport` is the same class)::

    def worker(request: ActionRequest) -> Verdict | bytes | None:
        return sign(allow(request), KEY)          # None: stay silent

    with Gate(agent_id="bot-1", transport=MockTransport(worker)) as gate:
        assert gate.check(action="tickets.read", resource=TICKET).allowed

The broker can be stopped and started (`stop`, `start`): while it is down,
sessions cannot be opened, sends are *held* unacknowledged, and when it comes
back every held record of a producer that was not fenced is delivered — late,
exactly what a real producer would do, which is what the gate must prevent.
`actions` keeps each delivered record with its append time, like a topic with
``message.timestamp.type=LogAppendTime``.  A delivery report reaches the gate
on the producer's event loop, as aiokafka's do, whichever thread caused it (a
test calling `start` from its own thread while a `Gate` runs on another).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from holdgate.client.transport import (AsyncConsumer, AsyncProducer, AsyncTransport,
                                       OnDelivery, Received, TransportError)
from holdgate.events import ActionRequest, Verdict, decode_request, encode
from holdgate.keys import Signer
from holdgate.signing import sign_headers

__all__ = ["Handler", "Appended", "MockBroker", "MockTransport", "AsyncMockTransport"]

#: Plays the worker: a verdict (or raw bytes) for the request, or None for silence.
Handler = Callable[[ActionRequest], "Verdict | bytes | None"]


@dataclass(frozen=True, slots=True)
class Appended:
    """One delivered action record."""

    partition: int
    key: bytes
    value: bytes
    appended_at: float          # wall clock, like LogAppendTime


class MockBroker:
    """Topics in memory; thread-safe; shared by any number of mock transports."""

    def __init__(self, handler: Handler | None = None, *, partitions: int = 2,
                 topics_exist: bool = True, signer: Signer | None = None) -> None:
        self.handler, self.partitions, self.topics_exist = handler, partitions, topics_exist
        self.signer = signer            # signs the handler's verdicts, as the worker does
        self.actions: list[Appended] = []
        self.verdicts: dict[int, list[Received]] = {p: [] for p in range(partitions)}
        self.running = True
        self.ack = True                                  # False: hold records unacknowledged
        self.refuse_sends: TransportError | None = None  # raised by every send while set
        self.poll_error: TransportError | None = None    # raised once by the next poll
        self.opened = {"consumer": 0, "producer": 0}
        self._cond = threading.Condition()
        self._held: list[tuple[_Producer, int, bytes, bytes, OnDelivery]] = []
        self._listeners: set[Callable[[], None]] = set()

    # ------------------------------------------------------------------ test controls
    def stop(self) -> None:
        """An outage: sessions cannot open, sends are held unacknowledged."""
        with self._cond:
            self.running = False

    def start(self) -> None:
        """Back up: held records of producers that were not fenced are delivered now."""
        with self._cond:
            self.running = True
            held, self._held = self._held, []
        for producer, partition, key, value, on_delivery in held:
            if not producer.fenced:
                self._deliver(partition, key, value, on_delivery)

    def reply(self, partition: int, value: bytes | None,
              headers: tuple[tuple[str, bytes], ...] | None = None) -> None:
        """Append a raw record to a verdict partition (as the worker would).

        Without explicit `headers`, a broker with a signer signs the value.
        """
        if headers is None:
            headers = sign_headers(self.signer, value) if self.signer and value else ()
        with self._cond:
            self.verdicts[partition].append((value, headers))
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def held(self) -> int:
        with self._cond:
            return len(self._held)

    # ------------------------------------------------------------------ sessions
    def _require_running(self, what: str) -> None:
        if not self.running:
            raise TransportError(f"mock broker is down ({what})")

    def _open(self, what: str) -> None:
        with self._cond:
            self._require_running(f"cannot open a {what}")
            self.opened[what] += 1

    def _produce(self, producer: _Producer, partition: int, key: bytes, value: bytes,
                 on_delivery: OnDelivery) -> None:
        if producer.fenced:
            raise TransportError("the producer was fenced")
        if self.refuse_sends is not None:
            raise self.refuse_sends
        with self._cond:
            if not (self.running and self.ack):
                self._held.append((producer, partition, key, value, on_delivery))
                return
        self._deliver(partition, key, value, on_delivery)

    def _fence(self, producer: _Producer) -> None:
        with self._cond:
            producer.fenced = True
            dropped = [h for h in self._held if h[0] is producer]
            self._held = [h for h in self._held if h[0] is not producer]
        for *_, on_delivery in dropped:
            on_delivery(TransportError("producer fenced: record dropped"))

    def _deliver(self, partition: int, key: bytes, value: bytes, on_delivery: OnDelivery) -> None:
        with self._cond:
            self.actions.append(Appended(partition, key, value, time.time()))
        on_delivery(None)
        if self.handler is not None:
            answer = self.handler(decode_request(value))
            if answer is not None:
                self.reply(partition, encode(answer) if isinstance(answer, Verdict) else answer)

    def _counts(self, topics: Sequence[str]) -> Mapping[str, int]:
        self._require_running("metadata")
        return {t: self.partitions if self.topics_exist else 0 for t in topics}

    def _take(self, positions: dict[int, int]) -> list[Received]:
        """Records past `positions` (advanced); raises a pending poll error. Hold `_cond`."""
        if self.poll_error is not None:
            error, self.poll_error = self.poll_error, None
            raise error
        out: list[Received] = []
        if self.running:
            for partition, position in positions.items():
                records = self.verdicts[partition][position:]
                positions[partition] = position + len(records)
                out.extend(records)
        return out

    def _assign(self, positions: dict[int, int], partitions: Collection[int]) -> dict[int, str]:
        with self._cond:
            if not self.running:
                return dict.fromkeys(partitions, "mock broker is down")
            for p in partitions:
                positions.setdefault(p, len(self.verdicts[p]))
        return {}


class _Producer(AsyncProducer):
    """A producer session: its broker, its loop, and whether it was fenced."""

    def __init__(self, broker: MockBroker) -> None:
        self.broker, self.fenced = broker, False
        self.loop = asyncio.get_running_loop()

    async def send(self, partition: int, key: bytes, value: bytes,
                   on_delivery: OnDelivery) -> None:
        self.broker._produce(self, partition, key, value, self._on_loop(on_delivery))

    async def prepare(self) -> None:
        self.broker._counts(())

    def fence(self) -> None:
        self.broker._fence(self)

    def _on_loop(self, on_delivery: OnDelivery) -> OnDelivery:
        """`on_delivery`, called on this session's loop (inline when already there)."""
        def report(error: TransportError | None) -> None:
            try:
                here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is self.loop:
                on_delivery(error)
                return
            try:
                self.loop.call_soon_threadsafe(on_delivery, error)
            except RuntimeError:          # its loop is closed: nobody waits for it any more
                pass

        return report


class _Consumer(AsyncConsumer):
    def __init__(self, broker: MockBroker) -> None:
        self.broker = broker
        self.positions: dict[int, int] = {}

    async def partition_counts(self, topics: Sequence[str]) -> Mapping[str, int]:
        return self.broker._counts(topics)

    async def assign(self, partitions: Collection[int]) -> Mapping[int, str]:
        return self.broker._assign(self.positions, partitions)

    async def poll(self, timeout: float) -> list[Received]:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(arrived.set)

        end = loop.time() + timeout
        self.broker._listeners.add(listener)
        try:
            while True:
                with self.broker._cond:
                    out = self.broker._take(self.positions)
                left = end - loop.time()
                if out or left <= 0:
                    return out
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self.broker._listeners.discard(listener)

    async def close(self) -> None:
        pass


class MockTransport(AsyncTransport):
    """`AsyncTransport` over a `MockBroker` (made from `handler` unless `broker` is given)."""

    def __init__(self, handler: Handler | None = None, *, partitions: int = 2,
                 broker: MockBroker | None = None) -> None:
        self.broker = broker or MockBroker(handler, partitions=partitions)

    async def open_consumer(self) -> AsyncConsumer:
        self.broker._open("consumer")
        return _Consumer(self.broker)

    async def open_producer(self) -> AsyncProducer:
        self.broker._open("producer")
        return _Producer(self.broker)


#: The same transport under the name the asyncio gate's tests knew it by.
AsyncMockTransport = MockTransport
