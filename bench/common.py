"""Shared bench plumbing: a broker, worker processes, a synthetic fleet, percentiles."""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from holdgate.policies import default_bundle_path
from holdgate.settings import Settings
from holdgate.topics import ensure_topics

ROOT = Path(__file__).resolve().parent
#: How a bench starts a holdgate child process.  ``-P``: never put the working
#: directory on ``sys.path``; under `./dev bench` that is the repo root, whose source
#: `holdgate/` folder (without stream/, models/, policies/, which only the installed
#: package maps in) would shadow the installed package.
HOLDGATE = [sys.executable, "-P", "-m", "holdgate"]
RESULTS = ROOT / "results"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(values) * 1000 if values else float("nan"),
            "p99_ms": pct(values, 0.99) * 1000, "n": len(values)}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"Python {platform.python_version()}"


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "at": time.time(), **data}, indent=2))
    return path


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given broker, or a fresh local one on free ports (stopped afterwards)."""
    if bootstrap:
        yield bootstrap
        return
    from holdgate.cli.localkafka import LocalKafka

    tmp = Path(tempfile.mkdtemp(prefix="hg-bench-kafka-"))
    kafka = LocalKafka(workdir=tmp)
    print(f"starting a local Kafka for the bench on {kafka.bootstrap} ...", flush=True)
    try:
        yield kafka.start(timeout=120)
    finally:
        kafka.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def fleet_bundle(n_agents: int) -> tuple[Path, list[str]]:
    """The default bundle plus n synthetic support agents: a fleet at human-ish rates each."""
    dst = Path(tempfile.mkdtemp(prefix="hg-bench-bundle-"))
    shutil.copytree(default_bundle_path(), dst, dirs_exist_ok=True)
    entities = json.loads((dst / "entities.json").read_text())
    agents = [f"bench-agent-{i:05d}" for i in range(n_agents)]
    entities += [{"uid": {"type": "Agent", "id": a},
                  "attrs": {"role": "support", "team": "customer-ops", "owner": "bench"},
                  "parents": [{"type": "Role", "id": "support"},
                              {"type": "Team", "id": "customer-ops"}]} for a in agents]
    (dst / "entities.json").write_text(json.dumps(entities))
    return dst, agents


def bench_keys() -> dict[str, str]:
    """A throwaway Ed25519 pair: bench workers sign like real ones (signing is measured)."""
    from holdgate.keys import generate_keypair

    private, public, _ = generate_keypair(tempfile.mkdtemp(prefix="hg-bench-keys-"), "worker")
    return {"signing_key_file": str(private), "trusted_keys": str(public)}


def bench_settings(bootstrap: str, tag: str, **over: object) -> Settings:
    uid = uuid.uuid4().hex[:6]
    base = dict(bootstrap=bootstrap, app_id=f"bench-{tag}-{uid}",
                actions_topic=f"bench.{tag}.{uid}.actions",
                verdicts_topic=f"bench.{tag}.{uid}.verdicts",
                deadletter_topic=f"bench.{tag}.{uid}.deadletter", partitions=4,
                datadir=tempfile.mkdtemp(prefix=f"hg-bench-{tag}-"), **bench_keys(),
                max_clock_skew=60.0)
    base.update(over)
    settings = Settings(**base).validated()  # type: ignore[arg-type]
    ensure_topics(settings)
    return settings


ECHOES = {"bare": "echo_bare.py", "faust": "echo_faust.py"}


@contextmanager
def worker(settings: Settings, *, echo: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A holdgate worker, or one of the echo floors ("bare" aiokafka, "faust")."""
    cmd = [sys.executable, str(ROOT / ECHOES[echo])] if echo else \
        [*HOLDGATE, "worker"]
    log = open(Path(settings.datadir) / "worker.log", "wb")
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
