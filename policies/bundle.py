"""Policy bundles: a folder of Cedar policies, schema and entities, parsed once.

A bundle is what the analyst publishes and what every verdict names, so it is
loaded strictly: any problem (a missing file, a syntax error, a policy that
does not type-check against the schema, an entity that breaks the schema, a
policy without a unique ``@id``) refuses the whole bundle with a
:class:`~holdgate.policies.diagnostics.BundleProblems` (a
:class:`~holdgate.errors.PolicyError`): one ``file:line:col: problem (fix)``
line per problem, found by :mod:`holdgate.policies.checks` because Cedar's
own messages carry no position.  A worker keeps deciding with the bundle it
already has rather than half-load a broken one.  What Cedar accepts but the
worker would still trip on (an action used with a resource type outside its
``appliesTo``) is :mod:`holdgate.policies.lint`'s, reported by ``holdgate
policy validate``.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from holdgate.policies.cedar_source import PolicySource, locate_snippet
from holdgate.policies.checks import entity_problems, syntax_problem
from holdgate.policies.diagnostics import (
    BundleProblems,
    Problem,
    TextFile,
    json_positions,
    json_syntax_problem,
)
from holdgate.policies.policy_text import (
    PolicyInfo,
    parse_policies,
    split_statements,
    validate_policies,
)
from holdgate.policies.projection import CONTEXT_SIGNALS, Projection, project
from holdgate.policies.schema_info import SchemaInfo, read_schema
from holdgate.signals import SIGNAL_NAMES  # re-exported: policies read them

__all__ = [
    "CASES_DIR",
    "ENTITIES_FILE",
    "POLICY_FILE",
    "PRINCIPAL_TYPE",
    "SCHEMA_FILE",
    "SIGNAL_NAMES",
    "PolicyBundle",
    "PolicyInfo",
    "bundle_version",
    "default_bundle_path",
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

# In Cedar's canonical schema rendering (str(Schema)) every declaration starts
# at column 0, one per line, so these anchors are reliable there.
_ENTITY_DECL_RE = re.compile(r"^entity ([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
_NAMESPACE_RE = re.compile(r"^namespace\b", re.MULTILINE)


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
    #: action -> the resource types its ``appliesTo`` declares (actions without
    #: one, i.e. groups, are absent); a request outside it still reaches Cedar.
    applies_to: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> PolicyBundle:
        """Read, parse and validate the bundle folder at ``path``."""
        root = Path(path)
        if not root.is_dir():
            raise BundleProblems(str(root), [Problem(str(root), None, None, "not a directory "
                                                     "(give the bundle's folder)")])
        texts: dict[str, str] = {}
        problems: list[Problem] = []
        for name in BUNDLE_FILES:
            try:
                texts[name] = (root / name).read_text(encoding="utf-8")
            except FileNotFoundError:
                problems.append(Problem(str(root / name), None, None, "missing (a bundle needs "
                                        f"{', '.join(BUNDLE_FILES)})"))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(root / name), None, None, f"cannot read: {exc}"))
        if problems:
            raise BundleProblems(str(root), problems)
        return cls.from_sources(policy=texts[POLICY_FILE], schema=texts[SCHEMA_FILE],
                                entities=texts[ENTITIES_FILE], path=root)

    @classmethod
    def from_sources(cls, *, policy: str, schema: str, entities: str,
                     path: Path | None = None, origin: str | None = None) -> PolicyBundle:
        """Parse and validate a bundle given as texts; ``origin`` names it in errors.

        Every problem that can be found is reported at once (a broken schema
        stops early: nothing else can be checked without it).
        """
        where = origin or (str(path) if path is not None else "<memory>")
        files = {name: TextFile.in_bundle(path, name, text) for name, text in
                 ((POLICY_FILE, policy), (SCHEMA_FILE, schema), (ENTITIES_FILE, entities))}
        schema_handle = _parse_schema(files[SCHEMA_FILE], where)
        info = read_schema(schema_handle)
        entity_types = _entity_types(info, files[SCHEMA_FILE], where)
        problems: list[Problem] = []
        parsed = parse_policies(files[POLICY_FILE], problems, SCHEMA_FILE)
        if parsed is not None:
            problems += validate_policies(files[POLICY_FILE], parsed[0], parsed[1],
                                          schema_handle, SCHEMA_FILE)
        entities_handle, uids = _parse_entities(files[ENTITIES_FILE], schema_handle, info,
                                                problems)
        if problems or parsed is None or entities_handle is None:
            raise BundleProblems(where, problems)
        sources_, infos, est = parsed
        signals_read = _signals_read(est, files[POLICY_FILE], sources_, where)
        try:
            policy_set = cedarpy.PolicySet.from_json_str(json.dumps(est))
            # Permits alone: whether a request held by an approvable forbid would
            # otherwise be allowed (then it waits for an approval instead of a deny).
            permit_set = cedarpy.PolicySet.from_json_str(json.dumps(
                {"staticPolicies": {k: v for k, v in est["staticPolicies"].items()
                                    if v.get("effect") == "permit"},
                 "templates": {}, "templateLinks": []}))
        except ValueError as exc:  # pragma: no cover - Cedar produced this EST itself
            raise BundleProblems(where, [files[POLICY_FILE].at(
                None, f"cannot re-key policies by @id: {exc}")]) from exc
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
            agent_roles=_agent_roles(entities),
            entity_uids=frozenset(uids),
            signals_read=signals_read,
            projection=projection,
            policy_set=policy_set,
            permit_set=permit_set,
            schema=schema_handle,
            entities=entities_handle,
            sources=sources,
            applies_to={action: resources
                        for action, (_, resources) in info.applies_to.items()},
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

def _parse_schema(file: TextFile, where: str) -> cedarpy.Schema:
    try:
        return cedarpy.Schema.from_str(file.text)
    except ValueError as exc:
        raise BundleProblems(where, [syntax_problem(file, str(exc), SCHEMA_FILE)]) from None


def _entity_types(info: SchemaInfo, file: TextFile, where: str) -> frozenset[str]:
    """Entity types the schema declares, read from Cedar's canonical rendering.

    Resource types on the wire are bare CamelCase names, so a namespaced
    schema could never match one: refuse it rather than deny everything.
    """
    namespace = re.search(r"^\s*namespace\b", file.text, re.MULTILINE)
    if namespace or _NAMESPACE_RE.search(info.canonical):
        raise BundleProblems(where, [file.at(
            namespace.start() + namespace.group().index("n") if namespace else None,
            "namespaces are not supported (declare entity types and actions at top level)")])
    types = frozenset(_ENTITY_DECL_RE.findall(info.canonical))
    if PRINCIPAL_TYPE not in types:
        raise BundleProblems(where, [file.at(None, f"must declare `entity {PRINCIPAL_TYPE}` "
                                                   "(every request's principal is an Agent)")])
    return types


#: For ``stream/explain.py``, which imports it by this name.
_split_statements = split_statements


def _signals_read(est: dict[str, Any], file: TextFile, sources: list[PolicySource],
                  where: str) -> tuple[str, ...] | None:
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
    for source, (pid, policy) in zip(sources, est["staticPolicies"].items()):
        before = set(reads)
        walk(policy.get("conditions", []))
        for name in sorted(reads - before - set(SIGNAL_NAMES)):
            offset = locate_snippet(file.text, source.effect, source.end, f"`signals.{name}`",
                                    default=source.effect)
            problems.append(file.at(offset, (
                f"@id({json.dumps(pid)}): reads context.signals.{name}, which holdgate does "
                f"not compute (use one of: {', '.join(SIGNAL_NAMES)})")))
    if problems:
        raise BundleProblems(where, problems)
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


def _parse_entities(file: TextFile, schema: cedarpy.Schema, info: SchemaInfo,
                    problems: list[Problem]
                    ) -> tuple[cedarpy.Entities | None, set[tuple[str, str]]]:
    """Parse entities.json with the schema (which also adds the Action entities).

    Cedar only says *that* an entity breaks the schema, so on failure each
    entity is examined alone (:func:`holdgate.policies.checks.entity_problems`)
    to say which one, where, and why.  Problems go to ``problems``.
    """
    try:
        items = json.loads(file.text)
    except json.JSONDecodeError as exc:
        problems.append(json_syntax_problem(file, exc))
        return None, set()
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        where = json_positions(file.text)
        bad = next((i for i, e in enumerate(items) if not isinstance(e, dict)), None) \
            if isinstance(items, list) else None
        problems.append(file.at(where.of((bad,) if bad is not None else ()), (
            "must be a JSON list of entity objects "
            '({"uid": {"type", "id"}, "attrs", "parents"})')))
        return None, set()
    try:
        handle = cedarpy.Entities.from_json_str(file.text, schema)
    except ValueError as exc:
        problems.extend(entity_problems(file, items, schema, info, str(exc), SCHEMA_FILE))
        return None, set()
    uids = {(e["uid"]["type"], e["uid"]["id"]) for e in json.loads(str(handle))}
    return handle, uids
