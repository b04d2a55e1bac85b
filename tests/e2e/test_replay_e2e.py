"""Replay and export on the real broker: the live worker, topic replay, file replay agree.

All three run the same runner, so a history decided live is decided again
identically from the topic (with its broker times and recorded decision times)
and from an exported JSON Lines file; a different batching changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from holdgate.client import Gate
from holdgate.settings import Settings
from workers import WorkerProcess, publish_raw, read_topic


def _cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **settings.to_env()})


def _lines(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        out[obj["request_id"]] = obj
    return out


def _essence(v: dict[str, Any]) -> tuple[Any, ...]:
    codes = v.get("codes") or [r["code"] for r in v["reasons"]]
    return v["decision"], tuple(codes), tuple(sorted(v["signals"].items())), \
        v["policy_version"], v["model_version"]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
            verdict_keys: dict[str, str]) -> dict[str, Any]:
    """A live run with allows and behavioural denies, decided by a real worker."""
    import uuid

    tmp = tmp_path_factory.mktemp("replay")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=kafka_bootstrap, app_id=f"hg-replay-{tag}",
                        actions_topic=f"r{tag}.actions", verdicts_topic=f"r{tag}.verdicts",
                        deadletter_topic=f"r{tag}.deadletter", partitions=2,
                        datadir=str(tmp / "worker"),
                        signing_key_file=verdict_keys["signing_key_file"],
                        trusted_keys=verdict_keys["trusted_keys"]).validated()
    from holdgate.topics import ensure_topics

    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    try:
        worker.wait_ready()
        t_start = time.time()
        with Gate(bootstrap=settings.bootstrap, settings=settings) as gate:
            def runaway(i: int) -> Any:
                return gate.check(action="emails.send", agent_id="support-bot-2", timeout=20,
                                  resource={"type": "Email", "id": f"e-{i % 3}"}, context={})

            def reads(i: int) -> Any:
                return gate.check(action="records.read", agent_id="audit-bot-1", timeout=20,
                                  resource={"type": "Record", "id": "web-analytics-2024"},
                                  context={"n": str(i)})

            with ThreadPoolExecutor(max_workers=12) as pool:
                first = list(pool.map(runaway, range(40))) + list(pool.map(reads, range(30)))
            t_mid = time.time()
            time.sleep(1.2)
            with ThreadPoolExecutor(max_workers=12) as pool:
                second = list(pool.map(runaway, range(40, 70))) + list(pool.map(reads,
                                                                                range(30, 50)))
        # a runtime in another language: hand-written JSON, its own spacing and key order
        raw_obj = {"agent_id": "support-bot-1", "schema_version": 1, "context": {},
                   "request_id": str(uuid.uuid4()), "action": "tickets.read",
                   "occurred_at": time.time(), "resource": {"id": "T-77", "type": "Ticket"}}
        raw_bytes = json.dumps(raw_obj, indent=None, separators=(", ", " : ")).encode()
        found = publish_raw(settings, raw_bytes)
    finally:
        worker.stop()
    recorded = {orjson.loads(r.value)["request_id"]: orjson.loads(r.value)
                for r in read_topic(settings, settings.verdicts_topic)}
    return {"settings": settings, "tmp": tmp, "recorded": recorded, "t_start": t_start,
            "t_mid": t_mid, "sdk": first + second, "raw": (raw_obj, raw_bytes, found)}


def test_topic_replay_reproduces_every_recorded_verdict(history: dict[str, Any]) -> None:
    settings, tmp, recorded = history["settings"], history["tmp"], history["recorded"]
    out = tmp / "topic-replay.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(history["t_start"] - 120))
    result = _cli(settings, "replay", "--from", since, "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "0 determinism mismatches" in result.stderr, result.stderr
    replayed = _lines(out)
    assert set(replayed) == set(recorded)
    assert len(recorded) > 110
    assert {k: _essence(v) for k, v in replayed.items()} == \
        {k: _essence(v) for k, v in recorded.items()}
    codes = {c for v in recorded.values() for c in _essence(v)[1]}
    assert {"PERMITTED", "REPETITION"} <= codes


def test_exported_file_replays_to_the_same_decisions(history: dict[str, Any]) -> None:
    settings, tmp, recorded = history["settings"], history["tmp"], history["recorded"]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(history["t_start"] - 120))
    exported = tmp / "history.jsonl"
    result = _cli(settings, "export", "--from", since, "--output", str(exported))
    assert result.returncode == 0, result.stderr
    lines = exported.read_bytes().splitlines()
    assert len(lines) == len(recorded)
    # byte for byte as published: the digest of each line is the verdict's action_digest
    digests = {json.loads(line)["request_id"]: "sha256:" + hashlib.sha256(line).hexdigest()
               for line in lines}
    assert digests == {k: v["action_digest"] for k, v in recorded.items()}
    out = tmp / "file-replay.jsonl"
    result = _cli(settings, "replay", "--input", str(exported), "--output", str(out))
    assert result.returncode == 0, result.stderr
    replayed = _lines(out)
    assert {k: _essence(v) for k, v in replayed.items()} == \
        {k: _file_essence(v) for k, v in recorded.items()}


def _file_essence(v: dict[str, Any]) -> tuple[Any, ...]:
    """What a file replay can reproduce of a recorded verdict.

    A file holds the actions, not when the worker decided them: each is decided
    at its broker time.  An EXPIRED the worker gave because it decided late (a
    readiness probe sent while it was starting) is therefore the policy's own
    answer in a file replay; the reasons after EXPIRED are that answer, and a
    topic replay, which reads the verdicts' decision times, reproduces EXPIRED too.
    """
    decision, codes, *rest = _essence(v)
    if codes[:1] == ("EXPIRED",):
        codes = codes[1:]
        decision = "allow" if codes == ("PERMITTED",) else "deny"
    return (decision, codes, *rest)


def test_other_batching_changes_no_decision(history: dict[str, Any]) -> None:
    """The bench and the worker batch differently; the runner must not care."""
    from holdgate.stream import MemoryStore
    from holdgate.stream.history import read_topic as read_history
    from holdgate.stream.replay import replay
    from holdgate.stream.worker import build_runner

    settings, recorded = history["settings"], history["recorded"]
    records = read_history(settings, history["t_start"] - 120, time.time()).records
    for size in (1, 7):
        runner = build_runner(settings, MemoryStore())
        got: dict[str, Any] = {}

        def keep(d: Any, got: dict[str, Any] = got) -> None:
            got[d.request_id] = (d.decision, tuple(r.code for r in d.reasons),
                                 tuple(sorted(d.signals.items())), d.policy_version,
                                 d.model_version)

        report = replay(records, runner, recorded=recorded, on_decision=keep, chunk_size=size)
        assert report.ok and report.same == len(recorded)
        assert got == {k: _essence(v) for k, v in recorded.items()}


def test_replay_from_mid_topic_holds_no_partition(history: dict[str, Any]) -> None:
    settings, tmp = history["settings"], history["tmp"]
    out = tmp / "mid-replay.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(history["t_mid"] + 0.6)) + "Z"
    result = _cli(settings, "replay", "--from", since, "--output", str(out))
    assert result.returncode == 0, result.stderr
    replayed = _lines(out)
    assert 0 < len(replayed) < len(history["recorded"])
    assert all("STATE_RECOVERING" not in v["codes"] for v in replayed.values())
    assert "warm-up" in result.stderr


def test_digest_of_a_request_built_without_the_sdk(history: dict[str, Any]) -> None:
    raw_obj, raw_bytes, found = history["raw"]
    assert found is not None
    verdict = found[1]
    assert verdict["decision"] == "allow", verdict["reasons"]
    assert verdict["action_digest"] == "sha256:" + hashlib.sha256(raw_bytes).hexdigest()
    assert verdict["request"] == raw_obj        # the request as published, not normalised


def test_replay_cli_needs_exactly_one_source(make_settings: Callable[..., Settings]) -> None:
    result = _cli(make_settings(), "replay")
    assert result.returncode == 2 and "--input FILE or --from" in result.stderr
