"""Explain one recorded decision, then check it by deciding it again.

An operator asks "why was request X denied?" and must be able to trust the
answer: the verdict on the topic is the worker's signed word, so `explain`
shows it with its signature status, and then *re-derives* it.  The agent's
history on its partition is replayed through the same runner as the worker
(`holdgate.stream.replay`), from ``--from`` or the partition's start up to and
including the action, each action decided at its recorded decision time.
Signals are rebuilt from zero exactly as the worker built them, so under the
versions the verdict names, the replayed decision must equal the recorded one.

Outcomes (`Explanation.outcome`):

* ``reproduced``: same versions, same decision and reason codes;
* ``warm-up``: same versions, different signals, because the replay started
  after the partition's beginning (``--from``) or the worker was holding lost
  state: not a contradiction, the counters simply began at zero;
* ``mismatch``: same versions, same signals, another decision: a determinism
  bug, or the bundle's text differs under the same version claim;
* ``unconfirmed``: the local bundle or model has another version than the
  verdict names; what the local text decides is still reported;
* ``not-replayed``: the action was not found on the actions topic.

The text of each determining policy comes from the *local* bundle (the
verdict carries the @id; `PolicyInfo.line` locates its statement), flagged
when the local version is not the one the verdict cites.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from holdgate import reasons as rc
from holdgate.keys import TrustStore
from holdgate.routing import partition_for
from holdgate.settings import Settings
from holdgate.signing import read_signature, verify_record
from holdgate.stream.core import Decision
from holdgate.stream.edges import RawRecord
from holdgate.stream.logread import LogRecord, offset_bounds, open_consumer, partition_count, scan

__all__ = ["Explanation", "PolicyText", "explain", "policy_statement"]


@dataclass(frozen=True, slots=True)
class PolicyText:
    """One determining policy as the local bundle has it (text None: not there)."""

    id: str
    line: int | None
    effect: str | None
    text: str | None


@dataclass
class Explanation:
    """Everything `explain` found; `to_obj` is the documented ``--json`` form."""

    request_id: str
    verdict: dict[str, Any]
    verdict_at: dict[str, Any]
    signature: dict[str, Any]
    action_at: dict[str, Any] | None = None
    policies: list[PolicyText] = field(default_factory=list)
    local_policy_version: str = ""
    local_model_version: str | None = None
    replayed: dict[str, Any] | None = None
    history: dict[str, int] = field(default_factory=dict)
    outcome: str = "not-replayed"
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return self.outcome == "reproduced"

    def to_obj(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "request_id": self.request_id, "agent_id": v.get("agent_id"),
            "decision": v.get("decision"), "reasons": v.get("reasons") or [],
            "signals": v.get("signals") or {}, "policy_version": v.get("policy_version"),
            "model_version": v.get("model_version"), "seq": v.get("seq"),
            "decided_at": v.get("decided_at"), "request": v.get("request"),
            "verdict_at": self.verdict_at, "action_at": self.action_at,
            "signature": self.signature,
            "policies": [{"id": p.id, "line": p.line, "effect": p.effect, "text": p.text}
                         for p in self.policies],
            "local": {"policy_version": self.local_policy_version,
                      "model_version": self.local_model_version,
                      "policy_version_matches": self.local_policy_version
                      == v.get("policy_version"),
                      "model_version_matches": self.local_model_version
                      == v.get("model_version")},
            "replayed": self.replayed, "history": self.history,
            "outcome": self.outcome, "reproduced": self.reproduced, "notes": self.notes,
        }


def policy_statement(source: str, line: int) -> str | None:
    """The statement of policy text `source` that starts on `line` (1-based).

    Uses the bundle's own splitter, the one that numbered `PolicyInfo.line`,
    so the two can never disagree about where a policy starts.
    """
    from holdgate.policies.bundle import _split_statements

    for start, statement in _split_statements(source):
        if start == line:
            return statement.strip()
    return None


def explain(settings: Settings, request_id: str, *, trust: TrustStore,
            since: float | None = None, agent: str | None = None,
            progress: Any = None) -> Explanation | None:
    """Find the verdict for `request_id` and re-decide it; None when there is none.

    `settings` names the topics and the local bundle and model (``policy_dir``,
    ``model``) the re-evaluation runs under.
    """
    consumer = open_consumer(settings, "holdgate-explain")
    try:
        hit = _find_verdict(consumer, settings, request_id, since, agent, progress)
        if hit is None:
            return None
        record, verdict = hit
        kid, _ = read_signature(record.headers)
        why = verify_record(trust, record.value or b"", record.headers)
        status = "valid" if why is None else "invalid" if len(trust) else "unverified"
        out = Explanation(
            request_id=request_id, verdict=verdict,
            verdict_at={"topic": record.topic, "partition": record.partition,
                        "offset": record.offset, "timestamp": record.timestamp},
            signature={"status": status, "key_id": kid,
                       "detail": f"signed by trusted key {kid}" if why is None else why
                       if len(trust) else "no trusted keys given (HOLDGATE_TRUSTED_KEYS, "
                       "--trusted-keys): the signature was not checked"})
        _replay(consumer, settings, out, record, since)
        out.policies = _policy_texts(settings, [verdict, out.replayed or {}])
        return out
    finally:
        consumer.close()


def _find_verdict(consumer: Any, settings: Settings, request_id: str, since: float | None,
                  agent: str | None, progress: Any) -> tuple[LogRecord, dict[str, Any]] | None:
    topic = settings.verdicts_topic
    n = partition_count(consumer, topic)
    parts = [partition_for(agent, n)] if agent else list(range(n))
    needle = request_id.encode()
    for rec in scan(consumer, topic, offset_bounds(consumer, topic, parts, since),
                    progress=progress):
        if not rec.value or needle not in rec.value:
            continue
        try:
            obj = orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("request_id") == request_id \
                and (agent is None or obj.get("agent_id") == agent):
            return rec, obj
    return None


def _actions_until(consumer: Any, settings: Settings, digest: str, agent: str,
                   since: float | None) -> tuple[list[RawRecord], LogRecord] | None:
    """The action's partition from `since` up to and including the action, and the action."""
    topic = settings.actions_topic
    n = partition_count(consumer, topic)
    home = partition_for(agent, n)
    for p in [home] + [q for q in range(n) if q != home]:   # misrouted: MALFORMED elsewhere
        records: list[RawRecord] = []
        for rec in scan(consumer, topic, offset_bounds(consumer, topic, [p], since)):
            records.append(RawRecord(key=rec.key, value=rec.value, partition=p,
                                     offset=rec.offset, topic=topic,
                                     timestamp=rec.timestamp if rec.log_append_time else None))
            if "sha256:" + hashlib.sha256(rec.value or b"").hexdigest() == digest:
                return records, rec
    return None


def _recorded(consumer: Any, settings: Settings, partition: int, since: float | None,
              upto: LogRecord | None) -> dict[str, dict[str, Any]]:
    """Verdicts recorded on `partition` (for their decision times), up to the explained one."""
    topic = settings.verdicts_topic
    first, end = offset_bounds(consumer, topic, [partition], since)[partition]
    if upto is not None and upto.partition == partition:
        end = min(end, upto.offset + 1)
    recorded: dict[str, dict[str, Any]] = {}
    for rec in scan(consumer, topic, {partition: (first, end)}):
        try:
            obj = orjson.loads(rec.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("request_id"), str):
            recorded.setdefault(obj["request_id"], obj)
    return recorded


def _replay(consumer: Any, settings: Settings, out: Explanation, record: LogRecord,
            since: float | None) -> None:
    from holdgate.stream.replay import replay
    from holdgate.stream.state import MemoryStore
    from holdgate.stream.worker import build_runner

    verdict = out.verdict
    digest, agent = str(verdict.get("action_digest")), str(verdict.get("agent_id"))
    parts = partition_count(consumer, settings.actions_topic)
    runner = build_runner(settings.with_(partitions=parts), MemoryStore(), worker_id="explain")
    runner.sealing = False
    snapshot = runner.snapshot
    out.local_policy_version = snapshot.policy_version
    out.local_model_version = snapshot.model_version
    found = _actions_until(consumer, settings, digest, agent, since)
    if found is None:
        out.notes.append(f"no action with digest {digest} on {settings.actions_topic}"
                         + (" since --from" if since is not None else ""))
        return
    records, action = found
    out.action_at = {"topic": action.topic, "partition": action.partition,
                     "offset": action.offset, "timestamp": action.timestamp}
    recorded = _recorded(consumer, settings, action.partition, since, record)
    recorded[out.request_id] = verdict      # its own decision time, wherever it landed
    target: list[Decision] = []

    def keep(d: Decision) -> None:
        if d.request_id == out.request_id and d.digest == digest:
            target.append(d)

    report = replay(records, runner, recorded=recorded, on_decision=keep)
    out.history = {"partition": action.partition, "actions": report.records,
                   "same": report.same, "warmup": report.warmup,
                   "mismatches": len(report.mismatches), "unrecorded": report.unrecorded}
    if not target:
        out.notes.append("the replay produced no verdict for this action (a duplicate, or "
                         "a record without identity)")
        return
    d = target[-1]
    out.replayed = {"decision": d.decision,
                    "reasons": [{"code": r.code, "message": r.message, "policy_id": r.policy_id}
                                for r in d.reasons],
                    "signals": dict(d.signals), "policy_version": d.policy_version,
                    "model_version": d.model_version}
    _judge(out, d, since)


def _judge(out: Explanation, d: Decision, since: float | None) -> None:
    v = out.verdict
    codes = [str(r.get("code")) for r in v.get("reasons") or ()]
    same = v.get("decision") == d.decision and codes == [r.code for r in d.reasons]
    verdict_word = "the same" if same else "differently"
    if v.get("policy_version") != d.policy_version:
        out.outcome = "unconfirmed"
        out.notes.append(f"cannot confirm under version {v.get('policy_version')}: the local "
                         f"bundle is version {d.policy_version}; the local text decides "
                         f"{d.decision} {[r.code for r in d.reasons]}, {verdict_word}")
    if v.get("model_version") != d.model_version:
        out.outcome = "unconfirmed"
        out.notes.append(f"cannot confirm under model {v.get('model_version')}: the local "
                         f"model is {d.model_version}; it decides {d.decision}, "
                         f"{verdict_word}")
    if out.outcome == "unconfirmed":
        return
    if same:
        out.outcome = "reproduced"
    elif (v.get("signals") or {}) != dict(d.signals) or rc.STATE_RECOVERING in codes:
        out.outcome = "warm-up"
        start = "from --from" if since is not None else "from the partition's first " \
            "retained action"
        out.notes.append(f"signals differ: the replay counted {start}; the worker's counters "
                         "had seen more (or it was holding lost state)")
    else:
        out.outcome = "mismatch"
        out.notes.append("same versions and signals, another decision: the bundle text differs "
                         "under the same version claim, or decisions are not deterministic")


def _policy_texts(settings: Settings, decisions: list[dict[str, Any]]) -> list[PolicyText]:
    """The local text of every policy the recorded (or replayed) reasons cite."""
    from holdgate.policies import POLICY_FILE, PolicyBundle

    ids = list(dict.fromkeys(str(r["policy_id"]) for d in decisions
                             for r in d.get("reasons") or ()
                             if isinstance(r, dict) and r.get("policy_id")))
    if not ids:
        return []
    bundle = PolicyBundle.load(settings.policy_path)
    out = []
    for pid in ids:
        info = bundle.policies.get(pid)
        if info is None:
            out.append(PolicyText(pid, None, None, None))
        else:
            out.append(PolicyText(pid, info.line, info.effect,
                                  policy_statement(bundle.sources[POLICY_FILE], info.line)))
    return out
