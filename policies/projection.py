"""What a bundle's policies can observe of a request: the key of the engine's decision cache.

Cedar evaluates a request by reading specific parts of it.  Two requests that
agree on every part the bundle's policies can read get the same decision, so
one full Cedar evaluation serves both.  This module derives, from the
policies' JSON form (EST), the parts that matter:

* **context keys** read as ``context.<key>`` or ``context has <key>``; any
  other use of ``context`` (compared or passed whole) makes the whole context
  matter, and with it the raw value of every signal;
* **resource attributes** read as ``resource.<attr>`` / ``resource has <attr>``
  (only for resources the request describes; entity-store resources are keyed
  by their uid, whose attributes and parents are fixed by the bundle);
* **resource ids**: Cedar cannot read an id, only compare a uid with an
  entity literal (``resource == Ticket::"T-1"``, ``resource in Folder::"f"``).
  A resource that is neither in the entity store nor named by a literal is
  indistinguishable from any other of its type, unless some policy compares
  ``resource`` with something that is not a literal, or asks whether something
  is *in* the resource (``Agent::"a" in resource``: a stored entity may name as
  parent a uid that is not itself in the store): then every id matters;
* **other entities' attributes**: an attribute or tag read (``.``, ``has``,
  ``hasTag``, ``getTag``) on anything but ``context``, ``resource`` or
  ``principal`` itself (``Ticket::"T-1".priority``, ``context.ref.priority``,
  ``principal.ticket.priority``) may land on the request's own resource under
  another name, so it makes every attribute of the resource, and its id,
  matter;
* **the worker's own records**: ``context.approval`` is set by the worker from a
  verified approval token (agents cannot send that key) and holds strings only,
  so ``context.approval.role`` reads context key ``approval``, not an entity;
* **signals**: a signal only ever compared with integer literals cannot be
  told apart within the same *bucket* between cut points (``> 20`` cuts at
  21); any other use makes its raw value matter.  Every cut list also cuts at
  the ends of Cedar's 64-bit range, so a value Cedar cannot hold (it fails the
  request) never shares a bucket with one it can.

The request's own data can matter beyond what the policies read: a Cedar
escape (``__extn``, ``__expr``, ``__entity``) anywhere in its context or
attributes can fail the whole request or name an entity; the engine keys such
a request by all of its data (``PolicyEngine._key``).

Everything not proven irrelevant is kept, so the cache is exact: a hit is
Cedar's answer for an equivalent request.  tests/policies/test_engine_cache.py
compares it with plain Cedar over random bundles, requests and signals.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Projection", "project", "bucket", "CONTEXT_SIGNALS", "LONG_RANGE_CUTS",
           "WORKER_RECORDS"]

CONTEXT_SIGNALS = {".": {"left": {"Var": "context"}, "attr": "signals"}}
_CONTEXT = {"Var": "context"}
_RESOURCE = {"Var": "resource"}
_COMPARE = {">", ">=", "<", "<=", "==", "!="}
_MIRROR = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
_PRINCIPAL = {"Var": "principal"}
#: Context keys only the worker sets, holding records of strings/sets (never entities).
WORKER_RECORDS = frozenset({"approval"})
#: Cedar's Long range: values outside it fail the request, so they get buckets of their own.
LONG_RANGE_CUTS = (-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class Projection:
    """The parts of a request a bundle can observe (None: all of it)."""

    context_keys: tuple[str, ...] | None
    resource_attrs: tuple[str, ...] | None
    resource_ids_matter: bool
    entity_literals: frozenset[tuple[str, str]]
    signal_cuts: Mapping[str, tuple[int, ...] | None]


def bucket(cuts: tuple[int, ...] | None, value: int) -> int:
    """The bucket of a signal value (the raw value when the signal is exact)."""
    if cuts is None:
        return value
    return bisect_right(cuts, value)


def _signal(node: Any) -> str | None:
    if isinstance(node, dict) and len(node) == 1:
        dot = node.get(".")
        if isinstance(dot, dict) and dot.get("left") == CONTEXT_SIGNALS:
            attr = dot.get("attr")
            return attr if isinstance(attr, str) else None
    return None


def _long(node: Any) -> int | None:
    if isinstance(node, dict) and len(node) == 1 and "Value" in node:
        value = node["Value"]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _entity(node: Any) -> tuple[str, str] | None:
    if isinstance(node, dict) and len(node) == 1 and "Value" in node:
        value = node["Value"]
        if isinstance(value, dict) and isinstance(value.get("__entity"), dict):
            ent = value["__entity"]
            return str(ent.get("type")), str(ent.get("id"))
    return None


def _context_root(node: Any) -> str | None:
    """``k`` when `node` is ``context.k`` or a longer attribute chain from it."""
    while isinstance(node, dict) and len(node) == 1 and isinstance(node.get("."), dict):
        body = node["."]
        if body.get("left") == _CONTEXT:
            attr = body.get("attr")
            return attr if isinstance(attr, str) else None
        node = body.get("left")
    return None


def _cuts_of(op: str, c: int) -> tuple[int, ...]:
    """Where ``value <op> c`` can change truth: value < cut versus value >= cut."""
    if op in (">=", "<"):
        return (c,)
    if op in (">", "<="):
        return (c + 1,)
    return (c, c + 1)          # == and !=


class _Walker:
    def __init__(self, signal_names: tuple[str, ...]) -> None:
        self.context_keys: set[str] = set()
        self.context_whole = False
        self.resource_attrs: set[str] = set()
        self.resource_whole = False          # attributes read in a way we cannot name
        self.ids_matter = False
        self.literals: set[tuple[str, str]] = set()
        self.cuts: dict[str, set[int]] = {n: set() for n in signal_names}
        self.exact: set[str] = set()
        self.signals_whole = False

    def walk(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        entity = _entity(node)
        if entity is not None:
            self.literals.add(entity)
            return
        if node == _CONTEXT:
            self.context_whole = True
            return
        if node == _RESOURCE:
            self.ids_matter = self.resource_whole = True
            return
        if node == CONTEXT_SIGNALS:
            self.signals_whole = True
            return
        name = _signal(node)
        if name is not None:
            self.exact.add(name)
            return
        if len(node) == 1:
            (op, body), = node.items()
            if self._special(op, body):
                return
        for value in node.values():
            self.walk(value)

    def _special(self, op: str, body: Any) -> bool:
        """Handle the shapes we can account for precisely; True when done."""
        if not isinstance(body, dict):
            return False
        left, right = body.get("left"), body.get("right")
        if op in (".", "has") and isinstance(body.get("attr"), str):
            if left == _CONTEXT:
                if body["attr"] != "signals":
                    self.context_keys.add(body["attr"])
                elif op == "has":
                    self.signals_whole = True
                return True
            if left == _RESOURCE:
                self.resource_attrs.add(body["attr"])
                return True
            root = _context_root(left)
            if root in WORKER_RECORDS:
                self.context_keys.add(root)
                return True
            if left != _PRINCIPAL and left != CONTEXT_SIGNALS:
                # An entity reached another way may be the request's own resource.
                self.ids_matter = self.resource_whole = True
            return False
        if op in ("hasTag", "getTag") and left != _PRINCIPAL:
            self.ids_matter = self.resource_whole = True   # as for attributes above
            return False
        if op in _COMPARE:
            name, c, mop = _signal(left), _long(right), op
            if name is None:
                name, c, mop = _signal(right), _long(left), _MIRROR[op]
            if name is not None and c is not None and name in self.cuts:
                self.cuts[name].update(_cuts_of(mop, c))
                return True
        # `X in resource` is left to the walk (every id matters): X's ancestors come
        # from the entity store, which may name a parent that is not itself stored.
        if op in ("==", "!=") and (left == _RESOURCE or right == _RESOURCE) \
                or op == "in" and left == _RESOURCE:
            other = right if left == _RESOURCE else left
            entity = _entity(other)
            if entity is not None:
                self.literals.add(entity)
                return True
            if op == "in" and isinstance(other, dict) and "Set" in other and all(
                    _entity(e) is not None for e in other["Set"]):
                self.literals.update(_entity(e) for e in other["Set"])  # type: ignore[misc]
                return True
        if op == "is" and left == _RESOURCE:
            if "in" in body:
                self.walk({"in": {"left": _RESOURCE, "right": body["in"]}})
            return True
        return False

    def scope(self, scope: Any) -> None:
        if not isinstance(scope, dict):
            return
        for key in ("entity",):
            ent = scope.get(key)
            if isinstance(ent, dict) and "type" in ent and "id" in ent:
                self.literals.add((str(ent["type"]), str(ent["id"])))
        for ent in scope.get("entities", []) or []:
            if isinstance(ent, dict) and "type" in ent and "id" in ent:
                self.literals.add((str(ent["type"]), str(ent["id"])))
        inner = scope.get("in")
        if isinstance(inner, dict):
            self.scope(inner)


def project(est: Mapping[str, Any], signal_names: tuple[str, ...]) -> Projection:
    """The projection of requests that the policies in `est` can observe."""
    w = _Walker(signal_names)
    for policy in (est.get("staticPolicies") or {}).values():
        for part in ("principal", "action", "resource"):
            w.scope(policy.get(part))
        w.walk(policy.get("conditions", []))
    if w.signals_whole or w.context_whole:
        cuts: dict[str, tuple[int, ...] | None] = dict.fromkeys(signal_names)
    else:
        cuts = {n: None if n in w.exact else tuple(sorted(w.cuts[n].union(LONG_RANGE_CUTS)))
                for n in signal_names}
    return Projection(
        context_keys=None if w.context_whole else tuple(sorted(w.context_keys)),
        resource_attrs=None if w.resource_whole else tuple(sorted(w.resource_attrs)),
        resource_ids_matter=w.ids_matter, entity_literals=frozenset(w.literals),
        signal_cuts=cuts)
