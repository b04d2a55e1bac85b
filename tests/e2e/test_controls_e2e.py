"""The kill switch on the real broker: revoke and suspend from the CLI, signed, durable."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kafka import KafkaProducer

from holdgate.client import Gate
from holdgate.controls import Control
from holdgate.keys import Signer, generate_keypair
from holdgate.settings import Settings
from holdgate.signing import sign_headers
from workers import WorkerProcess


@pytest.fixture
def operator(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate_keypair(tmp_path / "op", "operator")
    return private, public


@pytest.fixture
def controlled(make_settings: Callable[..., Settings], operator: tuple[Path, Path],
               start_worker: Callable[..., WorkerProcess]) -> tuple[Settings, WorkerProcess]:
    from holdgate.topics import ensure_topics

    settings = make_settings(operator_keys=str(operator[1]), operator_key_file=str(operator[0]))
    ensure_topics(settings)
    return settings, start_worker(settings)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **settings.to_env()})


def _read(gate: Gate, agent: str = "audit-bot-1") -> Any:
    return gate.check(action="records.read", agent_id=agent, timeout=5,
                      resource={"type": "Record", "id": "web-analytics-2024"})


def _until(gate: Gate, code: str, agent: str = "audit-bot-1", within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        v = _read(gate, agent)
        if code in v.codes or (code == "PERMITTED" and v.allowed):
            return v
        assert time.monotonic() < deadline, (code, v.codes)
        time.sleep(0.05)


def test_revoke_applies_within_a_second_survives_restart_and_undo_restores(
        controlled: tuple[Settings, WorkerProcess],
        start_worker: Callable[..., WorkerProcess]) -> None:
    settings, worker = controlled
    with Gate(bootstrap=settings.bootstrap, settings=settings) as gate:
        assert _read(gate).allowed
        out = _cli(settings, "revoke", "audit-bot-1", "--reason", "prompt injection")
        assert out.returncode == 0, out.stderr
        published = time.time()
        first = _until(gate, "REVOKED")
        assert first.decided_at - published < 1.0, first.decided_at - published
        assert "prompt injection" in first.reasons[0].message
        assert "REVOKED" not in _read(gate, "support-bot-1").codes  # others carry on
        worker.stop()
        start_worker(settings)
        assert _read(gate).codes == ["REVOKED"]                     # after a restart too
        out = _cli(settings, "revoke", "audit-bot-1", "--undo")
        assert out.returncode == 0, out.stderr
        _until(gate, "PERMITTED")
    listed = _cli(settings, "controls")
    assert listed.returncode == 0 and "0 in force" in listed.stdout, listed.stdout


def test_suspend_by_action_glob_and_unsigned_controls_change_nothing(
        controlled: tuple[Settings, WorkerProcess]) -> None:
    settings, _ = controlled
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    forged = Control(kind="revoke", agent="audit-bot-1", reason="forged").to_bytes()
    producer.send(settings.control_topic, key=b"revoke|agent=audit-bot-1|role=*|action=*",
                  value=forged)                                              # unsigned
    stranger = Signer.generate()
    producer.send(settings.control_topic, key=b"revoke|agent=audit-bot-1|role=*|action=*",
                  value=forged, headers=list(sign_headers(stranger, forged)))  # not an operator
    producer.flush()
    producer.close()
    with Gate(bootstrap=settings.bootstrap, settings=settings) as gate:
        out = _cli(settings, "suspend", "--action", "records.*", "--role", "data")
        assert out.returncode == 0, out.stderr
        denied = gate.check(action="records.read", agent_id="data-bot-1", timeout=5,
                            resource={"type": "Record", "id": "web-analytics-2024"})
        deadline = time.monotonic() + 10
        while "SUSPENDED" not in denied.codes and time.monotonic() < deadline:
            time.sleep(0.05)
            denied = gate.check(action="records.read", agent_id="data-bot-1", timeout=5,
                                resource={"type": "Record", "id": "web-analytics-2024"})
        assert denied.codes == ["SUSPENDED"] and "records.*" in denied.reasons[0].message
        assert _read(gate).allowed        # an auditor reading records: another role
    listed = _cli(settings, "controls")
    assert "1 in force" in listed.stdout and "2 record(s) ignored" in listed.stdout, \
        listed.stdout


def test_control_commands_need_an_operator_key(make_settings: Callable[..., Settings]) -> None:
    out = _cli(make_settings(), "revoke", "someone")
    assert out.returncode == 2 and "operator key" in out.stderr
