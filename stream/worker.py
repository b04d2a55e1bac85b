"""Start a worker: load and check everything first, refuse to run on anything invalid.

An invalid policy bundle, mismatched topics or an unusable state folder stop
the worker before it consumes a single action, with a message saying what to
fix: a gate that runs with a broken policy would be worse than one that is
down (agents fail closed on timeout either way).  Once running, SIGTERM or
SIGINT stops it within seconds whatever the broker's state.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
from pathlib import Path

from holdgate.keys import Signer
from holdgate.settings import Settings
from holdgate.stream.core import Snapshot
from holdgate.stream.runner import Runner
from holdgate.stream.state import StateStore

__all__ = ["build_snapshot", "build_runner", "run_worker", "instance_id"]

log = logging.getLogger("holdgate.worker")


def build_snapshot(settings: Settings) -> Snapshot:
    """The policy engine and signal model the settings name, loaded and validated."""
    from holdgate.models import SignalComputer
    from holdgate.models.baseline_model import BaselineModel
    from holdgate.policies import PolicyBundle, PolicyEngine

    bundle = PolicyBundle.load(settings.policy_path)
    model = BaselineModel.load(settings.model) if settings.model else None
    signals = SignalComputer(model=model, roles=bundle.agent_roles) \
        if settings.signals == "on" else None
    return Snapshot(engine=PolicyEngine(bundle), policy_version=bundle.version,
                    signals=signals, roles=bundle.agent_roles,
                    max_clock_skew=settings.max_clock_skew,
                    recovery_hold=settings.recovery_hold, idle_ttl=settings.idle_ttl,
                    partitions=settings.partitions)


def build_runner(settings: Settings, store: StateStore, snapshot: Snapshot | None = None,
                 worker_id: str | None = None, signer: Signer | None = None) -> Runner:
    """A runner for the settings; `signer` is the worker's key (replays decide unsigned)."""
    return Runner(snapshot=snapshot or build_snapshot(settings), store=store,
                  partitions=settings.partitions, verdict_ttl=settings.verdict_ttl,
                  signer=signer, max_action_bytes=settings.max_action_bytes,
                  worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                  approvals_topic=settings.approvals_topic, approvers=settings.approvers())


def instance_id(settings: Settings) -> str:
    """Static membership id: the same worker (host + state folder) after a restart."""
    if settings.instance_id:
        return settings.instance_id
    where = str(Path(settings.datadir).resolve())
    return f"{socket.gethostname()}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; raises HoldgateError subclasses on bad setup."""
    from holdgate.stream.kafka_driver import KafkaDriver
    from holdgate.stream.store import RocksStore
    from holdgate.topics import ensure_topics

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level.lower() != "debug":   # the client's INFO lines are not ours to show
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    signer = settings.signer()             # no key, no worker: never an unsigned verdict
    snapshot = build_snapshot(settings)
    ensure_topics(settings)
    store = RocksStore(Path(settings.datadir) / "state")
    try:
        runner = build_runner(settings, store, snapshot, signer=signer)
        driver = KafkaDriver(settings, runner, store, instance_id=instance_id(settings))
        asyncio.run(_serve(driver))
    finally:
        store.close()


async def _serve(driver: object) -> None:
    from holdgate.stream.kafka_driver import KafkaDriver

    assert isinstance(driver, KafkaDriver)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, driver.stop)
    log.warning("holdgate worker starting: %s -> %s (policy %s, model %s)",
                driver.settings.actions_topic, driver.settings.verdicts_topic,
                driver.runner.snapshot.policy_version, driver.runner.snapshot.model_version)
    await driver.run()
