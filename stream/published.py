"""What a policies or models topic says is enforced and shadowed, and since when.

`Published.from_values` is pure: it takes the latest verified value per key
(what `SignedTable` keeps, or what `read_signed` returns) and derives the
current state from the pointer history, so the worker, the CLI and the tests
agree on one reading:

* ``enforced``: the content of the latest enforce pointer by ``(at, key)``
  whose content is on the topic.  A newer pointer naming missing content is
  reported in ``problems`` and skipped: a worker keeps deciding with a
  version that exists rather than with nothing.
* ``shadow``: the latest shadow pointer's content; None when that pointer
  clears the shadow, names missing content, or names the enforced version.
* ``history``: every valid pointer, oldest first: what was enforced when.
* ``rollback_target()``: the version below the current one in the enforce
  *lineage*.  Publishing or promoting a new version pushes it; enforcing a
  version already in the lineage (a rollback, or promoting an old version
  again) goes back to it.  So repeated rollbacks walk back v3 -> v2 -> v1
  instead of flipping between the last two.

Keys are not signed, only values (`holdgate.artifacts`), so every value is
checked against the key it sits under, and against the topic's kind.

`read_signed` / `read_published` read a compacted topic whole with
kafka-python (CLI side); they import Kafka only when called.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from holdgate.artifacts import KINDS, Artifact, Kind, Pointer, Role, parse_record
from holdgate.status import STALE_AFTER, WorkerStatus

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.keys import Signer, TrustStore
    from holdgate.settings import Settings

__all__ = ["Overview", "Published", "SignedRead", "publish_records", "read_overview",
           "read_published", "read_signed", "topic_of"]

T = TypeVar("T")


def _order(p: Pointer) -> tuple[float, str]:
    return (p.at, p.key)


@dataclass(frozen=True)
class Published:
    """The state of one kind (policy or model) as its topic's pointers define it."""

    kind: Kind
    contents: Mapping[str, Artifact] = field(default_factory=dict)   # version -> artifact
    history: list[Pointer] = field(default_factory=list)             # valid, oldest first
    enforced: Artifact | None = None
    enforced_pointer: Pointer | None = None
    shadow: Artifact | None = None
    shadow_pointer: Pointer | None = None        # the latest shadow pointer (even a clear)
    lineage: tuple[str, ...] = ()                # enforce lineage, current version last
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_values(cls, values: Mapping[str, Artifact | Pointer], kind: Kind) -> Published:
        problems: list[str] = []
        contents: dict[str, Artifact] = {}
        pointers: list[Pointer] = []
        for key in sorted(values):
            value = values[key]
            if value.kind != kind:
                problems.append(f"{key}: a {value.kind} record on the {kind} topic: ignored")
            elif value.key != key:
                what = "version" if isinstance(value, Artifact) else "role/time"
                problems.append(f"{key}: value is signed for {value.key} ({what} mismatch): "
                                "ignored")
            elif isinstance(value, Artifact):
                contents[value.version] = value
            else:
                pointers.append(value)
        pointers.sort(key=_order)

        enforce = [p for p in pointers if p.role == "enforce"]
        enforced_pointer: Pointer | None = None
        for p in reversed(enforce):
            assert p.version is not None          # Pointer refuses an enforce of nothing
            if p.version in contents:
                enforced_pointer = p
                break
            problems.append(f"{p.key}: enforce pointer names {kind} {p.version}, which has no "
                            "content on the topic: ignored")
        lineage: list[str] = []
        for p in enforce:
            if p.version not in contents:
                continue
            assert p.version is not None
            if p.version in lineage:
                del lineage[lineage.index(p.version) + 1:]
            else:
                lineage.append(p.version)
        enforced = contents[enforced_pointer.version] if enforced_pointer and \
            enforced_pointer.version else None

        shadow_pointer = next((p for p in reversed(pointers) if p.role == "shadow"), None)
        shadow: Artifact | None = None
        if shadow_pointer is not None and shadow_pointer.version is not None:
            shadow = contents.get(shadow_pointer.version)
            if shadow is None:
                problems.append(f"{shadow_pointer.key}: shadow pointer names {kind} "
                                f"{shadow_pointer.version}, which has no content on the "
                                "topic: no shadow")
            elif enforced is not None and shadow.version == enforced.version:
                shadow = None                     # promoted: nothing left to compare
        return cls(kind=kind, contents=contents, history=pointers, enforced=enforced,
                   enforced_pointer=enforced_pointer, shadow=shadow,
                   shadow_pointer=shadow_pointer, lineage=tuple(lineage), problems=problems)

    def rollback_target(self) -> str | None:
        """The version enforced before the current one in the lineage; None: nothing."""
        return self.lineage[-2] if len(self.lineage) >= 2 else None

    @property
    def latest_at(self) -> float:
        """Time of the newest pointer (0.0 when there is none)."""
        return self.history[-1].at if self.history else 0.0

    def next_at(self, now: float) -> float:
        """A time for a new pointer that sorts after every existing one.

        Pointers are ordered by the time their publisher's clock gave them; a
        publisher whose clock is behind the last pointer's would otherwise
        publish a pointer that is already history.
        """
        return max(now, self.latest_at + 0.001)

    def plan(self, artifact: Artifact, role: Role, *, by: str, reason: str,
             now: float) -> list[Artifact | Pointer]:
        """Records that make `artifact` the `role` version; [] when it already is.

        The content goes first unless the topic has it already.  Shadowing the
        enforced version is refused (`ValueError`): there would be nothing to compare.
        """
        if role == "shadow" and self.enforced and self.enforced.version == artifact.version:
            raise ValueError(f"{self.kind} {artifact.version} is the enforced one; a shadow "
                             "compares another version with it")
        current = self.enforced if role == "enforce" else self.shadow
        if current is not None and current.version == artifact.version:
            return []
        records: list[Artifact | Pointer] = [] if artifact.version in self.contents \
            else [artifact]
        return records + list(self.pointers([(role, artifact.version)], by=by, reason=reason,
                                             now=now))

    def pointers(self, changes: list[tuple[Role, str | None]], *, by: str, reason: str,
                 now: float) -> list[Pointer]:
        """New pointers for (role, version) changes, in order, each after the last one.

        ``previous`` names what the role points at now, for the history's readers.
        """
        at, out = self.next_at(now), []
        for role, version in changes:
            current = self.enforced if role == "enforce" else self.shadow
            out.append(Pointer(kind=self.kind, role=role, version=version, at=at, by=by,
                               reason=reason, previous=current.version if current else None))
            at += 0.001
        return out

    def to_obj(self) -> dict[str, Any]:
        def pointer(p: Pointer | None) -> dict[str, Any] | None:
            return None if p is None else {"version": p.version, "at": p.at, "by": p.by,
                                           "reason": p.reason, "previous": p.previous}

        return {"kind": self.kind,
                "enforced": self.enforced.version if self.enforced else None,
                "enforced_pointer": pointer(self.enforced_pointer),
                "shadow": self.shadow.version if self.shadow else None,
                "shadow_pointer": pointer(self.shadow_pointer),
                "rollback_target": self.rollback_target(),
                "versions": {v: {"published_at": a.published_at, "by": a.by, "note": a.note,
                                 "bytes": a.size} for v, a in sorted(self.contents.items())},
                "history": [{"role": p.role, **(pointer(p) or {})} for p in self.history],
                "problems": list(self.problems)}


def topic_of(settings: Settings, kind: Kind) -> str:
    return settings.policies_topic if kind == "policy" else settings.models_topic


@dataclass
class SignedRead(Generic[T]):
    """A compacted topic read whole: latest verified value per key, and what was refused."""

    topic: str
    values: dict[str, T] = field(default_factory=dict)
    signers: dict[str, str] = field(default_factory=dict)     # key -> key id
    records: int = 0
    rejected: list[str] = field(default_factory=list)         # "key: why", in offset order


def read_signed(settings: Settings, topic: str, trust: TrustStore,
                parse: Callable[[bytes | None, bytes], T], *,
                timeout: float = 60.0) -> SignedRead[T]:
    """Every record of `topic` from its beginning to its current end, verified.

    Like `SignedTable`: an unsigned, untrusted or unreadable record changes
    nothing (it is listed in ``rejected``); a later valid record replaces an
    earlier one under the same key.  Raises `ConfigError` when the topic
    does not exist.
    """
    from holdgate.signing import read_signature, verify_record
    from holdgate.stream.logread import offset_bounds, open_consumer, partition_count, scan

    out: SignedRead[T] = SignedRead(topic)
    consumer = open_consumer(settings, f"holdgate-read-{topic}")
    try:
        parts = range(partition_count(consumer, topic))
        for rec in scan(consumer, topic, offset_bounds(consumer, topic, parts),
                        timeout=timeout):
            out.records += 1
            name = (rec.key or b"").decode("utf-8", "replace")
            problem = verify_record(trust, rec.value, rec.headers)
            if problem is None:
                try:
                    out.values[name] = parse(rec.key, rec.value or b"")
                    out.signers[name] = read_signature(rec.headers)[0] or ""
                    continue
                except Exception as exc:  # noqa: BLE001 - a signed but unreadable record
                    problem = f"signed but unreadable: {exc}"
            out.rejected.append(f"{name[:80]}: {problem}")
    finally:
        consumer.close()
    return out


def read_published(settings: Settings, kind: Kind,
                   trust: TrustStore | None = None) -> tuple[Published, SignedRead[Any]]:
    """The policies or models topic read whole and verified with the operators' keys."""
    read = read_signed(settings, topic_of(settings, kind),
                       settings.operators() if trust is None else trust, parse_record)
    return Published.from_values(read.values, kind), read


def publish_records(settings: Settings, signer: Signer, topic: str,
                    records: list[Artifact | Pointer]) -> None:
    """Sign and send `records` in order, each acknowledged by all replicas before the next.

    Content goes before the pointer that names it, so a reader never sees a
    pointer to content that is not yet there.  Every record's size is checked
    before the first is sent (`ValidationError` naming size and limit): a
    refused artifact leaves no pointer behind.  Kafka errors propagate.
    """
    from kafka import KafkaProducer

    from holdgate.artifacts import check_record_size
    from holdgate.kafka_options import kafka_python_options
    from holdgate.signing import sign_headers
    from holdgate.topics import ARTIFACT_MAX_BYTES

    signed = []
    for record in records:
        key, value = record.key.encode(), record.to_bytes()
        headers = list(sign_headers(signer, value))
        check_record_size(key, value, headers)
        signed.append((key, value, headers))
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                             compression_type="gzip", max_request_size=ARTIFACT_MAX_BYTES,
                             client_id="holdgate-publish", **kafka_python_options(settings))
    try:
        for key, value, headers in signed:
            producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
    finally:
        producer.close(timeout=5)


def _short(version: str | None) -> str:
    return "-" if version is None else version[:19]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass
class Overview:
    """`holdgate status`: what is published per kind, and each worker's word on it."""

    now: float
    status_topic: str
    published: dict[str, Published | None]               # None: the topic does not exist
    workers: list[tuple[WorkerStatus, list[str]]] | None  # with flags; None: no status topic
    notes: list[str] = field(default_factory=list)       # problems and ignored records

    @property
    def flags(self) -> list[str]:
        return self.notes + [f"{ws.worker}: {f}" for ws, own in self.workers or [] for f in own]

    def to_obj(self) -> dict[str, Any]:
        return {"published": {k: p.to_obj() if p else None for k, p in self.published.items()},
                "workers": [{**ws.to_obj(), "age": ws.age(self.now), "flags": own}
                            for ws, own in self.workers or []],
                "flags": self.flags, "ok": not self.flags}

    def lines(self) -> list[str]:
        out = []
        for kind, pub in self.published.items():
            if pub is None:
                out.append(f"{kind:<7} (no {kind}s topic yet: nothing published)")
                continue
            for role, art, ptr in (("enforce", pub.enforced, pub.enforced_pointer),
                                   ("shadow", pub.shadow, pub.shadow_pointer)):
                label = kind if role == "enforce" else ""
                if art is None or ptr is None:
                    why = "none published: workers use their local one" if role == "enforce" \
                        else "none"
                    out.append(f"{label:<7} {role:<8} {'-':<19} {why}")
                    continue
                back = pub.rollback_target() if role == "enforce" else None
                out.append(f"{label:<7} {role:<8} {_short(art.version):<19} since "
                           f"{_when(ptr.at)} by {ptr.by}" +
                           (f": {ptr.reason}" if ptr.reason else "") +
                           (f" (rollback to {_short(back)})" if back else ""))
        out.append(f"workers: no status topic {self.status_topic} yet" if self.workers is None
                   else f"workers ({len(self.workers)}) on {self.status_topic}:")
        for ws, own in self.workers or []:
            shadowed = ", ".join(f"{k} {_short(v)}" for k, v in ws.shadow.items() if v) or "-"
            out.append(f"  {'CHECK' if own else 'ok   '} {ws.worker:<28} policy "
                       f"{_short(ws.enforced.get('policy'))}  model "
                       f"{_short(ws.enforced.get('model'))}  shadow {shadowed}  partitions "
                       f"{','.join(map(str, ws.partitions)) or '-'}  since {_when(ws.since)}  "
                       f"updated {ws.age(self.now):.0f}s ago")
            out += [f"        ! {f}" for f in own]
        return out + [f"! {note}" for note in self.notes]


def _status_record(key: bytes | None, value: bytes) -> WorkerStatus:
    status = WorkerStatus.from_bytes(value)
    if (key or b"").decode("utf-8", "replace") != status.worker:
        raise ValueError(f"signed as the status of {status.worker!r}")
    return status


def read_overview(settings: Settings, trust: TrustStore | None = None, *,
                  now: float | None = None, stale_after: float = STALE_AFTER) -> Overview:
    """Pointers (verified with the operators' keys) and worker statuses (with `trust`)."""
    from holdgate.errors import ConfigError

    now = time.time() if now is None else now
    trust = settings.trust() if trust is None else trust
    overview = Overview(now, settings.status_topic, {}, None)
    for kind in KINDS:
        try:
            pub, read = read_published(settings, kind)
        except ConfigError:
            overview.published[kind] = None
            continue
        overview.published[kind] = pub
        overview.notes += [f"{kind}: {p}" for p in pub.problems]
        overview.notes += [f"{read.topic}: ignored {r}" for r in read.rejected]
    try:
        statuses = read_signed(settings, settings.status_topic, trust, _status_record)
    except ConfigError:
        return overview
    overview.notes += [f"{statuses.topic}: ignored {r}" for r in statuses.rejected]
    want = {k: p.enforced.version for k, p in overview.published.items() if p and p.enforced}
    overview.workers = [(ws, ws.flags(now, want, stale_after))
                        for ws in sorted(statuses.values.values(), key=lambda w: w.worker)]
    return overview
