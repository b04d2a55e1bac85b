"""One-line, human-readable rendering of a verdict, shared by `tail`, `send` and `demo`."""
from __future__ import annotations

import time

import click

from holdgate.events import Verdict

__all__ = ["verdict_line"]

_SHOWN_SIGNALS = ("rate_1s", "repeat_10s", "fanout_60s", "anomaly")


def verdict_line(v: Verdict, *, color: bool = True) -> str:
    req = v.request or {}
    res = req.get("resource") or {}
    stamp = time.strftime("%H:%M:%S", time.localtime(v.decided_at))
    stamp += f".{int((v.decided_at % 1) * 1000):03d}"
    held = v.decision == "pending"
    decision = "ALLOW" if v.allowed else "HOLD " if held else "DENY "
    if color:
        decision = click.style(decision, fg="green" if v.allowed else "yellow" if held
                               else "red", bold=True)
    what = f"{req.get('action', '?')} {res.get('type', '?')}:{res.get('id', '?')}"
    codes = list(dict.fromkeys(r.code for r in v.reasons))     # unique, in order
    first = next((r.policy_id for r in v.reasons if r.policy_id), None)
    why = ", ".join(codes) + (f" ({first})" if first else "")
    if held:
        why += f" awaits {v.awaiting} approval"
    sig = " ".join(f"{k}={v.signals[k]}" for k in _SHOWN_SIGNALS if v.signals.get(k))
    line = f"{stamp} {decision} {v.agent_id:<16} {what:<40} {why}"
    return f"{line}  [{sig}]" if sig else line
