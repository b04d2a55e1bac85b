"""The CLI when something is missing: Kafka down, no worker, no verdict in time.

Each answer must be one line saying what is wrong and what to do, quickly, with
the documented exit code (holdgate.cli.preflight): 3 unavailable, 1 denied by
the gate, 0 allowed.  Real subprocesses, real exit codes, the real broker.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holdgate.cli.localkafka import free_port
from holdgate.settings import Settings


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})},
                         check=False)
    return out, time.monotonic() - t0


@pytest.fixture
def down_env(tmp_path: Path, verdict_keys: dict[str, str]) -> dict[str, str]:
    """Everything configured, but the bootstrap names a port nothing listens on."""
    return {"HOLDGATE_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "HOLDGATE_SIGNING_KEY_FILE": verdict_keys["signing_key_file"],
            "HOLDGATE_TRUSTED_KEYS": verdict_keys["trusted_keys"],
            "HOLDGATE_DATADIR": str(tmp_path / "worker")}


SEND = ("send", "--agent", "support-bot-1", "--action", "tickets.read", "--resource", "Ticket:T-1")


@pytest.mark.parametrize("cmd", [("worker",), ("tail",), ("demo",), SEND],
                         ids=["worker", "tail", "demo", "send"])
def test_kafka_down_is_one_line_exit_3_within_seconds(cmd: tuple[str, ...],
                                                       down_env: dict[str, str]) -> None:
    out, took = _run(*cmd, env=down_env)
    where = down_env["HOLDGATE_BOOTSTRAP"]
    assert out.returncode == 3, out.stdout + out.stderr
    assert took < 15, f"{cmd[0]} took {took:.1f}s to notice Kafka is down"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"cannot reach Kafka at {where} (connection refused)" in lines[0]
    assert "holdgate kafka up" in lines[0] and "HOLDGATE_BOOTSTRAP" in lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert "worker running" not in out.stdout + out.stderr   # not blamed on the worker


def test_a_listener_that_is_not_kafka_within_the_connect_timeout(
        down_env: dict[str, str]) -> None:
    """TCP connects, nothing answers: said so, within --connect-timeout (given late)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        where = f"127.0.0.1:{silent.getsockname()[1]}"
        out, took = _run("tail", "--connect-timeout", "1", "--bootstrap", where, env=down_env)
    assert out.returncode == 3, out.stderr
    assert took < 10
    assert f"Kafka at {where} accepts connections but answered no metadata request " \
           "within 1s" in out.stderr
    assert "HOLDGATE_SECURITY_PROTOCOL" in out.stderr and len(out.stderr.splitlines()) == 1


def _verdict(decision: str, policy_version: str = "sha256:abc") -> Any:
    from holdgate.events import Verdict

    return Verdict(request_id="00000000-0000-4000-8000-000000000001", agent_id="a",
                   decision=decision, reasons=(), policy_version=policy_version,
                   action_digest="sha256:00", decided_at=1.0, expires_at=2.0)


def test_send_exit_codes_tell_a_gate_deny_from_no_verdict() -> None:
    from holdgate.cli.client_cmds import send_exit_code

    assert send_exit_code(_verdict("allow")) == 0
    assert send_exit_code(_verdict("deny")) == 1          # the worker said no
    assert send_exit_code(_verdict("pending")) == 1       # held: a deny until approved
    assert send_exit_code(_verdict("deny", "local")) == 3  # TIMEOUT/UNAVAILABLE/INVALID


def test_send_without_a_worker_exits_3_and_says_why(gate_settings: Settings) -> None:
    out, _ = _run(*SEND, "--timeout", "1", "--json", env=gate_settings.to_env())
    assert out.returncode == 3, out.stdout + out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["decision"] == "deny" and verdict["reasons"][0]["code"] == "TIMEOUT"
    assert verdict["policy_version"] == "local"
    assert out.stderr.strip().startswith("error: no verdict from the gate (TIMEOUT)")
    assert "holdgate worker" in out.stderr


def test_send_help_documents_the_exit_codes() -> None:
    out, _ = _run("send", "--help")
    text = " ".join(out.stdout.split())
    assert "Exit codes: 0 allowed; 1 denied or held by the gate" in text
    assert "3 no verdict" in text and "2 usage or configuration error" in text


def test_demo_tells_no_worker_from_kafka_down(gate_settings: Settings) -> None:
    out, took = _run("demo", "--wait", "2", env=gate_settings.to_env())
    assert out.returncode == 3, out.stdout + out.stderr
    assert took < 30
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot reach Kafka" not in err
    assert f"Kafka at {gate_settings.bootstrap} answers, but no holdgate worker decided a " \
           "probe action within 2s" in err
    assert "start `holdgate worker`" in err


_FIRST_DENY = re.compile(r"^(?P<agent>\S+)\s+\d+\s+\d+\s+#\d+ at (?P<ms>\d+) ms", re.MULTILINE)


def test_demo_clocks_start_after_the_wait_and_its_probe_is_no_tour_agent(
        gate_settings: Settings, start_worker: Callable[..., Any]) -> None:
    """The demo starts before the worker: waiting must not show up in its timings."""
    from workers import read_topic

    from holdgate.cli.fleet import POLICY_TOUR
    from holdgate.events import decode_verdict

    demo = subprocess.Popen([sys.executable, "-m", "holdgate", "demo", "--skip-burst"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **gate_settings.to_env()})
    try:
        time.sleep(3)                      # the demo is waiting for a worker by now
        start_worker(gate_settings, wait=False)
        stdout, stderr = demo.communicate(timeout=150)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, stdout + stderr
    firsts = {m["agent"]: int(m["ms"]) for m in _FIRST_DENY.finditer(stdout)}
    assert "support-bot-1" in firsts, stdout
    # its 3rd tour step (a PII export) is denied well under a second into the tour;
    # with the clock started before the wait it read 3 s and more
    assert firsts["support-bot-1"] < 2500, stdout
    tour_agents = {step.agent for step in POLICY_TOUR}
    probes = [v for v in map(decode_verdict, (r.value for r in read_topic(
        gate_settings, gate_settings.verdicts_topic)))
        if (v.request or {}).get("resource", {}).get("id") == "probe"]
    assert probes and not [v for v in probes if v.agent_id in tour_agents], \
        [(v.agent_id, v.codes) for v in probes]
