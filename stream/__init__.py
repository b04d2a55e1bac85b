"""The stream processor: one decision core, one runner, and the drivers that feed it.

    core     decoded actions + per-agent state -> Decisions (pure)
    edges    raw records -> actions; Decisions -> signed verdicts; bounded dead letters
    runner   the per-batch sequence every driver calls
    drivers  kafka_driver (the live worker, exactly once), replay (history)
"""
from __future__ import annotations

from holdgate.stream.core import Action, Decision, Snapshot, decide
from holdgate.stream.edges import Outgoing, RawRecord
from holdgate.stream.runner import BatchOutput, Runner
from holdgate.stream.state import BatchStates, MemoryStore, StateStore

__all__ = ["Action", "Decision", "Snapshot", "decide", "RawRecord", "Outgoing", "Runner",
           "BatchOutput", "BatchStates", "MemoryStore", "StateStore"]
