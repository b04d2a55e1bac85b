"""Fit a `BaselineModel` from history: profiles first, then the forest on top of them.

Two passes over the actions, both through the stream's own `SignalComputer`
(so the features a model is trained on are exactly the features it will
score): the first with no model gives the counters every action saw, from which
`fit_profiles` learns each agent's normal; the second with those profiles gives
the relative signals, whose feature rows train the isolation forest.  Every
training action is taken as allowed (history is what happened, not what a past
policy made of it), so the 1 h windows see normal volume.

The anomaly threshold is the training score quantile at ``1 - target_fpr``: on
the training window, that share of actions would be flagged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from holdgate.events import ActionRequest
from holdgate.models.baseline_model import BaselineModel
from holdgate.models.features import FOREST_FEATURES, feature_matrix
from holdgate.models.profile import KINDS
from holdgate.models.profile_fit import FitConfig, TrainingRows, fit_profiles
from holdgate.models.signals import SignalComputer
from holdgate.signals import SIGNAL_NAMES

__all__ = ["FitOptions", "FitResult", "fit_model"]

_COL = {n: i for i, n in enumerate(SIGNAL_NAMES)}


@dataclass(frozen=True, slots=True)
class FitOptions:
    target_fpr: float = 0.0001          # share of training actions above the threshold
    trees: int = 100
    max_samples: int = 256
    seed: int = 0
    profile: FitConfig = field(default_factory=FitConfig)


@dataclass
class FitResult:
    model: BaselineModel
    raw_scores: np.ndarray              # -score_samples of every training action
    scores: np.ndarray                  # calibrated 0..1000
    agents: list[str]
    times: np.ndarray
    report: dict[str, Any]


def _signal_rows(actions: list[ActionRequest], computer: SignalComputer,
                 progress: Callable[[int], None] | None) -> np.ndarray:
    states: dict[str, Any] = {}
    rows = np.zeros((len(actions), len(SIGNAL_NAMES)), dtype=np.int64)
    for i, req in enumerate(actions):
        sig = computer.observe_batch(states, (req,))[0]
        computer.record_outcomes(states, (req,), (False,))
        rows[i] = [sig[n] for n in SIGNAL_NAMES]
        if progress is not None and i % 5000 == 4999:
            progress(5000)
    return rows


def fit_model(actions: Iterable[ActionRequest], roles: Mapping[str, str],
              options: FitOptions | None = None,
              progress: Callable[[int], None] | None = None) -> FitResult:
    """Fit profiles and forest on `actions` (event time = occurred_at, in order)."""
    from holdgate.models.forest import fit_forest

    opts = options or FitOptions()
    t0 = time.perf_counter()
    history = sorted(actions, key=lambda r: r.occurred_at)
    if len(history) < 2 * opts.max_samples:
        from holdgate.errors import ModelError

        raise ModelError(f"{len(history)} actions are too few to fit a baseline "
                         f"(need at least {2 * opts.max_samples})")
    raw = _signal_rows(history, SignalComputer(roles=roles), progress)
    training = TrainingRows(
        t=np.array([r.occurred_at for r in history], dtype=np.float64),
        agent=[r.agent_id for r in history], action=[r.action for r in history],
        rtype=[r.resource.type for r in history],
        values=raw[:, [_COL[k] for k in KINDS]],
        action_rate_1s=raw[:, _COL["action_rate_1s"]])
    profiles = fit_profiles(training, roles, opts.profile)
    shell = BaselineModel(profiles=profiles, forest=None)
    rows = _signal_rows(history, SignalComputer(model=shell, roles=roles), progress)
    X = feature_matrix(rows.astype(np.float64))
    forest = fit_forest(X, feature_names=FOREST_FEATURES, n_estimators=opts.trees,
                        max_samples=min(opts.max_samples, len(X)), random_state=opts.seed)
    raw_scores = -forest.score_samples(X)
    median = float(np.median(raw_scores))
    threshold = float(np.quantile(raw_scores, 1.0 - opts.target_fpr))
    meta = {
        "training": {"from": float(training.t[0]), "to": float(training.t[-1]),
                     "actions": len(history), "agents": len(set(training.agent)),
                     "profiled_agents": len(profiles.agents), "roles": list(profiles.roles)},
        "fit": {"target_fpr": opts.target_fpr, "trees": opts.trees,
                "max_samples": opts.max_samples, "seed": opts.seed,
                "quantile": opts.profile.quantile, "margin": opts.profile.margin,
                "floors": dict(zip(KINDS, opts.profile.floors))},
        "thresholds": _group_thresholds(profiles),
        "libraries": _versions(),
    }
    model = BaselineModel(profiles=profiles, forest=forest, median=median,
                          threshold=threshold, meta=meta)
    scores = model.anomaly(X)
    flagged = np.nonzero(scores > 900)[0]
    by_agent: dict[str, int] = {}
    for i in flagged.tolist():
        by_agent[training.agent[i]] = by_agent.get(training.agent[i], 0) + 1
    report = {"actions": len(history), "seconds": time.perf_counter() - t0,
              "threshold_raw": threshold, "median_raw": median,
              "flagged": int(len(flagged)), "flagged_share": len(flagged) / len(history),
              "flagged_by_agent": dict(sorted(by_agent.items(), key=lambda kv: -kv[1]))}
    return FitResult(model=model, raw_scores=raw_scores, scores=scores,
                     agents=list(training.agent), times=training.t, report=report)


def _group_thresholds(profiles: Any) -> dict[str, Any]:
    """Per role and fleet, the largest limit over the day: a readable summary."""
    out: dict[str, Any] = {}
    for r, role in enumerate(profiles.roles):
        out[f"role:{role}"] = dict(zip(KINDS, profiles.role_limits[r].max(axis=0).tolist()))
    out["fleet"] = dict(zip(KINDS, profiles.fleet_limits.max(axis=0).tolist()))
    return out


def _versions() -> dict[str, str]:
    import platform

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    except ImportError:  # pragma: no cover - fit needs it, scoring does not
        pass
    return versions
