"""The blocking gate's baton: one reader at a time, a waiting check first, offers never lost."""
from __future__ import annotations

import threading
import time

from holdgate.client.baton import Baton
from holdgate.client.steps import Pending
from holdgate.events import ActionRequest, encode


def waiting_check() -> Pending:
    request = ActionRequest.create(agent_id="bot", action="tickets.read",
                                   resource={"type": "Ticket", "id": "t"})
    p = Pending(request, encode(request), 1.0, time.monotonic() + 1.0)
    p.waker = threading.Event()
    return p


def test_the_baton_is_offered_to_one_waiting_check_and_passed_on() -> None:
    baton, a, b = Baton(), waiting_check(), waiting_check()
    baton.join(a)
    baton.join(b)
    assert baton.try_take() and not baton.try_take()      # one leader at a time
    baton.give_back()
    assert a.waker.is_set() and not b.waker.is_set()      # offered to one, not all
    baton.leave(a)                                        # a's verdict came meanwhile
    assert b.waker.is_set()                               # the unused offer moves on
    assert baton.try_take()
    baton.give_back()
    baton.leave(b)


def test_a_resolved_check_is_not_offered_the_baton() -> None:
    baton, done, waiting = Baton(), waiting_check(), waiting_check()
    done.result = object()  # type: ignore[assignment]
    baton.join(done)
    baton.join(waiting)
    assert baton.try_take()
    baton.give_back()
    assert waiting.waker.is_set() and not done.waker.is_set()


def test_set_up_makes_leaders_yield_and_drain_only_when_nobody_waits() -> None:
    baton, p = Baton(), waiting_check()
    assert baton.try_take()
    held = threading.Event()

    def set_up() -> None:
        with baton.hold():
            held.set()

    thread = threading.Thread(target=set_up)
    thread.start()
    while not baton.wanted:
        time.sleep(0.001)
    baton.give_back()                                    # the leader sees `wanted`, yields
    thread.join(2)
    assert held.is_set() and not baton.wanted
    baton.join(p)
    assert not baton.take_idle()                         # a check waits: no idle drain
    baton.leave(p)
    assert baton.take_idle()
    baton.give_back()
