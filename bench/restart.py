"""Fail-closed outage after a SIGKILL, against the size of the state changelog.

History grows in steps (many agents acting, so the changelog grows); after each
step the worker is SIGKILLed and started again at once.  The outage is the time
from the kill to the first verdict a probe check receives in time (its own
timeout 1 s, retried): that is how long agents are held and denied.  With the
local RocksDB store and its changelog checkpoint, a restart restores only the
tail written since the last commit, so the outage should stay flat as history
grows.  The same is measured for a worker started on an EMPTY state folder
(a new machine), which must read the whole compacted changelog.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from common import HOLDGATE, bench_settings, fleet_bundle
from kafka import KafkaConsumer, TopicPartition

from holdgate.client import Gate
from holdgate.events import ActionRequest, encode
from holdgate.routing import partition_for
from holdgate.settings import Settings


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    import os

    return subprocess.Popen([*HOLDGATE, "worker"],
                            env={**os.environ, **settings.to_env()},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


async def _publish(settings: Settings, agents: list[str], n: int, t0: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            agent = agents[i % len(agents)]
            req = ActionRequest.create(agent_id=agent, action="tickets.read",
                                       resource={"type": "Ticket", "id": f"T-{i % 997}"},
                                       occurred_at=time.time())
            futures.append(await producer.send(settings.actions_topic, encode(req),
                                               key=agent.encode(),
                                               partition=partition_for(agent, 4)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _lag(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.app_id,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(settings.actions_topic, p) for p in range(4)]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close(autocommit=False)


def _changelog_size(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap)
    try:
        tps = [TopicPartition(settings.changelog_topic, p) for p in range(4)]
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps)
    finally:
        consumer.close()


def _outage(settings: Settings, gate: Gate, agent: str, since: float) -> float:
    """Seconds from `since` to the first worker verdict a 1 s check gets."""
    while True:
        v = gate.check(action="tickets.read", agent_id=agent, timeout=1.0,
                       resource={"type": "Ticket", "id": "probe"})
        if v.policy_version != "local":
            return time.monotonic() - since
        if time.monotonic() - since > 120:
            raise SystemExit("worker did not come back within 120 s")


def run(bootstrap: str, *, steps: tuple[int, ...] = (20_000, 60_000, 120_000),
        agents: int = 5000) -> dict[str, Any]:
    bundle, fleet = fleet_bundle(agents)
    settings = bench_settings(bootstrap, "restart", policy_dir=str(bundle),
                              session_timeout=10.0, max_clock_skew=600.0)
    log = Path(settings.datadir) / "worker.log"
    rows = []
    proc = _start(settings, log)
    published = 0
    with Gate(bootstrap=bootstrap, settings=settings) as gate:
        _outage(settings, gate, fleet[0], time.monotonic())
        for total in steps:
            print(f"  growing history to {total:,} actions ...", flush=True)
            asyncio.run(_publish(settings, fleet, total - published, time.time()))
            published = total
            while _lag(settings) > 0:
                time.sleep(0.5)
            changelog = _changelog_size(settings)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = time.monotonic()
            proc = _start(settings, log)
            outage = _outage(settings, gate, fleet[1], killed)
            print(f"  changelog {changelog:,} records: outage {outage:.2f}s", flush=True)
            rows.append({"actions": total, "changelog_records": changelog,
                         "outage_s": outage})
        # a new machine: the same group, an empty state folder
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fresh = dataclasses.replace(settings, datadir=tempfile.mkdtemp(prefix="hg-fresh-"))
        killed = time.monotonic()
        proc = _start(fresh, log)
        cold = _outage(fresh, gate, fleet[2], killed)
        print(f"  empty state folder: outage {cold:.2f}s", flush=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return {"agents": agents, "rows": rows, "cold_outage_s": cold,
            "session_timeout_s": settings.session_timeout}


def report(res: dict[str, Any]) -> str:
    lines = [f"restart: SIGKILL then immediate restart, {res['agents']:,} agents "
             f"(static membership; session timeout {res['session_timeout_s']:.0f}s)",
             f"{'actions':>10} {'changelog records':>18} {'fail-closed outage':>19}"]
    for r in res["rows"]:
        lines.append(f"{r['actions']:>10,} {r['changelog_records']:>18,} "
                     f"{r['outage_s']:>18.2f}s")
    lines.append(f"new machine (empty state folder, full changelog restore): "
                 f"{res['cold_outage_s']:.2f}s")
    return "\n".join(lines)
