"""holdgate: a pre-execution hold for AI agents.

Agents publish each intended action and hold; a stream processor decides it in
context (Cedar policy plus per-agent behavioural baselines) and publishes a
signed verdict.  No verdict in time is a deny.

This root package stays light: importing `holdgate` (or the client SDK) never
imports faust, numpy or scikit-learn.
"""
from __future__ import annotations

from holdgate.errors import ActionDenied, HoldgateError
from holdgate.events import ActionRequest, Reason, Resource, Verdict

__all__ = ["__version__", "ActionRequest", "Resource", "Reason", "Verdict",
           "HoldgateError", "ActionDenied"]

__version__ = "0.1.0"
