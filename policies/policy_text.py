"""Reading ``policy.cedar``: statements, annotations, Cedar validation, with positions.

Split from :mod:`holdgate.policies.bundle` so that the bundle module stays about
what a bundle *is*; this one is about reading its policy text strictly and
saying where each problem is (``policy.cedar:41:17: ...``), which Cedar's
own messages do not.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cedarpy

from holdgate.policies.cedar_source import PolicySource, split_policies
from holdgate.policies.checks import syntax_problem, validation_problems
from holdgate.policies.diagnostics import Problem, TextFile

__all__ = ["PolicyInfo", "parse_policies", "split_statements", "validate_policies"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What a verdict needs to know about one policy: its id and annotations."""

    id: str
    effect: Literal["permit", "forbid"]
    reason: str
    code: str | None
    line: int
    annotations: Mapping[str, str] = field(default_factory=dict)


def split_statements(text: str) -> list[tuple[int, str]]:
    """[(first line, statement text)] of each policy: for ``stream/explain.py``.

    The text of a statement runs from the end of the one before (comments
    included), as it always did; the line is that of its first token.
    """
    file = TextFile("", text)
    out, previous = [], 0
    for source in split_policies(text):
        out.append((file.position(source.start)[0], text[previous:source.end]))
        previous = source.end
    return out


def _annotation_at(source: PolicySource, name: str) -> int:
    """Offset of the ``@name`` annotation of a policy (else of its effect)."""
    tokens = source.tokens
    for i, token in enumerate(tokens[:-1]):
        if token.start >= source.effect:
            break
        if token.text == "@" and tokens[i + 1].text == name:
            return token.start
    return source.effect


def parse_policies(file: TextFile, problems: list[Problem], schema_file: str
                   ) -> tuple[list[PolicySource], list[PolicyInfo], dict[str, Any]] | None:
    """Parse once for syntax, read annotations from the JSON form, re-key by @id.

    Appends every problem to ``problems``; None if the text does not parse.
    """
    try:
        cedarpy.PolicySet.from_str(file.text)
        est = json.loads(cedarpy.policies_to_json_str(file.text))
    except ValueError as exc:
        problems.append(syntax_problem(file, str(exc), schema_file))
        return None
    before = len(problems)
    sources = split_policies(file.text)
    if est.get("templates"):
        problems.append(file.at(None, "templates (?principal/?resource) are not supported "
                                      "(a bundle must contain only static policies)"))
    infos: list[PolicyInfo] = []
    by_id: dict[str, PolicyInfo] = {}
    static = est.get("staticPolicies", {})
    cedar_ids = sorted(static, key=lambda k: int(k.removeprefix("policy")))
    for position, cedar_id in enumerate(cedar_ids):
        policy = static[cedar_id]
        source = sources[min(position, len(sources) - 1)]
        line = file.position(source.start)[0]
        annotations: dict[str, str] = {k: v or "" for k, v in policy.get("annotations", {}).items()}
        label = f"{policy['effect']} policy #{position + 1}"

        def problem(name: str, message: str, source: PolicySource = source) -> None:
            problems.append(file.at(_annotation_at(source, name), message))

        pid = annotations.get("id", "")
        if not pid:
            problem("id", f'{label}: missing @id("...") (every policy needs a unique id)')
            continue
        if not _ID_RE.match(pid):
            problem("id", f"{label}: @id {pid!r} must be 1..128 of [A-Za-z0-9._:/-]")
            continue
        label = f"@id({json.dumps(pid)})"
        code = annotations.get("code")
        if code is not None and not _CODE_RE.match(code):
            problem("code", f"{label}: @code {code!r} must be UPPER_SNAKE_CASE")
        if code is not None and policy["effect"] != "forbid":
            problem("code", f"{label}: @code belongs on forbid policies only")
        approval = annotations.get("approval")
        if approval is not None and (policy["effect"] != "forbid" or
                                     not _ID_RE.match(approval)):
            problem("approval", f'{label}: @approval("<role>") belongs on forbid policies only '
                                'and names the approver role, e.g. @approval("human")')
        if pid in by_id:
            problem("id", f"{label}: duplicate @id (first at line {by_id[pid].line}; "
                          "ids must be unique)")
            continue
        info = PolicyInfo(id=pid, effect=policy["effect"], line=line, code=code,
                          reason=annotations.get("reason") or f"{policy['effect']} policy {pid}",
                          annotations=annotations)
        by_id[pid] = info
        infos.append(info)
    if len(problems) > before:
        return None
    est["staticPolicies"] = {info.id: static[cid] for info, cid in zip(infos, cedar_ids)}
    return sources, infos, est


def validate_policies(file: TextFile, sources: list[PolicySource], infos: list[PolicyInfo],
                      schema: cedarpy.Schema, schema_file: str) -> list[Problem]:
    """Type-check every policy against the schema (Cedar's strict validator)."""
    result = cedarpy.validate_policies(file.text, schema)
    if result.validation_passed:
        return []
    return validation_problems(file, sources, [f"@id({json.dumps(i.id)})" for i in infos],
                               [(e.policy_id, e.error) for e in result.errors],
                               schema, schema_file)
