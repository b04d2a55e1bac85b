"""holdgate.sim: seeded, labelled traffic whose personas really behave as documented."""
from __future__ import annotations

import io
import itertools
import os
import random
import statistics
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from holdgate.events import ActionRequest, decode_request
from holdgate.sim import (
    ATTACKS, PERSONAS, Label, SimConfig, Simulation, agent_events, build_fleet, parse_attacks,
    write_bundle, write_history,
)
from holdgate.sim.publish import publish
from holdgate.sim.rand import request_id

MONDAY_8AM = 1767600000.0           # 2026-01-05T08:00:00Z


@pytest.fixture(scope="module")
def sim() -> Simulation:
    """30 h from Monday 00:00: two nightly batch runs, a working day, every attack."""
    return Simulation(SimConfig(seed=3, hours=30, agents=8))


@pytest.fixture(scope="module")
def history(sim: Simulation) -> tuple[bytes, bytes]:
    out, labels = io.BytesIO(), io.BytesIO()
    write_history(sim, out, labels)
    return out.getvalue(), labels.getvalue()


@pytest.fixture(scope="module")
def pairs(sim: Simulation) -> list[tuple[ActionRequest, Label]]:
    return list(sim)


def _by_agent(pairs: list[tuple[ActionRequest, Label]]
              ) -> dict[str, list[tuple[ActionRequest, Label]]]:
    out: dict[str, list[tuple[ActionRequest, Label]]] = defaultdict(list)
    for request, label in pairs:
        out[request.agent_id].append((request, label))
    return out


def _attack_agents(pairs: list[tuple[ActionRequest, Label]],
                   attack: str) -> list[list[tuple[ActionRequest, Label]]]:
    agents = _by_agent(pairs)
    found = [rows for rows in agents.values() if rows[0][1].persona == attack]
    assert found, f"no {attack} agent"
    return found


def _bytes(config: SimConfig) -> tuple[bytes, bytes]:
    out, labels = io.BytesIO(), io.BytesIO()
    write_history(Simulation(config), out, labels)
    return out.getvalue(), labels.getvalue()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    config = SimConfig(seed=11, start=MONDAY_8AM, hours=3, agents=6, attacks=("compromised",))
    first, again = _bytes(config), _bytes(config)
    assert first == again and first[0]
    other = _bytes(SimConfig(seed=12, start=MONDAY_8AM, hours=3, agents=6,
                             attacks=("compromised",)))
    assert other[0] != first[0] and other[1] != first[1]


def test_seeds_draw_different_fleets() -> None:
    """Not one pattern with new ids: sizes, rates and the nightly hour move with the seed."""
    shapes = []
    for seed in (1, 2, 3):
        fleet = build_fleet(SimConfig(seed=seed, hours=30, agents=10, attacks=()))
        batch = agent_events(fleet, fleet.by_persona("batch")[0])
        support = agent_events(fleet, fleet.by_persona("support")[0])
        shapes.append((len(fleet.world.customers), round(min(batch)[0] % 86400 / 300),
                       len(support), tuple(a.agent_id for a in fleet.agents[:3])))
    for i, a in enumerate(shapes):
        for b in shapes[i + 1:]:
            assert all(x != y for x, y in zip(a, b, strict=True)), shapes


def test_lines_decode_sorted_and_every_request_labelled(history: tuple[bytes, bytes],
                                                        sim: Simulation) -> None:
    lines, label_lines = history[0].splitlines(), history[1].splitlines()
    assert len(lines) == len(label_lines) == len(sim)
    requests = [decode_request(line) for line in lines]
    times = [r.occurred_at for r in requests]
    assert times == sorted(times)
    assert sim.config.start <= times[0] and times[-1] < sim.config.end
    labels = [orjson.loads(line) for line in label_lines]
    assert {lb["request_id"] for lb in labels} == {r.request_id for r in requests}
    assert len({r.request_id for r in requests}) == len(requests)
    for request, label in zip(requests, labels, strict=True):
        assert label.keys() == {"request_id", "agent_id", "persona", "malicious", "attack"}
        assert label["agent_id"] == request.agent_id
        assert label["malicious"] == (label["attack"] is not None)
    for line in lines[:200]:          # byte for byte what the SDK's own path would publish
        again = decode_request(line)
        assert orjson.dumps(again.to_obj()) == line


def test_fast_writer_equals_encode_of_every_request(history: tuple[bytes, bytes],
                                                    pairs: list[tuple[ActionRequest, Label]]
                                                    ) -> None:
    from holdgate.events import encode

    assert [encode(r) for r, _ in pairs] == history[0].splitlines()
    assert [orjson.dumps(lb.to_obj()) for _, lb in pairs] == history[1].splitlines()
    slow = io.BytesIO()
    write_history(iter(pairs), slow)
    assert slow.getvalue() == history[0]


def test_request_ids_are_uuid4() -> None:
    a, b = random.Random(5), random.Random(5)
    for _ in range(1000):
        assert request_id(a) == str(uuid.UUID(int=b.getrandbits(128), version=4))


def test_every_persona_present_and_attacks_late(pairs: list[tuple[ActionRequest, Label]],
                                                sim: Simulation) -> None:
    assert {label.persona for _, label in pairs} == set(PERSONAS)
    for request, label in pairs:
        if label.malicious:
            assert label.persona in ATTACKS and label.attack == label.persona
            assert request.occurred_at >= sim.config.attack_start
    for rows in _by_agent(pairs).values():
        if rows[0][1].persona in ATTACKS:
            assert not rows[0][1].malicious, "attack agents are benign before the attack"
            assert any(label.malicious for _, label in rows)
    new = [a for a in sim.fleet.agents if a.persona == "new_agent"]
    for agent in new:
        assert agent.appears_at is not None
        times = [r.occurred_at for r, _ in pairs if r.agent_id == agent.agent_id]
        assert not times or min(times) >= agent.appears_at


def test_batch_job_runs_nightly_at_40_per_second_for_3_minutes(
        pairs: list[tuple[ActionRequest, Label]]) -> None:
    batch = [r for r, label in pairs if label.persona == "batch"]
    nights: dict[int, list[float]] = defaultdict(list)
    for r in batch:
        nights[int(r.occurred_at // 86400)].append(r.occurred_at)
    assert len(nights) == 2                                     # quiet otherwise
    starts = []
    for times in nights.values():
        duration = times[-1] - times[0]
        assert 140 <= duration <= 230, duration
        assert 33 <= len(times) / duration <= 47, len(times) / duration
        starts.append(times[0] % 86400)
    assert max(starts) - min(starts) < 400                       # a fixed hour (+ jitter)
    assert {r.action for r in batch} <= {"customers.read", "records.read"}


def test_runaway_loop_repeats_one_action_at_machine_speed(
        pairs: list[tuple[ActionRequest, Label]]) -> None:
    for rows in _attack_agents(pairs, "runaway_loop"):
        loop = [r for r, label in rows if label.malicious]
        assert len({orjson.dumps([r.action, r.resource.to_obj(), r.context]) for r in loop}) == 1
        duration = loop[-1].occurred_at - loop[0].occurred_at
        assert 5 <= duration <= 65 and 40 <= len(loop) / duration <= 330


def test_sweep_reads_distinct_resources_fast(pairs: list[tuple[ActionRequest, Label]]) -> None:
    for rows in _attack_agents(pairs, "sweep"):
        sweep = [r for r, label in rows if label.malicious]
        assert len({(r.resource.type, r.resource.id) for r in sweep}) == len(sweep) >= 400
        assert len(sweep) / (sweep[-1].occurred_at - sweep[0].occurred_at) >= 15


def test_exfiltration_is_slow_distinct_and_unlabelled(
        pairs: list[tuple[ActionRequest, Label]]) -> None:
    for rows in _attack_agents(pairs, "exfiltration"):
        leak = [r for r, label in rows if label.malicious]
        assert len(leak) > 100
        assert all("data_sensitivity" not in r.context for r in leak)
        assert {r.action for r in leak} <= {"customers.read", "records.read", "customers.export"}
        assert len({(r.resource.type, r.resource.id) for r in leak}) == len(leak)
        gaps = [b.occurred_at - a.occurred_at for a, b in itertools.pairwise(leak)]
        assert 1.5 <= statistics.median(gaps) <= 15
        assert leak[-1].occurred_at - leak[0].occurred_at > 1800


def test_compromised_agent_turns_to_new_actions_and_types(
        pairs: list[tuple[ActionRequest, Label]]) -> None:
    for rows in _attack_agents(pairs, "compromised"):
        start = next(r.occurred_at for r, label in rows if label.malicious)
        before = [r for r, _ in rows if r.occurred_at < start]
        attack = [r for r, label in rows if label.malicious]
        assert len(before) > 20, "a long normal history first"
        used, used_types = {r.action for r in before}, {r.resource.type for r in before}
        assert all(r.action not in used for r in attack)
        assert any(r.resource.type not in used_types for r in attack)


def test_bundle_validates_and_replay_has_no_setup_denies(
        sim: Simulation, pairs: list[tuple[ActionRequest, Label]], tmp_path: Path) -> None:
    from holdgate.events import encode
    from holdgate.policies import PolicyBundle, run_cases
    from holdgate.settings import Settings
    from holdgate.stream import MemoryStore, RawRecord
    from holdgate.stream.replay import replay
    from holdgate.stream.worker import build_runner

    bundle_dir = write_bundle(tmp_path / "bundle", sim.fleet)
    bundle = PolicyBundle.load(bundle_dir)
    assert {a.agent_id for a in sim.fleet.agents} <= bundle.agent_ids
    assert all(r.ok for r in run_cases(bundle)), "the copied cases still pass"
    # A small history: at most 30 actions per agent and label, every persona and action.
    taken: Counter[tuple[str, bool]] = Counter()
    sample = []
    for request, label in pairs:
        key = (request.agent_id, label.malicious)
        if taken[key] < 30 or request.action in ("customers.export", "records.delete",
                                                 "deploy.create", "payments.refund"):
            taken[key] += 1
            sample.append(RawRecord(key=None, value=encode(request), partition=0, offset=None,
                                    topic="sim"))
    runner = build_runner(Settings(policy_dir=str(bundle_dir)), MemoryStore(), worker_id="t")
    runner.sealing = False
    codes: Counter[str] = Counter()
    report = replay(sample, runner,
                    on_decision=lambda d: codes.update(r.code for r in d.reasons))
    assert report.decisions == len(sample) and report.deadletters == 0
    for bad in ("POLICY_ERROR", "UNKNOWN_AGENT", "UNKNOWN_RESOURCE_TYPE"):
        assert codes[bad] == 0, codes


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bytes]] = []

    def partitions(self) -> int:
        return 3

    def send(self, partition: int, key: bytes, value: bytes) -> None:
        self.sent.append((partition, key, value))

    def flush(self) -> None:
        pass


def test_publish_paces_by_speed_and_rewrites_occurred_at() -> None:
    from holdgate.routing import partition_for

    sim = Simulation(SimConfig(seed=4, start=MONDAY_8AM, hours=1, agents=6, attacks=()))
    now = [5_000_000.0]
    sink, labels = _Sink(), io.BytesIO()
    summary = publish(sim, sink, speed=100.0, labels=labels, clock=lambda: now[0],
                      sleep=lambda s: now.__setitem__(0, now[0] + s))
    originals = list(sim)
    assert summary.actions == len(sink.sent) == len(originals)
    span = originals[-1][0].occurred_at - originals[0][0].occurred_at
    assert now[0] - 5_000_000.0 == pytest.approx(span / 100.0, rel=0.01)
    for (partition, key, value), (request, _) in zip(sink.sent, originals, strict=True):
        live = decode_request(value)
        assert live.request_id == request.request_id and key == request.agent_id.encode()
        assert partition == partition_for(request.agent_id, 3)
        assert live.occurred_at >= 5_000_000.0
    assert len(labels.getvalue().splitlines()) == len(originals)


def test_parse_attacks() -> None:
    assert parse_attacks("all") == ATTACKS and parse_attacks("none") == ()
    assert parse_attacks("sweep, runaway-loop") == ("sweep", "runaway_loop")
    with pytest.raises(Exception, match="unknown attack"):
        parse_attacks("ddos")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


def test_cli_writes_history_labels_and_a_bundle_that_replays(tmp_path: Path) -> None:
    out, labels, bundle = tmp_path / "h.jsonl", tmp_path / "l.jsonl", tmp_path / "bundle"
    run = _cli("simulate", "--hours", "2", "--start", "2026-01-05T08:00:00Z", "--agents", "6",
               "--seed", "9", "--attacks", "compromised,exfiltration", "--output", str(out),
               "--labels", str(labels), "--bundle", str(bundle))
    assert run.returncode == 0, run.stderr
    assert "benign" in run.stderr and "malicious" in run.stderr and "exfiltration" in run.stderr
    lines = out.read_bytes().splitlines()
    assert lines and len(lines) == len(labels.read_bytes().splitlines())
    replayed = _cli("replay", "--input", str(out), "--policy-dir", str(bundle), "--output",
                    str(tmp_path / "v.jsonl"))
    assert replayed.returncode == 0, replayed.stderr
    verdicts = [orjson.loads(v) for v in (tmp_path / "v.jsonl").read_bytes().splitlines()]
    assert len(verdicts) == len(lines)
    codes: Any = Counter(c for v in verdicts for c in v["codes"])
    assert not codes["POLICY_ERROR"] and not codes["UNKNOWN_AGENT"], codes


def test_cli_refuses_to_do_nothing() -> None:
    from click.testing import CliRunner

    from holdgate.cli import cli

    result = CliRunner().invoke(cli, ["simulate", "--hours", "1"])
    assert result.exit_code != 0 and "nothing to do" in result.output
    usage = " ".join(CliRunner().invoke(cli, ["simulate", "--help"]).output.split())
    assert "multiplies every rate by X" in usage
