"""`verify_audit` offline, on hand-built audit files: what it catches and what it cannot.

The files are made the way `export_audit` makes them (header, records, end
line with the chain); `_reseal` plays an attacker who rewrites the whole file
and recomputes every unsigned part.  The signed ``seq`` still exposes a gap
or a reorder inside a partition; cutting a partition's tail and fixing the
header is the documented blind spot.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from holdgate.keys import Signer, TrustStore
from holdgate.routing import partition_for
from holdgate.stream.audit import chain_next, chain_start
from holdgate.stream.audit_verify import verify_audit

SIGNER = Signer.generate()
TRUST = TrustStore([SIGNER.public_key])
PARTS = 2
AGENTS = {p: next(f"agent-{i}" for i in range(100) if partition_for(f"agent-{i}", PARTS) == p)
          for p in range(PARTS)}


def _record(partition: int, offset: int, seq: int | None, *, agent: str | None = None,
            signer: Signer = SIGNER) -> dict[str, Any]:
    action = orjson.dumps({"request_id": f"r-{partition}-{offset}", "n": offset})
    verdict: dict[str, Any] = {
        "request_id": f"r-{partition}-{offset}", "agent_id": agent or AGENTS[partition],
        "decision": "allow", "reasons": [{"code": "PERMITTED"}],
        "action_digest": "sha256:" + hashlib.sha256(action).hexdigest(), "decided_at": 1.5}
    if seq is not None:
        verdict["seq"] = seq
    value = orjson.dumps(verdict)
    return {"verdict": {"partition": partition, "offset": offset, "timestamp": 1.5,
                        "value_b64": base64.b64encode(value).decode(),
                        "sig_b64": base64.b64encode(signer.sign(value)).decode(),
                        "kid": signer.key_id},
            "action": {"partition": partition, "offset": offset,
                       "value_b64": base64.b64encode(action).decode()}}


def _file(records: list[dict[str, Any]], ends: dict[int, int]) -> list[bytes]:
    """Header, records and end line exactly as an export writes them."""
    ranges = {}
    for p, end in ends.items():
        mine = [r["verdict"] for r in records if r["verdict"]["partition"] == p]
        offsets = [v["offset"] for v in mine]
        seqs = [orjson.loads(base64.b64decode(v["value_b64"])).get("seq") for v in mine]
        seqs = [s for s in seqs if s is not None]
        holes, cursor = [], 0
        for o in sorted(offsets) + [end]:
            if o > cursor:
                holes.append([cursor, o])
            cursor = o + 1
        ranges[str(p)] = {"first_offset": 0, "end_offset": end, "holes": holes,
                          "count": len(mine), "first_seq": seqs[0] if seqs else None,
                          "last_seq": seqs[-1] if seqs else None,
                          "last_offset": offsets[-1] if offsets else None}
    header = {"holdgate_audit": 1, "partitions": PARTS, "complete": True, "ranges": ranges}
    return _reseal([orjson.dumps(header)] + [orjson.dumps(r) for r in records] + [b"{}"])


def _reseal(lines: list[bytes]) -> list[bytes]:
    """Recompute the end line over every other line (what a whole-file rewriter can do)."""
    chain = chain_start()
    for line in lines[:-1]:
        chain = chain_next(chain, line)
    end = {"holdgate_audit_end": 1, "records": len(lines) - 2, "chain": "sha256:" + chain.hex()}
    return lines[:-1] + [orjson.dumps(end)]


def _clean() -> list[bytes]:
    # partition 0: offsets 0..5 with a marker at 3; partition 1: 0..2, marker at 2
    records = [_record(0, o, s) for o, s in ((0, 0), (1, 1), (2, 2), (4, 3), (5, 4))] + \
              [_record(1, 0, 0), _record(1, 1, 1)]
    return _file(records, {0: 7, 1: 3})


def _problems(lines: list[bytes]) -> list[str]:
    return [str(p) for p in verify_audit(lines, TRUST).problems]


def test_a_clean_file_verifies() -> None:
    report = verify_audit(_clean(), TRUST)
    assert report.ok, report.problems
    assert (report.records, report.actions, report.key_ids) == (7, 7, {SIGNER.key_id: 7})


def test_a_removed_verdict_shows_through_a_resealed_file() -> None:
    lines = _clean()
    del lines[3]                                    # partition 0, seq 2
    problems = _problems(_reseal(lines))
    assert "line 4: partition 0: seq jumps from 1 to 3: 1 verdict(s) removed" in problems
    assert any("offset 2 missing" in p for p in problems)


def test_a_reorder_shows_through_a_resealed_file() -> None:
    lines = _clean()
    lines[2], lines[3] = lines[3], lines[2]
    problems = _problems(_reseal(lines))
    assert "line 3: partition 0: seq 2 follows seq 0: lines reordered" in problems
    assert "line 4: partition 0: seq 1 after seq 2: lines reordered or duplicated" in problems
    assert not any("removed" in p for p in problems)


def test_a_verdict_relabelled_to_another_partition() -> None:
    lines = _clean()
    obj = orjson.loads(lines[7])
    obj["verdict"]["partition"] = 0
    lines[7] = orjson.dumps(obj)
    assert any("line 8: verdict of agent" in p and "its agent's partition is 1" in p
               for p in _problems(_reseal(lines)))


def test_foreign_keys_unsigned_and_appended_lines() -> None:
    lines = _clean()
    lines[1] = orjson.dumps(_record(0, 0, 0, signer=Signer.generate()))
    obj = orjson.loads(lines[2])
    obj["verdict"]["sig_b64"] = ""
    lines[2] = orjson.dumps(obj)
    lines = _reseal(lines) + [lines[3]]
    problems = _problems(lines)
    assert any(p.startswith("line 2: verdict signature: signed by unknown key") for p in problems)
    assert any(p.startswith("line 3: verdict signature: unsigned") for p in problems)
    assert "line 10: a line after the end line (appended)" in problems


def test_a_record_in_a_declared_hole_and_a_missing_header() -> None:
    lines = _clean()
    header = orjson.loads(lines[0])
    header["ranges"]["0"]["holes"] = [[3, 5]]
    lines[0] = orjson.dumps(header)
    assert "line 5: partition 0: offset 4 lies in a range the header says holds no record" in \
        _problems(_reseal(lines))
    assert "line 1: not a holdgate-audit/1 header" in _problems(_reseal(_clean()[1:]))


def test_a_seq_restart_is_a_notice_not_a_failure() -> None:
    records = [_record(0, 0, 7), _record(0, 1, 8), _record(0, 2, 0), _record(0, 3, 1)]
    report = verify_audit(_file(records, {0: 4}), TRUST)
    assert report.ok, report.problems
    assert [str(n) for n in report.notices] == [
        "line 4: partition 0: seq restarts at 0 after 8 (the worker lost this partition's "
        "state)"]


def test_unsequenced_verdicts_and_null_actions() -> None:
    records = [_record(0, 0, 0), _record(0, 1, None), _record(0, 2, 1)]
    records[1]["action"] = None
    records[1]["action_missing"] = "not found"
    report = verify_audit(_file(records, {0: 3}), TRUST)
    assert report.ok and report.actions == 2
    assert [str(n) for n in report.notices] == ["line 3: no action bytes: not found"]


def test_blind_spot_a_cut_tail_with_a_rewritten_header() -> None:
    """Documented: a whole-file rewriter can cut a partition's tail (seq has no end marker)."""
    lines = _clean()
    del lines[5]                                    # partition 0, seq 4, offset 5
    header = orjson.loads(lines[0])
    header["ranges"]["0"].update(end_offset=5, last_seq=3, last_offset=4, count=4,
                                 holes=[[3, 4]])
    lines[0] = orjson.dumps(header)
    assert verify_audit(_reseal(lines), TRUST).ok
    # ... but not without rewriting the header: then the cut shows
    cut = _clean()
    del cut[5]
    assert any("ends at seq 3, the header says 4" in p for p in _problems(_reseal(cut)))


def _batch_signed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same records signed as one worker batch: one signature, a proof each."""
    from holdgate.signing import PROOF_HEADER, sign_batch
    values = [base64.b64decode(r["verdict"]["value_b64"]) for r in records]
    for r, headers in zip(records, sign_batch(SIGNER, values)):
        h = dict(headers)
        r["verdict"]["sig_b64"] = base64.b64encode(h["hg-sig"]).decode()
        r["verdict"]["proof_b64"] = base64.b64encode(h[PROOF_HEADER]).decode()
    return records


def test_batch_signed_verdicts_verify_and_a_moved_proof_does_not() -> None:
    records = _batch_signed([_record(0, o, o) for o in range(4)])
    report = verify_audit(_file(records, {0: 4}), TRUST)
    assert report.ok, report.problems
    assert report.key_ids == {SIGNER.key_id: 4}
    swapped = _batch_signed([_record(0, o, o) for o in range(4)])
    swapped[1]["verdict"]["proof_b64"] = swapped[2]["verdict"]["proof_b64"]
    assert any("line 3: verdict signature" in p for p in _problems(_file(swapped, {0: 4})))
    garbled = _batch_signed([_record(0, o, o) for o in range(4)])
    garbled[0]["verdict"]["proof_b64"] = "%%%"
    assert any("proof_b64 is malformed" in p for p in _problems(_file(garbled, {0: 4})))
