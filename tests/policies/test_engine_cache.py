"""The decision cache never changes a decision: caching on and off agree, decision for decision.

A differential test.  Each bundle is a random Cedar policy set over one rich
schema (principal/action/resource scopes with ``==``, ``in`` and ``is``;
conditions reading context keys behind ``has``, resource attributes, signals
against literals in all six operators and both operand orders, signals in
arithmetic or compared with each other, ``context`` or ``resource`` used whole,
entity literals and their attributes, sets, ``like``, ``&&``/``||``/``!``,
if-then-else) and a random entity store (known resources, parents that are not
themselves stored, agents pointing at tickets).  Two families:

* random bundles of one to five policies, built from a random few of the atom
  groups in :class:`PolicyGen`, so that some projections are tight and some
  coarse;
* one bundle per atom (and seed) whose only condition is that atom, so that no
  atom is drowned out by the rest of a bundle.

Every bundle decides a few hundred requests with ``PolicyEngine(bundle,
caching=False)`` one request per call: that is the answer, a function of the
request alone.  The same engine in shuffled batches of random sizes, and one
``PolicyEngine(bundle)`` in PASSES such passes (so hits, and twins within one
batch, happen), must give it for every request, whatever its neighbours:
decision, and each reason's code, policy id and message.

Requests are steered to collide on the projection while differing elsewhere:
other resource ids (fresh ones, ones the policies name, parents the store names
but does not hold), extra context keys, other signal values in the same bucket
(next to the policies' literals), attributes added, changed or dropped,
references to the resource itself, Cedar escapes in keys no policy reads, values
of the wrong type that make policies fail, signals outside Cedar's range.

Seeds are fixed, so CI sees the same bundles every run.  Each mistake this test
found has a minimal regression test at the end of the file.
"""
from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import pytest

from holdgate import reasons as codes
from holdgate.events import ActionRequest, Resource
from holdgate.policies import PolicyBundle, PolicyDecision, PolicyEngine
from holdgate.signals import SIGNAL_NAMES

CHUNKS = 5
BUNDLES_PER_CHUNK = 20
BASE_REQUESTS = 40
VARIANTS = 8
PASSES = 3
ATOM_SEEDS = 3
#: Groups whose mistakes need a rarer coincidence of store and request to show.
ATOM_SEEDS_FOR = {"in_resource": 8, "other_entities": 6}
ATOM_BASE_REQUESTS = 30

SIGS = ("rate_1s", "anomaly", "streak", "new_action")
TICKETS = ("T-1", "T-2", "T-3", "T-4", "T-5")
DOCS = ("D-1", "D-2", "D-3")
TEAMS = ("t1", "ghost", "t9")             # ghost: a parent of agents, never stored
FOLDERS = ("f1", "f2", "fx", "f9")          # fx: a parent of f2 and tickets, never stored
AGENTS = ("a1", "a2", "a3")
STRINGS = ("a", "ab", "high", "low", "x")
PATTERNS = ("a*", "*b", "high", "*", "x*")
LONGS = (-1, 0, 1, 2, 3, 5, 7, 10)
BIG = (9223372036854775807, -9223372036854775808, 4611686018427387904)
GROUPS = ('Role::"r1"', 'Team::"t1"', 'Team::"ghost"')
OPS = ("==", "!=", "<", "<=", ">", ">=")

SCHEMA = """
type Signals = { SIGNALS };
type Info = { note?: String, n?: Long };
type Ctx = {
  signals: Signals, level?: String, amount?: Long, flag?: Bool, tags?: Set<String>,
  ref?: Ticket, who?: Agent, info?: Info,
};
entity Role;
entity Team;
entity Folder in [Folder] = { label?: String };
entity Agent in [Role, Team] = { role: String, ticket?: Ticket, level?: Long };
entity Ticket in [Folder] = {
  priority?: String, amount?: Long, tags?: Set<String>, parent?: Ticket, owner?: Agent, open?: Bool,
};
entity Doc in [Folder] = { size: Long, owner?: Agent, label?: String };
action "read";
action "write";
action "t.read" in ["read"] appliesTo { principal: Agent, resource: [Ticket, Doc], context: Ctx };
action "t.write" in ["write"] appliesTo { principal: Agent, resource: Ticket, context: Ctx };
action "d.read" in ["read"] appliesTo {
  principal: Agent, resource: [Doc, Team, Folder], context: Ctx,
};
""".replace("SIGNALS", ", ".join(f"{name}: Long" for name in SIGNAL_NAMES))
_SCHEMA = cedarpy.Schema.from_str(SCHEMA)


def _ref(etype: str, eid: str) -> dict[str, Any]:
    return {"__entity": {"type": etype, "id": eid}}


def _request(agent: str, action: str, rtype: str, rid: str, attrs: dict[str, Any],
             context: dict[str, Any], n: int = 0) -> ActionRequest:
    """A request as the engine receives it, built without the wire's checks: the engine
    must stand on its own, whatever reaches it (Cedar escapes, values of wrong types)."""
    return ActionRequest(request_id=str(uuid.UUID(int=n)), agent_id=agent, action=action,
                         resource=Resource(type=rtype, id=rid, attributes=attrs),
                         context=context, occurred_at=1767225600.0)


# ------------------------------------------------------------- policies --

#: Groups of condition atoms.  Each bundle enables a random few, so many bundles
#: are precise (small projections, many collisions) and some are coarse.
ALWAYS = ("signal_literal", "context_keys", "resource_attrs")


class PolicyGen:
    """Random Cedar conditions over SCHEMA, from the atom groups a bundle enables."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        r = rng

        def op() -> str:
            return r.choice(OPS)

        self.groups: dict[str, list[Callable[[], str]]] = {
            "signal_literal": [
                lambda: f"{self.sig()} {op()} {self.lit()}",
                lambda: f"{self.lit()} {op()} {self.sig()}",
            ],
            "signal_exact": [                  # the raw value matters
                lambda: f"{self.sig()} + {self.lit()} {op()} {self.lit()}",
                lambda: f"{self.sig()} * 4611686018427387904 {op()} 0",   # overflows from 2
                lambda: f"{self.sig()} {op()} {self.sig()}",
                lambda: f"[1, 3, 5].contains({self.sig()})",
                lambda: f"-{self.sig()} {op()} {self.lit()}",
                lambda: f"context has amount && context.amount + {self.sig()} > {self.lit()}",
                lambda: f"resource has amount && resource.amount > {self.sig()}",
                lambda: f"principal has level && principal.level > {self.sig()}",
            ],
            "signals_whole": [
                lambda: f"context.signals has {r.choice(SIGS)}",
                lambda: "context.signals has foo",
                lambda: f"(if {self.expr(0)} then context.signals else context.signals)"
                        f".{r.choice(SIGS)} {op()} {self.lit()}",
            ],
            "context_keys": [
                lambda: f"context has {r.choice(['level', 'amount', 'flag', 'tags', 'ref'])}",
                lambda: f"context has level && context.level == {self.s()}",
                lambda: f'context has level && context.level like "{r.choice(PATTERNS)}"',
                lambda: f"context has amount && context.amount {op()} {self.lit()}",
                lambda: f"context has tags && context.tags.contains({self.s()})",
                lambda: 'context has tags && context.tags.containsAny(["a", "b"])',
                lambda: "context has flag && context.flag",
                lambda: f'context has ref && context.ref == Ticket::"{r.choice(TICKETS)}"',
                lambda: f'context has ref && context.ref in Folder::"{r.choice(FOLDERS)}"',
                lambda: "context has who && context.who == principal",
            ],
            "context_whole": [
                lambda: f"(if {self.expr(0)} then context else context).signals."
                        f"{r.choice(SIGS)} {op()} {self.lit()}",
                lambda: "[context].contains(context)",
            ],
            "resource_attrs": [
                lambda: f"resource has {r.choice(['priority', 'amount', 'tags', 'open', 'size'])}",
                lambda: f"resource has priority && resource.priority == {self.s()}",
                lambda: f"resource has amount && resource.amount {op()} {self.lit()}",
                lambda: f"resource has tags && resource.tags.contains({self.s()})",
                lambda: "resource has open && resource.open",
                lambda: f'resource has parent && resource.parent == Ticket::"{r.choice(TICKETS)}"',
                lambda: f'resource has parent && resource.parent in Folder::"{r.choice(FOLDERS)}"',
                lambda: "resource has owner && resource.owner == principal",
                lambda: f"resource has size && resource.size {op()} {self.lit()}",
                lambda: f'resource has label && resource.label like "{r.choice(PATTERNS)}"',
                lambda: "context has amount && resource has amount && "
                        "context.amount > resource.amount",
                lambda: f"resource is Doc && resource.size {op()} {self.lit()}",  # may lack size
            ],
            "resource_literals": [
                lambda: f"resource == {self.ent()}",
                lambda: f"{self.ent()} == resource",
                lambda: f"resource != {self.ent()}",
                lambda: f"resource in {self.ent()}",
                lambda: f"resource in [{self.ent()}, {self.ent()}]",
                lambda: f"resource is {r.choice(['Ticket', 'Doc', 'Team', 'Folder'])}",
                lambda: f"resource is {r.choice(['Ticket', 'Doc'])} "
                        f'in Folder::"{r.choice(FOLDERS)}"',
            ],
            "in_resource": [                    # stored parents may not be stored themselves
                lambda: f'Agent::"{r.choice(AGENTS)}" in resource',
                lambda: f'Ticket::"{r.choice(TICKETS[:3])}" in resource',
                lambda: 'Folder::"f2" in resource',
            ],
            "resource_ids": [                   # every id matters
                lambda: "principal in resource",
                lambda: "context has ref && context.ref == resource",
                lambda: "principal has ticket && principal.ticket == resource",
                lambda: f"[resource].contains({self.ent()})",
                lambda: f"(if {self.expr(0)} then resource else resource) has priority",
            ],
            "other_entities": [
                lambda: "context has ref && context.ref has priority",
                lambda: f"context has ref && context.ref has priority && "
                        f"context.ref.priority == {self.s()}",
                lambda: f"context has who && context.who.role == {self.s()}",
                lambda: f"context has info && context.info has note && "
                        f"context.info.note == {self.s()}",
                lambda: f"resource has parent && resource.parent has priority && "
                        f"resource.parent.priority == {self.s()}",
                lambda: f"resource has owner && resource.owner.role == {self.s()}",
                lambda: f'Ticket::"{r.choice(TICKETS)}" has priority',
                lambda: self.literal_priority(),
                lambda: f'Folder::"{r.choice(FOLDERS)}" has label',
                lambda: f'Doc::"{r.choice(DOCS)}".size > {self.lit()}',     # errors if absent
                lambda: "principal has ticket && principal.ticket has priority && "
                        f"principal.ticket.priority == {self.s()}",
            ],
            "principal_action": [
                lambda: f"principal.role == {self.s()}",
                lambda: f"principal in {r.choice(GROUPS)}",
                lambda: f'principal == Agent::"{r.choice(AGENTS)}"',
                lambda: 'action == Action::"t.read"',
                lambda: 'action in Action::"read"',
                lambda: 'action in [Action::"t.write", Action::"d.read"]',
            ],
        }
        self.enabled = [g for g in self.groups if g in ALWAYS or r.random() < 0.3]

    def literal_priority(self) -> str:
        ticket = f'Ticket::"{self.r.choice(TICKETS)}"'
        return f"{ticket} has priority && {ticket}.priority == {self.s()}"

    def lit(self) -> str:
        return str(self.r.choice(BIG) if self.r.random() < 0.04 else self.r.choice(LONGS))

    def sig(self) -> str:
        return f"context.signals.{self.r.choice(SIGS)}"

    def s(self) -> str:
        return json.dumps(self.r.choice(STRINGS))

    def ent(self) -> str:
        kind = self.r.random()
        if kind < 0.5:
            return f'Ticket::"{self.r.choice(TICKETS)}"'
        if kind < 0.7:
            return f'Doc::"{self.r.choice(DOCS)}"'
        if kind < 0.85:
            return f'Folder::"{self.r.choice(FOLDERS)}"'
        return f'Team::"{self.r.choice(TEAMS)}"'

    def atom(self) -> str:
        group = self.r.choice(self.enabled)
        return self.r.choice(self.groups[group])()

    def expr(self, depth: int) -> str:
        if depth <= 0 or self.r.random() < 0.45:
            return self.atom()
        pick = self.r.random()
        if pick < 0.35:
            return f"({self.expr(depth - 1)} && {self.expr(depth - 1)})"
        if pick < 0.7:
            return f"({self.expr(depth - 1)} || {self.expr(depth - 1)})"
        if pick < 0.85:
            return f"!({self.expr(depth - 1)})"
        return (f"(if {self.expr(depth - 1)} then {self.expr(depth - 1)} "
                f"else {self.expr(depth - 1)})")

    def scope(self) -> str:
        r = self.r
        principal = r.choice(["principal", "principal", 'principal == Agent::"a1"',
                              'principal in Role::"r1"', 'principal in Team::"ghost"',
                              "principal is Agent", 'principal is Agent in Team::"t2"'])
        action = r.choice(["action", "action", 'action == Action::"t.read"',
                           'action in [Action::"t.read", Action::"d.read"]',
                           'action in Action::"read"', 'action == Action::"t.write"'])
        resource = r.choice(["resource", "resource", "resource",
                             f'resource == Ticket::"{r.choice(TICKETS)}"',
                             f'resource in Folder::"{r.choice(FOLDERS)}"',
                             "resource is Ticket", "resource is Doc",
                             f'resource is Ticket in Folder::"{r.choice(FOLDERS)}"'])
        return f"{principal}, {action}, {resource}"

    def policy(self, index: int, sharp: bool) -> str:
        """One policy that passes strict validation on its own (rejection sampling).

        A sharp policy has one short condition, so that each atom decides often.
        """
        depth, counts = (0, [1]) if sharp else (2, [0, 1, 1, 1, 2])
        for _ in range(50):
            effect = "permit" if self.r.random() < 0.65 else "forbid"
            head = f'@id("p{index}")\n'
            if effect == "forbid" and self.r.random() < 0.5:
                head += f'@code("CODE_{index}")\n'
            if self.r.random() < 0.5:
                head += f'@reason("reason of p{index}")\n'
            clauses = "".join(
                f"\n{self.r.choice(['when', 'when', 'unless'])} {{ {self.expr(depth)} }}"
                for _ in range(self.r.choice(counts)))
            text = f"{head}{effect} ({self.scope()}){clauses};\n"
            if cedarpy.validate_policies(text, _SCHEMA).validation_passed:
                return text
        raise AssertionError("no valid policy in 50 tries")  # pragma: no cover


def _entities(rng: random.Random) -> list[dict[str, Any]]:
    def uid(t: str, i: str) -> dict[str, str]:
        return {"type": t, "id": i}

    out: list[dict[str, Any]] = [
        {"uid": uid("Role", "r1"), "attrs": {}, "parents": []},
        {"uid": uid("Role", "r2"), "attrs": {}, "parents": []},
        {"uid": uid("Team", "t1"), "attrs": {}, "parents": []},
        {"uid": uid("Team", "t2"), "attrs": {}, "parents": []},
        {"uid": uid("Folder", "f0"), "attrs": {"label": "ab"}, "parents": []},
        {"uid": uid("Folder", "f1"), "attrs": {}, "parents": [uid("Folder", "f0")]},
    ]
    if rng.random() < 0.5:   # a folder whose parent is not in the store
        out.append({"uid": uid("Folder", "f2"), "attrs": {}, "parents": [uid("Folder", "fx")]})
    for agent in AGENTS:
        attrs: dict[str, Any] = {"role": rng.choice(STRINGS)}
        if rng.random() < 0.6:
            attrs["ticket"] = _ref("Ticket", rng.choice(TICKETS))
        if rng.random() < 0.4:
            attrs["level"] = rng.choice(LONGS)
        parents = rng.sample([uid("Role", "r1"), uid("Role", "r2"), uid("Team", "t1"),
                              uid("Team", "t2")], rng.randint(0, 2))
        if rng.random() < 0.7:
            parents.append(uid("Team", "ghost"))
        out.append({"uid": uid("Agent", agent), "attrs": attrs, "parents": parents})
    for ticket in TICKETS[:3]:
        if rng.random() < 0.4:
            continue
        attrs = {}
        if rng.random() < 0.7:
            attrs["priority"] = rng.choice(STRINGS)
        if rng.random() < 0.5:
            attrs["amount"] = rng.choice(LONGS)
        if rng.random() < 0.3:
            attrs["owner"] = _ref("Agent", rng.choice(AGENTS))
        parents = rng.sample([uid("Folder", "f1"), uid("Folder", "f2")], rng.randint(0, 1))
        if rng.random() < 0.6:        # a parent that is not in the store
            parents.append(uid("Folder", "fx"))
        out.append({"uid": uid("Ticket", ticket), "attrs": attrs, "parents": parents})
    if rng.random() < 0.5:
        out.append({"uid": uid("Doc", "D-1"), "attrs": {"size": 3},
                    "parents": [uid("Folder", "f0")]})
    return out


@dataclass
class Generated:
    bundle: PolicyBundle
    requests: int = BASE_REQUESTS


def make_bundle(seed: int) -> Generated:
    """A random bundle: a few policies from random atom groups, a random entity store."""
    rng = random.Random(seed)
    gen = PolicyGen(rng)
    sharp = rng.random() < 0.4
    count = rng.randint(1, 2) if sharp else rng.randint(1, 5)
    policy = "\n".join(gen.policy(i, sharp) for i in range(count))
    bundle = PolicyBundle.from_sources(policy=policy, schema=SCHEMA,
                                       entities=json.dumps(_entities(rng)), origin=f"seed {seed}")
    return Generated(bundle)


def _atoms() -> list[tuple[str, int]]:
    return [(group, i) for group, atoms in PolicyGen(random.Random(0)).groups.items()
            for i in range(len(atoms))]


def make_atom_bundle(group: str, index: int, seed: int) -> Generated:
    """One policy whose only condition is one atom, so that the atom decides every request."""
    rng = random.Random(seed)
    gen = PolicyGen(rng)
    for _ in range(50):
        effect = rng.choice(["permit", "forbid"])
        scope = gen.scope() if rng.random() < 0.5 else "principal, action, resource"
        text = f'@id("p0")\n{effect} ({scope}) ' \
               f'{rng.choice(["when", "unless"])} {{ {gen.groups[group][index]()} }};\n'
        if effect == "forbid":       # something to forbid
            text += '@id("p1")\npermit (principal, action, resource);\n'
        if cedarpy.validate_policies(text, _SCHEMA).validation_passed:
            break
    bundle = PolicyBundle.from_sources(policy=text, schema=SCHEMA,
                                       entities=json.dumps(_entities(rng)),
                                       origin=f"{group}[{index}] seed {seed}")
    return Generated(bundle, ATOM_BASE_REQUESTS)


# ------------------------------------------------------------- requests --

@dataclass
class Spec:
    """A request before it becomes an ActionRequest, so variants are easy to make."""

    agent: str
    action: str
    rtype: str
    rid: str
    attrs: dict[str, Any]
    context: dict[str, Any]
    signals: dict[str, int] = field(default_factory=dict)

    def build(self, n: int) -> tuple[ActionRequest, dict[str, int]]:
        request = _request(self.agent, self.action, self.rtype, self.rid, self.attrs,
                           self.context, n)
        return request, self.signals


_IDS = {"Ticket": TICKETS + ("T-6",), "Doc": DOCS, "Team": TEAMS, "Folder": FOLDERS,
        "Agent": AGENTS + ("zz",), "Nope": ("n1",)}


def _value(rng: random.Random, kind: str, spec_ref: tuple[str, str]) -> Any:
    """A value for an attribute or context key; sometimes of the wrong type."""
    r = rng.random()
    if kind in ("level", "priority", "label"):
        return rng.choice(STRINGS) if r < 0.85 else rng.choice([3, True, ["a"]])
    if kind in ("amount", "size", "n"):
        return rng.choice(LONGS) if r < 0.85 else rng.choice(["7", 2**62, False])
    if kind in ("flag", "open"):
        return rng.choice([True, False]) if r < 0.85 else rng.choice(["yes", 1])
    if kind == "tags":
        return rng.choice([["a"], ["a", "b"], [], ["x"]]) if r < 0.85 else "a"
    if kind in ("ref", "parent"):
        if r < 0.3:
            return _ref(*spec_ref)                             # the request's own resource
        if r < 0.9:
            return _ref("Ticket", rng.choice(TICKETS + ("T-6",)))
        return rng.choice(["T-1", {"type": "Ticket", "id": "T-1"}])
    if kind in ("who", "owner"):
        return _ref("Agent", rng.choice(AGENTS + ("zz",))) if r < 0.85 else "a1"
    if kind == "note":
        return rng.choice(STRINGS)
    if kind == "info":
        return {k: _value(rng, k, spec_ref) for k in rng.sample(["note", "n"], rng.randint(0, 2))}
    return rng.choice(JUNK)


JUNK: tuple[Any, ...] = (1, "x", [1, "a"], {"deep": {"er": [True]}}, {"type": "T", "id": "x"})
ESCAPES: tuple[Any, ...] = (                                 # Cedar reads these specially
    _ref("Ticket", "T-1"), {"__entity": "odd"}, {"__extn": {"fn": "decimal", "arg": "1.5"}},
)
BROKEN: tuple[Any, ...] = (                                  # Cedar refuses the whole request
    {"__extn": {"fn": "ip", "arg": "not an ip"}},
    {"__expr": "1 + 1"},
    {"__extn": {"fn": "nope", "arg": "1"}},
)
CONTEXT_KEYS = ("level", "amount", "flag", "tags", "ref", "who", "info")
ATTRS = ("priority", "amount", "tags", "parent", "owner", "open", "size", "label")


def _junk(rng: random.Random) -> Any:
    """A value no policy reads; an escape now and then (which keys the request whole)."""
    pick = rng.random()
    return rng.choice(BROKEN if pick < 0.05 else ESCAPES if pick < 0.25 else JUNK)


def _signals(rng: random.Random) -> dict[str, int]:
    out = {}
    for name in rng.sample(SIGS, rng.randint(0, len(SIGS))):
        r = rng.random()
        if r < 0.9:
            out[name] = rng.randint(-1, 12)
        elif r < 0.97:
            out[name] = rng.choice([1000, 2**40, -50, 2**62])
        else:               # outside Cedar's Long (and orjson's) range: the request fails
            out[name] = rng.choice([2**63, -(2**63) - 1, 2**64])
    if rng.random() < 0.1:
        out["foo"] = 1
    if rng.random() < 0.1:
        out[rng.choice(SIGNAL_NAMES)] = rng.randint(0, 3)
    return out


Named = dict[str, tuple[tuple[str, ...], ...]]


def _named_ids(bundle: PolicyBundle) -> Named:
    """For each type: the ids the policies name; the ids the entity store names but
    does not hold (parents, references); and every id worth trying."""
    in_policies = set(re.findall(r'(\w+)::"([^"]*)"', bundle.sources["policy.cedar"]))
    found = set(in_policies)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str) and isinstance(node.get("id"), str):
                found.add((node["type"], node["id"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(bundle.sources["entities.json"]))
    unheld = found - bundle.entity_uids
    return {t: (tuple(sorted(i for u, i in in_policies if u == t)),
                tuple(sorted(i for u, i in unheld if u == t)),
                tuple(sorted(i for u, i in found if u == t)) + ids) for t, ids in _IDS.items()}


def _rid(rng: random.Random, rtype: str, named: Named) -> str:
    """An id policies name, one the store names without holding it, one nobody names
    (which should not matter), or any other."""
    literals, unheld, everything = named[rtype]
    pick = rng.random()
    if pick < 0.2 and literals:
        return rng.choice(literals)
    if pick < 0.4 and unheld:
        return rng.choice(unheld)
    if pick < 0.65:
        return f"{rtype[0]}-any{rng.randint(0, 2)}"
    return rng.choice(everything)


def _spec(rng: random.Random, named: Named) -> Spec:
    agent = rng.choice(AGENTS) if rng.random() < 0.97 else "zz"
    action = rng.choice(["t.read", "t.read", "t.write", "d.read"]) if rng.random() < 0.96 \
        else "x.nope"
    rtype = rng.choice(["Ticket", "Ticket", "Ticket", "Doc", "Doc", "Team", "Team", "Folder",
                        "Folder", "Agent"]) \
        if rng.random() < 0.97 else "Nope"
    rid = _rid(rng, rtype, named)
    attrs = {}
    if rng.random() < 0.7:
        # Entity references are Cedar escapes, which key a request by all of its
        # data; keep them to a minority so that keys still collide.
        for key in rng.sample(ATTRS, rng.randint(0, 4)):
            if key not in ("parent", "owner") or rng.random() < 0.3:
                attrs[key] = _value(rng, key, (rtype, rid))
        if rng.random() < 0.15:
            attrs["junk"] = _junk(rng)
    context = {key: _value(rng, key, (rtype, rid))
               for key in rng.sample(CONTEXT_KEYS, rng.randint(0, 3))
               if key not in ("ref", "who") or rng.random() < 0.3}
    if rng.random() < 0.2:
        context[rng.choice(["junk", "other"])] = _junk(rng)
    return Spec(agent, action, rtype, rid, attrs, context, _signals(rng))


def _same_bucket(rng: random.Random, cuts: tuple[int, ...] | None, value: int,
                 near: tuple[int, ...]) -> int:
    """Another value in `value`'s bucket between `cuts` (the value itself when exact),
    often one next to a literal of the policies (`near`), where a wrong cut would show."""
    if cuts is None:
        return value
    lo = max(c for c in cuts if c <= value) if any(c <= value for c in cuts) else value - 6
    hi = min(c for c in cuts if c > value) if any(c > value for c in cuts) else value + 7
    edges = [v for v in near if lo <= v < hi] + [lo, hi - 1]
    if rng.random() < 0.6:
        return rng.choice(edges)
    return rng.randrange(max(lo, value - 6), min(hi, value + 7))


def _near_literals(bundle: PolicyBundle) -> tuple[int, ...]:
    """The policies' integer literals and their neighbours."""
    found = {int(m) for m in re.findall(r"-?\b\d+\b", bundle.sources["policy.cedar"])
             if abs(int(m)) < 2**62}
    return tuple(sorted({v + d for v in found for d in (-1, 0, 1)}))


def _variant(rng: random.Random, base: Spec, bundle: PolicyBundle, n: int,
             named: Named, near: tuple[int, ...], mentioned: frozenset[str]) -> Spec:
    """`base` changed where the bundle (probably) cannot see, or a little where it can.

    The projection only steers the changes towards collisions (same key,
    different request); whether a collision is harmless is up to Cedar.
    """
    spec = Spec(base.agent, base.action, base.rtype, base.rid, dict(base.attrs),
                dict(base.context), dict(base.signals))
    p = bundle.projection
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        pick = rng.random()
        if pick < 0.2:                      # another id: fresh, or one policies may name
            spec.rid = f"{spec.rtype[0]}-new{n}" if rng.random() < 0.3 \
                else _rid(rng, spec.rtype, named)
        elif pick < 0.26:                   # point a reference at the resource itself
            own = _ref(spec.rtype, spec.rid)
            if rng.random() < 0.5:
                spec.context["ref"] = own
            else:
                spec.attrs["parent"] = own
        elif pick < 0.3:
            spec.context[f"extra{rng.randint(0, 3)}"] = _junk(rng)
        elif pick < 0.5:
            for name in SIGS:
                spec.signals[name] = _same_bucket(rng, p.signal_cuts.get(name),
                                                  int(spec.signals.get(name, 0)), near)
        elif pick < 0.57:
            spec.signals[rng.choice(SIGS)] = rng.randint(-1, 12)
        elif pick < 0.62:                   # a signal holdgate does not compute
            if spec.signals.pop("foo", None) is None:
                spec.signals["foo"] = 1
        elif pick < 0.7:
            unread = [a for a in ATTRS if p.resource_attrs is None or a not in p.resource_attrs]
            key = rng.choice(unread or list(ATTRS))
            if key in spec.attrs and rng.random() < 0.3:
                del spec.attrs[key]
            else:
                spec.attrs[key] = _value(rng, key, (spec.rtype, spec.rid))
        elif pick < 0.85:                   # an attribute some policy names, read or not
            key = rng.choice([a for a in ATTRS if a in mentioned] or list(ATTRS))
            if key in spec.attrs and rng.random() < 0.3:
                del spec.attrs[key]
            else:
                spec.attrs[key] = _value(rng, key, (spec.rtype, spec.rid))
        elif pick < 0.93:
            key = rng.choice(CONTEXT_KEYS)
            if key in spec.context:
                del spec.context[key]
            else:
                spec.context[key] = _value(rng, key, (spec.rtype, spec.rid))
        else:
            spec.attrs = {} if spec.attrs else {"priority": rng.choice(STRINGS)}
    return spec


def _items(seed: int, bundle: PolicyBundle,
           bases: int = BASE_REQUESTS) -> list[tuple[ActionRequest, dict[str, int]]]:
    rng = random.Random(seed * 7919 + 1)
    named, near = _named_ids(bundle), _near_literals(bundle)
    mentioned = frozenset(re.findall(r"(?:\.|has )(\w+)", bundle.sources["policy.cedar"]))
    specs: list[Spec] = []
    for _ in range(bases):
        base = _spec(rng, named)
        specs.append(base)
        for _ in range(rng.randint(0, VARIANTS)):
            specs.append(_variant(rng, base, bundle, len(specs), named, near, mentioned))
    return [spec.build(n) for n, spec in enumerate(specs)]


# ----------------------------------------------------------- comparison --

def _view(d: PolicyDecision) -> tuple[Any, ...]:
    return (d.decision, tuple((r.code, r.policy_id, r.message) for r in d.reasons))


def _batches(rng: random.Random, count: int, shuffled: bool = True) -> list[list[int]]:
    """Batches of random sizes over `count` items: shuffled, or in the order the items
    were made (a base request next to its variants: same uid with and without
    attributes, references to each other's resource)."""
    order = list(range(count))
    if shuffled:
        rng.shuffle(order)
    out: list[list[int]] = []
    while order:
        size = rng.choice([1, 2, 5, 16, 40, 64])
        out.append(order[:size])
        del order[:size]
    return out


@dataclass
class Stats:
    bundles: int = 0
    decisions: int = 0
    hits: int = 0
    errors: int = 0
    allows: int = 0


def _fail(seed: int, bundle: PolicyBundle, item: tuple[ActionRequest, Any],
          got: PolicyDecision, want: PolicyDecision, what: str = "the cache") -> None:
    request, signals = item
    pytest.fail(f"seed {seed}: {what} changed a decision\n"
                f"policies:\n{bundle.sources['policy.cedar']}\n"
                f"entities: {bundle.sources['entities.json']}\n"
                f"projection: {bundle.projection}\n"
                f"request: {request.to_obj()}\nsignals: {signals}\n"
                f"got:   {_view(got)}\nalone: {_view(want)}")


def check_bundle(seed: int, stats: Stats, generated: Generated | None = None) -> None:
    """One bundle: each request decided alone by plain Cedar; in batches, cached or
    not, every decision must be the same."""
    generated = generated or make_bundle(seed)
    bundle = generated.bundle
    items = _items(seed, bundle, generated.requests)
    rng = random.Random(seed)
    plain = PolicyEngine(bundle, caching=False)
    want = [plain.decide_many([item])[0] for item in items]
    for shuffled in (False, True):
        for batch in _batches(rng, len(items), shuffled):
            decided = plain.decide_many([items[i] for i in batch])
            for i, got in zip(batch, decided, strict=True):
                if _view(got) != _view(want[i]):
                    _fail(seed, bundle, items[i], got, want[i], "batching")
    cached = PolicyEngine(bundle)
    for n in range(PASSES):
        for batch in _batches(rng, len(items), shuffled=n > 0):
            for i, got in zip(batch, cached.decide_many([items[i] for i in batch]), strict=True):
                if _view(got) != _view(want[i]):
                    _fail(seed, bundle, items[i], got, want[i])
    stats.bundles += 1
    stats.decisions += PASSES * len(items)
    stats.hits += cached.hits
    stats.errors += sum(codes.POLICY_ERROR in w.codes for w in want)
    stats.allows += sum(w.allowed for w in want)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_cache_never_changes_a_decision(chunk: int) -> None:
    stats = Stats()
    for seed in range(chunk * BUNDLES_PER_CHUNK, (chunk + 1) * BUNDLES_PER_CHUNK):
        check_bundle(seed, stats)
    # The test is only worth something if the cache is actually used, and if the
    # bundles both allow and fail sometimes.
    assert stats.hits > 0.4 * stats.decisions, stats
    plain = stats.decisions / PASSES
    assert 0.05 * plain < stats.allows < 0.95 * plain, stats
    assert stats.errors > 0, stats


@pytest.mark.parametrize("group", list(PolicyGen(random.Random(0)).groups))
def test_cache_never_changes_a_decision_of_one_atom(group: str) -> None:
    """Every atom alone, so that none is drowned out by the rest of a bundle."""
    stats = Stats()
    for (g, index) in _atoms():
        if g == group:
            for seed in range(ATOM_SEEDS_FOR.get(group, ATOM_SEEDS)):
                check_bundle(seed, stats, make_atom_bundle(group, index, seed))
    assert stats.hits > 0.4 * stats.decisions, stats


# ---------------------------------------------------------- regressions --
# The smallest cases the differential test found, one per way the cache broke.

_STORE = [
    {"uid": {"type": "Agent", "id": "a1"}, "parents": [{"type": "Team", "id": "ghost"}],
     "attrs": {"role": "x", "ticket": _ref("Ticket", "T-7")}},
]


def _bundle(policy: str) -> PolicyBundle:
    return PolicyBundle.from_sources(policy=policy, schema=SCHEMA, entities=json.dumps(_STORE))


def _req(rtype: str, rid: str, attrs: dict[str, Any] | None = None,
         context: dict[str, Any] | None = None) -> ActionRequest:
    return _request("a1", "t.read", rtype, rid, attrs or {}, context or {})


def _agree(bundle: PolicyBundle, *batches: list[tuple[ActionRequest, dict[str, int]]]
           ) -> list[PolicyDecision]:
    """Decide the batches in order with and without the cache; all must agree."""
    cached, plain = PolicyEngine(bundle), PolicyEngine(bundle, caching=False)
    out = []
    for batch in batches:
        got, want = cached.decide_many(batch), plain.decide_many(batch)
        assert [_view(g) for g in got] == [_view(w) for w in want]
        out.extend(want)
    return out


@pytest.mark.parametrize("where", ["context", "attributes"])
@pytest.mark.parametrize("escape", [{"__extn": {"fn": "ip", "arg": "not an ip"}},
                                    {"__expr": "1 + 1"}])
def test_a_cedar_escape_nobody_reads_still_fails_the_request(where: str, escape: Any) -> None:
    # Cedar refuses the whole request or entity, so the answer is POLICY_ERROR even
    # though no policy reads the key: the key must not project the escape away.
    bundle = _bundle('@id("p") permit (principal, action, resource);')
    fine = _req("Ticket", "T-1", {"priority": "low"}, {"level": "a"})
    broken = _req("Ticket", "T-1", {"priority": "low", "junk": escape} if where == "attributes"
                  else {"priority": "low"}, {"level": "a", "junk": escape})
    decisions = _agree(bundle, [(fine, {})], [(broken, {})])
    assert [d.codes for d in decisions] == [[codes.PERMITTED], [codes.POLICY_ERROR]]


@pytest.mark.parametrize("condition", [
    'Ticket::"T-1" has priority && Ticket::"T-1".priority == "high"',
    'context has ref && context.ref has priority && context.ref.priority == "high"',
])
def test_an_entity_read_by_another_name_is_the_requests_own_resource(condition: str) -> None:
    # Ticket::"T-1" is not stored: the request that describes it supplies its attributes,
    # which the policy reads without ever writing `resource.priority`.
    bundle = _bundle(f'@id("p") permit (principal, action, resource) when {{ {condition} }};')
    ref = {"ref": _ref("Ticket", "T-1")}
    high = _req("Ticket", "T-1", {"priority": "high"}, ref)
    low = _req("Ticket", "T-1", {"priority": "low"}, ref)
    decisions = _agree(bundle, [(high, {})], [(low, {})])
    assert [d.decision for d in decisions] == ["allow", "deny"]


def test_an_attribute_of_an_entity_the_principal_points_at() -> None:
    # Agent a1 points at Ticket::"T-7", which is not stored: a request about T-7
    # supplies its attributes; one about T-8 does not.
    bundle = _bundle('@id("p") permit (principal, action, resource) when { principal has ticket '
                     '&& principal.ticket has priority && principal.ticket.priority == "high" };')
    decisions = _agree(bundle, [(_req("Ticket", "T-7", {"priority": "high"}), {})],
                       [(_req("Ticket", "T-8", {"priority": "high"}), {})])
    assert [d.decision for d in decisions] == ["allow", "deny"]


def test_something_in_the_resource_through_a_parent_the_store_does_not_hold() -> None:
    # Agent a1's parent Team::"ghost" is not itself stored, so `a1 in resource`
    # holds for Team::"ghost" and for no other unnamed team.
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { Agent::"a1" in resource };')
    decisions = _agree(bundle, [(_req("Team", "ghost"), {})], [(_req("Team", "other"), {})])
    assert [d.decision for d in decisions] == ["allow", "deny"]


def test_context_used_whole_makes_every_signal_exact() -> None:
    # rate_1s is read directly (cut at 6) and, through `context` as a whole, compared
    # with 7: 7 and 8 share a bucket of the direct read only.
    bundle = _bundle(
        '@id("p") permit (principal, action, resource) when { context.signals.rate_1s > 5 };\n'
        '@id("q") forbid (principal, action, resource) when {\n'
        '  (if context has level then context else context).signals.rate_1s == 7 };')
    request = _req("Ticket", "T-1")
    decisions = _agree(bundle, [(request, {"rate_1s": 8})], [(request, {"rate_1s": 7})])
    assert [d.decision for d in decisions] == ["allow", "deny"]


def test_signals_holdgate_does_not_compute_reach_a_policy_that_reads_the_whole_record() -> None:
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { context.signals has foo };')
    request = _req("Ticket", "T-1")
    decisions = _agree(bundle, [(request, {})], [(request, {"foo": 1})])
    assert [d.decision for d in decisions] == ["deny", "allow"]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_a_signal_outside_cedars_range_never_shares_a_bucket(value: int) -> None:
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { context.signals.rate_1s > 5 };')
    request = _req("Ticket", "T-1")
    decisions = _agree(bundle, [(request, {"rate_1s": 6 if value > 0 else 0})],
                       [(request, {"rate_1s": value})])
    assert decisions[1].codes == [codes.POLICY_ERROR]


def test_a_twin_of_a_request_that_cannot_be_built_is_denied_not_raised() -> None:
    # Two requests with one key in one batch, both with a signal orjson cannot
    # serialise: the second is retried on its own, and must fail closed there too.
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { context.signals.rate_1s > 5 };')
    request = _req("Ticket", "T-1")
    decisions = _agree(bundle, [(request, {"rate_1s": 2**64}), (request, {"rate_1s": 2**65})])
    assert [d.codes for d in decisions] == [[codes.POLICY_ERROR]] * 2


@pytest.mark.parametrize("condition", [
    "(if context has level then context else context).signals.anomaly > 5",
    '{"c": context}.c.signals.anomaly > 5',
])
def test_signals_read_through_the_whole_context_are_sent(condition: str) -> None:
    # No policy reads context.signals.anomaly as such: the record must be sent whole,
    # or Cedar finds no `anomaly` and the request fails.
    bundle = _bundle(f'@id("p") permit (principal, action, resource) when {{ {condition} }};')
    assert bundle.signals_read is None
    request = _req("Ticket", "T-1")
    decisions = _agree(bundle, [(request, {"anomaly": 9})], [(request, {"anomaly": 5})])
    assert [d.codes for d in decisions] == [[codes.PERMITTED], [codes.NO_PERMIT]]


# ---------------------------------------------------- batch neighbours --
# Requests in one Cedar call share one set of added resource entities, yet a
# decision must be a function of the request alone: the worker's batches differ
# from a replay's.  These held with the cache off too, before the grouping in
# PolicyEngine._assign kept each request's view of the entities its own.

def test_a_resource_without_attributes_does_not_see_a_neighbours() -> None:
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { resource has priority };')
    plain = PolicyEngine(bundle, caching=False)
    alone = plain.decide(_req("Ticket", "T-1"))
    together = plain.decide_many([(_req("Ticket", "T-1", {"priority": "x"}), {}),
                                  (_req("Ticket", "T-1"), {})])[1]
    assert _view(together) == _view(alone)


def test_requests_in_one_batch_do_not_see_each_others_resources() -> None:
    bundle = _bundle('@id("p") permit (principal, action, resource) '
                     'when { Ticket::"T-1" has priority };')
    plain = PolicyEngine(bundle, caching=False)
    alone = plain.decide(_req("Ticket", "T-2"))
    together = plain.decide_many([(_req("Ticket", "T-1", {"priority": "x"}), {}),
                                  (_req("Ticket", "T-2"), {})])[1]
    assert _view(together) == _view(alone)


#: Ways a policy can reach a resource's attributes; all but the first can land on a
#: resource another request of the batch describes.
NEIGHBOUR_CONDITIONS = (
    'resource has priority && resource.priority == "x"',             # its own
    'Ticket::"T-1" has priority && Ticket::"T-1".priority == "x"',   # a literal
    'context has ref && context.ref has priority && context.ref.priority == "x"',
    "principal has ticket && principal.ticket has priority",         # the store's T-7
    "resource has parent && resource.parent has priority",
    'Doc::"D-1".size > 1',                                           # fails while D-1 is unknown
)


def _neighbourhood() -> list[tuple[ActionRequest, dict[str, int]]]:
    """Requests that clash with each other: one uid with and without attributes, and
    references (literals, context, the store, attributes) to each other's resources."""
    t1, t7 = _ref("Ticket", "T-1"), _ref("Ticket", "T-7")
    specs: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("Ticket", "T-1", {}, {}),
        ("Ticket", "T-1", {"priority": "x"}, {}),
        ("Ticket", "T-1", {"priority": "y"}, {}),
        ("Ticket", "T-1", {"priority": "x"}, {"ref": t1}),
        ("Ticket", "T-2", {}, {}),
        ("Ticket", "T-2", {"parent": t1}, {}),
        ("Ticket", "T-2", {"priority": "x", "parent": t1}, {}),
        ("Ticket", "T-3", {}, {"ref": t1}),
        ("Ticket", "T-3", {}, {"ref": t7}),
        ("Ticket", "T-3", {"priority": "x", "parent": _ref("Ticket", "T-3")},
         {"ref": _ref("Ticket", "T-3")}),
        ("Ticket", "T-4", {}, {"ref": t1, "n": {"__extn": {"fn": "decimal", "arg": "1.5"}}}),
        ("Ticket", "T-7", {}, {}),
        ("Ticket", "T-7", {"priority": "x"}, {}),
        ("Doc", "D-1", {}, {}),
        ("Doc", "D-1", {"size": 5}, {}),
        ("Doc", "D-2", {"size": 5}, {}),
    ]
    return [(_request("a1", "t.read", t, i, a, c, n), {}) for n, (t, i, a, c) in enumerate(specs)]


@pytest.mark.parametrize("caching", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("condition", NEIGHBOUR_CONDITIONS)
def test_a_request_gets_the_same_decision_alone_and_among_adversarial_neighbours(
        condition: str, caching: bool) -> None:
    bundle = _bundle(f'@id("p") permit (principal, action, resource) when {{ {condition} }};')
    items = _neighbourhood()
    alone = [_view(PolicyEngine(bundle, caching=False).decide(*item)) for item in items]
    assert {a[0] for a in alone} == {"allow", "deny"}      # something a neighbour could flip
    rng = random.Random(condition)
    orders = [list(range(len(items))), list(reversed(range(len(items))))]
    orders += [rng.sample(range(len(items)), rng.randint(2, len(items))) for _ in range(30)]
    warm = PolicyEngine(bundle, caching=caching)
    for order in orders:
        batch = [items[i] for i in order]
        for engine in (PolicyEngine(bundle, caching=caching), warm):
            got = [_view(d) for d in engine.decide_many(batch)]
            assert got == [alone[i] for i in order], (order, got)


def test_the_common_case_is_one_cedar_call_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = cedarpy.is_authorized_batch

    def counting(requests: list[Any], *args: Any) -> Any:
        calls.append(len(requests))
        return real(requests, *args)

    monkeypatch.setattr(cedarpy, "is_authorized_batch", counting)
    own = _bundle('@id("p") permit (principal, action, resource) when { resource has priority };')
    other = _bundle('@id("p") permit (principal, action, resource) '
                    'when { Ticket::"T-1" has priority };')
    bare = [(_req("Ticket", f"T-{n}"), {}) for n in range(10)]
    described = [(_req("Ticket", f"D-{n}", {"priority": "x"}), {}) for n in range(5)]
    same_uid = [(_req("Ticket", "T-0", {"priority": "x"}), {})]

    def count(bundle: PolicyBundle, batch: list[tuple[ActionRequest, dict[str, int]]]) -> int:
        calls.clear()
        PolicyEngine(bundle, caching=False).decide_many(batch)
        return len(calls)

    assert count(own, bare) == count(other, bare) == 1
    assert count(own, bare + described) == 1
    assert count(own, bare + same_uid) == 2            # T-0 both with and without attributes
    assert count(other, bare + described) == 1 + len(described)
