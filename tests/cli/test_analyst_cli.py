"""`holdgate backtest` and `holdgate fit` as an analyst runs them (subprocess, exit codes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from holdgate.events import ActionRequest, encode
from holdgate.policies import default_bundle_path

T0 = 1_790_000_000.0
AMOUNTS = [10_000, 35_000, 40_000, 45_000, 10_000, 70_000]   # refunds of pay-5002 (2,500.00)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    path, ids = tmp_path / "history.jsonl", []
    with open(path, "wb") as f:
        for i, amount in enumerate(AMOUNTS):
            req = ActionRequest.create(agent_id="billing-bot-1", action="payments.refund",
                                       resource={"type": "Payment", "id": "pay-5002"},
                                       context={"amount_cents": amount},
                                       occurred_at=T0 + 60 * i,
                                       request_id=str(uuid.UUID(int=i + 1)))
            ids.append(req.request_id)
            f.write(encode(req) + b"\n")
    return path, ids


def _bundle(tmp: Path, name: str, limit: int) -> Path:
    dst = tmp / name
    shutil.copytree(default_bundle_path(), dst)
    policy = dst / "policy.cedar"
    text = policy.read_text()
    assert "context.amount_cents > 50000" in text
    policy.write_text(text.replace("context.amount_cents > 50000",
                                   f"context.amount_cents > {limit}"))
    return dst


def test_stricter_candidate_reports_exactly_the_crafted_flips(
        history: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, ids = history
    stricter = _bundle(tmp_path, "stricter", 30_000)
    out = _run("backtest", "--input", str(path), "--candidate-policy", str(stricter), "--json",
               "--fail-on", "deny-to-allow")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["allow_to_deny"] == 3 and report["deny_to_allow"] == 0
    assert report["same"] == 3
    flipped = {e["request_id"] for e in report["examples"]}
    assert flipped == {ids[1], ids[2], ids[3]}                 # 35k, 40k, 45k
    assert all(e["after"]["policies"] == ["refund-over-limit"] for e in report["examples"])
    assert report["by_agent"] == {"billing-bot-1": {"allow->deny": 3}}


def test_fail_on_deny_to_allow_gates_a_loosening(history: tuple[Path, list[str]],
                                                 tmp_path: Path) -> None:
    path, ids = history
    looser = _bundle(tmp_path, "looser", 80_000)
    out = _run("backtest", "--input", str(path), "--candidate-policy", str(looser),
               "--fail-on", "deny-to-allow")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 deny->allow" in out.stdout and ids[5] in out.stdout
    assert "refund-over-limit" in out.stdout       # the rule that no longer fires
    same = _run("backtest", "--input", str(path), "--candidate-policy",
                str(default_bundle_path()), "--fail-on", "any")
    assert same.returncode == 0 and "0 allow->deny, 0 deny->allow" in same.stdout


def test_backtest_needs_a_candidate(history: tuple[Path, list[str]]) -> None:
    out = _run("backtest", "--input", str(history[0]))
    assert out.returncode == 2 and "--candidate-policy" in out.stderr


def test_fit_refuses_too_little_history(history: tuple[Path, list[str]],
                                        tmp_path: Path) -> None:
    out = _run("fit", "--input", str(history[0]), "--output", str(tmp_path / "m"))
    assert out.returncode == 2 and "too few" in out.stderr
