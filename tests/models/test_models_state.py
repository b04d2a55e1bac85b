"""AgentState: binary codec, corruption detection, and the per-agent size bound."""
from __future__ import annotations

import random
import uuid

import pytest

from holdgate.errors import ModelError
from holdgate.events import ActionRequest, Resource
from holdgate.models import AgentState, SignalComputer, SignalConfig, serialized_bound
from holdgate.models.state import CODEC_VERSION, FANOUT_10M_CAP, RECENT_IDS, request_key

T0 = 1_700_000_000.0


def request(t: float, i: int, *, action: str = "crm.read", rid: str = "c1",
            ctx: dict | None = None) -> ActionRequest:
    return ActionRequest(request_id=str(uuid.UUID(int=i)), agent_id="agent-1", action=action,
                         resource=Resource("Contact", rid, {}), context=ctx or {},
                         occurred_at=t)


@pytest.fixture
def busy_state() -> AgentState:
    """A state that has seen varied traffic and some outcomes."""
    rng = random.Random(5)
    comp, states = SignalComputer(), {}
    reqs = [request(T0 + i * 0.3, i, action=rng.choice(["a.b", "c.d", "e.f"]),
                    rid=f"r{rng.randrange(50)}", ctx={"n": rng.randrange(9)})
            for i in range(400)]
    comp.observe_batch(states, reqs)
    comp.record_outcomes(states, reqs[:20], [i % 3 == 0 for i in range(20)])
    return states["agent-1"]


def test_roundtrip_fresh_and_busy(busy_state: AgentState) -> None:
    for st in (AgentState(), busy_state):
        blob = st.to_bytes()
        back = AgentState.from_bytes(blob)
        assert back == st and back.to_bytes() == blob
        assert AgentState.from_bytes(bytearray(blob)) == st
        assert AgentState.from_bytes(memoryview(blob)) == st
    assert busy_state.n_actions == 3 and busy_state.deny_n == 20
    assert busy_state != AgentState()


def test_decoded_state_keeps_computing_identically(busy_state: AgentState) -> None:
    comp = SignalComputer()
    a = {"agent-1": busy_state}
    b = {"agent-1": AgentState.from_bytes(busy_state.to_bytes())}
    nxt = [request(T0 + 200 + i, 10_000 + i, rid=f"r{i}") for i in range(50)]
    assert comp.observe_batch(a, nxt) == comp.observe_batch(b, nxt)
    assert a["agent-1"].to_bytes() == b["agent-1"].to_bytes()


def _corruptions(blob: bytes) -> dict[str, bytes]:
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    bad_version = bytearray(blob)
    bad_version[4] = CODEC_VERSION + 1
    return {
        "empty": b"",
        "truncated": blob[:-1],
        "extended": blob + b"\x00",
        "half": blob[: len(blob) // 2],
        "bad magic": b"XXXX" + blob[4:],
        "bad version": bytes(bad_version),
        "bit flip": bytes(flipped),
        "count mismatch": blob[:5] + bytes([blob[5] + 1]) + blob[6:],
        "garbage": random.Random(1).randbytes(len(blob)),
    }


@pytest.mark.parametrize("kind", list(_corruptions(b"x" * 600)))
def test_corrupt_blob_raises_model_error(busy_state: AgentState, kind: str) -> None:
    with pytest.raises(ModelError):
        AgentState.from_bytes(_corruptions(busy_state.to_bytes())[kind])


def test_last_seen_is_event_time(busy_state: AgentState) -> None:
    assert AgentState().last_seen == 0.0
    assert busy_state.last_seen == pytest.approx(T0 + 399 * 0.3)


def test_state_size_is_bounded_under_100k_unique_everything() -> None:
    cfg = SignalConfig()
    comp, states = SignalComputer(config=cfg), {}
    batch = []
    for i in range(100_000):
        batch.append(request(T0 + i * 0.001, i, action=f"tool.op{i}", rid=f"res-{i}",
                             ctx={"i": i}))
        if len(batch) == 256:
            comp.observe_batch(states, batch)
            batch = []
    sig = comp.observe_batch(states, batch)[-1]
    st = states["agent-1"]
    assert (st.n_actions, st.n_fingerprints, st.n_fanout) == (32, 32, 256)
    for i in range(20):                 # the core remembers decided request ids too
        st.remember_request(i.to_bytes(8, "little"))
    blob = st.to_bytes()
    assert len(blob) <= cfg.max_state_bytes == serialized_bound(32, 32, 256) < 6_200
    assert st.memory_bytes() < 2 * cfg.max_state_bytes
    assert sig["fanout_60s"] == 256 and sig["fanout_10m"] == 64  # saturated at the caps
    assert 60_000 <= sig["rate_60s"] <= 65_000  # 1000/s over a 60..65 s window
    assert AgentState.from_bytes(blob) == st


def _fullest_state(cfg: SignalConfig) -> AgentState:
    """A state driven to the largest encoding the signal computer can give it: 300
    resources of 40 types swept in 30 s (both fan-out tables full), then `max_actions`
    actions, each 300 times on one resource within a few ms (every ring of the agent,
    of each action and of each fingerprint has a counter above 255), all allowed, and
    the request ids remembered."""
    comp, states = SignalComputer(config=cfg), {}
    sweep = [ActionRequest(request_id=str(uuid.UUID(int=i)), agent_id="agent-1",
                           action="sweep.read", resource=Resource(f"T{i % 40}", f"s{i}", {}),
                           context={}, occurred_at=T0 + i * 0.1) for i in range(300)]
    comp.observe_batch(states, sweep)
    k = 300
    for a in range(max(cfg.max_actions, cfg.max_fingerprints)):
        burst = []
        for _ in range(300):
            k += 1
            burst.append(request(T0 + 31.0 + a * 0.001, k, action=f"tool.op{a}", rid=f"b{a}"))
        comp.observe_batch(states, burst)
        comp.record_outcomes(states, burst, [False] * len(burst))
    st = states["agent-1"]
    for i in range(RECENT_IDS):
        st.remember_request(request_key(str(i)))
    return st


def test_bound_is_an_upper_bound_and_is_reached() -> None:
    """Driven as hard as it goes, a state comes within a few hundred bytes of the bound
    (its fan-out tables share their keys); stored apart, as the codec allows, and with
    the last fingerprint spelled out, it is exactly the bound."""
    for cfg in (SignalConfig(), SignalConfig(max_actions=5, max_fingerprints=9, max_fanout=70)):
        st = _fullest_state(cfg)
        assert (st.n_actions, st.n_fingerprints, st.n_fanout) == \
            (cfg.max_actions, cfg.max_fingerprints, cfg.max_fanout)
        assert len(st.fan10_keys) == 4 * FANOUT_10M_CAP
        honest = st.to_bytes()
        assert cfg.max_state_bytes - 350 <= len(honest) < cfg.max_state_bytes
        keys = st.fan10_keys
        st.fan10_keys = bytearray(b"".join(keys[i:i + 4] for i in range(len(keys) - 4, -1, -4)))
        st.last_fp = b"\xff" * 8
        blob = st.to_bytes()
        assert len(blob) == cfg.max_state_bytes
        assert AgentState.from_bytes(blob).to_bytes() == blob


def test_busy_state_stays_small(busy_state: AgentState) -> None:
    """Size, not speed (speed is bench/memory.py's and bench/decide.py's job)."""
    blob = busy_state.to_bytes()
    assert AgentState.from_bytes(blob) == busy_state
    assert len(blob) < 3_000   # 50 distinct resources in the 60 s and 10 min windows


@pytest.mark.parametrize("params", [
    [float("nan")] + [1.0] * 8, [5.0, float("inf")] + [1.0] * 7, [-1.0] + [1.0] * 8,
    [5.0, -1e308, 1e308] + [1.0] * 6, [5.0] + [1.0] * 7 + [65.0],
])
def test_a_baseline_that_cannot_be_fails_on_reading(busy_state: AgentState,
                                                    params: list[float]) -> None:
    """Well-formed blobs (CRC and all) whose online baseline no agent could have:
    refused on reading, not answered with NaN or an exception on the next action."""
    busy_state.baseline = list(params)
    with pytest.raises(ModelError):
        AgentState.from_bytes(busy_state.to_bytes())
