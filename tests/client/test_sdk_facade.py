"""The blocking Gate as a facade over its own event-loop thread: threads, loops, lifecycle.

Over the in-memory transport: many threads on one gate, calls from code that runs
an event loop, close() joining the thread, a collected or still-open gate, the
timeout fence, a wedged loop, an interrupted caller and a forked child.
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_sdk_mock import SIGNER, TICKET, gate, timed_check, wait_until, worker

from holdgate.client.mock import MockBroker
from holdgate.client.sync import LOOP_GRACE
from holdgate.events import ActionRequest, Verdict, decode_request
from holdgate.reasons import NO_PERMIT, TIMEOUT, UNAVAILABLE


def delivered_ids(broker: MockBroker) -> set[str]:
    return {decode_request(a.value).request_id for a in broker.actions}


def test_many_threads_share_one_loop_and_one_client() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    with gate(broker) as g:
        assert g.check(action="tickets.read", resource=TICKET).allowed
        before = threading.active_count()
        barrier = threading.Barrier(32)

        def lane(k: int) -> list[tuple[int, bool]]:
            barrier.wait()
            out = []
            for i in range(20):
                n = k * 20 + i
                v = g.check(action="tickets.read" if n % 3 else "tickets.delete",
                            resource={"type": "Ticket", "id": f"t-{n}"})
                out.append((n, v.allowed))
            return out

        with ThreadPoolExecutor(32) as pool:
            results = [r for rs in pool.map(lane, range(32)) for r in rs]
            during = threading.active_count()
        assert sorted(results) == [(n, bool(n % 3)) for n in range(640)]
        assert during <= before + 32                     # the pool's threads, none per check
        stats = g.stats
        assert stats["sent"] == stats["verdicts"] == 641 and stats["timeouts"] == 0
        assert [t.name for t in threading.enumerate()].count("holdgate-gate") >= 1
    assert broker.opened == {"consumer": 1, "producer": 1}


def test_check_from_code_that_runs_an_event_loop() -> None:
    """The gate's loop is private: a coroutine (on this thread or another) may call check()."""
    broker = MockBroker(worker, signer=SIGNER)
    with gate(broker) as g:
        async def blocking_call_inside_a_loop() -> Verdict:
            asyncio.get_running_loop()                   # there is one, on this thread
            return g.check(action="tickets.read", resource=TICKET)

        assert asyncio.run(blocking_call_inside_a_loop()).allowed

        async def from_worker_threads() -> list[Verdict]:
            return await asyncio.gather(*(asyncio.to_thread(
                g.check, action="tickets.delete", resource=TICKET) for _ in range(20)))

        assert all(v.codes == [NO_PERMIT] for v in asyncio.run(from_worker_threads()))
        on_other_thread: list[Verdict] = []
        t = threading.Thread(target=lambda: on_other_thread.append(
            asyncio.run(blocking_call_inside_a_loop())))
        t.start()
        t.join(5)
        assert on_other_thread and on_other_thread[0].allowed


def test_a_check_on_the_gates_own_loop_is_denied_not_deadlocked() -> None:
    inner: list[tuple[Verdict, float]] = []
    gates: list[Any] = []

    def handler(request: ActionRequest) -> Verdict:   # runs on the gate's loop (delivery)
        if request.action == "tickets.read" and not inner:
            started = time.monotonic()
            inner.append((gates[0].check(action="tickets.delete", resource=TICKET),
                          time.monotonic() - started))
        return worker(request)

    with gate(MockBroker(handler, signer=SIGNER)) as g:
        gates.append(g)
        assert g.check(action="tickets.read", resource=TICKET).allowed
    [(verdict, elapsed)] = inner
    assert verdict.codes == [UNAVAILABLE] and "own event loop" in verdict.reasons[0].message
    assert elapsed < 0.1


def test_timeout_denies_and_fences_before_returning() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    with gate(broker) as g:
        assert g.check(action="tickets.read", resource=TICKET).allowed
        broker.ack = False                               # accepted, never acknowledged
        late = timed_check(g, timeout=0.3)
        assert late.verdict.codes == [TIMEOUT] and 0.29 <= late.elapsed < 0.3 + 0.2
        assert broker.held() == 0 and g.stats["fences"] == 1 and g.stats["timeouts"] == 1
        broker.ack = True
        broker.start()                                   # nothing held is left to deliver
        wait_until(lambda: g.check(action="tickets.read", resource=TICKET,
                                   timeout=0.5).allowed)
    assert late.verdict.request_id not in delivered_ids(broker)


def test_close_stops_and_joins_the_loop_thread() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    g = gate(broker)
    thread = g._runner.thread
    assert g.check(action="tickets.read", resource=TICKET).allowed
    assert thread.is_alive() and thread.daemon and thread.name == "holdgate-gate"
    started = time.monotonic()
    g.close()
    assert not thread.is_alive() and time.monotonic() - started < 2.0
    assert g._runner.loop.is_closed()
    denied = timed_check(g)
    assert denied.verdict.codes == [UNAVAILABLE] and denied.elapsed < 0.1
    assert "closed" in denied.verdict.reasons[0].message
    assert g.stats["unavailable"] == 1 and g.metrics.checks["deny"] == 1   # still counted
    started = time.monotonic()
    g.close()                                            # idempotent
    assert time.monotonic() - started < 0.1


def test_a_stopped_loop_denies_at_once() -> None:
    g = gate(MockBroker(worker, signer=SIGNER))
    assert g.check(action="tickets.read", resource=TICKET).allowed
    g._runner.stop()                                     # as if the loop had died
    g._runner.thread.join(5)
    denied = timed_check(g, timeout=5.0)
    assert denied.verdict.codes == [UNAVAILABLE] and denied.elapsed < 0.1
    assert "not running" in denied.verdict.reasons[0].message
    g.close()


def test_a_collected_gate_stops_its_loop_thread() -> None:
    g = gate(MockBroker(worker, signer=SIGNER))
    assert g.check(action="tickets.read", resource=TICKET).allowed
    thread = g._runner.thread
    del g
    gc.collect()
    wait_until(lambda: not thread.is_alive())


def test_an_open_gate_with_a_waiting_check_does_not_hold_the_exit() -> None:
    code = """
import threading, time
from holdgate.client import Gate
from holdgate.client.mock import MockBroker, MockTransport
from holdgate.keys import Signer, TrustStore
from holdgate.settings import Settings
broker = MockBroker(None)                       # silent: checks wait for their timeout
gate = Gate(agent_id="bot", transport=MockTransport(broker=broker),
            trusted_keys=TrustStore([Signer.generate().public_key]),
            settings=Settings(bootstrap="mock:9092"))
threading.Thread(target=gate.check, daemon=True, kwargs=dict(
    action="tickets.read", resource={"type": "Ticket", "id": "t"}, timeout=60)).start()
while not broker.actions:
    time.sleep(0.01)
print("leaving", flush=True)
"""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0 and done.stdout == "leaving\n", done.stderr
    assert elapsed < 20, f"exit took {elapsed:.1f}s"     # the interpreter's own start-up


def test_a_wedged_loop_closes_the_gate_fences_and_denies_within_the_grace() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    g = gate(broker)
    assert g.check(action="tickets.read", resource=TICKET).allowed
    broker.ack = False
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(timed_check, g, timeout=0.5)
        wait_until(lambda: broker.held() == 1)            # sent, unacknowledged
        g._runner.loop.call_soon_threadsafe(time.sleep, 0.5 + LOOP_GRACE + 1.0)  # stalls
        result = waiting.result(10)
    assert result.verdict.codes == [UNAVAILABLE]
    assert "did not answer" in result.verdict.reasons[0].message
    assert 0.5 + LOOP_GRACE - 0.05 <= result.elapsed < 0.5 + LOOP_GRACE + 0.5
    after = timed_check(g, timeout=1.0)                  # closed: denied without the loop
    assert after.verdict.codes == [UNAVAILABLE] and after.elapsed < 0.1
    # When the loop runs again, the close it finds scheduled fences first and stops it.
    wait_until(lambda: not g._runner.thread.is_alive(), timeout=10)
    assert broker.held() == 0
    broker.ack = True
    broker.start()
    assert result.verdict.request_id not in delivered_ids(broker)
    g.close()


def test_an_interrupted_check_fences_before_it_raises() -> None:
    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    broker = MockBroker(worker, signer=SIGNER)
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        with gate(broker) as g:
            assert g.check(action="tickets.read", resource=TICKET).allowed
            broker.ack = False
            main = threading.main_thread().ident
            assert main == threading.get_ident()

            def send_sigint() -> None:
                wait_until(lambda: broker.held() == 1)
                signal.pthread_kill(main, signal.SIGINT)   # type: ignore[arg-type]

            threading.Thread(target=send_sigint, daemon=True).start()
            with pytest.raises(Interrupted):
                g.check(action="tickets.read", resource=TICKET, timeout=5.0)
            assert broker.held() == 0 and g.stats["fences"] == 1   # before the raise
            broker.ack = True
            broker.start()                               # nothing held is left to deliver
            wait_until(lambda: g.check(action="tickets.read", resource=TICKET,
                                       timeout=0.5).allowed)   # the producer is replaced
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(broker.actions) == 2                      # the interrupted one never went out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_is_denied_and_leaves_the_parent_alone() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    with gate(broker) as g:
        assert g.check(action="tickets.read", resource=TICKET).allowed
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                     # the child: report and leave
            try:
                t = timed_check(g, timeout=2.0)
                g.close()
                os.write(w, f"{t.verdict.codes[0]}|{t.elapsed:.3f}|"
                            f"{t.verdict.reasons[0].message}".encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            code, elapsed, message = pipe.read().decode().split("|", 2)
        os.waitpid(pid, 0)
        assert code == UNAVAILABLE and float(elapsed) < 0.1 and "fork" in message
        assert g.check(action="tickets.read", resource=TICKET).allowed   # parent untouched
