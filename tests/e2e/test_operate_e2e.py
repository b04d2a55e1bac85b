"""Operating a real worker: metrics, health and readiness endpoints, its log, SIGTERM.

Everything goes through a real `holdgate worker` process configured only by
HOLDGATE_* variables, on the session broker or (for outages) on a broker of
the test's own that it stops and starts.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from workers import WorkerProcess

from holdgate.cli.localkafka import LocalKafka, free_port
from holdgate.settings import Settings

pytestmark = pytest.mark.kafka

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http(port: int, path: str, timeout: float = 3.0) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, repr(exc)


def scrape(port: int) -> Samples:
    status, text = http(port, "/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def wait_ready(worker: WorkerProcess, port: int,
               timeout: float = 90.0) -> list[tuple[int, dict[str, Any]]]:
    """Poll /readyz until 200; returns every answer seen (503s carry their reasons)."""
    seen: list[tuple[int, dict[str, Any]]] = []

    def ready() -> bool:
        worker.assert_alive()
        status, body = http(port, "/readyz")
        if status is not None:
            seen.append((status, json.loads(body)))
        return status == 200

    wait_until(ready, timeout, f"/readyz 200; log:\n{worker.log()}")
    return seen


def test_metrics_health_and_readiness_after_known_decisions(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from kafka import KafkaProducer
    from prometheus_client import CollectorRegistry, generate_latest

    from holdgate.client import Gate
    from holdgate.client.metrics import register
    from holdgate.topics import ensure_topics

    port = free_port()
    settings = make_settings(web_port=port)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        answers = wait_ready(worker, port)
        for status, body in answers:               # not ready yet: says why, per partition
            assert status in (200, 503) and body["ready"] is (status == 200)
            if status == 503:
                assert body["reasons"]
        ready = answers[-1][1]
        assert ready == {"ready": True, "reasons": [],
                         "partitions": {"0": "ready", "1": "ready"}}
        status, body = http(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert http(port, "/nope")[0] == 404

        # A known sequence: 3 allows, 2 denies with known codes, 1 undecodable record.
        with Gate(bootstrap=settings.bootstrap, settings=settings) as gate:
            verdicts = [gate.check(agent_id="support-bot-1", action="tickets.read",
                                   resource={"type": "Ticket", "id": f"T-{i}"}, timeout=20)
                        for i in range(3)]
            verdicts.append(gate.check(agent_id="rogue-agent-9", action="records.read",
                                       resource={"type": "Record", "id": "hr-salaries"},
                                       timeout=20))
            verdicts.append(gate.check(agent_id="support-bot-1", action="customers.export",
                                       resource={"type": "Customer", "id": "cus-1001"},
                                       timeout=20))
            sdk = gate.metrics
            registry = CollectorRegistry()
            register(gate, registry, name="e2e")
            exported = generate_latest(registry).decode()
        assert [v.decision for v in verdicts] == ["allow"] * 3 + ["deny"] * 2
        assert verdicts[3].codes == ["UNKNOWN_AGENT"]
        assert verdicts[4].codes == ["SENSITIVE_DATA"]
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
        producer.send(settings.actions_topic, key=b"x", value=b"\xffnot json", partition=0)
        producer.flush()
        producer.close()

        # The SDK's own view of the same five checks.
        assert sdk.checks == {"allow": 3, "deny": 2, "pending": 0}
        assert sdk.local_denies == {} and sdk.hold.count == 5
        assert 'holdgate_sdk_checks_total{gate="e2e",outcome="allow"} 3.0' in exported
        assert 'holdgate_sdk_hold_seconds_count{gate="e2e"} 5.0' in exported

        samples = wait_until(lambda: (s := scrape(port)) and value(
            s, "holdgate_deadletters_total", code="MALFORMED") == 1 and s,
            30, "the dead letter counted")
        assert value(samples, "holdgate_decisions_total", decision="allow") == 3
        assert value(samples, "holdgate_decisions_total", decision="deny") == 2
        assert value(samples, "holdgate_decisions_total", decision="pending") == 0
        reasons = {dict(labels)["code"]: v for (name, labels), v in samples.items()
                   if name == "holdgate_decision_reasons_total"}
        assert reasons == {"PERMITTED": 3, "UNKNOWN_AGENT": 1, "SENSITIVE_DATA": 1}
        assert value(samples, "holdgate_decision_reasons_total", decision="deny",
                     code="SENSITIVE_DATA") == 1
        # every action record (the undecodable one too) once, from append to commit
        assert value(samples, "holdgate_decision_latency_seconds_count") == 6
        assert value(samples, "holdgate_batch_size_sum") == 6
        assert value(samples, "holdgate_aborted_transactions_total", cause="error") == 0
        assert value(samples, "holdgate_ready") == 1 and value(samples, "holdgate_broker_up") == 1
        for p in ("0", "1"):
            assert value(samples, "holdgate_partition_ready", partition=p) == 1
            assert value(samples, "holdgate_consumer_lag_records", partition=p) == 0
            assert value(samples, "holdgate_restore_seconds", partition=p) is not None
        info = [dict(labels) for (name, labels), _ in samples.items()
                if name == "holdgate_worker_info"]
        assert len(info) == 1 and info[0]["policy_version"].startswith("sha256:")
        samples = wait_until(lambda: (s := scrape(port)) and value(
            s, "holdgate_state_agents", partition="0") is not None and s, 40,
            "state size gauge")
        agents = sum(v for (name, _), v in samples.items() if name == "holdgate_state_agents")
        assert agents == 2                        # support-bot-1 and rogue-agent-9
    finally:
        assert worker.stop() == 0
    log = worker.log_path.read_text()
    # A healthy start: no ERROR, no control characters, the ready line at INFO.
    assert " ERROR " not in log, log
    assert not any(c in log for c in "\r\x1b\x00"), log
    assert "INFO holdgate.lifecycle: ready: deciding actions partitions [0, 1]" in log, log
    assert "INFO holdgate.lifecycle: stopping: SIGTERM received" in log, log


# ------------------------------------------------------------- a broker that goes away

@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(workdir=tmp_path / "kafka")
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def _crash(broker: LocalKafka) -> None:
    """SIGKILL the broker (no goodbye to its clients) and reap it, so that it can start again."""
    pid = broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)                 # our child: LocalKafka started it in this process
    except ChildProcessError:
        pass


def _publish_until(settings: Settings, stop: threading.Event) -> None:
    """Keep a trickle of actions coming, so that a batch is in flight when the broker dies."""
    from kafka import KafkaProducer

    from holdgate.events import ActionRequest, encode

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=5,
                             max_block_ms=500, request_timeout_ms=2000)
    i = 0
    while not stop.is_set():
        request = ActionRequest.create(agent_id=f"support-bot-{i % 3 + 1}",
                                       action="tickets.read",
                                       resource={"type": "Ticket", "id": f"T-{i}"})
        try:
            producer.send(settings.actions_topic, key=request.agent_id.encode(),
                          value=encode(request))
        except Exception:  # noqa: BLE001 - the broker is being taken away on purpose
            pass
        i += 1
        time.sleep(0.005)
    try:
        producer.close(timeout=0)
    except Exception:  # noqa: BLE001
        pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_broker_outage_is_logged_once_and_sigterm_exits_fast(
        own_broker: LocalKafka, tmp_path: Path, verdict_keys: dict[str, str]) -> None:
    from holdgate.topics import ensure_topics

    port = free_port()
    settings = Settings(bootstrap=own_broker.bootstrap, partitions=2, web_port=port,
                        datadir=str(tmp_path / "worker"),
                        signing_key_file=verdict_keys["signing_key_file"],
                        trusted_keys=verdict_keys["trusted_keys"]).validated()
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        wait_ready(worker, port)
        # 1. The broker goes away (SIGKILL: no goodbye) with actions in flight.
        stop_load = threading.Event()
        load = threading.Thread(target=_publish_until, args=(settings, stop_load), daemon=True)
        load.start()
        time.sleep(2)
        before = len(worker.log_path.read_text().splitlines())
        _crash(own_broker)
        stop_load.set()
        time.sleep(10)
        outage = worker.log_path.read_text().splitlines()[before:]
        # Once, then bounded: not the clients' dozens of lines a second.
        assert sum("unreachable (" in line for line in outage) == 1, outage
        assert len(outage) < 40, "\n".join(outage)
        status, body = http(port, "/readyz")
        assert status == 503 and any("broker unreachable" in r
                                     for r in json.loads(body)["reasons"]), body
        assert value(scrape(port), "holdgate_broker_up") == 0
        # 2. It comes back: said once, and the worker decides again.
        own_broker.start(timeout=120)
        wait_until(lambda: "reachable again" in worker.log_path.read_text(), 90,
                   "the recovery line")
        wait_ready(worker, port)
        # 3. It goes away again; SIGTERM must still end the worker at once, cleanly.
        _crash(own_broker)
        time.sleep(3)
        assert worker.proc is not None
        t0 = time.monotonic()
        os.killpg(worker.proc.pid, signal.SIGTERM)
        code = worker.proc.wait(15)
        took = time.monotonic() - t0
    finally:
        worker.stop(signal.SIGKILL)
    log = worker.log_path.read_text()
    assert code == 0 and took < 10, (code, took, log[-3000:])
    assert "stopping: SIGTERM received while the broker has been unreachable" in log, log
    assert "Traceback" not in log.split("stopping: SIGTERM")[-1], log[-3000:]


def test_a_second_sigterm_exits_at_once(make_settings: Callable[..., Settings],
                                        tmp_path: Path) -> None:
    """The second signal does not wait for anything (exit code 128 + signal)."""
    settings = make_settings()
    env = {**os.environ, **settings.to_env()}
    proc = subprocess.Popen([sys.executable, "-c", _SECOND_SIGNAL], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"armed", proc.stdout.read()
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(5) == 128 + signal.SIGTERM


# A driver whose stop() never ends anything: only the second signal can end it.
_SECOND_SIGNAL = """
import asyncio, sys
from holdgate.stream.worker import _Stopper

class Broker:
    down_since = None

class Stuck:
    broker = Broker()
    def stop(self):
        pass

async def main():
    _Stopper(Stuck(), asyncio.get_running_loop()).install()
    print("armed", flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""
