"""Writing a simulation out (JSON Lines of requests, a side file of labels) and summing it up.

The summary says what an analyst needs before fitting anything: how much of
each persona there is, how many actions are malicious, the span, and when
each attack ran, so the fit/test split (before/after ``attack_start``) can be
checked at a glance.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Sequence

import orjson

from holdgate.events import ActionRequest
from holdgate.sim.config import PERSONAS, iso
from holdgate.sim.generate import Label, Simulation
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

    def add(self, occurred_at: float, label: Label) -> None:
        t = occurred_at
        self.actions += 1
        if self.first is None or t < self.first:
            self.first = t
        if self.last is None or t > self.last:
            self.last = t
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


CHUNK = 4096
_REQUEST_START = b'{"schema_version":'
_LABEL_START = b'{"request_id":'


def write_history(pairs: Simulation | Iterable[tuple[ActionRequest, Label]],
                  output: IO[bytes] | None, labels: IO[bytes] | None = None,
                  on_progress: Callable[[int], None] | None = None) -> Summary:
    """Write one encoded request per line to ``output`` and its label to ``labels``.

    Lines are serialised a chunk at a time (see :func:`_lines`): one
    ``orjson.dumps`` call costs several microseconds whatever its size, so one
    call per action would dominate the writer.
    """
    summary = Summary()
    rows: Iterable[tuple[float, dict[str, Any], Label]]
    if isinstance(pairs, Simulation):
        rows = pairs.records()
    else:
        rows = ((r.occurred_at, r.to_obj(), label) for r, label in pairs)
    objs: list[dict[str, Any]] = []
    labs: list[Label] = []
    for occurred_at, obj, label in rows:
        summary.add(occurred_at, label)
        objs.append(obj)
        labs.append(label)
        if len(objs) >= CHUNK:
            _flush(output, objs, labels, labs, on_progress)
    _flush(output, objs, labels, labs, on_progress)
    return summary


def _lines(items: Sequence[Any], start: bytes) -> bytes:
    """``b"\\n".join(orjson.dumps(x) for x in items) + b"\\n"``, with one dumps call.

    The list is dumped once and split where one top-level object ends and the
    next begins (``,{"schema_version":``).  A quote inside a JSON string is
    always escaped and a newline never appears raw, so besides those
    boundaries the sequence can only occur in a nested object with the same
    first key: the count check catches that and falls back to one call per item.
    """
    if not items:
        return b""
    body = orjson.dumps(items)[1:-1].replace(b"," + start, b"\n" + start)
    if body.count(b"\n") != len(items) - 1:
        body = b"\n".join(orjson.dumps(x) for x in items)
    return body + b"\n"


def _flush(output: IO[bytes] | None, objs: list[dict[str, Any]], labels: IO[bytes] | None,
           labs: list[Label], on_progress: Callable[[int], None] | None) -> None:
    if output is not None:
        output.write(_lines(objs, _REQUEST_START))
    if labels is not None:
        labels.write(_lines(labs, _LABEL_START))     # dataclasses: their fields, in order
    if on_progress is not None and objs:
        on_progress(len(objs))
    objs.clear()
    labs.clear()
