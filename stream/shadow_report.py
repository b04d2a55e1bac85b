"""The shadow report: what a candidate decided beside the enforced decision, live.

A worker running a shadow candidate records, inside each verdict, what the
candidate decided for the same action (``"shadow": {decision, reasons,
policy_version, model_version, signals}``, where ``signals`` holds only the
signals whose shadow value differs).  Nothing is re-decided here: the
comparison is between two signed records of what really happened, so a
promotion is judged on live traffic, not on a replay's approximation.

The report is a `FlipReport`, the one `holdgate backtest` prints, so a
reviewer reads both the same way (allow->deny, deny->allow, per agent, per
action, examples naming rules and the signals that moved).  Each verdict
counts once: a held action later approved has two verdicts (pending, then
final), each compared with its own shadow.

`scan_shadow` reads the verdicts topic over a time range (read_committed,
`holdgate.stream.logread`) and counts apart what it cannot use: records not
signed by a trusted worker key (never trusted, never compared), unreadable
ones, and verdicts without a shadow (no shadow was running).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from holdgate.events import Reason
from holdgate.stream.backtest import FlipReport
from holdgate.stream.core import Decision

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.keys import TrustStore
    from holdgate.settings import Settings

__all__ = ["ShadowScan", "add_verdict", "scan_shadow", "shadow_report"]

_DECISIONS = ("allow", "deny", "pending")


def _reasons(raw: Any) -> tuple[Reason, ...]:
    if not isinstance(raw, list):
        raise TypeError("reasons must be a list")
    return tuple(Reason(code=str(r["code"]), message=str(r.get("message") or ""),
                        policy_id=r.get("policy_id")) for r in raw)


def _signals(raw: Any) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError("signals must be an object")
    return {str(k): v for k, v in raw.items() if isinstance(v, int)}


def _decision(verdict: Mapping[str, Any], side: Mapping[str, Any],
              signals: Mapping[str, int]) -> Decision:
    if side.get("decision") not in _DECISIONS:
        raise ValueError(f"decision {side.get('decision')!r:.20}")
    return Decision(request_id=str(verdict["request_id"]), agent_id=str(verdict["agent_id"]),
                    decision=side["decision"], reasons=_reasons(side.get("reasons", [])),
                    signals=signals, policy_version=str(side.get("policy_version", "?")),
                    model_version=side.get("model_version"), partition=-1, offset=None,
                    event_time=float(verdict.get("decided_at") or 0.0),
                    digest=str(verdict.get("action_digest", "")),
                    request=verdict.get("request"))


@dataclass
class _Versions:
    before: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    after: Counter[tuple[str, str | None]] = field(default_factory=Counter)

    @staticmethod
    def describe(seen: Counter[tuple[str, str | None]]) -> dict[str, Any]:
        policies = sorted({p for p, _ in seen})
        models = sorted({str(m) for _, m in seen if m is not None})
        none = any(m is None for _, m in seen)
        return {"policy_version": policies[0] if len(policies) == 1 else policies,
                "model_version": (models[0] if len(models) == 1 and not none else
                                  None if not models else models)}

    def fill(self, report: FlipReport) -> None:
        if self.before:
            report.before = self.describe(self.before)
            report.after = self.describe(self.after)


def add_verdict(report: FlipReport, verdict: Mapping[str, Any],
                versions: _Versions | None = None) -> str:
    """Compare one verdict with its shadow into `report`.

    Returns ``"compared"``, ``"no-shadow"`` or ``"unreadable"`` (a verdict or
    shadow without the fields a comparison needs; nothing is added).
    """
    shadow = verdict.get("shadow")
    if shadow is None:
        return "no-shadow"
    try:
        if not isinstance(shadow, Mapping):
            raise TypeError("shadow must be an object")
        enforced_signals = _signals(verdict.get("signals"))
        before = _decision(verdict, verdict, enforced_signals)
        # The shadow records only the signals it read differently.
        after = _decision(verdict, shadow, {**enforced_signals,
                                            **_signals(shadow.get("signals"))})
    except (KeyError, TypeError, ValueError):
        return "unreadable"
    request = verdict.get("request")
    action = str(request.get("action", "?")) if isinstance(request, Mapping) else "?"
    report.add(before, after, action)
    if versions is not None:
        versions.before[(before.policy_version, before.model_version)] += 1
        versions.after[(after.policy_version, after.model_version)] += 1
    return "compared"


def shadow_report(verdicts: Iterable[Mapping[str, Any]], *,
                  max_examples: int = 5) -> FlipReport:
    """Enforced vs shadow decisions of parsed verdicts (already verified by the caller)."""
    report = FlipReport(max_examples=max_examples)
    versions = _Versions()
    for verdict in verdicts:
        add_verdict(report, verdict, versions)
    versions.fill(report)
    return report


@dataclass
class ShadowScan:
    """A shadow report over a topic range, and what could not be compared."""

    report: FlipReport
    start: float | None = None
    end: float | None = None
    records: int = 0            # read in the range
    unverified: int = 0         # unsigned, unknown key or bad signature: not compared
    unreadable: int = 0         # signed, but not a verdict or shadow we can compare
    without_shadow: int = 0     # verdicts decided with no shadow running
    first_problem: str = ""     # the first signature problem, for the message

    def fails(self, on: str | None) -> bool:
        """``--fail-on``: are there flips ``deny-to-allow``, ``allow-to-deny`` or ``any``?"""
        loosened, tightened = self.report.flips["deny->allow"], self.report.flips["allow->deny"]
        return bool({"deny-to-allow": loosened, "allow-to-deny": tightened,
                     "any": loosened + tightened}.get(on or "", 0))

    def lines(self) -> list[str]:
        """The backtest report (enforced vs shadow), then what was not compared."""
        out = self.report.lines("enforced", "shadow")
        out.append(f"{self.records} verdicts read: {self.report.actions} compared, "
                   f"{self.without_shadow} without a shadow, {self.unverified} not verified "
                   f"(ignored), {self.unreadable} unreadable")
        if self.unverified:
            out.append(f"  first signature problem: {self.first_problem}")
        if not self.report.actions:
            out.append("  no verdict in the range carries a shadow: is one published "
                       "(holdgate status)?")
        return out

    def to_obj(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "records": self.records,
                "unverified": self.unverified, "unreadable": self.unreadable,
                "without_shadow": self.without_shadow, **self.report.to_obj()}


def scan_shadow(settings: Settings, start: float | None, end: float | None, *,
                trust: TrustStore | None = None, max_examples: int = 5,
                progress: Any = None) -> ShadowScan:
    """Read verdicts stamped in ``[start, end)`` and compare each with its shadow."""
    from holdgate.signing import verify_record
    from holdgate.stream.logread import offset_bounds, open_consumer, partition_count, scan

    trust = settings.trust() if trust is None else trust
    out = ShadowScan(FlipReport(max_examples=max_examples), start, end)
    versions = _Versions()
    topic = settings.verdicts_topic
    consumer = open_consumer(settings, "holdgate-shadow-report")
    try:
        bounds = offset_bounds(consumer, topic, range(partition_count(consumer, topic)),
                               start, end)
        for rec in scan(consumer, topic, bounds, progress=progress):
            out.records += 1
            problem = verify_record(trust, rec.value, rec.headers)
            if problem is not None:
                out.unverified += 1
                out.first_problem = out.first_problem or problem
                continue
            try:
                verdict = orjson.loads(rec.value or b"")
            except orjson.JSONDecodeError:
                verdict = None
            if not isinstance(verdict, dict):
                out.unreadable += 1
                continue
            outcome = add_verdict(out.report, verdict, versions)
            if outcome == "no-shadow":
                out.without_shadow += 1
            elif outcome == "unreadable":
                out.unreadable += 1
    finally:
        consumer.close()
    versions.fill(out.report)
    return out
