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
from holdgate.models.features import feature_matrix
from holdgate.models.profile import DEFAULT_ACTION_LIMIT, DEFAULT_LIMITS, block_of, pct
from holdgate.models.scorer import BaselineConfig, score_and_learn
from holdgate.models.sketch import NOVELTY_BLOOM
from holdgate.models.state import (
    ACTIONS, FANOUT, FANOUT_10M, FANOUT_10M_CAP, FINGERPRINTS, HARD_MAX_FANOUT, HARD_MAX_KEYED, RATES, AgentState,
    serialized_bound,
)

__all__ = ["SIGNAL_NAMES", "ZERO_SIGNALS", "SignalConfig", "SignalComputer", "fingerprint"]

_I_ANOMALY = SIGNAL_NAMES.index("anomaly")
_COUNT_ALL = (1, 1, 0)        # 1 s and 60 s windows: every attempt; 1 h: allowed only
_COUNT_ALLOWED = (0, 0, 1)
_STREAK_MAX = 0xFFFFFFFF
_CACHE_MAX = 4096
_OPT = orjson.OPT_SORT_KEYS


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

    Stateless apart from digest caches (pure functions of their keys), so any
    number of computers over the same event sequence give identical signals.
    ``model`` is an optional fitted `BaselineModel`: its profiles turn counters
    into signals relative to each agent's normal, and its forest scores the
    whole micro-batch at once (vectorized).  ``roles`` maps agent ids to their
    role (from the policy bundle's entity store), the prior for thin history.
    """

    def __init__(self, *, config: SignalConfig | None = None, model: Any = None,
                 roles: Mapping[str, str] | None = None) -> None:
        self.config = config or SignalConfig()
        self.model = model
        self.roles = dict(roles or {})
        self._actions: dict[str, tuple[bytes, int]] = {}
        self._types: dict[str, int] = {}

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

    # -- the hot path ---------------------------------------------------------

    def _observe(self, st: AgentState, req: ActionRequest) -> list[int]:
        cfg = self.config
        t = req.occurred_at
        prev_ms = int(st.clock * 1000.0)
        if t > st.clock:
            st.clock = t
        now_ms = int(st.clock * 1000.0)

        rate_1s, rate_60s, rate_1h = RATES.observe(st.rates, 0, prev_ms, now_ms, _COUNT_ALL)
        rate_1h += 1                 # allowed ones so far, and this attempt

        akey, amask = self._action_key(req.action)
        (a1, a60, a3600), _ = ACTIONS.observe(
            st.act_keys, st.act_last, st.act_rings, akey, now_ms, cfg.max_actions, _COUNT_ALL)
        a3600 += 1

        fp = fingerprint(req)
        (repeat,), _ = FINGERPRINTS.observe(
            st.fp_keys, st.fp_last, st.fp_rings, fp, now_ms, cfg.max_fingerprints)
        if fp == st.last_fp and st.streak:
            if st.streak < _STREAK_MAX:
                st.streak += 1
        else:
            st.last_fp = fp
            st.streak = 1

        res = req.resource
        rkey = blake2b(f"{res.type}\x00{res.id}".encode(), digest_size=4,
                       person=b"hg.res").digest()
        fanout = FANOUT.touch(st.fan_keys, st.fan_buckets, rkey, now_ms, cfg.max_fanout)
        fan10 = FANOUT_10M.touch(st.fan10_keys, st.fan10_buckets, rkey, now_ms, FANOUT_10M_CAP)

        bloom = st.bloom
        new_action = 0 if bloom & amask == amask else 1
        tmask = self._type_mask(res.type)
        new_type = 0 if bloom & tmask == tmask else 1
        if new_action or new_type:
            st.bloom = bloom | amask | tmask
            st.bloom_items = min(st.bloom_items + new_action + new_type, 0xFFFF)

        dn = st.deny_n
        deny_pct = (100 * st.deny_mask.bit_count() + dn // 2) // dn if dn else 0

        anomaly = 0
        if self.model is None:
            anomaly = int(score_and_learn(st.baseline, (rate_1s, rate_60s, fanout, repeat),
                                          cfg.baseline))
        row = [rate_1s, rate_60s, rate_1h, a1, a60, a3600, repeat, st.streak, fanout,
               new_action, new_type, deny_pct, anomaly]
        row += self._relative(req, st.clock, rate_1s, rate_60s, rate_1h, a1, fanout, fan10)
        return row

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

    def observe_batch(self, states: MutableMapping[str, AgentState],
                      requests: Sequence[ActionRequest]) -> list[dict[str, int]]:
        """Signals for each request, in order; identical to one call per request.

        Missing agents are created.  Each touched state is assigned back to
        ``states`` once at the end (a Faust table only writes its changelog on
        assignment, not on in-place mutation).
        """
        touched: dict[str, AgentState] = {}
        rows: list[list[int]] = []
        for req in requests:
            aid = req.agent_id
            st = touched.get(aid)
            if st is None:
                st = states.get(aid)
                if st is None:
                    st = AgentState()
                touched[aid] = st
            rows.append(self._observe(st, req))
        if self.model is not None and rows:
            scores = self.model.anomaly(feature_matrix(np.array(rows, dtype=np.float64)))
            for row, score in zip(rows, scores.tolist()):
                row[_I_ANOMALY] = score
        for aid, st in touched.items():
            states[aid] = st
        names = SIGNAL_NAMES
        return [dict(zip(names, row)) for row in rows]

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
        if self.model is not None and rows:
            scores = self.model.anomaly(feature_matrix(np.array(rows, dtype=np.float64)))
            for row, score in zip(rows, scores.tolist()):
                row[_I_ANOMALY] = score
        names = SIGNAL_NAMES
        return [dict(zip(names, row)) for row in rows]

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
            if not d:
                now_ms = int(st.clock * 1000.0)
                RATES.observe(st.rates, 0, now_ms, now_ms, _COUNT_ALLOWED)
                ACTIONS.observe(st.act_keys, st.act_last, st.act_rings,
                                self._action_key(req.action)[0], now_ms,
                                self.config.max_actions, _COUNT_ALLOWED)
        for aid, st in touched.items():
            states[aid] = st
