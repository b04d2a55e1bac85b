"""The stream processor: a Faust worker deciding every intended action in micro-batches."""
from __future__ import annotations

from holdgate.stream.decider import Decider
from holdgate.stream.records import BatchResult, Outgoing, RawRecord

__all__ = ["Decider", "RawRecord", "Outgoing", "BatchResult"]
