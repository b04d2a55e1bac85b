"""Hot swap: what a shadow candidate costs the enforced path; how fast workers follow a publish.

1. Shadow cost, in process (like bench/decide.py): the real `Runner` over the
   same 1,000-agent records, batch 256, signals on, a fitted model enforced,
   verdicts sealed and signed, snapshots built by `stream.swap.assemble` as a
   worker builds them: (a) no shadow, (b) a shadow policy (the bundle plus a
   comment: its own engine and cache), (c) a shadow model (another fitted model,
   decided by the enforced engine as `assemble` wires it), (d) both.  CPU µs per
   action, median and min..max of ``repeats`` interleaved runs, and the part of
   it spent in the garbage collector.  Overhead on the enforced path = mode -
   (a), paired within each repeat.  The shadow's own cost is measured apart,
   each part replayed alone (`_own_cost`): `rederive` and `decide_many` on the
   same requests and signals, in order, on fresh engines; *build*, the rest of
   `core._shadow` (the shadow record); *seal*, the same decisions sealed with
   their shadow record minus without it (the bytes, the signature).
2. Convergence on a private broker: two real ``holdgate worker`` processes (one
   group, 2 partitions, own state folders) with an operator key, closed-loop
   SDK traffic from agents on both partitions.  Each round the CLI publishes a
   policy version (``policy publish`` twice, then ``promote`` alternating) and
   per partition the first verdict naming it is timed from the CLI returning
   and from the pointer record's timestamp; also each worker's swap (its status
   ``since``) and when `read_overview` (``holdgate status``) shows both on it.
   The verdict log is read back: per partition the versions must follow the
   publishes in order, never back to an older one (no batch under a mix).
   ``python bench/run.py swap [--bootstrap HOST:PORT]``; saved to results/swap.json.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from itertools import groupby
from pathlib import Path
from typing import Any, NamedTuple

import decide
from common import HOLDGATE, bench_settings, fleet_bundle, pct

from holdgate import reasons as rc
from holdgate.keys import Signer, generate_keypair
from holdgate.policies import PolicyBundle
from holdgate.routing import partition_for
from holdgate.settings import Settings
from holdgate.stream import MemoryStore, Runner
from holdgate.stream.edges import seal
from holdgate.stream.swap import assemble

BATCH = 256
MODES = ("none", "policy", "model", "both")
TITLES = {"none": "(a) no shadow", "policy": "(b) shadow policy", "model": "(c) shadow model",
          "both": "(d) shadow policy+model"}


def _variant(src: Path, tag: str) -> Path:
    """The bundle at `src` under another version: the same policies plus a comment."""
    out = Path(shutil.copytree(src, Path(tempfile.mkdtemp(prefix="hg-bench-swap-")) / tag))
    with open(out / "policy.cedar", "a") as f:
        f.write(f"\n// bench/swap.py variant {tag}\n")
    return out


def _fit_other(bundle: PolicyBundle, fleet: list[str]) -> Any:
    """A second model (other history, other forest seed) for the shadow, like decide's."""
    from holdgate.models.baseline_model import BaselineModel
    from holdgate.models.fit import FitOptions, fit_model

    rnd, path = random.Random(11), Path(tempfile.mkdtemp(prefix="hg-bench-swap-model-")) / "m"
    history = [decide._request(0, decide.T_FIT + d * 86_400 + 10 * 3600 + i * 0.05, fleet, rnd,
                               mixed=True) for d in range(3) for i in range(24_000)]
    fit_model(history, bundle.agent_roles, FitOptions(seed=7)).model.save(path)
    return BaselineModel.load(path)


class _Tap:
    """Forwards to `inner`, logging (tag, arguments) of every call of `name` in `log`."""

    def __init__(self, inner: Any, name: str, log: list[tuple[str, Any]], tag: str) -> None:
        self.inner, fn = inner, getattr(inner, name)

        def call(*args: Any) -> Any:
            log.append((tag, args))
            return fn(*args)
        setattr(self, name, call)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


class _Timed:
    """Forwards to `inner`, adding the CPU time of every call of `name` to ``spent[name]``."""

    def __init__(self, inner: Any, name: str, spent: dict[str, float]) -> None:
        self.inner, fn = inner, getattr(inner, name)

        def call(*args: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args)
            finally:
                spent[name] += time.process_time() - t
        setattr(self, name, call)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


class _Clock(NamedTuple):      # what `core._shadow` reads of an agent's state
    clock: float


class _GcClock:
    """CPU time spent in the cyclic garbage collector while `on` (gc.callbacks)."""

    def __init__(self) -> None:
        self.spent, self.on, self._t = 0.0, False, 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._t = time.process_time()
        else:
            self.spent += time.process_time() - self._t


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def shadow_cost(*, n: int = 6000, repeats: int = 15) -> dict[str, Any]:
    path, fleet = fleet_bundle(1000)
    bundle, variant = PolicyBundle.load(path), PolicyBundle.load(_variant(path, "shadow"))
    t = time.perf_counter()
    model, other = decide.fitted_model(bundle, fleet), _fit_other(bundle, fleet)
    print(f"  fitted two models (enforced {model.version[:19]}, shadow {other.version[:19]}) "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    records = decide._records(n, decide.T_RUN, fleet)
    settings = Settings(partitions=decide.PARTS, max_clock_skew=60.0)
    signer = Signer.generate()
    now = records[-1].timestamp + 0.05
    gc_clock = _GcClock()
    gc.callbacks.append(gc_clock)

    def snapshot(mode: str) -> Any:     # fresh engines and caches for every run
        shadow_model = other if mode in ("model", "both") else None
        return assemble(settings, bundle, model,
                        shadow_bundle=variant if mode in ("policy", "both") else None,
                        shadow_model=shadow_model, shadow_model_set=shadow_model is not None)

    def run_once(snap: Any, keep: list[Any] | None = None) -> tuple[float, int, float]:
        """CPU µs per action, shadowed decisions, µs per action in the collector."""
        runner = Runner(snapshot=snap, store=MemoryStore(), partitions=decide.PARTS,
                        signer=signer)
        shadowed, errors = 0, 0
        gc.collect()
        gc_clock.spent, gc_clock.on = 0.0, True
        cpu = time.process_time()
        for i in range(0, len(records), BATCH):
            out = runner.run(records[i:i + BATCH], decided_at=now)
            runner.apply(out.writes)
            shadowed += sum(d.shadow is not None for d in out.decisions)
            errors += sum(any(r.code == rc.INTERNAL_ERROR for r in d.reasons)
                          for d in out.decisions)
            if keep is not None:
                keep.extend(out.decisions)
        cpu = time.process_time() - cpu
        gc_clock.on = False
        if errors:
            raise SystemExit(f"{errors} INTERNAL_ERROR decisions: the bench is broken")
        return cpu / n * 1e6, shadowed, gc_clock.spent / n * 1e6

    runs: dict[str, list[float]] = {m: [] for m in MODES}
    gcs: dict[str, list[float]] = {m: [] for m in MODES}
    shadowed: dict[str, int] = {}
    try:
        for r in range(repeats):
            for mode in MODES:
                us, shadowed[mode], in_gc = run_once(snapshot(mode))
                runs[mode].append(us)
                gcs[mode].append(in_gc)
            print(f"  run {r + 1}/{repeats}: " + ", ".join(f"{m} {runs[m][-1]:.1f}"
                                                          for m in MODES)
                  + " µs/action", flush=True)
        out: dict[str, Any] = {"n": n, "repeats": repeats, "batch": BATCH, "agents": 1000,
                               "enforced_model": model.version, "shadow_model": other.version,
                               "shadow_policy": variant.version, "modes": {}}
        for mode in MODES:
            # overhead: each run minus the no-shadow run of the same repeat (interleaved)
            over = [x - a for x, a in zip(runs[mode], runs["none"], strict=True)]
            bare = [x - g - (a - h) for x, g, a, h in zip(runs[mode], gcs[mode], runs["none"],
                                                          gcs["none"], strict=True)]
            row: dict[str, Any] = {
                "us_per_action": statistics.median(runs[mode]), "runs_us": runs[mode],
                "spread_us": _spread(runs[mode]), "gc_us": statistics.median(gcs[mode]),
                "gc_runs_us": gcs[mode], "shadowed_actions": shadowed[mode]}
            if mode != "none":
                row["overhead_us"] = statistics.median(over)
                row["overhead_runs_us"], row["overhead_spread_us"] = over, _spread(over)
                row["overhead_outside_gc_us"] = statistics.median(bare)
                row["overhead_outside_gc_spread_us"] = _spread(bare)
                print(f"  own cost of the {mode} shadow, replayed alone ...", flush=True)
                row["own_us"] = own = _own_cost(snapshot, run_once, mode, repeats, n,
                                                now=now)
                row["overhead_over_own"] = row["overhead_us"] / own["total"] \
                    if own["total"] > 0 else float("nan")
                row["excess_us"] = row["overhead_us"] - own["total"]
                row["outside_gc_over_own"] = row["overhead_outside_gc_us"] / own["total"] \
                    if own["total"] > 0 else float("nan")
            out["modes"][mode] = row
    finally:
        gc.callbacks.remove(gc_clock)
    return out


def _own_cost(snapshot: Any, run_once: Any, mode: str, repeats: int, n: int, *,
              now: float) -> dict[str, Any]:
    """What the shadow itself costs, each part replayed alone (CPU µs per action, medians).

    One run under the shadowed snapshot logs, in order, the enforced engine's
    `decide_many` calls and every `core._shadow` call (the wave's Cedar-bound
    slots, the agents' clocks it reads, ``decided_at``).  Each repeat then
    replays the log on a fresh snapshot of the mode (a model-only shadow shares
    the enforced engine and its cache, as in the run: the enforced calls are
    replayed untimed in between) and times `core._shadow` whole: `rederive`,
    `decide_many` (timed inside it), and the rest, *build*: the shadow record
    (outcome, deadline, reasons, the signals it read differently).  *seal*: the
    run's decisions sealed (as the worker does; signing costs the same with
    or without a shadow, so it is left out) with their shadow
    record minus the same decisions with ``shadow=None``.  The collector is off
    while timing (its cost per run is measured separately, per mode).
    """
    from holdgate.stream import core

    real = core._shadow
    log: list[tuple[str, Any]] = []
    decisions: list[Any] = []

    def logged(shadow: Any, todo: Any, states: Any, decided_at: float) -> None:
        clocks = {s.action.request.agent_id: _Clock(states[s.action.request.agent_id].clock)
                  for s in todo} if shadow.signals is not None else {}
        log.append(("shadow", (list(todo), clocks, decided_at)))
        real(shadow, todo, states, decided_at)

    snap = snapshot(mode)
    core._shadow = logged
    try:
        run_once(dataclasses.replace(snap, engine=_Tap(snap.engine, "decide_many", log,
                                                       "enforced")), keep=decisions)
    finally:
        core._shadow = real
    parts = ("rederive", "decide_many", "build", "seal")
    per: dict[str, list[float]] = {k: [] for k in (*parts, "total")}
    bare = [dataclasses.replace(d, shadow=None) for d in decisions]
    for r in range(repeats):
        fresh = snapshot(mode)
        spent = {"rederive": 0.0, "decide_many": 0.0}
        sh = fresh.shadow
        shadow = dataclasses.replace(
            sh, engine=_Timed(sh.engine, "decide_many", spent),
            signals=_Timed(sh.signals, "rederive", spent) if sh.signals is not None else None)
        whole = 0.0
        gc.collect()
        gc.disable()
        try:
            for tag, args in log:
                if tag == "enforced":
                    fresh.engine.decide_many(*args)
                    continue
                todo, clocks, decided_at = args
                t = time.process_time()
                real(shadow, todo, clocks, decided_at)
                whole += time.process_time() - t
            sealed = {}
            for which in ((True, False) if r % 2 else (False, True)):
                t = time.process_time()
                for seq, d in enumerate(decisions if which else bare):
                    seal(d, decided_at=now, ttl=30.0, seq=seq)
                sealed[which] = time.process_time() - t
        finally:
            gc.enable()
        got = {**spent, "build": whole - spent["rederive"] - spent["decide_many"],
               "seal": sealed[True] - sealed[False]}
        for k in parts:
            per[k].append(got[k] / n * 1e6)
        per["total"].append(sum(got.values()) / n * 1e6)
    own: dict[str, Any] = {k: statistics.median(v) for k, v in per.items()}
    own["total_spread"], own["runs"] = _spread(per["total"]), per
    own["verdict_bytes"] = {"with": statistics.mean(len(seal(d, decided_at=now, ttl=30.0).value)
                                                    for d in decisions[:500]),
                            "without": statistics.mean(len(seal(d, decided_at=now, ttl=30.0).value)
                                                       for d in bare[:500])}
    return own


# ------------------------------------------------------------------------------- convergence
class Answer(NamedTuple):    # sent, received: monotonic; wall: time.time() at receipt
    sent: float
    received: float
    wall: float
    partition: int
    version: str              # "local": the SDK's own deny (TIMEOUT, UNAVAILABLE, ...)
    code: str


class _Traffic(threading.Thread):
    """Closed loops through one AsyncGate, ~8 checks/s per agent (under the rate limits)."""

    def __init__(self, settings: Settings, agents: list[str]) -> None:
        super().__init__(daemon=True)
        self.settings, self.agents = settings, agents
        self.answers: list[Answer] = []
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from holdgate.client import AsyncGate

        async with AsyncGate(bootstrap=self.settings.bootstrap, settings=self.settings) as gate:
            await asyncio.gather(*(self._lane(gate, a) for a in self.agents))

    async def _lane(self, gate: Any, agent: str) -> None:
        rnd, p = random.Random(agent), partition_for(agent, self.settings.partitions)
        while not self.done.is_set():
            sent = time.monotonic()
            v = await gate.check(action="tickets.read", agent_id=agent, timeout=5.0,
                                 resource={"type": "Ticket", "id": f"T-{rnd.randrange(40)}"})
            self.answers.append(Answer(sent, time.monotonic(), time.time(), p, v.policy_version,
                                       v.codes[0] if v.codes else ""))
            await asyncio.sleep(rnd.uniform(0.08, 0.16))


def _cli(settings: Settings, *args: str) -> float:
    t = time.monotonic()
    done = subprocess.run([*HOLDGATE, *args], check=False, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, **settings.to_env()})
    if done.returncode:
        raise SystemExit(f"holdgate {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - t


def _workers(settings: Settings) -> list[Any]:
    from holdgate.stream.published import read_overview

    return [ws for ws, _ in read_overview(settings).workers or []]


def _read(s: Settings, topic: str, *, last: bool = False) -> list[Any]:
    """The topic's committed records (only the last of each partition with `last`)."""
    from holdgate.stream.logread import offset_bounds, open_consumer, partition_count, scan

    consumer = open_consumer(s, "bench-swap")
    try:
        bounds = offset_bounds(consumer, topic, range(partition_count(consumer, topic)))
        if last:
            bounds = {p: (max(lo, hi - 1), hi) for p, (lo, hi) in bounds.items()}
        return list(scan(consumer, topic, bounds))
    finally:
        consumer.close()


def convergence(bootstrap: str, *, rounds: int = 5, n_fleet: int = 16) -> dict[str, Any]:
    tag, keys = uuid.uuid4().hex[:6], Path(tempfile.mkdtemp(prefix="hg-bench-swap-op-"))
    op_private, op_public, _ = generate_keypair(keys, "operator")
    path, fleet = fleet_bundle(n_fleet)
    topics = {f"{k}_topic": f"bench.swap.{tag}.{k}"
              for k in ("control", "approvals", "policies", "models", "status")}
    s = bench_settings(bootstrap, "swap", partitions=2, policy_dir=str(path),
                       operator_keys=str(op_public), operator_key_file=str(op_private),
                       **topics)
    v0 = PolicyBundle.load(path).version
    dirs = [_variant(path, t) for t in ("a", "b")]
    va, vb = (PolicyBundle.load(d).version for d in dirs)
    steps: list[tuple[str, Path | None, str]] = [("publish", dirs[0], va), ("publish", dirs[1], vb)]
    steps += [("promote", None, (va, vb)[k % 2]) for k in range(rounds - 2)]
    procs = []
    for i, ws in enumerate([s, dataclasses.replace(s, datadir=tempfile.mkdtemp(
            prefix="hg-bench-swap-b-"))]):
        log = open(Path(ws.datadir) / "worker.log", "ab")  # noqa: SIM115 - the child's
        procs.append(subprocess.Popen([*HOLDGATE, "worker"], stderr=log,
                                      stdout=log, env={**os.environ, **ws.to_env()}))
        print(f"  worker {i} pid {procs[-1].pid}, state in {ws.datadir}", flush=True)
    traffic = _Traffic(s, ["support-bot-1", "support-bot-2", *fleet])
    traffic.start()
    rows: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []   # a CLI start .. 2 s after it returned
    try:
        t = time.monotonic()
        while True:                   # both workers deciding, both partitions owned
            ws = _workers(s)
            live = {a.partition for a in traffic.answers[-50:] if a.version == v0}
            if len(ws) == 2 and all(w.ready and w.partitions for w in ws) and live == {0, 1}:
                break
            if time.monotonic() - t > 180 or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers not ready: {[w.to_obj() for w in ws]}")
            time.sleep(0.5)
        layout = {w.worker: w.partitions for w in ws}
        print(f"  ready in {time.monotonic() - t:.1f} s: partitions {layout}", flush=True)
        time.sleep(2.0)
        ready = time.monotonic()
        for k, (verb, folder, version) in enumerate(steps):
            mark = len(traffic.answers)
            took = _cli(s, "policy", "publish", str(folder)) if verb == "publish" else \
                _cli(s, "promote", version)
            t_ret, w_ret = time.monotonic(), time.time()
            windows.append((t_ret - took, t_ret + 2.0))
            first: dict[int, Answer] = {}
            status_s, ws = None, []
            while (len(first) < 2 or status_s is None) and time.monotonic() - t_ret < 60:
                for a in traffic.answers[mark:]:
                    if a.version == version and a.partition not in first:
                        first[a.partition] = a
                if status_s is None:
                    ws = _workers(s)
                    if len(ws) == 2 and all(w.enforced.get("policy") == version for w in ws):
                        status_s = time.monotonic() - t_ret
                time.sleep(0.02)
            sent = _read(s, s.policies_topic, last=True)[-1].timestamp
            rows.append(row := {
                "round": k + 1, "verb": verb, "version": version, "cli_s": took,
                "pointer_before_return_s": w_ret - sent,
                "worker_swapped_s": {w.worker: w.since - sent for w in ws},
                "first_verdict_after_pointer_s": {p: round(a.wall - sent, 3)
                                                  for p, a in sorted(first.items())},
                "first_verdict_after_return_s": {p: a.received - t_ret for p, a in first.items()},
                "status_both_after_return_s": status_s})
            print(f"  round {k + 1} {verb} {version[:19]}: CLI {took:.2f} s; first verdicts "
                  f"{row['first_verdict_after_pointer_s']} s after the pointer, status both "
                  f"{status_s or float('nan'):.2f} s after the CLI", flush=True)
            time.sleep(2.0)
    finally:
        traffic.done.set()
        traffic.join(15)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    answers = [a for a in traffic.answers if a.sent >= ready]
    rtt: dict[bool, list[float]] = {True: [], False: []}
    for a in (a for a in answers if a.version != "local"):
        rtt[any(lo <= a.sent <= hi for lo, hi in windows)].append(a.received - a.sent)
    return {"rounds": rows, "versions": {"v0": v0, "a": va, "b": vb},
            "agents": len(traffic.agents), "sdk_answers": len(answers),
            "sdk_local": dict(Counter(a.code for a in answers if a.version == "local")),
            "sdk_codes": dict(Counter(a.code for a in answers if a.version != "local")),
            "rtt_cli_window_ms": _ms(rtt[True]), "rtt_other_ms": _ms(rtt[False]),
            "partitions": layout,
            **_check(s, [v0] + [v for *_, v in steps])}


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(xs) * 1e3, "p99": pct(xs, 0.99) * 1e3,
            "max": max(xs) * 1e3, "n": len(xs)}


def _check(s: Settings, expected: list[str]) -> dict[str, Any]:
    """The verdict log read back: versions per partition in order, duplicates, shadows."""
    import orjson

    per: dict[int, list[dict[str, Any]]] = {}
    for r in _read(s, s.verdicts_topic):          # offset order within a partition
        per.setdefault(r.partition, []).append(orjson.loads(r.value))
    runs = {p: [k for k, _ in groupby(v["policy_version"] for v in vs)]
            for p, vs in sorted(per.items())}
    ids = Counter(v["request_id"] for vs in per.values() for v in vs)
    return {"verdicts_logged": sum(ids.values()), "version_runs": runs,
            "in_publish_order": {p: r == expected for p, r in runs.items()},
            "shadowed_verdicts": sum(v.get("shadow") is not None
                                     for vs in per.values() for v in vs),
            "duplicate_request_ids": sum(c > 1 for c in ids.values())}


def run(bootstrap: str, *, rounds: int = 5, repeats: int = 15) -> dict[str, Any]:
    print("swap 1/2: shadow cost (in process)", flush=True)
    cost = shadow_cost(repeats=repeats)
    print("swap 2/2: convergence (2 workers)", flush=True)
    return {"shadow_cost": cost, "convergence": convergence(bootstrap, rounds=rounds),
            "loadavg": os.getloadavg()}


def _mm(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s, max {max(xs):.3f} s" if xs else "never"


def cost_report(c: dict[str, Any]) -> list[str]:
    modes = c["modes"]
    base = modes["none"]["us_per_action"]

    def mm(d: dict[str, float], sign: str = "") -> str:
        return f"({d['min']:{sign}.1f}..{d['max']:{sign}.1f})"

    lines = [f"swap: shadow cost, {c['agents']:,} agents, batch {c['batch']}, signals on, "
             f"fitted model; {c['n']:,} actions, CPU µs/action, median of {c['repeats']} "
             "interleaved runs (min..max over the runs); (x)-(a) paired per run",
             f"  {'':<24}{'µs':>7} {'(min..max)':<15}{'vs (a)':>7}{'(x)-(a)':>9} "
             f"{'(min..max)':<16}{'in gc':>6}  {'(x)-(a) outside gc':>20}"]
    for mode, row in modes.items():
        over = "" if mode == "none" else \
            f"{row['overhead_us']:>+9.1f} {mm(row['overhead_spread_us'], '+'):<16}"
        bare = "" if mode == "none" else (f"  {row['overhead_outside_gc_us']:>+7.1f} "
                                          f"{mm(row['overhead_outside_gc_spread_us'], '+')}")
        lines.append(f"  {TITLES[mode]:<24}{row['us_per_action']:>7.1f} "
                     f"{mm(row['spread_us']):<15}{row['us_per_action'] / base:>6.2f}x"
                     f"{over:<26}{row['gc_us']:>6.1f}{bare}")
    lines.append(f"  shadow's own cost, replayed alone: {'rederive':>8} + decide_many + build "
                 "record + seal record = own (min..max)    overhead/own  (outside gc)  "
                 "overhead-own")
    inside = []
    for mode, row in modes.items():
        own = row.get("own_us")
        if not own:
            continue
        inside.append(row["overhead_spread_us"]["min"] <= own["total"]
                      <= row["overhead_spread_us"]["max"])
        lines.append(f"  {TITLES[mode]:<24}{'':<11}{own['rederive']:>8.1f} + "
                     f"{own['decide_many']:>11.1f} + {own['build']:>12.1f} + "
                     f"{own['seal']:>11.1f} = {own['total']:>4.1f} "
                     f"{mm(own['total_spread']):<13}{row['overhead_over_own']:>8.2f}x"
                     f"{row['outside_gc_over_own']:>13.2f}x{row['excess_us']:>+14.1f}")
    b = next(r["own_us"]["verdict_bytes"] for r in modes.values() if "own_us" in r)
    lines.append("  own cost inside the overhead's min..max: " + ", ".join(
        f"{TITLES[m].split()[0]} {'yes' if ok else 'no'}"
        for m, ok in zip([m for m in modes if m != "none"], inside, strict=True))
        + f"; a verdict grows from {b['without']:,.0f} to {b['with']:,.0f} bytes with its "
        "shadow record")
    return lines


def report(res: dict[str, Any]) -> str:
    v = res["convergence"]
    lines = cost_report(res["shadow_cost"])
    rows = v["rounds"]

    def per(key: str) -> list[float]:
        return [x for r in rows for x in (r[key].values() if isinstance(r[key], dict)
                                          else [r[key]] if r[key] is not None else [])]
    rtt = {k: "/".join(f"{v[k][q]:.0f}" for q in ("p50", "p99", "max"))
           for k in ("rtt_cli_window_ms", "rtt_other_ms")}
    return "\n".join(lines + [
        f"swap: convergence, 2 workers, 2 partitions, {v['agents']} agents, {len(rows)} rounds "
        "(publish, publish, then promote alternating)",
        f"  CLI call {_mm(per('cli_s'))}; its pointer was written "
        f"{_mm(per('pointer_before_return_s'))} before it returned",
        f"  after the pointer: workers swapped (status since) {_mm(per('worker_swapped_s'))}",
        f"  first verdict naming the new version, per partition: after the pointer "
        f"{_mm(per('first_verdict_after_pointer_s'))}",
        f"    after the CLI returned {_mm(per('first_verdict_after_return_s'))}",
        f"  `holdgate status` (read_overview, ~0.5 s a read) shows both workers on it after the "
        f"CLI returned: {_mm(per('status_both_after_return_s'))}",
        f"  verdict log: {v['verdicts_logged']:,} verdicts; per partition the versions follow the "
        f"publishes, none back to an older one: {v['in_publish_order']}; duplicate request ids "
        f"{v['duplicate_request_ids']}; with a shadow {v['shadowed_verdicts']}",
        f"  SDK: {v['sdk_answers']:,} checks after ready; local denies (timeouts) "
        f"{v['sdk_local'] or 0}; codes {v['sdk_codes']}",
        f"  round trip ms p50/p99/max: sent while a publish/promote CLI ran or <= 2 s after "
        f"{rtt['rtt_cli_window_ms']} (swaps, and the CLI's own CPU), others "
        f"{rtt['rtt_other_ms']}"])
