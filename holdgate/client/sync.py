"""The blocking gate: an `AsyncGate` on a private event-loop thread, behind a blocking API.

Why a facade and not a second driver: the protocol (`holdgate.client.core`) is
driven once, by `AsyncGate` over aiokafka.  The blocking gate used to drive it
again with threads over kafka-python, whose own network thread put a thread
hop on every fetch and every record set (6.7 ms a check against a raw aiokafka
client's 2.6 ms on the same echo).  Now each `Gate` owns one daemon thread
(``holdgate-gate``, a `LoopThread`) running one event loop with one
`AsyncGate` on it, and nothing else.  A check is built on the calling thread
(so caller bugs raise there: `ValidationError`, `ConfigError`), crosses into
the loop once and back once: no polling, no sleeps on the verdict path.

Threads and loops: any number of threads may share one gate, and `check()` may
be called from code running an event loop of its own, on any thread: the
gate's loop is private (the calling thread blocks, as in any blocking call;
async code should prefer `AsyncGate`).  Only the gate's own loop may not call
it (a transport's callback, say): it would wait on itself, so it is denied.

Never delivered after `check()` returned: the facade returns the `AsyncGate`
check's own verdict, so only once that check has returned, having fenced its
producer if it gave up with the action unacknowledged.  A caller interrupted
while waiting (KeyboardInterrupt) cancels the check on the loop and waits up
to `LOOP_GRACE` for that cancellation's fence before re-raising.

A wedged or dead loop: the `AsyncGate` check ends by its deadline (its
timeout, plus ``wait_for_approval``); the facade waits that long plus
`LOOP_GRACE`.  If the loop has not answered by then, the facade closes the
gate: it marks it closed (later checks are denied at once, without the loop),
schedules the close on the loop, whose first, synchronous act fences the
producer (every unacknowledged action dropped) and denies every waiting check,
and returns an UNAVAILABLE deny.  What no client can undo is a request the loop
had already written to a socket; the request's deadline is the backstop there
(the worker denies it EXPIRED and commits no allow after it).  If the loop
thread ends, every check still waiting on it is released and denied.  Denies
made without the loop are counted in `stats`/`metrics` once the loop is gone.

Lifecycle: `close()` fences, denies waiting checks, stops the Kafka clients,
stops the loop and joins its thread, within `timeout`.  A gate garbage
collected while open is closed the same way in the background (a weakref
finalizer); one left open at interpreter exit dies with the process (a daemon
thread: nothing waits for it).

Fork: a gate is not fork-safe (the kafka-python one was not either).  A child
inherits the gate but not its loop thread, and shares its parent's sockets:
there every check is denied UNAVAILABLE and `close()` touches nothing.  Make a
new `Gate` in the child.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
import weakref
from typing import (TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence, TypeVar,
                    overload)

from holdgate.client.loop import LoopThread
from holdgate.client.metrics import GateMetrics
from holdgate.client.proof import Checked, checked
from holdgate.client.routing import GuardSpec
from holdgate.client.steps import Deny, Pending
from holdgate.client.transport import AsyncTransport
from holdgate.client.verify import local_deny
from holdgate.errors import ActionDenied
from holdgate.events import Resource, Verdict
from holdgate.keys import TrustStore
from holdgate.reasons import UNAVAILABLE
from holdgate.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.client.aio import AsyncGate

__all__ = ["Gate", "LOOP_GRACE"]

log = logging.getLogger("holdgate.client")
F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

#: Seconds the facade waits past a check's own end before it deems the loop wedged:
#: a healthy loop answers within milliseconds of the deadline, so this is far beyond
#: any scheduling delay, and it bounds how long past its timeout a check can block.
LOOP_GRACE = 1.0
CLOSE_TIMEOUT = 5.0      # a close the facade starts on its own (wedged loop, collected gate)
CLOSED = "gate is closed"


class Gate:
    """Synchronous pre-execution gate; share one instance across threads and agents.

    The keywords are `AsyncGate`'s: `poll_interval` bounds one consumer poll of
    its reader task (verdicts are read the moment they arrive); `transport`
    replaces Kafka with an `AsyncTransport` (see `holdgate.client.mock`).
    """

    def __init__(self, *, bootstrap: str | None = None, agent_id: str | None = None,
                 settings: Settings | None = None,
                 trusted_keys: TrustStore | str | Sequence[str] | None = None,
                 default_timeout: float = 5.0, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05, linger_ms: int = 1,
                 transport: AsyncTransport | None = None) -> None:
        from holdgate.client.aio import AsyncGate   # aiokafka loads with the first gate

        self._gate = AsyncGate(bootstrap=bootstrap, agent_id=agent_id, settings=settings,
                               trusted_keys=trusted_keys, default_timeout=default_timeout,
                               connect_timeout=connect_timeout, poll_interval=poll_interval,
                               linger_ms=linger_ms, transport=transport)
        self._core = self._gate._core  # the loop owns it; callers use begin(), which reads config
        self._core.name = "Gate"       # for its "pass agent_id= to Gate()" message
        self._lock = threading.Lock()  # guards the two below, and the core once the loop is gone
        self._closed: str | None = None   # why checks are denied without entering the loop
        self._closing = False
        self._runner = LoopThread("holdgate-gate")
        self._runner.submit(self._gate.start())       # connect and assign now
        # Collected while open: close in the background (the arguments don't refer to self).
        self._finalizer = weakref.finalize(self, _abandoned, self._runner, self._gate)
        self._finalizer.atexit = False

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
        Returns by the timeout (plus `wait_for_approval`), or at worst
        `LOOP_GRACE` later (see the module docstring).  Raises only for caller
        bugs: `ValidationError` for an action that breaks the wire schema,
        `ConfigError` when no agent id is known.
        """
        p = self._core.begin(action=action, resource=resource, context=context,
                             timeout=timeout, agent_id=agent_id,
                             approval_wait=wait_for_approval)
        verdict = self._settle(p)
        return checked(p, verdict) if with_proof else verdict

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
        return self._read(lambda: self._core.assigned_partitions)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sent, verdicts, ignored (late/foreign), timeouts, unavailable, fences."""
        return self._read(lambda: self._core.stats)

    @property
    def metrics(self) -> GateMetrics:
        """Checks by outcome, local denies by code, hold latency; see `holdgate.client.metrics`."""
        return self._read(lambda: self._core.metrics)

    def close(self, timeout: float = 5.0) -> None:
        """Fence the producer, deny every waiting check (UNAVAILABLE), stop and join the loop."""
        with self._lock:
            if self._closing:
                return
            self._closing, self._closed = True, self._closed or CLOSED
        self._finalizer.detach()
        runner = self._runner
        if runner.on_loop:                  # from the loop itself: it cannot wait on itself
            runner.submit(_stop(self._gate, timeout, CLOSED))
            return
        if runner.alive:                    # else: ended already, or a forked child
            end = time.monotonic() + timeout
            try:
                runner.run(_stop(self._gate, timeout, CLOSED), timeout)
            except Exception:
                log.warning("holdgate gate: the close did not finish within %gs", timeout)
                runner.stop()
            runner.thread.join(max(0.0, end - time.monotonic()))
        if self._owns_core():               # from now on the denies made here are counted
            with self._lock:
                if not self._core.closed:
                    self._core.close(CLOSED)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one check
    def _settle(self, p: Pending) -> Verdict:
        """Run `p` on the loop and wait for its verdict, bounded by its deadline + grace."""
        refused = self._refusal()
        if refused is not None:
            return self._deny(p, refused)
        started = time.monotonic()
        until = p.deadline + p.approval_wait + LOOP_GRACE   # read before the loop owns `p`
        try:
            call = self._runner.call(functools.partial(self._gate._check, p))
        except RuntimeError:                # the loop closed in between
            return self._deny(p, self._refusal() or CLOSED)
        try:
            finished = call.wait(until - time.monotonic())
        except BaseException:               # interrupted: never deliver after we leave
            self._runner.cancel(call)
            if not call.wait(LOOP_GRACE):
                self._close_unresponsive("an interrupted check was not cancelled in time")
            raise
        finally:
            self._runner.discard(call)
        if not finished:
            message = (f"the gate's event loop did not answer within "
                       f"{time.monotonic() - started:.1f}s (the check's timeout plus "
                       f"{LOOP_GRACE:g}s); the gate was closed")
            self._close_unresponsive(message)
            return local_deny(p.request, code=UNAVAILABLE, message=message, digest=p.digest)
        if call.error is None and call.result is not None:
            return call.result
        if not isinstance(call.error, asyncio.CancelledError):  # a bug: fail closed, loudly
            log.error("holdgate gate: a check failed on the loop", exc_info=call.error)
        return self._deny(p, self._refusal() or f"the check failed: {call.error!r}")

    def _refusal(self) -> str | None:
        """Why a check cannot enter the loop at all, or None."""
        runner = self._runner
        if runner.forked:
            return "this gate was made before a fork: make a new Gate in this process"
        if not runner.alive:
            return self._closed or "the gate's event-loop thread is not running"
        if runner.on_loop:
            return "check() was called on the gate's own event loop: it would wait on itself"
        return self._closed

    def _deny(self, p: Pending, message: str) -> Verdict:
        """A deny made without the loop; counted by the core once the loop is gone."""
        if self._owns_core():
            with self._lock:
                if self._core.closed:
                    admission = self._core.admit(p)   # a counted "gate is closed" deny
                    assert isinstance(admission, Deny)
                    return admission.verdict
        return local_deny(p.request, code=UNAVAILABLE, message=message, digest=p.digest)

    def _owns_core(self) -> bool:
        """The loop thread has ended in this process: nothing else touches the core."""
        return not self._runner.forked and not self._runner.thread.is_alive()

    def _close_unresponsive(self, message: str) -> None:
        log.error("holdgate gate: %s", message)
        with self._lock:
            self._closed = self._closed or message
        self._finalizer.detach()
        self._runner.submit(_stop(self._gate, CLOSE_TIMEOUT, message))  # fences first

    def _read(self, view: Callable[[], R]) -> R:
        """Read the core on the loop, which owns it (directly once the loop is gone)."""
        runner = self._runner
        if runner.alive and not runner.on_loop:
            try:
                return runner.run(_view(view), LOOP_GRACE)
            except Exception:               # closed meanwhile, or wedged: read it here
                pass
        if runner.forked or runner.on_loop:
            return view()
        with self._lock:
            return view()


# Module functions, not methods: what the loop and the finalizer hold must not keep a
# Gate alive.
async def _view(view: Callable[[], R]) -> R:
    return view()


async def _stop(gate: AsyncGate, timeout: float, message: str) -> None:
    """On the loop: fence and deny at once, close the clients (bounded), stop the loop."""
    try:
        gate._shut(message)                 # synchronous: nothing unacknowledged goes out
        await asyncio.wait_for(gate.close(), timeout)
    except BaseException:
        log.debug("holdgate gate: closing on the loop failed", exc_info=True)
    finally:
        asyncio.get_running_loop().stop()


def _abandoned(runner: LoopThread, gate: AsyncGate) -> None:
    """The finalizer of a gate collected while open: close it in the background."""
    if runner.alive:
        runner.submit(_stop(gate, CLOSE_TIMEOUT, CLOSED))
