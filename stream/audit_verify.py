"""Offline verification of an audit file (`holdgate.stream.audit` describes the format).

Only public keys are needed: no broker, no policy, no trust in the exporter.
Every check names the line where it fails, so an auditor can point at it:

* per record: the verdict's Ed25519 signature over its exact value bytes (or
  the tree head its Merkle proof leads to, for a batch-signed verdict); the
  action bytes' SHA-256 against the signed ``action_digest``; a sequenced
  verdict sits on its agent's partition (the signature binds the agent);
* per partition: offsets strictly increase (else reordered or duplicated);
  the signed ``seq`` runs on without a gap (a gap whose numbers turn up
  elsewhere is a reorder, otherwise a removal) from the header's
  ``first_seq`` to its ``last_seq``; the records and the header's holes cover
  ``[first_offset, end_offset)`` exactly, as a complete export must;
* for the file: the first line is a header, the last the end line (else it
  was truncated), whose record count and SHA-256 chain match.

A ``seq`` that restarts at 0 (a worker lost the partition's state) and a
record without action bytes are *notices*: reported, not failures.  What an
attacker who rewrites the whole file can still do is in `holdgate.stream.audit`.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from holdgate.keys import TrustStore
from holdgate.routing import partition_for
from holdgate.signing import signed_bytes
from holdgate.stream.audit import FORMAT, chain_next, chain_start

__all__ = ["Problem", "AuditReport", "verify_audit"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed check (or notice) and the line of the file it is about."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class AuditReport:
    """What `verify_audit` found: `ok` when nothing failed (notices do not fail)."""

    lines: int = 0
    records: int = 0
    actions: int = 0
    key_ids: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_obj(self) -> dict[str, Any]:
        """The ``--json`` form: ok, lines, records, actions, key_ids, problems, notices."""
        return {"ok": self.ok, "lines": self.lines, "records": self.records,
                "actions": self.actions, "key_ids": self.key_ids,
                "problems": [{"line": p.line, "problem": p.message} for p in self.problems],
                "notices": [{"line": p.line, "notice": p.message} for p in self.notices]}


@dataclass
class _Partition:
    offsets: list[tuple[int, int]] = field(default_factory=list)    # (line, offset)
    seqs: list[tuple[int, int]] = field(default_factory=list)       # (line, seq)


def verify_audit(lines: Iterable[bytes], trust: TrustStore) -> AuditReport:
    """Check the lines of an audit file (bytes, newline kept or not) against `trust`."""
    report = AuditReport()
    chain, header, end, end_at = chain_start(), None, None, 0
    parts: dict[int, _Partition] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        report.lines = number
        if end is not None:
            report.problems.append(Problem(number, "a line after the end line (appended)"))
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("holdgate_audit_end") == 1:
            end, end_at = obj, number
            continue
        chain = chain_next(chain, line)
        if number == 1:
            if isinstance(obj, dict) and obj.get("holdgate_audit") == 1:
                header = obj
            else:
                report.problems.append(Problem(1, f"not a {FORMAT} header"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("verdict"), dict):
            report.problems.append(Problem(number, "not an audit record (cut or edited)"))
            continue
        _check_record(number, obj, header, trust, report, parts)
    if header is not None:
        _check_partitions(header, parts, report)
    if end is None:
        report.problems.append(Problem(report.lines, "the file ends without its end line: "
                                       "truncated"))
    else:
        if end.get("records") != report.records:
            report.problems.append(Problem(end_at, f"the end line counts {end.get('records')} "
                                           f"records, the file holds {report.records}: "
                                           "lines removed or added"))
        if end.get("chain") != "sha256:" + chain.hex():
            report.problems.append(Problem(end_at, "the chain over the lines disagrees with "
                                           "the end line: a line was changed, removed, added "
                                           "or moved"))
    report.problems.sort(key=lambda p: p.line)
    report.notices.sort(key=lambda p: p.line)
    return report


def _unb64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _signed(v: dict[str, Any], value: bytes) -> tuple[bytes | None, str | None]:
    """What the verdict's signature must cover (`signed_bytes`), or why nothing can."""
    if "proof_b64" not in v:
        return signed_bytes(value, None)
    proof = _unb64(v["proof_b64"])
    return signed_bytes(value, proof) if proof is not None else (None, "proof_b64 is malformed")


def _check_record(number: int, obj: dict[str, Any], header: dict[str, Any] | None,
                  trust: TrustStore, report: AuditReport, parts: dict[int, _Partition]) -> None:
    def problem(message: str) -> None:
        report.problems.append(Problem(number, message))

    report.records += 1
    v = obj["verdict"]
    value, sig = _unb64(v.get("value_b64")), _unb64(v.get("sig_b64"))
    partition, offset = _int(v.get("partition")), _int(v.get("offset"))
    if value is None or sig is None or partition is None or offset is None:
        problem("verdict: value_b64, sig_b64, partition or offset missing or malformed")
        return
    kid = v.get("kid") if isinstance(v.get("kid"), str) else None
    signed, why = _signed(v, value)
    if signed is not None:
        why = trust.verify(kid, signed, sig, remember="proof_b64" in v)
    if why is not None:
        problem(f"verdict signature: {why} (partition {partition} offset {offset})")
    elif kid is not None:
        report.key_ids[kid] = report.key_ids.get(kid, 0) + 1
    try:
        verdict = orjson.loads(value)
    except orjson.JSONDecodeError:
        verdict = None
    if not isinstance(verdict, dict):
        problem("verdict value is not a JSON object")
        return
    action = obj.get("action")
    if action is None:
        report.notices.append(Problem(number, "no action bytes: " + str(
            obj.get("action_missing") or "not exported")))
    else:
        data = _unb64(action.get("value_b64")) if isinstance(action, dict) else None
        if data is None:
            problem("action: value_b64 missing or malformed")
        elif "sha256:" + hashlib.sha256(data).hexdigest() != verdict.get("action_digest"):
            problem(f"action bytes do not match the verdict's action_digest (request "
                    f"{verdict.get('request_id')})")
        else:
            report.actions += 1
    seq, agent = _int(verdict.get("seq")), verdict.get("agent_id")
    n = _int(header.get("partitions")) if header else None
    if seq is not None and n and isinstance(agent, str):
        home = partition_for(agent, n)
        if home != partition:
            problem(f"verdict of agent {agent} (seq {seq}) labelled partition {partition}; "
                    f"its agent's partition is {home}")
    part = parts.setdefault(partition, _Partition())
    part.offsets.append((number, offset))
    if seq is not None:
        part.seqs.append((number, seq))


def _check_partitions(header: dict[str, Any], parts: dict[int, _Partition],
                      report: AuditReport) -> None:
    given = header.get("ranges")
    ranges: dict[str, Any] = given if isinstance(given, dict) else {}
    for key in sorted(set(ranges) | {str(p) for p in parts}):
        p = int(key) if key.isdigit() else -1
        part = parts.get(p, _Partition())
        last_line = part.offsets[-1][0] if part.offsets else 1
        r = ranges.get(key)
        if not isinstance(r, dict):
            report.problems.append(Problem(last_line, f"partition {p} is not in the header"))
            continue
        before = len(report.problems)
        _check_offsets(p, r, part, report)
        _check_seqs(p, r, part, report)
        if len(report.problems) == before and r.get("count") != len(part.offsets):
            report.problems.append(Problem(last_line, f"partition {p}: {len(part.offsets)} "
                                           f"records, the header says {r.get('count')}"))


def _check_offsets(p: int, r: dict[str, Any], part: _Partition, report: AuditReport) -> None:
    """Offsets go forward, and records plus holes tile the complete range."""
    def add(line: int, message: str) -> None:
        report.problems.append(Problem(line, f"partition {p}: {message}"))

    prev: int | None = None
    for line, offset in part.offsets:
        if prev is not None and offset <= prev:
            add(line, f"offset {offset} after {prev}: lines reordered or duplicated")
        prev = offset if prev is None else max(prev, offset)
    first, end = _int(r.get("first_offset")), _int(r.get("end_offset"))
    if first is None or end is None:
        add(1, "the header gives no complete offset range")
        return
    holes = sorted((h[0], h[1]) for h in r.get("holes") or ()
                   if isinstance(h, list) and len(h) == 2 and all(_int(x) is not None for x in h))
    for line, offset in part.offsets:
        i = bisect.bisect_right(holes, (offset, float("inf"))) - 1
        if i >= 0 and holes[i][0] <= offset < holes[i][1]:
            add(line, f"offset {offset} lies in a range the header says holds no record")
    records = sorted((o, line) for line, o in part.offsets)
    cursor = first
    for a, b in sorted([(o, o + 1) for o, _ in records] + holes):
        if a > cursor:
            i = bisect.bisect_left(records, (a, 0))
            at = records[i][1] if i < len(records) else _last_line(part)
            what = f"offset {cursor}" if a - cursor == 1 else f"offsets {cursor}..{a - 1}"
            add(at, f"{what} missing: the export says the range is complete (lines removed)")
        cursor = max(cursor, b)
    if cursor < end:
        what = f"offset {cursor}" if end - cursor == 1 else f"offsets {cursor}..{end - 1}"
        add(_last_line(part), f"{what} missing at the end of the complete range "
            "(lines removed)")
    for line, offset in part.offsets:
        if not first <= offset < end:
            add(line, f"offset {offset} outside the exported range [{first}, {end})")


def _last_line(part: _Partition) -> int:
    return part.offsets[-1][0] if part.offsets else 1


def _check_seqs(p: int, r: dict[str, Any], part: _Partition, report: AuditReport) -> None:
    """Signed per-partition continuity: a gap is a removal, a step back a reorder."""
    def add(line: int, message: str) -> None:
        report.problems.append(Problem(line, f"partition {p}: {message}"))

    seqs = part.seqs
    want_first, want_last = _int(r.get("first_seq")), _int(r.get("last_seq"))
    if not seqs:
        if want_first is not None:
            add(1, f"the header says seq {want_first}..{want_last}, no verdict has one")
        return
    if want_first is not None and seqs[0][1] != want_first:
        add(seqs[0][0], f"begins at seq {seqs[0][1]}, the header says {want_first}: "
            "verdicts removed from the start, or lines reordered")
    present = sorted(s for _, s in seqs)
    prev = seqs[0][1]
    for line, seq in seqs[1:]:
        if seq == prev + 1:
            prev = seq
        elif seq == 0:
            report.notices.append(Problem(line, f"partition {p}: seq restarts at 0 after "
                                          f"{prev} (the worker lost this partition's state)"))
            prev = 0
        elif seq > prev + 1:
            between = bisect.bisect_left(present, seq) - bisect.bisect_right(present, prev)
            if between >= seq - prev - 1:
                add(line, f"seq {seq} follows seq {prev}: lines reordered")
            else:
                add(line, f"seq jumps from {prev} to {seq}: {seq - prev - 1 - between} "
                    "verdict(s) removed")
            prev = seq
        else:
            add(line, f"seq {seq} after seq {prev}: lines reordered or duplicated")
    if want_last is not None and prev != want_last:
        add(seqs[-1][0], f"ends at seq {prev}, the header says {want_last}: verdicts removed "
            "from the end, or lines reordered")
