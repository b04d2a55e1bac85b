"""Data-driven bundle tests: ``cases/{allow,deny,pending}/*.json``.

Each case is one request with the signals it should be decided with and the
expected outcome, so a policy author (or the analyst backtesting a candidate
bundle) checks behaviour without writing Python.  The folder repeats the
expectation on purpose: a case filed under ``allow/`` that expects ``deny`` is
an authoring mistake and refuses to run rather than pass silently.

Case file::

    {"description": "...",
     "request": {<ActionRequest JSON, schema_version 1>},
     "signals": {"rate_1s": 3},              # optional, missing ones are 0
     "approval": {"role": "human", "approver": "dana"},   # optional: as the worker
                                             # injects a VERIFIED approval token
     "expect": "allow" | "deny" | "pending",
     "expect_awaiting": "human",             # optional, for pending: the approver role
     "expect_codes": ["PRODUCTION_CHANGE"],  # optional: must all appear
     "expect_policy_ids": ["coding-repositories"]}   # optional: must all appear

A case whose decision differs is a failure (``ok`` False); a case file that
cannot be read is a broken bundle (``PolicyError``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holdgate.errors import HoldgateError, PolicyError, PolicyTestFailure
from holdgate.events import ActionRequest, Reason
from holdgate.policies.bundle import CASES_DIR, PolicyBundle
from holdgate.policies.engine import PolicyEngine

__all__ = ["Case", "CaseResult", "load_cases", "run_cases"]

_EXPECTATIONS = ("allow", "deny", "pending")
_CASE_FIELDS = frozenset(
    {"description", "request", "signals", "approval", "expect", "expect_codes",
     "expect_policy_ids", "expect_awaiting"})


@dataclass(frozen=True, slots=True)
class Case:
    """One parsed case file."""

    name: str
    description: str
    request: ActionRequest
    signals: dict[str, int]
    expect: str
    expect_codes: tuple[str, ...] = ()
    expect_policy_ids: tuple[str, ...] = ()
    expect_awaiting: str | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """Outcome of one case; ``detail`` says what differed when ``ok`` is False."""

    name: str
    expected: str
    actual: str
    reasons: tuple[Reason, ...]
    ok: bool
    detail: str = ""


def load_cases(bundle_path: str | Path) -> list[Case]:
    """Parse every case of the bundle, sorted by name; raise PolicyError naming bad files."""
    root = Path(bundle_path) / CASES_DIR
    cases: list[Case] = []
    problems: list[str] = []
    for expectation in _EXPECTATIONS:
        for file in sorted((root / expectation).glob("*.json"), key=lambda f: f.stem):
            name = f"{expectation}/{file.stem}"
            try:
                cases.append(_parse_case(name, file, expectation))
            except (OSError, ValueError, HoldgateError) as exc:
                problems.append(f"{CASES_DIR}/{name}.json: {exc}")
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise PolicyError(f"cannot load cases of policy bundle {bundle_path}:\n{lines}")
    return cases


def run_cases(bundle_path: str | Path | PolicyBundle, *,
              raise_on_failure: bool = False) -> list[CaseResult]:
    """Decide every case with the bundle (one batch) and compare with its expectation.

    With ``raise_on_failure`` a failing case raises
    :class:`~holdgate.errors.PolicyTestFailure` carrying the failed results.
    """
    if isinstance(bundle_path, PolicyBundle):
        bundle = bundle_path
        if bundle.path is None:
            raise PolicyError("bundle was built from sources and has no cases folder")
    else:
        bundle = PolicyBundle.load(bundle_path)
    assert bundle.path is not None
    cases = load_cases(bundle.path)
    engine = PolicyEngine(bundle)
    decisions = engine.decide_many([(case.request, case.signals) for case in cases])
    results = [_judge(case, decision.decision, decision.reasons, decision.awaiting)
               for case, decision in zip(cases, decisions)]
    failures = [r for r in results if not r.ok]
    if raise_on_failure and failures:
        raise PolicyTestFailure(failures)
    return results


def _parse_case(name: str, file: Path, folder: str) -> Case:
    try:
        obj: Any = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ValueError("must be a JSON object")
    unknown = sorted(set(obj) - _CASE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_CASE_FIELDS))
        raise ValueError(f"unknown field {unknown[0]!r} (allowed: {allowed})")
    expect = obj.get("expect")
    if expect not in _EXPECTATIONS:
        raise ValueError('"expect" must be "allow" or "deny"')
    if expect != folder:
        raise ValueError(f'filed under {folder}/ but "expect" is {expect!r}')
    signals = obj.get("signals", {})
    if not isinstance(signals, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in signals.values()):
        raise ValueError('"signals" must be an object of integers')
    request = ActionRequest.from_obj(obj.get("request"))
    approval = obj.get("approval")
    if approval is not None:
        if not (isinstance(approval, dict) and set(approval) == {"role", "approver"}
                and all(isinstance(v, str) for v in approval.values())):
            raise ValueError('"approval" must be {"role": str, "approver": str}')
        # What the worker puts in the context for a verified token (agents cannot).
        request = dataclasses.replace(request, context={**request.context,
                                                        "approval": dict(approval)})
    awaiting = obj.get("expect_awaiting")
    if awaiting is not None and not isinstance(awaiting, str):
        raise ValueError('"expect_awaiting" must be a string')
    return Case(
        name=name,
        description=str(obj.get("description", "")),
        request=request,
        signals=signals,
        expect=expect,
        expect_codes=_str_tuple(obj, "expect_codes"),
        expect_policy_ids=_str_tuple(obj, "expect_policy_ids"),
        expect_awaiting=awaiting,
    )


def _str_tuple(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'"{key}" must be a list of strings')
    return tuple(value)


def _judge(case: Case, actual: str, reasons: tuple[Reason, ...],
           awaiting: str | None = None) -> CaseResult:
    problems = []
    if actual != case.expect:
        problems.append(f"expected {case.expect}, got {actual}")
    if case.expect_awaiting is not None and awaiting != case.expect_awaiting:
        problems.append(f"expected to await {case.expect_awaiting!r}, awaits {awaiting!r}")
    got_codes = {r.code for r in reasons}
    missing = [c for c in case.expect_codes if c not in got_codes]
    if missing:
        problems.append(f"missing codes {missing}")
    got_ids = {r.policy_id for r in reasons}
    missing_ids = [p for p in case.expect_policy_ids if p not in got_ids]
    if missing_ids:
        problems.append(f"missing policy ids {missing_ids}")
    if problems:
        why = "; ".join(f"{r.code}{f' [{r.policy_id}]' if r.policy_id else ''}: {r.message}"
                        for r in reasons)
        problems.append(f"reasons: {why or 'none'}")
    return CaseResult(name=case.name, expected=case.expect, actual=actual, reasons=reasons,
                      ok=not problems, detail="; ".join(problems))
