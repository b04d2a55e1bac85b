"""Wire types: what agent runtimes publish and what executors receive.

Frozen dataclasses with a `schema_version`, encoded with orjson.  Validation is
strict and every error names its field, because the producer is often a runtime
in another language whose author only sees the dead-letter record.  JSON Schema
twins of these types live in `holdgate/schemas/` (checked against this module by
the tests) so non-Python runtimes can validate before publishing.

The record must be strict JSON (`holdgate.wire_json`: UTF-8 without lone
surrogates, no NaN, no duplicate keys at any depth), and values in `context`
and resource attributes must be ones Cedar can hold (`holdgate.cedar_values`):
strings, booleans, 64-bit integers (Long), numbers with a fraction or exponent
(decimal, 4 fractional digits), lists and records; null means "absent".

`action` is the name of a Cedar action of the policy schema, verbatim:
`payments.refund` is `Action::"payments.refund"`, and an MCP tool name such as
`send_email` (letters, digits, `_`, `-`, dot-separated segments, at most 128
characters) is `Action::"send_email"`.  Which groups it belongs to
(`Action::"irreversible"`, ...) is the schema's `action ... in [...]`
declaration, never the name.  A name the schema does not declare as an action
(or declares only as a group) is denied `NO_PERMIT` by the policy engine.

The action digest is SHA-256 over the record value *exactly as published*
(see `action_digest`): no re-serialisation, so a runtime or an executor in any
language reproduces it from the bytes it sent or received, with nothing to
canonicalise.
"""
from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import orjson

from holdgate import wire_json
from holdgate.cedar_values import Reread, cedar_record
from holdgate.errors import ValidationError
from holdgate.fastinit import fast_init

__all__ = [
    "SCHEMA_VERSION", "MAX_RECORD_BYTES", "Resource", "ActionRequest", "Reason",
    "Verdict", "Decision", "Decided", "decode_request", "encode", "decode_verdict",
    "action_digest", "new_request_id", "decode_request_obj", "verdict_obj",
]

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
Decision = Literal["allow", "deny", "pending"]

# The same patterns as the JSON Schema's, matched whole (`fullmatch`: a pattern's `$`
# would also accept a trailing newline).
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                      r"[0-9a-fA-F]{12}")
_AGENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
#: Dotted names (`payments.refund`) and MCP / function-calling tool names (`send_email`,
#: `get-weather`, `mcp__github__create_issue`): Cedar action ids, verbatim.
_ACTION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_ACTION_MAX = 128
_TYPE_RE = re.compile(r"[A-Z][A-Za-z0-9_]{0,63}")
_ID_MAX = 256
#: Context keys only the worker writes: an agent claiming them is refused.
_RESERVED_CONTEXT = ("signals", "approval", "resource_trusted")
_RESERVED_SET = frozenset(_RESERVED_CONTEXT)
_REQUEST_FIELDS = frozenset({"schema_version", "request_id", "agent_id", "action", "resource",
                             "context", "occurred_at", "deadline"})
_RESOURCE_FIELDS = frozenset({"type", "id", "attributes"})


def _fail(path: str, message: str) -> ValidationError:
    return ValidationError(path, message)


def _require_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    if key not in obj:
        raise _fail(path, "is required")
    value = obj[key]
    if not isinstance(value, str):
        raise _fail(path, "is required (null given)" if value is None
                    else f"must be a string, got {type(value).__name__}")
    return value


def _require_time(obj: Mapping[str, Any], key: str, path: str) -> float:
    if key not in obj:
        raise _fail(path, "is required")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, "must be a number of seconds since the Unix epoch")
    if not 0 < value < 1e11:
        raise _fail(path, "is not a plausible Unix time in seconds (milliseconds sent?)")
    return float(value)


@fast_init
@dataclass(frozen=True, slots=True)
class Resource:
    """The typed thing an action touches; `type` must be an entity type of the policy schema."""

    type: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_obj(cls, obj: Any, path: str = "resource", *, wire: bool = False) -> Resource:
        """Validate; ``wire``: ``obj`` came from orjson (see `ActionRequest.from_obj`)."""
        if not isinstance(obj, dict):
            raise _fail(path, "must be an object with type and id")
        if not _RESOURCE_FIELDS.issuperset(obj):
            raise _fail(f"{path}.{sorted(set(obj) - _RESOURCE_FIELDS)[0]}", "unknown field")
        rtype = _require_str(obj, "type", f"{path}.type")
        if not _TYPE_RE.fullmatch(rtype):
            raise _fail(f"{path}.type", "must be a CamelCase entity type such as 'Invoice'")
        rid = _require_str(obj, "id", f"{path}.id")
        if not rid or len(rid) > _ID_MAX:
            raise _fail(f"{path}.id", f"must be 1..{_ID_MAX} characters")
        attrs = obj.get("attributes")
        if attrs is None:       # absent or null
            attrs = {}
        elif not isinstance(attrs, dict):
            raise _fail(f"{path}.attributes", "must be an object")
        attrs = cedar_record(attrs, f"{path}.attributes", wire=wire)
        return cls(type=rtype, id=rid, attributes=attrs)

    def to_obj(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "attributes": self.attributes}


@fast_init
@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One intended action, published by the runtime *before* it executes."""

    request_id: str
    agent_id: str
    action: str
    resource: Resource
    context: dict[str, Any]
    occurred_at: float
    #: When the runtime stops waiting (its check timeout), seconds since the epoch.
    #: The worker denies an action decided after it (EXPIRED): a check the runtime
    #: gave up on can never turn into an allow later.
    deadline: float | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def create(cls, *, agent_id: str, action: str, resource: Resource | Mapping[str, Any],
               context: Mapping[str, Any] | None = None, occurred_at: float | None = None,
               request_id: str | None = None, deadline: float | None = None) -> ActionRequest:
        """Build and validate a request the way the SDK does (fresh id, wall-clock time)."""
        res = resource.to_obj() if isinstance(resource, Resource) else dict(resource)
        obj: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "request_id": request_id or new_request_id(),
            "agent_id": agent_id, "action": action, "resource": res,
            "context": dict(context or {}),
            "occurred_at": time.time() if occurred_at is None else occurred_at,
        }
        if deadline is not None:
            obj["deadline"] = deadline
        return cls.from_obj(obj)

    @classmethod
    def from_obj(cls, obj: Any, *, wire: bool = False) -> ActionRequest:
        """Validate a parsed request; the request holds the decoded view (nulls dropped).

        ``wire``: ``obj`` was parsed by orjson, whose floats beyond the decimal range may
        be rounded integer literals: `cedar_values.Reread` asks for an exact re-read.
        """
        if not isinstance(obj, dict):
            raise _fail("$", "must be a JSON object")
        if not _REQUEST_FIELDS.issuperset(obj):
            raise _fail(sorted(set(obj) - _REQUEST_FIELDS)[0], "unknown field")
        version = obj.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise _fail("schema_version", f"must be {SCHEMA_VERSION}, got {version!r}")
        request_id = _require_str(obj, "request_id", "request_id")
        if not _UUID_RE.fullmatch(request_id):
            raise _fail("request_id", "must be a UUID")
        agent_id = _require_str(obj, "agent_id", "agent_id")
        if not _AGENT_RE.fullmatch(agent_id):
            raise _fail("agent_id", "must be 1..128 of [A-Za-z0-9._:@/-], starting alphanumeric")
        action = _require_str(obj, "action", "action")
        if len(action) > _ACTION_MAX or not _ACTION_RE.fullmatch(action):
            raise _fail("action", f"must be a Cedar action name of at most {_ACTION_MAX} "
                                  "characters: letters, digits, '_' and '-' in dot-separated "
                                  "segments, such as 'payments.refund' or 'send_email'")
        resource = Resource.from_obj(obj.get("resource"), "resource", wire=wire)
        context = obj.get("context")
        if context is None:     # absent or null
            context = {}
        elif not isinstance(context, dict):
            raise _fail("context", "must be a JSON object")
        if context and not _RESERVED_SET.isdisjoint(context):
            reserved = next(k for k in _RESERVED_CONTEXT if k in context)
            raise _fail(f"context.{reserved}", "is reserved: holdgate sets it itself "
                                               "(signals, verified approvals, trust)")
        context = cedar_record(context, "context", wire=wire)
        occurred_at = _require_time(obj, "occurred_at", "occurred_at")
        deadline = None
        if obj.get("deadline") is not None:
            deadline = _require_time(obj, "deadline", "deadline")
            if deadline < occurred_at:
                raise _fail("deadline", "is before occurred_at")
        return cls(request_id=request_id, agent_id=agent_id, action=action, resource=resource,
                   context=context, occurred_at=occurred_at, deadline=deadline)

    def to_obj(self) -> dict[str, Any]:
        obj = {
            "schema_version": self.schema_version, "request_id": self.request_id,
            "agent_id": self.agent_id, "action": self.action, "resource": self.resource.to_obj(),
            "context": self.context, "occurred_at": self.occurred_at,
        }
        if self.deadline is not None:
            obj["deadline"] = self.deadline
        return obj

    @property
    def digest(self) -> str:
        """Digest of this request as the SDK publishes it (`encode`)."""
        return action_digest(encode(self))


class Decided:
    """`allowed` and `codes` for anything that carries a decision and its reasons."""

    __slots__ = ()
    decision: Decision
    reasons: tuple[Reason, ...]

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why: a machine code, the policy (if any) that determined it, and prose for humans."""

    code: str
    message: str = ""
    policy_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict(Decided):
    """The decision record: enough to reconstruct, audit and verify one decision."""

    request_id: str
    agent_id: str
    decision: Decision
    reasons: tuple[Reason, ...]
    policy_version: str
    action_digest: str
    decided_at: float
    expires_at: float
    model_version: str | None = None
    signals: dict[str, int] = field(default_factory=dict)
    request: dict[str, Any] | None = None
    #: Per partition, the verdict's place in the decision log (audit gap detection).
    seq: int | None = None
    #: A pending verdict (not final; read as a deny) names the approver role that can lift it.
    awaiting: str | None = None
    #: What a shadow candidate (policy and/or model) decided for the same action, for the
    #: record only (never enforced): decision, reasons, its versions, the signals it read
    #: differently.  Absent when no shadow runs (`holdgate shadow report` reads it).
    shadow: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    #: Not on the wire: the key whose signature the reader verified (record headers).
    key_id: str | None = field(default=None, compare=False)

    def to_obj(self) -> dict[str, Any]:
        return verdict_obj(
            request_id=self.request_id, agent_id=self.agent_id, decision=self.decision,
            reasons=self.reasons, policy_version=self.policy_version,
            model_version=self.model_version, signals=self.signals,
            action_digest=self.action_digest, decided_at=self.decided_at,
            expires_at=self.expires_at, request=self.request, seq=self.seq,
            awaiting=self.awaiting, shadow=self.shadow, schema_version=self.schema_version)

    @classmethod
    def from_obj(cls, obj: Any) -> Verdict:
        if not isinstance(obj, dict):
            raise _fail("$", "must be a JSON object")
        try:
            reasons = tuple(Reason(**r) for r in obj.get("reasons", ()))
            fields = {k: v for k, v in obj.items() if k not in ("reasons", "key_id")}
            verdict = cls(reasons=reasons, **fields)
        except TypeError as exc:
            raise _fail("$", f"not a verdict: {exc}") from None
        if verdict.decision not in ("allow", "deny", "pending"):
            raise _fail("decision", "must be 'allow', 'deny' or 'pending'")
        if verdict.decision != "allow" and not verdict.reasons:
            raise _fail("reasons", "a deny must carry at least one reason")
        return verdict


def encode(record: ActionRequest | Verdict) -> bytes:
    return orjson.dumps(record.to_obj())


def verdict_obj(*, request_id: str, agent_id: str, decision: str,
                reasons: Sequence[Reason], policy_version: str, model_version: str | None,
                signals: Mapping[str, int], action_digest: str, decided_at: float,
                expires_at: float, request: Any, seq: int | None = None,
                awaiting: str | None = None, shadow: Mapping[str, Any] | None = None,
                schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """A verdict's wire object, in its field order: `Verdict.to_obj`, and the worker's seal.

    Built by hand: dataclasses.asdict deep-copies the request, and the worker
    seals without building a `Verdict` at all (a frozen dataclass costs ~3 µs
    an action; see bench/decide.py).
    """
    obj = {
        "schema_version": schema_version, "request_id": request_id,
        "agent_id": agent_id, "decision": decision,
        "reasons": [{"code": r.code, "message": r.message, "policy_id": r.policy_id}
                    for r in reasons],
        "policy_version": policy_version, "model_version": model_version,
        "signals": signals, "action_digest": action_digest,
        "decided_at": decided_at, "expires_at": expires_at,
        "request": request,
    }
    if seq is not None:
        obj["seq"] = seq
    if awaiting is not None:
        obj["awaiting"] = awaiting
    if shadow is not None:
        obj["shadow"] = shadow
    return obj


def decode_request_obj(raw: bytes, max_bytes: int = MAX_RECORD_BYTES) -> tuple[ActionRequest, Any]:
    """Bytes off the wire to (validated request, the parsed JSON object as published).

    The published object keeps what the agent sent (nulls, floats); the request is
    the decoded view.  Neither changes the bytes the action digest is taken over.
    """
    if len(raw) > max_bytes:
        raise _fail("$", f"record is {len(raw)} bytes, limit {max_bytes}")
    obj = wire_json.loads(raw)
    try:
        request = ActionRequest.from_obj(obj, wire=True)
    except Reread:          # a number beyond the decimal range: read integer literals exactly
        obj = wire_json.loads_exact(raw)
        request = ActionRequest.from_obj(obj)
    wire_json.check_unique_keys(raw, obj)
    return request, obj


def decode_request(raw: bytes, max_bytes: int = MAX_RECORD_BYTES) -> ActionRequest:
    """Bytes off the wire to a validated request; raises ValidationError naming the field."""
    return decode_request_obj(raw, max_bytes)[0]


def decode_verdict(raw: bytes) -> Verdict:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail("$", f"not valid JSON: {exc}") from None
    return Verdict.from_obj(obj)


def action_digest(raw: bytes) -> str:
    """``"sha256:" + hex(SHA-256(record value bytes exactly as published))``.

    The executor's binding check: a verdict allows *these bytes*, not a
    re-serialisation of them that another language could format differently.
    """
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def new_request_id() -> str:
    return str(uuid.uuid4())
