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
    pending = [r for r in results if r.expected == "pending"]
    assert len(allow) >= 8 and len(deny) >= 12 and len(pending) >= 8
    assert all(r.actual == r.expected for r in results)
    denied_codes = {r.code for result in deny for r in result.reasons}
    assert {"RATE_LIMIT", "REPETITION", "FANOUT", "ANOMALY", "UNKNOWN_AGENT", "NO_PERMIT",
            "SENSITIVE_DATA", "INVALID_AMOUNT", "MISSING_CONTEXT"} <= denied_codes
    held_codes = {r.code for result in pending for r in result.reasons}
    assert held_codes == {"PRODUCTION_CHANGE", "SENSITIVE_DATA", "APPROVAL_REQUIRED"}
    # every pending case says whom it waits for
    cases = load_cases(default_bundle_path())
    assert {c.expect_awaiting for c in cases if c.expect == "pending"} == {"human"}


def test_cases_are_sorted_by_folder_then_name() -> None:
    cases = load_cases(default_bundle_path())
    assert [c.name for c in cases] == \
        sorted(c.name for c in cases if c.expect == "allow") + \
        sorted(c.name for c in cases if c.expect == "deny") + \
        sorted(c.name for c in cases if c.expect == "pending")
    assert all(c.name.startswith(c.expect + "/") for c in cases)
    assert {c.expect for c in cases} == {"allow", "deny", "pending"}


def test_wrong_expectation_is_reported_not_raised(bundle_copy: Path) -> None:
    case = _case(bundle_copy, "pending/prod-push-without-approval")
    case["expect"] = "allow"
    del case["expect_awaiting"]
    _write_case(bundle_copy, "allow/prod-push-is-fine", case)
    results = {r.name: r for r in run_cases(bundle_copy)}
    failed = results["allow/prod-push-is-fine"]
    assert not failed.ok and failed.expected == "allow" and failed.actual == "pending"
    assert "expected allow, got pending" in failed.detail
    assert "production-push-approval" in failed.detail
    assert sum(not r.ok for r in results.values()) == 1
    with pytest.raises(PolicyTestFailure) as info:
        run_cases(bundle_copy, raise_on_failure=True)
    assert [r.name for r in info.value.failures] == ["allow/prod-push-is-fine"]


def test_pending_is_neither_allow_nor_deny(bundle_copy: Path) -> None:
    case = _case(bundle_copy, "pending/prod-push-without-approval")
    case["expect"] = "deny"
    del case["expect_awaiting"]
    _write_case(bundle_copy, "deny/prod-push-denied", case)
    result = next(r for r in run_cases(bundle_copy) if r.name == "deny/prod-push-denied")
    assert not result.ok and result.actual == "pending"
    assert "expected deny, got pending" in result.detail


def test_wrong_awaited_role_fails(bundle_copy: Path) -> None:
    case = _case(bundle_copy, "pending/prod-push-without-approval")
    case["expect_awaiting"] = "finance"
    _write_case(bundle_copy, "pending/prod-push-without-approval", case)
    result = next(r for r in run_cases(bundle_copy)
                  if r.name == "pending/prod-push-without-approval")
    assert not result.ok and result.actual == "pending"
    assert "expected to await 'finance', awaits 'human'" in result.detail


def test_a_cases_approval_is_given_to_the_policies_as_verified(bundle_copy: Path) -> None:
    # The same held request: with a case-level human approval (what the worker injects
    # for a verified token) it is allowed; with another role's it is still held.
    case = _case(bundle_copy, "pending/prod-push-without-approval")
    for key in ("expect_awaiting", "expect_codes", "expect_policy_ids"):
        del case[key]
    approved = dict(case, expect="allow",
                    approval={"role": "human", "approver": "dana@example.com"})
    _write_case(bundle_copy, "allow/prod-push-approved-again", approved)
    bot = dict(case, expect="pending", expect_awaiting="human",
               approval={"role": "bot", "approver": "ci"})
    _write_case(bundle_copy, "pending/prod-push-bot-approved", bot)
    claimed = dict(case, expect="pending", expect_awaiting="human")
    claimed["request"] = dict(case["request"], context={"approvals": ["human"]})
    _write_case(bundle_copy, "pending/prod-push-self-approved", claimed)
    loaded = {c.name: c for c in load_cases(bundle_copy)}
    assert loaded["allow/prod-push-approved-again"].request.context["approval"] == {
        "role": "human", "approver": "dana@example.com"}
    assert "approval" not in loaded["pending/prod-push-self-approved"].request.context
    results = {r.name: r for r in run_cases(bundle_copy)}
    for name in ("allow/prod-push-approved-again", "pending/prod-push-bot-approved",
                 "pending/prod-push-self-approved"):
        assert results[name].ok, results[name].detail


def test_a_policy_error_case_still_fails_closed(bundle_copy: Path) -> None:
    # amount_cents must be a Long: the refund forbids error, the permit alone would allow.
    case = _case(bundle_copy, "deny/refund-exceeds-payment")
    case["request"]["context"] = {"amount_cents": "100"}
    case["expect_codes"] = ["POLICY_ERROR"]
    case.pop("expect_policy_ids", None)
    _write_case(bundle_copy, "deny/refund-amount-of-wrong-type", case)
    result = next(r for r in run_cases(bundle_copy)
                  if r.name == "deny/refund-amount-of-wrong-type")
    assert result.ok, result.detail
    assert result.actual == "deny"
    assert {r.policy_id for r in result.reasons} >= {"refund-exceeds-payment"}


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
    lines = (bundle_copy / "cases/allow/anomaly.json").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.lstrip().startswith('"expect":'))
    column = lines[line - 1].index('"expect"') + 1
    with pytest.raises(PolicyError,
                       match=rf"cases/allow/anomaly\.json:{line}:{column}: filed under allow/"):
        run_cases(bundle_copy)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["request"].pop("agent_id"), "agent_id: is required"),
    (lambda c: c.update(signals={"rate_1s": 1.5}), "signals"),
    (lambda c: c.update(extra=1), "unknown field 'extra'"),
    (lambda c: c.update(approval={"role": "human"}), '"approval" must be'),
    (lambda c: c.update(approval={"role": "human", "approver": 7}), '"approval" must be'),
    (lambda c: c.update(approval={"role": "human", "approver": "x", "at": "now"}),
     '"approval" must be'),
    (lambda c: c.update(approval="human"), '"approval" must be'),
    (lambda c: c.update(expect_awaiting=["human"]), '"expect_awaiting" must be a string'),
    (lambda c: c["request"]["context"].update(approval={"role": "human", "approver": "x"}),
     "context.approval"),
    (lambda c: c["request"]["context"].update(resource_trusted=True), "context.resource_trusted"),
    (lambda c: c.update(expect="held"), "expect"),
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
