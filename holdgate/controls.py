"""Operator controls: revoke an agent, suspend actions, agents or roles, and undo it.

The kill switch an operator reaches for when an agent misbehaves: no policy
edit, no deploy, one command.  A control is a small JSON record on the
compacted ``holdgate.control`` topic, keyed by what it targets (so compaction
keeps the latest word on each target), signed by an operator key like every
record that changes what a worker does: unsigned or badly signed records are
ignored and logged.  Undo is a newer record on the same key with
``active: false``.  Workers apply controls before any policy; an action they
stop is denied ``REVOKED`` or ``SUSPENDED``.

This module is the wire format and the matching; the worker reads the topic
(`holdgate.stream.control`), the CLI publishes (`holdgate revoke|suspend`).
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

import orjson

from holdgate import reasons as rc
from holdgate.errors import ValidationError
from holdgate.events import Reason

__all__ = ["Control", "Controls", "CONTROL_SCHEMA"]

CONTROL_SCHEMA = "holdgate.control/1"
Kind = Literal["revoke", "suspend"]


@dataclass(frozen=True, slots=True)
class Control:
    """One control: revoke an agent, or suspend by agent, role and/or action glob."""

    kind: Kind
    agent: str | None = None
    role: str | None = None
    action: str | None = None          # a glob: 'payments.*', 'emails.send'
    active: bool = True
    reason: str = ""
    by: str = ""
    at: float = 0.0

    @property
    def key(self) -> str:
        """Compaction key: one latest record per target."""
        return f"{self.kind}|agent={self.agent or '*'}|role={self.role or '*'}|" \
               f"action={self.action or '*'}"

    def matches(self, agent: str, role: str | None, action: str) -> bool:
        return ((self.agent is None or self.agent == agent)
                and (self.role is None or self.role == role)
                and (self.action is None or fnmatch.fnmatchcase(action, self.action)))

    def to_bytes(self) -> bytes:
        return orjson.dumps({"schema": CONTROL_SCHEMA, "kind": self.kind, "agent": self.agent,
                             "role": self.role, "action": self.action, "active": self.active,
                             "reason": self.reason, "by": self.by, "at": self.at or time.time()})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Control:
        try:
            obj: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("$", f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("schema") != CONTROL_SCHEMA:
            raise ValidationError("schema", f"must be {CONTROL_SCHEMA!r}")
        kind = obj.get("kind")
        if kind not in ("revoke", "suspend"):
            raise ValidationError("kind", "must be 'revoke' or 'suspend'")
        target = {k: obj.get(k) for k in ("agent", "role", "action")}
        if any(v is not None and not isinstance(v, str) for v in target.values()):
            raise ValidationError("$", "agent, role and action must be strings or null")
        if kind == "revoke" and not target["agent"]:
            raise ValidationError("agent", "a revocation names its agent")
        if kind == "suspend" and not any(target.values()):
            raise ValidationError("$", "a suspension names an agent, a role or an action")
        return cls(kind=kind, active=bool(obj.get("active", True)),
                   reason=str(obj.get("reason", "")), by=str(obj.get("by", "")),
                   at=float(obj.get("at") or 0.0), **target)


class Controls:
    """The active controls, frozen: a snapshot swaps the whole set between batches."""

    __slots__ = ("_active", "version")

    def __init__(self, controls: Iterable[Control] = (), version: int = 0) -> None:
        self._active = tuple(c for c in controls if c.active)
        self.version = version

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Any:
        return iter(self._active)

    def check(self, agent: str, role: str | None, action: str) -> Reason | None:
        """The deny reason when a control stops this action, else None (revoke first)."""
        if not self._active:
            return None
        for c in self._active:
            if c.kind == "revoke" and c.matches(agent, role, action):
                return Reason(rc.REVOKED, f"agent {agent} revoked by {c.by or 'an operator'}"
                              + (f": {c.reason}" if c.reason else ""))
        for c in self._active:
            if c.kind == "suspend" and c.matches(agent, role, action):
                scope = ", ".join(f"{k} {v}" for k, v in (("agent", c.agent), ("role", c.role),
                                                         ("action", c.action)) if v)
                return Reason(rc.SUSPENDED, f"suspended ({scope}) by {c.by or 'an operator'}"
                              + (f": {c.reason}" if c.reason else ""))
        return None

    @classmethod
    def latest(cls, table: Mapping[str, Control], version: int = 0) -> Controls:
        return cls(table.values(), version)
