"""Where a loaded worker spends its time: a py-spy profile under the open-window load.

Starts a worker (real Kafka, signing on), drives it with the same load as the
hold bench (`hold._open_window`: N checks in flight through one AsyncGate) and
records the worker with ``py-spy record --format raw`` (collapsed stacks, one
line per stack with its sample count).  The raw profile is kept under
``bench/profiles/`` (it is the evidence an optimisation cites); the summary
printed here groups samples by what they were doing: decoding, signals,
Cedar, sealing (encode + Ed25519), the Kafka client, asyncio and the rest.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import bench_settings, fleet_bundle, worker
from hold import _open_window, _wait_ready

from holdgate.client import Gate

PROFILES = Path(__file__).resolve().parent / "profiles"

#: (area, substrings of a frame "function (file:line)") checked in order, innermost first.
AREAS = (
    ("seal: Ed25519 sign", ("sign (", "ed25519")),
    ("policy: Cedar", ("cedarpy", "is_authorized")),
    ("policy: engine (cache, projection)", ("policies/engine.py", "policies/projection")),
    ("signals", ("models/",)),
    ("decode", ("stream/edges.py:decode", "holdgate/events.py", "wire_json", "cedar_values")),
    ("seal: encode", ("stream/edges.py", "orjson")),
    ("state store", ("stream/state.py", "stream/store.py", "rocksdict", "stream/marks.py")),
    ("decision core", ("stream/core.py", "stream/runner.py", "stream/holds.py")),
    ("kafka client", ("aiokafka", "kafka/")),
    ("asyncio / event loop", ("asyncio", "selectors", "uvloop")),
)


def _area(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):                 # innermost frame that names an area
        for area, needles in AREAS:
            if any(n in frame for n in needles):
                return area
    return "other"


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    by_area: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        by_area[_area(stack)] += n
        by_self[stack.split(";")[-1]] += n
    return {"samples": total,
            "areas": {a: round(100.0 * n / max(total, 1), 1) for a, n in by_area.most_common()},
            "self": [(f, round(100.0 * n / max(total, 1), 1)) for f, n in
                     by_self.most_common(top)]}


def run(bootstrap: str, *, seconds: float = 20.0, window: int = 256,
        n_fleet: int = 1000, tag: str | None = None) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    bundle, fleet = fleet_bundle(n_fleet)
    settings = bench_settings(bootstrap, "profile", policy_dir=str(bundle))
    PROFILES.mkdir(exist_ok=True)
    out_file = PROFILES / f"worker-{tag or time.strftime('%Y%m%d-%H%M%S')}.txt"
    with worker(settings) as proc:
        with Gate(bootstrap=bootstrap, agent_id=fleet[0], settings=settings) as g:
            _wait_ready(g)
        load: dict[str, Any] = {}

        def drive() -> None:
            load.update(asyncio.run(_open_window(settings, fleet, seconds + 4, window)))

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(2.0)                             # past the warm-up
        print(f"[profile] py-spy record -p {proc.pid} for {seconds:.0f}s ...", flush=True)
        subprocess.run([spy, "record", "-p", str(proc.pid), "-d", str(int(seconds)),
                        "-f", "raw", "-o", str(out_file), "-r", "200", "--nonblocking"],
                       check=True, capture_output=True)
        driver.join()
    res = summarise(out_file)
    res.update(profile=str(out_file.relative_to(PROFILES.parent.parent)),
               throughput=load.get("throughput"), p50_ms=load.get("p50"),
               window=window, seconds=seconds)
    return res


def report(res: dict[str, Any]) -> str:
    lines = [f"worker profile ({res['samples']} samples, {res['throughput'] or 0:,.0f} "
             f"actions/s with {res['window']} in flight) -> {res['profile']}",
             "  share of samples by area:"]
    lines += [f"    {area:<36} {share:5.1f} %" for area, share in res["areas"].items()]
    lines.append("  top frames by own time:")
    lines += [f"    {share:5.1f} %  {frame[:110]}" for frame, share in res["self"]]
    return "\n".join(lines)
