"""Bundle problems point at file:line:col of the offending token, in the policy's own words.

Cedar (through cedarpy) reports errors without positions and names policies
``policy0``, ``policy1``...; each test here builds a broken bundle, computes
where the mistake is in the text it wrote, and checks that the message says so.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import cedarpy
import pytest

from holdgate import reasons as codes
from holdgate.errors import PolicyError
from holdgate.events import ActionRequest
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path, load_cases, run_cases
from holdgate.policies.cedar_source import locate_syntax_error, split_policies, tokenize
from holdgate.policies.diagnostics import BundleProblems, json_positions
from holdgate.policies.lint import lint_bundle

BundleFactory = Callable[..., Path]
_POSITIONAL = re.compile(r"\bpolicy\d+\b")


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """A copy of the default bundle with text appended to / replacing its files."""
    counter = 0

    def make(*, append: dict[str, str] | None = None,
             replace: dict[str, str] | None = None) -> Path:
        nonlocal counter
        counter += 1
        root = tmp_path / f"bundle{counter}"
        shutil.copytree(default_bundle_path(), root)
        for name, text in (replace or {}).items():
            (root / name).write_text(text, encoding="utf-8")
        for name, text in (append or {}).items():
            with (root / name).open("a", encoding="utf-8") as fh:
                fh.write(text)
        return root

    return make


def _problems(root: Path) -> list[str]:
    with pytest.raises(BundleProblems) as info:
        PolicyBundle.load(root)
    lines = info.value.lines
    assert all("\n" not in line for line in lines)
    assert str(info.value).count("\n") == len(lines)      # header + one line each
    return lines


def _position(text: str, needle: str, *, skip: int = 0, base: str = "") -> str:
    """``line:col`` of the first ``needle`` in ``text`` (+ ``skip`` characters), where
    ``text`` follows ``base`` in the file."""
    whole = base + text
    offset = len(base) + text.index(needle) + skip
    line = whole.count("\n", 0, offset) + 1
    return f"{line}:{offset - (whole.rfind(chr(10), 0, offset) + 1) + 1}"


def _appended(root: Path, name: str, needle: str, *, skip: int = 0) -> str:
    """``<root>/<name>:line:col`` of ``needle`` in what was appended to the default file."""
    text = (root / name).read_text()
    base = len((default_bundle_path() / name).read_text())
    return f"{root / name}:{_position(text[base:], needle, skip=skip, base=text[:base])}"


# ----------------------------------------------------------------- syntax --

@pytest.mark.parametrize("broken, token, message", [
    ('\n@id("broken")\npermit (principal, action, resource)\nwhen { context.x > };\n',
     "};", "syntax error: unexpected token `}`"),
    ('\n@id("broken" permit (principal, action, resource);\n', "permit",
     "syntax error: unexpected token `permit`"),
    ('\n@id("broken")\npermit (principal, action, resource)\nwhen { true } ;;\n', ";\n",
     "syntax error: unexpected token `;`"),
    (('\n@id("broken")\npermit (principal, action, resource)\nwhen { context has x && '
     'nosuchfn(context.x) };\n'), "nosuchfn", "`nosuchfn` is not a valid function"),
    ('\n@id("broken")\nallow (principal, action, resource);\n', "allow",
     "invalid policy effect: allow"),
])
def test_syntax_errors_point_at_the_offending_token(make_bundle: BundleFactory, broken: str,
                                                    token: str, message: str) -> None:
    root = make_bundle(append={"policy.cedar": broken})
    problems = _problems(root)
    assert problems[0].startswith(f"{_appended(root, 'policy.cedar', token)}: ")
    assert message in problems[0]


def test_a_missing_semicolon_points_at_the_end_and_says_so(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("x")\npermit (principal, action, '
                                               'resource)\nwhen { true }\n'})
    problem, = _problems(root)
    assert problem.startswith(f"{_appended(root, 'policy.cedar', '}', skip=1)}: ")
    assert "unexpected end of input" in problem and "a policy ends with `;`" in problem


def test_first_of_several_syntax_errors_is_found_by_prefix_search() -> None:
    text = ('permit (principal, action, resource);\n// a comment with ; and }\n'
            'permit (principal, action, resource) when { context.x == "a;}" && 1 + };\n'
            'permit (principal, action, resource) when { @ };\n')
    message = ""
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        message = str(exc)
    offset, found = locate_syntax_error(text, cedarpy.PolicySet.from_str, message)
    assert offset == text.index("};\npermit (principal, action, resource) when { @")
    assert found == "unexpected token `}`"


def test_tokenize_and_split_skip_comments_and_strings() -> None:
    text = '// x; y\n@id("a;b")\npermit (principal, action, resource)\n' \
           'when { "}" == "{" } unless { true };'
    assert [t.text for t in tokenize(text)][:3] == ["@", "id", "("]
    source, = split_policies(text)
    assert text[source.effect:].startswith("permit")
    assert [text[a:b].strip() for a, b in source.conditions] == ['"}" == "{"', "true"]


# ------------------------------------------------------------- validation --

def test_type_errors_point_at_the_attribute_and_name_the_policy_by_id(
        make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": (
        '\n@id("uses-ghost-attr")\n@reason("x")\npermit (principal, action == '
        'Action::"repo.push", resource)\n  when { context.resource_trusted && '
        'resource.owner == "me" };\n')})
    problem, = _problems(root)
    assert problem.startswith(f"{_appended(root, 'policy.cedar', 'owner')}: ")
    assert '@id("uses-ghost-attr")' in problem and "attribute `owner`" in problem
    assert "schema.cedarschema" in problem and not _POSITIONAL.search(problem)


def test_a_type_error_is_narrowed_to_the_failing_part_of_a_condition(
        make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": (
        '\n@id("typeerr")\nforbid (principal, action, resource)\n'
        '  when { context.signals.rate_1s > 3 &&\n'
        '         (context.resource_trusted || context.signals.anomaly > "high") };\n'
        '@id("iffy")\nforbid (principal, action, resource)\n'
        '  when { if context.resource_trusted then context.signals.streak > "1" else false };\n'
    )})
    first, second = _problems(root)
    assert first.startswith(f"{_appended(root, 'policy.cedar', 'context.signals.anomaly')}: ")
    assert '@id("typeerr")' in first and "expected Long but saw String" in first
    assert second.startswith(f"{_appended(root, 'policy.cedar', 'context.signals.streak')}: ")


def test_errors_repeated_per_action_are_one_line_listing_the_actions(
        make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("opt")\nforbid (principal, action, '
                                               'resource)\n  when { context.amount_cents > 3 };\n'})
    problem, = _problems(root)
    assert problem.startswith(f"{_appended(root, 'policy.cedar', 'context.amount_cents')}: ")
    assert "for customers.export, customers.read" in problem and "more)" in problem
    assert "`context has amount_cents && ...`" in problem


def test_scope_errors_point_into_the_scope(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("ua")\npermit (principal, action in '
                                               '[Action::"tickets.read", Action::"tickets.fly"],'
                                               ' resource);\n'})
    problems = _problems(root)
    fly = _appended(root, "policy.cedar", 'Action::"tickets.fly')
    assert problems[0].startswith(f"{fly}: ")
    assert "unrecognized action" in problems[0] and '@id("ua")' in problems[0]
    assert not any(_POSITIONAL.search(p) for p in problems)


def test_annotation_problems_point_at_the_annotation(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("x")\n@reason("r")\n@approval("two words")'
                                               '\nforbid (principal, action, resource);\n'
                                               '\n@reason("no id")\npermit (principal, action, '
                                               'resource);\n'})
    approval, missing = _problems(root)
    assert approval.startswith(f"{_appended(root, 'policy.cedar', '@approval')}: @id(\"x\"): ")
    assert missing.startswith(f"{_appended(root, 'policy.cedar', 'permit')}: permit policy #")
    assert "missing @id" in missing


def test_schema_errors_point_at_the_declaration(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"schema.cedarschema": "\nentity Extra = { x: Lng };\n"})
    problem, = _problems(root)
    assert problem.startswith(f"{_appended(root, 'schema.cedarschema', 'Lng')}: ")
    assert "failed to resolve type: Lng" in problem
    root = make_bundle(append={"schema.cedarschema": "\nentity Ticket;\n"})
    problem, = _problems(root)
    assert problem.startswith(f"{_appended(root, 'schema.cedarschema', 'entity Ticket')}: ")
    assert "declared twice" in problem


# --------------------------------------------------------------- entities --

def _entities_with(*extra: dict) -> str:
    items = json.loads((default_bundle_path() / "entities.json").read_text())
    return json.dumps(items + list(extra), indent=2)


def test_entity_errors_give_the_file_line_of_the_entity_not_an_index(
        make_bundle: BundleFactory) -> None:
    text = _entities_with({"uid": {"type": "Customer", "id": "cus-bad"},
                           "attrs": {"pii_level": 3}, "parents": []})
    root = make_bundle(replace={"entities.json": text})
    problem, = _problems(root)
    value = _position(text, '"pii_level": 3', skip=len('"pii_level": '))
    assert problem.startswith(f"{root / 'entities.json'}:{value}: ")   # the value, as written
    assert 'Customer::"cus-bad"' in problem and "declares it String" in problem
    assert "item " not in problem


def test_entity_problems_say_what_does_not_conform(make_bundle: BundleFactory) -> None:
    text = _entities_with(
        {"uid": {"type": "Customer", "id": "c2"}, "attrs": {"zzz": 1},
         "parents": [{"type": "Role", "id": "x"}]},
        {"uid": {"type": "Ghost", "id": "g"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Customer", "id": "cus-1001"}, "attrs": {"pii_level": "high"},
         "parents": []})
    root = make_bundle(replace={"entities.json": text})
    undeclared, missing, parent, ghost, duplicate = _problems(root)
    name = root / "entities.json"
    zzz = _position(text, '"zzz"')
    assert undeclared.startswith(f"{name}:{zzz}: ")
    assert 'attribute "zzz" is not declared for Customer' in undeclared
    assert 'missing required attribute "pii_level"' in missing
    brace = text.index("{", text.index('"parents"', text.index('"zzz"')))
    assert parent.startswith(f"{name}:{_position(text[brace:], '{', base=text[:brace])}: ")
    assert 'cannot be in Role::"x"' in parent
    kind = _position(text, '"Ghost"')
    assert ghost.startswith(f"{name}:{kind}: ")
    assert "duplicate entity" in duplicate and 'Customer::"cus-1001"' in duplicate


def test_entities_json_syntax_error_gives_line_and_column(make_bundle: BundleFactory) -> None:
    problem, = _problems(make_bundle(replace={"entities.json": '[\n  {"uid": }\n]'}))
    assert re.search(r"entities\.json:2:11: invalid JSON: Expecting value", problem), problem


def test_json_positions_map_keys_and_values() -> None:
    text = '[\n {"a": [1, {"b": "x"}]},\n "s"\n]'
    where = json_positions(text)
    assert where.of((0,), key=False) == text.index("{")
    assert where.of((0, "a")) == text.index('"a"')
    assert where.of((0, "a", 1, "b"), key=False) == text.index('"x"')
    assert where.of((1,)) == text.index('"s"')
    assert where.of((0, "a", 7)) == text.index('"a"')      # the nearest that exists


# ---------------------------------------------------------- appliesTo lint --

_PUSH_ENV = ('\n@id("push-env")\n@code("PRODUCTION_CHANGE")\n@reason("x")\n'
             'forbid (principal, action == Action::"repo.push", resource)\n'
             'unless { resource.environment == "staging" };\n')


def test_lint_catches_a_policy_that_fails_on_an_undeclared_resource_type(
        make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": _PUSH_ENV})
    bundle = PolicyBundle.load(root)                # Cedar's validation passes it...
    request = ActionRequest.from_obj({
        "schema_version": 1, "request_id": "1814481e-7bf5-5701-a8d4-c8feb36b04d2",
        "agent_id": "coder-bot-1", "action": "repo.push",
        "resource": {"type": "Ticket", "id": "T-1"}, "context": {},
        "occurred_at": 1767225600.0})
    decision = PolicyEngine(bundle).decide(request)
    assert decision.decision == "deny" and decision.reasons[0].code == codes.POLICY_ERROR
    problem, = map(str, lint_bundle(bundle))          # ...the lint does not
    assert problem.startswith(f"{_appended(root, 'policy.cedar', 'environment')}: ")
    assert '@id("push-env")' in problem and "POLICY_ERROR" in problem
    assert "`resource is Repository`" in problem and "Ticket" not in problem.split(":")[0]


def test_lint_catches_a_scope_pairing_an_action_with_a_type_it_does_not_apply_to(
        make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": (
        '\n@id("pairs")\npermit (principal, action in [Action::"repo.push", '
        'Action::"tickets.read"], resource is Ticket);\n')})
    problem, = map(str, lint_bundle(PolicyBundle.load(root)))
    push = _appended(root, "policy.cedar", 'Action::"repo.push')
    assert problem.startswith(f"{push}: ")
    assert 'action "repo.push" does not apply to resource type Ticket' in problem


def test_lint_passes_the_default_bundle() -> None:
    assert lint_bundle(PolicyBundle.load(default_bundle_path())) == []


# ------------------------------------------------------------------ cases --

def _write(path: Path, obj: dict) -> str:
    text = json.dumps(obj, indent=2)
    path.write_text(text)
    return text


def _case_problems(root: Path) -> list[str]:
    with pytest.raises(BundleProblems) as info:
        run_cases(root)
    return info.value.lines


def test_a_case_using_an_action_outside_its_applies_to_is_a_load_error(
        make_bundle: BundleFactory) -> None:
    root = make_bundle()
    case = json.loads((root / "cases/deny/rate-ceiling.json").read_text())
    case["request"]["resource"]["type"] = "Payment"              # tickets.read on a Payment
    case["request"]["action"] = "tickets.read"
    text = _write(root / "cases/deny/rate-ceiling.json", case)
    problem, = _case_problems(root)
    where = root / "cases/deny/rate-ceiling.json"
    payment = _position(text, '"Payment"')
    assert problem.startswith(f"{where}:{payment}: ")
    assert 'action "tickets.read" on resource type Payment' in problem
    assert "declares it only for Ticket" in problem


def test_misfiled_and_stray_cases_are_load_errors_naming_the_file(
        make_bundle: BundleFactory) -> None:
    root = make_bundle()
    shutil.copy(root / "cases/deny/anomaly.json", root / "cases/allow/anomaly.json")
    (root / "cases/held").mkdir()
    shutil.copy(root / "cases/deny/anomaly.json", root / "cases/held/x.json")
    case = json.loads((root / "cases/allow/support-reads-ticket.json").read_text())
    case["expect_awaiting"] = "human"
    awaiting_text = _write(root / "cases/allow/support-reads-ticket.json", case)
    stray, misfiled, awaiting = _case_problems(root)
    assert stray.startswith(f"{root / 'cases/held/x.json'}: never runs")
    expect = _position((root / "cases/allow/anomaly.json").read_text(), '"expect"')
    assert misfiled.startswith(f"{root / 'cases/allow/anomaly.json'}:{expect}: "
                               "filed under allow/")
    assert 'move it to cases/deny/' in misfiled
    key = _position(awaiting_text, '"expect_awaiting"')
    assert awaiting.startswith(f"{root / 'cases/allow/support-reads-ticket.json'}:{key}: ")
    assert "only for pending cases" in awaiting
    with pytest.raises(PolicyError):
        load_cases(root)


def test_a_failed_case_says_what_differed_at_the_lines_that_expect_it(
        make_bundle: BundleFactory) -> None:
    root = make_bundle()
    case = json.loads((root / "cases/deny/anomaly.json").read_text())
    case.update(expect_codes=["RATE_LIMIT"], expect_policy_ids=["guard-rate-any"])
    text = _write(root / "cases/deny/anomaly.json", case)
    result = next(r for r in run_cases(root) if r.name == "deny/anomaly")
    assert not result.ok and result.actual == result.expected == "deny"
    codes_line, ids_line = map(str, result.differences)
    where = root / "cases/deny/anomaly.json"
    codes_at, ids_at = _position(text, '"expect_codes"'), _position(text, '"expect_policy_ids"')
    assert codes_line == (f"{where}:{codes_at}: missing codes ['RATE_LIMIT']: "
                          "expected ['RATE_LIMIT'], got ['ANOMALY']")
    assert ids_line.startswith(f"{where}:{ids_at}: ")
    assert "got ['guard-anomaly']" in ids_line
    assert result.notes[0].startswith("decided deny by ANOMALY [guard-anomaly]: ")
    assert "expected deny, got deny" not in result.detail


def test_pending_and_approval_cases_say_whom_they_await_and_what_approved(
        make_bundle: BundleFactory) -> None:
    root = make_bundle()
    case = json.loads((root / "cases/pending/agent-claims-its-own-approval.json").read_text())
    case["request"]["resource"]["id"] = "holdgate-sandbox"      # staging: simply allowed
    _write(root / "cases/pending/agent-claims-its-own-approval.json", case)
    case = json.loads((root / "cases/allow/billing-large-refund-approved.json").read_text())
    case["approval"] = {"role": "finance", "approver": "omar"}     # not the role it needs
    _write(root / "cases/allow/billing-large-refund-approved.json", case)
    results = {r.name: r for r in run_cases(root)}
    pending = results["pending/agent-claims-its-own-approval"]
    assert [d.message for d in pending.differences][:2] == [
        "expected pending, got allow",
        "expected to await 'human', awaits nobody (decided allow)"]
    approved = results["allow/billing-large-refund-approved"]
    assert approved.differences[0].message == "expected allow, got pending"
    assert approved.notes == (
        ("decided pending awaiting 'human' by APPROVAL_REQUIRED [refund-over-limit]: "
        "refunds above 500.00 need a human approval"),
        'with a verified approval of role "finance" by "omar" in context.approval')
