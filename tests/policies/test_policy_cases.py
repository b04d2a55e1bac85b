"""Data-driven bundle cases: the default bundle's pass; wrong ones are reported."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from holdgate.errors import PolicyError, PolicyTestFailure
from holdgate.policies import PolicyBundle, default_bundle_path, load_cases, run_cases


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    return root


def _case(root: Path, name: str) -> dict:
    return json.loads((root / "cases" / f"{name}.json").read_text())


def _write_case(root: Path, name: str, obj: dict) -> None:
    (root / "cases" / f"{name}.json").write_text(json.dumps(obj))


def test_every_default_case_passes() -> None:
    results = run_cases(default_bundle_path(), raise_on_failure=True)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    allow = [r for r in results if r.expected == "allow"]
    deny = [r for r in results if r.expected == "deny"]
    assert len(allow) >= 8 and len(deny) >= 12
    denied_codes = {r.code for result in deny for r in result.reasons}
    assert {"RATE_LIMIT", "REPETITION", "FANOUT", "ANOMALY", "UNKNOWN_AGENT", "NO_PERMIT",
            "SENSITIVE_DATA", "PRODUCTION_CHANGE", "POLICY_ERROR"} <= denied_codes


def test_cases_are_sorted_by_folder_then_name() -> None:
    cases = load_cases(default_bundle_path())
    assert [c.name for c in cases] == sorted(c.name for c in cases if c.expect == "allow") + \
        sorted(c.name for c in cases if c.expect == "deny")
    assert all(c.name.startswith(c.expect + "/") for c in cases)


def test_wrong_expectation_is_reported_not_raised(bundle_copy: Path) -> None:
    case = _case(bundle_copy, "deny/prod-push-without-approval")
    case["expect"] = "allow"
    _write_case(bundle_copy, "allow/prod-push-is-fine", case)
    results = {r.name: r for r in run_cases(bundle_copy)}
    failed = results["allow/prod-push-is-fine"]
    assert not failed.ok and failed.expected == "allow" and failed.actual == "deny"
    assert "production-push-approval" in failed.detail
    assert sum(not r.ok for r in results.values()) == 1
    with pytest.raises(PolicyTestFailure) as info:
        run_cases(bundle_copy, raise_on_failure=True)
    assert [r.name for r in info.value.failures] == ["allow/prod-push-is-fine"]


def test_missing_expected_code_fails(bundle_copy: Path) -> None:
    case = _case(bundle_copy, "deny/anomaly")
    case["expect_codes"] = ["RATE_LIMIT"]
    case["expect_policy_ids"] = ["guard-rate-any"]
    _write_case(bundle_copy, "deny/anomaly", case)
    result = next(r for r in run_cases(bundle_copy) if r.name == "deny/anomaly")
    assert not result.ok and result.actual == "deny"
    assert "missing codes ['RATE_LIMIT']" in result.detail
    assert "missing policy ids ['guard-rate-any']" in result.detail


def test_case_in_wrong_folder_is_a_bundle_error(bundle_copy: Path) -> None:
    shutil.copy(bundle_copy / "cases/deny/anomaly.json", bundle_copy / "cases/allow/anomaly.json")
    with pytest.raises(PolicyError, match=r"cases/allow/anomaly\.json: filed under allow/"):
        run_cases(bundle_copy)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["request"].pop("agent_id"), "agent_id: is required"),
    (lambda c: c.update(signals={"rate_1s": 1.5}), "signals"),
    (lambda c: c.update(extra=1), "unknown field 'extra'"),
])
def test_malformed_case_names_the_file(bundle_copy: Path, mutate, expected: str) -> None:
    case = _case(bundle_copy, "deny/anomaly")
    mutate(case)
    _write_case(bundle_copy, "deny/anomaly", case)
    with pytest.raises(PolicyError) as info:
        run_cases(bundle_copy)
    assert "cases/deny/anomaly.json" in str(info.value) and expected in str(info.value)


def test_run_cases_accepts_a_loaded_bundle() -> None:
    bundle = PolicyBundle.load(default_bundle_path())
    assert all(r.ok for r in run_cases(bundle))
