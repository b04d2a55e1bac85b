"""What each worker enforces and shadows, as it says itself: the status topic's records.

Publishing a bundle changes what workers *should* enforce; only the workers
can say what they *do* enforce.  Each worker publishes a `WorkerStatus`
keyed by its worker id on the compacted ``holdgate.status`` topic, signed
with its verdict key (the same key whose signatures executors already trust),
so `holdgate status` can show "published v2, worker A on v2, worker B still on
v1, worker C silent for 40 s" without trusting anything unsigned.

`since` is when the current enforced + shadow set took effect on that worker,
`updated_at` when it last said so: a status older than `STALE_AFTER` seconds
is flagged (a worker that stopped, hung, or lost the broker).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from holdgate.errors import ValidationError

__all__ = ["STALE_AFTER", "STATUS_SCHEMA", "WorkerStatus"]

STATUS_SCHEMA = "holdgate.status/1"
#: Seconds after which a worker's last status is flagged stale.
STALE_AFTER = 30.0
_SLOTS = ("policy", "model")
_FIELDS = frozenset({"schema", "worker", "host", "pid", "enforced", "shadow", "since",
                     "updated_at", "partitions", "ready", "problems"})
_MAX_PROBLEMS = 50


def _versions(name: str, value: Any) -> dict[str, str | None]:
    if not isinstance(value, dict) or set(value) != set(_SLOTS) or not all(
            v is None or isinstance(v, str) for v in value.values()):
        raise ValidationError(name, 'must be {"policy": str|null, "model": str|null}')
    return {k: value[k] for k in _SLOTS}


def _time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValidationError(name, "must be epoch seconds")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    """One worker's word on what it decides with; see the module docstring."""

    worker: str
    host: str
    pid: int
    enforced: dict[str, str | None]
    shadow: dict[str, str | None] = field(
        default_factory=lambda: {"policy": None, "model": None})
    since: float
    updated_at: float
    partitions: list[int] = field(default_factory=list)
    ready: bool = False
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.worker, str) or not 0 < len(self.worker) <= 256:
            raise ValidationError("worker", "must be a non-empty string (at most 256)")
        if not isinstance(self.host, str) or len(self.host) > 256:
            raise ValidationError("host", "must be a string")
        if isinstance(self.pid, bool) or not isinstance(self.pid, int) or self.pid < 0:
            raise ValidationError("pid", "must be a non-negative integer")
        object.__setattr__(self, "enforced", _versions("enforced", self.enforced))
        object.__setattr__(self, "shadow", _versions("shadow", self.shadow))
        object.__setattr__(self, "since", _time("since", self.since))
        object.__setattr__(self, "updated_at", _time("updated_at", self.updated_at))
        # A worker hands over whatever collection it keeps; the wire form is a sorted list.
        if isinstance(self.partitions, (tuple, set, frozenset)):
            object.__setattr__(self, "partitions", sorted(self.partitions))
        if isinstance(self.problems, tuple):
            object.__setattr__(self, "problems", list(self.problems))
        if not isinstance(self.partitions, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and p >= 0
                for p in self.partitions):
            raise ValidationError("partitions", "must be a list of partition numbers")
        if not isinstance(self.ready, bool):
            raise ValidationError("ready", "must be true or false")
        if not isinstance(self.problems, list) or len(self.problems) > _MAX_PROBLEMS or \
                not all(isinstance(p, str) for p in self.problems):
            raise ValidationError("problems", f"must be a list of at most {_MAX_PROBLEMS} "
                                  "strings")

    @property
    def key(self) -> str:
        """The record key: the worker id (compaction keeps each worker's latest word)."""
        return self.worker

    def age(self, now: float) -> float:
        """Seconds since the worker last published its status."""
        return max(0.0, now - self.updated_at)

    def stale(self, now: float, after: float = STALE_AFTER) -> bool:
        return self.age(now) > after

    def flags(self, now: float, published: Mapping[str, str | None] | None = None,
              stale_after: float = STALE_AFTER) -> list[str]:
        """What an operator should look at: stale, not ready, problems, other versions.

        `published` maps "policy"/"model" to the version published to enforce
        (None or absent: nothing published, any local version is expected).
        """
        out = [f"stale: last status {self.age(now):.0f}s ago"] \
            if self.stale(now, stale_after) else []
        out += [] if self.ready else ["not ready"]
        out += [f"problem: {p}" for p in self.problems]
        for kind, want in (published or {}).items():
            if want and self.enforced.get(kind) != want:
                out.append(f"enforces {kind} {self.enforced.get(kind)}, published {want}")
        return out

    def to_obj(self) -> dict[str, Any]:
        return {"schema": STATUS_SCHEMA, "worker": self.worker, "host": self.host,
                "pid": self.pid, "enforced": dict(self.enforced), "shadow": dict(self.shadow),
                "since": self.since, "updated_at": self.updated_at,
                "partitions": sorted(self.partitions), "ready": self.ready,
                "problems": list(self.problems)}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> WorkerStatus:
        if not isinstance(obj, dict):
            raise ValidationError("$", "must be a JSON object")
        if obj.get("schema") != STATUS_SCHEMA:
            raise ValidationError("schema", f"must be {STATUS_SCHEMA!r}")
        unknown = sorted(set(obj) - _FIELDS)
        if unknown:
            raise ValidationError(unknown[0], f"unknown field in {STATUS_SCHEMA}")
        missing = sorted(_FIELDS - set(obj))
        if missing:
            raise ValidationError(missing[0], "missing")
        return cls(worker=obj["worker"], host=obj["host"], pid=obj["pid"],
                   enforced=obj["enforced"], shadow=obj["shadow"], since=obj["since"],
                   updated_at=obj["updated_at"], partitions=obj["partitions"],
                   ready=obj["ready"], problems=obj["problems"])

    @classmethod
    def from_bytes(cls, raw: bytes) -> WorkerStatus:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("$", f"not JSON: {exc}") from None
        return cls.from_obj(obj)
