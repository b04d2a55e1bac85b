"""Bundle checks that turn Cedar's bare messages into located, actionable problems.

Cedar decides whether a bundle is valid; these functions say *where* and
*why* in words a policy author can act on, and add the checks Cedar cannot
make because they depend on how holdgate runs it:

* the worker evaluates requests without the schema (agents send context keys
  it does not list), so a request may pair an action with a resource type its
  ``appliesTo`` does not declare.  Cedar's validator assumes it never does, so
  a policy that reads ``resource.environment`` for ``repo.push`` type-checks
  and then denies every ``repo.push`` on a ``Ticket`` with ``POLICY_ERROR``.
  :func:`applies_to_problems` re-validates with every ``appliesTo`` widened to
  all declared types, and flags scopes that pair a listed action with a
  resource type it does not apply to;
* Cedar says only that an entity "does not conform to the schema":
  :func:`entity_problems` names the attribute, the parent or the type.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cedarpy

from holdgate.policies.cedar_source import PolicySource, locate_snippet, locate_syntax_error
from holdgate.policies.diagnostics import Problem, TextFile, describe, json_positions
from holdgate.policies.schema_info import SchemaInfo
from holdgate.policies.validation_errors import locate_validation_error, normalize_validation

__all__ = ["applies_to_problems", "entity_problems", "syntax_problem", "validation_problems"]

_FOR_ACTION_RE = re.compile(r'\s*for Action::"((?:[^"\\]|\\.)*)"')
_ON_TYPE_RE = re.compile(r"attribute `([^`]+)` on entity type `([^`]+)` not found")
_OPTIONAL_RE = re.compile(r"optional attribute `([^`]+)`( in context)?")
_SHOWN = 4
_INTERNAL_TYPES = (
    ("__cedar::internal::AnyEntity", "an entity"), ("__cedar::internal::OpenRecord{}", "a record"),
    ("__cedar::internal::True", "true"), ("__cedar::internal::False", "false"),
    ("__cedar::", ""),
)
_HINTS = (
    ("unrecognized entity type", "declare it with `entity <Name>` in {schema} or fix the name"),
    ("unrecognized action", "declare the action in {schema} or fix its name"),
    ("applicable action", ("no action in this scope applies to its principal and resource "
                          "types: check the actions' appliesTo in {schema}")),
    ("not found", "use an attribute {schema} declares, or declare it there"),
    ("type", "compare values of the same type; {schema} gives each attribute's type"),
)
_SCHEMA_HINTS = (
    ("failed to resolve type", ("declare the type (`type X = {...};` or `entity X;`) or fix "
                               "its name")),
    ("declared twice", "remove one of the declarations"),
    ("missing `resource`", "an action's appliesTo lists its principal and resource types"),
)
def _is_list(value: Any) -> bool:
    return isinstance(value, list)


_JSON_TYPES: Mapping[str, Callable[[Any], bool]] = {
    "String": lambda v: isinstance(v, str),
    "Long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "Bool": lambda v: isinstance(v, bool),
}

Validate = Callable[[str], list[str]]


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _validator(schema: cedarpy.Schema) -> Validate:
    def validate(text: str) -> list[str]:
        return [normalize_validation(e.error)
                for e in cedarpy.validate_policies(text, schema).errors]
    return validate


def syntax_problem(file: TextFile, message: str, schema_file: str) -> Problem:
    """The first syntax error of ``file`` (policies, or the schema if it is ``schema_file``)."""
    is_schema = file.name.endswith(schema_file)
    parse: Callable[[str], Any] = cedarpy.Schema.from_str if is_schema \
        else cedarpy.PolicySet.from_str
    offset, found = locate_syntax_error(file.text, parse, message, statements=not is_schema)
    found = found.removeprefix("error parsing schema: ")
    grammar = found.startswith(("unexpected", "invalid token"))
    kind = "syntax error" if grammar or not is_schema else "schema error"
    for key, advice in _SCHEMA_HINTS:
        if is_schema and key in found:
            return file.at(offset, f"{kind}: {found} ({advice})")
    hint = ("a policy ends with `;`" if "end of input" in found and not is_schema
            else "see the Cedar syntax: https://docs.cedarpolicy.com/"
            + ("schema/human-readable-schema.html" if is_schema
               else "policies/syntax-policy.html"))
    return file.at(offset, f"{kind}: {found} ({hint})")


def validation_problems(file: TextFile, sources: Sequence[PolicySource], ids: Sequence[str],
                        errors: Sequence[tuple[str, str]], schema: cedarpy.Schema,
                        schema_file: str) -> list[Problem]:
    """Located problems for Cedar's (positional id, message) validation errors.

    One problem per policy and message: Cedar repeats a context error once per
    action, which are listed instead.
    """
    grouped: dict[tuple[int | None, str], list[str]] = {}
    first: dict[tuple[int | None, str], str] = {}
    for cedar_id, message in errors:
        position = cedar_id.removeprefix("policy")
        index = int(position) if position.isdigit() and int(position) < len(sources) else None
        text = normalize_validation(message)
        key = (index, _FOR_ACTION_RE.sub("", text))
        grouped.setdefault(key, []).extend(_FOR_ACTION_RE.findall(text))
        first.setdefault(key, text)
    validate = _validator(schema)
    problems = []
    for (index, base), actions in grouped.items():
        hint = next((h for k, h in _HINTS if k in base), "see {schema}").format(
            schema=schema_file)
        offset = None if index is None else locate_validation_error(
            file.text, sources[index], first[(index, base)], validate)
        optional = _OPTIONAL_RE.search(base)
        if optional:
            owner = "context" if optional.group(2) else _owner(file.text, offset)
            hint = (f"guard the access with `has`: `{owner} has {optional.group(1)} && "
                    "...`")
        text = _readable(base) + (f" (for {_listing(sorted(set(actions)))})" if actions else "")
        if index is None:
            problems.append(file.at(None, f"does not type-check against {schema_file}: "
                                          f"{text} ({hint})"))
            continue
        problems.append(file.at(offset, f"{ids[index]} does not type-check against "
                                        f"{schema_file}: {text} ({hint})"))
    return problems


def _readable(message: str) -> str:
    """Cedar's message without the names of its internal types."""
    for internal, shown in _INTERNAL_TYPES:
        message = message.replace(internal, shown)
    return message


def _owner(text: str, offset: int | None) -> str:
    """The expression an attribute at ``offset`` is read from (``resource`` in
    ``resource.region``), else ``<entity>``."""
    if offset is None:
        return "<entity>"
    m = re.search(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\.\s*$", text[max(0, offset - 200):offset])
    return m.group(1) if m else "<entity>"


def _scope(policy: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """(actions named in the scope, resource type the scope fixes) of an EST policy."""
    action = policy.get("action", {})
    named = [action["entity"]] if "entity" in action else action.get("entities", [])
    actions = [str(e["id"]) for e in named
               if isinstance(e, dict) and e.get("type") == "Action" and "id" in e]
    resource = policy.get("resource", {})
    kind = resource.get("entity_type") if resource.get("op") == "is" else \
        (resource.get("entity") or {}).get("type") if resource.get("op") == "==" else None
    return actions, kind if isinstance(kind, str) else None


def applies_to_problems(file: TextFile, sources: Sequence[PolicySource], ids: Sequence[str],
                        static: Sequence[Mapping[str, Any]], info: SchemaInfo, principal: str,
                        schema_file: str) -> list[Problem]:
    """Policies that misbehave on an action used with a resource type it is not declared for.

    ``static``: the EST policies in Cedar's order (parallel to ``sources`` and ``ids``).
    """
    problems: list[Problem] = []
    declared: list[list[str]] = []
    for source, pid, policy in zip(sources, ids, static):
        actions, kind = _scope(policy)
        applies = [a for a in actions if a in info.applies_to]
        members = sorted({m for a in actions for m in info.members(a)})
        declared.append(sorted({t for m in members for t in info.applies_to[m][1]}))
        if kind is None or kind not in info.entity_types:
            continue
        for action in applies:
            types = sorted(info.applies_to[action][1])
            if kind in types:
                continue
            offset = locate_snippet(file.text, source.head[0], source.head[1],
                                    f"`Action::{json.dumps(action)}`", default=source.effect)
            problems.append(file.at(offset, (
                f"{pid}: action {json.dumps(action)} does not apply to resource type "
                f"{kind} ({schema_file} declares it for {_listing(types) or 'no type'}), yet "
                f"this scope pairs them, and the worker does decide such requests (remove it "
                f"from the scope, or add {kind} to its appliesTo)")))
    try:
        widened = cedarpy.Schema.from_str(info.widened(principal))
    except ValueError:          # pragma: no cover - the canonical rendering parses
        return problems
    validate = _validator(widened)
    types_of: dict[tuple[int, str], list[str]] = {}
    original: dict[tuple[int, str], str] = {}
    for error in cedarpy.validate_policies(file.text, widened).errors:
        position = error.policy_id.removeprefix("policy")
        if not position.isdigit() or int(position) >= len(sources):
            continue
        text = normalize_validation(error.error)
        m = _ON_TYPE_RE.search(text)
        key = (int(position), f"attribute `{m.group(1)}`" if m else _FOR_ACTION_RE.sub("", text))
        types_of.setdefault(key, []).append(m.group(2) if m else "")
        original.setdefault(key, text)
    for (index, what), types in types_of.items():
        offset = locate_validation_error(file.text, sources[index], original[(index, what)],
                                         validate)
        fix = (f"scope it with `resource is {declared[index][0]}`" if len(declared[index]) == 1
               else "scope it to the resource types its actions are declared for")
        if any(types):
            what = f"reads {what}, which {_listing(sorted(set(types)))} do not have"
            fix += ", or guard the access with `has`"
        else:
            what = f"fails to type-check ({what})"
        problems.append(file.at(offset, (
            f"{ids[index]}: {what}; the worker still sends Cedar actions on resource types "
            f"their appliesTo in {schema_file} does not list, and this policy then denies "
            f"them with POLICY_ERROR ({fix})")))
    return problems


def entity_problems(file: TextFile, items: Sequence[Any], schema: cedarpy.Schema,
                    info: SchemaInfo, cedar_message: str, schema_file: str) -> list[Problem]:
    """Why each entity of entities.json that Cedar refuses does not conform, where it is."""
    where = json_positions(file.text)
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        uid = item.get("uid") if isinstance(item.get("uid"), dict) else {}
        kind, ident = uid.get("type"), uid.get("id")
        label = f"{kind}::{json.dumps(ident)}"

        def at(path: tuple[Any, ...], message: str, *, key: bool = True,
               index: int = index, label: str = label) -> None:
            problems.append(file.at(where.of((index, *path), key=key), f"{label}: {message}"))

        if not (isinstance(kind, str) and isinstance(ident, str)):
            at(("uid",), 'uid must be {"type": "<EntityType>", "id": "<id>"} (both strings)')
            continue
        if (kind, ident) in seen:
            line = file.position(where.of((seen[(kind, ident)],)) or 0)[0]
            at((), f"duplicate entity (first at line {line}; keep one)", key=False)
            continue
        seen[(kind, ident)] = index
        try:
            cedarpy.Entities.from_json_str(json.dumps([item]), schema)
            continue
        except ValueError as exc:
            message = str(exc)
        before = len(problems)
        _explain(item, info, at, schema_file)
        if len(problems) == before:
            at((), f"{message} (check its type, attrs and parents against {schema_file})",
               key=False)
    return problems or [file.at(None, f"{cedar_message} (check the entities against "
                                      f"{schema_file})")]


def _explain(item: Mapping[str, Any], info: SchemaInfo, at: Callable[..., None],
             schema_file: str) -> None:
    """Report what makes one entity break the schema: its type, attributes or parents."""
    kind = item["uid"]["type"]
    if kind == "Action":
        at(("uid",), f"actions come from {schema_file}, not entities.json (remove it)")
        return
    if kind not in info.entity_types:
        at(("uid", "type"), f"entity type {json.dumps(kind)} is not declared in {schema_file} "
                            f"(declared: {', '.join(sorted(info.entity_types))})", key=False)
        return
    attrs = item.get("attrs", {})
    declared = info.attributes.get(kind, {})
    names = ", ".join(f"{a}{'' if d.required else '?'}" for a, d in declared.items()) or "none"
    if not isinstance(attrs, dict):
        at(("attrs",), "attrs must be an object")
        return
    for name, value in attrs.items():
        if name not in declared:
            at(("attrs", name), f"attribute {json.dumps(name)} is not declared for {kind} in "
                                f"{schema_file} (declared: {names})")
            continue
        check = _JSON_TYPES.get(declared[name].type)
        if declared[name].type.startswith("Set<"):
            check = _is_list
        if check is not None and not check(value):
            at(("attrs", name), f"attribute {json.dumps(name)} is {describe(value)}, but "
                                f"{schema_file} declares it {declared[name].type}", key=False)
    for name, spec in declared.items():
        if spec.required and name not in attrs:
            at(("attrs",), f"missing required attribute {json.dumps(name)} ({spec.type})")
    allowed = info.parents.get(kind, frozenset())
    for position, parent in enumerate(item.get("parents") or ()):
        ptype = parent.get("type") if isinstance(parent, dict) else None
        if ptype in allowed:
            continue
        what = (f"cannot be in {ptype}::{json.dumps(parent.get('id'))}"
                if isinstance(parent, dict) else 'a parent must be {"type": ..., "id": ...}')
        at(("parents", position), f"{what} ({schema_file} allows {kind} in "
                                  f"{', '.join(sorted(allowed)) or 'no type'})", key=False)
