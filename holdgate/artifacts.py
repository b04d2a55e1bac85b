"""Published policy bundles and models: content records and enforce/shadow pointers.

"Change without fear": an analyst publishes a bundle or a model to a compacted
topic (``holdgate.policies`` / ``holdgate.models``), and running workers swap
to it between two batches.  Two kinds of records live on each topic:

    content/<version>                  an `Artifact`: the files, base64 in JSON
    pointer/<role>/<at in ns, 20 digits>   a `Pointer`: "enforce (or shadow) <version>"

Content is keyed by its version (a content hash), so publishing the same
bundle twice is one record.  Every pointer has a key of its own, so
compaction never removes one: the topic keeps the whole history of what was
enforced and shadowed when, and promote, rollback and "clear the shadow" are
just newer pointers.  The current state is the latest pointer per role by
``(at, key)`` (`holdgate.stream.published`).

Every record is signed by an operator key (``hg-sig``/``hg-kid`` headers,
`holdgate.signing`) over the value only: the *key* is not signed, so a reader
must check that a value sits under the key it claims (`parse_record` and
`holdgate.stream.published.Published` both do).  Otherwise a copied signed
pointer could be replayed under a later key, or content under another version.
What signatures cannot stop is a writer deleting records (tombstones are never
applied, but compaction would drop the record they shadow): only operators may
write these topics (Kafka ACLs, docs/acls.md).

A record larger than `ARTIFACT_MAX_BYTES` (the topic's ``max.message.bytes``)
is refused before sending (`check_record_size`): we refuse rather than split,
so a worker never sees half an artifact.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from holdgate.errors import ConfigError, ValidationError
from holdgate.keys import Signer, load_signer
from holdgate.settings import Settings
from holdgate.topics import ARTIFACT_MAX_BYTES

__all__ = [
    "ARTIFACT_MAX_BYTES",
    "ARTIFACT_SCHEMA",
    "KINDS",
    "POINTER_SCHEMA",
    "RECORD_OVERHEAD",
    "ROLES",
    "Artifact",
    "Kind",
    "Pointer",
    "Role",
    "at_ns",
    "check_record_size",
    "content_key",
    "describe",
    "operator_signer",
    "parse_record",
    "parse_value",
    "pointer_key",
    "record_size",
]

ARTIFACT_SCHEMA = "holdgate.artifact/1"
POINTER_SCHEMA = "holdgate.pointer/1"
Kind = Literal["policy", "model"]
Role = Literal["enforce", "shadow"]
KINDS: tuple[Kind, ...] = ("policy", "model")
ROLES: tuple[Role, ...] = ("enforce", "shadow")
CONTENT_PREFIX = "content/"
POINTER_PREFIX = "pointer/"
#: Batch header and per-record framing a producer adds around key, value and headers
#: (kafka-python's estimate is below this); counted so a record we accept always fits.
RECORD_OVERHEAD = 512

# Strict on purpose: a file name is written into a temporary folder by a worker,
# so nothing that could climb out of it (no '/', no '..', no leading dot).
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_FILES = 64
_MAX_TEXT = 2000                 # by, note, reason: a line for humans, not a payload
_MAX_AT = 1e11                   # seconds; keeps at_ns within 20 digits
_ARTIFACT_FIELDS = frozenset({"schema", "kind", "name", "version", "files", "published_at",
                              "by", "note"})
_POINTER_FIELDS = frozenset({"schema", "kind", "role", "version", "at", "by", "reason",
                             "previous"})


def at_ns(at: float) -> int:
    """Nanoseconds of `at` as pointer keys spell them (the same float gives the same key)."""
    return round(at * 1_000_000_000)


def content_key(version: str) -> str:
    return CONTENT_PREFIX + version


def pointer_key(role: str, at: float) -> str:
    return f"{POINTER_PREFIX}{role}/{at_ns(at):020d}"


def _check_version(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not _VERSION_RE.match(value):
        raise ValidationError(name, f"must match {_VERSION_RE.pattern} (got {value!r:.80})")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValidationError(name, f"must be a string of at most {_MAX_TEXT} characters")


def _check_time(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value < _MAX_AT:
        raise ValidationError(name, "must be epoch seconds (a positive finite number)")


def _check_kind(value: Any) -> None:
    if value not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)} (got {value!r:.40})")


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A published bundle or model: its files, exactly as validated before publishing."""

    kind: Kind
    version: str
    files: dict[str, bytes]
    name: str = "default"
    published_at: float
    by: str
    note: str = ""

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        _check_version("version", self.version)
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValidationError("name", f"must match {_NAME_RE.pattern}")
        if not isinstance(self.files, dict) or not 1 <= len(self.files) <= _MAX_FILES:
            raise ValidationError("files", f"must name 1 to {_MAX_FILES} files")
        for fname, data in self.files.items():
            if not isinstance(fname, str) or not _FILE_RE.match(fname) or ".." in fname:
                raise ValidationError(f"files.{fname!s:.60}", "file names must match "
                                      f"{_FILE_RE.pattern} without '..' (no folders)")
            if not isinstance(data, bytes):
                raise ValidationError(f"files.{fname}", "must be bytes")
        _check_time("published_at", self.published_at)
        _check_text("by", self.by)
        _check_text("note", self.note)

    @property
    def key(self) -> str:
        """The record key: ``content/<version>``."""
        return content_key(self.version)

    @property
    def size(self) -> int:
        """Bytes of all files together (before base64)."""
        return sum(len(d) for d in self.files.values())

    def to_obj(self) -> dict[str, Any]:
        return {"schema": ARTIFACT_SCHEMA, "kind": self.kind, "name": self.name,
                "version": self.version, "published_at": self.published_at, "by": self.by,
                "note": self.note,
                "files": {n: base64.b64encode(self.files[n]).decode("ascii")
                          for n in sorted(self.files)}}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Artifact:
        _check_fields(obj, ARTIFACT_SCHEMA, _ARTIFACT_FIELDS,
                      ("kind", "name", "version", "files", "published_at", "by"))
        files = obj["files"]
        if not isinstance(files, dict):
            raise ValidationError("files", "must be an object of base64 strings")
        decoded: dict[str, bytes] = {}
        for fname, text in files.items():
            if not isinstance(text, str):
                raise ValidationError(f"files.{fname!s:.60}", "must be a base64 string")
            try:
                decoded[fname] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(f"files.{fname!s:.60}", "is not valid base64") from None
        return cls(kind=obj["kind"], version=obj["version"], files=decoded, name=obj["name"],
                   published_at=obj["published_at"], by=obj["by"], note=obj.get("note", ""))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Artifact:
        return cls.from_obj(_loads(raw))


@dataclass(frozen=True, kw_only=True)
class Pointer:
    """"From `at` on, <role> <kind> <version>"; `version` None clears the shadow."""

    kind: Kind
    role: Role
    version: str | None
    at: float
    by: str
    reason: str = ""
    previous: str | None = None          # what this role pointed at before (for humans)

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if self.role not in ROLES:
            raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        _check_version("version", self.version, optional=self.role == "shadow")
        _check_version("previous", self.previous, optional=True)
        _check_time("at", self.at)
        _check_text("by", self.by)
        _check_text("reason", self.reason)

    @property
    def key(self) -> str:
        """The record key: ``pointer/<role>/<at in ns, 20 digits>``, one per pointer."""
        return pointer_key(self.role, self.at)

    def to_obj(self) -> dict[str, Any]:
        return {"schema": POINTER_SCHEMA, "kind": self.kind, "role": self.role,
                "version": self.version, "at": self.at, "by": self.by, "reason": self.reason,
                "previous": self.previous}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Pointer:
        _check_fields(obj, POINTER_SCHEMA, _POINTER_FIELDS, ("kind", "role", "version", "at",
                                                             "by"))
        return cls(kind=obj["kind"], role=obj["role"], version=obj["version"], at=obj["at"],
                   by=obj["by"], reason=obj.get("reason", ""), previous=obj.get("previous"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Pointer:
        return cls.from_obj(_loads(raw))


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("$", f"not JSON: {exc}") from None


def _check_fields(obj: Any, schema: str, allowed: frozenset[str],
                  required: Iterable[str]) -> None:
    if not isinstance(obj, dict):
        raise ValidationError("$", "must be a JSON object")
    if obj.get("schema") != schema:
        raise ValidationError("schema", f"must be {schema!r} (got {obj.get('schema')!r:.40})")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValidationError(unknown[0], f"unknown field in {schema}")
    for name in required:
        if name not in obj:
            raise ValidationError(name, "missing")


def parse_value(value: bytes) -> Artifact | Pointer:
    """An artifact or a pointer, told apart by its ``schema`` (the key is not checked).

    This is what fits `SignedTable.parse` (it hands over the value only); the
    key is checked afterwards by `Published.from_values`.
    """
    obj = _loads(value)
    if isinstance(obj, dict) and obj.get("schema") == POINTER_SCHEMA:
        return Pointer.from_obj(obj)
    return Artifact.from_obj(obj)


def parse_record(key: bytes | str | None, value: bytes) -> Artifact | Pointer:
    """A record of a policies/models topic, refused unless its value belongs under its key."""
    name = key.decode("utf-8", "replace") if isinstance(key, bytes) else (key or "")
    parsed = parse_value(value)
    if name.startswith(CONTENT_PREFIX):
        if not isinstance(parsed, Artifact):
            raise ValidationError("key", f"{name!r:.80} holds a pointer, not content")
    elif name.startswith(POINTER_PREFIX):
        if not isinstance(parsed, Pointer):
            raise ValidationError("key", f"{name!r:.80} holds content, not a pointer")
    else:
        raise ValidationError("key", f"{name!r:.80} is neither content/<version> nor "
                              "pointer/<role>/<ns>")
    if parsed.key != name:
        raise ValidationError("key", f"record under {name!r:.80} is signed as {parsed.key!r}")
    return parsed


def record_size(key: bytes, value: bytes,
                headers: Iterable[tuple[str, bytes]] = ()) -> int:
    """Upper bound of the bytes a producer sends for this record (uncompressed)."""
    return len(key) + len(value) + sum(len(k) + len(v) for k, v in headers) + RECORD_OVERHEAD


def check_record_size(key: bytes, value: bytes,
                      headers: Iterable[tuple[str, bytes]] = (),
                      limit: int = ARTIFACT_MAX_BYTES) -> int:
    """The record's size; raises `ValidationError` naming size and limit when over it."""
    size = record_size(key, value, headers)
    if size > limit:
        raise ValidationError("size", f"the record for {key.decode('utf-8', 'replace')} is "
                              f"{size:,} bytes ({size / 2**20:.1f} MiB, files base64-encoded) "
                              f"but the limit is {limit:,} bytes ({limit / 2**20:.0f} MiB, the "
                              "topic's max.message.bytes); refused, not split: make it smaller")
    return size


def describe(files: Mapping[str, bytes]) -> str:
    """``3 files, 12.3 KiB`` for messages."""
    total = sum(len(d) for d in files.values())
    return f"{len(files)} file{'s' if len(files) != 1 else ''}, {total / 1024:,.1f} KiB"


def operator_signer(settings: Settings, key_file: str | None = None) -> Signer:
    """The operator key that signs published records, refused unless workers trust it.

    A record signed by a key outside ``HOLDGATE_OPERATOR_KEYS`` would be
    published and then ignored by every worker: refuse it here instead, with
    a `ConfigError` saying which key and what is trusted.
    """
    path = key_file or settings.operator_key_file
    if not path:
        raise ConfigError("no operator key: --key FILE or HOLDGATE_OPERATOR_KEY_FILE "
                          "(`holdgate keys generate --name operator`); workers ignore unsigned "
                          "records")
    signer, operators = load_signer(path), settings.operators()
    if not len(operators):
        raise ConfigError("HOLDGATE_OPERATOR_KEYS is not set: give the operator public keys "
                          "workers trust, to read what is published")
    if signer.key_id not in operators:
        raise ConfigError(f"key {signer.key_id} is not in HOLDGATE_OPERATOR_KEYS "
                          f"({', '.join(operators.key_ids)}): workers would ignore what it "
                          "signs")
    return signer
