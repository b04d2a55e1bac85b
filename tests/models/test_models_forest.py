"""Isolation forest: numpy scores equal sklearn's, artifacts round-trip, tampering is refused."""
from __future__ import annotations

import doctest
import io
import zlib
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
import pytest

import holdgate.models.forest as forest_mod
from holdgate.errors import ModelError
from holdgate.models import FEATURE_NAMES, save_model
from holdgate.models.artifact import ARRAYS_FILE, MANIFEST_FILE
from holdgate.models.forest import FOREST_KIND, ForestModel, average_path_length, fit_forest

sklearn_ensemble = pytest.importorskip("sklearn.ensemble")
IsolationForest = sklearn_ensemble.IsolationForest
TOL = 1e-9


def names(k: int) -> list[str]:
    return [f"f{i}" for i in range(k)]


def probes(model: ForestModel, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training rows, fresh rows, far-out rows, rows sitting exactly on split
    thresholds (the float32 rounding edge), infinities and NaNs."""
    k = X.shape[1]
    fresh = X[rng.integers(0, len(X), 64)] + rng.normal(0, 1, (64, k))
    far = np.vstack([X[:16] * 1e3, -np.abs(X[:16]) * 1e3 - 1e6, np.full((1, k), 1e39)])
    a = model.to_arrays()
    inner = a["children_left"] != -1
    on = np.repeat(X[:1].astype(np.float64), 64, axis=0)
    if inner.any():
        pick = rng.integers(0, inner.sum(), 64)
        on[np.arange(64), a["feature"][inner][pick]] = a["threshold"][inner][pick]
    odd = np.array([[np.inf] * k, [-np.inf] * k, [np.nan] * k])
    holes = fresh[:32].copy()
    holes[rng.random(holes.shape) < 0.3] = np.nan
    return np.vstack([X[:200], fresh, far, on, odd, holes])


def assert_matches(est: Any, model: ForestModel, Y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # float32 overflow in both paths
        want, got = est.score_samples(Y), model.score_samples(Y)
        dwant, dgot = est.decision_function(Y), model.decision_function(Y)
    diff = float(np.max(np.abs(want - got)))
    assert diff <= TOL, diff
    assert np.max(np.abs(dwant - dgot)) <= TOL
    return diff


# -- equality with sklearn ----------------------------------------------------

def _normal(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1, (n, k)) * rng.uniform(0.1, 100, k)


def _duplicated(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.repeat(rng.normal(0, 1, (20, k)), n // 20, axis=0)


def _constant_cols(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.normal(0, 1, (n, k))
    X[:, ::2] = 3.0
    return X


def _all_constant(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.full((n, k), 7.0)


def _with_nans(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.normal(0, 1, (n, k))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


CASES: list[tuple[str, Callable[..., np.ndarray], int, int, dict[str, Any]]] = [
    ("one-tree", _normal, 300, 4, dict(n_estimators=1, max_samples=16)),
    ("many-trees-auto", _normal, 1000, 6, dict(n_estimators=200, max_samples="auto")),
    ("tiny-data-contam", _normal, 50, 3, dict(n_estimators=30, contamination=0.1)),
    ("float-samples", _normal, 500, 5, dict(n_estimators=40, max_samples=0.3,
                                            contamination=0.01)),
    ("psi-1", _normal, 40, 2, dict(n_estimators=5, max_samples=1)),
    ("psi-2", _normal, 40, 2, dict(n_estimators=5, max_samples=2, contamination=0.2)),
    ("duplicated-rows", _duplicated, 400, 3, dict(n_estimators=50, max_samples=64)),
    ("constant-cols", _constant_cols, 300, 5, dict(n_estimators=50)),
    ("all-constant", _all_constant, 100, 3, dict(n_estimators=5, contamination=0.05)),
    ("max-features-0.5", _normal, 400, 6, dict(n_estimators=60, max_features=0.5)),
    ("max-features-int", _normal, 400, 6, dict(n_estimators=60, max_features=2)),
    ("bootstrap", _normal, 400, 4, dict(n_estimators=60, bootstrap=True, max_samples=128)),
    ("nan-in-fit", _with_nans, 400, 3, dict(n_estimators=40)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_sklearn(case: tuple[Any, ...]) -> None:
    _, make, n, k, params = case
    rng = np.random.default_rng(zlib.crc32(case[0].encode()))
    X = make(n, k, rng)
    est = IsolationForest(random_state=7, **params).fit(X)
    model = ForestModel.from_sklearn(est, feature_names=names(k))
    assert model.offset == est.offset_ and model.n_estimators == len(est.estimators_)
    assert_matches(est, model, probes(model, X, rng))


def skewed_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed per-agent counts in FEATURE_NAMES order (rate_1s, rate_60s, ...)."""
    base = rng.pareto(1.5, n) + 0.2
    return np.column_stack([rng.poisson(base), rng.poisson(base * 40),
                            rng.negative_binomial(2, 0.3, n), rng.poisson(base * 5)])


def test_realistic_skewed_counts_in_and_out_of_distribution() -> None:
    rng = np.random.default_rng(11)
    X = skewed_counts(4000, rng).astype(np.float64)
    est = IsolationForest(n_estimators=100, max_samples=256, random_state=3).fit(X)
    model = ForestModel.from_sklearn(est, feature_names=FEATURE_NAMES)
    inside = skewed_counts(500, rng)
    burst = inside[:100] * np.array([50, 50, 1, 20])
    novel = np.column_stack([rng.integers(500, 5000, (100, 2)), rng.integers(0, 3, (100, 2))])
    assert_matches(est, model, np.vstack([inside, burst, novel]).astype(np.float64))
    s_in, s_burst = model.score_samples(inside), model.score_samples(burst)
    assert np.median(s_burst) < np.median(s_in)    # sklearn's sign: lower = more abnormal
    assert model.feature_names == FEATURE_NAMES and model.meta["max_samples"] == 256


def test_batch_size_and_chunking_do_not_change_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    X = rng.lognormal(0, 1, (600, 4))
    model = fit_forest(X, feature_names=names(4), n_estimators=50)
    whole = model.score_samples(X)
    assert np.array_equal(np.concatenate([model.score_samples(r) for r in X[:40]]), whole[:40])
    monkeypatch.setattr(forest_mod, "_CHUNK_CELLS", 50 * 7)     # 7 rows per chunk
    assert np.array_equal(model.score_samples(X), whole)
    assert model.score_samples(np.empty((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        model.score_samples(X[:, :3])


def test_doctests() -> None:
    result = doctest.testmod(forest_mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_average_path_length_is_sklearns() -> None:
    from sklearn.ensemble._iforest import _average_path_length

    n = np.arange(0, 5000)
    assert np.array_equal(average_path_length(n), _average_path_length(n))


def test_fit_forest_is_sklearn_with_the_same_parameters() -> None:
    rng = np.random.default_rng(12)
    X = skewed_counts(1000, rng).astype(np.float64)
    model = fit_forest(X, feature_names=FEATURE_NAMES, n_estimators=20, random_state=4,
                       contamination=0.02)
    est = IsolationForest(n_estimators=20, max_samples=256, random_state=4,
                          contamination=0.02).fit(X)
    assert_matches(est, model, np.vstack([X[:300], skewed_counts(200, rng) * 30]))
    assert model.meta["params"]["contamination"] == 0.02


def test_fit_forest_clips_max_samples_silently_and_checks_names() -> None:
    X = np.random.default_rng(0).normal(size=(100, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fit_forest(X, feature_names=["a", "b"], n_estimators=3)   # 256 > 100
    assert model.max_samples == 100
    with pytest.raises(ValueError):
        fit_forest(X, feature_names=["a"])
    with pytest.raises(ModelError, match="fitted sklearn IsolationForest"):
        ForestModel.from_sklearn(IsolationForest(), feature_names=["a", "b"])


# -- persistence ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small() -> tuple[ForestModel, np.ndarray]:
    rng = np.random.default_rng(9)
    X = rng.lognormal(0, 1, (300, 3))
    return fit_forest(X, feature_names=["a", "b", "c"], n_estimators=8, max_samples=32), X


def test_save_load_round_trip(tmp_path: Path, small: tuple[ForestModel, np.ndarray]) -> None:
    model, X = small
    version = model.save(tmp_path / "m")
    back = ForestModel.load(tmp_path / "m")
    assert version.startswith("sha256:") and back.model_version == version
    assert np.array_equal(back.score_samples(X), model.score_samples(X))
    assert np.array_equal(back.decision_function(X), model.decision_function(X))
    meta = orjson.loads((tmp_path / "m" / MANIFEST_FILE).read_bytes())["meta"]
    assert meta["kind"] == FOREST_KIND and meta["feature_names"] == ["a", "b", "c"]
    assert {"n_estimators", "max_samples", "sklearn_version", "normaliser", "offset"} <= set(meta)
    again = ForestModel.from_arrays(back.to_arrays(), back.meta)
    assert np.array_equal(again.score_samples(X), model.score_samples(X))


def test_runtime_needs_no_sklearn(tmp_path: Path, small: tuple[ForestModel, np.ndarray]) -> None:
    model, X = small
    model.save(tmp_path / "m")
    np.save(tmp_path / "x.npy", X)
    code = ("import sys, numpy as np\n"
            "from holdgate.models.forest import ForestModel\n"
            f"m = ForestModel.load({str(tmp_path / 'm')!r})\n"
            f"print(m.score_samples(np.load({str(tmp_path / 'x.npy')!r})).sum())\n"
            "assert not any(k.split('.')[0] in ('sklearn', 'joblib') for k in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(model.score_samples(X).sum(), abs=1e-9)


def test_load_uses_allow_pickle_false(tmp_path: Path, small: tuple[ForestModel, np.ndarray],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = small
    model.save(tmp_path / "m")
    calls: list[dict[str, Any]] = []
    real = np.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    ForestModel.load(tmp_path / "m")
    assert calls and all(c.get("allow_pickle") is False for c in calls)


def test_object_array_is_refused(tmp_path: Path, small: tuple[ForestModel, np.ndarray]) -> None:
    model, _ = small
    bad = dict(model.to_arrays(), threshold=np.array([object()] * len(model.to_arrays()
                                                                      ["threshold"])))
    with pytest.raises(ModelError, match="'threshold'"):
        ForestModel.from_arrays(bad, model.meta)
    model.save(tmp_path / "m")                       # a pickled array inside the npz
    buf = io.BytesIO()
    np.savez(buf, **dict(model.to_arrays(), threshold=np.array([{"x": 1}], dtype=object)))
    (tmp_path / "m" / ARRAYS_FILE).write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="cannot read model arrays"):
        ForestModel.load(tmp_path / "m")


def test_truncated_npz_is_refused(tmp_path: Path, small: tuple[ForestModel, np.ndarray]) -> None:
    model, _ = small
    model.save(tmp_path / "m")
    p = tmp_path / "m" / ARRAYS_FILE
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ModelError, match="cannot read model arrays"):
        ForestModel.load(tmp_path / "m")


def test_manifest_mismatch_and_unknown_format(tmp_path: Path,
                                              small: tuple[ForestModel, np.ndarray]) -> None:
    model, _ = small
    model.save(tmp_path / "m")
    mpath = tmp_path / "m" / MANIFEST_FILE
    good = mpath.read_bytes()
    manifest = orjson.loads(good)
    manifest["meta"]["offset"] = 0.0                 # edited without re-hashing
    mpath.write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelError, match="content hash"):
        ForestModel.load(tmp_path / "m")
    manifest = orjson.loads(good)
    manifest["format"] = "holdgate.model/99"
    mpath.write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelError, match="not a holdgate.model/1 manifest"):
        ForestModel.load(tmp_path / "m")
    save_model(tmp_path / "other", model.to_arrays(), dict(model.meta, kind="a-gbdt/1"))
    with pytest.raises(ModelError, match="unknown model kind 'a-gbdt/1'"):
        ForestModel.load(tmp_path / "other")


# -- tampered arrays: ModelError, never IndexError or a hang ------------------------

def _first_inner(a: dict[str, np.ndarray]) -> int:
    return int(np.flatnonzero(a["children_left"] != -1)[0])


def _set(name: str, fn: Callable[[np.ndarray, int], None]) -> Callable[..., None]:
    def edit(a: dict[str, np.ndarray], m: dict[str, Any]) -> None:
        fn(a[name], _first_inner(a))
    return edit


def _chain(a: dict[str, np.ndarray], m: dict[str, Any]) -> None:
    """Path trees 40 deep (sklearn would stop at log2(max_samples)): slow, so refused."""
    k, t = 40, m["n_estimators"]
    n = 2 * k + 1
    left, right = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    inner = np.arange(0, 2 * k, 2)
    left[inner], right[inner] = inner + 1, inner + 2
    one = {"feature": np.zeros(n, np.int32), "threshold": np.zeros(n), "children_left": left,
           "children_right": right, "missing_left": np.zeros(n, bool), "leaf_value": np.ones(n)}
    for name, v in one.items():
        a[name] = np.tile(v, t)
    a["tree_offsets"] = np.arange(t + 1, dtype=np.int64) * n


def _cycle(a: dict[str, np.ndarray], m: dict[str, Any]) -> None:
    """An inner node below the root points back at the root."""
    end = int(a["tree_offsets"][1])
    j = int(np.flatnonzero(a["children_left"][1:end] != -1)[0]) + 1
    a["children_right"][j] = 0


TAMPER: dict[str, tuple[Callable[..., None], str]] = {
    "child-out-of-range": (_set("children_left", lambda c, i: c.__setitem__(i, 10**6)),
                           "out of range"),
    "child-negative": (_set("children_right", lambda c, i: c.__setitem__(i, -5)),
                       "out of range"),
    "cycle-to-root": (_cycle, "cycle"),
    "self-loop": (_set("children_left", lambda c, i: c.__setitem__(i, i)), "cycle"),
    "two-parents": (lambda a, m: a["children_right"].__setitem__(
        0, a["children_left"][0]), "exactly one parent"),
    "leaf-with-child": (lambda a, m: a["children_right"].__setitem__(
        int(np.flatnonzero(a["children_left"] == -1)[0]), 1), "leaf"),
    "feature-too-big": (_set("feature", lambda c, i: c.__setitem__(i, 3)), "feature index"),
    "feature-negative": (_set("feature", lambda c, i: c.__setitem__(i, -2)), "feature index"),
    "nan-threshold": (_set("threshold", lambda c, i: c.__setitem__(i, np.nan)), "NaN"),
    "nan-leaf-value": (lambda a, m: a["leaf_value"].__setitem__(
        int(np.flatnonzero(a["children_left"] == -1)[0]), np.nan), "leaf_value"),
    "wrong-dtype": (lambda a, m: a.__setitem__("children_left", a["children_left"].astype(
        np.int64)), "'children_left' must be int32"),
    "float-feature": (lambda a, m: a.__setitem__("feature", a["feature"].astype(np.float32)),
                      "'feature' must be int32"),
    "wrong-shape": (lambda a, m: a.__setitem__("threshold", a["threshold"][:, None]), "1-D"),
    "short-array": (lambda a, m: a.__setitem__("leaf_value", a["leaf_value"][:-1]),
                    "share one non-zero length"),
    "missing-array": (lambda a, m: a.pop("missing_left"), "arrays must be exactly"),
    "extra-array": (lambda a, m: a.__setitem__("code", np.zeros(1)), "arrays must be exactly"),
    "offsets-off": (lambda a, m: a["tree_offsets"].__setitem__(1, 10**9), "tree_offsets"),
    "too-deep": (_chain, "deeper than"),
    "tree-count": (lambda a, m: m.__setitem__("n_estimators", m["n_estimators"] + 1),
                   "tree_offsets"),
    "normaliser": (lambda a, m: m.__setitem__("normaliser", 1.5), "normaliser"),
    "offset-inf": (lambda a, m: m.__setitem__("offset", float("inf")), "offset"),
    "feature-names": (lambda a, m: m.__setitem__("feature_names", ["a", "a", "c"]),
                      "distinct"),
    "psi-bool": (lambda a, m: m.__setitem__("max_samples", True), "max_samples"),
    "psi-huge": (lambda a, m: m.__setitem__("max_samples", 2**62), "max_samples"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_artifact_is_refused(case: str, tmp_path: Path,
                                      small: tuple[ForestModel, np.ndarray]) -> None:
    model, _ = small
    arrays, meta = model.to_arrays(), model.meta
    edit, message = TAMPER[case]
    edit(arrays, meta)
    with pytest.raises(ModelError, match=message):
        ForestModel.from_arrays(arrays, meta)
    try:                                 # the same edit with a valid hash: load refuses too
        save_model(tmp_path / "m", arrays, meta)
    except ModelError:
        return                           # (save itself refuses e.g. object arrays)
    with pytest.raises(ModelError, match=message):
        ForestModel.load(tmp_path / "m")
