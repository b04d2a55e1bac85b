"""Replay: history through the same runner as the live worker, no Kafka hop per action.

Signals are rebuilt in order from an empty state, so a replay of the whole
topic reproduces every recorded verdict.  Against the verdicts recorded on the
topic it classifies each action:

* **same**: the replayed decision and reason codes equal the recorded ones;
* **warm-up**: they differ, but so do the signals or the versions, because the
  replay started mid-topic (counters begin at zero) or ran another bundle or
  model: expected, reported as a count;
* **mismatch**: same versions, same signals, different decision or codes.  The
  decision is a function of exactly those inputs, so this is a determinism bug:
  `ReplayReport.ok` is False and the CLI exits non-zero.

Recorded ``STATE_RECOVERING`` denies (state was lost at the time) count as
warm-up: a replay from an empty state has nothing to hold.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from holdgate import reasons as rc
from holdgate.stream.core import Decision
from holdgate.stream.edges import RawRecord
from holdgate.stream.runner import Runner

__all__ = ["ReplayReport", "Mismatch", "replay", "decision_line"]

CHUNK = 512


@dataclass(frozen=True, slots=True)
class Mismatch:
    request_id: str
    agent_id: str
    recorded: tuple[str, tuple[str, ...]]
    replayed: tuple[str, tuple[str, ...]]
    signals: Mapping[str, int]


@dataclass
class ReplayReport:
    records: int = 0
    decisions: int = 0
    allowed: int = 0
    denied: int = 0
    deadletters: int = 0
    compared: int = 0
    same: int = 0
    warmup: int = 0
    unrecorded: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def decision_line(d: Decision) -> dict[str, Any]:
    """One replayed verdict as a JSON Lines object (the `--output` format)."""
    return {"request_id": d.request_id, "agent_id": d.agent_id, "decision": d.decision,
            "codes": [r.code for r in d.reasons], "signals": dict(d.signals),
            "policy_version": d.policy_version, "model_version": d.model_version}


def _chunks(records: Iterable[RawRecord], size: int) -> Iterable[list[RawRecord]]:
    chunk: list[RawRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def replay(records: Iterable[RawRecord], runner: Runner, *,
           recorded: Mapping[str, Mapping[str, Any]] | None = None,
           on_decision: Callable[[Decision], None] | None = None,
           on_progress: Callable[[int], None] | None = None,
           decided_at: float | None = None, chunk_size: int = CHUNK) -> ReplayReport:
    """Run `records` in order through `runner` (state in its store) and compare."""
    report = ReplayReport()
    t0 = time.perf_counter()
    recorded = recorded or {}
    for chunk in _chunks(records, chunk_size):
        if recorded:
            chunk = [_with_recorded_time(r, recorded) for r in chunk]
        at = decided_at if decided_at is not None else _event_clock(chunk)
        out = runner.run(chunk, decided_at=at)
        runner.apply(out.writes)
        report.records += len(chunk)
        report.deadletters += len(out.deadletters)
        for d in out.decisions:
            report.decisions += 1
            report.allowed += d.allowed
            report.denied += not d.allowed
            if on_decision is not None:
                on_decision(d)
            if recorded:
                _compare(d, recorded.get(d.request_id), report)
        if on_progress is not None:
            on_progress(len(chunk))
    report.seconds = time.perf_counter() - t0
    return report


def _event_clock(chunk: list[RawRecord]) -> float:
    """A file history has no decision times: decide each chunk at its latest broker time.

    Per-record recorded times (topic replays) take precedence in the runner.
    """
    times = [r.timestamp for r in chunk if r.timestamp is not None]
    return max(times) if times else 0.0


def _with_recorded_time(record: RawRecord, recorded: Mapping[str, Mapping[str, Any]]
                        ) -> RawRecord:
    """Decide at the recorded time, so deadline checks (EXPIRED) come out the same."""
    from dataclasses import replace

    import orjson

    try:
        request_id = orjson.loads(record.value or b"").get("request_id")
    except (orjson.JSONDecodeError, AttributeError):
        return record
    verdict = recorded.get(request_id) if isinstance(request_id, str) else None
    at = verdict.get("decided_at") if verdict is not None else None
    return replace(record, decided_at=float(at)) if isinstance(at, (int, float)) else record


def _compare(d: Decision, verdict: Mapping[str, Any] | None, report: ReplayReport) -> None:
    if verdict is None:
        report.unrecorded += 1
        return
    report.compared += 1
    codes = tuple(r.code for r in d.reasons)
    rec_codes = tuple(r.get("code", "") for r in verdict.get("reasons") or ())
    if verdict.get("decision") == d.decision and rec_codes == codes:
        report.same += 1
        return
    same_inputs = (verdict.get("policy_version") == d.policy_version
                   and verdict.get("model_version") == d.model_version
                   and (verdict.get("signals") or {}) == dict(d.signals)
                   and rc.STATE_RECOVERING not in rec_codes)
    if not same_inputs:
        report.warmup += 1
        return
    report.mismatches.append(Mismatch(d.request_id, d.agent_id,
                                      (str(verdict.get("decision")), rec_codes),
                                      (d.decision, codes), dict(d.signals)))
