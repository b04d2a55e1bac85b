"""The forest's view of an action: one feature row per signal row, the same in fit and stream.

Features are *relative* to each agent's fitted profile (``*_pct``, unusual
action or resource type, off hours), so one forest serves a whole fleet (the
online Bloom's new_action is left out: every agent's first action would look
like an outlier, which is what the profile's unusual_* say better): a
reporting job at 40 reads/s and a support agent at 1/s both sit near 100 % of
their own normal.  Counts go through log1p, so "ten times more" is the same
distance whatever the scale.  Fit and stream call this one function, so the
features a forest was trained on are the features it scores.
"""
from __future__ import annotations

import numpy as np

from holdgate.signals import SIGNAL_NAMES

__all__ = ["FOREST_FEATURES", "feature_matrix"]

FOREST_FEATURES: tuple[str, ...] = (
    "rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
    "fanout_10m_pct", "repeat_10s", "streak", "unusual_action", "unusual_resource_type",
    "off_hours",
)
_LOG = ("rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
        "fanout_10m_pct", "repeat_10s", "streak")
_COLS = np.array([SIGNAL_NAMES.index(n) for n in FOREST_FEATURES])
_LOG_MASK = np.array([n in _LOG for n in FOREST_FEATURES])


def feature_matrix(rows: np.ndarray) -> np.ndarray:
    """Rows of signals (columns in SIGNAL_NAMES order) -> forest features (FOREST_FEATURES)."""
    X = np.asarray(rows, dtype=np.float64)[:, _COLS]
    X[:, _LOG_MASK] = np.log1p(np.maximum(X[:, _LOG_MASK], 0.0))
    return X
