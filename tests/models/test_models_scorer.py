"""Scorers: one generic check suite run against every implementation, plus the
online baseline's own properties and the modules' doctests."""
from __future__ import annotations

import doctest
import importlib
from array import array
from typing import Callable

import numpy as np
import pytest

from holdgate.errors import ConfigError
from holdgate.models import FEATURE_NAMES, BaselineConfig, OnlineBaseline, Scorer
from holdgate.models.scorer import PARAMS_LEN, score_and_learn, score_rows

STEADY = {"rate_1s": 1, "rate_60s": 12, "fanout_60s": 3, "repeat_10s": 2}


def jittery(rng: np.random.Generator) -> dict[str, float]:
    return {"rate_1s": int(rng.integers(1, 3)), "rate_60s": int(rng.integers(9, 16)),
            "fanout_60s": int(rng.integers(2, 5)), "repeat_10s": int(rng.integers(1, 3))}


SCORERS: dict[str, Callable[[], Scorer]] = {
    "online-baseline": OnlineBaseline,
    "online-baseline-fast-warmup": lambda: OnlineBaseline(config=BaselineConfig(warmup_n=5)),
}


@pytest.fixture(params=sorted(SCORERS))
def make_scorer(request: pytest.FixtureRequest) -> Callable[[], Scorer]:
    return SCORERS[request.param]


def trained(make: Callable[[], Scorer], n: int = 300) -> Scorer:
    rng = np.random.default_rng(0)
    s = make()
    for _ in range(n):
        s.learn_one(jittery(rng))
    return s


# -- generic checks: every Scorer -------------------------------------------

def test_check_feature_names(make_scorer: Callable[[], Scorer]) -> None:
    s = make_scorer()
    assert isinstance(s, Scorer) and tuple(s.FEATURE_NAMES) and isinstance(s.model_version, str)


def test_check_scores_in_range(make_scorer: Callable[[], Scorer]) -> None:
    s = trained(make_scorer)
    rng = np.random.default_rng(1)
    X = rng.integers(0, 100_000, size=(500, len(s.FEATURE_NAMES))).astype(float)
    out = s.score_many(X)
    assert out.shape == (500,) and out.dtype == np.float64
    assert np.all((out >= 0) & (out <= 1000)) and np.all(np.isfinite(out))


def test_check_score_one_does_not_learn(make_scorer: Callable[[], Scorer]) -> None:
    s = trained(make_scorer)
    before = s.score_one(STEADY)
    for _ in range(50):
        s.score_one(dict(STEADY, rate_1s=500))
    assert s.score_one(STEADY) == before


def test_check_score_many_agrees_with_score_one(make_scorer: Callable[[], Scorer]) -> None:
    s = trained(make_scorer)
    rng = np.random.default_rng(2)
    X = rng.integers(0, 2_000, size=(200, len(s.FEATURE_NAMES))).astype(float)
    rows = [s.score_one(dict(zip(s.FEATURE_NAMES, r))) for r in X]
    np.testing.assert_allclose(s.score_many(X), rows, atol=1e-6)


def test_check_high_means_anomalous(make_scorer: Callable[[], Scorer]) -> None:
    s = trained(make_scorer)
    calm = s.score_one(STEADY)
    burst = [s.score_one(dict(STEADY, rate_1s=k, rate_60s=12 * k)) for k in (2, 5, 20, 50)]
    assert calm < 100 and burst == sorted(burst) and burst[-1] > 900


def test_check_deterministic(make_scorer: Callable[[], Scorer]) -> None:
    a, b = trained(make_scorer), trained(make_scorer)
    X = np.array([[1, 12, 3, 2], [40, 400, 9, 9], [3, 30, 1, 1]], dtype=float)
    assert a.score_many(X).tolist() == b.score_many(X).tolist()


# -- the online baseline specifically ---------------------------------------

def test_zero_until_warm() -> None:
    cfg = BaselineConfig(warmup_n=10)
    b = OnlineBaseline(config=cfg)
    for _ in range(10):
        assert b.score_one(dict(STEADY, rate_1s=1000)) == 0.0
        assert not b.warm
        b.learn_one(STEADY)
    assert b.warm and b.n_seen == 10
    assert b.score_one(dict(STEADY, rate_1s=1000)) > 900


def test_sustained_attack_is_not_learned_quickly() -> None:
    b = trained(OnlineBaseline, n=500)
    attack = dict(STEADY, rate_1s=50, rate_60s=600)
    scores = []
    for _ in range(1000):
        scores.append(b.score_one(attack))
        b.learn_one(attack)
    assert min(scores) > 900  # 1000 anomalous observations barely move the baseline


def test_regime_change_is_absorbed_eventually() -> None:
    b = trained(OnlineBaseline, n=500)
    new = dict(STEADY, rate_1s=5, rate_60s=60)
    first = b.score_one(new)
    for _ in range(30_000):
        b.learn_one(new)
    assert first > 500 and b.score_one(new) < 100


def test_params_are_shared_with_the_state_array() -> None:
    p = array("d", bytes(8 * PARAMS_LEN))
    b = OnlineBaseline(params=p)
    b.learn_one(STEADY)
    assert p[0] == 1.0 and b.params is p
    with pytest.raises(ValueError):
        OnlineBaseline(params=array("d", [0.0]))


def test_python_and_numpy_paths_agree_on_many_agents() -> None:
    rng = np.random.default_rng(4)
    P, X = [], rng.integers(0, 5000, size=(300, len(FEATURE_NAMES)))
    for _ in range(300):
        p = array("d", bytes(8 * PARAMS_LEN))
        for _ in range(int(rng.integers(0, 120))):
            score_and_learn(p, [int(v) for v in rng.integers(0, 50, len(FEATURE_NAMES))])
        P.append(list(p))
    py = [score_and_learn(array("d", p), [int(v) for v in x], learn=False) for p, x in zip(P, X)]
    np.testing.assert_allclose(score_rows(X, np.array(P)), py, atol=1e-6)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        BaselineConfig(warmup_n=0)
    with pytest.raises(ConfigError):
        BaselineConfig(gate_factor=2.0)


@pytest.mark.parametrize("module", ["scorer", "windows", "recent", "sketch"])
def test_doctests(module: str) -> None:
    mod = importlib.import_module(f"holdgate.models.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
