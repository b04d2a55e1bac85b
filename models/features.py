"""The forest's view of an action: one feature row per signal row, the same in fit and stream.

Features are *relative* to each agent's fitted profile (``*_pct``, unusual
action or resource type, off hours), so one forest serves a whole fleet (the
online Bloom's new_action is left out: every agent's first action would look
like an outlier, which is what the profile's unusual_* say better): a
reporting job at 40 reads/s and a support agent at 1/s both sit near 100 % of
their own normal.  Counts go through log1p, so "ten times more" is the same
distance whatever the scale.  Fit and stream call this one function, so the
features a forest was trained on are the features it scores.

`AnomalyMemo` answers most rows without the forest.  A tree only ever asks
"is feature c <= threshold t?", the features come from non-negative integer
signals, and the transform (log1p, then float32 as the forest rounds its input)
never decreases: so for each threshold there is one integer from which the
answer flips, and two rows whose every feature lies between the same flip
points take the same path through every tree, hence get the same score.  The
memo keys rows by those intervals and asks the model only for rows it has not
seen an equivalent of (all of them at once), which is what makes per-wave
scoring of a few busy agents cheap.  Exact by construction; checked against
direct scoring in ``tests/models/test_signals_reference.py``.
"""
from __future__ import annotations

import weakref
from bisect import bisect_right
from typing import Any, Sequence

import numpy as np

from holdgate.signals import SIGNAL_NAMES

__all__ = ["FOREST_FEATURES", "feature_matrix", "AnomalyMemo"]

FOREST_FEATURES: tuple[str, ...] = (
    "rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
    "fanout_10m_pct", "repeat_10s", "streak", "unusual_action", "unusual_resource_type",
    "off_hours",
)
_LOG = ("rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
        "fanout_10m_pct", "repeat_10s", "streak")
_COLS = np.array([SIGNAL_NAMES.index(n) for n in FOREST_FEATURES])
_LOG_MASK = np.array([n in _LOG for n in FOREST_FEATURES])
#: integer feature values the memo answers for (beyond: scored directly); far below
#: where consecutive integers' log1p could come within one float64 ulp of each other
_VMAX = 1 << 40
_MEMO_MAX = 1 << 14       # rows and intervals remembered (each table; then it starts over)
_MEMOS: weakref.WeakKeyDictionary[Any, AnomalyMemo | None] = weakref.WeakKeyDictionary()


def feature_matrix(rows: np.ndarray) -> np.ndarray:
    """Rows of signals (columns in SIGNAL_NAMES order) -> forest features (FOREST_FEATURES)."""
    X = np.asarray(rows, dtype=np.float64)[:, _COLS]
    X[:, _LOG_MASK] = np.log1p(np.maximum(X[:, _LOG_MASK], 0.0))
    return X


def _as_forest_sees(column: int, values: np.ndarray) -> np.ndarray:
    """Feature `column` for these raw values, as the forest compares it: the
    transform of `feature_matrix`, then rounded to float32 and back."""
    x = np.asarray(values, dtype=np.float64)
    if _LOG_MASK[column]:
        x = np.log1p(np.maximum(x, 0.0))
    return x.astype(np.float32).astype(np.float64)


def flip_points(thresholds: np.ndarray, column: int) -> list[int]:
    """Per threshold t of feature `column`, the least integer v >= 0 whose feature
    exceeds t (from v on, a node on t sends the row right); sorted, distinct,
    below `_VMAX` (thresholds never crossed there are left out)."""
    t = np.unique(np.asarray(thresholds, dtype=np.float64))
    lo = np.zeros(len(t), dtype=np.int64)
    hi = np.full(len(t), _VMAX, dtype=np.int64)
    crossed = _as_forest_sees(column, hi.astype(np.float64)) > t
    t, lo, hi = t[crossed], lo[crossed], hi[crossed]
    while len(t) and np.any(lo < hi):          # least v in [lo, hi] with f(v) > t
        mid = (lo + hi) // 2
        right = _as_forest_sees(column, mid.astype(np.float64)) > t
        hi = np.where(right, mid, hi)
        lo = np.where(right, lo, mid + 1)
    return sorted(set(lo.tolist()))


class AnomalyMemo:
    """Exact memo of a fitted `BaselineModel`'s anomaly score per feature row.

    ``score(rows)`` takes integer feature tuples (FOREST_FEATURES order) and
    returns the model's scores; rows are looked up by value, then by the
    interval each feature lies in between the forest's flip points, and only
    the rest go to ``model.anomaly`` (one call).  `for_model` returns None for
    anything but a `BaselineModel` scored by its own `ForestModel`, whose score
    is a function of the tree paths alone.
    """

    __slots__ = ("model", "_flips", "_by_value", "_by_cell")

    def __init__(self, model: Any, flips: Sequence[list[int]]) -> None:
        self.model = model
        self._flips = [(i, f) for i, f in enumerate(flips) if f]
        self._by_value: dict[tuple[int, ...], int] = {}
        self._by_cell: dict[tuple[int, ...], int] = {}

    @classmethod
    def for_model(cls, model: Any) -> AnomalyMemo | None:
        """The memo of `model` (one per model, shared: scores are a pure function)."""
        try:
            return _MEMOS[model]
        except KeyError:
            pass
        except TypeError:       # not weakly referenceable: no sharing
            return cls._build(model)
        memo = _MEMOS[model] = cls._build(model)
        return memo

    @classmethod
    def _build(cls, model: Any) -> AnomalyMemo | None:
        from holdgate.models.baseline_model import BaselineModel
        from holdgate.models.forest import ForestModel

        forest = getattr(model, "forest", None)
        if type(model) is not BaselineModel or type(forest) is not ForestModel \
                or tuple(forest.feature_names) != FOREST_FEATURES:
            return None
        arrays = forest.to_arrays()
        inner = arrays["children_left"] != -1
        feature, threshold = arrays["feature"][inner], arrays["threshold"][inner]
        flips = [flip_points(threshold[feature == c], c) for c in range(len(FOREST_FEATURES))]
        return cls(model, flips)

    def cell(self, row: tuple[int, ...]) -> tuple[int, ...] | None:
        """The row's interval per feature (None: a value the memo does not cover)."""
        for v in row:
            if not 0 <= v < _VMAX:
                return None
        return tuple([bisect_right(f, row[i]) for i, f in self._flips])

    def score(self, rows: Sequence[tuple[int, ...]]) -> list[int]:
        by_value, by_cell = self._by_value, self._by_cell
        out: list[int] = []
        todo: list[int] = []
        cells: list[tuple[int, ...] | None] = []
        for row in rows:
            hit = by_value.get(row)
            if hit is None:
                cell = self.cell(row)
                hit = by_cell.get(cell) if cell is not None else None
                if hit is None:
                    todo.append(len(out))
                    cells.append(cell)
                else:
                    by_value[row] = hit
            out.append(hit)   # type: ignore[arg-type]  # filled below
        if todo:
            X = np.array([rows[i] for i in todo], dtype=np.float64)
            X[:, _LOG_MASK] = np.log1p(np.maximum(X[:, _LOG_MASK], 0.0))
            scores = self.model.anomaly(X).tolist()
            if len(by_value) > _MEMO_MAX or len(by_cell) > _MEMO_MAX:
                by_value.clear()
                by_cell.clear()
            for i, cell, s in zip(todo, cells, scores):
                out[i] = s
                by_value[rows[i]] = s
                if cell is not None:
                    by_cell[cell] = s
        return out
