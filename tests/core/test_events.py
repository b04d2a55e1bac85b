"""Wire format: round trips, field-naming validation errors, schema files in step."""
from __future__ import annotations

import dataclasses
import json
import uuid
from importlib.resources import files
from typing import Any

import jsonschema
import orjson
import pytest

from holdgate.errors import ValidationError
from holdgate.events import (ActionRequest, Reason, Resource, Verdict, action_digest,
                             decode_request, decode_verdict, encode)
from holdgate.keys import Signer, TrustStore
from holdgate.signing import sign_headers, verify_record


def _schema(name: str) -> dict[str, Any]:
    return json.loads((files("holdgate") / "schemas" / name).read_text())


def _request(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "schema_version": 1, "request_id": str(uuid.uuid4()), "agent_id": "billing-bot-1",
        "action": "payments.refund",
        "resource": {"type": "Invoice", "id": "inv-1", "attributes": {"amount_cents": 1200}},
        "context": {"approvals": ["alice"], "ticket": {"priority": "high"}},
        "occurred_at": 1_790_000_000.25,
    }
    obj.update(over)
    return obj


def test_request_round_trip_is_lossless() -> None:
    req = ActionRequest.from_obj(_request())
    assert decode_request(encode(req)) == req
    assert req.digest == action_digest(encode(req))      # the bytes the SDK publishes


def test_create_fills_id_and_time() -> None:
    req = ActionRequest.create(agent_id="a", action="tickets.read",
                               resource=Resource("Ticket", "t-1"))
    assert uuid.UUID(req.request_id) and req.occurred_at > 1.7e9 and req.context == {}


@pytest.mark.parametrize("mutate, field", [
    (lambda o: o.pop("agent_id"), "agent_id"),
    (lambda o: o.update(agent_id=""), "agent_id"),
    (lambda o: o.update(request_id="not-a-uuid"), "request_id"),
    (lambda o: o.update(action="refund payment"), "action"),
    (lambda o: o.update(schema_version=2), "schema_version"),
    (lambda o: o.update(resource="Invoice:1"), "resource"),
    (lambda o: o["resource"].update(type="invoice"), "resource.type"),
    (lambda o: o["resource"].update(id=""), "resource.id"),
    (lambda o: o["resource"].update(extra=1), "resource.extra"),
    (lambda o: o["resource"]["attributes"].update(ratio=1e300), "resource.attributes.ratio"),
    (lambda o: o.update(context=[1]), "context"),
    (lambda o: o["context"]["ticket"].update(score=922337203685477.75), "context.ticket.score"),
    (lambda o: o["context"].update(x=[None]), "context.x[0]"),
    (lambda o: o["context"].update(signals={"rate_1s": 0}), "context.signals"),
    (lambda o: o.update(occurred_at="yesterday"), "occurred_at"),
    (lambda o: o.update(occurred_at=1_790_000_000_000), "occurred_at"),
    (lambda o: o.update(surprise=True), "surprise"),
])
def test_every_validation_error_names_its_field(mutate: Any, field: str) -> None:
    obj = _request()
    mutate(obj)
    with pytest.raises(ValidationError) as err:
        decode_request(orjson.dumps(obj))
    assert err.value.field == field
    assert str(err.value).startswith(field)
    # The JSON Schema refuses the same record, so other runtimes catch it before publishing.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, _schema("action_request.schema.json"))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff\xfe", b"null", b"x" * 70_000])
def test_garbage_bytes_are_validation_errors_not_crashes(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_request(raw)


def test_valid_request_passes_json_schema() -> None:
    jsonschema.validate(_request(), _schema("action_request.schema.json"))


def _verdict() -> Verdict:
    req = ActionRequest.from_obj(_request())
    return Verdict(request_id=req.request_id, agent_id=req.agent_id, decision="deny",
                   reasons=(Reason("NO_PERMIT", "nothing permits it"),),
                   policy_version="sha256:" + "0" * 64, action_digest=req.digest,
                   decided_at=1.0, expires_at=1.0, signals={"rate_1s": 3}, request=req.to_obj())


def test_verdict_round_trip_and_schema() -> None:
    v = dataclasses.replace(_verdict(), seq=7)
    again = decode_verdict(encode(v))
    assert again == v
    jsonschema.validate(v.to_obj(), _schema("verdict.schema.json"))


def test_signature_is_over_the_exact_bytes_and_breaks_on_any_change() -> None:
    signer, other = Signer.generate(), Signer.generate()
    trust = TrustStore([signer.public_key])
    value = encode(_verdict())
    headers = sign_headers(signer, value)
    assert verify_record(trust, value, headers) is None
    assert "does not verify" in (verify_record(trust, value.replace(b"deny", b"allo"), headers)
                                 or "")
    assert verify_record(trust, value, ()) == "unsigned"
    assert "unknown key" in (verify_record(trust, value, sign_headers(other, value)) or "")


def test_deny_without_reason_is_refused() -> None:
    obj = _verdict().to_obj() | {"reasons": []}
    with pytest.raises(ValidationError) as err:
        decode_verdict(orjson.dumps(obj))
    assert err.value.field == "reasons"


@pytest.mark.parametrize("cls, schema", [(ActionRequest, "action_request.schema.json"),
                                         (Verdict, "verdict.schema.json")])
def test_schema_files_match_dataclasses(cls: type, schema: str) -> None:
    props = _schema(schema)["properties"]
    wire = {f.name for f in dataclasses.fields(cls)} - {"key_id"}   # key_id: a header, read
    assert set(props) == wire
    resource = _schema("action_request.schema.json")["properties"]["resource"]["properties"]
    assert set(resource) == {f.name for f in dataclasses.fields(Resource)}
    reason = _schema("verdict.schema.json")["properties"]["reasons"]["items"]["properties"]
    assert set(reason) == {f.name for f in dataclasses.fields(Reason)}
