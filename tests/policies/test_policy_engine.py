"""PolicyEngine.decide_many against the default bundle, with real cedarpy."""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holdgate import reasons as codes
from holdgate.events import ActionRequest
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


def test_allow_names_the_determining_permit(engine: PolicyEngine,
                                            make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")))
    assert decision.allowed and decision.decision == "allow"
    assert [(r.code, r.policy_id) for r in decision.reasons] == [
        (codes.PERMITTED, "support-tickets")]
    assert decision.reasons[0].message == engine.bundle.policies["support-tickets"].reason


def test_forbid_wins_over_permit(engine: PolicyEngine, make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")))
    assert decision.decision == "deny"
    assert [(r.code, r.policy_id) for r in decision.reasons] == [
        ("PRODUCTION_CHANGE", "production-push-approval")]
    assert codes.PERMITTED not in decision.codes


def test_every_matching_forbid_is_a_reason(engine: PolicyEngine,
                                           make_request: MakeRequest) -> None:
    decision = engine.decide(make_request("coder-bot-1", "repo.push", ("Repository", "holdgate")),
                             {"rate_1s_pct": 150, "anomaly": 999})
    assert {r.policy_id for r in decision.reasons} == {
        "production-push-approval", "guard-rate-any", "guard-anomaly"}


def test_evaluation_error_denies_even_when_cedar_allows(engine: PolicyEngine,
                                                        make_request: MakeRequest) -> None:
    # approvals must be a set; as a string the forbid errors and Cedar skips it,
    # which on its own would let the permit through.
    request = make_request("coder-bot-1", "repo.push", ("Repository", "holdgate"),
                           {"approvals": "human"})
    decision = engine.decide(request)
    assert decision.decision == "deny"
    assert decision.codes == [codes.POLICY_ERROR]
    assert decision.reasons[0].policy_id == "production-push-approval"
    assert "expected set" in decision.reasons[0].message


def test_missing_required_attribute_on_request_resource_is_policy_error(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    # No attributes sent: no entity is built for it (that per-batch delta costs O(entities)),
    # and Cedar fails the policy that reads resource.pii_level: fail closed all the same.
    decision = engine.decide(make_request("data-bot-1", "customers.export", ("Customer", "c-9")))
    assert decision.codes == [codes.POLICY_ERROR]
    assert decision.reasons[0].policy_id == "pii-high-export"
    assert 'Customer::"c-9"' in decision.reasons[0].message
    with_other = engine.decide(make_request("data-bot-1", "customers.export",
                                            ("Customer", "c-9", {"region": "eu"})))
    assert with_other.codes == [codes.POLICY_ERROR]
    assert "pii_level" in with_other.reasons[0].message


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
    relabelled = make_request("coder-bot-1", "repo.push",
                              ("Repository", "holdgate", {"environment": "staging"}))
    assert engine.decide(relabelled).codes == ["PRODUCTION_CHANGE"]
    # an unknown resource is taken from the request as sent
    fresh = make_request("coder-bot-1", "repo.push",
                         ("Repository", "new-repo", {"environment": "staging"}))
    assert engine.decide(fresh).allowed


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
    ]
    batch = engine.decide_many(items)
    assert [d.decision for d in batch] == [
        "allow", "deny", "deny", "allow", "deny", "deny", "allow"]
    assert batch == [engine.decide(request, signals) for request, signals in items]
    assert engine.decide_many([]) == []


def test_same_resource_with_different_attributes_in_one_batch(
        engine: PolicyEngine, make_request: MakeRequest) -> None:
    def export(level: str) -> ActionRequest:
        resource = ("Customer", "c-7", {"pii_level": level})
        return make_request("data-bot-1", "customers.export", resource)

    low, high = export("low"), export("high")
    decisions = engine.decide_many([(low, {}), (high, {}), (low, {}), (high, {})])
    assert [d.decision for d in decisions] == ["allow", "deny", "allow", "deny"]
    assert decisions[1].codes == ["SENSITIVE_DATA"]


def test_one_bad_request_does_not_sink_the_batch(engine: PolicyEngine,
                                                 make_request: MakeRequest) -> None:
    items = [
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-1")), {}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "c-1", {"pii_level": 5})), {}),
        (make_request("support-bot-1", "tickets.read", ("Ticket", "T-3")), {"rate_1s": "many"}),
        (make_request("data-bot-1", "customers.export",
                      ("Customer", "c-2", {"pii_level": "low"})), {}),
    ]
    decisions = engine.decide_many(items)  # type: ignore[arg-type]
    assert [d.decision for d in decisions] == ["allow", "deny", "deny", "allow"]
    assert decisions[1].codes == ["SENSITIVE_DATA"]     # an unexpected type: the safe side
    assert decisions[2].codes == [codes.POLICY_ERROR] and decisions[2].reasons[0].message


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
