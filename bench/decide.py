"""Decision cost per action inside the worker, with behavioural signals on versus off.

Drives the real `Runner` (decode, routing and clock checks, signals, Cedar,
verdict sealing and signing, state blobs decoded and encoded per batch) over
the same records in one run, so the ratio is what the signals cost.  The
engine's decision cache is on, as in the worker; its hit rate is printed.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from common import fleet_bundle

from holdgate.events import ActionRequest, encode
from holdgate.keys import Signer
from holdgate.models import SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.routing import partition_for
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot

PARTS = 4
AGENTS = ("support-bot-1", "support-bot-2", "billing-bot-1", "coder-bot-1", "data-bot-1",
          "audit-bot-1")
MIX = (("support-bot-1", "tickets.read", "Ticket"), ("support-bot-2", "tickets.reply", "Ticket"),
       ("billing-bot-1", "invoices.read", "Invoice"), ("coder-bot-1", "repo.read", "Repository"),
       ("data-bot-1", "records.read", "Record"), ("audit-bot-1", "customers.read", "Customer"))


def _records(n: int, t0: float, fleet: list[str] | None = None) -> list[RawRecord]:
    """n actions of the mixed workload; with a fleet, spread over its (support) agents."""
    out, offsets = [], [0] * PARTS
    for i in range(n):
        agent, action, rtype = MIX[i % len(MIX)]
        if fleet:
            agent, action, rtype = fleet[i % len(fleet)], "tickets.read", "Ticket"
        attrs = {"Invoice": {"amount_cents": 100}, "Repository": {"environment": "staging"},
                 "Record": {"sensitivity": "internal"}, "Customer": {"pii_level": "low"}}
        req = ActionRequest.create(agent_id=agent, action=action,
                                   resource={"type": rtype, "id": f"{rtype.lower()}-{i % 97}",
                                             "attributes": attrs.get(rtype, {})},
                                   context={"ticket": f"T-{i % 13}"},
                                   occurred_at=t0 + i * 0.05)
        p = partition_for(agent, PARTS)
        out.append(RawRecord(key=agent.encode(), value=encode(req), partition=p,
                             offset=offsets[p], timestamp=req.occurred_at))
        offsets[p] += 1
    return out


def _run(bundle: PolicyBundle, records: list[RawRecord], batch: int,
         signals: bool, t0: float) -> tuple[float, dict[str, float]]:
    engine = PolicyEngine(bundle)      # a fresh cache per run: every run pays its misses
    snapshot = Snapshot(engine=engine, policy_version=bundle.version,
                        signals=SignalComputer() if signals else None, partitions=PARTS)
    runner = Runner(snapshot=snapshot, store=MemoryStore(), partitions=PARTS,
                    signer=Signer.generate())
    now = t0 + len(records) * 0.05
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        out = runner.run(records[i:i + batch], decided_at=now)
        runner.apply(out.writes)
    per_action = (time.perf_counter() - start) / len(records) * 1e6
    tm = runner.timings
    parts = {k: tm[k] / len(records) * 1e6 for k in ("decode", "decide", "seal")}
    parts["cache_hit_pct"] = 100.0 * engine.hits / max(1, engine.hits + engine.misses)
    return per_action, parts


def run(*, n: int = 6000, repeats: int = 5) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "repeats": repeats}
    t0 = time.time()
    bundle = PolicyBundle.load(default_bundle_path())
    print("  workload: 6 busy agents (micro-batch waves of ~6)", flush=True)
    out["batches"] = _sweep(bundle, _records(n, t0), t0, repeats)
    path, fleet = fleet_bundle(1000)
    fleet_bundle_loaded = PolicyBundle.load(path)
    print("  workload: 1,000 agents (waves as large as the batch)", flush=True)
    out["fleet_batches"] = _sweep(fleet_bundle_loaded, _records(n, t0, fleet), t0, repeats)
    return out


def _sweep(bundle: PolicyBundle, records: list[RawRecord], t0: float,
           repeats: int) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for batch in (1, 16, 256):
        row: dict[str, Any] = {}
        for signals in (False, True):
            runs = [_run(bundle, records, batch, signals, t0) for _ in range(repeats)]
            med = statistics.median(r[0] for r in runs)
            row["on" if signals else "off"] = {"us_per_action": med,
                                               "breakdown_us": runs[len(runs) // 2][1]}
        row["ratio"] = row["on"]["us_per_action"] / row["off"]["us_per_action"]
        out[batch] = row
        print(f"  batch {batch:>3}: off {row['off']['us_per_action']:.1f} µs, "
              f"on {row['on']['us_per_action']:.1f} µs", flush=True)
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"decide: µs per action in the Runner, {res['n']} actions, median of "
             f"{res['repeats']} runs"]
    for key, title in (("batches", "6 busy agents"), ("fleet_batches", "1,000 agents")):
        lines += [f"[{title}]", f"{'batch':>5} {'signals off':>12} {'signals on':>11} "
                  f"{'ratio':>6}   breakdown (on): decode / decide / seal µs, cache hits"]
        lines += _rows(res[key])
    return "\n".join(lines)


def _rows(batches: dict[int, Any]) -> list[str]:
    lines = []
    for batch, row in batches.items():
        b = row["on"]["breakdown_us"]
        lines.append(f"{batch:>5} {row['off']['us_per_action']:>12.1f} "
                     f"{row['on']['us_per_action']:>11.1f} {row['ratio']:>5.2f}x   "
                     f"{b['decode']:.1f} / {b['decide']:.1f} / {b['seal']:.1f}, "
                     f"{b['cache_hit_pct']:.0f}%")
    return lines
