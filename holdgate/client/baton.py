"""Who reads the consumer in the blocking gate: one thread at a time, a waiting check first.

kafka-python's consumer is not thread-safe, so one thread at a time holds the
baton and polls.  Rather than a dedicated reader thread that wakes the check a
verdict belongs to (a thread hop on every check), the reader is a waiting
check whenever there is one — leader/followers: the leader polls and hands
each verdict to its check; when its own verdict has come it gives the baton
back, and the baton is offered to one follower, which takes it or passes it on.
A lone check therefore reads its own verdict.

The maintenance thread takes the baton too, for set-up (`hold`, which makes
leaders yield between two polls) and to drain the consumer when no check is
waiting (`take_idle`).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from holdgate.client.steps import Pending

__all__ = ["Baton"]


class Baton:
    """The right to poll the consumer; `Pending.waker` must be a `threading.Event`."""

    def __init__(self) -> None:
        self._baton = threading.Lock()
        self._guard = threading.Lock()            # guards the two fields below
        self._waiting: dict[str, Pending] = {}    # checks waiting for their verdict
        self._offered: Pending | None = None
        self.wanted = False                       # set-up waits for it: leaders yield

    def join(self, p: Pending) -> None:
        """`p` waits for its verdict from now on (register before sending)."""
        with self._guard:
            self._waiting[p.request_id] = p

    def leave(self, p: Pending) -> None:
        """`p` stops waiting; an offer it did not use goes to another check."""
        with self._guard:
            self._waiting.pop(p.request_id, None)
            if self._offered is p:
                self._offer()

    def try_take(self) -> bool:
        """Become the leader if nobody reads and set-up is not waiting for the consumer."""
        if self.wanted or not self._baton.acquire(blocking=False):
            return False
        with self._guard:
            self._offered = None
        return True

    def take_idle(self) -> bool:
        """Take it only if no check is waiting (the maintenance thread's drain)."""
        return not self._waiting and self._baton.acquire(blocking=False)

    def give_back(self) -> None:
        self._baton.release()
        with self._guard:
            self._offer()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take it for set-up work: leaders yield between two polls."""
        self.wanted = True
        self._baton.acquire()
        self.wanted = False
        try:
            yield
        finally:
            self.give_back()

    def _offer(self) -> None:
        """Wake one waiting check to take the baton (the others keep sleeping)."""
        self._offered = next((w for w in self._waiting.values() if w.result is None), None)
        if self._offered is not None:
            self._offered.waker.set()
