"""Replay throughput: history through the same runner as the worker, without Kafka.

A JSON Lines history of a 1,000-agent fleet (mixed actions, with resources
both in and outside the entity store) is replayed four ways in the same run:
- floor: read and parse every line (what any replay has to pay);
- runner with signals off (decode, Cedar through the engine's cache);
- full replay (signals on) in this process;
- full replay sharded over one worker process per CPU, as `holdgate replay
  --input` runs a large history (process start-up and bundle loading included).
Median of `repeats` runs each; the ratio says what the decision adds to reading.
Each single-process row also gives its CPU time per action, which a busy
machine does not inflate the way it does wall time.
"""
from __future__ import annotations

import functools
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from common import fleet_bundle

from holdgate.events import ActionRequest, encode
from holdgate.models import SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine
from holdgate.stream import MemoryStore, Runner, Snapshot
from holdgate.stream.history import read_jsonl
from holdgate.stream.replay import replay, replay_sharded

MIX = (("tickets.read", "Ticket"), ("tickets.reply", "Ticket"), ("customers.read", "Customer"),
       ("emails.send", "Email"))


def make_history(path: Path, agents: list[str], n: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    t = 1_790_000_000.0
    with open(path, "wb") as f:
        for i in range(n):
            t += rnd.expovariate(400.0)
            action, rtype = MIX[rnd.randrange(len(MIX))]
            attrs = {"pii_level": "low"} if rtype == "Customer" else {}
            req = ActionRequest.create(
                agent_id=rnd.choice(agents), action=action, occurred_at=t,
                resource={"type": rtype, "id": f"{rtype.lower()}-{rnd.randrange(500)}",
                          "attributes": attrs},
                context={"ticket": f"T-{rnd.randrange(100)}", "step": i % 11})
            f.write(encode(req) + b"\n")


def _floor(path: Path) -> float:
    t0 = time.perf_counter()
    n = 0
    for record in read_jsonl(path):
        orjson.loads(record.value or b"")
        n += 1
    return n / (time.perf_counter() - t0)


def _runner(bundle: PolicyBundle, signals: bool) -> Runner:
    snapshot = Snapshot(engine=PolicyEngine(bundle), policy_version=bundle.version,
                        signals=SignalComputer() if signals else None, partitions=4)
    return Runner(snapshot=snapshot, store=MemoryStore(), partitions=4, sealing=False)


def _bundle_runner(bundle_path: Path, signals: bool) -> Runner:
    """`_runner` from the bundle's folder (what a shard process can be handed)."""
    return _runner(PolicyBundle.load(bundle_path), signals)


def _replay(path: Path, bundle: PolicyBundle, signals: bool) -> tuple[float, float, float]:
    runner = _runner(bundle, signals)
    c0 = time.process_time()
    report = replay(read_jsonl(path), runner)
    cpu_us = 1e6 * (time.process_time() - c0) / max(1, report.records)
    engine = runner.snapshot.engine
    hits = 100.0 * engine.hits / max(1, engine.hits + engine.misses)
    return report.rate, hits, cpu_us


def _sharded(path: Path, bundle_path: Path, workers: int) -> float:
    report = replay_sharded(read_jsonl(path), functools.partial(_bundle_runner, bundle_path, True),
                            partitions=4, workers=workers)
    return report.rate


def run(*, n: int = 100_000, repeats: int = 3, workers: int | None = None) -> dict[str, Any]:
    workers = workers or os.cpu_count() or 1
    load = os.getloadavg()[0]
    bundle_path, agents = fleet_bundle(1000)
    bundle = PolicyBundle.load(bundle_path)
    path = Path(tempfile.mkdtemp(prefix="hg-bench-replay-")) / "history.jsonl"
    make_history(path, agents, n)
    floor = statistics.median(_floor(path) for _ in range(repeats))
    off = [_replay(path, bundle, False) for _ in range(repeats)]
    on = [_replay(path, bundle, True) for _ in range(repeats)]
    sharded = [_sharded(path, bundle_path, workers) for _ in range(repeats)]
    return {"n": n, "repeats": repeats, "floor_per_s": floor,
            "signals_off_per_s": statistics.median(r for r, _, _ in off),
            "signals_off_cpu_us": statistics.median(c for _, _, c in off),
            "full_per_s": statistics.median(r for r, _, _ in on),
            "full_cpu_us": statistics.median(c for _, _, c in on),
            "sharded_per_s": statistics.median(sharded), "workers": workers,
            "cache_hit_pct": on[0][1], "load_at_start": load}


def report(res: dict[str, Any]) -> str:
    full, sharded = res["full_per_s"], res["sharded_per_s"]
    return "\n".join([
        f"replay: {res['n']:,} actions of a 1,000-agent fleet, median of {res['repeats']} runs "
        f"(load average {res.get('load_at_start', float('nan')):.1f} at start)",
        f"  read + parse only (floor)   {res['floor_per_s']:>10,.0f} actions/s",
        f"  runner, signals off         {res['signals_off_per_s']:>10,.0f} actions/s  "
        f"({res['signals_off_cpu_us']:.1f} µs CPU/action)",
        f"  full replay (signals on)    {full:>10,.0f} actions/s  "
        f"({full / res['floor_per_s']:.2f}x the floor; {1e6 / full:.1f} µs/action, "
        f"{res['full_cpu_us']:.1f} µs CPU; Cedar cache hits {res['cache_hit_pct']:.0f}%)",
        f"  full replay, {res['workers']} processes   {sharded:>10,.0f} actions/s  "
        f"({sharded / full:.2f}x one process, start-up included)",
    ])
