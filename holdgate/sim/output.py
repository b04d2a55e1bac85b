"""Writing a simulation out (JSON Lines of requests, a side file of labels) and summing it up.

The summary says what an analyst needs before fitting anything: how much of
each persona there is, how many actions are malicious, the span, and when
each attack ran, so the fit/test split (before/after ``attack_start``) can be
checked at a glance.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable

import orjson

from holdgate.events import ActionRequest, encode
from holdgate.sim.config import PERSONAS, iso
from holdgate.sim.generate import Label
from holdgate.sim.world import Fleet

__all__ = ["AttackSpan", "Summary", "write_history"]


@dataclass(slots=True)
class AttackSpan:
    attack: str
    first: float
    last: float
    actions: int = 0


@dataclass(slots=True)
class Summary:
    """Counts over a stream of (request, label) pairs; :meth:`add` each one."""

    actions: int = 0
    malicious: int = 0
    first: float | None = None
    last: float | None = None
    by_persona: Counter[str] = field(default_factory=Counter)
    malicious_by_persona: Counter[str] = field(default_factory=Counter)
    attacks: dict[str, AttackSpan] = field(default_factory=dict)

    @property
    def benign(self) -> int:
        return self.actions - self.malicious

    def add(self, request: ActionRequest, label: Label) -> None:
        t = request.occurred_at
        self.actions += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)
        self.by_persona[label.persona] += 1
        if label.malicious:
            self.malicious += 1
            self.malicious_by_persona[label.persona] += 1
            span = self.attacks.get(label.agent_id)
            if span is None:
                span = self.attacks[label.agent_id] = AttackSpan(label.attack or "?", t, t)
            span.first, span.last = min(span.first, t), max(span.last, t)
            span.actions += 1

    def render(self, fleet: Fleet) -> str:
        """A few lines for stderr."""
        config = fleet.config
        agents = Counter(a.persona for a in fleet.agents)
        lines = [f"simulated {self.actions:,} actions of {len(fleet.agents)} agents, seed "
                 f"{config.seed}: {iso(config.start)} .. {iso(config.end)} ({config.hours:g} h)"]
        if self.first is not None and self.last is not None:
            lines.append(f"  first action {iso(self.first)}, last {iso(self.last)}")
        lines.append(f"  benign {self.benign:,}  malicious {self.malicious:,}")
        lines.append(f"  {'persona':<14}{'agents':>7}{'actions':>10}{'malicious':>11}")
        for persona in PERSONAS:
            if agents[persona] or self.by_persona[persona]:
                lines.append(f"  {persona:<14}{agents[persona]:>7}"
                             f"{self.by_persona[persona]:>10,}"
                             f"{self.malicious_by_persona[persona]:>11,}")
        for agent_id, span in sorted(self.attacks.items(), key=lambda kv: kv[1].first):
            lines.append(f"  attack {span.attack:<13} {agent_id:<22} {iso(span.first)} .. "
                         f"{iso(span.last)}  {span.actions:,} actions")
        if config.attacks:
            lines.append(f"  no attack action before {iso(config.attack_start)}: "
                         "fit before it, test after")
        return "\n".join(lines)


def write_history(pairs: Iterable[tuple[ActionRequest, Label]], output: IO[bytes] | None,
                  labels: IO[bytes] | None = None,
                  on_progress: Callable[[int], None] | None = None) -> Summary:
    """Write one encoded request per line to ``output`` and its label to ``labels``."""
    summary = Summary()
    dumps = orjson.dumps
    out_buf: list[bytes] = []
    lab_buf: list[bytes] = []
    pending = 0
    for request, label in pairs:
        summary.add(request, label)
        if output is not None:
            out_buf.append(encode(request))
        if labels is not None:
            lab_buf.append(dumps(label.to_obj()))
        pending += 1
        if pending >= 4096:
            _flush(output, out_buf, labels, lab_buf)
            if on_progress is not None:
                on_progress(pending)
            pending = 0
    _flush(output, out_buf, labels, lab_buf)
    if on_progress is not None and pending:
        on_progress(pending)
    return summary


def _flush(output: IO[bytes] | None, out_buf: list[bytes], labels: IO[bytes] | None,
           lab_buf: list[bytes]) -> None:
    if output is not None and out_buf:
        output.write(b"\n".join(out_buf) + b"\n")
    if labels is not None and lab_buf:
        labels.write(b"\n".join(lab_buf) + b"\n")
    out_buf.clear()
    lab_buf.clear()
