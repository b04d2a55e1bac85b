"""The joiner: actions meet their verdicts by digest, in either order, in bounded memory."""
from __future__ import annotations

import orjson
import pytest
from executor_helpers import NOW, make

from holdgate.executor import Joiner, Match
from holdgate.keys import Signer

SIGNER = Signer.generate()


def _offer_verdict(j: Joiner, m: object, now: float = NOW) -> Match | None:
    return j.add_verdict(m.signed, m.verdict.action_digest,  # type: ignore[attr-defined]
                         m.verdict.expires_at, now)  # type: ignore[attr-defined]


def test_either_order_meets() -> None:
    j, a, b = Joiner(), make(SIGNER), make(SIGNER)
    assert j.add_action(a.action, NOW) is None
    assert _offer_verdict(j, a) == Match(a.signed, a.action)
    assert _offer_verdict(j, b) is None
    assert j.add_action(b.action, NOW) == Match(b.signed, b.action)
    assert len(j) == 0


def test_a_spoofed_action_with_the_same_request_id_cannot_displace_the_real_one() -> None:
    j, m = Joiner(), make(SIGNER, amount=100)
    spoof = orjson.loads(m.action)
    spoof["context"]["amount_cents"] = 999_999
    assert j.add_action(m.action, NOW) is None
    assert j.add_action(orjson.dumps(spoof), NOW) is None        # arrives after the real one
    assert _offer_verdict(j, m) == Match(m.signed, m.action)      # the bound bytes win


def test_actions_wait_at_most_action_hold_and_verdicts_until_expiry() -> None:
    j = Joiner(action_hold=10.0)
    a, v = make(SIGNER), make(SIGNER, ttl=30.0)
    j.add_action(a.action, NOW)
    _offer_verdict(j, v)
    assert j.waiting == (1, 1)
    assert j.expire(NOW + 9.9) == 0
    assert j.expire(NOW + 10.0) == 1 and j.waiting == (0, 1)
    assert j.add_action(a.action, NOW + 25) is None                 # re-buffered, fresh hold
    assert j.expire(v.verdict.expires_at) == 1 and j.waiting == (1, 0)
    assert j.dropped == {"actions": 1, "verdicts": 1}


def test_a_late_action_does_not_meet_an_expired_verdict() -> None:
    j, m = Joiner(), make(SIGNER, ttl=5.0)
    _offer_verdict(j, m)
    assert j.add_action(m.action, m.verdict.expires_at + 1) is None
    assert j.dropped["verdicts"] == 1


def test_buffers_are_bounded_oldest_first() -> None:
    j = Joiner(max_actions=3, max_verdicts=2)
    made = [make(SIGNER) for _ in range(5)]
    for m in made:
        j.add_action(m.action, NOW)
    assert j.waiting == (3, 0) and j.dropped["actions"] == 2
    assert _offer_verdict(j, made[0]) is None                       # evicted: never runs
    assert _offer_verdict(j, made[4]) == Match(made[4].signed, made[4].action)
    others = [make(SIGNER) for _ in range(3)]
    for m in others:
        _offer_verdict(j, m)
    assert j.waiting[1] == 2


def test_discard_forgets_a_denied_action() -> None:
    j, m = Joiner(), make(SIGNER)
    j.add_action(m.action, NOW)
    assert j.discard(m.verdict.action_digest) and j.waiting == (0, 0)
    assert not j.discard(m.verdict.action_digest)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Joiner(max_actions=0)
