"""projection.project on hand-written ESTs: one test per rule of its docstring."""
from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from holdgate.policies.projection import LONG_RANGE_CUTS, Projection, bucket, project

SIGNALS = ("rate_1s", "anomaly", "streak")
LO, HI = LONG_RANGE_CUTS

# --------------------------------------------------------- EST builders --

CONTEXT: dict[str, Any] = {"Var": "context"}
RESOURCE: dict[str, Any] = {"Var": "resource"}
PRINCIPAL: dict[str, Any] = {"Var": "principal"}
ALL = {"op": "All"}


def dot(left: Any, attr: str) -> dict[str, Any]:
    return {".": {"left": left, "attr": attr}}


def has(left: Any, attr: str) -> dict[str, Any]:
    return {"has": {"left": left, "attr": attr}}


def op(name: str, left: Any, right: Any) -> dict[str, Any]:
    return {name: {"left": left, "right": right}}


def and_(left: Any, right: Any) -> dict[str, Any]:
    return op("&&", left, right)


def lit(value: Any) -> dict[str, Any]:
    return {"Value": value}


def ent(etype: str, eid: str) -> dict[str, Any]:
    return {"Value": {"__entity": {"type": etype, "id": eid}}}


def sig(name: str) -> dict[str, Any]:
    return dot(dot(CONTEXT, "signals"), name)


def est(*bodies: Any, principal: Any = ALL, action: Any = ALL, resource: Any = ALL,
        kind: str = "when") -> dict[str, Any]:
    """One permit per body (a body of None: no condition)."""
    return {"staticPolicies": {f"p{i}": {
        "effect": "permit", "principal": principal, "action": action, "resource": resource,
        "annotations": {"id": f"p{i}"},
        "conditions": [] if body is None else [{"kind": kind, "body": body}],
    } for i, body in enumerate(bodies)}, "templates": {}, "templateLinks": []}


def proj(*bodies: Any, **scopes: Any) -> Projection:
    return project(est(*bodies, **scopes), SIGNALS)


def exact(*names: str) -> dict[str, tuple[int, ...] | None]:
    return {n: None if n in names else (LO, HI) for n in SIGNALS}


def test_the_builders_write_what_cedar_writes() -> None:
    text = ('permit (principal, action, resource) when { context has level && '
            'context.level == "a" && resource.priority == "x" && '
            'context.signals.rate_1s > 5 && resource == Ticket::"T-1" };')
    cedar = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]["policy0"]
    mine = est(and_(and_(and_(and_(
        has(CONTEXT, "level"), op("==", dot(CONTEXT, "level"), lit("a"))),
        op("==", dot(RESOURCE, "priority"), lit("x"))),
        op(">", sig("rate_1s"), lit(5))),
        op("==", RESOURCE, ent("Ticket", "T-1"))))["staticPolicies"]["p0"]
    assert mine["conditions"] == cedar["conditions"]
    assert (mine["principal"], mine["action"], mine["resource"]) == (
        cedar["principal"], cedar["action"], cedar["resource"])


# ------------------------------------------------------------- context --

def test_nothing_read_nothing_matters() -> None:
    p = proj(None)
    assert p == Projection(context_keys=(), resource_attrs=(), resource_ids_matter=False,
                           entity_literals=frozenset(), signal_cuts=exact())


def test_context_keys_read_by_dot_and_has() -> None:
    p = proj(and_(has(CONTEXT, "b"), op("==", dot(CONTEXT, "a"), lit(1))))
    assert p.context_keys == ("a", "b")
    assert p.signal_cuts == exact()


@pytest.mark.parametrize("body", [
    op("==", CONTEXT, CONTEXT),
    {"contains": {"left": {"Set": [CONTEXT]}, "right": CONTEXT}},
    dot(dot({"if-then-else": {"if": lit(True), "then": CONTEXT, "else": CONTEXT}},
            "signals"), "rate_1s"),
])
def test_context_used_whole_makes_all_of_it_and_every_signal_matter(body: Any) -> None:
    p = proj(op("&&", op(">", sig("rate_1s"), lit(5)), body))
    assert p.context_keys is None
    assert p.signal_cuts == exact(*SIGNALS)


# ------------------------------------------------------------ resource --

def test_resource_attributes_read_by_dot_and_has() -> None:
    p = proj(and_(has(RESOURCE, "b"), op("==", dot(RESOURCE, "a"), lit("x"))))
    assert (p.resource_attrs, p.resource_ids_matter) == (("a", "b"), False)


@pytest.mark.parametrize("body", [
    op("==", RESOURCE, dot(CONTEXT, "ref")),               # compared with a non-literal
    op("in", PRINCIPAL, RESOURCE),
    {"contains": {"left": {"Set": [RESOURCE]}, "right": ent("Ticket", "T-1")}},
    has({"if-then-else": {"if": lit(True), "then": RESOURCE, "else": RESOURCE}}, "a"),
])
def test_resource_used_whole_makes_every_id_and_attribute_matter(body: Any) -> None:
    p = proj(body)
    assert (p.resource_attrs, p.resource_ids_matter) == (None, True)


@pytest.mark.parametrize("body", [
    op("==", RESOURCE, ent("Ticket", "T-1")),
    op("==", ent("Ticket", "T-1"), RESOURCE),
    op("!=", RESOURCE, ent("Ticket", "T-1")),
    op("in", RESOURCE, ent("Ticket", "T-1")),
    op("in", RESOURCE, {"Set": [ent("Ticket", "T-1"), ent("Folder", "f")]}),
    {"is": {"left": RESOURCE, "entity_type": "Ticket", "in": ent("Ticket", "T-1")}},
])
def test_a_resource_compared_with_literals_names_only_them(body: Any) -> None:
    p = proj(body)
    assert not p.resource_ids_matter
    assert ("Ticket", "T-1") in p.entity_literals
    assert p.resource_attrs == ()


def test_a_resource_type_test_needs_no_id() -> None:
    p = proj({"is": {"left": RESOURCE, "entity_type": "Ticket"}})
    assert (p.resource_ids_matter, p.entity_literals) == (False, frozenset())


@pytest.mark.parametrize("left", [ent("Agent", "a1"), PRINCIPAL])
def test_something_in_the_resource_makes_every_id_matter(left: Any) -> None:
    # The store may give a1 a parent that is not itself stored: only its id tells.
    p = proj(op("in", left, RESOURCE))
    assert p.resource_ids_matter


# ------------------------------------------------------- other entities --

@pytest.mark.parametrize("left", [
    ent("Ticket", "T-1"),                     # a literal that may be the resource
    dot(CONTEXT, "ref"),                      # a reference the request supplies
    dot(PRINCIPAL, "ticket"),                 # a reference the store supplies
    dot(RESOURCE, "parent"),                  # the resource pointing at itself
])
@pytest.mark.parametrize("read", [dot, has])
def test_an_attribute_of_another_entity_makes_the_whole_resource_matter(
        left: Any, read: Any) -> None:
    p = proj(read(left, "priority"))
    assert (p.resource_attrs, p.resource_ids_matter) == (None, True)


@pytest.mark.parametrize("name", ["hasTag", "getTag"])
def test_a_tag_of_another_entity_makes_the_whole_resource_matter(name: str) -> None:
    p = proj(op(name, dot(CONTEXT, "ref"), lit("k")))
    assert (p.resource_attrs, p.resource_ids_matter) == (None, True)


def test_principal_attributes_are_the_stores() -> None:
    p = proj(and_(has(PRINCIPAL, "level"), op("==", dot(PRINCIPAL, "role"), lit("x"))))
    assert (p.resource_attrs, p.resource_ids_matter, p.context_keys) == ((), False, ())


# -------------------------------------------------------------- scopes --

def test_scope_literals_are_named() -> None:
    p = proj(None,
             principal={"op": "in", "entity": {"type": "Role", "id": "r"}},
             action={"op": "in", "entities": [{"type": "Action", "id": "a"},
                                              {"type": "Action", "id": "b"}]},
             resource={"op": "is", "entity_type": "Ticket",
                       "in": {"entity": {"type": "Folder", "id": "f"}}})
    assert p.entity_literals == {("Role", "r"), ("Action", "a"), ("Action", "b"),
                                 ("Folder", "f")}
    assert not p.resource_ids_matter


# ------------------------------------------------------------- signals --

@pytest.mark.parametrize(("cmp", "cuts"), [
    (">", (6,)), (">=", (5,)), ("<", (5,)), ("<=", (6,)), ("==", (5, 6)), ("!=", (5, 6)),
])
def test_a_signal_against_a_literal_cuts_where_the_truth_can_change(
        cmp: str, cuts: tuple[int, ...]) -> None:
    mirror = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}[cmp]
    left = proj(op(cmp, sig("rate_1s"), lit(5)))
    right = proj(op(mirror, lit(5), sig("rate_1s")))          # the same test, mirrored
    assert left.signal_cuts["rate_1s"] == right.signal_cuts["rate_1s"] == (LO, *cuts, HI)
    # Every value of one bucket gives the same truth.
    test = {">": int.__gt__, ">=": int.__ge__, "<": int.__lt__, "<=": int.__le__,
            "==": int.__eq__, "!=": int.__ne__}[cmp]
    values = range(-3, 12)
    for a in values:
        for b in values:
            if bucket(left.signal_cuts["rate_1s"], a) == bucket(left.signal_cuts["rate_1s"], b):
                assert test(a, 5) == test(b, 5)


def test_negative_and_extreme_literals() -> None:
    p = proj(and_(op("<", lit(-5), sig("rate_1s")), op(">", sig("rate_1s"), lit(HI - 1))))
    assert p.signal_cuts["rate_1s"] == (LO, -4, HI)


def test_cuts_of_several_comparisons_merge() -> None:
    p = proj(op(">", sig("rate_1s"), lit(20)), op("<=", sig("rate_1s"), lit(3)))
    assert p.signal_cuts["rate_1s"] == (LO, 4, 21, HI)


@pytest.mark.parametrize("body", [
    op(">", op("+", sig("rate_1s"), lit(1)), lit(5)),
    op("<", sig("rate_1s"), sig("anomaly")),
    {"contains": {"left": {"Set": [lit(1), lit(2)]}, "right": sig("rate_1s")}},
    op(">", {"neg": {"arg": sig("rate_1s")}}, lit(5)),
])
def test_any_other_use_of_a_signal_makes_its_value_matter(body: Any) -> None:
    p = proj(and_(body, op(">", sig("streak"), lit(2))))
    assert p.signal_cuts["rate_1s"] is None
    assert p.signal_cuts["streak"] == (LO, 3, HI)


@pytest.mark.parametrize("body", [
    has(dot(CONTEXT, "signals"), "rate_1s"),
    has(CONTEXT, "signals"),
    op("==", dot(CONTEXT, "signals"), dot(CONTEXT, "signals")),
])
def test_the_signal_record_used_whole_makes_every_signal_matter(body: Any) -> None:
    assert proj(body).signal_cuts == exact(*SIGNALS)


def test_signals_outside_cedars_range_get_buckets_of_their_own() -> None:
    cuts = proj(op(">", sig("rate_1s"), lit(5))).signal_cuts["rate_1s"]
    assert cuts is not None
    inside = {bucket(cuts, v) for v in (LO, 0, 6, HI - 1)}
    assert bucket(cuts, LO - 1) not in inside and bucket(cuts, HI) not in inside


def test_bucket_of_an_exact_signal_is_its_value() -> None:
    assert bucket(None, 12345) == 12345
