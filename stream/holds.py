"""Held actions: a pending decision waits, in state, for a verified approval.

When a policy holds an action for approval (`PolicyDecision.awaiting`), the
runner keeps what it needs to decide it again beside the agent's state, under
``~pending/<request_id>`` on the action's partition, in the same transaction as
the pending verdict: the action bytes, where and when it was recorded, and the
signals it was held with (it was counted then; a second decision must not
count it again).  An approval record (``holdgate.approvals``, on the agent's
partition) is checked here: signed by a key of the role it claims, for this
exact action (digest), of a role the hold awaits, unexpired at its own event
time.  A valid one lifts the hold once: the action is decided again through
the core with ``context.approval`` and the entry is deleted, so a replayed
token finds nothing.  Anything else is dead-lettered with its reason, and the
pending verdict (a deny to every reader) stands.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from holdgate import reasons as rc
from holdgate.approvals import ApproverKeys
from holdgate.routing import partition_for
from holdgate.stream import core
from holdgate.stream.core import Action, Decision, Snapshot
from holdgate.stream.edges import RawRecord, decode

__all__ = ["PENDING_PREFIX", "HOLD_MAX", "pending_key", "pending_entry", "Lifted", "lift"]

PENDING_PREFIX = "~pending/"
#: A hold without a deadline is forgotten after this long (event time): nobody waits longer.
HOLD_MAX = 3600.0


def pending_key(request_id: str) -> str:
    return PENDING_PREFIX + request_id


def pending_entry(decision: Decision, raw: RawRecord) -> bytes:
    return orjson.dumps({
        "action_b64": base64.b64encode(raw.value or b"").decode(),
        "partition": raw.partition, "offset": raw.offset, "timestamp": raw.timestamp,
        "signals": dict(decision.signals), "awaiting": decision.awaiting,
        "agent_id": decision.agent_id, "digest": decision.digest, "deadline": decision.deadline,
    })


@dataclass(frozen=True, slots=True)
class Lifted:
    """What an approval record did: a final decision, or why it was refused."""

    decision: Decision | None = None
    refused: str | None = None          # dead-letter reason
    partition: int | None = None
    delete: str | None = None           # pending key to delete
    update: tuple[str, bytes] | None = None  # pending entry to rewrite (roles so far)


def lift(snapshot: Snapshot, approvers: ApproverKeys | None, raw: RawRecord,
         find: Callable[[int, str], bytes | None], decided_at: float,
         max_bytes: int) -> Lifted:
    """Check an approval record and, when it is good, decide its held action again."""
    if approvers is None:
        return Lifted(refused=f"{rc.APPROVAL_INVALID}: this worker has no approver keys "
                              "(HOLDGATE_APPROVER_KEYS)")
    token, problem = approvers.verify(raw.value, raw.headers)
    if token is None:
        return Lifted(refused=f"{rc.APPROVAL_INVALID}: {problem}")
    partition = partition_for(token.agent_id, snapshot.partitions) if snapshot.partitions \
        else raw.partition                 # as the runner placed the hold (edges)
    key = pending_key(token.request_id)
    blob = find(partition, key)
    if blob is None:
        return Lifted(refused=f"{rc.APPROVAL_UNMATCHED}: no action {token.request_id} is held "
                              "(decided already, approved already, or never held)")
    entry: Any = orjson.loads(blob)
    if token.agent_id != entry["agent_id"] or token.action_digest != entry["digest"]:
        return Lifted(refused=f"{rc.APPROVAL_MISMATCH}: the token approves "
                              f"{token.action_digest} "
                              f"of {token.agent_id}, the held action is {entry['digest']} "
                              f"of {entry['agent_id']}")
    awaiting = set((entry.get("awaiting") or "").split(","))
    if token.role not in awaiting:
        return Lifted(refused=f"{rc.APPROVAL_WRONG_ROLE}: a {token.role} approval; the hold "
                              "awaits "
                              f"{', '.join(sorted(awaiting))}")
    at = raw.timestamp if raw.timestamp is not None else decided_at
    if not token.expires_at > at:
        return Lifted(refused=f"{rc.APPROVAL_EXPIRED}: expired at {token.expires_at:.3f}, "
                              f"arrived at {at:.3f}")
    original = RawRecord(key=token.agent_id.encode(),
                         value=base64.b64decode(entry["action_b64"]),
                         partition=entry["partition"], offset=entry["offset"],
                         timestamp=entry["timestamp"])
    action = decode(original, max_bytes=max_bytes, now=decided_at)
    if not isinstance(action, Action):                  # it decoded when it was held
        return Lifted(refused=f"{rc.APPROVAL_UNMATCHED}: the held action no longer decodes: "
                              f"{action.error}")
    earlier = [str(r) for r in entry.get("roles") or ()]
    decision = core.redecide(snapshot, action, entry["signals"], token.context(earlier),
                             decided_at, at)
    if decision.decision == "pending":      # another role still awaited: remember this one
        kept = orjson.dumps({**entry, "roles": sorted({*earlier, token.role})})
        return Lifted(decision=decision, partition=partition, update=(key, kept))
    return Lifted(decision=decision, partition=partition, delete=key)
