"""Backtest: the same history under the enforced and a candidate snapshot, side by side.

Each side runs its own runner and state over the same records in the same
chunks (so each side's 1 h windows and deny history follow its own decisions,
exactly as they would have live).  A *flip* is an action whose decision
differs: allow -> deny (the candidate is stricter) or deny -> allow (it
loosens something: the flip a policy review must see).  Same decision with
other reason codes is counted apart.  The report lists flips per agent and per
action, with examples naming the rules or the signals that changed; the shadow
report of live traffic uses the same format.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from holdgate.stream.core import Decision
from holdgate.stream.edges import RawRecord
from holdgate.stream.replay import CHUNK, replaying
from holdgate.stream.runner import Runner

__all__ = ["Flip", "FlipReport", "backtest", "compare"]

ALLOW_TO_DENY = "allow->deny"
DENY_TO_ALLOW = "deny->allow"


def _policies(d: Decision) -> list[str]:
    return [r.policy_id for r in d.reasons if r.policy_id]


@dataclass(frozen=True, slots=True)
class Flip:
    kind: str
    request_id: str
    agent_id: str
    action: str
    before: tuple[str, tuple[str, ...], tuple[str, ...]]    # decision, codes, policy ids
    after: tuple[str, tuple[str, ...], tuple[str, ...]]
    signals_changed: Mapping[str, tuple[int, int]]

    def to_obj(self) -> dict[str, Any]:
        return {"kind": self.kind, "request_id": self.request_id, "agent_id": self.agent_id,
                "action": self.action,
                "before": {"decision": self.before[0], "codes": list(self.before[1]),
                           "policies": list(self.before[2])},
                "after": {"decision": self.after[0], "codes": list(self.after[1]),
                          "policies": list(self.after[2])},
                "signals_changed": {k: list(v) for k, v in self.signals_changed.items()}}


@dataclass
class FlipReport:
    """Where two decision sources disagree; `backtest` and `shadow report` both print it."""

    before: dict[str, Any] = field(default_factory=dict)     # versions
    after: dict[str, Any] = field(default_factory=dict)
    actions: int = 0
    same: int = 0
    codes_changed: int = 0
    flips: Counter[str] = field(default_factory=Counter)
    by_agent: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_action: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: list[Flip] = field(default_factory=list)
    max_examples: int = 5

    def add(self, before: Decision, after: Decision, action: str) -> None:
        self.actions += 1
        if before.allowed == after.allowed:     # deny <-> pending: a deny to every reader
            if before.decision == after.decision and \
                    tuple(r.code for r in before.reasons) == tuple(r.code for r in after.reasons):
                self.same += 1
            else:
                self.codes_changed += 1
            return
        kind = ALLOW_TO_DENY if before.allowed else DENY_TO_ALLOW
        self.flips[kind] += 1
        self.by_agent[before.agent_id][kind] += 1
        self.by_action[action][kind] += 1
        if sum(1 for e in self.examples if e.kind == kind) < self.max_examples:
            changed = {k: (before.signals.get(k, 0), after.signals.get(k, 0))
                       for k in sorted(set(before.signals) | set(after.signals))
                       if before.signals.get(k, 0) != after.signals.get(k, 0)}
            self.examples.append(Flip(
                kind, before.request_id, before.agent_id, action,
                (before.decision, tuple(r.code for r in before.reasons),
                 tuple(_policies(before))),
                (after.decision, tuple(r.code for r in after.reasons), tuple(_policies(after))),
                changed))

    def to_obj(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "actions": self.actions,
                "same": self.same, "codes_changed": self.codes_changed,
                "allow_to_deny": self.flips[ALLOW_TO_DENY],
                "deny_to_allow": self.flips[DENY_TO_ALLOW],
                "by_agent": {k: dict(v) for k, v in sorted(self.by_agent.items())},
                "by_action": {k: dict(v) for k, v in sorted(self.by_action.items())},
                "examples": [e.to_obj() for e in self.examples]}

    def lines(self, before_name: str = "enforced", after_name: str = "candidate") -> list[str]:
        out = [f"{self.actions} actions: {self.same} same, {self.codes_changed} same decision "
               f"with other reasons, {self.flips[ALLOW_TO_DENY]} allow->deny, "
               f"{self.flips[DENY_TO_ALLOW]} deny->allow",
               f"  {before_name}: {self.before}", f"  {after_name}: {self.after}"]
        for title, table in (("per agent", self.by_agent), ("per action", self.by_action)):
            if table:
                out.append(f"{title}:{'':<28}allow->deny  deny->allow")
                for key, counts in sorted(table.items(), key=lambda kv: -sum(kv[1].values())):
                    out.append(f"  {key:<36}{counts[ALLOW_TO_DENY]:>11}  "
                               f"{counts[DENY_TO_ALLOW]:>11}")
        for e in self.examples:
            moved = ", ".join(f"{k} {a}->{b}" for k, a, b in
                              ((k, *v) for k, v in list(e.signals_changed.items())[:6]))
            out.append(f"  {e.kind:<11} {e.agent_id} {e.action} {e.request_id}: "
                       f"{list(e.before[1])} {list(e.before[2])} -> {list(e.after[1])} "
                       f"{list(e.after[2])}" + (f"; signals {moved}" if moved else ""))
        return out


def compare(report: FlipReport, before: Iterable[Decision], after: Iterable[Decision],
            actions: Mapping[str, str]) -> None:
    """Match two decision streams by request id into `report`."""
    right = {d.request_id: d for d in after}
    for d in before:
        other = right.get(d.request_id)
        if other is not None:
            report.add(d, other, actions.get(d.request_id, "?"))


def backtest(records: Iterable[RawRecord], enforced: Runner, candidate: Runner, *,
             max_examples: int = 5,
             on_progress: Callable[[int], None] | None = None) -> FlipReport:
    """Run both runners over `records` (same chunks, own state each) and diff."""
    report = FlipReport(max_examples=max_examples)
    for side, runner in ((report.before, enforced), (report.after, candidate)):
        side.update(policy_version=runner.snapshot.policy_version,
                    model_version=runner.snapshot.model_version)
    chunk: list[RawRecord] = []

    def flush() -> None:
        at = max((r.timestamp for r in chunk if r.timestamp is not None), default=0.0)
        a, b = enforced.run(chunk, decided_at=at), candidate.run(chunk, decided_at=at)
        enforced.apply(a.writes)
        candidate.apply(b.writes)
        actions = {d.request_id: str((d.request or {}).get("action", "?"))
                   for d in a.decisions}
        compare(report, a.decisions, b.decisions, actions)
        if on_progress is not None:
            on_progress(len(chunk))
        chunk.clear()

    with replaying(enforced), replaying(candidate):     # states kept decoded, nothing sealed
        for record in records:
            chunk.append(record)
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
    return report
