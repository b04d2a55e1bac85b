"""Replay's shortcuts change no decision: the same decisions as the worker's own loop.

The reference below is the worker's per-batch sequence, as replay ran it before
it had shortcuts: chunks of 512 records, each decided at its latest broker time,
agent states decoded and encoded on every batch (`BatchStates`), verdicts sealed.
`replay` keeps states decoded between batches (`LiveStates`), runs larger batches
and seals nothing; sharded, it splits the history by agent/partition over worker
processes.  Each must give the same decisions in the same order, over a history
built to reach every path that keeps something between actions: bursts and
fan-out (the signals and a fitted model), duplicates near and far (the request ids
an agent remembers), an agent idle for more than a day (its state reset),
malformed and oversized records, and, from a topic, clock skew, records without
a key, deadlines passed at the broker and recorded decision times.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from holdgate.events import ActionRequest, encode
from holdgate.models.fit import FitOptions, fit_model
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.routing import partition_for
from holdgate.settings import Settings
from holdgate.stream import MemoryStore, RawRecord, Runner
from holdgate.stream.replay import (LiveStates, _with_recorded_time, decision_line, replay,
                                    replay_sharded, runner_for)
from holdgate.stream.worker import build_runner

PARTS = 3
DAY = 86_400.0
T0 = 1_790_035_200.0 + 9 * 3600         # 09:00 UTC
AGENTS = ("support-bot-1", "support-bot-2", "billing-bot-1", "coder-bot-1", "data-bot-1",
          "audit-bot-1")
MIX = (("tickets.read", "Ticket"), ("tickets.reply", "Ticket"), ("customers.read", "Customer"),
       ("emails.send", "Email"), ("records.read", "Record"))
ATTRS = {"Record": {"sensitivity": "internal"}, "Customer": {"pii_level": "low"}}


def _req(rnd: random.Random, agent: str, action: str, rtype: str, rid: str, t: float,
         **extra: Any) -> ActionRequest:
    return ActionRequest.create(agent_id=agent, action=action, occurred_at=t,
                                resource={"type": rtype, "id": rid,
                                          "attributes": ATTRS.get(rtype, {})},
                                context={"step": rnd.randrange(9)},
                                request_id=str(uuid.UUID(int=rnd.getrandbits(128))), **extra)


def _normal(rnd: random.Random, start: float, hours: float) -> list[ActionRequest]:
    out = []
    for agent in AGENTS:
        t = start
        while t < start + hours * 3600:
            action, rtype = MIX[rnd.randrange(len(MIX))]
            out.append(_req(rnd, agent, action, rtype, f"{rtype[:1]}-{rnd.randrange(60)}", t))
            t += rnd.expovariate(1 / 30.0)
    return out


def _history(seed: int = 3) -> list[ActionRequest]:
    """Two working days (the second after a night and a day of silence for one agent)."""
    rnd = random.Random(seed)
    reqs = _normal(rnd, T0, 0.5)
    t = T0 + 600
    reqs += [_req(rnd, "support-bot-2", "emails.send", "Email", "welcome", t + i * 0.004)
             for i in range(300)]                                   # a runaway loop
    reqs += [_req(rnd, "data-bot-1", "customers.read", "Customer", f"cus-{i}", t + i * 0.05)
             for i in range(400)]                                   # a fan-out sweep
    reqs += [_req(rnd, "billing-bot-1", "tickets.read", "Ticket", "T-1", t + 5 + i * 0.3,
                  deadline=t + 5 + i * 0.3 + (0.01 if i % 3 == 0 else 30.0))
             for i in range(40)]                 # from a topic, some decided too late
    reqs += [_req(rnd, "ghost-bot-9", "tickets.read", "Ticket", "T-2", t + 7 + i)
             for i in range(5)]                                     # not in the entity store
    later = T0 + 1.2 * DAY            # audit-bot-1 comes back after > idle_ttl
    reqs += [r for r in _normal(rnd, later, 0.4)]
    reqs += [_req(rnd, "support-bot-1", "tickets.reply", "Ticket", "T-9", later + 100 + i * 0.01)
             for i in range(200)]
    reqs.sort(key=lambda r: r.occurred_at)
    return reqs


def _lines(reqs: list[ActionRequest], seed: int = 4) -> list[bytes]:
    """Encoded lines with duplicates (re-sent soon and long after) and bad records."""
    rnd = random.Random(seed)
    lines = [encode(r) for r in reqs]
    out: list[bytes] = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 97 == 5:
            out.append(lines[i - rnd.randrange(1, 4)])       # a producer retry
        if i % 331 == 7:
            out.append(lines[rnd.randrange(i)])              # the same bytes, much later
        if i % 401 == 11:
            out.append(b"not json at all")
            bad = orjson.loads(line)
            bad["action"] = 42                               # identifiable, malformed
            out.append(orjson.dumps(bad))
            out.append(b'{"agent_id": "support-bot-1", "pad": "' + b"x" * 70_000 + b'"}')
    # each agent's last actions re-sent a few batches later (still among the ids it keeps)
    last: dict[str, list[bytes]] = {}
    for r, line in zip(reqs, lines):
        last.setdefault(r.agent_id, []).append(line)
    end = reqs[-1].occurred_at
    out += [encode(_req(rnd, "coder-bot-1", "tickets.read", "Ticket", f"T-{i % 50}",
                        end + 60 + 2 * i)) for i in range(1200)]
    out += [line for agent, sent in sorted(last.items()) if agent != "coder-bot-1"
            for line in sent[-3:]]
    return out


def _file_records(lines: list[bytes]) -> list[RawRecord]:
    return [RawRecord(key=None, value=v, partition=0, topic=f"history.jsonl:{n}")
            for n, v in enumerate(lines, 1)]


def _topic_records(lines: list[bytes], seed: int = 5) -> tuple[list[RawRecord],
                                                                dict[str, dict[str, Any]]]:
    """As read from the actions topic: keyed, on the agent's partition, broker times."""
    rnd = random.Random(seed)
    offsets = [0] * PARTS
    records, recorded = [], {}
    for v in lines:
        try:
            obj = orjson.loads(v)
            agent = obj["agent_id"]
            t = float(obj["occurred_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            obj, agent, t = None, "support-bot-1", T0
        p = partition_for(agent, PARTS)
        skew = 12.0 if rnd.random() < 0.01 else rnd.uniform(0, 0.05)
        key = None if rnd.random() < 0.005 else agent.encode()
        records.append(RawRecord(key=key, value=v, partition=p, offset=offsets[p],
                                 topic="actions", timestamp=t + skew))
        offsets[p] += 1
        if isinstance(obj, dict) and isinstance(obj.get("request_id"), str) \
                and rnd.random() < 0.3:
            recorded[obj["request_id"]] = {"decided_at": t + rnd.choice((0.01, 0.5, 40.0)),
                                           "decision": "allow", "reasons": []}
    return records, recorded


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("replay-fast")
    rnd = random.Random(11)
    history = [r for d in range(2) for r in _normal(rnd, T0 - (2 - d) * DAY, 8)]
    roles = PolicyBundle.load(default_bundle_path()).agent_roles
    fit_model(history, roles, FitOptions(trees=20, seed=1)).model.save(tmp / "model")
    return tmp / "model"


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return _lines(_history())


def _settings(model: Path | None) -> Settings:
    return Settings(partitions=PARTS, model=str(model) if model else "")


def _runner(settings: Settings, signals: bool = True) -> Runner:
    runner = build_runner(settings, MemoryStore(), worker_id="t")
    if not signals:
        runner.snapshot = dataclasses.replace(runner.snapshot, signals=None)
    return runner


def _reference(records: list[RawRecord], runner: Runner,
               recorded: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """The worker's loop: 512 per batch, decoded and encoded per batch, sealed."""
    assert runner.state_view is None and runner.sealing
    out: list[Any] = []
    for i in range(0, len(records), 512):
        chunk = records[i:i + 512]
        if recorded:
            chunk = [_with_recorded_time(r, recorded) for r in chunk]
        at = max((r.timestamp for r in chunk if r.timestamp is not None), default=0.0)
        batch = runner.run(chunk, decided_at=at)
        assert len(batch.verdicts) == len(batch.decisions)
        runner.apply(batch.writes)
        out += batch.decisions
    return out


def _mix(decisions: list[Any]) -> set[str]:
    return {r.code for d in decisions for r in d.reasons} | {d.decision for d in decisions}


@pytest.mark.parametrize("with_model", [True, False])
def test_file_replay_gives_the_workers_decisions(lines: list[bytes], model_dir: Path,
                                                 with_model: bool) -> None:
    settings = _settings(model_dir if with_model else None)
    records = _file_records(lines)
    want = _reference(records, _runner(settings))
    assert {"allow", "deny", "PERMITTED", "MALFORMED", "UNKNOWN_AGENT"} <= _mix(want)
    assert any(d.signals.get("repeat_10s", 0) > 10 for d in want)
    assert sum(not d.allowed for d in want) > 300
    assert len(want) < len(records)                        # duplicates and unidentifiable
    assert len(want) <= len(records) - 5 * 3 - 2 * (len(lines) // 401)
    if with_model:
        assert want[0].model_version and any(d.signals.get("anomaly", 0) for d in want)
    thresholds = gc.get_threshold()
    for kwargs in ({}, {"live_max": 2}, {"batch_max": 64}, {"live": False}):
        runner = _runner(settings)
        got: list[Any] = []
        report = replay(records, runner, on_decision=got.append, **kwargs)
        assert got == want, kwargs
        assert report.decisions == len(want) and report.records == len(records)
        assert runner.state_view is None and runner.sealing    # put back as they were
        assert gc.get_threshold() == thresholds


def test_end_state_is_in_the_store_and_decides_on_identically(lines: list[bytes],
                                                              model_dir: Path) -> None:
    settings = _settings(model_dir)
    records = _file_records(lines)
    half = len(records) // 2
    ref = _runner(settings)
    want = _reference(records, ref)
    runner = _runner(settings)
    got: list[Any] = []
    replay(records[:half], runner, on_decision=got.append)
    assert runner.store.data and runner.state_view is None
    for i in range(half, len(records), 512):      # the worker's loop, from the stored states
        batch = runner.run(records[i:i + 512], decided_at=0.0)
        runner.apply(batch.writes)
        got += batch.decisions
    assert got == want


def test_topic_replay_with_recorded_times_gives_the_workers_decisions(
        lines: list[bytes], model_dir: Path) -> None:
    settings = _settings(model_dir)
    records, recorded = _topic_records(lines)
    want = _reference(records, _runner(settings), recorded)
    assert {"CLOCK_SKEW", "MALFORMED", "EXPIRED"} <= _mix(want)
    got: list[Any] = []
    replay(records, _runner(settings), recorded=recorded, on_decision=got.append)
    assert got == want


def test_without_signals_duplicates_do_not_depend_on_batching(lines: list[bytes]) -> None:
    """Without signals the core still assigns back the state it remembered a request id on.

    It once remembered it in place only, so `BatchStates` dropped it at the end of
    every batch but the agent's first: a re-sent record was decided again or not
    depending on where the batches were cut.  Now one record per batch, the
    worker's batches of 512 and a live replay must all give the same decisions.
    """
    settings = _settings(None)
    records = _file_records(lines)
    want = _reference(records, _runner(settings, signals=False))
    ids = [d.request_id for d in want]        # re-sends within an agent's memory refused
    got: list[Any] = []
    replay(records, _runner(settings, signals=False), on_decision=got.append)
    assert got == want
    singles: list[Any] = []
    _replay_in(records, _runner(settings, signals=False), singles.append, 1)
    merged: list[Any] = []
    _replay_in(records, _runner(settings, signals=False), merged.append, 4096)
    assert singles == merged
    assert [d.request_id for d in singles] == ids


def _replay_in(records: list[RawRecord], runner: Runner, keep: Any, size: int) -> None:
    for i in range(0, len(records), size):
        batch = runner.run(records[i:i + size], decided_at=0.0)
        runner.apply(batch.writes)
        for d in batch.decisions:
            keep(d)


def test_live_states_evict_encoded_and_read_back() -> None:
    from holdgate.models import AgentState

    store = MemoryStore()
    view = LiveStates(store, lambda a: 0, limit=2)(store, lambda a: 0)
    for agent in ("a", "b", "c", "d"):
        state = AgentState()
        state.clock = 1.0
        view[agent] = state
    writes = view.writes()
    assert sorted(writes[0]) == ["a", "b"] and sorted(view.live) == ["c", "d"]
    store.apply(0, writes[0])
    assert view["a"].clock == 1.0 and "a" in view.live       # decoded again on demand
    store.apply(0, {"x": b"garbage"})
    assert view.get("x") is None and view.corrupt == {"x"}
    view.flush()
    assert not view.live and set(store.data[0]) == {"a", "b", "c", "d", "x"}


def test_backtest_gives_the_flips_of_the_workers_loop(lines: list[bytes],
                                                     model_dir: Path) -> None:
    from holdgate.stream.backtest import FlipReport, backtest, compare

    records = _file_records(lines)
    with_model, without = _settings(model_dir), _settings(None)
    want = FlipReport()
    a, b = _runner(with_model), _runner(without)
    for i in range(0, len(records), 512):            # backtest's loop before: chunk by chunk
        before = _reference(records[i:i + 512], a)
        after = _reference(records[i:i + 512], b)
        compare(want, before, after, {d.request_id: str((d.request or {}).get("action", "?"))
                                      for d in before})
    assert want.flips and want.same
    got = backtest(records, _runner(with_model), _runner(without))
    drop = ("before", "after")
    assert {k: v for k, v in got.to_obj().items() if k not in drop} == \
        {k: v for k, v in want.to_obj().items() if k not in drop}


# -- sharded over processes ---------------------------------------------------------------

def _line_list(decisions: list[Any]) -> list[bytes]:
    return [orjson.dumps(decision_line(d)) for d in decisions]


@pytest.mark.parametrize("source", ["file", "topic"])
def test_sharded_replay_gives_the_single_process_decisions(lines: list[bytes], model_dir: Path,
                                                           source: str) -> None:
    settings = _settings(model_dir)
    if source == "file":
        records, recorded = _file_records(lines), None
    else:
        records, recorded = _topic_records(lines)
    want = _reference(records, _runner(settings), recorded)
    single = replay(records, _runner(settings), recorded=recorded)
    got: list[bytes] = []
    report = replay_sharded(iter(records), functools.partial(runner_for, settings),
                            partitions=PARTS, workers=2, recorded=recorded,
                            on_line=got.append, batch_max=700)
    assert got == _line_list(want)
    for field in ("records", "decisions", "allowed", "denied", "deadletters", "compared",
                  "same", "warmup", "unrecorded"):
        assert getattr(report, field) == getattr(single, field), field
    assert [m.request_id for m in report.mismatches] == \
        [m.request_id for m in single.mismatches]


def test_sharded_replay_hands_back_whole_decisions_when_asked(lines: list[bytes]) -> None:
    settings = _settings(None)
    records = _file_records(lines[:3000])
    want = _reference(records, _runner(settings))
    got: list[Any] = []
    replay_sharded(records, functools.partial(runner_for, settings), partitions=PARTS,
                   workers=3, on_decision=got.append)
    assert got == want


def test_sharded_replay_without_signals_batches_as_before(lines: list[bytes]) -> None:
    settings = _settings(None)
    records = _file_records(lines)
    want = _reference(records, _runner(settings, signals=False))
    got: list[Any] = []
    replay_sharded(records, functools.partial(_runner_without_signals, settings),
                   partitions=PARTS, workers=2, on_line=got.append)
    assert got == _line_list(want)


def _runner_without_signals(settings: Settings) -> Runner:
    return _runner(settings, signals=False)


def test_a_failing_shard_fails_the_replay(lines: list[bytes]) -> None:
    with pytest.raises(RuntimeError, match="replay worker"):
        replay_sharded(_file_records(lines[:50]), functools.partial(_broken_runner),
                       partitions=PARTS, workers=2)


def _broken_runner() -> Runner:
    raise ValueError("no bundle here")



def test_cli_replay_in_processes_writes_the_same_file(lines: list[bytes], model_dir: Path,
                                                      tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(lines) + b"\n")
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out-{workers}.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "holdgate", "replay", "--input", str(history), "--model",
             str(model_dir), "--output", str(out), "--workers", workers],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "HOLDGATE_PARTITIONS": str(PARTS)})
        assert result.returncode == 0, result.stderr
        assert ("2 processes" in result.stderr) == (workers == "2"), result.stderr
        outputs.append(out.read_bytes())
    want = _reference(_file_records(lines), _runner(_settings(model_dir)))
    assert outputs[0] == outputs[1] == b"".join(line + b"\n" for line in _line_list(want))
