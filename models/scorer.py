"""Anomaly scorers: a river-style ABC and the per-agent online baseline.

Why an ABC: the stream only ever calls `Scorer.score_many` on a feature matrix
whose columns are ``FEATURE_NAMES``, so a model fitted offline in a later
milestone (loaded from an artifact, see `holdgate.models.artifact`) plugs in
without the stream changing.  High score means anomalous, on a 0..1000 scale.

Why this baseline: each agent is compared with *its own* history, learned online
from its features in log space (``log1p`` of counts, so "10x more" is the same
distance whatever the agent's usual rate).  Per feature it keeps an EWMA mean and
an EWMA mean absolute deviation (robust spread; ``1.25 * MAD ~ sigma``) whose
floor stops a perfectly regular agent from turning noise into alarms.  The score
is the largest *one-sided* z-score (only "more than usual" is suspicious), with a
dead zone, mapped monotonically onto 0..1000::

    u = max(0, z - z_free);   score = 1000 * u^2 / (u^2 + z_scale^2)

Learning is robust so that an attack cannot quickly become "normal": each
observation is winsorized to ``mean +- clip * spread`` and, when it is itself
anomalous (``z > z_free``), learned at ``gate_factor`` times the usual rate.  A
lasting regime change is still absorbed, just slowly (tens of minutes for a
10 actions/s agent with the defaults).  Until ``warmup_n`` observations the score
is 0: no baseline, no opinion (the rate and repetition signals still apply).

The parameters are ``1 + 2 * F`` floats that live inside `AgentState` (a list
there), so they go through the changelog with the rest of the agent.  The
stream uses the fused `score_and_learn` (one pass, pure Python: learning needs
the row's own z, so scoring rows later in numpy would compute it twice), in its
unrolled form `score_and_learn4`;
`score_many` is the numpy path for fitted models and offline evaluation.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass
from math import log1p
from typing import Mapping, Sequence

import numpy as np

from holdgate.errors import ConfigError

__all__ = [
    "FEATURE_NAMES", "PARAMS_LEN", "BaselineConfig", "Scorer", "OnlineBaseline",
    "score_and_learn", "score_and_learn4", "learn_knobs", "score_rows", "new_params",
    "params_ok",
]

FEATURE_NAMES: tuple[str, ...] = ("rate_1s", "rate_60s", "fanout_60s", "repeat_10s")
_F = len(FEATURE_NAMES)
PARAMS_LEN = 1 + 2 * _F  # [n, mean_0..mean_F-1, spread_0..spread_F-1]
_N_MAX = float(2**53)
#: log1p of small counts, computed once (the same floats math.log1p gives)
_LOG1P = [0.0] + [log1p(c) for c in range(1, 4096)]


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """Knobs of the online baseline; the defaults were tuned on simulated agents
    (steady, jittery human-paced, Poisson) to keep steady behaviour under ~100
    while a 50x burst scores above 900."""

    warmup_n: int = 50          # observations before any non-zero score
    memory: int = 1000          # EWMA horizon, in observations
    spread_floor: float = 0.1   # minimum MAD in log1p space (~10% relative change)
    spread_k: float = 1.25      # MAD -> sigma
    z_free: float = 3.0         # z below this scores 0 and learns at full rate
    z_scale: float = 3.0        # u at which the score reaches 500
    clip: float = 3.0           # winsorize observations at mean +- clip * sigma
    gate_factor: float = 0.05   # learning-rate multiplier for anomalous observations

    def __post_init__(self) -> None:
        if self.warmup_n < 1 or self.memory < 1:
            raise ConfigError("baseline warmup_n and memory must be >= 1")
        if min(self.spread_floor, self.spread_k, self.z_scale, self.clip) <= 0:
            raise ConfigError("baseline spread_floor, spread_k, z_scale, clip must be > 0")
        if self.z_free < 0 or not 0 <= self.gate_factor <= 1:
            raise ConfigError("baseline z_free must be >= 0 and gate_factor in [0, 1]")


_DEFAULT = BaselineConfig()


def new_params() -> array:
    """Parameters of an agent that has not been observed yet."""
    return array("d", bytes(8 * PARAMS_LEN))


def params_ok(p: Sequence[float]) -> bool:
    """Whether `p` can be a baseline's parameters: a count in 0..2**53, means and
    spreads in 0..64 (they are averages of log1p of counts that stay far below
    e**64, and of distances between such values).

    Checked when a stored state is read, so that a damaged one fails there (and
    the stream holds its partition) rather than scoring failing, or answering
    NaN, on its next action."""
    total = sum(p)
    if total - total != 0.0:                        # NaN or infinity somewhere
        return False
    rest = p[1:]
    return 0.0 <= p[0] <= _N_MAX and min(rest) >= 0.0 and max(rest) <= 64.0


def score_and_learn(p: array, counts: Sequence[float], cfg: BaselineConfig = _DEFAULT,
                    learn: bool = True) -> float:
    """Score ``counts`` (raw feature values, FEATURE_NAMES order) against the
    baseline ``p``, then (if ``learn``) update ``p`` in place.  Returns 0..1000."""
    n = p[0]
    v = [log1p(c) if c > 0 else 0.0 for c in counts]
    if n == 0.0:
        if learn:
            for f in range(_F):
                p[1 + f] = v[f]
            p[0] = 1.0
        return 0.0
    floor, k = cfg.spread_floor, cfg.spread_k
    zmax = 0.0
    scales = [0.0] * _F
    for f in range(_F):
        s = p[1 + _F + f]
        sc = k * (s if s > floor else floor)
        scales[f] = sc
        z = (v[f] - p[1 + f]) / sc
        if z > zmax:
            zmax = z
    warm = n >= cfg.warmup_n
    score = 0.0
    if warm:
        u = zmax - cfg.z_free
        if u > 0.0:
            uu = u * u
            score = 1000.0 * uu / (uu + cfg.z_scale * cfg.z_scale)
    if learn:
        alpha = 1.0 / (n + 1.0) if n < cfg.memory else 1.0 / cfg.memory
        if warm and zmax > cfg.z_free:
            alpha *= cfg.gate_factor
        c = cfg.clip
        for f in range(_F):
            m = p[1 + f]
            x = v[f]
            if warm:
                lim = c * scales[f]
                if x > m + lim:
                    x = m + lim
                elif x < m - lim:
                    x = m - lim
            s = p[1 + _F + f]
            p[1 + f] = m + alpha * (x - m)
            p[1 + _F + f] = s + alpha * (abs(x - m) - s)
        p[0] = n + 1.0 if n < _N_MAX else n
    return score


def learn_knobs(cfg: BaselineConfig) -> tuple[float, ...]:
    """`cfg` as `score_and_learn4` takes it, computed once per signal computer."""
    return (cfg.spread_floor, cfg.spread_k, float(cfg.warmup_n), cfg.z_free,
            cfg.z_scale * cfg.z_scale, float(cfg.memory), cfg.gate_factor, cfg.clip)


def score_and_learn4(p: list[float], c0: int, c1: int, c2: int, c3: int,
                     knobs: tuple[float, ...]) -> int:
    """`score_and_learn` of four integer counts (FEATURE_NAMES order), truncated to
    an int, with `learn_knobs` of its config: unrolled for the signal computer's hot
    path, with the same float operations in the same order, so the same bits (the
    differential tests hold it to that; change both or neither)."""
    n = p[0]
    v0 = _LOG1P[c0] if c0 < 4096 else log1p(c0)
    v1 = _LOG1P[c1] if c1 < 4096 else log1p(c1)
    v2 = _LOG1P[c2] if c2 < 4096 else log1p(c2)
    v3 = _LOG1P[c3] if c3 < 4096 else log1p(c3)
    if n == 0.0:
        p[1], p[2], p[3], p[4], p[0] = v0, v1, v2, v3, 1.0
        return 0
    floor, k, warmup, z_free, zs2, memory, gate, clip = knobs
    s = p[5]
    sc0 = k * (s if s > floor else floor)
    s = p[6]
    sc1 = k * (s if s > floor else floor)
    s = p[7]
    sc2 = k * (s if s > floor else floor)
    s = p[8]
    sc3 = k * (s if s > floor else floor)
    m0, m1, m2, m3 = p[1], p[2], p[3], p[4]
    zmax = 0.0
    z = (v0 - m0) / sc0
    if z > zmax:
        zmax = z
    z = (v1 - m1) / sc1
    if z > zmax:
        zmax = z
    z = (v2 - m2) / sc2
    if z > zmax:
        zmax = z
    z = (v3 - m3) / sc3
    if z > zmax:
        zmax = z
    warm = n >= warmup
    score = 0.0
    if warm:
        u = zmax - z_free
        if u > 0.0:
            uu = u * u
            score = 1000.0 * uu / (uu + zs2)
    alpha = 1.0 / (n + 1.0) if n < memory else 1.0 / memory
    if warm:
        if zmax > z_free:
            alpha *= gate
        lim = clip * sc0
        if v0 > m0 + lim:
            v0 = m0 + lim
        elif v0 < m0 - lim:
            v0 = m0 - lim
        lim = clip * sc1
        if v1 > m1 + lim:
            v1 = m1 + lim
        elif v1 < m1 - lim:
            v1 = m1 - lim
        lim = clip * sc2
        if v2 > m2 + lim:
            v2 = m2 + lim
        elif v2 < m2 - lim:
            v2 = m2 - lim
        lim = clip * sc3
        if v3 > m3 + lim:
            v3 = m3 + lim
        elif v3 < m3 - lim:
            v3 = m3 - lim
    p[1] = m0 + alpha * (v0 - m0)
    s = p[5]
    p[5] = s + alpha * (abs(v0 - m0) - s)
    p[2] = m1 + alpha * (v1 - m1)
    s = p[6]
    p[6] = s + alpha * (abs(v1 - m1) - s)
    p[3] = m2 + alpha * (v2 - m2)
    s = p[7]
    p[7] = s + alpha * (abs(v2 - m2) - s)
    p[4] = m3 + alpha * (v3 - m3)
    s = p[8]
    p[8] = s + alpha * (abs(v3 - m3) - s)
    p[0] = n + 1.0 if n < 9007199254740992.0 else n
    return int(score)


def score_rows(X: np.ndarray, P: np.ndarray, cfg: BaselineConfig = _DEFAULT) -> np.ndarray:
    """Vectorized scoring (no learning): row i of ``X`` (raw feature counts)
    against row i of ``P`` (parameters; one row broadcasts).  Same arithmetic as
    `score_and_learn`, so results agree up to the last ulp of ``log1p``."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    if X.shape[1] != _F or P.shape[1] != PARAMS_LEN:
        raise ValueError(f"expected X[:, {_F}] and P[:, {PARAMS_LEN}]")
    V = np.log1p(np.maximum(X, 0.0))
    scale = cfg.spread_k * np.maximum(P[:, 1 + _F:], cfg.spread_floor)
    z = np.maximum(((V - P[:, 1:1 + _F]) / scale).max(axis=1), 0.0)
    u = np.maximum(z - cfg.z_free, 0.0)
    uu = u * u
    out = 1000.0 * uu / (uu + cfg.z_scale * cfg.z_scale)
    out[np.broadcast_to(P[:, 0] < cfg.warmup_n, out.shape)] = 0.0
    return out


class Scorer(ABC):
    """River-style anomaly scorer over ``FEATURE_NAMES``; high = anomalous, 0..1000.

    Subclasses implement `learn_one` and `score_one`; override `score_many` with
    a vectorized version (the stream always scores a whole micro-batch at once).
    Every implementation must pass the generic checks in
    ``tests/models/test_models_scorer.py``.

    >>> from holdgate.models.scorer import OnlineBaseline
    >>> steady = {"rate_1s": 1, "rate_60s": 12, "fanout_60s": 3, "repeat_10s": 2}
    >>> model = OnlineBaseline()
    >>> for _ in range(200):
    ...     model.learn_one(steady)
    >>> model.score_one(steady)
    0.0
    >>> burst = dict(steady, rate_1s=50, rate_60s=600)
    >>> model.score_one(burst) > 900
    True
    >>> [round(s) for s in model.score_many(np.array([[1, 12, 3, 2], [50, 600, 3, 2]]))]
    [0, 988]
    """

    FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES
    model_version: str = "unversioned"

    @abstractmethod
    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the model with one observation."""

    @abstractmethod
    def score_one(self, x: Mapping[str, float]) -> float:
        """Anomaly of one observation, 0..1000 (does not learn)."""

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Anomaly of each row of ``X`` (columns = FEATURE_NAMES), 0..1000."""
        names = self.FEATURE_NAMES
        return np.array([self.score_one(dict(zip(names, row))) for row in np.asarray(X)],
                        dtype=np.float64)

    def _vector(self, x: Mapping[str, float]) -> list[float]:
        return [x.get(name, 0) for name in self.FEATURE_NAMES]


class OnlineBaseline(Scorer):
    """One agent's online baseline; ``params`` may be the array inside an
    `AgentState` (shared, not copied), so learning updates the agent's state."""

    model_version = "online-baseline/1"

    def __init__(self, *, config: BaselineConfig | None = None,
                 params: array | None = None) -> None:
        self.config = config or _DEFAULT
        if params is None:
            params = new_params()
        if len(params) != PARAMS_LEN or params.typecode != "d":
            raise ValueError(f"params must be array('d') of length {PARAMS_LEN}")
        self.params = params

    @property
    def n_seen(self) -> int:
        return int(self.params[0])

    @property
    def warm(self) -> bool:
        return self.params[0] >= self.config.warmup_n

    def learn_one(self, x: Mapping[str, float]) -> None:
        score_and_learn(self.params, self._vector(x), self.config, learn=True)

    def score_one(self, x: Mapping[str, float]) -> float:
        return score_and_learn(self.params, self._vector(x), self.config, learn=False)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return score_rows(X, np.frombuffer(self.params, dtype=np.float64), self.config)
