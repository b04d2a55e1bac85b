"""Approval tokens: a human (or system) approves one exact action, signed, for a while.

"Needs approval" used to mean "deny, and the agent may say it was approved":
an agent that wrote ``approvals: ["human"]`` into its own context read
restricted data.  Now an approval is a token signed by an approver key of a
role (keys configured per role on the workers), bound to the action's digest
(the exact bytes the runtime published) and to an expiry.  The worker
verifies it and gives policies only the verified fact, ``context.approval =
{"role", "approver"}``; nothing an agent sends can produce it.

A token travels on the ``holdgate.approvals`` topic, keyed by agent and on the
agent's partition (so the worker holding the pending action sees it), with its
signature in the record headers like every signed record.  It is used once:
the pending action it lifts is decided again and forgotten.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson

from holdgate.errors import ConfigError, ValidationError
from holdgate.keys import TrustStore
from holdgate.signing import Headers, read_signature, verify_record

__all__ = ["APPROVAL_SCHEMA", "Approval", "ApproverKeys"]

APPROVAL_SCHEMA = "holdgate.approval/1"


@dataclass(frozen=True, slots=True)
class Approval:
    request_id: str
    agent_id: str
    action_digest: str
    role: str
    approver: str
    issued_at: float
    expires_at: float

    def to_bytes(self) -> bytes:
        return orjson.dumps({"schema": APPROVAL_SCHEMA, "request_id": self.request_id,
                             "agent_id": self.agent_id, "action_digest": self.action_digest,
                             "role": self.role, "approver": self.approver,
                             "issued_at": self.issued_at, "expires_at": self.expires_at})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Approval:
        try:
            obj: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("$", f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("schema") != APPROVAL_SCHEMA:
            raise ValidationError("schema", f"must be {APPROVAL_SCHEMA!r}")
        try:
            token = cls(**{k: obj[k] for k in ("request_id", "agent_id", "action_digest",
                                               "role", "approver", "issued_at",
                                               "expires_at")})
        except KeyError as exc:
            raise ValidationError(str(exc.args[0]), "is required") from None
        for name in ("request_id", "agent_id", "action_digest", "role", "approver"):
            if not isinstance(getattr(token, name), str) or not getattr(token, name):
                raise ValidationError(name, "must be a non-empty string")
        for name in ("issued_at", "expires_at"):
            value = getattr(token, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValidationError(name, "must be seconds since the epoch")
        return token

    @classmethod
    def mint(cls, *, request_id: str, agent_id: str, action_digest: str, role: str,
             approver: str, ttl: float, now: float | None = None) -> Approval:
        at = time.time() if now is None else now
        return cls(request_id, agent_id, action_digest, role, approver, at, at + ttl)

    def context(self, earlier: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """What policies see (``context.approval``): the verified role, who approved, and
        every role that approved the same held action so far (``roles``, for actions that
        need two approvals: ``context.approval.roles.contains("finance")``)."""
        return {"role": self.role, "approver": self.approver,
                "roles": sorted({*earlier, self.role})}


class ApproverKeys:
    """Which public keys may approve for which role (``human=a.pub;b.pub,system=ci.pub``)."""

    def __init__(self, roles: Mapping[str, TrustStore]) -> None:
        self._roles = dict(roles)

    @classmethod
    def parse(cls, spec: str) -> ApproverKeys:
        roles: dict[str, TrustStore] = {}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            role, sep, paths = part.partition("=")
            if not sep or not role.strip() or not paths.strip():
                raise ConfigError(f"approver keys {part!r}: use role=path[;path...], e.g. "
                                  "human=/keys/alice.pub;/keys/bob.pub")
            roles[role.strip()] = TrustStore.from_paths(
                p.strip() for p in paths.split(";") if p.strip())
        return cls(roles)

    @property
    def roles(self) -> list[str]:
        return sorted(self._roles)

    def verify(self, value: bytes | None, headers: Headers | Iterable[Any] | None
               ) -> tuple[Approval | None, str | None]:
        """(token, None) when signed by a key of the token's own role, else (None, why)."""
        if value is None:
            return None, "empty approval record"
        try:
            token = Approval.from_bytes(value)
        except ValidationError as exc:
            return None, f"not an approval token: {exc}"
        trust = self._roles.get(token.role)
        if trust is None:
            return None, f"no approver keys are configured for role {token.role!r}"
        problem = verify_record(trust, value, headers)
        if problem is not None:
            kid = read_signature(headers)[0]
            return None, f"approval for role {token.role!r} {problem}" + \
                (f" (key {kid} is not a {token.role} approver)" if kid and
                 "unknown key" in problem else "")
        return token, None
