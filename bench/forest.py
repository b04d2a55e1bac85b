"""IsolationForest scoring cost per row: sklearn versus the numpy `ForestModel`.

One 100-tree forest (max_samples 256) fitted on heavy-tailed per-agent counts;
the same rows scored by sklearn one at a time, sklearn in batches of 1,000, and
the exported numpy forest at batch 1, 16, 256 and 1,000.  Every repeat measures
every variant once, interleaved, so a load spike on a shared machine hits all of
them; figures are medians over repeats, ratios are against sklearn batched in
this same run.  Also checks that both give the same scores on the bench rows.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from holdgate.models import FEATURE_NAMES
from holdgate.models.forest import ForestModel

BATCHES = (1, 16, 256, 1000)


def counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed counts in FEATURE_NAMES order, like a fleet of agents."""
    base = rng.pareto(1.5, n) + 0.2
    return np.column_stack([rng.poisson(base), rng.poisson(base * 40),
                            rng.negative_binomial(2, 0.3, n),
                            rng.poisson(base * 5)]).astype(np.float64)


def _per_row_us(score: Callable[[np.ndarray], Any], rows: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        score(rows[i:i + batch])
    return (time.perf_counter() - start) / len(rows) * 1e6


def run(*, n_estimators: int = 100, repeats: int = 7, single_rows: int = 30) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(0)
    train = counts(20_000, rng)
    est = IsolationForest(n_estimators=n_estimators, max_samples=256, random_state=0).fit(train)
    model = ForestModel.from_sklearn(est, feature_names=FEATURE_NAMES)
    rows = np.vstack([counts(900, rng), counts(100, rng) * 30])[rng.permutation(1000)]
    diff = float(np.max(np.abs(est.score_samples(rows) - model.score_samples(rows))))
    variants: dict[str, Callable[[], float]] = {
        "sklearn_one_row": lambda: _per_row_us(est.score_samples, rows[:single_rows], 1),
        "sklearn_batch_1000": lambda: _per_row_us(est.score_samples, rows, 1000),
        **{f"numpy_batch_{b}": (lambda b=b: _per_row_us(model.score_samples, rows, b))
           for b in BATCHES},
    }
    for f in variants.values():                    # warm-up: caches, allocator, imports
        f()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            samples[name].append(f())
    us = {k: statistics.median(v) for k, v in samples.items()}
    ref = us["sklearn_batch_1000"]
    return {"n_estimators": n_estimators, "max_samples": 256, "depth": model._depth,
            "repeats": repeats, "max_abs_diff": diff, "us_per_row": us,
            "speedup_vs_sklearn_batch": {k: ref / v for k, v in us.items()},
            "loadavg": os.getloadavg()[0]}


def report(res: dict[str, Any]) -> str:
    lines = [f"IsolationForest scoring, {res['n_estimators']} trees (max_samples "
             f"{res['max_samples']}, depth {res['depth']}), median of {res['repeats']} runs, "
             f"load average {res['loadavg']:.1f}; max |numpy - sklearn| = "
             f"{res['max_abs_diff']:.1e}",
             f"  {'variant':22s} {'us/row':>10s} {'vs sklearn batched':>19s}"]
    us = res["us_per_row"]
    for name, v in us.items():
        lines.append(f"  {name:22s} {v:10.1f} {res['speedup_vs_sklearn_batch'][name]:18.3g}x")
    lines.append(f"  one action alone: numpy batch 1 is "
                 f"{us['sklearn_one_row'] / us['numpy_batch_1']:.0f}x faster than sklearn one row")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    result = run()
    common.save("forest", result)
    print(f"machine: {common.machine()}")
    print(report(result))
