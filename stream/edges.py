"""The edges of the decision core: raw records in, signed verdict bytes and dead letters out.

`decode` turns one consumed record into an `Action` for the core or a
`Rejected` (malformed, too large, keyed by someone else); `seal` turns a core
`Decision` into the wire verdict and `sign_verdicts` signs a batch of them
(one signature, a Merkle proof each); `dead_letter` keeps every record the
core could not decide, bounded in size so that producing it can never fail on
the broker's message limit (an oversized action must not stop the gate).
Nothing here raises for any input bytes.

Routing contract: an action read from Kafka must carry its agent's id as the
record key and sit on that agent's partition (``murmur2(agent_id)``), because
the key is what routes it and per-agent state lives with the partition.  A
record without a key (or with an empty one) is refused ``MALFORMED`` ("record
key must be the agent_id"), even when it happens to land on the right
partition: clients in other languages that forget the key are spread over
partitions by their default partitioner, so such an agent would be decided
sometimes and refused at other times; one clear deny every time is the fail
closed answer.  The deny still reaches the agent (its id is read from the
value).  Records that do not come from Kafka (history files, ``offset`` None)
carry no routing and are exempt.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from holdgate import reasons as rc
from holdgate.errors import ValidationError
from holdgate.events import (MAX_RECORD_BYTES, Reason, action_digest, decode_request_obj,
                             verdict_obj)
from holdgate.fastinit import fast_init
from holdgate.routing import partition_for
from holdgate.keys import Signer
from holdgate.signing import sign_batch
from holdgate.stream.core import Action, Decision, Snapshot

__all__ = ["RawRecord", "Outgoing", "Rejected", "decode", "rejected_decision", "seal",
           "sign_verdicts", "dead_letter", "recover_identity", "DEADLETTER_INLINE_MAX",
           "DEADLETTER_HEAD"]

#: Record values up to this size are kept whole (base64) in their dead letter.
DEADLETTER_INLINE_MAX = 64 * 1024
#: Larger ones keep their size, SHA-256 and this many leading bytes.
DEADLETTER_HEAD = 2048
_MESSAGE_MAX = 1024
_REQUEST_ID_RE = re.compile(rb'"request_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')
_AGENT_ID_RE = re.compile(rb'"agent_id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._:@/-]{0,127})"')
_AGENT_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")


@fast_init
@dataclass(frozen=True, slots=True)
class RawRecord:
    """One action record exactly as it was read, from a topic or a history file."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int | None = None        # None: not read from Kafka
    topic: str = ""
    timestamp: float | None = None   # broker append time (LogAppendTime), seconds
    decided_at: float | None = None  # replay: when the recorded verdict was decided
    headers: tuple[tuple[str, bytes], ...] = ()     # approvals: their signature


@fast_init
@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce: a verdict goes to the partition where its agent listens."""

    partition: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the core cannot decide, and who (if anyone) is waiting for an answer."""

    raw: RawRecord
    code: str
    error: str
    identity: tuple[str, str] | None    # (request_id, agent_id)
    event_time: float


def decode(raw: RawRecord, *, max_bytes: int = MAX_RECORD_BYTES, now: float = 0.0,
           partitions: int | None = None) -> Action | Rejected:
    """Validate one record; `now` is the event time used when the record carries none.

    With `partitions`, a Kafka record must sit on its agent's partition: an agent
    spread over partitions would split its counters across workers and slip under
    every rate limit.
    """
    value = raw.value
    fallback_time = raw.timestamp if raw.timestamp is not None else now
    if value is None:
        return _reject(raw, rc.MALFORMED, "empty record (tombstone) on the actions topic",
                       fallback_time)
    if len(value) > max_bytes:
        return _reject(raw, rc.TOO_LARGE, f"record is {len(value)} bytes, the limit is "
                       f"{max_bytes} (HOLDGATE_MAX_ACTION_BYTES)", fallback_time)
    try:
        request, published = decode_request_obj(value, max_bytes)
    except ValidationError as exc:
        return _reject(raw, rc.MALFORMED, str(exc), fallback_time)
    except Exception as exc:  # noqa: BLE001 - no input may crash the loop
        return _reject(raw, rc.MALFORMED, f"undecodable: {type(exc).__name__}", fallback_time)
    if not raw.key and raw.offset is not None:
        # The key routes the record; see the module docstring.
        return _reject(raw, rc.MALFORMED, "record key must be the agent_id "
                       f"({request.agent_id!r}); the record has none", fallback_time)
    if raw.key is not None and raw.key != request.agent_id.encode():
        # Keyed by someone else: its partition (and so its state) would be wrong.
        return _reject(raw, rc.MALFORMED, f"record key {raw.key[:64]!r} differs from agent_id",
                       fallback_time)
    if partitions and raw.offset is not None:
        expected = partition_for(request.agent_id, partitions)
        if raw.partition != expected:
            return _reject(raw, rc.MALFORMED, f"agent {request.agent_id!r} must be published "
                           f"to partition {expected} (murmur2 of agent_id), not {raw.partition}",
                           fallback_time)
    event_time = raw.timestamp if raw.timestamp is not None else request.occurred_at
    return Action(request=request, digest=action_digest(value), partition=raw.partition,
                  offset=raw.offset, event_time=event_time, published=published,
                  decided_at=raw.decided_at)


def _reject(raw: RawRecord, code: str, error: str, event_time: float) -> Rejected:
    return Rejected(raw=raw, code=code, error=error[:_MESSAGE_MAX],
                    identity=recover_identity(raw.value, raw.key), event_time=event_time)


def recover_identity(value: bytes | None, key: bytes | None) -> tuple[str, str] | None:
    """Best effort (request_id, agent_id) from a record that failed validation.

    Enough to send the waiting agent a deny instead of leaving it to time out;
    never enough to decide anything else.  Works on bytes that are not valid
    JSON or UTF-8 too (a lone surrogate, a truncated tail): valid JSON grammar
    that orjson refuses (a lone ``\ud800`` escape) is read by :mod:`json`,
    which keeps such a string, so the top-level fields are found wherever
    they are and however they are escaped; bytes that are not JSON at all
    fall back to a pattern search.
    """
    if not value:
        return None
    request_id = agent_id = None
    obj = _lenient_json(value)
    parsed = isinstance(obj, dict)
    if parsed:
        # Top-level fields only: a `request_id` nested in the context (written before the
        # real one by a runtime that sorts keys) must not draw the deny.
        rid, aid = obj.get("request_id"), obj.get("agent_id")
        request_id = rid if isinstance(rid, str) and 0 < len(rid) <= 64 \
            and _is_text(rid) else None
        agent_id = aid if isinstance(aid, str) and _AGENT_OK.fullmatch(aid) else None
    else:
        found = _REQUEST_ID_RE.search(value[:DEADLETTER_INLINE_MAX])
        request_id = found.group(1).decode() if found else None
    if agent_id is None and key:
        try:
            text = key.decode("utf-8")
            agent_id = text if _AGENT_OK.fullmatch(text) else None
        except UnicodeDecodeError:
            agent_id = None
    if agent_id is None and not parsed:
        found = _AGENT_ID_RE.search(value[:DEADLETTER_INLINE_MAX])
        agent_id = found.group(1).decode() if found else None
    if request_id is None or agent_id is None:
        return None
    return request_id, agent_id


def _is_text(text: str) -> bool:
    """Whether `text` is Unicode a verdict can carry (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lenient_json(value: bytes) -> Any:
    """The record parsed by orjson, else by :mod:`json` (lone surrogates, NaN), else None."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    if len(value) > DEADLETTER_INLINE_MAX:
        return None
    try:
        return json.loads(value.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return None


def rejected_decision(rejected: Rejected, snapshot: Snapshot) -> Decision | None:
    """The deny a waiting agent gets for a record that could not be decided."""
    if rejected.identity is None:
        return None
    request_id, agent_id = rejected.identity
    raw = rejected.raw
    partition = partition_for(agent_id, snapshot.partitions) if snapshot.partitions \
        else raw.partition
    return Decision(request_id=request_id, agent_id=agent_id, decision="deny",
                    reasons=(Reason(rejected.code, rejected.error),), signals={},
                    policy_version=snapshot.policy_version,
                    model_version=snapshot.model_version, partition=partition,
                    offset=raw.offset, event_time=rejected.event_time,
                    digest=action_digest(raw.value or b""), request=None)


def seal(decision: Decision, *, decided_at: float, ttl: float,
         seq: int | None = None) -> Outgoing:
    """The wire verdict for a decision, not yet signed (`sign_verdicts` signs a batch).

    An allow stays actionable for `ttl` seconds.  Left unsigned (replay,
    bench), no reader will act on it as an allow.
    """
    obj = verdict_obj(
        request_id=decision.request_id, agent_id=decision.agent_id,
        decision=decision.decision, reasons=decision.reasons,
        policy_version=decision.policy_version, model_version=decision.model_version,
        signals=dict(decision.signals), action_digest=decision.digest, decided_at=decided_at,
        expires_at=decided_at + ttl if decision.allowed else decided_at,
        request=decision.request, seq=seq, awaiting=decision.awaiting,
        shadow=dict(decision.shadow) if decision.shadow is not None else None)
    return Outgoing(decision.partition, decision.agent_id.encode(), orjson.dumps(obj))


def sign_verdicts(signer: Signer, verdicts: list[Outgoing]) -> list[Outgoing]:
    """The batch's verdicts with signature headers: one Ed25519 signature for all of them.

    Each verdict is signed over its exact bytes through the batch's Merkle
    tree (`holdgate.signing.sign_batch`), so each still verifies alone.
    """
    signed = sign_batch(signer, [v.value for v in verdicts])
    return [Outgoing(v.partition, v.key, v.value, v.headers + h)
            for v, h in zip(verdicts, signed, strict=True)]


def dead_letter(raw: RawRecord, error: str, *, worker: str, received_at: float) -> bytes:
    """Everything needed to find, understand and re-drive a bad record, bounded in size.

    Values up to `DEADLETTER_INLINE_MAX` bytes are kept whole; larger ones keep
    their size, SHA-256 and first `DEADLETTER_HEAD` bytes (the record itself
    stays on the actions topic at the partition and offset named here).
    """
    value = raw.value or b""
    letter: dict[str, Any] = {
        "error": error[:_MESSAGE_MAX], "topic": raw.topic, "partition": raw.partition,
        "offset": raw.offset, "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
        "key_b64": base64.b64encode(raw.key[:1024]).decode() if raw.key is not None else None,
        "received_at": received_at, "worker": worker,
    }
    if len(value) <= DEADLETTER_INLINE_MAX:
        letter["value_b64"] = base64.b64encode(value).decode()
    else:
        letter["head_b64"] = base64.b64encode(value[:DEADLETTER_HEAD]).decode()
        letter["truncated"] = True
    return orjson.dumps(letter)
