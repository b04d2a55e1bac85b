"""Isolation forest: fitted by scikit-learn offline, scored by numpy in the stream.

Why not ship the sklearn estimator: loading it means unpickling (code chosen by
whoever wrote the file), and scoring one row through it costs milliseconds of
per-tree Python overhead.  Here sklearn is used only by `fit_forest` (imported
lazily, on the analyst's machine); every tree is then exported into flat arrays
that `holdgate.models.artifact` stores and hashes, and the worker walks all
trees for all rows of a micro-batch at once, one numpy step per depth level.

Artifact arrays (``N`` nodes of all trees concatenated in tree order, each tree
in sklearn's own depth-first node order; ``T`` trees)::

    tree_offsets   int64[T+1]  nodes of tree t are [offsets[t], offsets[t+1])
    feature        int32[N]    column of X tested (already mapped through
                               ``estimators_features_``); leaves: -2 (unused)
    threshold      float64[N]  go left when x <= threshold (x rounded to float32)
    children_left  int32[N]    tree-local child index; -1 on leaves
    children_right int32[N]
    missing_left   bool[N]     where a NaN goes (sklearn's missing_go_to_left)
    leaf_value     float64[N]  depth + c(n_node_samples) - 1, as sklearn caches it

and meta: ``kind``, ``feature_names``, ``n_estimators``, ``max_samples``,
``normaliser`` (c(max_samples)), ``offset`` (sklearn's ``offset_``) and the
sklearn version that fitted it.

Exactness (mirrors scikit-learn 1.9 ``IsolationForest._compute_score_samples``):
X is rounded to float32 like sklearn's input validation and compared with the
float64 threshold; the per-tree term is sklearn's own cached
``_decision_path_lengths + _average_path_length_per_tree - 1.0``; trees are summed
in order (a cumulative sum, sequential like sklearn's ``depths +=``, so a
row's score never depends on the batch it came in), then ``-2 ** -(depths / (T * c(psi)))``.  The
result is bit-identical to ``score_samples`` on the tested sklearn version.

Why the validation in `ForestModel.from_arrays`: the content hash only proves
that nobody edited the file *without* rewriting its manifest.  Every index the
hot path follows is checked once at load (children inside their tree and after
their parent, so no cycle; one parent per node; features in range; depth
bounded) so a hostile artifact raises `ModelError` instead of an IndexError or
an endless walk inside the worker.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from holdgate.errors import ModelError
from holdgate.models.artifact import load_model, save_model

__all__ = ["FOREST_KIND", "MAX_DEPTH", "ForestModel", "fit_forest", "average_path_length"]

FOREST_KIND = "holdgate.isolation_forest/1"
MAX_DEPTH = 32            # sklearn's trees are at most ceil(log2(max_samples)) deep
_MAX_COUNT = 2**31 - 1    # bound on n_estimators / max_samples read from meta
_CHUNK_CELLS = 1 << 19    # (trees x rows) index cells per chunk: ~4 MB of intp

# name -> dtype (either byte order); node arrays all have length N.
_NODE_SPEC: dict[str, np.dtype[Any]] = {
    "feature": np.dtype(np.int32), "threshold": np.dtype(np.float64),
    "children_left": np.dtype(np.int32), "children_right": np.dtype(np.int32),
    "missing_left": np.dtype(np.bool_), "leaf_value": np.dtype(np.float64)}
_SPEC: dict[str, np.dtype[Any]] = {"tree_offsets": np.dtype(np.int64), **_NODE_SPEC}


def average_path_length(n: np.ndarray | Sequence[int] | int) -> np.ndarray:
    """c(n): mean path length of an unsuccessful BST search among ``n`` points.

    Same arithmetic as sklearn's ``_average_path_length`` (float64, same operation
    order), so the normaliser can be re-derived and checked at load.
    """
    m = np.asarray(n, dtype=np.int64).astype(np.float64)
    out = np.zeros(m.shape)
    big = m > 2
    out[m == 2] = 1.0
    out[big] = 2.0 * (np.log(m[big] - 1.0) + np.euler_gamma) - 2.0 * (m[big] - 1.0) / m[big]
    return out


def _fail(msg: str) -> ModelError:
    return ModelError(f"isolation forest artifact: {msg}")


def _checked_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping) or set(arrays) != set(_SPEC):
        got: Any = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
        raise _fail(f"arrays must be exactly {sorted(_SPEC)}, got {got}")
    out: dict[str, np.ndarray] = {}
    for name, want in _SPEC.items():
        a = arrays[name]
        if not isinstance(a, np.ndarray) or a.dtype.kind != want.kind or \
                a.dtype.itemsize != want.itemsize:
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise _fail(f"array {name!r} must be {want}, got {got}")
        if a.ndim != 1:
            raise _fail(f"array {name!r} must be 1-D, got shape {a.shape}")
        out[name] = np.array(a, dtype=a.dtype.newbyteorder("="))  # native, owned copy
    n = {len(out[k]) for k in _NODE_SPEC}
    if len(n) != 1 or n == {0}:
        raise _fail(f"node arrays must share one non-zero length, got {sorted(n)}")
    return out


def _checked_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(meta, Mapping) or meta.get("kind") != FOREST_KIND:
        kind = meta.get("kind") if isinstance(meta, Mapping) else None
        raise _fail(f"unknown model kind {kind!r} (this code reads {FOREST_KIND!r})")
    names, t, psi = meta.get("feature_names"), meta.get("n_estimators"), meta.get("max_samples")
    if not isinstance(names, list) or not names or len(set(names)) != len(names) or \
            not all(isinstance(s, str) and s for s in names):
        raise _fail("feature_names must be a non-empty list of distinct strings")
    for key, v in (("n_estimators", t), ("max_samples", psi)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_COUNT:
            raise _fail(f"{key} must be an integer in 1..{_MAX_COUNT}, got {v!r}")
    for key in ("normaliser", "offset"):
        v = meta.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise _fail(f"{key} must be a finite number, got {v!r}")
    assert isinstance(psi, int)                          # checked above
    want = float(average_path_length([psi])[0])
    if not math.isclose(meta["normaliser"], want, rel_tol=1e-12, abs_tol=0.0):
        raise _fail(f"normaliser {meta['normaliser']!r} is not c(max_samples={psi}) = {want!r}")
    return dict(meta)


class ForestModel:
    """A fitted isolation forest as flat arrays; score a whole batch per call.

    Build it with `fit_forest`, `from_sklearn`, `from_arrays` or `load`; every path
    goes through the same validation, and the scoring arrays never change after.
    """

    __slots__ = ("feature_names", "n_estimators", "max_samples", "normaliser", "offset",
                 "model_version", "_arrays", "_meta", "_depth", "_roots", "_feat",
                 "_thr", "_kids", "_nan_right", "_value")

    def __init__(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        a, m = _checked_arrays(arrays), _checked_meta(meta)
        self._arrays, self._meta = a, m
        self.feature_names: tuple[str, ...] = tuple(m["feature_names"])
        self.n_estimators: int = m["n_estimators"]
        self.max_samples: int = m["max_samples"]
        self.normaliser = float(m["normaliser"])
        self.offset = float(m["offset"])
        self.model_version = "unversioned"
        self._build(a)

    def _build(self, a: dict[str, np.ndarray]) -> None:
        """Check every index the hot path will follow, then lay out global arrays."""
        offs, t_count = a["tree_offsets"], self.n_estimators
        n = len(a["feature"])
        if len(offs) != t_count + 1 or offs[0] != 0 or offs[-1] != n or np.any(np.diff(offs) < 1):
            raise _fail(f"tree_offsets must rise strictly from 0 to {n} over "
                        f"{t_count} trees")
        size = np.diff(offs)
        tree = np.repeat(np.arange(t_count), size)
        base, size = offs[:-1][tree], size[tree]
        local = np.arange(n) - base
        left, right = a["children_left"].astype(np.int64), a["children_right"].astype(np.int64)
        leaf = left == -1
        inner = ~leaf
        if np.any(right[leaf] != -1):
            raise _fail("a leaf (children_left == -1) has a right child")
        for kids in (left[inner], right[inner]):
            if np.any((kids < 0) | (kids >= size[inner])):
                raise _fail("child index out of range of its tree")
            if np.any(kids <= local[inner]):
                raise _fail("a child index does not follow its parent (cycle or "
                            "not sklearn's depth-first node order)")
        gl, gr = left[inner] + base[inner], right[inner] + base[inner]
        parents = np.bincount(np.concatenate([gl, gr]), minlength=n)
        want = np.ones(n, dtype=np.int64)
        want[offs[:-1]] = 0
        if np.any(parents != want):
            raise _fail("every node but a root must have exactly one parent")
        feat = a["feature"].astype(np.intp)
        if np.any((feat[inner] < 0) | (feat[inner] >= len(self.feature_names))):
            raise _fail(f"feature index out of range 0..{len(self.feature_names) - 1}")
        if np.any(np.isnan(a["threshold"][inner])):
            raise _fail("NaN threshold on a split node")
        value = a["leaf_value"]
        if not np.all(np.isfinite(value[leaf]) & (value[leaf] >= 0)):
            raise _fail("leaf_value must be finite and >= 0 on leaves")
        # depth by levels: edges only go forward and each node has one parent, so
        # this ends; the bound keeps a tampered degenerate tree from being slow.
        limit = min(MAX_DEPTH, max(1, math.ceil(math.log2(max(self.max_samples, 2)))))
        cl, cr = np.full(n, -1, np.intp), np.full(n, -1, np.intp)
        cl[inner], cr[inner] = gl, gr
        frontier, depth = offs[:-1].astype(np.intp), 0
        while True:
            frontier = frontier[inner[frontier]]
            if not len(frontier):
                break
            depth += 1
            if depth > limit:
                raise _fail(f"a tree is deeper than {limit} (max_samples={self.max_samples})")
            frontier = np.concatenate([cl[frontier], cr[frontier]])
        me = np.arange(n, dtype=np.intp)
        kids2 = np.empty((n, 2), dtype=np.intp)   # leaves point at themselves
        kids2[:, 0] = np.where(inner, cl, me)
        kids2[:, 1] = np.where(inner, cr, me)
        self._depth = depth
        self._roots = offs[:-1].astype(np.intp)
        self._feat = np.where(inner, feat, 0).astype(np.intp)
        self._thr = np.ascontiguousarray(a["threshold"], dtype=np.float64)
        self._kids = kids2.ravel()
        self._nan_right = ~a["missing_left"].astype(bool)
        self._value = np.ascontiguousarray(value, dtype=np.float64)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> ForestModel:
        """Validate and build; any inconsistency raises `ModelError`."""
        return cls(arrays, meta)

    @classmethod
    def from_sklearn(cls, est: Any, *, feature_names: Sequence[str]) -> ForestModel:
        """Export a fitted ``sklearn.ensemble.IsolationForest`` (dense scoring).

        Reads the per-tree caches sklearn itself scores with
        (``_decision_path_lengths``, ``_average_path_length_per_tree``: 1.5+).
        """
        import sklearn
        from sklearn.ensemble import IsolationForest
        from sklearn.ensemble._iforest import _average_path_length

        if not isinstance(est, IsolationForest) or not hasattr(est, "estimators_"):
            raise ModelError("from_sklearn needs a fitted sklearn IsolationForest")
        dpl = getattr(est, "_decision_path_lengths", None)
        apl = getattr(est, "_average_path_length_per_tree", None)
        if dpl is None or apl is None:
            raise ModelError(f"scikit-learn {sklearn.__version__} lacks the per-tree path "
                             "caches this exporter mirrors (needs >= 1.5)")
        n_feat = int(est.n_features_in_)
        if len(feature_names) != n_feat:
            raise ModelError(f"{len(feature_names)} feature_names for {n_feat} features")
        # sklearn indexes X[:, features] only when it drew fewer features than it has.
        subsample = est._max_features != n_feat
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _NODE_SPEC}
        sizes = []
        for k, (tree_est, cols) in enumerate(zip(est.estimators_, est.estimators_features_)):
            tr = tree_est.tree_
            feat = np.array(tr.feature, dtype=np.int64)
            if subsample:
                inner = tr.children_left != -1
                feat[inner] = np.asarray(cols)[feat[inner]]
            parts["feature"].append(feat.astype(np.int32))
            parts["threshold"].append(np.asarray(tr.threshold, dtype=np.float64))
            parts["children_left"].append(tr.children_left.astype(np.int32))
            parts["children_right"].append(tr.children_right.astype(np.int32))
            parts["missing_left"].append(np.asarray(tr.missing_go_to_left).astype(bool))
            parts["leaf_value"].append(dpl[k] + apl[k] - 1.0)   # sklearn's exact expression
            sizes.append(tr.node_count)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        arrays["tree_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        psi = int(est._max_samples)
        params = {k: v for k, v in est.get_params().items()   # provenance, JSON-able only
                  if k in ("contamination", "max_features", "bootstrap", "random_state")
                  and (v is None or isinstance(v, (bool, int, float, str)))}
        meta = {"kind": FOREST_KIND, "feature_names": list(feature_names),
                "n_estimators": len(est.estimators_), "max_samples": psi,
                "normaliser": float(_average_path_length([psi])[0]),
                "offset": float(est.offset_), "sklearn_version": sklearn.__version__,
                "params": params}
        return cls(arrays, meta)

    # -- persistence --------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The artifact arrays (copies; layout in the module docstring)."""
        return {k: v.copy() for k, v in self._arrays.items()}

    @property
    def meta(self) -> dict[str, Any]:
        """The artifact meta (a copy)."""
        return dict(self._meta)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write an artifact directory; returns (and adopts) its content-hash version."""
        self.model_version = save_model(path, self._arrays, self._meta)
        return self.model_version

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ForestModel:
        """Read, hash-check and validate an artifact; never runs code from the file."""
        arrays, manifest = load_model(path)
        model = cls(arrays, manifest["meta"])
        model.model_version = manifest["model_version"]
        return model

    # -- scoring --------------------------------------------------------------
    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """sklearn's ``score_samples``: the opposite of the paper's anomaly score,
        in [-1, 0); lower is more abnormal.  Vectorized over rows and trees."""
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        n_feat = len(self.feature_names)
        if X.ndim != 2 or X.shape[1] != n_feat:
            raise ValueError(f"expected X of shape (n, {n_feat}), got {X.shape}")
        # sklearn validates input to float32; the compare then promotes to float64.
        Xf = X.astype(np.float32).astype(np.float64)
        out = np.empty(len(Xf))
        step = max(1, _CHUNK_CELLS // self.n_estimators)
        for lo in range(0, len(Xf), step):          # one pass for any batch <= step rows
            out[lo:lo + step] = self._depths(Xf[lo:lo + step])
        denominator = self.n_estimators * self.normaliser
        # For a single training sample, denominator and depth are 0: score 1 (sklearn).
        return -(2 ** (-np.divide(out, denominator, out=np.ones_like(out),
                                  where=denominator != 0)))

    def _depths(self, Xf: np.ndarray) -> np.ndarray:
        """Sum over trees of the leaf's path length for each row of ``Xf``."""
        n, n_feat = Xf.shape
        flat = Xf.ravel()
        rowbase = np.arange(0, n * n_feat, n_feat, dtype=np.intp)
        idx = np.repeat(self._roots[:, None], n, axis=1)  # (trees, rows): sum order below
        has_nan = bool(np.isnan(flat).any())
        feat, thr, kids, nan_right = self._feat, self._thr, self._kids, self._nan_right
        for _ in range(self._depth):
            x = flat[feat[idx] + rowbase]
            go_right = x > thr[idx]                 # == not (x <= thr) for non-NaN x
            if has_nan:
                miss = np.isnan(x)
                go_right[miss] = nan_right[idx[miss]]
            idx = kids[2 * idx + go_right]
        # Add tree by tree, in order, like sklearn's ``depths +=``: cumsum is sequential
        # by definition, whereas sum() switches to pairwise order for some shapes
        # (a batch of one), which would make a row's score depend on its batch.
        return np.cumsum(self._value[idx], axis=0)[-1]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``score_samples - offset``: negative means outlier (sklearn's convention)."""
        return self.score_samples(X) - self.offset

    def __repr__(self) -> str:
        return (f"ForestModel(trees={self.n_estimators}, max_samples={self.max_samples}, "
                f"features={len(self.feature_names)}, depth={self._depth}, "
                f"version={self.model_version!r})")


def fit_forest(X: np.ndarray, *, feature_names: Sequence[str], n_estimators: int = 100,
               max_samples: int | float | str = 256, random_state: int = 0,
               contamination: float | str = "auto", max_features: float | int = 1.0,
               bootstrap: bool = False) -> ForestModel:
    """Fit ``sklearn.ensemble.IsolationForest`` on ``X`` offline and export it.

    Every sklearn parameter listed is supported exactly (``max_features`` < 1 by
    remapping each tree's columns, ``bootstrap`` through sklearn's own node
    counts).  An integer ``max_samples`` above ``len(X)`` is clipped to it, which
    is what sklearn does anyway, minus its warning.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.poisson(3.0, size=(500, 2)).astype(float)
    >>> model = fit_forest(X, feature_names=["rate_1s", "fanout_60s"], n_estimators=20)
    >>> usual, burst = model.score_samples(np.array([[3.0, 3.0], [60.0, 40.0]]))
    >>> bool(burst < usual)          # sklearn's sign: lower means more abnormal
    True
    >>> model.decision_function([[60.0, 40.0]]) < 0     # offset -0.5 (contamination='auto')
    array([ True])
    """
    from sklearn.ensemble import IsolationForest

    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] != len(feature_names):
        raise ValueError(f"X must be (n >= 1, {len(feature_names)}), got {X.shape}")
    if isinstance(max_samples, int) and not isinstance(max_samples, bool):
        max_samples = min(max_samples, X.shape[0])
    est = IsolationForest(n_estimators=n_estimators, max_samples=max_samples,
                          contamination=contamination, max_features=max_features,
                          bootstrap=bootstrap, random_state=random_state).fit(X)
    return ForestModel.from_sklearn(est, feature_names=feature_names)
