"""Decision cost per action inside the worker: signals off, on, and on with a fitted model.

Drives the real `Runner` (decode, routing and clock checks, signals, Cedar,
verdict sealing and signing, state blobs decoded and encoded per batch) over
the same records in one run, and splits each action's cost into the parts the
worker pays:

    decode    record bytes -> validated request (the runner's own timer)
    st.dec    `AgentState.from_bytes` of every agent a batch touches
    signals   `SignalComputer.observe_batch` + `record_outcomes` (fitted model included)
    policy    Cedar (`PolicyEngine.decide_many`, its decision cache on as in the worker)
    st.enc    `AgentState.to_bytes` of every changed agent
    seal      the verdict's JSON and Ed25519 signature (the runner's timer minus st.enc)
    rest      the core's own bookkeeping (waves, duplicates, decisions)

Two workloads: 6 busy agents (a batch of 256 is ~43 waves of 6: many small
`observe_batch` calls, few state decodes) and 1,000 agents (a batch is one wave
of distinct agents: one state decode and encode per action).  The fitted model
is fitted here on a synthetic history of the same agents (`fit_model`, as the
tests do).  Figures are CPU time (``process_time``: other processes on a busy
machine inflate wall time, not this), best of ``repeats`` runs; the parts are
measured in wall time around each call and scaled to the run's CPU time.  The
timers add ~0.2 µs per timed call (two per wave, two per touched agent).
"""
from __future__ import annotations

import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from common import fleet_bundle

from holdgate.events import ActionRequest, encode
from holdgate.keys import Signer
from holdgate.models import AgentState, SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.routing import partition_for
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.heap import settle

PARTS = 4
AGENTS = ("support-bot-1", "support-bot-2", "billing-bot-1", "coder-bot-1", "data-bot-1",
          "audit-bot-1")
MIX = (("support-bot-1", "tickets.read", "Ticket"), ("support-bot-2", "tickets.reply", "Ticket"),
       ("billing-bot-1", "invoices.read", "Invoice"), ("coder-bot-1", "repo.read", "Repository"),
       ("data-bot-1", "records.read", "Record"), ("audit-bot-1", "customers.read", "Customer"))
ATTRS = {"Invoice": {"amount_cents": 100}, "Repository": {"environment": "staging"},
         "Record": {"sensitivity": "internal"}, "Customer": {"pii_level": "low"}}
PART_NAMES = ("decode", "st.dec", "signals", "policy", "st.enc", "seal", "rest")
MODES = ("off", "on", "model")
T_FIT = 1_790_035_200.0          # the synthetic history starts at a midnight (UTC) ...
T_RUN = T_FIT + 4 * 86_400 + 10 * 3600   # ... and the measured records a day after it


def _request(i: int, t: float, fleet: Sequence[str] | None, rnd: random.Random,
             mixed: bool = False) -> ActionRequest:
    agent, action, rtype = MIX[i % len(MIX)]
    if fleet:
        agent, action, rtype = fleet[i % len(fleet)], "tickets.read", "Ticket"
    if mixed:                        # history: random agents, ids and contexts
        agent, action, rtype = MIX[rnd.randrange(len(MIX))]
        if fleet and rnd.random() < 0.5:
            agent, action, rtype = fleet[rnd.randrange(len(fleet))], "tickets.read", "Ticket"
        i = rnd.randrange(1 << 20)
    return ActionRequest.create(agent_id=agent, action=action,
                                resource={"type": rtype, "id": f"{rtype.lower()}-{i % 97}",
                                          "attributes": ATTRS.get(rtype, {})},
                                context={"ticket": f"T-{i % 13}"}, occurred_at=t,
                                request_id=str(uuid.UUID(int=rnd.getrandbits(128))))


def _records(n: int, t0: float, fleet: list[str] | None = None) -> list[RawRecord]:
    """n actions of the mixed workload; with a fleet, spread over its (support) agents."""
    out, offsets, rnd = [], [0] * PARTS, random.Random(1)
    for i in range(n):
        req = _request(i, t0 + i * 0.05, fleet, rnd)
        p = partition_for(req.agent_id, PARTS)
        out.append(RawRecord(key=req.agent_id.encode(), value=encode(req), partition=p,
                             offset=offsets[p], timestamp=req.occurred_at))
        offsets[p] += 1
    return out


def fitted_model(bundle: PolicyBundle, fleet: Sequence[str]) -> Any:
    """A `BaselineModel` fitted on three synthetic days of these agents (20 min a day)."""
    from holdgate.models.baseline_model import BaselineModel
    from holdgate.models.fit import FitOptions, fit_model

    rnd = random.Random(3)
    history = [_request(0, T_FIT + day * 86_400 + 10 * 3600 + i * 0.05, fleet, rnd, mixed=True)
               for day in range(3) for i in range(24_000)]
    result = fit_model(history, bundle.agent_roles, FitOptions(seed=1))
    path = Path(tempfile.mkdtemp(prefix="hg-bench-model-")) / "model"
    result.model.save(path)
    return BaselineModel.load(path)


class _Clock:
    """Accumulates wall time per part (perf_counter: the same clock as the runner's)."""

    def __init__(self) -> None:
        self.parts = dict.fromkeys(PART_NAMES, 0.0)

    def timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        parts, now = self.parts, time.perf_counter

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = now()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[part] += now() - t
        return wrapper


class _TimedSignals:
    def __init__(self, inner: SignalComputer, clock: _Clock) -> None:
        self.model_version = inner.model_version
        self.observe_batch = clock.timed("signals", inner.observe_batch)
        self.record_outcomes = clock.timed("signals", inner.record_outcomes)


class _TimedEngine:
    def __init__(self, inner: PolicyEngine, clock: _Clock) -> None:
        self.inner = inner
        self.decide_many = clock.timed("policy", inner.decide_many)


def _run(bundle: PolicyBundle, records: list[RawRecord], batch: int, mode: str,
         model: Any) -> tuple[float, dict[str, float]]:
    clock = _Clock()
    engine = PolicyEngine(bundle)      # a fresh cache per run: every run pays its misses
    signals = None
    if mode != "off":
        signals = _TimedSignals(SignalComputer(model=model if mode == "model" else None,
                                               roles=bundle.agent_roles), clock)
    snapshot = Snapshot(engine=_TimedEngine(engine, clock), policy_version=bundle.version,
                        signals=signals, partitions=PARTS, roles=bundle.agent_roles)
    runner = Runner(snapshot=snapshot, store=MemoryStore(), partitions=PARTS,
                    signer=Signer.generate())
    now = records[-1].timestamp + 0.05
    from_bytes, to_bytes = AgentState.__dict__["from_bytes"], AgentState.to_bytes
    AgentState.from_bytes = classmethod(clock.timed("st.dec", from_bytes.__func__))
    AgentState.to_bytes = clock.timed("st.enc", to_bytes)
    settle()                           # as the worker does before its first batch
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(records), batch):
            out = runner.run(records[i:i + batch], decided_at=now)
            runner.apply(out.writes)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        AgentState.from_bytes, AgentState.to_bytes = from_bytes, to_bytes
    n, tm, p = len(records), runner.timings, clock.parts
    us = {"decode": tm["decode"], "st.dec": p["st.dec"], "signals": p["signals"],
          "policy": p["policy"], "st.enc": p["st.enc"], "seal": tm["seal"] - p["st.enc"],
          "rest": tm["decide"] - p["st.dec"] - p["signals"] - p["policy"]}
    scale = cpu / wall / n * 1e6       # the parts' wall time, scaled to the run's CPU time
    parts = {k: v * scale for k, v in us.items()}
    parts["cache_hit_pct"] = 100.0 * engine.hits / max(1, engine.hits + engine.misses)
    parts["wall_us"] = wall / n * 1e6
    return cpu / n * 1e6, parts


def run(*, n: int = 6000, repeats: int = 5, batches: Sequence[int] = (1, 16, 256)
        ) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "repeats": repeats}
    bundle = PolicyBundle.load(default_bundle_path())
    path, fleet = fleet_bundle(1000)
    fleet_loaded = PolicyBundle.load(path)
    t = time.perf_counter()
    model = fitted_model(fleet_loaded, fleet)
    print(f"  fitted a model on 72,000 synthetic actions in {time.perf_counter() - t:.0f} s",
          flush=True)
    print("  workload: 6 busy agents (micro-batch waves of ~6)", flush=True)
    out["batches"] = _sweep(bundle, _records(n, T_RUN), repeats, model, batches)
    print("  workload: 1,000 agents (waves as large as the batch)", flush=True)
    out["fleet_batches"] = _sweep(fleet_loaded, _records(n, T_RUN, fleet), repeats, model,
                                  batches)
    return out


def _sweep(bundle: PolicyBundle, records: list[RawRecord], repeats: int, model: Any,
           batches: Sequence[int]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for batch in batches:
        row: dict[str, Any] = {}
        for mode in MODES:
            runs = sorted((_run(bundle, records, batch, mode, model) for _ in range(repeats)),
                          key=lambda r: r[0])
            row[mode] = {"us_per_action": runs[0][0], "breakdown_us": runs[0][1]}
        row["ratio"] = row["model"]["us_per_action"] / row["off"]["us_per_action"]
        out[batch] = row
        print(f"  batch {batch:>3}: " + ", ".join(
            f"{m} {row[m]['us_per_action']:.1f} µs" for m in MODES), flush=True)
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"decide: µs per action in the Runner, {res['n']} actions, best of "
             f"{res['repeats']} runs"]
    for key, title in (("batches", "6 busy agents"), ("fleet_batches", "1,000 agents")):
        lines += [f"[{title}]", f"{'batch':>5} {'mode':>5} {'total':>7}   "
                  + " ".join(f"{p:>7}" for p in PART_NAMES) + "  cache"]
        lines += _rows(res[key])
    return "\n".join(lines)


def _rows(batches: Mapping[int, Any]) -> list[str]:
    lines = []
    for batch, row in batches.items():
        for mode in MODES:
            b = row[mode]["breakdown_us"]
            lines.append(f"{batch:>5} {mode:>5} {row[mode]['us_per_action']:>7.1f}   "
                         + " ".join(f"{b[p]:>7.1f}" for p in PART_NAMES)
                         + f"  {b['cache_hit_pct']:>4.0f}%")
    return lines
