"""Scale out: sustained throughput with 1 and 2 workers in one group, and against partitions.

Every configuration gets fresh topics on the same broker and the same load as
the hold bench (`hold._open_window`: one AsyncGate keeping W checks in flight
across a fleet of F agents, which murmur2 spreads over the partitions):

- workers: 1 worker, then 2 workers in the same consumer group (each with its
  own HOLDGATE_DATADIR, hence its own RocksDB store and static instance id) on
  the same partition count; the group must have settled (every worker's signed
  status on the status topic lists its share, all partitions ready) before the
  load starts, so no rebalance falls into the measured window;
- partitions (optional): 1 worker with 2, 4 and 8 partitions.

While the load runs, the CPU time of every process involved is read from /proc
(utime + stime of each worker, the broker and this load generator) and the
machine's busy/idle time from /proc/stat, so a figure comes with what the
cores were doing: when the box is saturated, a second worker has no core to
run on and cannot add throughput, whatever the design allows.  "other" is busy
time no process of this bench accounts for (another benchmark on the box;
`max_other` re-measures such runs).  Each worker's own /metrics give what it
did meanwhile: partition batches (= transactions) per second, records per
batch, decide and commit time per batch.

`run(bootstrap, ...)` and `report(res)` like the other bench modules;
standalone: `python bench/scale.py [--rounds 3 --max-other 0.15]` (starts its
own Kafka unless --bootstrap is given; saves bench/results/scale.json).
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from common import bench_settings, fleet_bundle, worker
from hold import _open_window, _wait_ready

from holdgate.cli.localkafka import free_port
from holdgate.client import Gate
from holdgate.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU accounting
def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a live process; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()      # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    total = sum(values)
    return (total - idle - iowait) / _TICK, total / _TICK


def _broker_pid(bootstrap: str) -> int | None:
    """The pid listening on the bootstrap port, when it is a local process we can see."""
    try:
        from holdgate.cli.preflight import _listening_inodes, _owner

        port = int(bootstrap.rsplit(":", 1)[1])
        found = _owner(_listening_inodes(port))
    except Exception:  # noqa: BLE001 - a remote broker, or no /proc: no broker column
        return None
    return found[0] if found else None


class CpuMeter:
    """CPU seconds of named processes and of the machine between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._t0 = 0.0
        self._before: dict[str, float | None] = {}
        self._machine0 = (0.0, 0.0)
        self._self0 = 0.0

    def start(self) -> None:
        self._before = {name: _proc_cpu(pid) for name, pid in self.pids.items()}
        self._machine0 = _machine_cpu()
        t = os.times()
        self._self0 = t.user + t.system
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        t = os.times()
        busy1, total1 = _machine_cpu()
        busy0, total0 = self._machine0
        cores: dict[str, float] = {}
        for name, pid in self.pids.items():
            a, b = self._before.get(name), _proc_cpu(pid)
            if a is not None and b is not None:
                cores[name] = (b - a) / wall
        cores["loadgen"] = (t.user + t.system - self._self0) / wall
        machine_busy = (busy1 - busy0) / wall
        ncpu = (total1 - total0) / wall            # ~ the number of cores
        ours = sum(cores.values())
        return {"wall_s": wall, "cores": cores, "machine_busy": machine_busy,
                "machine_cores": ncpu, "idle": max(0.0, ncpu - machine_busy),
                "other": max(0.0, machine_busy - ours)}


# --------------------------------------------------------------------------- worker metrics
_SCRAPED = ("holdgate_decisions_total", "holdgate_batches_total",
            "holdgate_batch_decide_seconds_sum", "holdgate_batch_commit_seconds_sum",
            "holdgate_batch_size_sum")


def _scrape(port: int) -> dict[str, float]:
    """The worker's own counters (summed over labels) from its /metrics endpoint."""
    import urllib.request

    out = dict.fromkeys(_SCRAPED, 0.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in out:
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _batches(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """What one worker did between two scrapes: decisions, partition batches, their costs."""
    d = {k: after[k] - before[k] for k in _SCRAPED}
    n = d["holdgate_batches_total"] or float("nan")
    return {"decided_per_s": d["holdgate_decisions_total"] / wall,
            "batches_per_s": d["holdgate_batches_total"] / wall,
            "batch_size": d["holdgate_batch_size_sum"] / n,
            "decide_ms_per_batch": 1000 * d["holdgate_batch_decide_seconds_sum"] / n,
            "commit_ms_per_batch": 1000 * d["holdgate_batch_commit_seconds_sum"] / n,
            # share of the wall time the worker spent deciding (CPU, on its event loop)
            "deciding": d["holdgate_batch_decide_seconds_sum"] / wall}


# --------------------------------------------------------------------------- group settling
def live_owners(settings: Settings, pids: list[int]) -> dict[int, list[int]]:
    """{pid: ready partitions} of the given workers, from their signed status records."""
    from holdgate.errors import ConfigError
    from holdgate.status import WorkerStatus
    from holdgate.stream.published import read_signed

    try:
        read = read_signed(settings, settings.status_topic, settings.trust(),
                           lambda _key, value: WorkerStatus.from_bytes(value), timeout=20)
    except ConfigError:
        return {}
    out: dict[int, list[int]] = {}
    for status in read.values.values():
        if status.pid in pids and status.ready:
            out[status.pid] = sorted(status.partitions)
    return out


def wait_settled(settings: Settings, pids: list[int], timeout: float = 90.0,
                 alive: Callable[[], None] = lambda: None) -> dict[int, list[int]]:
    """Block until every worker is ready with a share and the shares cover every partition."""
    want = set(range(settings.partitions))
    deadline = time.monotonic() + timeout
    owners: dict[int, list[int]] = {}
    while time.monotonic() < deadline:
        alive()
        owners = live_owners(settings, pids)
        shares = [set(owners.get(pid, ())) for pid in pids]
        if all(shares) and set().union(*shares) == want and \
                sum(map(len, shares)) == len(want):
            return owners
        time.sleep(0.5)
    raise SystemExit(f"the group never settled on {len(pids)} workers covering {sorted(want)}: "
                     f"{owners}; see the worker logs in the datadirs")


# --------------------------------------------------------------------------- one configuration
def measure(bootstrap: str, bundle: Path, fleet: list[str], *, n_workers: int, partitions: int,
            seconds: float, window: int) -> dict[str, Any]:
    tag = f"scale{n_workers}w{partitions}p"
    uid = uuid.uuid4().hex[:6]
    # Own approvals (co-partitioned with the actions, so its count must match), control,
    # policies, models and status topics: the defaults are shared by every bench run.
    settings = bench_settings(bootstrap, tag, policy_dir=str(bundle), partitions=partitions,
                              **{f"{t}_topic": f"bench.{tag}.{uid}.{t}" for t in
                                 ("approvals", "control", "policies", "models", "status")})
    # Same group and topics; each worker its own state folder, hence its own RocksDB store
    # and its own static instance id (host + datadir, see holdgate.stream.worker.instance_id).
    each = [settings.with_(web_port=free_port())] + [
        settings.with_(datadir=tempfile.mkdtemp(prefix=f"hg-bench-scale-w{k}-"),
                       web_port=free_port()) for k in range(1, n_workers)]
    with ExitStack() as stack:
        procs = [stack.enter_context(worker(s)) for s in each]

        def alive() -> None:
            for p, s in zip(procs, each):
                if p.poll() is not None:
                    raise SystemExit(f"worker exited with {p.returncode}; see "
                                     f"{Path(s.datadir) / 'worker.log'}")

        with Gate(bootstrap=bootstrap, agent_id=fleet[0], settings=settings) as gate:
            _wait_ready(gate)
        owners = wait_settled(settings, [p.pid for p in procs], alive=alive)
        meter = CpuMeter({**{f"worker{k + 1}": p.pid for k, p in enumerate(procs)},
                          "broker": _broker_pid(bootstrap)})
        scraped = [_scrape(s.web_port) for s in each]
        meter.start()
        tput = asyncio.run(_open_window(settings, fleet, seconds, window))
        cpu = meter.stop()
        batches = [_batches(b, _scrape(s.web_port), cpu["wall_s"])
                   for b, s in zip(scraped, each)]
        alive()
        # a rebalance during the run would show as a changed assignment here
        after = live_owners(settings, [p.pid for p in procs])
    tput.pop("samples_ms", None)
    workers_cpu = sum(v for k, v in cpu["cores"].items() if k.startswith("worker"))
    return {"workers": n_workers, "partitions": partitions, **tput, "cpu": cpu,
            "assignment": [owners[p.pid] for p in procs],
            "assignment_after": [after.get(p.pid, []) for p in procs], "batches": batches,
            "worker_cpu_ms_per_action": 1000 * workers_cpu / tput["throughput"]
            if tput["throughput"] else float("nan"),
            "machine_cpu_ms_per_action": 1000 * cpu["machine_busy"] / tput["throughput"]
            if tput["throughput"] else float("nan")}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (its latencies and CPU belong to it)."""
    ordered = sorted(runs, key=lambda r: r["throughput"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["throughput_all"] = [r["throughput"] for r in runs]
    chosen["rounds"] = [{"throughput": r["throughput"], "p50_ms": r["p50_ms"],
                         "p99_ms": r["p99_ms"], "cores": r["cpu"]["cores"],
                         "idle": r["cpu"]["idle"], "other": r["cpu"]["other"],
                         "disturbed": r.get("disturbed", False),
                         "batches": r["batches"]} for r in runs]
    return chosen


def run(bootstrap: str, *, seconds: float = 10.0, window: int = 256, n_fleet: int = 1000,
        partitions: int = 4, sweep: tuple[int, ...] = (2, 4, 8), rounds: int = 1,
        max_other: float | None = None, tries: int = 4,
        warm_up: bool = True) -> dict[str, Any]:
    """1 vs 2 workers on `partitions`, then 1 worker on each count of `sweep` (() skips it).

    With rounds > 1 the configurations are interleaved round by round and the
    run with the median throughput is kept (every round is listed).  With
    `max_other` (cores), a run during which processes foreign to the bench used
    more CPU than that is discarded and measured again, up to `tries` times
    (the last one is kept, flagged): on a shared box, another benchmark would
    otherwise decide the figures.
    """
    bundle, fleet = fleet_bundle(n_fleet)
    configs = [(1, partitions), (2, partitions)] + [(1, p) for p in sweep if p != partitions]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in configs}
    discarded = kept_disturbed = 0
    if warm_up:
        # The broker's JIT and caches warm up over its first minute of load: whatever
        # configuration came first would pay for it.  One unmeasured run absorbs that.
        print(f"[scale] warm-up (not measured): 1 worker, {partitions} partitions ...",
              flush=True)
        measure(bootstrap, bundle, fleet, n_workers=1, partitions=partitions,
                seconds=seconds, window=window)
    for r in range(rounds):
        for n_workers, parts in configs:
            for attempt in range(1, tries + 1):
                print(f"[scale] round {r + 1}/{rounds}: {n_workers} worker(s), {parts} "
                      f"partitions, window {window} x {seconds:.0f}s ...", flush=True)
                one = measure(bootstrap, bundle, fleet, n_workers=n_workers, partitions=parts,
                              seconds=seconds, window=window)
                other = one["cpu"]["other"]
                if max_other is None or other <= max_other or attempt == tries:
                    one["disturbed"] = max_other is not None and other > max_other
                    kept_disturbed += one["disturbed"]
                    break
                discarded += 1
                print(f"[scale]   discarded: other processes used {other:.2f} cores "
                      f"(> {max_other}); again", flush=True)
            runs[(n_workers, parts)].append(one)
    return {"config": {"seconds": seconds, "window": window, "fleet": n_fleet,
                       "partitions": partitions, "sweep": sorted(set(sweep) | {partitions}),
                       "rounds": rounds, "cpus": os.cpu_count(), "max_other": max_other,
                       "discarded": discarded, "kept_disturbed": kept_disturbed},
            "runs": [_median_run(runs[c]) for c in configs]}


# --------------------------------------------------------------------------- report
def _find(res: dict[str, Any], workers: int, partitions: int) -> dict[str, Any] | None:
    for r in res["runs"]:
        if r["workers"] == workers and r["partitions"] == partitions:
            return r
    return None


def report(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"scale: one AsyncGate, window {c['window']}, fleet {c['fleet']}, "
             f"{c['seconds']:.0f}s each, {c['cpus']} cores shared by broker, workers and "
             f"load generator" + (f"; median of {c['rounds']} rounds" if c["rounds"] > 1 else ""),
             f"{'configuration':<26}{'actions/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
             f"{'workers':>11}{'broker':>8}{'loadgen':>8}{'other':>7}{'idle':>6}"
             f"{'wCPU ms/a':>10}  assignment",
             f"{'':<52}{'(CPU in cores, during the load)':>40}"]
    for r in res["runs"]:
        cores = r["cpu"]["cores"]
        wk = [v for k, v in sorted(cores.items()) if k.startswith("worker")]
        label = f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}, " \
                f"{r['partitions']} partitions"
        lines.append(
            f"{label:<26}{r['throughput']:>10.0f}{r['p50_ms']:>8.0f}{r['p99_ms']:>8.0f}"
            f"{'+'.join(f'{v:.2f}' for v in wk):>11}{cores.get('broker', float('nan')):>8.2f}"
            f"{cores['loadgen']:>8.2f}{r['cpu']['other']:>7.2f}{r['cpu']['idle']:>6.2f}"
            f"{r['worker_cpu_ms_per_action']:>10.2f}  "
            + " | ".join(",".join(map(str, a)) for a in r["assignment"]))
    lines.append("per worker, from its /metrics during the load: decisions/s, partition "
                 "batches/s, records per batch, decide ms and commit ms per batch, share of "
                 "the time spent deciding")
    for r in res["runs"]:
        for k, b in enumerate(r["batches"]):
            lines.append(
                f"  {r['workers']}w{r['partitions']}p worker{k + 1}: {b['decided_per_s']:>6.0f}/s "
                f"{b['batches_per_s']:>5.0f} batches/s x {b['batch_size']:>5.1f}  decide "
                f"{b['decide_ms_per_batch']:>5.1f} ms  commit {b['commit_ms_per_batch']:>5.1f} ms"
                f"  deciding {100 * b['deciding']:>3.0f}%")
    lines.append("CPU ms per action (workers, broker, load generator; the bench's total) and the "
                 "rate at which that total would fill every core of the box")
    for r in res["runs"]:
        cores, t = r["cpu"]["cores"], r["throughput"]
        w = sum(v for k, v in cores.items() if k.startswith("worker"))
        ours = sum(cores.values())
        lines.append(f"  {r['workers']}w{r['partitions']}p: workers {1000 * w / t:.2f}  broker "
                     f"{1000 * cores.get('broker', float('nan')) / t:.2f}  loadgen "
                     f"{1000 * cores['loadgen'] / t:.2f}  total {1000 * ours / t:.2f} ms -> "
                     f"{r['cpu']['machine_cores'] * t / ours:.0f} actions/s at "
                     f"{r['cpu']['machine_cores']:.0f} busy cores")
    one, two = _find(res, 1, c["partitions"]), _find(res, 2, c["partitions"])
    if one and two:
        lines.append(
            f"2 workers / 1 worker ({c['partitions']} partitions): actions/s "
            f"{two['throughput'] / one['throughput']:.2f}x, p50 "
            f"{two['p50_ms'] / one['p50_ms']:.2f}x, p99 {two['p99_ms'] / one['p99_ms']:.2f}x; "
            f"machine busy {one['cpu']['machine_busy']:.2f} -> {two['cpu']['machine_busy']:.2f} "
            f"of {one['cpu']['machine_cores']:.1f} cores; machine CPU per action "
            f"{one['machine_cpu_ms_per_action']:.2f} -> {two['machine_cpu_ms_per_action']:.2f} ms")
    sweep = [r for r in res["runs"] if r["workers"] == 1]
    if len(sweep) > 1 and one:
        lines.append("1 worker vs partitions: " + ", ".join(
            f"{r['partitions']}p {r['throughput'] / one['throughput']:.2f}x"
            for r in sorted(sweep, key=lambda r: r["partitions"])))
    if any(len(r.get("throughput_all", [])) > 1 for r in res["runs"]):
        lines.append("all rounds (actions/s): " + "; ".join(
            f"{r['workers']}w{r['partitions']}p "
            + "/".join(f"{t:.0f}" for t in r["throughput_all"]) for r in res["runs"]))
    if c.get("max_other") is not None:
        lines.append(f"runs discarded because other processes used more than "
                     f"{c['max_other']} cores: {c['discarded']}; kept anyway (out of tries): "
                     f"{c.get('kept_disturbed', 0)}")
    changed = [r for r in res["runs"] if r["assignment_after"] != r["assignment"]]
    if changed:
        lines.append("! assignment changed during a run (a rebalance fell into it): "
                     + ", ".join(f"{r['workers']}w{r['partitions']}p" for r in changed))
    codes: dict[str, int] = {}
    for r in res["runs"]:
        for k, v in r["codes"].items():
            codes[k] = codes.get(k, 0) + v
    lines.append(f"verdict codes (all runs): {codes}")
    return "\n".join(lines)


if __name__ == "__main__":      # python bench/scale.py [--bootstrap B] [--rounds N] ...
    import argparse

    import common

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--fleet", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--sweep", default="2,4,8", help="partition counts for 1 worker ('' skips)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-other", type=float, help="re-measure a run when foreign processes "
                    "used more CPU than this (cores) during it")
    args = ap.parse_args()
    print(f"machine: {common.machine()}")
    with common.broker(args.bootstrap) as bootstrap:
        result = run(bootstrap, seconds=args.seconds, window=args.window, n_fleet=args.fleet,
                     partitions=args.partitions, rounds=args.rounds, max_other=args.max_other,
                     sweep=tuple(int(x) for x in args.sweep.split(",") if x.strip()))
    common.save("scale", result)
    print(report(result), flush=True)
