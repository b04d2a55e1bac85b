"""PolicyEngine.decide_many against the default bundle, with real cedarpy.

Where a rule of the engine itself is under test (fail closed on an evaluation
error, entities.json over the request, pending vs deny), a small bundle written
for that purpose (:func:`_engine`) states it, so the test does not lean on what
the default bundle happens to say.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from holdgate import reasons as codes
from holdgate.errors import ValidationError
from holdgate.events import ActionRequest, Resource
from holdgate.policies import (
    PolicyBundle,
    PolicyDecision,
    PolicyEngine,
    default_bundle_path,
)

MakeRequest = Callable[..., ActionRequest]


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(PolicyBundle.load(default_bundle_path()))


@pytest.fixture
def make_request() -> MakeRequest:
    """Factory: a valid request; resource given as (type, id[, attributes])."""

    def make(agent: str, action: str, resource: tuple[Any, ...],
             context: dict[str, Any] | None = None) -> ActionRequest:
        rtype, rid, *rest = resource
        return ActionRequest.create(
            agent_id=agent, action=action, occurred_at=1767225600.0, context=context,
            resource={"type": rtype, "id": rid, "attributes": rest[0] if rest else {}})

    return make


def _approved(request: ActionRequest, role: str, approver: str = "dana@example.com"
              ) -> ActionRequest:
    """The request as the worker decides it again after verifying an approval token of
    `role`: ``context.approval`` is set past the wire validator (agents cannot send it)."""
    return dataclasses.replace(request, context={**request.context,
                                                 "approval": {"role": role,
                                                              "approver": approver}})


# A bundle written for the test at hand: writers may do anything to docs, d-public and
# d-secret are in the entity store, anything else is described by the request alone.
_SCHEMA = """
type Ctx = {
  resource_trusted: Bool,
  approval?: { role: String, approver: String },
  n?: Long,
};
entity Role;
entity Agent in [Role] = { role: String };
entity Doc = { level: String };
action "docs.read" appliesTo { principal: Agent, resource: Doc, context: Ctx };
action "docs.write" appliesTo { principal: Agent, resource: Doc, context: Ctx };
"""
_ENTITIES = [
    {"uid": {"type": "Role", "id": "writer"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Role", "id": "reader"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Agent", "id": "w-1"}, "attrs": {"role": "writer"},
     "parents": [{"type": "Role", "id": "writer"}]},
    {"uid": {"type": "Agent", "id": "r-1"}, "attrs": {"role": "reader"},
     "parents": [{"type": "Role", "id": "reader"}]},
    {"uid": {"type": "Doc", "id": "d-public"}, "attrs": {"level": "public"}, "parents": []},
    {"uid": {"type": "Doc", "id": "d-secret"}, "attrs": {"level": "secret"}, "parents": []},
]
_WRITERS = '@id("writers")\npermit (principal in Role::"writer", action, resource);\n'
_NO_SECRETS = ('@id("no-secrets")\n@code("SECRET")\nforbid (principal, action, resource) '
               'when { resource.level == "secret" };\n')
_APPROVALS = _WRITERS + """
@id("needs-human")
@code("APPROVAL_REQUIRED")
@approval("human")
forbid (principal, action == Action::"docs.write", resource)
unless { context has approval && context.approval.role == "human" };

@id("needs-finance")
@code("APPROVAL_REQUIRED")
@approval("finance")
forbid (principal, action == Action::"docs.write", resource)
when { context has n && context.n > 10 }
unless { context has approval && context.approval.role == "finance" };

@id("hard-limit")
@code("TOO_BIG")
forbid (principal, action == Action::"docs.write", resource)
when { context has n && context.n > 100 };
"""


def _bundle(policy: str) -> PolicyBundle:
    return PolicyBundle.from_sources(policy=policy, schema=_SCHEMA,
                                     entities=json.dumps(_ENTITIES))


def _engine(policy: str, *, caching: bool = True) -> PolicyEngine:
    return PolicyEngine(_bundle(policy), caching=caching)


def _doc(action: str, doc: str, attributes: dict[str, Any] | None = None,
         context: dict[str, Any] | None = None, agent: str = "w-1") -> ActionRequest:
    return ActionRequest.create(agent_id=agent, action=action, occurred_at=1767225600.0,
                                context=context, resource={"type": "Doc", "id": doc,
                                                           "attributes": attributes or {}})


def test_allow_names_the_determining_permit(engine: PolicyEngine,
                                            make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")))
    assert decision.allowed and decision.decision == "allow"
    assert [(r.code, r.policy_id) for r in decision.reasons] == [
        (codes.PERMITTED, "support-tickets")]
    assert decision.reasons[0].message == engine.bundle.policies["support-tickets"].reason


def test_forbid_wins_over_permit(engine: PolicyEngine, make_request: MakeRequest) -> None:
    # data-records permits the export; pii-high-export (not approvable) forbids it.
    decision = engine.decide(make_request("data-bot-1", "customers.export",
                                          ("Customer", "cus-1001")))
    assert decision.decision == "deny" and decision.awaiting is None
    assert [(r.code, r.policy_id) for r in decision.reasons] == [
        ("SENSITIVE_DATA", "pii-high-export")]
    assert codes.PERMITTED not in decision.codes
    # ... and a verified approval does not lift a forbid that is not approvable
    assert engine.decide(_approved(make_request("data-bot-1", "customers.export",
                                                ("Customer", "cus-1001")), "human")
                         ).codes == ["SENSITIVE_DATA"]


def test_every_matching_forbid_is_a_reason(engine: PolicyEngine,
                                           make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")),
                             {"rate_1s_pct": 150, "anomaly": 999})
    assert {r.policy_id for r in decision.reasons} == {
        "production-push-approval", "guard-rate-any", "guard-anomaly"}
    assert decision.decision == "deny" and decision.awaiting is None


def test_evaluation_error_denies_even_when_cedar_allows() -> None:
    # n must be a Long; as a string the forbid errors and Cedar skips it, which on
    # its own would let the permit through (failing open).
    policy = _WRITERS + ('@id("small-n")\n@code("TOO_BIG")\nforbid (principal, action, resource)'
                         ' when { context has n && context.n > 5 };\n')
    engine = _engine(policy)
    request = _doc("docs.write", "d-public", context={"n": "many"})
    cedar = cedarpy.is_authorized_batch([{
        "principal": {"type": "Agent", "id": "w-1"},
        "action": {"type": "Action", "id": "docs.write"},
        "resource": {"type": "Doc", "id": "d-public"},
        "context": {"n": "many", "resource_trusted": True, "signals": {}}}],
        engine.bundle.policy_set, engine.bundle.entities)[0]
    assert cedar.allowed and cedar.diagnostics.errors          # what Cedar alone would do
    decision = engine.decide(request)
    assert decision.decision == "deny" and decision.awaiting is None
    assert decision.codes == [codes.POLICY_ERROR]
    assert decision.reasons[0].policy_id == "small-n"
    assert "expected long" in decision.reasons[0].message.lower()
    assert engine.decide(_doc("docs.write", "d-public", context={"n": 3})).allowed
    assert engine.decide(_doc("docs.write", "d-public", context={"n": 6})).codes == ["TOO_BIG"]


def test_missing_required_attribute_on_request_resource_is_policy_error() -> None:
    # No attributes sent: no entity is built for it (that per-batch delta costs O(entities)),
    # and Cedar fails the policy that reads resource.level: fail closed all the same.
    engine = _engine(_WRITERS + _NO_SECRETS)
    decision = engine.decide(_doc("docs.read", "d-9"))
    assert decision.codes == [codes.POLICY_ERROR]
    assert decision.reasons[0].policy_id == "no-secrets"
    assert 'Doc::"d-9"' in decision.reasons[0].message
    with_other = engine.decide(_doc("docs.read", "d-9", {"title": "x"}))
    assert with_other.codes == [codes.POLICY_ERROR]
    assert "level" in with_other.reasons[0].message


def test_default_bundle_forbids_exporting_a_customer_it_does_not_know(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # The default bundle guards every attribute it reads: an unknown customer (with or
    # without a claimed pii_level) is not known to be low or medium: never exported.
    for resource in (("Customer", "c-9"), ("Customer", "c-9", {"region": "eu"}),
                     ("Customer", "c-9", {"pii_level": "low"})):
        decision = engine.decide(make_request("data-bot-1", "customers.export", resource))
        assert decision.decision == "deny" and decision.codes == ["SENSITIVE_DATA"], resource
        assert decision.reasons[0].policy_id == "pii-high-export"
    assert engine.decide(make_request("data-bot-1", "customers.export",
                                      ("Customer", "cus-1002"))).allowed


def test_unknown_agent_and_unknown_resource_type(engine: PolicyEngine,
                                                 make_request: MakeRequest) -> None:
    assert not engine.knows_agent("ghost-bot")
    assert engine.knows_agent("support-bot-1")
    unknown_agent, unknown_type = engine.decide_many([
        (make_request("ghost-bot", "tickets.read", ("Ticket", "T-1")), {}),
        (make_request("support-bot-1", "tickets.read", ("Spaceship", "x")), {}),
    ])
    assert unknown_agent.codes == [codes.UNKNOWN_AGENT]
    assert "ghost-bot" in unknown_agent.reasons[0].message
    assert unknown_type.codes == [codes.UNKNOWN_RESOURCE_TYPE]
    assert "Spaceship" in unknown_type.reasons[0].message


def test_no_permit_is_default_deny(engine: PolicyEngine, make_request: MakeRequest) -> None:
    refund = engine.decide(make_request("support-bot-1", "payments.refund", ("Payment", "pay-5001"),
                                        {"amount_cents": 10}))
    assert refund.codes == [codes.NO_PERMIT]
    assert refund.reasons[0].message == (
        "no policy permits payments.refund on Payment for support-bot-1")
    undeclared = engine.decide(make_request("coder-bot-1", "repo.delete", ("Repository", "x")))
    assert undeclared.codes == [codes.NO_PERMIT]
    assert "not declared in the schema" in undeclared.reasons[0].message


def test_entities_json_overrides_request_attributes(engine: PolicyEngine,
                                                    make_request: MakeRequest) -> None:
    # A stored production repository cannot be relabelled: it is held for a human,
    # exactly as when the agent says nothing about it.
    relabelled = make_request("coder-bot-1", "repo.push",
                              ("Repository", "holdgate", {"environment": "staging"}))
    plain = make_request("coder-bot-1", "repo.push", ("Repository", "holdgate"))
    assert engine.decide(relabelled) == engine.decide(plain)
    assert engine.decide(relabelled).decision == "pending"
    assert engine.decide(relabelled).codes == ["PRODUCTION_CHANGE"]
    # The store wins the other way too: its staging repository stays staging.
    sandbox = make_request("coder-bot-1", "repo.push",
                           ("Repository", "holdgate-sandbox", {"environment": "production"}))
    assert engine.decide(sandbox).allowed
    # A stored high-PII customer claimed "low" is still high.
    claimed_low = make_request("data-bot-1", "customers.export",
                               ("Customer", "cus-1001", {"pii_level": "low"}))
    assert engine.decide(claimed_low).codes == ["SENSITIVE_DATA"]


def test_entities_json_overrides_request_attributes_in_any_bundle() -> None:
    # The engine's rule, whatever the policies: a stored resource's attributes are the
    # store's (and context.resource_trusted is true); an unknown one is built from the
    # request as sent (and resource_trusted is false).
    engine = _engine(_WRITERS + _NO_SECRETS)
    assert engine.decide(_doc("docs.read", "d-secret", {"level": "public"})).codes == ["SECRET"]
    assert engine.decide(_doc("docs.read", "d-public", {"level": "secret"})).allowed
    assert engine.decide(_doc("docs.read", "d-new", {"level": "secret"})).codes == ["SECRET"]
    assert engine.decide(_doc("docs.read", "d-new", {"level": "public"})).allowed
    trusted = _engine('@id("trusted-only")\npermit (principal, action, resource) '
                      "when { context.resource_trusted };\n")
    assert trusted.decide(_doc("docs.read", "d-public")).allowed
    assert trusted.decide(_doc("docs.read", "d-public", {"level": "x"})).allowed
    assert trusted.decide(_doc("docs.read", "d-new")).codes == [codes.NO_PERMIT]
    assert trusted.decide(_doc("docs.read", "d-new", {"level": "public"})).codes == [
        codes.NO_PERMIT]


@pytest.mark.parametrize("action, unknown, stored, context, outcome", [
    ("repo.push", ("Repository", "new-repo", {"environment": "staging"}),
     ("Repository", "holdgate-sandbox"), {}, ("pending", "PRODUCTION_CHANGE")),
    ("repo.push", ("Repository", "new-repo", {"environment": "development"}),
     ("Repository", "holdgate-sandbox"), {}, ("pending", "PRODUCTION_CHANGE")),
    ("deploy.create", ("Deployment", "new-api-staging", {"environment": "staging"}),
     ("Deployment", "payments-api-staging"), {}, ("pending", "PRODUCTION_CHANGE")),
    ("records.read", ("Record", "new-table", {"sensitivity": "public"}),
     ("Record", "web-analytics-2024"), {}, ("pending", "SENSITIVE_DATA")),
    ("records.delete", ("Record", "new-table", {"sensitivity": "internal"}),
     ("Record", "web-analytics-2024"), {}, ("pending", "SENSITIVE_DATA")),
    ("payments.refund", ("Payment", "pay-new", {"amount_cents": 10_000_000}),
     ("Payment", "pay-5001"), {"amount_cents": 100}, ("deny", "INVALID_AMOUNT")),
    ("customers.export", ("Customer", "c-new", {"pii_level": "low"}),
     ("Customer", "cus-1002"), {}, ("deny", "SENSITIVE_DATA")),
])
def test_an_unknown_resources_claimed_attributes_never_open_a_door(
        engine: PolicyEngine, make_request: MakeRequest, action: str,
        unknown: tuple[Any, ...], stored: tuple[Any, ...], context: dict[str, Any],
        outcome: tuple[str, str]) -> None:
    agent = {"repo.push": "coder-bot-1", "deploy.create": "coder-bot-1",
             "payments.refund": "billing-bot-1"}.get(action, "data-bot-1")
    # The same value, when the entity store vouches for it, opens the door ...
    assert engine.decide(make_request(agent, action, stored, context)).allowed
    # ... the agent's own word for an unknown resource does not.
    decision = engine.decide(make_request(agent, action, unknown, context))
    assert (decision.decision, decision.codes) == (outcome[0], [outcome[1]])
    assert decision.awaiting == ("human" if outcome[0] == "pending" else None)


def test_claims_can_only_make_a_decision_stricter(engine: PolicyEngine,
                                                  make_request: MakeRequest) -> None:
    read = make_request("support-bot-1", "tickets.read", ("Ticket", "T-1"))
    assert engine.decide(read).allowed
    declared = make_request("support-bot-1", "tickets.read", ("Ticket", "T-1"),
                            {"data_sensitivity": "restricted"})
    decision = engine.decide(declared)
    assert decision.decision == "pending" and decision.codes == ["SENSITIVE_DATA"]
    assert engine.decide(_approved(declared, "human")).allowed
    for other in ("public", "internal", 5, ["restricted"]):
        claim = make_request("support-bot-1", "tickets.read", ("Ticket", "T-1"),
                             {"data_sensitivity": other})
        assert engine.decide(claim).allowed, other


def test_action_groups_resolve_without_schema_at_evaluation(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # auditor-read-all permits `action in Action::"read"`
    read = make_request("audit-bot-1", "invoices.read", ("Invoice", "inv-1", {"amount_cents": 5}))
    write = make_request("audit-bot-1", "tickets.reply", ("Ticket", "T-1"))
    assert engine.decide(read).reasons[0].policy_id == "auditor-read-all"
    assert engine.decide(write).codes == [codes.NO_PERMIT]
    # guard-rate-irreversible applies to members of the `irreversible` group only
    signals = {"action_rate_1s_pct": 120}
    email = make_request("support-bot-1", "emails.send", ("Email", "e-1"))
    ticket = make_request("support-bot-1", "tickets.read", ("Ticket", "T-1"))
    assert [r.policy_id for r in engine.decide(email, signals).reasons] == [
        "guard-rate-irreversible"]
    assert engine.decide(ticket, signals).allowed


@pytest.mark.parametrize("signals", [{}, dict.fromkeys(
    ["rate_1s", "rate_60s", "rate_1h", "action_rate_1s", "repeat_10s", "streak", "fanout_60s",
     "new_action", "new_resource_type", "deny_ratio_pct", "anomaly"], 0)])
def test_zero_or_missing_signals_trip_nothing(engine: PolicyEngine, make_request: MakeRequest,
                                              signals: dict[str, int]) -> None:
    request = make_request("data-bot-1", "records.delete",
                           ("Record", "web-analytics-2024"))
    assert engine.decide(request, signals).allowed


@pytest.mark.parametrize("signals, code, policy_id", [
    ({"rate_1s_pct": 105}, "RATE_LIMIT", "guard-rate-any"),
    ({"rate_1s": 501}, "RATE_LIMIT", "guard-rate-ceiling"),
    ({"repeat_10s": 4}, "REPETITION", "guard-repeat-irreversible"),
    ({"anomaly": 701}, "ANOMALY", "guard-anomaly-irreversible"),
])
def test_guards_read_signals(engine: PolicyEngine, make_request: MakeRequest,
                             signals: dict[str, int], code: str, policy_id: str) -> None:
    request = make_request("data-bot-1", "records.delete", ("Record", "web-analytics-2024"))
    decision = engine.decide(request, signals)
    assert (code, policy_id) in [(r.code, r.policy_id) for r in decision.reasons]


def test_full_signal_record_when_a_policy_uses_the_whole_record(
        tmp_path: Path, make_request: MakeRequest) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    with (root / "policy.cedar").open("a") as fh:
        fh.write('\n@id("streak-guard")\n@code("REPETITION")\nforbid (principal, action, resource)'
                 " when { context.signals has streak && context.signals.streak > 50 };\n")
    engine = PolicyEngine(PolicyBundle.load(root))
    request = make_request("support-bot-1", "tickets.read", ("Ticket", "T-1"))
    assert engine.decide(request, {}).allowed
    assert engine.decide(request, {"streak": 51}).codes == ["REPETITION"]


def test_batch_keeps_order_and_matches_single_decisions(engine: PolicyEngine,
                                                        make_request: MakeRequest) -> None:
    items = [
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")), {}),
        (make_request("ghost", "tickets.read", ("Ticket", "T-1")), {}),
        (make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")), {}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "c-1", {"pii_level": "low"})), {}),
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-2")), {"rate_1s_pct": 495}),
        (make_request("support-bot-1", "tickets.read", ("Nope", "x")), {}),
        (make_request("billing-bot-1", "payments.refund", ("Payment", "pay-5001"),
                      {"amount_cents": 100}), {}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "cus-1002", {"pii_level": "high"})), {}),
        (make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")), {"anomaly": 950}),
        (_approved(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")),
                   "human"), {}),
        (make_request("data-bot-1", "records.read",
                      ("Record", "new-table", {"sensitivity": "public"})), {}),
    ]
    batch = engine.decide_many(items)
    assert [d.decision for d in batch] == [
        "allow", "deny", "pending", "deny", "deny", "deny", "allow", "allow", "deny", "allow",
        "pending"]
    assert [d.awaiting for d in batch] == [
        None, None, "human", None, None, None, None, None, None, None, "human"]
    assert batch == [engine.decide(request, signals) for request, signals in items]
    uncached = PolicyEngine(engine.bundle, caching=False)
    assert batch == uncached.decide_many(items) == uncached.decide_many(items[::-1])[::-1]
    assert engine.decide_many([]) == []


def test_same_resource_with_different_attributes_in_one_batch(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # An unknown resource described twice in one batch: each request sees its own
    # attributes, never its neighbour's.  (A bundle that reads the request's own
    # resource only shares one Cedar call between them.)
    secrets = _engine(_WRITERS + _NO_SECRETS)
    public, secret = (_doc("docs.read", "d-7", {"level": "public"}),
                      _doc("docs.read", "d-7", {"level": "secret"}))
    bare = _doc("docs.read", "d-7")
    decisions = secrets.decide_many([(public, {}), (secret, {}), (public, {}), (secret, {}),
                                     (bare, {})])
    assert [d.decision for d in decisions] == ["allow", "deny", "allow", "deny", "deny"]
    assert decisions[1].codes == ["SECRET"] and decisions[4].codes == [codes.POLICY_ERROR]

    # In the default bundle, whatever the claim, an unknown customer is never exported,
    # while the stored low-PII one is (its neighbours' claims do not leak into it).
    def export(cid: str, level: str) -> ActionRequest:
        return make_request("data-bot-1", "customers.export",
                            ("Customer", cid, {"pii_level": level}))

    batch = [(export("c-7", "low"), {}), (export("c-7", "high"), {}),
             (export("cus-1002", "high"), {}), (export("c-7", "low"), {})]
    assert [d.decision for d in engine.decide_many(batch)] == ["deny", "deny", "allow", "deny"]


def test_one_bad_request_does_not_sink_the_batch(engine: PolicyEngine,
                                                 make_request: MakeRequest) -> None:
    items = [
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")), {}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "c-1", {"pii_level": 5})), {}),
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-3")), {"rate_1s": "many"}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "cus-1002", {"pii_level": 5})), {}),
        (make_request("coder-bot-1", "repo.push", ("Repository", "new-repo",
                                                   {"environment": 5})), {}),
    ]
    decisions = engine.decide_many(items)  # type: ignore[arg-type]
    assert [d.decision for d in decisions] == ["allow", "deny", "deny", "allow", "pending"]
    assert decisions[1].codes == ["SENSITIVE_DATA"]     # an unexpected type: the safe side
    assert decisions[2].codes == [codes.POLICY_ERROR] and decisions[2].reasons[0].message
    assert decisions[4].codes == ["PRODUCTION_CHANGE"] and decisions[4].awaiting == "human"


def test_cedar_escapes_never_reach_the_engine(make_request: MakeRequest) -> None:
    """An agent cannot forge an entity or an extension value through its context."""
    from holdgate.errors import ValidationError

    for bad in ({"__extn": {"fn": "decimal", "arg": "1.0"}},
                {"__entity": {"type": "Role", "id": "auditor"}}):
        with pytest.raises(ValidationError, match="escape"):
            make_request("support-bot-1", "tickets.read", ("Ticket", "T-2"), {"note": bad})
        with pytest.raises(ValidationError, match="escape"):
            make_request("data-bot-1", "customers.export", ("Customer", "c-1",
                                                             {"pii_level": bad}))


def test_decision_is_frozen(engine: PolicyEngine, make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")))
    assert isinstance(decision, PolicyDecision)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.decision = "deny"  # type: ignore[misc]


# ---------------------------------------------------------------- approvals --

def test_an_approvable_forbid_with_a_matching_permit_is_pending(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")))
    assert decision.decision == "pending" and not decision.allowed
    assert decision.awaiting == "human"
    # the reasons are the approvable forbids that hold it (no permit among them)
    assert [(r.code, r.policy_id) for r in decision.reasons] == [
        ("PRODUCTION_CHANGE", "production-push-approval")]
    assert decision.reasons[0].message == (
        engine.bundle.policies["production-push-approval"].reason)


def test_an_approvable_and_a_non_approvable_forbid_is_a_deny(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    push = make_request("coder-bot-1", "repo.push", ("Repository", "holdgate"))
    decision = engine.decide(push, {"anomaly": 950})
    assert decision.decision == "deny" and decision.awaiting is None
    assert [r.policy_id for r in decision.reasons] == ["production-push-approval",
                                                       "guard-anomaly"]
    # an approval cannot lift what is not approvable: the anomaly alone stands
    approved = engine.decide(_approved(push, "human"), {"anomaly": 950})
    assert approved.decision == "deny" and approved.codes == ["ANOMALY"]
    engine2 = _engine(_APPROVALS)
    held = engine2.decide(_doc("docs.write", "d-public", context={"n": 500}))
    assert held.decision == "deny" and held.awaiting is None
    assert [r.policy_id for r in held.reasons] == ["needs-human", "needs-finance", "hard-limit"]


def test_an_approvable_forbid_without_a_permit_is_a_deny_not_pending(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # No permit matches (support agents do not push): an approval could not make it an
    # allow, so nobody is asked for one.  The forbid that fired is the reason.
    decision = engine.decide(make_request("support-bot-1", "repo.push",
                                          ("Repository", "holdgate")))
    assert decision.decision == "deny" and decision.awaiting is None
    assert decision.codes == ["PRODUCTION_CHANGE"]
    approved = engine.decide(_approved(make_request("support-bot-1", "repo.push",
                                                    ("Repository", "holdgate")), "human"))
    assert approved.decision == "deny" and approved.codes == [codes.NO_PERMIT]
    # same in a bundle written for it: the reader role has no permit
    other = _engine(_APPROVALS).decide(_doc("docs.write", "d-public", agent="r-1"))
    assert other.decision == "deny" and other.awaiting is None
    assert other.codes == ["APPROVAL_REQUIRED"]


def test_awaiting_names_the_role_of_every_approvable_forbid() -> None:
    engine = _engine(_APPROVALS)
    one = engine.decide(_doc("docs.write", "d-public", context={"n": 1}))
    assert (one.decision, one.awaiting) == ("pending", "human")
    both = engine.decide(_doc("docs.write", "d-public", context={"n": 50}))
    assert both.decision == "pending"
    assert both.awaiting is not None and sorted(both.awaiting.split(",")) == ["finance", "human"]
    assert [r.policy_id for r in both.reasons] == ["needs-human", "needs-finance"]
    # one approval lifts its own forbid only: the other role is still awaited
    after_human = engine.decide(_approved(_doc("docs.write", "d-public", context={"n": 50}),
                                          "human"))
    assert (after_human.decision, after_human.awaiting) == ("pending", "finance")
    after_finance = engine.decide(_approved(_doc("docs.write", "d-public", context={"n": 50}),
                                            "finance"))
    assert (after_finance.decision, after_finance.awaiting) == ("pending", "human")


@pytest.mark.parametrize("request_of", [
    lambda mk: mk("coder-bot-1", "repo.push", ("Repository", "holdgate")),
    lambda mk: mk("coder-bot-1", "deploy.create", ("Deployment", "payments-api-prod")),
    lambda mk: mk("data-bot-1", "records.read", ("Record", "hr-salaries")),
    lambda mk: mk("billing-bot-1", "payments.refund", ("Payment", "pay-5002"),
                  {"amount_cents": 80000}),
    lambda mk: mk("support-bot-1", "emails.send", ("Email", "e-1"), {"recipient_count": 500}),
    lambda mk: mk("support-bot-1", "tickets.read", ("Ticket", "T-1"),
                  {"data_sensitivity": "restricted"}),
])
def test_a_verified_approval_of_the_awaited_role_lifts_the_hold(
        engine: PolicyEngine, make_request: MakeRequest, request_of: Any) -> None:
    request = request_of(make_request)
    held = engine.decide(request)
    assert (held.decision, held.awaiting) == ("pending", "human")
    lifted = engine.decide(_approved(request, "human"))
    assert lifted.decision == "allow" and lifted.awaiting is None
    assert all(r.code == codes.PERMITTED for r in lifted.reasons)
    for role in ("bot", "ci", "Human", "finance"):
        wrong = engine.decide(_approved(request, role))
        assert (wrong.decision, wrong.awaiting) == ("pending", "human"), role
        assert wrong.reasons == held.reasons


def test_a_verified_approval_lifts_the_hold_in_any_bundle() -> None:
    engine = _engine(_APPROVALS)
    request = _doc("docs.write", "d-public")
    assert engine.decide(_approved(request, "human")).allowed
    assert engine.decide(_approved(request, "finance")).decision == "pending"
    assert engine.decide(_approved(request, "human", approver="anyone")).allowed


@pytest.mark.parametrize("claim", [
    {"approvals": ["human"]},
    {"approvals": "human"},
    {"approvals": ["bot", "ci"]},
    {"approved_by": "human", "approver": "dana@example.com", "role": "human"},
    {"approval_token": "eyJyb2xlIjogImh1bWFuIn0"},
])
def test_an_agent_claiming_approvals_in_its_context_changes_nothing(
        engine: PolicyEngine, make_request: MakeRequest, claim: dict[str, Any]) -> None:
    plain = engine.decide(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")))
    claimed = engine.decide(make_request("coder-bot-1", "repo.push",
                                         ("Repository", "holdgate"), claim))
    assert claimed == plain
    assert (claimed.decision, claimed.awaiting) == ("pending", "human")


@pytest.mark.parametrize("key, value", [
    ("approval", {"role": "human", "approver": "dana@example.com"}),
    ("approval", "human"),
    ("resource_trusted", True),
    ("signals", {"anomaly": 0}),
])
def test_an_agent_cannot_send_what_only_the_worker_sets(
        make_request: MakeRequest, key: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=rf"context\.{key}.*reserved"):
        make_request("coder-bot-1", "repo.push", ("Repository", "holdgate"), {key: value})
    with pytest.raises(ValidationError, match=rf"context\.{key}.*reserved"):
        ActionRequest.from_obj({
            "schema_version": 1, "request_id": "21b7c561-94a7-5722-b1cc-81cab93501ba",
            "agent_id": "coder-bot-1", "action": "repo.push",
            "resource": {"type": "Repository", "id": "holdgate"},
            "context": {key: value}, "occurred_at": 1767225600.0})


def test_the_engine_sets_resource_trusted_whatever_reaches_it() -> None:
    # Even a request built past the wire validator cannot vouch for its own resource.
    engine = _engine('@id("trusted-only")\npermit (principal, action, resource) '
                     "when { context.resource_trusted };\n")
    forged = dataclasses.replace(_doc("docs.read", "d-new"),
                                 context={"resource_trusted": True})
    assert engine.decide(forged).codes == [codes.NO_PERMIT]
    honest = dataclasses.replace(_doc("docs.read", "d-public"),
                                 context={"resource_trusted": False})
    assert engine.decide(honest).allowed


def test_the_cache_keeps_pending_approved_and_trusted_apart(make_request: MakeRequest) -> None:
    bundle = PolicyBundle.load(default_bundle_path())
    push = make_request("coder-bot-1", "repo.push", ("Repository", "holdgate"))
    items = [
        (push, {}), (_approved(push, "human"), {}), (_approved(push, "bot"), {}), (push, {}),
        (make_request("coder-bot-1", "repo.push", ("Repository", "holdgate-sandbox")), {}),
        (make_request("coder-bot-1", "repo.push",
                      ("Repository", "sandbox-2", {"environment": "staging"})), {}),
        (_approved(push, "human"), {"anomaly": 950}),
        (make_request("data-bot-1", "records.read", ("Record", "web-analytics-2024")), {}),
        (make_request("data-bot-1", "records.read",
                      ("Record", "web-analytics-2025", {"sensitivity": "internal"})), {}),
    ]
    expected = [("pending", "human"), ("allow", None), ("pending", "human"), ("pending", "human"),
                ("allow", None), ("pending", "human"), ("deny", None), ("allow", None),
                ("pending", "human")]
    alone = PolicyEngine(bundle, caching=False)
    assert [(d.decision, d.awaiting) for d in
            (alone.decide(r, s) for r, s in items)] == expected
    cached = PolicyEngine(bundle)
    for _ in range(3):
        assert [(d.decision, d.awaiting) for d in cached.decide_many(items)] == expected
        assert [(d.decision, d.awaiting) for d in
                cached.decide_many(items[::-1])][::-1] == expected
    assert cached.hits > 0


# ---------------------------------------- @approval as the engine reads it --

def test_approvable_forbids_load_with_their_roles() -> None:
    bundle = _bundle(_APPROVALS)
    assert {pid: i.annotations.get("approval") for pid, i in bundle.policies.items()} == {
        "writers": None, "needs-human": "human", "needs-finance": "finance",
        "hard-limit": None}


# ------------------------------------------- problems found and fixed --

def test_an_evaluation_error_in_an_approvable_forbid_denies(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # recipient_count must be a Long: bulk-email-approval (approvable) errors.
    decision = engine.decide(make_request("support-bot-1", "emails.send", ("Email", "e-1"),
                                          {"recipient_count": "500"}))
    assert decision.codes == [codes.POLICY_ERROR]
    assert decision.decision == "deny" and decision.awaiting is None


def test_a_pending_decision_does_not_depend_on_a_broken_neighbour() -> None:
    # A tight projection (no attribute read through context.approval) so requests
    # share one Cedar call.
    engine = _engine(_WRITERS + '@id("held")\n@approval("human")\nforbid (principal, '
                     'action == Action::"docs.write", resource) unless { context has approval };\n'
                     + _NO_SECRETS, caching=False)
    held = _doc("docs.write", "d-public")
    good = _doc("docs.read", "d-new", {"level": "public"})
    # built past the wire validator, as the engine must survive whatever reaches it
    broken = dataclasses.replace(good, resource=Resource(type="Doc", id="d-broken",
                                                         attributes={"level": None}))
    assert engine.decide(held).decision == "pending"
    decisions = engine.decide_many([(held, {}), (broken, {})])
    assert decisions[1].codes == [codes.POLICY_ERROR]
    assert decisions[0].decision == "pending"


def test_the_default_bundle_keeps_a_tight_projection() -> None:
    projection = PolicyBundle.load(default_bundle_path()).projection
    assert not projection.resource_ids_matter
    assert projection.resource_attrs == ("amount_cents", "environment", "pii_level",
                                         "sensitivity")
