"""Policy bundles: a folder of Cedar policies, schema and entities, parsed once.

A bundle is what the analyst publishes and what every verdict names, so it is
loaded strictly: any problem (a missing file, a syntax error, a policy that
does not type-check against the schema, an entity that breaks the schema, a
policy without a unique ``@id``) refuses the whole bundle with a
:class:`~holdgate.errors.PolicyError` whose message names the file and, where
Cedar allows, the line or the policy.  A worker keeps deciding with the bundle
it already has rather than half-load a broken one.

Layout (after cedar-policy/cedar-examples)::

    <bundle>/policy.cedar          policies; each one carries @id and @reason
    <bundle>/schema.cedarschema    Cedar schema (human-readable syntax)
    <bundle>/entities.json         agents, their roles/teams, known resources
    <bundle>/cases/{allow,deny}/*.json   data-driven expectations (not hashed)

Parsing happens once, into cedarpy handles that the engine reuses for every
batch.  The policy set is rebuilt keyed by each policy's ``@id``, so Cedar's own
diagnostics (determining policies, evaluation errors) already speak in the
ids that verdicts cite, with no positional ``policy0`` to translate.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import cedarpy

from holdgate.errors import PolicyError
from holdgate.policies.projection import CONTEXT_SIGNALS, Projection, project
from holdgate.signals import SIGNAL_NAMES  # noqa: F401  (re-exported: policies read them)

__all__ = [
    "POLICY_FILE", "SCHEMA_FILE", "ENTITIES_FILE", "CASES_DIR", "PRINCIPAL_TYPE",
    "SIGNAL_NAMES", "PolicyInfo", "PolicyBundle", "bundle_version", "default_bundle_path",
]

POLICY_FILE = "policy.cedar"
SCHEMA_FILE = "schema.cedarschema"
ENTITIES_FILE = "entities.json"
CASES_DIR = "cases"
#: Hashed, in this order, into ``bundle.version``.  Cases are deliberately left
#: out: adding a test must not change the version every verdict cites.
BUNDLE_FILES = (POLICY_FILE, SCHEMA_FILE, ENTITIES_FILE)
#: Every request's principal is ``Agent::"<agent_id>"``.
PRINCIPAL_TYPE = "Agent"
_CONTEXT_SIGNALS = CONTEXT_SIGNALS
_CONTEXT = {"Var": "context"}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# In Cedar's canonical schema rendering (str(Schema)) every declaration starts
# at column 0, one per line, so these anchors are reliable there.
_ENTITY_DECL_RE = re.compile(r"^entity ([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
_NAMESPACE_RE = re.compile(r"^namespace\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What a verdict needs to know about one policy: its id and annotations."""

    id: str
    effect: Literal["permit", "forbid"]
    reason: str
    code: str | None
    line: int
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PolicyBundle:
    """A validated bundle: cedarpy handles plus the lookups the engine needs.

    Build it with :meth:`load` (a folder) or :meth:`from_sources` (texts, e.g.
    off the policy topic); never by hand, because the handles and lookups
    must agree with each other.
    """

    path: Path | None
    version: str
    policy_ids: tuple[str, ...]
    policies: Mapping[str, PolicyInfo]
    entity_types: frozenset[str]
    action_ids: frozenset[str]
    agent_ids: frozenset[str]
    agent_roles: Mapping[str, str]
    entity_uids: frozenset[tuple[str, str]]
    signals_read: tuple[str, ...] | None
    projection: Projection
    policy_set: cedarpy.PolicySet
    permit_set: cedarpy.PolicySet
    schema: cedarpy.Schema
    entities: cedarpy.Entities
    sources: Mapping[str, str]

    @classmethod
    def load(cls, path: str | Path) -> PolicyBundle:
        """Read, parse and validate the bundle folder at ``path``."""
        root = Path(path)
        if not root.is_dir():
            raise PolicyError(f"cannot load policy bundle {root}:\n  not a directory")
        texts: dict[str, str] = {}
        problems: list[str] = []
        for name in BUNDLE_FILES:
            try:
                texts[name] = (root / name).read_text(encoding="utf-8")
            except FileNotFoundError:
                problems.append(f"{name}: missing (a bundle needs {', '.join(BUNDLE_FILES)})")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{name}: cannot read: {exc}")
        if problems:
            raise _bundle_error(str(root), problems)
        return cls.from_sources(policy=texts[POLICY_FILE], schema=texts[SCHEMA_FILE],
                                entities=texts[ENTITIES_FILE], path=root)

    @classmethod
    def from_sources(cls, *, policy: str, schema: str, entities: str,
                     path: Path | None = None, origin: str | None = None) -> PolicyBundle:
        """Parse and validate a bundle given as texts; ``origin`` names it in errors."""
        where = origin or (str(path) if path is not None else "<memory>")
        schema_handle = _parse_schema(schema, where)
        entity_types = _entity_types(schema_handle, where)
        infos, est = _parse_policies(policy, where)
        _validate_policies(policy, schema_handle, infos, where)
        entities_handle, uids = _parse_entities(entities, schema_handle, where)
        agent_roles = _agent_roles(entities)
        try:
            policy_set = cedarpy.PolicySet.from_json_str(json.dumps(est))
            # Permits alone: whether a request held by an approvable forbid would
            # otherwise be allowed (then it waits for an approval instead of a deny).
            permit_set = cedarpy.PolicySet.from_json_str(json.dumps(
                {"staticPolicies": {k: v for k, v in est["staticPolicies"].items()
                                    if v.get("effect") == "permit"},
                 "templates": {}, "templateLinks": []}))
        except ValueError as exc:  # pragma: no cover - Cedar produced this EST itself
            raise _bundle_error(
                where, [f"{POLICY_FILE}: cannot re-key policies by @id: {exc}"]) from exc
        signals_read = _signals_read(est, where)
        projection = project(est, signals_read if signals_read is not None else SIGNAL_NAMES)
        sources = {POLICY_FILE: policy, SCHEMA_FILE: schema, ENTITIES_FILE: entities}
        return cls(
            path=path,
            version=bundle_version(sources),
            policy_ids=tuple(info.id for info in infos),
            policies={info.id: info for info in infos},
            entity_types=entity_types,
            action_ids=frozenset(i for t, i in uids if t == "Action"),
            agent_ids=frozenset(i for t, i in uids if t == PRINCIPAL_TYPE),
            agent_roles=agent_roles,
            entity_uids=frozenset(uids),
            signals_read=signals_read,
            projection=projection,
            policy_set=policy_set,
            permit_set=permit_set,
            schema=schema_handle,
            entities=entities_handle,
            sources=sources,
        )

    def __repr__(self) -> str:
        return (f"PolicyBundle(path={str(self.path)!r}, version={self.version!r}, "
                f"policies={len(self.policy_ids)}, agents={len(self.agent_ids)})")


def bundle_version(sources: Mapping[str, str]) -> str:
    """``sha256:<hex>`` over the bundle files, in a fixed order, each with its name.

    Line endings are normalised to LF first, so a Windows checkout
    (``core.autocrlf``) of the same bundle reports the same version.
    """
    digest = hashlib.sha256()
    for name in BUNDLE_FILES:
        data = sources[name].replace("\r\n", "\n").encode("utf-8")
        digest.update(f"{name}\0{len(data)}\0".encode("ascii"))
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def default_bundle_path() -> Path:
    """Folder of the bundle shipped with holdgate (package data of holdgate.policies)."""
    return Path(str(importlib.resources.files(__package__ or "holdgate.policies") / "default"))


# --------------------------------------------------------------- internals --

def _bundle_error(where: str, problems: list[str]) -> PolicyError:
    lines = "\n".join(f"  {p}" for p in problems)
    return PolicyError(f"cannot load policy bundle {where}:\n{lines}")


def _parse_schema(text: str, where: str) -> cedarpy.Schema:
    try:
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise _bundle_error(where, [f"{SCHEMA_FILE}: {exc}"]) from None


def _entity_types(schema: cedarpy.Schema, where: str) -> frozenset[str]:
    """Entity types the schema declares, read from Cedar's canonical rendering.

    Resource types on the wire are bare CamelCase names, so a namespaced
    schema could never match one: refuse it rather than deny everything.
    """
    canonical = str(schema)
    if _NAMESPACE_RE.search(canonical):
        raise _bundle_error(where, [f"{SCHEMA_FILE}: namespaces are not supported; "
                                    "declare entity types and actions at top level"])
    types = frozenset(_ENTITY_DECL_RE.findall(canonical))
    if PRINCIPAL_TYPE not in types:
        raise _bundle_error(where, [f"{SCHEMA_FILE}: must declare `entity {PRINCIPAL_TYPE}` "
                                    "(every request's principal is an Agent)"])
    return types


def _split_statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar policy text at top-level ``;`` -> [(first line, statement)].

    Cedar's parser reports errors without positions; splitting lets us name
    the line of the offending policy and number policies like Cedar does.
    Strings (with escapes) and ``//`` comments are skipped so a ``;`` inside
    them does not split.
    """
    out: list[tuple[int, str]] = []
    start, line, start_line, i, n = 0, 1, None, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == '"':
            if start_line is None:
                start_line = line
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";":
            out.append((start_line or line, text[start:i + 1]))
            start, start_line = i + 1, None
        elif start_line is None and not ch.isspace():
            start_line = line
        i += 1
    if start_line is not None:
        out.append((start_line, text[start:]))
    return out


def _locate_parse_error(text: str) -> str:
    """`` line N`` of the first statement Cedar cannot parse on its own, else ``""``."""
    for line, statement in _split_statements(text):
        try:
            cedarpy.PolicySet.from_str(statement)
        except ValueError:
            return f" line {line}"
    return ""  # pragma: no cover - the whole fails but no part does


def _parse_policies(text: str, where: str) -> tuple[list[PolicyInfo], dict[str, Any]]:
    """Parse once for syntax, read annotations from the JSON form, re-key by @id."""
    try:
        cedarpy.PolicySet.from_str(text)
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise _bundle_error(where, [f"{POLICY_FILE}{_locate_parse_error(text)}: "
                                    f"syntax error: {exc}"]) from None
    problems: list[str] = []
    if est.get("templates"):
        problems.append(f"{POLICY_FILE}: templates (?principal/?resource) are not supported; "
                        "a bundle must contain only static policies")
    lines = [ln for ln, _ in _split_statements(text)]
    infos: list[PolicyInfo] = []
    by_id: dict[str, PolicyInfo] = {}
    static = est.get("staticPolicies", {})
    for position, (_cedar_id, policy) in enumerate(
            sorted(static.items(), key=lambda kv: int(kv[0].removeprefix("policy")))):
        line = lines[position] if position < len(lines) else 0
        annotations: dict[str, str] = {k: v or "" for k, v in policy.get("annotations", {}).items()}
        label = f"{POLICY_FILE} line {line} ({policy['effect']} #{position + 1})"
        pid = annotations.get("id", "")
        if not pid:
            problems.append(f"{label}: missing @id(\"...\"); every policy needs a unique id")
            continue
        if not _ID_RE.match(pid):
            problems.append(f"{label}: @id {pid!r} must be 1..128 of [A-Za-z0-9._:/-]")
            continue
        code = annotations.get("code")
        if code is not None and not _CODE_RE.match(code):
            problems.append(f"{label}: @code {code!r} must be UPPER_SNAKE_CASE")
        if code is not None and policy["effect"] != "forbid":
            problems.append(f"{label}: @code belongs on forbid policies only")
        approval = annotations.get("approval")
        if approval is not None and (policy["effect"] != "forbid" or
                                     not _ID_RE.match(approval)):
            problems.append(f"{label}: @approval(\"<role>\") belongs on forbid policies only "
                            "and names the approver role, e.g. @approval(\"human\")")
        if pid in by_id:
            problems.append(f"{label}: duplicate @id {pid!r} (first at line {by_id[pid].line})")
            continue
        info = PolicyInfo(id=pid, effect=policy["effect"], line=line, code=code,
                          reason=annotations.get("reason") or f"{policy['effect']} policy {pid}",
                          annotations=annotations)
        by_id[pid] = info
        infos.append(info)
    if problems:
        raise _bundle_error(where, problems)
    est["staticPolicies"] = {info.id: static[cid] for info, cid in zip(
        infos, sorted(static, key=lambda k: int(k.removeprefix("policy"))))}
    return infos, est


def _validate_policies(text: str, schema: cedarpy.Schema, infos: list[PolicyInfo],
                       where: str) -> None:
    """Type-check every policy against the schema (Cedar's strict validator)."""
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return
    problems = []
    for err in result.errors:
        position = err.policy_id.removeprefix("policy")
        if position.isdigit() and int(position) < len(infos):
            info = infos[int(position)]
            problems.append(f"{POLICY_FILE} line {info.line} @id({info.id!r}): "
                            f"does not match {SCHEMA_FILE}: {err.error}")
        else:
            problems.append(f"{POLICY_FILE}: does not match {SCHEMA_FILE}: {err.error}")
    raise _bundle_error(where, problems)


def _signals_read(est: dict[str, Any], where: str) -> tuple[str, ...] | None:
    """Names of ``context.signals.<name>`` the policies read; None if they use the whole record.

    Cedar parses every context field on every request (about 1 µs each), so
    the engine sends only the signals some policy reads.  That is invisible to
    policies as long as they only ever read ``context.signals.<name>``; any
    other use of the record (``has``, ``==``, ...) or of ``context`` as a whole
    (``(if c then context else context).signals.x``, ``[context]``) gets the
    full record, as in :func:`holdgate.policies.projection.project`.
    """
    reads: set[str] = set()
    whole = False

    def walk(node: Any) -> None:
        nonlocal whole
        if isinstance(node, dict):
            dot = node.get(".")
            if isinstance(dot, dict) and dot.get("left") == _CONTEXT_SIGNALS:
                reads.add(dot.get("attr", ""))
                return
            if node == _CONTEXT_SIGNALS or node == _CONTEXT:
                whole = True
                return
            if len(node) == 1:
                (op, body), = node.items()
                if op in (".", "has") and isinstance(body, dict) \
                        and body.get("left") == _CONTEXT and isinstance(body.get("attr"), str):
                    # context.<key> or `context has <key>`: no signal, unless the key
                    # is the record itself (`context has signals`, as the projection).
                    whole = whole or body["attr"] == "signals"
                    return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    problems = []
    for pid, policy in est["staticPolicies"].items():
        before = set(reads)
        walk(policy.get("conditions", []))
        for name in sorted(reads - before - set(SIGNAL_NAMES)):
            problems.append(f"{POLICY_FILE} @id({pid!r}): reads context.signals.{name}, "
                            f"which holdgate does not compute (known: {', '.join(SIGNAL_NAMES)})")
    if problems:
        raise _bundle_error(where, problems)
    return None if whole else tuple(n for n in SIGNAL_NAMES if n in reads)


def _agent_roles(text: str) -> dict[str, str]:
    """Agent id -> role (its ``role`` attribute, else its first Role parent).

    The role is the prior a fitted baseline falls back on for an agent with
    little history, so it must come from the trusted entity store.
    """
    roles: dict[str, str] = {}
    for item in json.loads(text):
        uid = item.get("uid") or {}
        if uid.get("type") != PRINCIPAL_TYPE:
            continue
        role = (item.get("attrs") or {}).get("role")
        if not isinstance(role, str):
            role = next((p.get("id") for p in item.get("parents") or ()
                         if isinstance(p, dict) and p.get("type") == "Role"), None)
        if isinstance(role, str):
            roles[str(uid.get("id"))] = role
    return roles


def _parse_entities(text: str, schema: cedarpy.Schema,
                    where: str) -> tuple[cedarpy.Entities, set[tuple[str, str]]]:
    """Parse entities.json with the schema (which also adds the Action entities).

    Cedar only says *that* an entity breaks the schema, so on failure each
    entity is tried alone to name the offending uid(s).
    """
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bundle_error(where, [f"{ENTITIES_FILE} line {exc.lineno} column {exc.colno}: "
                                    f"invalid JSON: {exc.msg}"]) from None
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise _bundle_error(where, [f"{ENTITIES_FILE}: must be a JSON list of entity objects "
                                    '({"uid": {"type", "id"}, "attrs", "parents"})'])
    try:
        handle = cedarpy.Entities.from_json_str(text, schema)
    except ValueError as exc:
        problems = []
        for index, item in enumerate(items):
            try:
                cedarpy.Entities.from_json_str(json.dumps([item]), schema)
            except ValueError as one:
                uid = item.get("uid", {})
                problems.append(f"{ENTITIES_FILE} item {index} "
                                f"{uid.get('type')}::{json.dumps(uid.get('id'))}: {one} "
                                f"(check its type, attrs and parents against {SCHEMA_FILE})")
        raise _bundle_error(where, problems or [f"{ENTITIES_FILE}: {exc}"]) from None
    uids = {(e["uid"]["type"], e["uid"]["id"]) for e in json.loads(str(handle))}
    return handle, uids
