"""`holdgate policy validate|test` on broken bundles: compiler-style lines and exit codes.

Exit codes: 0 clean, 1 problems or failed cases, 2 usage.  Every problem is one
``path:line:col: what (what to do)`` line on stderr.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holdgate.policies import default_bundle_path

_LOCATED = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<what>.+)$")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], check=False,
                          capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "NO_COLOR": "1"})


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A copy of the default bundle, in tmp_path/bundle (run commands from tmp_path)."""
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    return root


def _located(stderr: str) -> list[re.Match[str]]:
    lines = [line for line in stderr.splitlines() if line and " problem" not in line]
    matches = [_LOCATED.match(line) for line in lines]
    assert all(matches), stderr
    return [m for m in matches if m]


def test_validate_prints_located_problems_and_exits_1(bundle: Path) -> None:
    policy = bundle / "policy.cedar"
    before = policy.read_text()
    policy.write_text(before + '\n@id("broken")\npermit (principal, action, resource)\n'
                               '  when { context.x > };\n')
    out = _run("policy", "validate", "bundle", cwd=bundle.parent)
    assert out.returncode == 1, out.stderr
    problem, = _located(out.stderr)
    assert problem["path"] == "bundle/policy.cedar"
    assert (int(problem["line"]), int(problem["col"])) == (before.count("\n") + 4, 22)
    assert problem["what"].startswith("syntax error: unexpected token `}`")
    assert out.stderr.rstrip().endswith("1 problem in bundle")


def test_validate_reports_what_only_holdgate_sees(bundle: Path) -> None:
    """Valid Cedar that the worker would deny with POLICY_ERROR, and a case no agent sends."""
    policy = bundle / "policy.cedar"
    before = policy.read_text()
    policy.write_text(before + '\n@id("push-env")\n@code("PRODUCTION_CHANGE")\n@reason("x")\n'
                               'forbid (principal, action == Action::"repo.push", resource)\n'
                               'unless { resource.environment == "staging" };\n')
    case_file = bundle / "cases/deny/rate-ceiling.json"
    case = json.loads(case_file.read_text())
    case["request"].update(action="tickets.read", resource={"type": "Payment", "id": "p"})
    case_file.write_text(json.dumps(case, indent=2))
    out = _run("policy", "validate", str(bundle))
    assert out.returncode == 1, out.stderr
    lint, bad_case = _located(out.stderr)
    assert (lint["path"], int(lint["line"])) == (str(bundle / "policy.cedar"),
                                                 before.count("\n") + 6)
    assert "POLICY_ERROR" in lint["what"] and "`resource is Repository`" in lint["what"]
    assert bad_case["path"] == str(case_file)
    assert 'action "tickets.read" on resource type Payment' in bad_case["what"]
    assert "policy0" not in out.stderr and "policy28" not in out.stderr


def test_validate_entities_error_names_the_line(bundle: Path) -> None:
    entities = json.loads((bundle / "entities.json").read_text())
    entities.append({"uid": {"type": "Customer", "id": "cus-bad"},
                     "attrs": {"pii_level": 3}, "parents": []})
    text = json.dumps(entities, indent=2)
    (bundle / "entities.json").write_text(text)
    out = _run("policy", "validate", str(bundle))
    assert out.returncode == 1
    problem, = _located(out.stderr)
    assert int(problem["line"]) == text[:text.index('"pii_level": 3')].count("\n") + 1
    assert problem["what"].startswith('Customer::"cus-bad": attribute "pii_level" is 3')


def test_usage_errors_exit_2_and_a_clean_bundle_exits_0(tmp_path: Path) -> None:
    out = _run("policy", "validate", str(tmp_path / "nope"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = _run("policy", "validate")
    assert out.returncode == 0 and out.stdout.startswith("ok: ") and "cases" in out.stdout


def test_test_says_what_differed_for_a_case_failing_on_its_codes(bundle: Path) -> None:
    case_file = bundle / "cases/deny/anomaly.json"
    case = json.loads(case_file.read_text())
    case.update(expect_codes=["RATE_LIMIT"])
    text = json.dumps(case, indent=2)
    case_file.write_text(text)
    out = _run("policy", "test", "bundle", cwd=bundle.parent)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("FAIL deny/anomaly")
    line = text[:text.index('"expect_codes"')].count("\n") + 1
    assert lines[1] == (f"  bundle/cases/deny/anomaly.json:{line}:3: missing codes "
                        "['RATE_LIMIT']: expected ['RATE_LIMIT'], got ['ANOMALY']")
    assert lines[2].startswith("  decided deny by ANOMALY [guard-anomaly]: ")
    assert "expected deny, got deny" not in out.stdout
    assert lines[-1] == f"{len(list(bundle.glob('cases/*/*.json'))) - 1} passed, 1 failed"


def test_test_shows_awaited_role_and_approval_of_failing_cases(bundle: Path) -> None:
    pending = bundle / "cases/pending/prod-push-without-approval.json"
    case = json.loads(pending.read_text())
    case["expect_awaiting"] = "finance"
    pending.write_text(json.dumps(case, indent=2))
    approved = bundle / "cases/allow/billing-large-refund-approved.json"
    case = json.loads(approved.read_text())
    case["approval"] = {"role": "finance", "approver": "omar"}
    approved.write_text(json.dumps(case, indent=2))
    out = _run("policy", "test", str(bundle))
    assert out.returncode == 1
    assert "expected to await 'finance', awaits 'human'" in out.stdout
    assert "expected allow, got pending" in out.stdout
    assert 'with a verified approval of role "finance" by "omar"' in out.stdout
    assert out.stdout.rstrip().endswith("2 failed")


def test_test_refuses_a_misfiled_case_as_a_load_problem(bundle: Path) -> None:
    shutil.copy(bundle / "cases/deny/anomaly.json", bundle / "cases/allow/anomaly.json")
    out = _run("policy", "test", str(bundle))
    assert out.returncode == 1 and "passed" not in out.stdout
    problem, = _located(out.stderr)
    assert problem["path"] == str(bundle / "cases/allow/anomaly.json")
    assert problem["what"].startswith('filed under allow/ but "expect" is "deny"')
