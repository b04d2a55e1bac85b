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

A case whose decision differs is a failure (``ok`` False) whose
``differences`` say what differed, each at the line of the case file that set
the expectation (``cases/deny/x.json:14:3: ...``).  A case file that cannot be
used is a broken bundle (:class:`~holdgate.policies.diagnostics.BundleProblems`,
one ``file:line:col`` line per problem): bad JSON, unknown fields, a request the
wire would refuse, a case filed under a folder that is not its expectation or
outside ``allow/``, ``deny/``, ``pending/`` (it would never run), and, given the
bundle, a request that uses an action with a resource type its ``appliesTo``
does not declare (such a case tests a request no valid agent sends).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holdgate.errors import HoldgateError, PolicyError, PolicyTestFailure, ValidationError
from holdgate.events import ActionRequest, Reason
from holdgate.policies.bundle import CASES_DIR, SCHEMA_FILE, PolicyBundle
from holdgate.policies.diagnostics import (
    BundleProblems,
    JsonPositions,
    Problem,
    TextFile,
    json_positions,
    json_syntax_problem,
)
from holdgate.policies.engine import PolicyEngine

__all__ = ["Case", "CaseResult", "load_cases", "run_cases"]

_EXPECTATIONS = ("allow", "deny", "pending")
_CASE_FIELDS = frozenset(
    {"description", "request", "signals", "approval", "expect", "expect_codes",
     "expect_policy_ids", "expect_awaiting"})


class _CaseError(ValueError):
    """A problem with one case file, at ``path`` (JSON keys) if given."""

    def __init__(self, message: str, path: tuple[str | int, ...] = (), *,
                 key: bool = True) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


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
    approval: Mapping[str, str] | None = None
    #: the file, as shown in messages, and (line, column) of each top-level key
    file: str = ""
    lines: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """Outcome of one case.

    ``differences``: each expectation that was not met, at its line of the case
    file; ``notes``: what the decision was made of (its reasons, an approval);
    ``detail``: both, in one ``; ``-separated line.
    """

    name: str
    expected: str
    actual: str
    reasons: tuple[Reason, ...]
    ok: bool
    detail: str = ""
    differences: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    awaiting: str | None = None
    description: str = ""


def load_cases(bundle_path: str | Path, bundle: PolicyBundle | None = None) -> list[Case]:
    """Parse every case of the bundle, sorted by folder then name.

    Raises :class:`BundleProblems` with one located line per bad file, and per
    JSON file under ``cases/`` that would never run.  With ``bundle``, also
    checks each request against its schema (see the module docstring).
    """
    root = Path(bundle_path) / CASES_DIR
    cases: list[Case] = []
    problems: list[Problem] = []
    if root.is_dir():
        problems += _stray_files(root)
    for expectation in _EXPECTATIONS:
        for file in sorted((root / expectation).glob("*.json"), key=lambda f: f.stem):
            name = f"{expectation}/{file.stem}"
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(file), None, None, f"cannot read: {exc}"))
                continue
            source = TextFile(str(file), text)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(json_syntax_problem(source, exc))
                continue
            where = json_positions(text)
            try:
                case = _parse_case(name, obj, expectation, source, where)
                if bundle is not None:
                    _check_applies_to(case, bundle)
                cases.append(case)
            except _CaseError as exc:
                problems.append(source.at(where.of(exc.path, key=exc.key), str(exc)))
            except ValidationError as exc:     # the request, as the wire would refuse it
                path = ("request", *[p for p in exc.field.split(".") if p != "$"])
                what = f"request.{exc}" if exc.field != "$" else f"request: {exc.message}"
                problems.append(source.at(where.of(tuple(path)), (
                    f"{what} (a case's request is an ActionRequest as agents send it: "
                    "holdgate/schemas/action_request.schema.json)")))
            except (ValueError, HoldgateError) as exc:
                problems.append(source.at(None, str(exc)))
    if problems:
        raise BundleProblems(str(bundle_path), problems,
                             what="cannot load cases of policy bundle")
    return cases


def _stray_files(root: Path) -> list[Problem]:
    """JSON files under cases/ that no folder of an expectation holds: they would never run."""
    problems = []
    for file in sorted(root.rglob("*.json")):
        parts = file.relative_to(root).parts
        if len(parts) == 2 and parts[0] in _EXPECTATIONS:
            continue
        where = "directly under cases/" if len(parts) == 1 else f"under cases/{parts[0]}/" \
            if parts[0] not in _EXPECTATIONS else f"in a subfolder of cases/{parts[0]}/"
        problems.append(Problem(str(file), None, None, (
            f"never runs: it is {where} (a case goes directly in cases/allow/, cases/deny/ "
            "or cases/pending/, the decision it expects)")))
    return problems


def _check_applies_to(case: Case, bundle: PolicyBundle) -> None:
    """A request must use its action with a resource type the schema declares for it."""
    action, kind = case.request.action, case.request.resource.type
    declared = bundle.applies_to.get(action)
    if declared is None or kind not in bundle.entity_types or kind in declared:
        return
    raise _CaseError(
        f"request uses action {json.dumps(action)} on resource type {kind}, but "
        f"{SCHEMA_FILE} declares it only for {', '.join(sorted(declared)) or 'no type'} "
        f"(use a declared resource type, or add {kind} to the action's appliesTo)",
        ("request", "resource", "type"), key=False)


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
    cases = load_cases(bundle.path, bundle)
    engine = PolicyEngine(bundle)
    decisions = engine.decide_many([(case.request, case.signals) for case in cases])
    results = [_judge(case, decision.decision, decision.reasons, decision.awaiting)
               for case, decision in zip(cases, decisions)]
    failures = [r for r in results if not r.ok]
    if raise_on_failure and failures:
        raise PolicyTestFailure(failures)
    return results


def _parse_case(name: str, obj: Any, folder: str, source: TextFile,
                where: JsonPositions) -> Case:
    if not isinstance(obj, dict):
        raise _CaseError("must be a JSON object")
    unknown = sorted(set(obj) - _CASE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_CASE_FIELDS))
        raise _CaseError(f"unknown field {unknown[0]!r} (allowed: {allowed})", (unknown[0],))
    expect = obj.get("expect")
    if expect not in _EXPECTATIONS:
        raise _CaseError('"expect" must be "allow", "deny" or "pending"', ("expect",))
    if expect != folder:
        raise _CaseError(
            f'filed under {folder}/ but "expect" is {json.dumps(expect)} (move it to '
            f'{CASES_DIR}/{expect}/, or fix "expect")', ("expect",))
    signals = obj.get("signals", {})
    if not isinstance(signals, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in signals.values()):
        raise _CaseError('"signals" must be an object of integers', ("signals",))
    request = ActionRequest.from_obj(obj.get("request"))
    approval = obj.get("approval")
    if approval is not None:
        if not (isinstance(approval, dict) and set(approval) == {"role", "approver"}
                and all(isinstance(v, str) for v in approval.values())):
            raise _CaseError('"approval" must be {"role": str, "approver": str}', ("approval",))
        # What the worker puts in the context for a verified token (agents cannot).
        request = dataclasses.replace(request, context={**request.context,
                                                        "approval": dict(approval)})
    awaiting = obj.get("expect_awaiting")
    if awaiting is not None and not isinstance(awaiting, str):
        raise _CaseError('"expect_awaiting" must be a string', ("expect_awaiting",))
    if awaiting is not None and expect != "pending":
        raise _CaseError(f'"expect_awaiting" is only for pending cases, and this one expects '
                         f'{expect} (remove it)', ("expect_awaiting",))
    return Case(
        name=name,
        description=str(obj.get("description", "")),
        request=request,
        signals=signals,
        expect=expect,
        expect_codes=_str_tuple(obj, "expect_codes"),
        expect_policy_ids=_str_tuple(obj, "expect_policy_ids"),
        expect_awaiting=awaiting,
        approval=dict(approval) if approval is not None else None,
        file=source.name,
        lines={key: source.position(offset) for key, offset in
               ((k, where.keys.get((k,))) for k in obj) if offset is not None},
    )


def _str_tuple(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _CaseError(f'"{key}" must be a list of strings', (key,))
    return tuple(value)


def _judge(case: Case, actual: str, reasons: tuple[Reason, ...],
           awaiting: str | None = None) -> CaseResult:
    """Compare a decision with the case's expectations; say what differed, where."""
    differences: list[Problem] = []

    def differ(key: str, message: str) -> None:
        line, column = case.lines.get(key, (None, None))
        differences.append(Problem(case.file or case.name, line, column, message))

    if actual != case.expect:
        differ("expect", f"expected {case.expect}, got {actual}")
    if case.expect_awaiting is not None and awaiting != case.expect_awaiting:
        got = f"awaits {awaiting!r}" if awaiting else f"awaits nobody (decided {actual})"
        differ("expect_awaiting", f"expected to await {case.expect_awaiting!r}, {got}")
    got_codes = list(dict.fromkeys(r.code for r in reasons))
    missing = [c for c in case.expect_codes if c not in got_codes]
    if missing:
        differ("expect_codes", f"missing codes {missing}: expected "
                               f"{list(case.expect_codes)}, got {got_codes}")
    got_ids = list(dict.fromkeys(r.policy_id for r in reasons if r.policy_id))
    missing_ids = [p for p in case.expect_policy_ids if p not in got_ids]
    if missing_ids:
        differ("expect_policy_ids", f"missing policy ids {missing_ids}: expected "
                                    f"{list(case.expect_policy_ids)}, got {got_ids}")
    notes: list[str] = []
    if differences:
        held = f" awaiting {awaiting!r}" if awaiting else ""
        notes.append(f"decided {actual}{held} by " + (", ".join(
            f"{r.code}{f' [{r.policy_id}]' if r.policy_id else ''}: {r.message}"
            for r in reasons) or "no reason"))
        if case.approval is not None:
            notes.append(f"with a verified approval of role {json.dumps(case.approval['role'])}"
                         f" by {json.dumps(case.approval['approver'])} in context.approval")
    return CaseResult(
        name=case.name, expected=case.expect, actual=actual, reasons=reasons,
        ok=not differences,
        detail="; ".join([d.message for d in differences] + notes),
        differences=tuple(differences), notes=tuple(notes), awaiting=awaiting,
        description=case.description)
