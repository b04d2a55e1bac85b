"""Run real `holdgate worker` processes for end-to-end tests.

A worker is a child process started exactly as an operator would start it,
configured only through `HOLDGATE_*` variables, so these tests cover the CLI,
settings and Faust wiring as well as the decision logic.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from holdgate.settings import Settings

__all__ = ["WorkerProcess", "publish_raw", "read_topic", "fleet_bundle"]


class WorkerProcess:
    """A `holdgate worker` child; `wait_ready` proves it by getting a real verdict back."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env()}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "holdgate", "worker"], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until a probe action gets a worker-made verdict (any decision)."""
        from holdgate.client import Gate
        from holdgate.cli.fleet import wait_for_gate

        self.assert_alive()
        with Gate(bootstrap=self.settings.bootstrap, agent_id="support-bot-1",
                  settings=self.settings) as gate:
            if wait_for_gate(gate, timeout, progress=lambda _: self.assert_alive()):
                return
        raise TimeoutError(f"worker not ready after {timeout}s; log:\n{self.log()}")

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            if self._log:
                self._log.close()


def publish_raw(settings: Settings, request: Any, *, partition: int | None = None,
                timeout: float = 20.0) -> tuple[int, dict[str, Any]] | None:
    """Publish one action as a non-SDK runtime would; return (partition, verdict) or None.

    With partition None, kafka-python's default partitioner places the record
    (murmur2 of the key, like Java's), which is itself part of what is tested.
    """
    import orjson
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from holdgate.events import encode

    if isinstance(request, bytes):          # hand-made bytes, as another runtime would send
        value, parsed = request, orjson.loads(request)
        agent_id, request_id = parsed["agent_id"], parsed["request_id"]
    else:
        value, agent_id, request_id = encode(request), request.agent_id, request.request_id
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed")
    tps = [TopicPartition(settings.verdicts_topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    producer.send(settings.actions_topic, key=agent_id.encode(), value=value,
                  partition=partition)
    producer.flush()
    producer.close()
    found = None
    deadline = time.monotonic() + timeout
    while found is None and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            for r in recs:
                obj = orjson.loads(r.value)
                if obj["request_id"] == request_id:
                    found = (r.partition, obj)
    consumer.close()
    return found


def read_topic(settings: Settings, topic: str, *, committed: bool = True,
               timeout: float = 30.0) -> list[Any]:
    """Every record of `topic` up to its current end, read_committed by default."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed" if committed
                             else "read_uncommitted")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout}s")
            for recs in consumer.poll(timeout_ms=200, max_records=5000).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def assert_group_at_end(settings: Settings) -> None:
    """The worker group's committed offsets reached the end of every actions partition."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.app_id,
                          enable_auto_commit=False)
    try:
        tps = [TopicPartition(settings.actions_topic, p) for p in range(settings.partitions)]
        ends = probe.end_offsets(tps)
        for tp in tps:
            assert (probe.committed(tp) or 0) == ends[tp], (tp, probe.committed(tp), ends[tp])
    finally:
        probe.close(autocommit=False)


def fleet_bundle(dst: Path, n_agents: int, role: str = "support") -> tuple[Path, list[str]]:
    """The default bundle plus n agents of a role (a fleet bigger than the demo's)."""
    import json
    import shutil

    from holdgate.policies import default_bundle_path

    shutil.copytree(default_bundle_path(), dst, dirs_exist_ok=True)
    entities = json.loads((dst / "entities.json").read_text())
    team = {"support": "customer-ops", "data": "analytics", "billing": "finance"}[role]
    agents = [f"{role}-fleet-{i:04d}" for i in range(n_agents)]
    entities += [{"uid": {"type": "Agent", "id": a},
                  "attrs": {"role": role, "team": team, "owner": "tests@example.com"},
                  "parents": [{"type": "Role", "id": role}, {"type": "Team", "id": team}]}
                 for a in agents]
    (dst / "entities.json").write_text(json.dumps(entities))
    return dst, agents
