"""Wire types of published bundles and models, pointers and worker status: exact and strict."""
from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from holdgate.artifacts import (
    ARTIFACT_MAX_BYTES,
    RECORD_OVERHEAD,
    Artifact,
    Pointer,
    at_ns,
    check_record_size,
    parse_record,
    parse_value,
    pointer_key,
)
from holdgate.errors import ValidationError
from holdgate.status import STALE_AFTER, WorkerStatus

T = 1_790_000_000.123456


def _artifact(**over: Any) -> Artifact:
    base: dict[str, Any] = {
        "kind": "policy", "version": "sha256:" + "ab" * 32, "published_at": T, "by": "alice",
        "note": "CHG-1", "files": {"policy.cedar": b"permit(principal, action, resource);",
                                   "entities.json": b"[]\r\n\x00\xff"}}
    base.update(over)
    return Artifact(**base)


def _obj(a: Artifact) -> dict[str, Any]:
    return orjson.loads(a.to_bytes())


def test_artifact_round_trips_bytes_exactly() -> None:
    a = _artifact()
    back = Artifact.from_bytes(a.to_bytes())
    assert back == a and back.files["entities.json"] == b"[]\r\n\x00\xff"
    obj = _obj(a)
    assert obj["schema"] == "holdgate.artifact/1" and obj["name"] == "default"
    assert base64.b64decode(obj["files"]["policy.cedar"]) == a.files["policy.cedar"]
    assert a.key == "content/sha256:" + "ab" * 32 and a.size == sum(map(len, a.files.values()))


@pytest.mark.parametrize("name", ["../policy.cedar", "a/b", "..", ".hidden", "x..y", "", "a b",
                                  "a\\b", "x" * 101, "ü.json"])
def test_artifact_refuses_file_names_that_could_leave_a_folder(name: str) -> None:
    with pytest.raises(ValidationError, match="files"):
        _artifact(files={name: b"x"})
    obj = _obj(_artifact())
    obj["files"] = {name: base64.b64encode(b"x").decode()}
    with pytest.raises(ValidationError):
        Artifact.from_bytes(orjson.dumps(obj))


@pytest.mark.parametrize("change, field", [
    ({"schema": "holdgate.artifact/2"}, "schema"),
    ({"kind": "script"}, "kind"),
    ({"version": "v/1"}, "version"),
    ({"version": ""}, "version"),
    ({"published_at": "yesterday"}, "published_at"),
    ({"published_at": float("nan")}, "published_at"),
    ({"by": 7}, "by"),
    ({"files": {}}, "files"),
    ({"files": {"policy.cedar": "not base64!"}}, "files.policy.cedar"),
    ({"files": ["policy.cedar"]}, "files"),
    ({"extra": 1}, "extra"),
])
def test_artifact_refuses_a_bad_record_naming_the_field(change: dict[str, Any],
                                                        field: str) -> None:
    obj = {**_obj(_artifact()), **change}
    with pytest.raises(ValidationError) as err:
        Artifact.from_bytes(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))
    assert err.value.field == field


@pytest.mark.parametrize("missing", ["kind", "version", "files", "published_at", "by", "name",
                                     "schema"])
def test_artifact_refuses_missing_fields(missing: str) -> None:
    obj = _obj(_artifact())
    del obj[missing]
    with pytest.raises(ValidationError):
        Artifact.from_bytes(orjson.dumps(obj))


def test_artifact_refuses_what_is_not_json() -> None:
    for raw in (b"", b"{", b"[]", b"null", b"\xff"):
        with pytest.raises(ValidationError):
            Artifact.from_bytes(raw)


def test_pointer_round_trip_and_key_carries_the_time_in_ns() -> None:
    p = Pointer(kind="model", role="enforce", version="sha256:0123456789abcdef", at=T,
                by="bob", reason="promote", previous="sha256:fedcba9876543210")
    assert Pointer.from_bytes(p.to_bytes()) == p
    assert p.key == f"pointer/enforce/{at_ns(T):020d}" and len(p.key.rsplit("/", 1)[1]) == 20
    assert p.key == pointer_key("enforce", Pointer.from_bytes(p.to_bytes()).at)
    cleared = Pointer(kind="policy", role="shadow", version=None, at=T, by="bob")
    assert Pointer.from_bytes(cleared.to_bytes()).version is None
    # keys sort like the times they carry
    assert pointer_key("shadow", 9.5) < pointer_key("shadow", 10.0) < pointer_key("shadow", T)


@pytest.mark.parametrize("kwargs", [
    {"role": "enforce", "version": None},              # enforcing nothing is no pointer
    {"role": "primary"},
    {"kind": "bundle"},
    {"at": -1.0}, {"at": 1e12}, {"at": float("inf")},
    {"version": "../x"}, {"previous": "a b"},
    {"reason": "x" * 5000},
])
def test_pointer_refuses_what_a_worker_could_not_follow(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"kind": "policy", "role": "shadow", "version": "sha256:ab",
                            "at": T, "by": "b"}
    with pytest.raises(ValidationError):
        Pointer(**{**base, **kwargs})


def test_parse_record_binds_the_value_to_its_key() -> None:
    """Signatures cover values only: a signed value under another key is refused."""
    a = _artifact()
    p = Pointer(kind="policy", role="enforce", version=a.version, at=T, by="alice")
    assert parse_record(a.key.encode(), a.to_bytes()) == a
    assert parse_record(p.key.encode(), p.to_bytes()) == p
    assert parse_value(a.to_bytes()) == a and parse_value(p.to_bytes()) == p
    replays = [
        (b"content/sha256:other", a.to_bytes()),                     # under another version
        (pointer_key("enforce", T + 3600).encode(), p.to_bytes()),   # old pointer made "newest"
        (pointer_key("shadow", T).encode(), p.to_bytes()),           # enforce as shadow
        (a.key.encode(), p.to_bytes()),                              # a pointer as content
        (p.key.encode(), a.to_bytes()),                              # content as a pointer
        (b"something/else", p.to_bytes()),
        (None, p.to_bytes()),
    ]
    for key, value in replays:
        with pytest.raises(ValidationError, match="key"):
            parse_record(key, value)


def test_size_limit_is_refused_with_size_and_limit() -> None:
    key = b"content/sha256:x"
    fits = b"x" * (ARTIFACT_MAX_BYTES - RECORD_OVERHEAD - len(key))
    assert check_record_size(key, fits) == ARTIFACT_MAX_BYTES
    with pytest.raises(ValidationError) as err:
        check_record_size(key, fits + b"x")
    message = str(err.value)
    assert f"{ARTIFACT_MAX_BYTES + 1:,} bytes" in message and f"{ARTIFACT_MAX_BYTES:,}" in message
    assert "8 MiB" in message and "refused, not split" in message
    with pytest.raises(ValidationError):      # headers count too
        check_record_size(key, fits, [("hg-sig", b"s" * 64)])


def _status(**over: Any) -> WorkerStatus:
    base: dict[str, Any] = {"worker": "host-a:1234", "host": "host-a", "pid": 1234,
                            "enforced": {"policy": "sha256:aa", "model": None},
                            "shadow": {"policy": "sha256:bb", "model": None},
                            "since": T - 60, "updated_at": T, "partitions": [1, 0],
                            "ready": True, "problems": []}
    base.update(over)
    return WorkerStatus(**base)


def test_worker_status_round_trip_and_flags() -> None:
    s = _status()
    back = WorkerStatus.from_bytes(s.to_bytes())
    assert back == WorkerStatus(**{**s.__dict__, "partitions": [0, 1]}) and back.key == s.worker
    assert _status(partitions=(3, 1)).partitions == [1, 3]
    assert s.flags(T + 1) == []
    assert s.flags(T + STALE_AFTER + 1) == [f"stale: last status {STALE_AFTER + 1:.0f}s ago"]
    assert s.flags(T, {"policy": "sha256:cc"}) == [
        "enforces policy sha256:aa, published sha256:cc"]
    assert s.flags(T, {"policy": "sha256:aa", "model": None}) == []
    bad = _status(ready=False, problems=["policy topic: 1 record ignored"])
    assert bad.flags(T) == ["not ready", "problem: policy topic: 1 record ignored"]


@pytest.mark.parametrize("change", [
    {"schema": "holdgate.status/9"}, {"enforced": {"policy": "x"}},
    {"enforced": {"policy": 1, "model": None}}, {"pid": -1}, {"pid": True}, {"ready": "yes"},
    {"partitions": [-1]}, {"partitions": "0,1"}, {"updated_at": None}, {"worker": ""},
    {"problems": "none"}, {"surprise": 1},
])
def test_worker_status_refuses_bad_records(change: dict[str, Any]) -> None:
    obj = {**orjson.loads(_status().to_bytes()), **change}
    with pytest.raises(ValidationError):
        WorkerStatus.from_bytes(orjson.dumps(obj))
    obj = orjson.loads(_status().to_bytes())
    del obj["since"]
    with pytest.raises(ValidationError, match="since"):
        WorkerStatus.from_bytes(orjson.dumps(obj))
