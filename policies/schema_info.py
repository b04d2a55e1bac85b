"""What a bundle's schema declares, read from Cedar's own canonical rendering.

cedarpy offers no schema introspection, but ``str(cedarpy.Schema)`` renders
every schema (whatever syntax it was written in) in one canonical layout: one
declaration per block, each starting at column 0, members indented by two
spaces.  That is regular enough to read entity types, their attributes and
parents, and each action's ``appliesTo``: what holdgate's own checks need
(an action used on a resource type it was not declared for, an entity that
does not conform and why).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import cedarpy

__all__ = ["Attribute", "SchemaInfo", "read_schema"]

_ENTITY_HEAD_RE = re.compile(r"^entity ([A-Za-z_][A-Za-z0-9_]*)(?: in \[([^\]]*)\])?(.*)$")
_ACTION_HEAD_RE = re.compile(r'^action ("(?:[^"\\]|\\.)*")(?: in \[(.*?)\])?( appliesTo \{)?;?$')
_MEMBER_RE = re.compile(r'^  ("(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*)(\??): (.*?),?$')
_ACTION_REF_RE = re.compile(r'Action::("(?:[^"\\]|\\.)*")')
_APPLIES_LINE_RE = re.compile(r"^  (principal|resource): \[(.*)\](,?)$")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One declared attribute of an entity type."""

    required: bool
    type: str           # as Cedar renders it: String, Long, Set<String>, {, ...


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """The declarations of one (namespace-free) schema."""

    canonical: str
    entity_types: frozenset[str]
    attributes: Mapping[str, Mapping[str, Attribute]]
    parents: Mapping[str, frozenset[str]]
    #: action -> (principal types, resource types); only actions with appliesTo
    applies_to: Mapping[str, tuple[frozenset[str], frozenset[str]]]
    #: action -> the action groups it is declared ``in``
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def members(self, group: str) -> frozenset[str]:
        """Actions with appliesTo that are (transitively) in ``group``, or it itself."""
        found: set[str] = set()
        todo = [group]
        while todo:
            name = todo.pop()
            if name in self.applies_to and name not in found:
                found.add(name)
            todo.extend(a for a, gs in self.groups.items() if name in gs and a not in found)
        return frozenset(found)

    def widened(self, principal: str) -> str:
        """The schema with every appliesTo covering ``principal`` and every entity type.

        A policy that type-checks under it cannot fail at run time on a
        request that uses an action with a resource type it was not declared
        for, which the worker does send to Cedar (the engine checks only that
        the type exists).
        """
        every = ", ".join(sorted(self.entity_types))
        out: list[str] = []
        in_action = False
        for line in self.canonical.split("\n"):
            if line.startswith("action ") and line.endswith("appliesTo {"):
                in_action = True
            elif line == "};":
                in_action = False
            elif in_action and (m := _APPLIES_LINE_RE.match(line)):
                if m.group(1) == "resource":
                    line = f"  resource: [{every}]{m.group(3)}"
                else:
                    names = {n.strip() for n in m.group(2).split(",") if n.strip()}
                    line = f"  principal: [{', '.join(sorted(names | {principal}))}]{m.group(3)}"
            out.append(line)
        return "\n".join(out)


def _names(listed: str | None) -> frozenset[str]:
    return frozenset(n.strip() for n in (listed or "").split(",") if n.strip())


def read_schema(schema: cedarpy.Schema) -> SchemaInfo:
    """Read the declarations of a parsed schema (see the module docstring)."""
    canonical = str(schema)
    attributes: dict[str, dict[str, Attribute]] = {}
    parents: dict[str, frozenset[str]] = {}
    applies: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    groups: dict[str, frozenset[str]] = {}
    current: dict[str, Attribute] | None = None
    action: str | None = None
    principals: frozenset[str] = frozenset()
    for line in canonical.split("\n"):
        if m := _ENTITY_HEAD_RE.match(line):
            attributes[m.group(1)] = current = {}
            parents[m.group(1)] = _names(m.group(2))
            action = None
            if not m.group(3).rstrip().endswith("{"):
                current = None
        elif m := _ACTION_HEAD_RE.match(line):
            current = None
            name = json.loads(m.group(1))
            groups[name] = frozenset(json.loads(g) for g in _ACTION_REF_RE.findall(
                m.group(2) or ""))
            action = name if m.group(3) else None
            principals = frozenset()
        elif action is not None and (m := _APPLIES_LINE_RE.match(line)):
            if m.group(1) == "principal":
                principals = _names(m.group(2))
            else:
                applies[action] = (principals, _names(m.group(2)))
        elif current is not None and (m := _MEMBER_RE.match(line)):
            name = json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
            current[name] = Attribute(required=not m.group(2), type=m.group(3))
        elif line.startswith(("}", "};")):
            current = None
            if line == "};":
                action = None
    return SchemaInfo(canonical=canonical, entity_types=frozenset(attributes),
                      attributes=attributes, parents=parents, applies_to=applies, groups=groups)
