"""Held actions and approval tokens in the runner, without Kafka (a MemoryStore).

The default bundle holds ``data-bot-1``'s ``records.read`` of the restricted
``hr-salaries`` record for a *human* approval.  These tests drive the runner
the way the Kafka driver does (actions and approvals topics, offsets per
partition, writes applied after each batch) and check what every kind of
token does: a good one lifts the hold once, everything else is dead-lettered
with its reason code and the pending verdict (a deny to every reader) stands.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from holdgate import reasons as rc
from holdgate.approvals import Approval, ApproverKeys
from holdgate.errors import ValidationError
from holdgate.events import ActionRequest, action_digest, encode
from holdgate.keys import Signer, TrustStore, generate_keypair, load_signer
from holdgate.models import SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.routing import partition_for
from holdgate.signing import sign_headers, verify_record
from holdgate.stream import BatchOutput, MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.holds import HOLD_MAX, pending_key
from holdgate.stream.marks import MARK_KEY, PartitionMark

PARTS = 4
T0 = 1_790_000_000.0
AGENT = "data-bot-1"
RESTRICTED = {"type": "Record", "id": "hr-salaries"}
ACTIONS, APPROVALS = "hg.actions", "hg.approvals"
APPROVALS_BASE = 1000          # approvals offsets differ from the actions', to tell them apart
WORKER = Signer.generate()
WORKER_TRUST = TrustStore([WORKER.public_key])
PART = partition_for(AGENT, PARTS)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(PolicyBundle.load(default_bundle_path()))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Signer, Path]]:
    """alice approves as human, fred as finance; mallory's key is configured nowhere."""
    out = {}
    for name in ("alice", "fred", "mallory"):
        private, public, _ = generate_keypair(tmp_path_factory.mktemp(name), name)
        out[name] = (load_signer(private), public)
    return out


@pytest.fixture
def humans(keys: dict[str, tuple[Signer, Path]]) -> ApproverKeys:
    return ApproverKeys.parse(f"human={keys['alice'][1]}")


def _signer(keys: dict[str, tuple[Signer, Path]], name: str) -> Signer:
    return keys[name][0]


class Worker:
    """A runner fed like the Kafka driver feeds it: both topics, offsets per partition."""

    def __init__(self, engine: PolicyEngine, approvers: ApproverKeys | None) -> None:
        self.store = MemoryStore()
        self.offsets = {ACTIONS: [0] * PARTS, APPROVALS: [APPROVALS_BASE] * PARTS}
        snapshot = Snapshot(engine=engine, policy_version="v", signals=SignalComputer(),
                            partitions=PARTS)
        self.runner = Runner(snapshot=snapshot, store=self.store, partitions=PARTS,
                             signer=WORKER, approvals_topic=APPROVALS, approvers=approvers)

    def _next(self, topic: str, partition: int) -> int:
        off = self.offsets[topic][partition]
        self.offsets[topic][partition] += 1
        return off

    def action(self, req: ActionRequest | bytes, *, agent: str = AGENT,
               at: float | None = None) -> RawRecord:
        value = encode(req) if isinstance(req, ActionRequest) else req
        p = partition_for(agent, PARTS)
        when = at if at is not None else (
            req.occurred_at if isinstance(req, ActionRequest) else T0)
        return RawRecord(key=agent.encode(), value=value, partition=p,
                         offset=self._next(ACTIONS, p), topic=ACTIONS, timestamp=when)

    def approval(self, token: Approval | bytes, signer: Signer | None, *, at: float,
                 agent: str = AGENT) -> RawRecord:
        """An approvals record as `holdgate approve` publishes it: on the agent's partition."""
        value = token.to_bytes() if isinstance(token, Approval) else token
        p = partition_for(agent, PARTS)
        headers = sign_headers(signer, value) if signer is not None else ()
        return RawRecord(key=agent.encode(), value=value, partition=p,
                         offset=self._next(APPROVALS, p), topic=APPROVALS, timestamp=at,
                         headers=headers)

    def run(self, records: list[RawRecord], *, at: float) -> BatchOutput:
        out = self.runner.run(records, decided_at=at)
        self.runner.apply(out.writes)
        return out

    def held(self, request_id: str, partition: int = PART) -> dict[str, Any] | None:
        blob = self.store.get(partition, pending_key(request_id))
        return None if blob is None else orjson.loads(blob)


def _read(n: int, *, deadline: float | None = T0 + 60, t: float = T0,
          **context: Any) -> ActionRequest:
    return ActionRequest.create(agent_id=AGENT, action="records.read", resource=RESTRICTED,
                                context=context, occurred_at=t, deadline=deadline,
                                request_id=f"00000000-0000-4000-8000-{n:012d}")


def _verdicts(out: BatchOutput) -> list[dict[str, Any]]:
    """The batch's verdicts, each checked to be signed by the worker over its exact bytes."""
    for v in out.verdicts:
        assert verify_record(WORKER_TRUST, v.value, v.headers) is None
    return [orjson.loads(v.value) for v in out.verdicts]


def _errors(out: BatchOutput) -> list[str]:
    return [orjson.loads(d)["error"] for d in out.deadletters]


def _codes(verdict: dict[str, Any]) -> list[str]:
    return [r["code"] for r in verdict["reasons"]]


def _token(verdict: dict[str, Any], *, at: float, ttl: float = 300.0,
           **over: Any) -> Approval:
    fields: dict[str, Any] = {"request_id": verdict["request_id"],
                              "agent_id": verdict["agent_id"],
                              "action_digest": verdict["action_digest"], "role": "human",
                              "approver": "alice@example.com", "ttl": ttl, "now": at}
    fields.update(over)
    return Approval.mint(**fields)


def _hold(w: Worker, req: ActionRequest) -> dict[str, Any]:
    out = w.run([w.action(req)], at=req.occurred_at)
    [verdict] = _verdicts(out)
    assert verdict["decision"] == "pending" and verdict["awaiting"] == "human", verdict
    assert w.held(req.request_id) is not None
    return verdict


def _other_agent_on(partition: int) -> str:
    return next(a for a in (f"intruder-{i}" for i in range(1000))
                if partition_for(a, PARTS) == partition)


# ---------------------------------------------------------------------------- holding


def test_pending_verdict_and_held_entry_are_written_in_the_same_batch(
        engine: PolicyEngine, humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    req = _read(1)
    raw = w.action(req)
    out = w.runner.run([raw], decided_at=T0)
    [verdict] = _verdicts(out)
    assert verdict["decision"] == "pending" and verdict["awaiting"] == "human"
    assert "SENSITIVE_DATA" in _codes(verdict)
    assert (out.allowed, out.denied, out.deadletters) == (0, 1, [])
    # The held action, the agent's state and the mark: one batch's writes, one partition.
    part = out.writes[PART]
    assert {pending_key(req.request_id), AGENT, MARK_KEY} <= set(part)
    assert w.store.get(PART, pending_key(req.request_id)) is None   # nothing durable yet
    entry = orjson.loads(part[pending_key(req.request_id)])  # type: ignore[arg-type]
    assert entry["digest"] == verdict["action_digest"] == action_digest(raw.value or b"")
    assert entry["agent_id"] == AGENT and entry["awaiting"] == "human"
    assert entry["deadline"] == T0 + 60 and entry["offset"] == raw.offset == 0
    w.runner.apply(out.writes)
    assert w.held(req.request_id) == entry


def test_a_valid_token_lifts_the_hold_exactly_once(engine: PolicyEngine,
                                                    keys: dict[str, tuple[Signer, Path]],
                                                    humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    req = _read(2)
    pending = _hold(w, req)
    good = w.approval(_token(pending, at=T0 + 5), _signer(keys, "alice"), at=T0 + 5)
    out = w.run([good], at=T0 + 5)
    assert _errors(out) == []
    [final] = _verdicts(out)
    assert final["decision"] == "allow" and final["request_id"] == req.request_id
    assert final["action_digest"] == pending["action_digest"]
    assert final["request"] == pending["request"] == req.to_obj()
    assert final["seq"] == pending["seq"] + 1               # the partition's decision log
    assert out.writes[PART][pending_key(req.request_id)] is None
    assert w.held(req.request_id) is None
    assert (out.allowed, out.denied) == (1, 0)
    assert out.offsets == {(APPROVALS, PART): APPROVALS_BASE + 1}
    # The same signed token again (a replay of the record) finds nothing to lift.
    again = dataclasses.replace(good, offset=good.offset + 1)       # type: ignore[operator]
    out = w.run([again], at=T0 + 6)
    assert out.verdicts == []
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_UNMATCHED}:") and req.request_id in error


# ---------------------------------------------------------------------------- bad tokens


@pytest.mark.parametrize("forgery", ["unconfigured key", "unsigned", "tampered", "not a token"])
def test_a_token_not_signed_by_a_configured_approver_is_invalid(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]], humans: ApproverKeys,
        forgery: str) -> None:
    w = Worker(engine, humans)
    req = _read(3)
    pending = _hold(w, req)
    token = _token(pending, at=T0 + 1)
    alice = _signer(keys, "alice")
    if forgery == "unconfigured key":
        raw = w.approval(token, _signer(keys, "mallory"), at=T0 + 1)
    elif forgery == "unsigned":
        raw = w.approval(token, None, at=T0 + 1)
    elif forgery == "tampered":          # alice signed a token for other bytes
        signed = w.approval(_token(pending, at=T0 + 1, approver="bob"), alice, at=T0 + 1)
        raw = dataclasses.replace(signed, value=token.to_bytes())
    else:
        raw = w.approval(b'{"approve": "everything"}', alice, at=T0 + 1)
    out = w.run([raw], at=T0 + 1)
    assert out.verdicts == []
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_INVALID}:"), error
    if forgery == "unconfigured key":
        assert _signer(keys, "mallory").key_id in error
    assert w.held(req.request_id) is not None                # the hold stands
    # ... and the genuine approval still lifts it afterwards.
    out = w.run([w.approval(token, alice, at=T0 + 2)], at=T0 + 2)
    assert [v["decision"] for v in _verdicts(out)] == ["allow"]


def test_a_token_for_other_bytes_or_another_agent_is_a_mismatch(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]],
        humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    alice = _signer(keys, "alice")
    held, other = _hold(w, _read(4)), _hold(w, _read(5))
    assert held["action_digest"] != other["action_digest"]
    intruder = _other_agent_on(PART)          # same partition: the hold is found, not its agent
    tokens = [_token(held, at=T0 + 1, action_digest=other["action_digest"]),
              _token(held, at=T0 + 1, agent_id=intruder)]
    out = w.run([w.approval(t, alice, at=T0 + 1, agent=t.agent_id) for t in tokens],
                at=T0 + 1)
    assert out.verdicts == []
    errors = _errors(out)
    assert len(errors) == 2 and all(e.startswith(f"{rc.APPROVAL_MISMATCH}:") for e in errors)
    assert other["action_digest"] in errors[0] and intruder in errors[1]
    assert w.held(held["request_id"]) is not None and w.held(other["request_id"]) is not None


def test_a_token_expired_by_its_record_time_is_refused(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]],
        humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    alice = _signer(keys, "alice")
    pending = _hold(w, _read(6))
    token = _token(pending, at=T0, ttl=10.0)          # expires at T0 + 10
    # Its record time, not the worker's clock, decides: arriving exactly at expiry is late.
    out = w.run([w.approval(token, alice, at=T0 + 10)], at=T0 + 5)
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_EXPIRED}:") and out.verdicts == []
    assert w.held(pending["request_id"]) is not None
    # The same token recorded just before its expiry lifts (even if decided a little later).
    out = w.run([w.approval(token, alice, at=T0 + 9.5)], at=T0 + 11)
    assert _errors(out) == [] and [v["decision"] for v in _verdicts(out)] == ["allow"]


def test_a_role_the_hold_does_not_await_is_refused(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]]) -> None:
    two_roles = ApproverKeys.parse(f"human={keys['alice'][1]},finance={keys['fred'][1]}")
    assert two_roles.roles == ["finance", "human"]
    w = Worker(engine, two_roles)
    fred, alice = _signer(keys, "fred"), _signer(keys, "alice")
    pending = _hold(w, _read(7))
    out = w.run([w.approval(_token(pending, at=T0 + 1, role="finance", approver="fred"),
                            fred, at=T0 + 1)], at=T0 + 1)
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_WRONG_ROLE}:") and "human" in error
    # A finance key cannot sign for the human role either (keys are per role).
    out = w.run([w.approval(_token(pending, at=T0 + 1), fred, at=T0 + 1)], at=T0 + 1)
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_INVALID}:") and fred.key_id in error
    assert out.verdicts == [] and w.held(pending["request_id"]) is not None
    out = w.run([w.approval(_token(pending, at=T0 + 2), alice, at=T0 + 2)], at=T0 + 2)
    assert [v["decision"] for v in _verdicts(out)] == ["allow"]


def test_a_worker_without_approver_keys_lifts_nothing(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]]) -> None:
    w = Worker(engine, None)
    pending = _hold(w, _read(8))
    out = w.run([w.approval(_token(pending, at=T0 + 1), _signer(keys, "alice"), at=T0 + 1)],
                at=T0 + 1)
    [error] = _errors(out)
    assert error.startswith(f"{rc.APPROVAL_INVALID}:") and "no approver keys" in error
    assert out.verdicts == [] and w.held(pending["request_id"]) is not None


# ---------------------------------------------------------------------------- timing


def test_an_approval_right_after_its_action_in_the_same_batch_lifts_it(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]],
        humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    req = _read(9)
    action = w.action(req)
    token = Approval.mint(request_id=req.request_id, agent_id=AGENT,
                          action_digest=action_digest(action.value or b""), role="human",
                          approver="alice", ttl=60.0, now=T0)
    other = w.action(_read(10, t=T0 + 0.5))           # another action after the token
    out = w.run([action, w.approval(token, _signer(keys, "alice"), at=T0 + 0.2), other],
                at=T0 + 1)
    assert _errors(out) == []
    decided = [(v["request_id"], v["decision"]) for v in _verdicts(out)]
    assert decided == [(req.request_id, "pending"), (_read(10).request_id, "pending"),
                       (req.request_id, "allow")]
    assert out.writes[PART][pending_key(req.request_id)] is None    # never left held
    assert w.held(req.request_id) is None and w.held(_read(10).request_id) is not None
    # Every consumed topic partition moves on; the actions' own offsets stay the actions'.
    assert out.offsets == {(ACTIONS, PART): 2, (APPROVALS, PART): APPROVALS_BASE + 1}
    assert out.next_offsets == {PART: 2}
    mark = PartitionMark.from_bytes(w.store.get(PART, MARK_KEY) or b"")
    assert mark is not None and mark.next_offset == 2


def test_an_approval_after_the_requests_deadline_lifts_into_an_expired_deny(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]],
        humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    pending = _hold(w, _read(11, deadline=T0 + 2))
    token = _token(pending, at=T0 + 1)                 # issued in time, valid for 300 s...
    out = w.run([w.approval(token, _signer(keys, "alice"), at=T0 + 5)], at=T0 + 5)
    assert _errors(out) == []
    [final] = _verdicts(out)                           # ...but recorded after the deadline
    assert final["decision"] == "deny" and _codes(final)[0] == rc.EXPIRED, final
    assert (out.allowed, out.denied) == (0, 1)
    assert w.held(pending["request_id"]) is None       # decided: the hold is gone


def test_sweep_forgets_holds_whose_deadline_passed_in_event_time(
        engine: PolicyEngine, keys: dict[str, tuple[Signer, Path]],
        humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    short = _hold(w, _read(12, deadline=T0 + 30))
    endless = _hold(w, _read(13, deadline=None))       # no deadline: HOLD_MAX after it
    short_key, endless_key = (pending_key(v["request_id"]) for v in (short, endless))
    assert w.runner.sweep(PART) == {}
    # The partition's event time (its mark) moves only with its actions.
    later = ActionRequest.create(agent_id=AGENT, action="customers.read",
                                 resource={"type": "Customer", "id": "cus-1"},
                                 occurred_at=T0 + 31)
    w.run([w.action(later)], at=T0 + 31)
    assert w.runner.sweep(PART) == {short_key: None}   # not the agent, not the other hold
    w.runner.apply({PART: w.runner.sweep(PART)})
    assert w.held(short["request_id"]) is None and w.held(endless["request_id"]) is not None
    out = w.run([w.approval(_token(short, at=T0 + 32), _signer(keys, "alice"), at=T0 + 32)],
                at=T0 + 32)
    assert [e.split(":")[0] for e in _errors(out)] == [rc.APPROVAL_UNMATCHED]
    much_later = dataclasses.replace(later, request_id="00000000-0000-4000-8000-000000000099",
                                     occurred_at=T0 + HOLD_MAX + 1)
    w.run([w.action(much_later)], at=T0 + HOLD_MAX + 1)
    assert w.runner.sweep(PART) == {endless_key: None}


# ---------------------------------------------------------------------------- self-approval


def test_an_agent_claiming_approvals_in_its_own_context_is_still_held(
        engine: PolicyEngine, humans: ApproverKeys) -> None:
    w = Worker(engine, humans)
    out = w.run([w.action(_read(14, approvals=["human"]))], at=T0)
    [verdict] = _verdicts(out)
    assert verdict["decision"] == "pending" and verdict["awaiting"] == "human"
    assert out.allowed == 0


def test_an_agent_writing_the_verified_approval_key_itself_is_refused_malformed(
        engine: PolicyEngine, humans: ApproverKeys) -> None:
    claim = {"role": "human", "approver": "data-bot-1"}
    with pytest.raises(ValidationError, match="context.approval"):
        _read(15, approval=claim)                       # the SDK refuses to build it
    obj = _read(15).to_obj()
    obj["context"] = {"approval": claim}                # a runtime sends it anyway
    w = Worker(engine, humans)
    out = w.run([w.action(orjson.dumps(obj))], at=T0)
    [verdict] = _verdicts(out)
    assert verdict["decision"] == "deny" and _codes(verdict) == [rc.MALFORMED]
    assert "context.approval" in verdict["reasons"][0]["message"]
    assert out.allowed == 0 and len(out.deadletters) == 1
    assert w.held(obj["request_id"]) is None            # nothing held, nothing to approve
