"""Behavioural signals and anomaly models for the decision pipeline (step 2).

The stream creates one `SignalComputer`, keeps an `AgentState` per agent in a
changelog-backed table (value = `AgentState.to_bytes()`), calls
`SignalComputer.observe_batch` before Cedar and `SignalComputer.record_outcomes`
after it.  Everything is computed on event time and is bounded per agent.
Model artifacts are numpy arrays plus a hashed JSON manifest, never pickles.
"""
from holdgate.models.artifact import content_hash, load_model, save_model
from holdgate.models.scorer import FEATURE_NAMES, BaselineConfig, OnlineBaseline, Scorer
from holdgate.models.signals import (
    SIGNAL_NAMES, ZERO_SIGNALS, SignalComputer, SignalConfig, fingerprint,
)
from holdgate.models.state import AgentState, serialized_bound

__all__ = [
    "SIGNAL_NAMES", "ZERO_SIGNALS", "FEATURE_NAMES",
    "SignalComputer", "SignalConfig", "BaselineConfig",
    "AgentState", "serialized_bound", "fingerprint",
    "Scorer", "OnlineBaseline",
    "save_model", "load_model", "content_hash",
]
