"""A private event loop on a daemon thread, entered from blocking code: one hop in, one out.

`Gate` runs its `AsyncGate` on a `LoopThread`.  A blocking caller hands a
coroutine over with ``call_soon_threadsafe`` (the hop in) and waits on a lock
that the task releases in its last step (the hop out); nothing polls.  Beyond
``asyncio.run_coroutine_threadsafe`` (which answers through a done callback,
one loop iteration later), a `Call` tells its caller when the loop is gone for
good: when the thread ends, every call still registered (scheduled too late to
run, or stuck in a task the wind-down dropped) is released with
`CancelledError`, so a caller never waits on a loop that no longer runs.  No
code runs on that loop any more, so nothing it held can be sent afterwards.

The thread is a daemon: a `LoopThread` left running at interpreter exit does
not hold the exit.  Nothing here refers to the object that owns it, so a
finalizer of that owner can stop it.  Not fork-safe: in a child process the
thread does not exist (`alive` is False there).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Callable, Coroutine, Generic, TypeVar

__all__ = ["LoopThread", "Call"]

log = logging.getLogger("holdgate.client")
T = TypeVar("T")

#: Seconds the wind-down gives the tasks it cancels to finish.
WIND_DOWN = 1.0


class Call(Generic[T]):
    """One coroutine run on the loop for a blocking caller."""

    __slots__ = ("make", "lock", "task", "result", "error", "cancelled", "ended")

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self.make = make
        self.lock = threading.Lock()
        self.lock.acquire()
        self.task: asyncio.Task[None] | None = None
        self.result: T | None = None
        self.error: BaseException | None = None   # CancelledError: cancelled or loop gone
        self.cancelled = self.ended = False

    # On the loop thread:
    def start(self) -> None:
        if self.cancelled:
            self.end(asyncio.CancelledError())
        else:
            self.task = asyncio.ensure_future(self._run())
            self.task.add_done_callback(self._done)

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        # The caller is released from within the task's last step, not from a done
        # callback one loop iteration later.
        try:
            self.result = await self.make()
        except BaseException as exc:
            self.end(exc)
            if not isinstance(exc, Exception):
                raise                        # cancelled: the task ends cancelled
        else:
            self.end(None)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.end(asyncio.CancelledError())   # a no-op unless cancelled before it started

    def end(self, error: BaseException | None) -> None:
        """Release the caller, once: the coroutine is over, or the loop is gone for good."""
        if not self.ended:
            self.ended, self.error = True, error
            self.lock.release()

    # On the caller's thread:
    def wait(self, seconds: float) -> bool:
        """True once the call has ended (`result` or `error` is set); False at `seconds`."""
        if self.lock.acquire(timeout=max(0.0, seconds)):
            self.lock.release()              # so that a second wait returns at once too
            return True
        return False


class LoopThread:
    """An event loop running on its own daemon thread, started at construction."""

    def __init__(self, name: str) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._calls: set[Call[Any]] = set()  # waited on by callers: released if the loop ends
        self.thread = threading.Thread(target=_run, args=(self.loop, self._calls), name=name,
                                       daemon=True)
        self.thread.start()

    @property
    def forked(self) -> bool:
        """This is a child process, forked after the loop thread started: not ours."""
        return os.getpid() != self.pid

    @property
    def alive(self) -> bool:
        """The loop thread runs, in this process (False in a forked child)."""
        return not self.forked and self.thread.is_alive()

    @property
    def on_loop(self) -> bool:
        """The caller is the loop thread itself (a blocking wait there would deadlock)."""
        return threading.current_thread() is self.thread

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> Call[T]:
        """Start `make()` on the loop; raises RuntimeError if the loop is closed.

        The caller waits with `Call.wait` and must `discard` the call afterwards.
        """
        call: Call[T] = Call(make)
        self._calls.add(call)
        try:
            self.loop.call_soon_threadsafe(call.start)
        except BaseException:
            self._calls.discard(call)
            raise
        return call

    def discard(self, call: Call[Any]) -> None:
        self._calls.discard(call)

    def cancel(self, call: Call[Any]) -> None:
        """Cancel `call` on the loop (its `wait` ends once the task has handled it)."""
        try:
            self.loop.call_soon_threadsafe(call.cancel)
        except RuntimeError:                 # the loop is closed: the wind-down released it
            pass

    def submit(self, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run `coro` on the loop without waiting for it; False if the loop is closed."""
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            return False
        return True

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for its result; raises TimeoutError at `timeout`.

        Raises RuntimeError if the loop is closed.
        """
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            raise
        return future.result(timeout)

    def stop(self) -> None:
        """Stop the loop (the thread then winds it down and ends); does not wait."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass


def _run(loop: asyncio.AbstractEventLoop, calls: set[Call[Any]]) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:                                 # what is left gets cancelled and a moment to end
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=WIND_DOWN))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            log.debug("holdgate: winding the gate's event loop down failed", exc_info=True)
        finally:
            loop.close()
            for call in list(calls):         # nothing runs on this loop any more
                call.end(asyncio.CancelledError())
