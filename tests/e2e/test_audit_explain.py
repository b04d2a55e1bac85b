"""`holdgate audit export|verify` and `holdgate explain` against a live history.

One real worker decides allows, behavioural denies, a burst it signs as one
batch (Merkle proofs) and a misrouted record (a MALFORMED deny that lands on
another partition, without seq).  The exported audit file verifies with the
public key alone, and every kind of tampering (an altered verdict or action
byte, a proof moved to another verdict, a removed, swapped or cut line) makes
`audit verify` exit 1 naming the line and the reason.  `explain` reproduces
recorded decisions from the history, and reports a local bundle whose text
differs from the version the verdict names.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from holdgate.client import Gate
from holdgate.events import ActionRequest
from holdgate.routing import partition_for
from holdgate.settings import Settings
from workers import WorkerProcess, publish_raw, read_topic


def _cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **settings.to_env()})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
            verdict_keys: dict[str, str]) -> dict[str, Any]:
    """A live run: allows, REPETITION denies, one misrouted action; then an audit export."""
    tmp = tmp_path_factory.mktemp("audit")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=kafka_bootstrap, app_id=f"hg-audit-{tag}",
                        actions_topic=f"a{tag}.actions", verdicts_topic=f"a{tag}.verdicts",
                        deadletter_topic=f"a{tag}.deadletter", partitions=2,
                        datadir=str(tmp / "worker"),
                        signing_key_file=verdict_keys["signing_key_file"],
                        trusted_keys=verdict_keys["trusted_keys"]).validated()
    from holdgate.topics import ensure_topics

    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    t_start = time.time()
    try:
        worker.wait_ready()
        with Gate(bootstrap=settings.bootstrap, settings=settings) as gate:
            def emails(i: int) -> Any:
                return gate.check(action="emails.send", agent_id="support-bot-2", timeout=20,
                                  resource={"type": "Email", "id": f"e-{i % 2}"}, context={})

            def reads(i: int) -> Any:
                return gate.check(action="records.read", agent_id="audit-bot-1", timeout=20,
                                  resource={"type": "Record", "id": "web-analytics-2024"},
                                  context={"n": str(i)})

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(emails, range(25)))
                list(pool.map(reads, range(20)))
        _burst(settings, "audit-bot-1", 6)       # one produce request: one signed batch
        misrouted = ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                                         resource={"type": "Ticket", "id": "T-1"})
        wrong = 1 - partition_for("support-bot-1", settings.partitions)
        found = publish_raw(settings, misrouted, partition=wrong)
        assert found is not None and found[1]["reasons"][0]["code"] == "MALFORMED"
    finally:
        worker.stop()
    recorded = {orjson.loads(r.value)["request_id"]: orjson.loads(r.value)
                for r in read_topic(settings, settings.verdicts_topic)}
    audit_file = tmp / "audit.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start - 60))
    result = _cli(settings, "audit", "export", "--from", since, "--output", str(audit_file))
    assert result.returncode == 0, result.stderr
    return {"settings": settings, "tmp": tmp, "recorded": recorded, "since": since,
            "audit": audit_file, "misrouted": misrouted.request_id}


def _burst(settings: Settings, agent: str, n: int) -> None:
    """n actions in one record batch: the worker decides and signs them as one batch."""
    from kafka import KafkaProducer

    from holdgate.events import encode

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=200)
    for i in range(n):
        req = ActionRequest.create(agent_id=agent, action="records.read",
                                   resource={"type": "Record", "id": "web-analytics-2024"},
                                   context={"burst": str(i)})
        producer.send(settings.actions_topic, key=agent.encode(), value=encode(req),
                      partition=partition_for(agent, settings.partitions))
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [r for r in read_topic(settings, settings.verdicts_topic)
                if b'"burst"' in (r.value or b"")]
        if len(done) >= n:
            return
        time.sleep(0.5)
    raise AssertionError("the burst was not decided in time")


# ------------------------------------------------------------------- audit --

def _records(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _verify(history: dict[str, Any], lines: list[bytes], name: str,
            *extra: str) -> subprocess.CompletedProcess[str]:
    path = history["tmp"] / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return _cli(history["settings"], "audit", "verify", str(path), *extra)


def _seq_run(lines: list[bytes]) -> list[int]:
    """Indexes of two adjacent record lines with seqs on the same partition."""
    objs = [json.loads(line) for line in lines]
    for i in range(1, len(lines) - 2):
        a, b = objs[i].get("verdict"), objs[i + 1].get("verdict")
        if a and b and a["partition"] == b["partition"]:
            va = json.loads(base64.b64decode(a["value_b64"]))
            vb = json.loads(base64.b64decode(b["value_b64"]))
            if va.get("seq") is not None and vb.get("seq") == va["seq"] + 1 and i > 2:
                return [i, i + 1]
    raise AssertionError("no adjacent sequenced verdicts")


def test_exported_audit_file_verifies(history: dict[str, Any]) -> None:
    lines = _records(history["audit"])
    header, end = json.loads(lines[0]), json.loads(lines[-1])
    assert header["holdgate_audit"] == 1 and header["complete"] is True
    assert end["records"] == len(lines) - 2 == len(history["recorded"])
    body = [json.loads(line) for line in lines[1:-1]]
    assert all(r["action"] is not None for r in body)          # every action found, exactly
    assert {r["verdict"]["kid"] for r in body} == {_kid(history)}
    unsequenced = [r for r in body if "seq" not in json.loads(
        base64.b64decode(r["verdict"]["value_b64"]))]
    assert len(unsequenced) == 1                              # the misrouted MALFORMED deny
    assert sum("proof_b64" in r["verdict"] for r in body) >= 6  # the burst: batch-signed
    result = _cli(history["settings"], "audit", "verify", str(history["audit"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and "OK" in result.stderr
    result = _cli(history["settings"], "audit", "verify", str(history["audit"]), "--json")
    report = json.loads(result.stdout)
    assert set(report) >= {"ok", "lines", "records", "actions", "key_ids", "problems",
                           "notices"}
    assert report["ok"] and report["records"] == report["actions"] == len(body)


def _kid(history: dict[str, Any]) -> str:
    from holdgate.keys import TrustStore

    return TrustStore.from_paths([history["settings"].trusted_keys]).key_ids[0]


def test_altered_verdict_byte_fails_its_signature(history: dict[str, Any]) -> None:
    lines = _records(history["audit"])
    obj = json.loads(lines[3])
    value = base64.b64decode(obj["verdict"]["value_b64"]).replace(b'"decided_at":1',
                                                                  b'"decided_at":2')
    obj["verdict"]["value_b64"] = base64.b64encode(value).decode()
    lines[3] = json.dumps(obj, separators=(",", ":")).encode()
    result = _verify(history, lines, "altered-verdict.jsonl")
    assert result.returncode == 1
    assert "line 4: verdict signature: signature by ed25519:" in result.stdout, result.stdout


def test_a_proof_moved_to_another_verdict_fails_its_signature(history: dict[str, Any]
                                                              ) -> None:
    lines = _records(history["audit"])
    batched = [i for i, line in enumerate(lines) if b'"proof_b64"' in line]
    a, b = json.loads(lines[batched[0]]), json.loads(lines[batched[1]])
    a["verdict"]["proof_b64"] = b["verdict"]["proof_b64"]
    lines[batched[0]] = orjson.dumps(a)
    result = _verify(history, lines, "moved-proof.jsonl")
    assert result.returncode == 1
    assert f"line {batched[0] + 1}: verdict signature" in result.stderr + result.stdout


def test_altered_action_byte_fails_its_digest(history: dict[str, Any]) -> None:
    lines = _records(history["audit"])
    obj = json.loads(lines[5])
    action = base64.b64decode(obj["action"]["value_b64"]).replace(b'"occurred_at":1',
                                                                  b'"occurred_at":2')
    obj["action"]["value_b64"] = base64.b64encode(action).decode()
    lines[5] = json.dumps(obj, separators=(",", ":")).encode()
    result = _verify(history, lines, "altered-action.jsonl")
    assert result.returncode == 1
    assert "line 6: action bytes do not match the verdict's action_digest" in result.stdout
    assert "signature" not in result.stdout        # the verdict itself is intact


def test_removed_line_is_a_seq_gap(history: dict[str, Any]) -> None:
    lines = _records(history["audit"])
    i, _ = _seq_run(lines)
    del lines[i]
    result = _verify(history, lines, "removed.jsonl")
    assert result.returncode == 1
    assert f"line {i + 1}: partition" in result.stdout and "1 verdict(s) removed" in \
        result.stdout, result.stdout
    assert "missing: the export says the range is complete" in result.stdout
    assert "the end line counts" in result.stdout


def test_swapped_lines_are_reordered(history: dict[str, Any]) -> None:
    lines = _records(history["audit"])
    i, j = _seq_run(lines)
    lines[i], lines[j] = lines[j], lines[i]
    result = _verify(history, lines, "swapped.jsonl")
    assert result.returncode == 1
    assert "lines reordered" in result.stdout and "verdict(s) removed" not in result.stdout, \
        result.stdout
    assert f"line {j + 1}: partition" in result.stdout


def test_truncated_file_is_detected(history: dict[str, Any]) -> None:
    data = history["audit"].read_bytes()
    for name, cut in (("cut-mid.jsonl", data[: len(data) * 3 // 5]),
                      ("cut-end.jsonl", b"".join(x + b"\n" for x in data.splitlines()[:-1]))):
        path = history["tmp"] / name
        path.write_bytes(cut)
        result = _cli(history["settings"], "audit", "verify", str(path))
        assert result.returncode == 1
        assert "ends without its end line: truncated" in result.stdout, result.stdout


def test_verify_refuses_without_trusted_keys(history: dict[str, Any]) -> None:
    settings = history["settings"].with_(trusted_keys="")
    env = {**os.environ, **settings.to_env()}
    result = subprocess.run([sys.executable, "-m", "holdgate", "audit", "verify",
                             str(history["audit"])], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 2 and "no trusted keys" in result.stderr


# ----------------------------------------------------------------- explain --

def _pick(history: dict[str, Any], code: str) -> dict[str, Any]:
    return next(v for v in history["recorded"].values()
                if code in [r["code"] for r in v["reasons"]])


def test_explain_reproduces_a_behavioural_deny(history: dict[str, Any]) -> None:
    deny = _pick(history, "REPETITION")
    result = _cli(history["settings"], "explain", deny["request_id"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    e = json.loads(result.stdout)
    assert set(e) >= {"request_id", "agent_id", "decision", "reasons", "signals",
                      "policy_version", "model_version", "seq", "verdict_at", "action_at",
                      "signature", "policies", "local", "replayed", "history", "outcome",
                      "reproduced", "notes"}
    assert e["outcome"] == "reproduced" and e["reproduced"] is True
    assert e["decision"] == e["replayed"]["decision"] == "deny"
    assert e["signals"] == e["replayed"]["signals"] and e["signals"]["repeat_10s"] > 3
    assert e["signature"] == {"status": "valid", "key_id": _kid(history),
                              "detail": f"signed by trusted key {_kid(history)}"}
    assert e["local"]["policy_version_matches"] and e["local"]["model_version_matches"]
    cited = next(r["policy_id"] for r in deny["reasons"] if r["code"] == "REPETITION")
    (policy,) = [p for p in e["policies"] if p["id"] == cited]
    assert policy["text"].startswith(f'@id("{policy["id"]}")') and policy["text"].endswith(";")
    assert "context.signals.repeat_10s" in policy["text"] and policy["effect"] == "forbid"
    assert e["history"]["mismatches"] == 0 and e["history"]["actions"] >= 4


def test_explain_text_for_an_allow_on_the_agents_partition(history: dict[str, Any]) -> None:
    allow = next(v for v in history["recorded"].values()
                 if v["decision"] == "allow" and v["agent_id"] == "audit-bot-1")
    result = _cli(history["settings"], "explain", allow["request_id"], "--agent", "audit-bot-1",
                  "--from", history["since"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REPRODUCED" in result.stdout and "signature VALID" in result.stdout
    assert '@id("auditor-read-all")' in result.stdout, result.stdout


def test_explain_reproduces_a_misrouted_malformed_deny(history: dict[str, Any]) -> None:
    result = _cli(history["settings"], "explain", history["misrouted"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    e = json.loads(result.stdout)
    assert e["outcome"] == "reproduced" and e["seq"] is None
    assert e["action_at"]["partition"] != e["verdict_at"]["partition"]


def test_explain_reports_a_locally_edited_bundle(history: dict[str, Any]) -> None:
    """The verdict says version X; the operator's policy.cedar was edited since."""
    from holdgate.policies import PolicyBundle, default_bundle_path

    allow = next(v for v in history["recorded"].values()
                 if v["decision"] == "allow" and v["agent_id"] == "support-bot-2")
    assert allow["reasons"][0]["policy_id"] == "support-emails"
    edited = history["tmp"] / "edited-bundle"
    shutil.copytree(default_bundle_path(), edited, dirs_exist_ok=True)
    policy = edited / "policy.cedar"
    text = policy.read_text()
    start = text.index('@id("support-emails")')
    policy.write_text(text[:start] + text[start:].replace(
        'action == Action::"emails.send"', 'action == Action::"tickets.reply"', 1))
    local = PolicyBundle.load(edited).version
    recorded = allow["policy_version"]
    assert local != recorded
    result = _cli(history["settings"], "explain", allow["request_id"], "--policy-dir",
                  str(edited))
    assert result.returncode == 1
    assert f"cannot confirm under version {recorded}: the local bundle is version {local}" \
        in result.stdout, result.stdout
    assert "the local text decides deny ['NO_PERMIT'], differently" in result.stdout
    assert "NOT the verdict's version" in result.stdout and 'Action::"tickets.reply"' in \
        result.stdout
    result = _cli(history["settings"], "explain", allow["request_id"], "--policy-dir",
                  str(edited), "--json")
    e = json.loads(result.stdout)
    assert e["outcome"] == "unconfirmed" and not e["reproduced"]
    assert e["local"]["policy_version"] == local and not e["local"]["policy_version_matches"]
    assert (e["decision"], e["replayed"]["decision"]) == ("allow", "deny")
    assert [r["code"] for r in e["replayed"]["reasons"]] == ["NO_PERMIT"]


def test_explain_unknown_request(history: dict[str, Any]) -> None:
    result = _cli(history["settings"], "explain", str(uuid.uuid4()), "--agent", "audit-bot-1")
    assert result.returncode == 1 and "no verdict for request" in result.stderr
