"""Signals end to end: rates, repetition, fan-out, novelty, deny ratio, anomaly."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from typing import Any, Callable

import numpy as np
import pytest

from holdgate.errors import ConfigError
from holdgate.events import ActionRequest, Resource
from holdgate.models import (
    SIGNAL_NAMES, ZERO_SIGNALS, AgentState, SignalComputer, SignalConfig, fingerprint,
)

T0 = 1_700_000_000.0
MakeRequest = Callable[..., ActionRequest]


@pytest.fixture
def make_request() -> MakeRequest:
    """Factory: a valid ActionRequest with overridable parts (deterministic ids)."""
    counter = iter(range(10**9))

    def make(t: float, *, agent: str = "agent-1", action: str = "crm.read",
             rtype: str = "Contact", rid: str = "c1",
             context: dict[str, Any] | None = None) -> ActionRequest:
        return ActionRequest(request_id=str(uuid.UUID(int=next(counter))), agent_id=agent,
                             action=action, resource=Resource(rtype, rid, {}),
                             context=context if context is not None else {}, occurred_at=t)
    return make


def random_stream(make_request: MakeRequest, n: int, seed: int) -> list[ActionRequest]:
    rng = random.Random(seed)
    t = T0
    out = []
    for _ in range(n):
        t += rng.expovariate(4.0) if rng.random() < 0.95 else -rng.uniform(0, 3)  # some late
        out.append(make_request(t, agent=f"a{rng.randrange(6)}",
                                action=rng.choice(["crm.read", "crm.update", "mail.send"]),
                                rtype=rng.choice(["Contact", "Invoice"]),
                                rid=f"r{rng.randrange(30)}", context={"k": rng.randrange(4)}))
    return out


def test_signal_names_are_fixed() -> None:
    assert SIGNAL_NAMES == (
        "rate_1s", "rate_60s", "rate_1h", "action_rate_1s", "action_rate_60s", "action_rate_1h",
        "repeat_10s", "streak", "fanout_60s", "new_action", "new_resource_type",
        "deny_ratio_pct", "anomaly", "rate_1s_pct", "rate_60s_pct", "rate_1h_pct",
        "action_rate_1s_pct", "fanout_pct", "unusual_action", "unusual_resource_type",
        "off_hours", "fanout_10m", "fanout_10m_pct")
    assert ZERO_SIGNALS == dict.fromkeys(SIGNAL_NAMES, 0)


def allowed(comp: SignalComputer, states: dict[str, Any], req: ActionRequest) -> dict[str, int]:
    """Observe one action and record it allowed, as the worker does for an allow."""
    sig = comp.observe(states, req)
    comp.record_outcomes(states, [req], [False])
    return sig


def test_runaway_loop_climbs_to_300(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    sigs = [comp.observe(states, make_request(T0 + i / 301, context={"x": 1}))
            for i in range(300)]
    for i, s in enumerate(sigs, start=1):
        assert s["rate_1s"] == s["action_rate_1s"] == s["repeat_10s"] == s["streak"] == i
        assert all(type(v) is int for v in s.values())
    last = sigs[-1]
    assert last["rate_60s"] == 300
    assert last["rate_1h"] == 1        # nothing was allowed: the hour counts allowed only
    assert last["fanout_60s"] == 1 and last["new_action"] == 0
    assert last["anomaly"] == 0  # still warming up: no baseline, no opinion
    # without a model the relative signals use the old fixed thresholds: 20/s, 5/s, 50
    assert last["rate_1s_pct"] == 1500 and last["action_rate_1s_pct"] == 6000
    assert sigs[19]["rate_1s_pct"] == 100 and sigs[20]["rate_1s_pct"] == 105


def test_human_paced_agent_stays_calm(make_request: MakeRequest) -> None:
    rng = random.Random(11)
    comp, states = SignalComputer(), {}
    t, sigs = T0, []
    while t < T0 + 3600:
        sigs.append(allowed(comp, states, make_request(
            t, action=rng.choice(["crm.read", "crm.update", "mail.send"]),
            rid=f"c{rng.randrange(5)}", context={"q": rng.randrange(100)})))
        t += 5.0
    assert len(sigs) == 720
    assert max(s["rate_1s"] for s in sigs) <= 1
    assert max(s["repeat_10s"] for s in sigs) <= 3
    assert all(13 <= s["rate_60s"] <= 14 for s in sigs[20:])  # 60 s window: 60..65 s
    assert sigs[-1]["rate_1h"] == 720
    assert max(s["anomaly"] for s in sigs) < 100
    # ...and a sudden 50x burst (10 actions/s) is flagged from its first second on
    burst = [comp.observe(states, make_request(t + i / 10, rid=f"c{i % 5}",
                                               context={"q": i % 100}))["anomaly"]
             for i in range(300)]
    assert burst[0] < 100           # one action right after another is not yet a burst
    assert min(burst[10:]) > 900    # robust learning: 30 s of burst does not become normal


def test_anomaly_is_zero_while_warming_up(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    warm = comp.config.baseline.warmup_n
    sigs = [comp.observe(states, make_request(T0 + (i * 10 if i < warm - 1 else 500 + i / 100)))
            for i in range(warm)]  # calm, then a burst before the baseline is warm
    assert [s["anomaly"] for s in sigs] == [0] * warm


def test_fanout_counts_distinct_resources_and_expires(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    got = [comp.observe(states, make_request(T0 + i * 0.1, rid=f"r{i}"))["fanout_60s"]
           for i in range(5)]
    assert got == [1, 2, 3, 4, 5]
    assert comp.observe(states, make_request(T0 + 1, rid="r0"))["fanout_60s"] == 5
    assert comp.observe(states, make_request(T0 + 30, rid="r1"))["fanout_60s"] == 5
    assert comp.observe(states, make_request(T0 + 30, rtype="Invoice", rid="r1"))[
        "fanout_60s"] == 6  # same id, other type: another resource
    # 66 s after the first touches: r0, r2..r4 expired; r1 (t+30) is live; r9 is new
    assert comp.observe(states, make_request(T0 + 66, rid="r9"))["fanout_60s"] == 3
    assert comp.observe(states, make_request(T0 + 200, rid="r9"))["fanout_60s"] == 1


def test_fanout_saturates_at_cap(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(config=SignalConfig(max_fanout=8)), {}
    got = [comp.observe(states, make_request(T0 + i, rid=f"r{i}"))["fanout_60s"]
           for i in range(20)]
    assert got == list(range(1, 9)) + [8] * 12
    assert states["agent-1"].n_fanout == 8


def test_novelty_flips_from_one_to_zero(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    def nov(**kw: Any) -> tuple[int, int]:
        s = comp.observe(states, make_request(T0, **kw))
        return s["new_action"], s["new_resource_type"]
    assert nov() == (1, 1)
    assert nov() == (0, 0)
    assert nov(action="crm.delete") == (1, 0)
    assert nov(rtype="Invoice") == (0, 1)
    assert nov(action="crm.delete", rtype="Invoice") == (0, 0)
    assert comp.observe(states, make_request(T0, agent="other"))["new_action"] == 1  # per agent


def test_streak_and_repeat_follow_fingerprints(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    a = dict(context={"x": 1, "y": [1, 2]})
    a_reordered = dict(context={"y": [1, 2], "x": 1})
    b = dict(context={"x": 2})
    seq = [a, a_reordered, b, a, a]
    sigs = [comp.observe(states, make_request(T0 + i, **kw)) for i, kw in enumerate(seq)]
    assert [s["streak"] for s in sigs] == [1, 2, 1, 1, 2]
    assert [s["repeat_10s"] for s in sigs] == [1, 2, 1, 3, 4]
    assert comp.observe(states, make_request(T0 + 30, **a))["repeat_10s"] == 1  # expired


def test_deny_ratio(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    reqs = [make_request(T0 + i) for i in range(4)]
    assert comp.observe_batch(states, reqs)[-1]["deny_ratio_pct"] == 0
    comp.record_outcomes(states, reqs, [True, False, False, True])
    assert comp.observe(states, make_request(T0 + 5))["deny_ratio_pct"] == 50
    comp.record_outcomes(states, reqs[:1], [True])
    assert comp.observe(states, make_request(T0 + 6))["deny_ratio_pct"] == 60
    comp.record_outcomes(states, [reqs[0]] * 40, [False] * 40)  # only the last 32 count
    assert comp.observe(states, make_request(T0 + 7))["deny_ratio_pct"] == 0
    comp.record_outcomes(states, [reqs[0]] * 32, [True] * 32)
    assert comp.observe(states, make_request(T0 + 8))["deny_ratio_pct"] == 100
    comp.record_outcomes(states, [make_request(T0, agent="ghost")], [True])  # no state: skip
    assert "ghost" not in states
    with pytest.raises(ValueError):
        comp.record_outcomes(states, reqs, [True])


def test_out_of_order_events_do_not_move_time_backwards(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(), {}
    comp.observe(states, make_request(T0 + 100))
    late = comp.observe(states, make_request(T0 + 50, rid="late"))
    st = states["agent-1"]
    assert st.last_seen == T0 + 100
    assert late["rate_1s"] == 2 and late["fanout_60s"] == 2  # counted at the agent clock
    nxt = comp.observe(states, make_request(T0 + 100.5))
    assert nxt["rate_1s"] == 3 and st.last_seen == T0 + 100.5
    # a late event must not resurrect anything: 2 min later everything above expired
    assert comp.observe(states, make_request(T0 + 221, rid="x"))["rate_60s"] == 1


def test_action_cap_is_lru_and_agent_rates_are_unaffected(make_request: MakeRequest) -> None:
    comp, states = SignalComputer(config=SignalConfig(max_actions=2)), {}
    for i, act in enumerate(["a.x", "b.x", "a.x", "c.x"]):  # c evicts b (least recent)
        s = comp.observe(states, make_request(T0 + i, action=act))
    assert s["rate_60s"] == 4 and s["action_rate_60s"] == 1
    assert comp.observe(states, make_request(T0 + 5, action="a.x"))["action_rate_60s"] == 3
    assert comp.observe(states, make_request(T0 + 6, action="b.x"))["action_rate_60s"] == 1
    assert states["agent-1"].n_actions == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_deterministic_and_batching_invariant(make_request: MakeRequest, seed: int) -> None:
    reqs = random_stream(make_request, 1500, seed)
    one_by_one: list[dict[str, int]] = []
    c1, s1 = SignalComputer(), {}
    for r in reqs:
        one_by_one.append(c1.observe(s1, r))
    c2, s2 = SignalComputer(), {}
    batched: list[dict[str, int]] = []
    rng = random.Random(seed)
    i = 0
    while i < len(reqs):
        n = rng.randrange(1, 257)
        batched.extend(c2.observe_batch(s2, reqs[i:i + n]))
        i += n
    assert batched == one_by_one
    assert s1 == s2


def test_fingerprint_is_stable_across_processes(make_request: MakeRequest) -> None:
    req = make_request(T0, context={"b": [1, {"z": True}], "a": "é"})
    code = ("import uuid;from holdgate.events import ActionRequest, Resource;"
            "from holdgate.models import fingerprint;"
            "r=ActionRequest(request_id=str(uuid.uuid4()),agent_id='agent-1',"
            "action='crm.read',resource=Resource('Contact','c1',{}),"
            "context={'a':'é','b':[1,{'z':True}]},occurred_at=1.0);"
            "print(fingerprint(r).hex())")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join(sys.path))
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.strip())
    assert outs == {fingerprint(req).hex()}


def test_states_are_written_back_once_per_batch(make_request: MakeRequest) -> None:
    class Table(dict):
        writes = 0

        def __setitem__(self, k: str, v: AgentState) -> None:
            Table.writes += 1
            super().__setitem__(k, v)

    table = Table()
    comp = SignalComputer()
    comp.observe_batch(table, [make_request(T0 + i, agent=f"a{i % 3}") for i in range(9)])
    assert Table.writes == 3 and all(isinstance(v, AgentState) for v in table.values())
    comp.record_outcomes(table, [make_request(T0, agent="a0")] * 2, [True, False])
    assert Table.writes == 4


def test_lockout_runaway_stays_blocked_calmed_agent_is_not(make_request: MakeRequest) -> None:
    """Denied attempts keep the short windows up; the hour counts only what was allowed."""
    comp, states = SignalComputer(), {}
    # a runaway loop: 2,000 attempts in 10 s, the first 20 of each second allowed
    for i in range(2000):
        req = make_request(T0 + i / 200)
        sig = comp.observe(states, req)
        comp.record_outcomes(states, [req], [sig["rate_1s"] > 20])
    assert sig["rate_1s"] > 150 and sig["rate_1s_pct"] > 100        # still blocked
    assert sig["rate_1h"] <= 20 * 11 + 1
    # it calms down: one action every 2 s; the hour does not hold its denied attempts
    calm = [allowed(comp, states, make_request(T0 + 20 + 2 * i)) for i in range(5)]
    assert all(s["rate_1s_pct"] <= 100 and s["rate_1h_pct"] <= 100 for s in calm)


def test_fitted_model_makes_signals_relative(make_request: MakeRequest) -> None:
    from holdgate.models.profile import BLOCKS, KINDS, Profiles, block_of

    limits = np.zeros((1, BLOCKS, len(KINDS)), dtype=np.int32)
    limits[0, block_of(T0)] = (50, 600, 6000, 400, 64)       # a busy job at this hour
    profiles = Profiles(
        agents=("batch-1",), roles=("data",), agent_role=np.array([0], dtype=np.int32),
        agent_limits=limits, role_limits=np.full((1, BLOCKS, len(KINDS)), 4, np.int32),
        fleet_limits=np.full((BLOCKS, len(KINDS)), 3, np.int32),
        agent_active=np.array([1 << block_of(T0)], dtype=np.uint8),
        role_active=np.array([0xFF], dtype=np.uint8),
        agent_actions={"batch-1": {"crm.read": 60}}, role_actions={"data": {"crm.read": 6}},
        agent_types={"batch-1": frozenset({"Contact"})},
        role_types={"data": frozenset({"Contact"})})

    class Model:
        version = "sha256:test"
        seen: list[np.ndarray] = []

        def __init__(self) -> None:
            self.profiles = profiles

        def anomaly(self, X: np.ndarray) -> np.ndarray:
            Model.seen.append(X)
            return np.full(len(X), 321, dtype=np.int64)

    comp = SignalComputer(model=Model(), roles={"batch-1": "data", "new-1": "data"})
    states: dict[str, Any] = {}
    burst = comp.observe_batch(states, [make_request(T0 + i / 40, agent="batch-1",
                                                     rid=f"r{i}") for i in range(40)])
    assert burst[-1]["rate_1s"] == 40 and burst[-1]["rate_1s_pct"] == 80   # normal for it
    assert {s["anomaly"] for s in burst} == {321} and len(Model.seen) == 1  # one batch call
    assert Model.seen[0].shape == (40, 11)
    assert burst[-1]["unusual_action"] == 0 and burst[-1]["off_hours"] == 0
    other = comp.observe_batch(states, [make_request(T0 + i / 40, agent="new-1", rid=f"r{i}")
                                        for i in range(40)])
    assert other[-1]["rate_1s_pct"] == 1000        # the same burst from a new data agent
    late = comp.observe(states, make_request(T0 + 6 * 3600, agent="batch-1",
                                             action="crm.delete"))
    assert late["unusual_action"] == 1 and late["off_hours"] == 1
    assert comp.model_version == "sha256:test"


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SignalConfig(max_actions=0)
    with pytest.raises(ConfigError):
        SignalConfig(max_fanout=10**6)
