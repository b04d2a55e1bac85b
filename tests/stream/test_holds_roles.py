"""An action held for two approver roles: each approval is remembered until both are in.

``context.approval`` carries the role of the token being applied *and* every role
that approved the same held action before (``roles``), so a policy that needs a
human and finance (``context.approval.roles.contains(...)``) can be satisfied by
two tokens in either order; neither alone lifts the hold.
"""
from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from holdgate.approvals import Approval, ApproverKeys
from holdgate.events import ActionRequest, encode
from holdgate.keys import Signer, generate_keypair, load_signer
from holdgate.models import SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine
from holdgate.routing import partition_for
from holdgate.signing import sign_headers
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.holds import pending_key

PARTS, T0, AGENT = 2, 1_790_000_000.0, "w-1"
ACTIONS, APPROVALS = "a", "ap"

_SCHEMA = """
type Ctx = {
  resource_trusted: Bool,
  approval?: { role: String, approver: String, roles?: Set<String> },
};
entity Role;
entity Agent in [Role];
entity Doc;
action "docs.publish" appliesTo { principal: Agent, resource: Doc, context: Ctx };
"""
_POLICY = """
@id("writers")
permit (principal in Role::"writer", action, resource);

@id("needs-human")
@code("APPROVAL_REQUIRED")
@approval("human")
forbid (principal, action, resource)
unless { context has approval && context.approval has roles &&
         context.approval.roles.contains("human") };

@id("needs-finance")
@code("APPROVAL_REQUIRED")
@approval("finance")
forbid (principal, action, resource)
unless { context has approval && context.approval has roles &&
         context.approval.roles.contains("finance") };
"""
_ENTITIES = [
    {"uid": {"type": "Role", "id": "writer"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Agent", "id": AGENT}, "attrs": {},
     "parents": [{"type": "Role", "id": "writer"}]},
]


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Signer, Path]]:
    out = {}
    for name in ("alice", "fred"):
        private, public, _ = generate_keypair(tmp_path_factory.mktemp(name), name)
        out[name] = (load_signer(private), public)
    return out


def _runner(signers: dict[str, tuple[Signer, Path]]) -> Runner:
    bundle = PolicyBundle.from_sources(policy=_POLICY, schema=_SCHEMA,
                                       entities=json.dumps(_ENTITIES))
    snapshot = Snapshot(engine=PolicyEngine(bundle), policy_version="v",
                        signals=SignalComputer(), partitions=PARTS)
    approvers = ApproverKeys.parse(f"human={signers['alice'][1]},finance={signers['fred'][1]}")
    return Runner(snapshot=snapshot, store=MemoryStore(), partitions=PARTS,
                  signer=Signer.generate(), approvals_topic=APPROVALS, approvers=approvers)


@pytest.mark.parametrize("order", [("alice", "fred"), ("fred", "alice")])
def test_two_roles_lift_the_hold_together_in_either_order(
        signers: dict[str, tuple[Signer, Path]], order: tuple[str, str]) -> None:
    runner = _runner(signers)
    p = partition_for(AGENT, PARTS)
    request = ActionRequest.create(agent_id=AGENT, action="docs.publish",
                                   resource={"type": "Doc", "id": "d-1"}, occurred_at=T0,
                                   deadline=T0 + 600)
    value = encode(request)
    out = runner.run([RawRecord(key=AGENT.encode(), value=value, partition=p, offset=0,
                                topic=ACTIONS, timestamp=T0)], decided_at=T0)
    runner.apply(out.writes)
    [held] = out.decisions
    assert (held.decision, held.awaiting) == ("pending", "finance,human")
    roles = {"alice": "human", "fred": "finance"}
    decided = []
    for n, name in enumerate(order + (order[1],)):          # the second token twice
        token = Approval.mint(request_id=request.request_id, agent_id=AGENT,
                              action_digest=held.digest, role=roles[name], approver=name,
                              ttl=60, now=T0 + n + 1)
        raw = token.to_bytes()
        out = runner.run([RawRecord(key=AGENT.encode(), value=raw, partition=p, offset=n,
                                    topic=APPROVALS, timestamp=T0 + n + 1,
                                    headers=sign_headers(signers[name][0], raw))],
                         decided_at=T0 + n + 1)
        runner.apply(out.writes)
        decided.append((out.decisions, [orjson.loads(d)["error"] for d in out.deadletters]))
        if n == 0:      # one role in: still held, for the other role, and remembered
            entry = orjson.loads(runner.store.get(p, pending_key(request.request_id)) or b"{}")
            assert entry["roles"] == [roles[name]]
    (first, _), (second, _), (third, letters) = decided
    assert [(d.decision, d.awaiting) for d in first] == [("pending", roles[order[1]])]
    assert [d.decision for d in second] == ["allow"]
    assert third == [] and letters[0].startswith("APPROVAL_UNMATCHED")
    assert runner.store.get(p, pending_key(request.request_id)) is None
