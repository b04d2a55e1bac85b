"""The seam between the protocol core and a Kafka client library.

A gate needs very little from Kafka:

* a **consumer** of the verdicts topic, read_committed, manually assigned to
  the verdict partitions of the gate's agents, each new one positioned at its
  end *before* any action of it is sent;
* a **producer** of the actions topic whose records can be *fenced*: dropped
  before delivery, so that an action whose check has already returned is never
  delivered afterwards;
* opening either one again after it broke (a broker restart, a fatal
  idempotent-producer state).

`AsyncTransport` spells that out, in asyncio, for `AsyncGate`; the blocking
`Gate` runs an `AsyncGate` on an event loop of its own, so it takes the same
transports (the blocking flavour of this seam, over kafka-python, is gone:
its network thread cost a thread hop per fetch, see `holdgate.client.sync`).
A gate holds a producer and a consumer *handle*; a fenced or broken handle is
thrown away and a new one opened, so its identity is the "generation" the
core uses to tell a current failure from a stale one.  The Kafka adapter lives in
`holdgate.client.kafka_async`; an in-memory fake for tests lives in
`holdgate.client.mock`.

`ClientTimeouts` derives the Kafka clients' own timeouts from the gate's, in
one place, with the reasons.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from holdgate.errors import GateError

#: One verdict record as the gate sees it: its value and its headers (the signature).
Received = tuple["bytes | None", "tuple[tuple[str, bytes], ...]"]

__all__ = ["Received", "TransportError", "OnDelivery", "AsyncProducer", "AsyncConsumer",
           "AsyncTransport", "ClientTimeouts"]


class TransportError(GateError):
    """A Kafka client failed.  `fatal`: the client cannot be trusted again and is replaced.

    Not fatal: the failure belongs to one record (e.g. it is too large); the
    check is denied but the producer keeps serving others.
    """

    def __init__(self, message: str, *, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


#: Called once per sent record: None when the broker acknowledged it, else why not.
#: Called on the gate's event loop (a done callback of the client's future) or inline.
OnDelivery = Callable[[TransportError | None], None]


class AsyncProducer(ABC):
    """One producer session of the actions topic (asyncio flavour)."""

    @abstractmethod
    async def send(self, partition: int, key: bytes, value: bytes,
                   on_delivery: OnDelivery) -> None:
        """Queue one record (awaits only a full buffer); raise `TransportError` if refused."""

    @abstractmethod
    async def prepare(self) -> None:
        """Load the actions topic's metadata, so that `send` never waits for it."""

    @abstractmethod
    def fence(self) -> None:
        """Drop every record not yet acknowledged and close; idempotent, returns promptly.

        Synchronous, so that a check can fence before it returns: after it
        returns no record queued here may reach the broker later (a request
        already on the wire is the one thing no client can recall; the worker's
        deadline check is the backstop for that).  Closing the connections may
        go on in the background (`wait_closed`).
        """

    async def wait_closed(self) -> None:  # noqa: B027 - an optional hook
        """Await the clean-up `fence()` started in the background (closing connections)."""


class AsyncConsumer(ABC):
    """One consumer session of the verdicts topic (asyncio flavour)."""

    @abstractmethod
    async def partition_counts(self, topics: Sequence[str]) -> Mapping[str, int]:
        """Partition count per topic; 0 for a topic that does not exist."""

    @abstractmethod
    async def assign(self, partitions: Collection[int]) -> Mapping[int, str]:
        """Add `partitions` at their end offset, keeping the position of those already read.

        Returns an error message per partition whose position could not be
        resolved; every other one is positioned when this returns.  The caller
        bounds the time.
        """

    @abstractmethod
    async def poll(self, timeout: float) -> list[Received]:
        """Verdict records (value, headers), returning as soon as any arrive (or at `timeout`)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the session; never raises."""


class AsyncTransport(ABC):
    """Opens producer and consumer sessions for an `AsyncGate`; the caller bounds the time."""

    @abstractmethod
    async def open_consumer(self) -> AsyncConsumer:
        """A connected consumer with an empty assignment; raise on failure."""

    @abstractmethod
    async def open_producer(self) -> AsyncProducer:
        """A connected producer (not yet prepared); raise on failure."""


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """The Kafka clients' timeouts, derived from the gate's own.

    The contract is that an action is never delivered after its check has
    returned.  The first line of defence is the gate itself: a check that
    returns while its action is still unacknowledged fences the producer
    (`AsyncProducer.fence`), whatever its timeout.  This bound is the second
    line, so that a record cannot sit in a client for long on its own:

    ``request_ms`` (aiokafka ``request_timeout_ms``) = the gate's
        ``default_timeout``, at least 1 s.  In aiokafka it bounds each produce
        request, ``send()``'s metadata wait and the accumulator's batch expiry.
        That expiry only applies to batches without a known leader when the
        producer is idempotent (as the gate's is: no duplicate actions on
        retry); the fence covers the rest.  A record older than the time a
        check waits by default belongs to a check that has (by default) given up.
    """

    request_ms: int

    @classmethod
    def for_gate(cls, *, default_timeout: float) -> ClientTimeouts:
        return cls(request_ms=max(1000, math.ceil(default_timeout * 1000)))
