"""The words the protocol core and its drivers exchange.

A driver asks the core what to do next and gets a `Step` (set-up `Work`), a
`Send` (an admitted check: where and through which producer) or a `Deny`; each
check travels as a `Pending`, which the core resolves and the driver wakes.
Time comes from a `Clock`, so that tests can drive the core with a fake one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from holdgate.client.verify import Failure
from holdgate.events import ActionRequest, Verdict, action_digest

__all__ = ["Clock", "SystemClock", "Work", "Step", "Send", "Deny", "Pending"]


class Clock(Protocol):
    """Where the core reads time: monotonic for waiting, wall clock for the wire."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    """The real clocks."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


class Work(Enum):
    """Set-up work the driver performs when `GateCore.next_work` asks for it."""

    CONNECT = "open the consumer"
    OPEN_PRODUCER = "open the producer"
    DISCOVER = "read the topics' partition counts"
    PREPARE = "load the producer's metadata of the actions topic"
    ASSIGN = "assign verdict partitions at their end"


@dataclass(frozen=True, slots=True)
class Step:
    """Set-up work to do now; `partitions` for ASSIGN."""

    work: Work
    partitions: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Send:
    """Admitted: publish to `partition` through `producer` (an opaque handle)."""

    partition: int
    producer: Any


@dataclass(frozen=True, slots=True)
class Deny:
    """Refused before sending: return `verdict` (a local UNAVAILABLE deny)."""

    verdict: Verdict


class Pending:
    """One check: its request and bytes, its deadline, and what became of it.

    `waker` belongs to the driver (an Event or a Future); the core only carries it.
    """

    __slots__ = ("request", "value", "key", "digest", "timeout", "deadline", "partition",
                 "producer", "acked", "result", "record", "waker", "approval_wait", "held",
                 "sent_at")

    def __init__(self, request: ActionRequest, value: bytes, timeout: float,
                 deadline: float, approval_wait: float = 0.0) -> None:
        self.request, self.value, self.timeout, self.deadline = request, value, timeout, deadline
        self.key = request.agent_id.encode()
        self.digest = action_digest(value)
        self.partition: int | None = None
        self.producer: Any = None
        self.acked = False
        self.result: Verdict | Failure | None = None
        #: The verdict record (value, headers) that resolved it, for `check(with_proof=True)`.
        self.record: tuple[bytes | None, tuple[tuple[str, bytes], ...]] | None = None
        self.waker: Any = None
        #: Seconds a pending verdict may wait on for an approval (0: return it at once).
        self.approval_wait = approval_wait
        #: The verified pending verdict (and its record) while waiting for the approval.
        self.held: tuple[Verdict, tuple[bytes | None, tuple[tuple[str, bytes], ...]]] | None \
            = None
        #: Monotonic time it was admitted for sending (the hold-latency histogram's start).
        self.sent_at: float | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id
