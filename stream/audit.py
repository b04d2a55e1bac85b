"""Audit files: verdicts with their actions, exported exactly, verified offline.

An auditor must be able to check the decision log without a broker and
without trusting whoever handed over the file: only the workers' public keys.
So the export keeps every byte a signature or a digest covers, and adds what
makes removal, reordering and truncation visible.

Format (JSON Lines, one object per line, ``holdgate-audit/1``)::

    line 1   header  {"holdgate_audit": 1, "verdicts_topic", "actions_topic",
                      "partitions": N, "from", "to", "exported_at", "complete": true,
                      "ranges": {"<p>": {"first_offset", "end_offset", "holes",
                                         "count", "first_seq", "last_seq", "last_offset"}}}
    then     records {"verdict": {"partition", "offset", "timestamp", "value_b64",
                                  "sig_b64", "kid", "proof_b64" (batch-signed only)},
                      "action": {"partition", "offset", "value_b64"} | null,
                      "action_missing": "why"  (only with a null action)}
    last     end     {"holdgate_audit_end": 1, "records": M, "chain": "sha256:<hex>"}

Records are grouped by verdict partition, in offset order.  ``value_b64`` are
the record values byte for byte: Ed25519 checks over the verdict value (or,
with ``proof_b64``, over the tree head its Merkle proof leads to:
`holdgate.merkle`; files without it read as before), and
SHA-256 of the action value equals the verdict's ``action_digest``.  ``ranges``
says the export is *complete*: every committed record of ``[first_offset,
end_offset)`` is a line, and ``holes`` lists the sub-ranges holding none
(transaction markers, aborted records).  ``chain`` is c_M' where c_0 =
SHA-256("holdgate-audit/1") and c_i = SHA-256(c_{i-1} || line_i), over every
line before the end line (header included, newline excluded).

What `verify` detects, with the public keys alone:

* an altered verdict: its signature fails (value and signature are the
  worker's; nothing else can make them agree);
* an altered action: its SHA-256 differs from the signed ``action_digest``;
* a removed verdict: ``seq`` (signed, per partition 0, 1, 2, ... in the worker's
  state transaction) has a gap; the partition starts after the header's
  ``first_seq`` or ends before its ``last_seq``; an offset of the complete range
  is neither a line nor a hole; the count or the chain disagrees;
* reordered or duplicated lines: ``seq`` or offsets go backwards in a partition;
* a verdict moved to another partition: a sequenced verdict sits on its agent's
  partition (``partition_for(agent_id, partitions)``), which the signature binds;
* truncation: the end line is missing, or its count or chain disagrees.

What it cannot detect.  The header, the end line, offsets and the action
lines' placement are not signed (the exporter holds no worker key), so someone
who rewrites the *whole* file consistently can still:

* cut a partition's head or tail (and fix ``first_seq``/``last_seq``, holes,
  counts and chain): the gap is only visible against another source (the topic
  itself, an earlier or later export, a chain value published elsewhere);
* drop verdicts that carry no ``seq`` (a MALFORMED deny routed to another
  partition, a batch denied INTERNAL_ERROR), or drop an action's bytes (a null
  action is a notice; the verdict still carries the signed ``request``);
* cut the segment before a ``seq`` restart (``seq`` back to 0 when a worker lost
  a partition's state, reported as a notice) or swap in genuine verdicts from
  another topic signed by the same key (use one key per environment).

They can never forge, alter or reorder a signed verdict, nor hide a gap
inside a partition's sequenced run.  Checking is `holdgate.stream.audit_verify`.
"""
from __future__ import annotations

import base64
import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from holdgate.settings import Settings
from holdgate.signing import KID_HEADER, SIG_HEADER, read_proof
from holdgate.stream.logread import offset_bounds, open_consumer, partition_count, scan

__all__ = ["FORMAT", "ExportSummary", "export_audit", "chain_start", "chain_next"]

FORMAT = "holdgate-audit/1"


def chain_start() -> bytes:
    return hashlib.sha256(FORMAT.encode()).digest()


def chain_next(chain: bytes, line: bytes) -> bytes:
    """The running chain after one more line (its bytes without the newline)."""
    return hashlib.sha256(chain + line).digest()


# ------------------------------------------------------------------- export --

@dataclass
class ExportSummary:
    records: int = 0
    actions: int = 0
    missing_actions: int = 0
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Range:
    """One partition's complete range in the header, built while reading it."""

    first_offset: int
    end_offset: int
    holes: list[list[int]] = field(default_factory=list)
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_offset: int | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"first_offset": self.first_offset, "end_offset": self.end_offset,
                "holes": self.holes, "count": self.count, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "last_offset": self.last_offset}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export_audit(settings: Settings, start: float, end: float, sink: IO[bytes], *,
                 lookback: float = 3600.0, progress: Any = None) -> ExportSummary:
    """Write the audit file of verdicts stamped in ``[start, end)`` to `sink`.

    Actions are looked up by digest in the actions topic from ``start -
    lookback`` (an action is appended before its verdict; a worker that was
    down decides late).  Lines and action bytes are spooled to temporary files,
    so memory holds only offsets and digests, never the values.
    """
    consumer = open_consumer(settings, "holdgate-audit")
    try:
        n = partition_count(consumer, settings.verdicts_topic)
        bounds = offset_bounds(consumer, settings.verdicts_topic, range(n), start, end)
        with tempfile.TemporaryFile() as verdicts, tempfile.TemporaryFile() as actions:
            index: list[tuple[int, int, int, int, str]] = []   # p, offset, pos, len, digest
            ranges = {p: _Range(f, e) for p, (f, e) in bounds.items()}
            expected = {p: f for p, (f, _) in bounds.items()}
            for rec in scan(consumer, settings.verdicts_topic, bounds, progress=progress):
                r = ranges[rec.partition]
                if rec.offset > expected[rec.partition]:
                    r.holes.append([expected[rec.partition], rec.offset])
                expected[rec.partition] = rec.offset + 1
                value = rec.value or b""
                digest, seq = _digest_and_seq(value)
                sig = next((v for k, v in rec.headers if k == SIG_HEADER), b"")
                kid = next((v for k, v in rec.headers if k == KID_HEADER), b"")
                entry: dict[str, Any] = {
                    "partition": rec.partition, "offset": rec.offset,
                    "timestamp": rec.timestamp, "value_b64": _b64(value),
                    "sig_b64": _b64(sig), "kid": kid.decode("ascii", "replace")}
                proof = read_proof(rec.headers)
                if proof is not None:
                    entry["proof_b64"] = _b64(proof)
                part = orjson.dumps(entry)
                index.append((rec.partition, rec.offset, verdicts.tell(), len(part), digest))
                verdicts.write(part)
                r.count += 1
                r.last_offset = rec.offset
                if seq is not None:
                    r.first_seq = seq if r.first_seq is None else r.first_seq
                    r.last_seq = seq
            for p, (_, e) in bounds.items():
                if expected[p] < e:
                    ranges[p].holes.append([expected[p], e])
            found = _find_actions(consumer, settings, {i[4] for i in index if i[4]},
                                  start - lookback, end + 60.0, actions)
            summary = ExportSummary(partitions={p: r.to_obj() for p, r in ranges.items()})
            header = {"holdgate_audit": 1, "format": FORMAT,
                      "verdicts_topic": settings.verdicts_topic,
                      "actions_topic": settings.actions_topic, "partitions": n,
                      "from": start, "to": end, "lookback": lookback,
                      "exported_at": time.time(), "complete": True,
                      "ranges": {str(p): r for p, r in sorted(summary.partitions.items())}}
            chain = chain_start()
            line = orjson.dumps(header)
            sink.write(line + b"\n")
            chain = chain_next(chain, line)
            for _p, _offset, pos, length, digest in sorted(index):
                verdicts.seek(pos)
                hit = found.get(digest)
                action: bytes = b"null"
                extra = b""
                if hit is not None:
                    actions.seek(hit[2])
                    action = orjson.dumps({"partition": hit[0], "offset": hit[1],
                                           "value_b64": _b64(actions.read(hit[3]))})
                    summary.actions += 1
                else:
                    summary.missing_actions += 1
                    extra = b',"action_missing":' + orjson.dumps(
                        f"no record with this digest in {settings.actions_topic} from "
                        f"{lookback:.0f}s before the range start")
                line = b'{"verdict":' + verdicts.read(length) + b',"action":' + action \
                    + extra + b"}"
                sink.write(line + b"\n")
                chain = chain_next(chain, line)
                summary.records += 1
            end_line = orjson.dumps({"holdgate_audit_end": 1, "records": summary.records,
                                     "chain": "sha256:" + chain.hex()})
            sink.write(end_line + b"\n")
        return summary
    finally:
        consumer.close()


def _digest_and_seq(value: bytes) -> tuple[str, int | None]:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "", None
    if not isinstance(obj, dict):
        return "", None
    digest, seq = obj.get("action_digest"), obj.get("seq")
    return (digest if isinstance(digest, str) else "",
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None)


def _find_actions(consumer: Any, settings: Settings, digests: set[str], start: float,
                  end: float, spool: IO[bytes]) -> dict[str, tuple[int, int, int, int]]:
    """digest -> (partition, offset, spool position, length) of the first matching action."""
    found: dict[str, tuple[int, int, int, int]] = {}
    if not digests:
        return found
    n = partition_count(consumer, settings.actions_topic)
    bounds = offset_bounds(consumer, settings.actions_topic, range(n), start, end)
    for rec in scan(consumer, settings.actions_topic, bounds):
        value = rec.value or b""
        digest = "sha256:" + hashlib.sha256(value).hexdigest()
        if digest in digests and digest not in found:
            found[digest] = (rec.partition, rec.offset, spool.tell(), len(value))
            spool.write(value)
            if len(found) == len(digests):
                break
    return found

