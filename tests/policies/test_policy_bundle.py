"""Loading policy bundles: strict refusal with messages that name file and problem."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from holdgate.errors import PolicyError
from holdgate.policies import (
    SIGNAL_NAMES,
    PolicyBundle,
    bundle_version,
    default_bundle_path,
)

BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """Copy the default bundle into tmp_path, then append/replace file contents."""
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


def _load_error(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        PolicyBundle.load(path)
    return str(info.value)


def test_default_bundle_loads_with_unique_annotated_policies() -> None:
    bundle = PolicyBundle.load(default_bundle_path())
    assert bundle.path == default_bundle_path()
    assert len(bundle.policy_ids) == len(set(bundle.policy_ids)) >= 20
    assert all(bundle.policies[pid].reason for pid in bundle.policy_ids)
    assert {"support-bot-1", "billing-bot-1", "coder-bot-1"} <= bundle.agent_ids
    assert {"Ticket", "Customer", "Payment", "Repository", "Record"} <= bundle.entity_types
    assert {"read", "write", "irreversible", "repo.push"} <= bundle.action_ids
    forbids = [bundle.policies[p] for p in bundle.policy_ids
               if bundle.policies[p].effect == "forbid"]
    assert {"RATE_LIMIT", "REPETITION", "FANOUT", "ANOMALY", "SENSITIVE_DATA",
            "PRODUCTION_CHANGE", "APPROVAL_REQUIRED"} <= {f.code for f in forbids}


def test_default_bundle_path_holds_the_bundle_files() -> None:
    root = default_bundle_path()
    for name in ("policy.cedar", "schema.cedarschema", "entities.json"):
        assert (root / name).is_file()
    assert list((root / "cases" / "allow").glob("*.json"))


def test_version_is_a_stable_content_hash(make_bundle: BundleFactory) -> None:
    first = PolicyBundle.load(default_bundle_path())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.version)
    assert PolicyBundle.load(default_bundle_path()).version == first.version
    # independent of where the bundle lives
    assert PolicyBundle.load(make_bundle()).version == first.version
    # ... and of CRLF checkouts
    crlf = make_bundle()
    text = (crlf / "policy.cedar").read_text()
    (crlf / "policy.cedar").write_bytes(text.replace("\n", "\r\n").encode())
    assert PolicyBundle.load(crlf).version == first.version


def test_version_changes_with_policies_but_not_with_cases(make_bundle: BundleFactory) -> None:
    base = PolicyBundle.load(default_bundle_path()).version
    edited = make_bundle(append={"policy.cedar": "\n// a harmless comment\n"})
    assert PolicyBundle.load(edited).version != base
    entities = make_bundle(replace={"entities.json": json.dumps(
        json.loads((default_bundle_path() / "entities.json").read_text())[:-1])})
    assert PolicyBundle.load(entities).version != base
    with_case = make_bundle()
    shutil.copy(with_case / "cases/allow/support-reads-ticket.json",
                with_case / "cases/allow/another.json")
    assert PolicyBundle.load(with_case).version == base


def test_bundle_version_hashes_names_in_fixed_order() -> None:
    a = {"policy.cedar": "x", "schema.cedarschema": "y", "entities.json": "[]"}
    swapped = {"policy.cedar": "y", "schema.cedarschema": "x", "entities.json": "[]"}
    assert bundle_version(a) == bundle_version(dict(reversed(list(a.items()))))
    assert bundle_version(a) != bundle_version(swapped)


def test_from_sources_matches_load() -> None:
    root = default_bundle_path()
    bundle = PolicyBundle.from_sources(
        policy=(root / "policy.cedar").read_text(),
        schema=(root / "schema.cedarschema").read_text(),
        entities=(root / "entities.json").read_text())
    assert bundle.path is None
    assert bundle.version == PolicyBundle.load(root).version


def test_syntax_error_names_file_and_line(make_bundle: BundleFactory) -> None:
    broken = '\n@id("broken")\npermit (principal, action, resource)\nwhen { context.x > };\n'
    root = make_bundle(append={"policy.cedar": broken})
    message = _load_error(root)
    assert str(root) in message and "policy.cedar" in message
    lines = (root / "policy.cedar").read_text().splitlines()
    # at the offending token: the `}` where the right operand of `>` should be
    line = lines.index("when { context.x > };") + 1
    column = lines[line - 1].index("}") + 1
    assert f"policy.cedar:{line}:{column}: syntax error" in message, message


def test_policy_not_matching_schema_is_refused(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("uses-ghost-attr")\n@reason("x")\n'
                                               "permit (principal, action == Action::\"repo.push\","
                                               " resource) when { resource.owner == \"me\" };\n"})
    message = _load_error(root)
    assert "policy.cedar" in message and "uses-ghost-attr" in message
    assert "schema.cedarschema" in message and "owner" in message


def test_policy_with_undeclared_entity_type_is_refused(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("ghost-type")\n@reason("x")\n'
                                               "permit (principal, action, resource is Ghost);\n"})
    message = _load_error(root)
    assert "ghost-type" in message and "Ghost" in message


@pytest.mark.parametrize("policy, expected", [
    ('@reason("no id")\npermit (principal, action, resource);', "missing @id"),
    ('@id("support-tickets")\npermit (principal, action, resource);', "duplicate @id"),
    ('@id("")\npermit (principal, action, resource);', "missing @id"),
    ('@id("bad code")\nforbid (principal, action, resource);', "@id 'bad code'"),
    ('@id("x")\n@code("not-upper")\nforbid (principal, action, resource);', "UPPER_SNAKE_CASE"),
    ('@id("x")\n@code("X")\npermit (principal, action, resource);', "forbid policies only"),
    ('@id("t")\npermit (principal == ?principal, action, resource);', "templates"),
    ('@id("x")\n@approval("human")\npermit (principal, action, resource);',
     '@approval("<role>") belongs on forbid policies only'),
    ('@id("x")\n@approval("two words")\nforbid (principal, action, resource);',
     "names the approver role"),
])
def test_policy_annotations_are_enforced(make_bundle: BundleFactory, policy: str,
                                         expected: str) -> None:
    message = _load_error(make_bundle(append={"policy.cedar": "\n" + policy + "\n"}))
    assert "policy.cedar" in message and expected in message


@pytest.mark.parametrize("annotation, effect", [
    ('@approval("human")', "permit"),
    ('@approval("two words")', "forbid"),
    ('@approval("")', "forbid"),
    ("@approval", "forbid"),
    ('@approval("-human")', "forbid"),
    ('@approval("human,finance")', "forbid"),
])
def test_a_misplaced_or_malformed_approval_is_refused_with_a_clear_message(
        make_bundle: BundleFactory, annotation: str, effect: str) -> None:
    root = make_bundle()
    with (root / "policy.cedar").open("a") as fh:
        fh.write(f'\n@id("x")\n{annotation}\n{effect} (principal, action, resource);\n')
    lines = (root / "policy.cedar").read_text().splitlines()
    line = len(lines) - lines[::-1].index(annotation)     # the appended @approval line
    assert lines[line - 2] == '@id("x")'
    message = _load_error(root)
    # the annotation by line and column, the policy by @id, the rule, and how to write it
    assert re.search(rf'policy\.cedar:{line}:1: @id\("x"\): ', message), message
    assert '@approval("<role>") belongs on forbid policies only' in message
    assert 'names the approver role, e.g. @approval("human")' in message
    assert message.count("@approval") == 2          # one problem: this policy's


def test_approvable_forbids_load(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("x")\n@code("X")\n@approval("finance")\n'
                                               "forbid (principal, action, resource);\n"})
    bundle = PolicyBundle.load(root)
    assert bundle.policies["x"].annotations["approval"] == "finance"
    default = PolicyBundle.load(default_bundle_path())
    approvable = {pid for pid, i in default.policies.items() if "approval" in i.annotations}
    assert approvable == {"restricted-data-approval", "restricted-records-approval",
                          "production-push-approval", "production-deploy-approval",
                          "refund-over-limit", "bulk-email-approval"}
    assert all(default.policies[p].effect == "forbid"
               and default.policies[p].annotations["approval"] == "human" for p in approvable)


def test_policy_reading_an_unknown_signal_is_refused(make_bundle: BundleFactory) -> None:
    root = make_bundle(append={"policy.cedar": '\n@id("reads-foo")\n@code("X")\n'
                                               "forbid (principal, action, resource) "
                                               "when { context.signals.foo > 1 };\n"})
    schema = (root / "schema.cedarschema").read_text()
    schema = schema.replace("anomaly: Long,", "anomaly: Long, foo: Long,")
    (root / "schema.cedarschema").write_text(schema)
    message = _load_error(root)
    assert "reads-foo" in message and "context.signals.foo" in message


def test_signals_read_lists_only_what_policies_read(make_bundle: BundleFactory) -> None:
    bundle = PolicyBundle.load(default_bundle_path())
    assert bundle.signals_read is not None
    assert set(bundle.signals_read) <= set(SIGNAL_NAMES)
    assert {"rate_1s", "rate_1s_pct", "repeat_10s", "fanout_pct", "anomaly"} <= \
        set(bundle.signals_read)
    whole = make_bundle(append={"policy.cedar": '\n@id("streak-guard")\n@code("REPETITION")\n'
                                                "forbid (principal, action, resource) when "
                                                "{ context.signals has streak && "
                                                "context.signals.streak > 50 };\n"})
    assert PolicyBundle.load(whole).signals_read is None


def test_entities_not_matching_schema_name_the_entity(make_bundle: BundleFactory) -> None:
    entities = json.loads((default_bundle_path() / "entities.json").read_text())
    entities.append({"uid": {"type": "Customer", "id": "cus-bad"},
                     "attrs": {"pii_level": 3}, "parents": []})
    text = json.dumps(entities, indent=2)     # one entity over several lines
    root = make_bundle(replace={"entities.json": text})
    message = _load_error(root)
    assert "entities.json" in message and 'Customer::"cus-bad"' in message
    # at the offending value: the bad entity's pii_level
    offset = text.rindex('"pii_level": 3') + len('"pii_level": ')
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    assert f"entities.json:{line}:{column}: " in message, message


def test_entities_with_invalid_json_name_line(make_bundle: BundleFactory) -> None:
    text = '[\n  {"uid": }\n]'
    message = _load_error(make_bundle(replace={"entities.json": text}))
    column = text.splitlines()[1].index("}") + 1             # the `}` where a value belongs
    assert f"entities.json:2:{column}: invalid JSON" in message, message


def test_schema_syntax_error_names_schema(make_bundle: BundleFactory) -> None:
    message = _load_error(make_bundle(append={"schema.cedarschema": "\nentity Broken {\n"}))
    assert "schema.cedarschema" in message


def test_namespaced_schema_is_refused(make_bundle: BundleFactory) -> None:
    namespaced = "\nnamespace Acme { entity X; }\n"
    message = _load_error(make_bundle(append={"schema.cedarschema": namespaced}))
    assert "namespaces are not supported" in message


def test_missing_file_and_missing_folder(make_bundle: BundleFactory, tmp_path: Path) -> None:
    root = make_bundle()
    (root / "schema.cedarschema").unlink()
    message = _load_error(root)
    assert "schema.cedarschema: missing" in message
    assert "not a directory" in _load_error(tmp_path / "nope")
