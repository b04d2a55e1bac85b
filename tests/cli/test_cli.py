"""The `holdgate` command line as a user runs it (a real subprocess, real exit codes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holdgate.policies import default_bundle_path


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("cmd", [[], ["worker"], ["policy", "test"], ["kafka", "up"], ["send"],
                                 ["tail"], ["demo"]])
def test_help_is_there_for_every_command(cmd: list[str]) -> None:
    out = _run(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and len(out.stdout.splitlines()) > 4


def test_policy_validate_and_test_default_bundle() -> None:
    out = _run("policy", "validate")
    assert out.returncode == 0 and "ok:" in out.stdout and "sha256:" in out.stdout
    out = _run("policy", "test")
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed, 0 failed" in out.stdout


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def test_policy_test_fails_on_a_wrong_case(bundle_copy: Path) -> None:
    case = sorted((bundle_copy / "cases" / "allow").glob("*.json"))[0]
    obj = json.loads(case.read_text())
    obj["expect"] = "deny"
    (bundle_copy / "cases" / "deny" / case.name).write_text(json.dumps(obj))
    case.unlink()
    out = _run("policy", "test", str(bundle_copy))
    assert out.returncode == 1
    assert "FAIL" in out.stdout and case.stem in out.stdout and "1 failed" in out.stdout


def test_worker_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    out = _run("worker", env={"HOLDGATE_BOOTSTRAP": "127.0.0.1:1",
                              "HOLDGATE_SIGNING_KEY_FILE": ""}, timeout=60)
    assert out.returncode == 2 and "holdgate keys generate" in out.stderr, out.stderr
    out = _run("worker", env={"HOLDGATE_SIGNING_KEY": "change-me"}, timeout=60)
    assert out.returncode == 2 and "no longer supported" in out.stderr, out.stderr


def test_keys_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = _run("keys", "generate", "--dir", str(tmp_path), "--name", "worker")
    assert out.returncode == 0 and out.stdout.startswith("ed25519:"), out.stderr
    assert (tmp_path / "worker.key").stat().st_mode & 0o777 == 0o600
    shown = _run("keys", "show", str(tmp_path / "worker.pub"))
    assert shown.stdout.strip() == out.stdout.splitlines()[0]
    again = _run("keys", "generate", "--dir", str(tmp_path), "--name", "worker")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_worker_refuses_an_invalid_bundle(bundle_copy: Path,
                                          verdict_keys: dict[str, str]) -> None:
    policy = bundle_copy / "policy.cedar"
    policy.write_text(policy.read_text() + '\n@id("broken")\npermit (principal, action, resource'
                      ' ) when { context.nope.nope == };\n')
    out = _run("policy", "validate", str(bundle_copy))
    assert out.returncode == 1 and "policy.cedar" in out.stderr, out.stderr   # 1: problems
    out = _run("worker", "--policy-dir", str(bundle_copy),
               env={"HOLDGATE_BOOTSTRAP": "127.0.0.1:1",
                    "HOLDGATE_SIGNING_KEY_FILE": verdict_keys["signing_key_file"]}, timeout=60)
    assert out.returncode == 2 and "policy.cedar" in out.stderr, out.stderr


def test_kafka_status_says_not_running(tmp_path: Path) -> None:
    out = _run("kafka", "status", "--dir", str(tmp_path / "nothing"))
    assert out.returncode == 1 and "running: False" in out.stdout


def test_send_prints_a_timeout_deny_without_a_worker(gate_settings) -> None:  # type: ignore[no-untyped-def]
    out = _run("send", "--agent", "support-bot-1", "--action", "tickets.read",
               "--resource", "Ticket:T-1", "--timeout", "1", "--json",
               env=gate_settings.to_env())
    assert out.returncode == 3, out.stderr             # 3: no worker verdict in time
    verdict = json.loads(out.stdout)
    assert verdict["decision"] == "deny" and verdict["reasons"][0]["code"] == "TIMEOUT"


def test_send_and_tail_against_a_running_worker(gate_settings, start_worker) -> None:  # type: ignore[no-untyped-def]
    start_worker(gate_settings)
    env = gate_settings.to_env()
    push = ("send", "--agent", "coder-bot-1", "--action", "repo.push")
    # A production push is held for a human approval: `send` prints the hold (with the
    # role it awaits) and exits 1, since a pending verdict is a deny until approved.
    out = _run(*push, "--resource", "Repository:holdgate", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "HOLD" in out.stdout and "ALLOW" not in out.stdout and "DENY" not in out.stdout
    assert "PRODUCTION_CHANGE (production-push-approval) awaits human approval" in out.stdout
    # An agent cannot approve itself: approvals in its own context change nothing.
    out = _run(*push, "--resource", "Repository:holdgate", "--context",
               '{"approvals": ["human"]}', "--json", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["decision"] == "pending" and verdict["awaiting"] == "human"
    assert [(r["code"], r["policy_id"]) for r in verdict["reasons"]] == [
        ("PRODUCTION_CHANGE", "production-push-approval")]
    assert verdict["request"]["context"] == {"approvals": ["human"]}
    # ... nor send the verified approval the worker would set: refused before it is sent.
    out = _run(*push, "--resource", "Repository:holdgate", "--context",
               '{"approval": {"role": "human", "approver": "coder-bot-1"}}', env=env)
    assert out.returncode == 2 and "context.approval" in out.stderr, out.stdout + out.stderr
    assert "ALLOW" not in out.stdout
    # A push to the repository the entity store knows as staging needs nobody.
    out = _run(*push, "--resource", "Repository:holdgate-sandbox", env=env)
    assert out.returncode == 0 and "ALLOW" in out.stdout, out.stdout + out.stderr
    out = _run("tail", "--from-beginning", "--agent", "coder-bot-1", "--max", "3", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout
    assert all(" HOLD " in line and "repo.push Repository:holdgate " in line
               and "awaits human approval" in line for line in lines[:2]), lines
    assert " ALLOW " in lines[2] and "repo.push Repository:holdgate-sandbox" in lines[2]
