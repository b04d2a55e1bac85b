"""A fitted baseline model: per-agent profiles, an isolation forest, its calibration.

One artifact (numpy arrays + a JSON manifest, content-hashed: loading it can
never run code) carries everything the stream needs to judge an action
against its agent's normal: the `Profiles` that make signals relative, and the
forest that scores the joint picture (relative rates, fan-out, novelty, time
of day).  Its version is the content hash, and every verdict names it.

The forest's raw score ``a = -score_samples`` (higher = more isolated) is
calibrated on the training window: the median maps to 0 and the threshold
chosen for the target false-positive rate maps to 900, so ``anomaly > 900``
in a policy means "beyond the fitted threshold" for every model alike.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from holdgate.errors import ModelError
from holdgate.models.artifact import load_model, save_model
from holdgate.models.features import FOREST_FEATURES
from holdgate.models.profile import Profiles
from holdgate.signals import SIGNAL_NAMES

__all__ = ["MODEL_KIND", "AT_THRESHOLD", "BaselineModel"]

MODEL_KIND = "holdgate.baseline/1"
AT_THRESHOLD = 900


@dataclass(frozen=True, eq=False)
class BaselineModel:
    """What a worker loads with ``--model``; see the module docstring."""

    profiles: Profiles
    forest: Any | None                  # holdgate.models.forest.ForestModel
    median: float = 0.0                 # raw score at the training median  -> 0
    threshold: float = 1.0              # raw score at the chosen threshold -> 900
    meta: Mapping[str, Any] = field(default_factory=dict)
    version: str = "unsaved"

    def anomaly(self, X: np.ndarray) -> np.ndarray:
        """Calibrated 0..1000 scores for a batch of feature rows (FOREST_FEATURES)."""
        if self.forest is None or len(X) == 0:
            return np.zeros(len(X), dtype=np.int64)
        raw = -self.forest.score_samples(X)
        return calibrate(raw, self.median, self.threshold)

    def save(self, path: str | os.PathLike[str]) -> BaselineModel:
        """Write the artifact; returns the model with its content-hash version."""
        arrays = {f"p_{k}": v for k, v in self.profiles.to_arrays().items()}
        meta = {**self.meta, "kind": MODEL_KIND, "features": list(FOREST_FEATURES),
                "signals": list(SIGNAL_NAMES),
                "calibration": {"median": self.median, "threshold": self.threshold,
                                "at_threshold": AT_THRESHOLD}}
        if self.forest is not None:
            arrays.update({f"f_{k}": v for k, v in self.forest.to_arrays().items()})
            meta["forest"] = self.forest.meta
        version = save_model(path, arrays, meta)
        return BaselineModel(self.profiles, self.forest, self.median, self.threshold,
                             meta, version)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BaselineModel:
        """Read and verify an artifact; anything unexpected raises `ModelError`."""
        arrays, manifest = load_model(path)
        meta = manifest.get("meta", {})
        if meta.get("kind") != MODEL_KIND:
            raise ModelError(f"{path} is not a holdgate baseline model "
                             f"(kind {meta.get('kind')!r}, expected {MODEL_KIND!r})")
        if tuple(meta.get("features") or ()) != FOREST_FEATURES:
            raise ModelError(f"{path} was fitted on other features than this holdgate "
                             "computes; fit it again with this version")
        profiles = Profiles.from_arrays({k[2:]: v for k, v in arrays.items()
                                         if k.startswith("p_")})
        forest = None
        forest_arrays = {k[2:]: v for k, v in arrays.items() if k.startswith("f_")}
        if forest_arrays:
            from holdgate.models.forest import ForestModel

            forest = ForestModel.from_arrays(forest_arrays, meta.get("forest") or {})
        cal = meta.get("calibration") or {}
        try:
            median, threshold = float(cal["median"]), float(cal["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: manifest lacks the anomaly calibration") from None
        if not (math.isfinite(median) and math.isfinite(threshold)):
            raise ModelError(f"{path}: anomaly calibration is not finite")
        return cls(profiles, forest, median, threshold, meta, manifest["model_version"])


def calibrate(raw: np.ndarray, median: float, threshold: float) -> np.ndarray:
    """Median -> 0, threshold -> 900 (linear), 1.0 -> 1000; strictly above -> > 900."""
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=1.0)
    span = max(threshold - median, 1e-12)
    below = np.clip((raw - median) / span, 0.0, 1.0) * AT_THRESHOLD
    top = max(1.0 - threshold, 1e-12)
    above = AT_THRESHOLD + np.clip((raw - threshold) / top, 0.0, 1.0) * (1000 - AT_THRESHOLD)
    scores = np.where(raw > threshold, np.maximum(np.ceil(above), AT_THRESHOLD + 1),
                      np.floor(below))
    return np.clip(scores, 0, 1000).astype(np.int64)
