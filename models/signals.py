"""Per-agent behavioural signals, computed on event time before each decision.

Why integers: the signals go into the Cedar context (``context.signals``), and
Cedar only compares integers.  Why event time: a replay of the actions topic must
reproduce every signal, so nothing here reads the wall clock or a per-process
random seed (hashes are blake2b, never ``hash()``).

The agent clock is ``max(occurred_at seen)``: an older (out-of-order) event is
counted at the agent clock, so time never moves backwards and the rings stay
consistent.  Denied attempts count too (the stream observes every action).

Signals (all include the current action; windows are "at least the horizon", see
`holdgate.models.windows`):

    rate_1s, rate_60s, rate_1h                 actions of the agent
    action_rate_1s, action_rate_60s, action_rate_1h   same (agent, action)
    repeat_10s      same fingerprint (action, resource type+id, canonical context)
    streak          run of identical consecutive fingerprints (1 for a fresh one)
    fanout_60s      distinct resources in the window, saturating at max_fanout
    new_action, new_resource_type   1 the first time the agent uses it (Bloom)
    deny_ratio_pct  denies among the last 32 decided actions (from record_outcomes)
    anomaly         0..1000: the fitted model's score (> 900: beyond its threshold),
                    else the agent's own online baseline (0 while warming up)
    *_pct, unusual_*, off_hours    relative to the fitted profile, see holdgate.signals

Lockout: the 1 s and 60 s windows count every attempt, so a runaway loop stays
blocked for as long as it hammers; the 1 h windows count only *allowed*
actions (added in `record_outcomes`), so an agent throttled once is allowed
again as soon as its short windows calm down instead of staying locked out for
an hour by its own denied attempts.

Caps (LRU by event time): per-action windows for ``max_actions`` actions, repeat
windows for ``max_fingerprints`` fingerprints; a forgotten action/fingerprint
restarts its counts at 1 (the agent-level ``rate_*`` are unaffected).

The hot path: `WindowSet`, `KeyedWindows` and `DistinctWindow` define the
semantics (and are what the tests of the windows exercise); `_observe` runs the
same arithmetic unrolled over the fixed geometry (`holdgate.models.counters`)
and the online baseline unrolled (`score_and_learn4`), on the plain lists of a
decoded `AgentState`, with every digest of a name cached; a fitted forest is
asked only about rows it has not scored an equivalent of (`AnomalyMemo`).  The
frozen reference in ``tests/models/reference_signals.py`` holds it to that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Mapping, MutableMapping, Sequence

import numpy as np
import orjson

from holdgate.errors import ConfigError
from holdgate.events import ActionRequest
from holdgate.signals import SIGNAL_NAMES, ZERO_SIGNALS
from holdgate.models.counters import allow_action, fan_touch, tick, touch_action, \
    touch_fingerprint
from holdgate.models.features import AnomalyMemo, feature_matrix
from holdgate.models.profile import (
    BLOCK_SECONDS, BLOCKS, DEFAULT_ACTION_LIMIT, DEFAULT_LIMITS, block_of, pct,
)
from holdgate.models.scorer import BaselineConfig, learn_knobs, score_and_learn4
from holdgate.models.sketch import NOVELTY_BLOOM
from holdgate.models.state import (
    FANOUT_10M_CAP, HARD_MAX_FANOUT, HARD_MAX_KEYED, AgentState, serialized_bound,
)

__all__ = ["SIGNAL_NAMES", "ZERO_SIGNALS", "SignalConfig", "SignalComputer", "fingerprint"]

_I_ANOMALY = SIGNAL_NAMES.index("anomaly")
_CACHE_MAX = 4096
_OPT = orjson.OPT_SORT_KEYS
_PERSON_RES = b"hg.res"
_LACT = DEFAULT_ACTION_LIMIT

assert SIGNAL_NAMES == (
    "rate_1s", "rate_60s", "rate_1h", "action_rate_1s", "action_rate_60s", "action_rate_1h",
    "repeat_10s", "streak", "fanout_60s", "new_action", "new_resource_type",
    "deny_ratio_pct", "anomaly", "rate_1s_pct", "rate_60s_pct", "rate_1h_pct",
    "action_rate_1s_pct", "fanout_pct", "unusual_action", "unusual_resource_type",
    "off_hours", "fanout_10m", "fanout_10m_pct"), "signals.py builds rows in this order"


def fingerprint(request: ActionRequest) -> bytes:
    """Stable 8-byte digest of (action, resource type, resource id, context).

    The context is canonicalized with sorted keys, so key order never matters;
    blake2b (not ``hash()``) makes it identical across processes and hosts.
    """
    res = request.resource
    canon = orjson.dumps((request.action, res.type, res.id, request.context), option=_OPT)
    return blake2b(canon, digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Caps of the per-agent state and the anomaly baseline's knobs.

    Window geometry is fixed by the state codec (changing it would invalidate
    every stored state); caps may change freely, states shrink on next touch.
    """

    max_actions: int = 32
    max_fingerprints: int = 32
    max_fanout: int = 256
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.max_actions <= HARD_MAX_KEYED:
            raise ConfigError(f"max_actions must be 1..{HARD_MAX_KEYED}")
        if not 1 <= self.max_fingerprints <= HARD_MAX_KEYED:
            raise ConfigError(f"max_fingerprints must be 1..{HARD_MAX_KEYED}")
        if not 1 <= self.max_fanout <= HARD_MAX_FANOUT:
            raise ConfigError(f"max_fanout must be 1..{HARD_MAX_FANOUT}")

    @property
    def max_state_bytes(self) -> int:
        """Upper bound of a serialized `AgentState` under these caps."""
        return serialized_bound(self.max_actions, self.max_fingerprints, self.max_fanout)


class SignalComputer:
    """Turns each action into its integer signals, updating the agent's state.

    Stateless apart from caches (pure functions of their keys), so any number of
    computers over the same event sequence give identical signals.  ``model`` is
    an optional fitted `BaselineModel`: its profiles turn counters into signals
    relative to each agent's normal, and its forest scores the whole micro-batch
    at once (vectorized, and memoized exactly: `AnomalyMemo`).  ``roles`` maps
    agent ids to their role (from the policy bundle's entity store), the prior
    for thin history.
    """

    def __init__(self, *, config: SignalConfig | None = None, model: Any = None,
                 roles: Mapping[str, str] | None = None) -> None:
        self.config = config or SignalConfig()
        self.model = model
        self.roles = dict(roles or {})
        self._actions: dict[str, tuple[bytes, int]] = {}
        self._types: dict[str, int] = {}
        self._res: dict[tuple[str, str], bytes] = {}
        self._limits: dict[tuple[str, int, str, str], tuple[int, ...]] = {}
        self._memo = AnomalyMemo.for_model(model) if model is not None else None
        self._base = learn_knobs(self.config.baseline)

    @property
    def model_version(self) -> str:
        """Names the scoring in effect, for the verdict's ``model_version``."""
        if self.model is None:
            return "online-baseline/1"
        return str(self.model.version)

    # -- digests (cached: pure functions of their input) ----------------------

    def _action_key(self, action: str) -> tuple[bytes, int]:
        hit = self._actions.get(action)
        if hit is None:
            if len(self._actions) >= _CACHE_MAX:
                self._actions.clear()
            key = blake2b(action.encode(), digest_size=8, person=b"hg.action").digest()
            hit = self._actions[action] = (key, NOVELTY_BLOOM.mask(key))
        return hit

    def _type_mask(self, rtype: str) -> int:
        hit = self._types.get(rtype)
        if hit is None:
            if len(self._types) >= _CACHE_MAX:
                self._types.clear()
            key = blake2b(rtype.encode(), digest_size=8, person=b"hg.rtype").digest()
            hit = self._types[rtype] = NOVELTY_BLOOM.mask(key)
        return hit

    def _res_key(self, rtype: str, rid: str) -> bytes:
        if len(self._res) >= 4 * _CACHE_MAX:
            self._res.clear()
        key = self._res[(rtype, rid)] = blake2b(f"{rtype}\x00{rid}".encode(), digest_size=4,
                                                person=_PERSON_RES).digest()
        return key

    # -- the hot path ---------------------------------------------------------

    def _observe(self, st: AgentState, req: ActionRequest) -> dict[str, int]:
        cfg = self.config
        t = req.occurred_at
        clock = st.clock
        prev = int(clock * 1000.0)
        if t > clock:
            st.clock = clock = t
        now = int(clock * 1000.0)

        rate_1s, rate_60s, rate_1h = tick(st.rates, prev, now)
        rate_1h += 1                 # allowed ones so far, and this attempt

        action = req.action
        hit = self._actions.get(action)
        akey, amask = hit if hit is not None else self._action_key(action)
        a1, a60, a3600 = touch_action(st, akey, now, cfg.max_actions)
        a3600 += 1

        res = req.resource
        canon = orjson.dumps((action, res.type, res.id, req.context), option=_OPT)
        fp = blake2b(canon, digest_size=8).digest()
        repeat = touch_fingerprint(st, fp, now, cfg.max_fingerprints)
        if fp == st.last_fp and st.streak:
            if st.streak < 0xFFFFFFFF:
                st.streak += 1
        else:
            st.last_fp = fp
            st.streak = 1
        streak = st.streak

        rtype = res.type
        rkey = self._res.get((rtype, res.id)) or self._res_key(rtype, res.id)
        fanout = fan_touch(st.fan_keys, st.fan_rel, st.fan_origin, rkey, now // 5_000,
                           cfg.max_fanout)
        if isinstance(fanout, tuple):
            fanout, st.fan_origin, st.fan_rel = fanout
        fan10 = fan_touch(st.fan10_keys, st.fan10_rel, st.fan10_origin, rkey, now // 50_000,
                          FANOUT_10M_CAP)
        if isinstance(fan10, tuple):
            fan10, st.fan10_origin, st.fan10_rel = fan10

        bloom = st.bloom
        new_action = 0 if bloom & amask == amask else 1
        tmask = self._types.get(rtype) or self._type_mask(rtype)
        new_type = 0 if bloom & tmask == tmask else 1
        if new_action or new_type:
            st.bloom = bloom | amask | tmask
            st.bloom_items = min(st.bloom_items + new_action + new_type, 0xFFFF)

        dn = st.deny_n
        deny_pct = (100 * st.deny_mask.bit_count() + dn // 2) // dn if dn else 0

        model = self.model
        if model is None:
            anomaly = score_and_learn4(st.baseline, rate_1s, rate_60s, fanout, repeat,
                                       self._base)
            l1, l60, l3600, lfan, lfan10 = DEFAULT_LIMITS
            return {
                "rate_1s": rate_1s, "rate_60s": rate_60s, "rate_1h": rate_1h,
                "action_rate_1s": a1, "action_rate_60s": a60, "action_rate_1h": a3600,
                "repeat_10s": repeat, "streak": streak, "fanout_60s": fanout,
                "new_action": new_action, "new_resource_type": new_type,
                "deny_ratio_pct": deny_pct, "anomaly": anomaly,
                "rate_1s_pct": (100 * rate_1s + l1 - 1) // l1 if l1 > 0 else 0,
                "rate_60s_pct": (100 * rate_60s + l60 - 1) // l60 if l60 > 0 else 0,
                "rate_1h_pct": (100 * rate_1h + l3600 - 1) // l3600 if l3600 > 0 else 0,
                "action_rate_1s_pct": (100 * a1 + _LACT - 1) // _LACT if _LACT > 0 else 0,
                "fanout_pct": (100 * fanout + lfan - 1) // lfan if lfan > 0 else 0,
                "unusual_action": 0, "unusual_resource_type": 0, "off_hours": 0,
                "fanout_10m": fan10,
                "fanout_10m_pct": (100 * fan10 + lfan10 - 1) // lfan10 if lfan10 > 0 else 0,
            }
        aid = req.agent_id
        block = int(clock // BLOCK_SECONDS) % BLOCKS
        lim = self._limits.get((aid, block, action, rtype)) or \
            self._profile(aid, block, action, rtype)
        l1, l60, l3600, lact, lfan, lfan10, unusual_action, unusual_type, off = lim
        return {
            "rate_1s": rate_1s, "rate_60s": rate_60s, "rate_1h": rate_1h,
            "action_rate_1s": a1, "action_rate_60s": a60, "action_rate_1h": a3600,
            "repeat_10s": repeat, "streak": streak, "fanout_60s": fanout,
            "new_action": new_action, "new_resource_type": new_type,
            "deny_ratio_pct": deny_pct, "anomaly": 0,
            "rate_1s_pct": (100 * rate_1s + l1 - 1) // l1 if l1 > 0 else 0,
            "rate_60s_pct": (100 * rate_60s + l60 - 1) // l60 if l60 > 0 else 0,
            "rate_1h_pct": (100 * rate_1h + l3600 - 1) // l3600 if l3600 > 0 else 0,
            "action_rate_1s_pct": (100 * a1 + lact - 1) // lact if lact > 0 else 0,
            "fanout_pct": (100 * fanout + lfan - 1) // lfan if lfan > 0 else 0,
            "unusual_action": unusual_action, "unusual_resource_type": unusual_type,
            "off_hours": off, "fanout_10m": fan10,
            "fanout_10m_pct": (100 * fan10 + lfan10 - 1) // lfan10 if lfan10 > 0 else 0,
        }

    def _profile(self, agent: str, block: int, action: str, rtype: str) -> tuple[int, ...]:
        """The fitted profile's view of (agent, 3-hour block, action, type), cached."""
        profiles = self.model.profiles
        role = self.roles.get(agent)
        l1, l60, l3600, lfan, lfan10 = profiles.limits(agent, role, block)
        unusual_action, unusual_type = profiles.unusual(agent, role, action, rtype)
        out = (l1, l60, l3600, profiles.action_limit(agent, role, action), lfan, lfan10,
               unusual_action, unusual_type, profiles.off_hours(agent, role, block))
        if len(self._limits) >= 16 * _CACHE_MAX:
            self._limits.clear()
        self._limits[(agent, block, action, rtype)] = out
        return out

    def _relative(self, req: ActionRequest, t: float, rate_1s: int, rate_60s: int,
                  rate_1h: int, a1: int, fanout: int, fan10: int) -> list[int]:
        """Counters against this agent's normal: the fitted profile, or fleet defaults."""
        model = self.model
        if model is None:
            l1, l60, l3600, lfan, lfan10 = DEFAULT_LIMITS
            return [pct(rate_1s, l1), pct(rate_60s, l60), pct(rate_1h, l3600),
                    pct(a1, DEFAULT_ACTION_LIMIT), pct(fanout, lfan), 0, 0, 0,
                    fan10, pct(fan10, lfan10)]
        profiles = model.profiles
        agent, role, block = req.agent_id, self.roles.get(req.agent_id), block_of(t)
        l1, l60, l3600, lfan, lfan10 = profiles.limits(agent, role, block)
        unusual_action, unusual_type = profiles.unusual(agent, role, req.action,
                                                        req.resource.type)
        return [pct(rate_1s, l1), pct(rate_60s, l60), pct(rate_1h, l3600),
                pct(a1, profiles.action_limit(agent, role, req.action)), pct(fanout, lfan),
                unusual_action, unusual_type, profiles.off_hours(agent, role, block),
                fan10, pct(fan10, lfan10)]

    def _score(self, rows: Sequence[Mapping[str, int]]) -> list[int]:
        """The fitted model's anomaly for each signal row (one call for the misses)."""
        if self._memo is not None:
            return self._memo.score([
                (r["rate_1s_pct"], r["rate_60s_pct"], r["rate_1h_pct"],
                 r["action_rate_1s_pct"], r["fanout_pct"], r["fanout_10m_pct"],
                 r["repeat_10s"], r["streak"], r["unusual_action"],
                 r["unusual_resource_type"], r["off_hours"]) for r in rows])
        full = np.array([list(r.values()) for r in rows], dtype=np.float64)
        return self.model.anomaly(feature_matrix(full)).tolist()

    def observe_batch(self, states: MutableMapping[str, AgentState],
                      requests: Sequence[ActionRequest]) -> list[dict[str, int]]:
        """Signals for each request, in order; identical to one call per request.

        Missing agents are created.  Each touched state is assigned back to
        ``states`` once at the end (a Faust table only writes its changelog on
        assignment, not on in-place mutation).
        """
        touched: dict[str, AgentState] = {}
        out: list[dict[str, int]] = []
        observe = self._observe
        for req in requests:
            aid = req.agent_id
            st = touched.get(aid)
            if st is None:
                st = states.get(aid)
                if st is None:
                    st = AgentState()
                touched[aid] = st
            out.append(observe(st, req))
        if self.model is not None and out:
            for sig, score in zip(out, self._score(out)):
                sig["anomaly"] = score
        for aid, st in touched.items():
            states[aid] = st
        return out

    def rederive(self, signals: Sequence[Mapping[str, int]],
                 requests: Sequence[ActionRequest],
                 clocks: Sequence[float]) -> list[dict[str, int]]:
        """The counters another computer observed, read against *this* one's model.

        A shadow candidate model must see the same traffic as the enforced one
        without counting it twice: the counters (rates, repeats, fanout, novelty)
        do not depend on the model, so only what the model derives from them is
        recomputed: the ``*_pct`` limits, ``unusual_*``, ``off_hours`` and the
        anomaly score (the whole batch scored at once, as in `observe_batch`).
        `clocks` are the agents' clocks after observing (the 3-hour block).
        Without a model of its own, the given anomaly score is kept.
        """
        rows: list[list[int]] = []
        for sig, req, t in zip(signals, requests, clocks, strict=True):
            row = [int(sig.get(name, 0)) for name in SIGNAL_NAMES[:_I_ANOMALY + 1]]
            row += self._relative(req, t, sig.get("rate_1s", 0), sig.get("rate_60s", 0),
                                  sig.get("rate_1h", 0), sig.get("action_rate_1s", 0),
                                  sig.get("fanout_60s", 0), sig.get("fanout_10m", 0))
            rows.append(row)
        names = SIGNAL_NAMES
        out = [dict(zip(names, row)) for row in rows]
        if self.model is not None and rows:
            for sig, score in zip(out, self._score(out)):
                sig["anomaly"] = score
        return out

    def observe(self, states: MutableMapping[str, AgentState],
                request: ActionRequest) -> dict[str, int]:
        """Convenience: `observe_batch` of a single request."""
        return self.observe_batch(states, (request,))[0]

    def record_outcomes(self, states: MutableMapping[str, AgentState],
                        requests: Sequence[ActionRequest], denied: Sequence[bool]) -> None:
        """Feed decisions back (after Cedar): ``deny_ratio_pct`` and the 1 h windows.

        Outcomes shift into a 32-bit history per agent in the given order, and an
        allowed action is added to the agent's and the action's 1 h windows at the
        agent's clock.  An agent with no state (evicted meanwhile) is skipped.
        """
        if len(requests) != len(denied):
            raise ValueError("requests and denied must have the same length")
        touched: dict[str, AgentState] = {}
        cap = self.config.max_actions
        for req, d in zip(requests, denied):
            aid = req.agent_id
            st = touched.get(aid)
            if st is None:
                st = states.get(aid)
                if st is None:
                    continue
                touched[aid] = st
            st.deny_mask = ((st.deny_mask << 1) | (1 if d else 0)) & 0xFFFFFFFF
            if st.deny_n < 32:
                st.deny_n += 1
            if d:
                continue
            hit = self._actions.get(req.action)
            allow_action(st, hit[0] if hit is not None else self._action_key(req.action)[0], cap)
        for aid, st in touched.items():
            states[aid] = st
