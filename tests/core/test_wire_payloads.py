"""Real agent payloads on the wire: floats, nulls, MCP tool names, and parser-safe input.

Each group below pins one rule of `holdgate.wire_json` / `holdgate.cedar_values`
and was failing before they existed; the differential corpus keeps the JSON
Schema that other runtimes validate against in step with the decoder.
"""
from __future__ import annotations

import json
import random
import uuid
from importlib.resources import files
from typing import Any

import cedarpy
import jsonschema
import orjson
import pytest
from holdgate.models import SignalComputer
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.stream import MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.edges import Rejected, decode, recover_identity

from holdgate import reasons as rc
from holdgate.cedar_values import DECIMAL_LIMIT, decimal_arg, to_cedar
from holdgate.errors import ValidationError
from holdgate.events import ActionRequest, action_digest, decode_request, encode
from holdgate.keys import Signer
from holdgate.routing import partition_for

PARTS = 4
RID = "6513369b-e919-5587-b0a9-1ad0e7500f10"
SCHEMA = json.loads((files("holdgate") / "schemas" / "action_request.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(PolicyBundle.load(default_bundle_path()))


def _obj(context: Any = None, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "schema_version": 1, "request_id": RID, "agent_id": "support-bot-1",
        "action": "send_email", "resource": {"type": "Email", "id": "welcome-cus-1002"},
        "context": {} if context is None else context, "occurred_at": 1_790_000_000.25}
    obj.update(over)
    return obj


def _raw(context_text: bytes = b"{}", **over: Any) -> bytes:
    """A record whose context is exactly `context_text` (numbers as written)."""
    head = orjson.dumps(_obj(context="@CONTEXT@", **over))
    return head.replace(b'"@CONTEXT@"', context_text)


def _refused(raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        decode_request(raw)
    return err.value


# ------------------------------------------------------------ 1. floats --

@pytest.mark.parametrize("value, arg", [
    (12.5, "12.5"), (12.0, "12.0"), (1e2, "100.0"), (-0.0, "0.0"), (0.1, "0.1"),
    (0.87345213, "0.8735"), (0.00005, "0.0"), (0.00015, "0.0002"), (1e-7, "0.0"),
    (-1.23456, "-1.2346"), (DECIMAL_LIMIT, "922337203685477.5"), (-DECIMAL_LIMIT,
                                                                  "-922337203685477.5")])
def test_a_float_is_a_cedar_decimal_rounded_half_even_to_four_places(value: float,
                                                                      arg: str) -> None:
    assert decimal_arg(value) == arg
    assert to_cedar({"x": [value]}) == {"x": [{"__extn": {"fn": "decimal", "arg": arg}}]}


def test_to_cedar_copies_nothing_without_floats() -> None:
    context = {"a": 1, "b": ["x", {"c": True}]}
    assert to_cedar(context) is context


def test_floats_are_decoded_and_the_digest_is_of_the_exact_bytes() -> None:
    raw = _raw(b'{"amount":45.50,"score":8.734e-1,"n":1e2,"z":-0.0}')
    request = decode_request(raw)
    assert request.context == {"amount": 45.5, "score": 0.8734, "n": 100.0, "z": -0.0}
    action = decode(RawRecord(key=b"support-bot-1", value=raw, partition=0))
    assert not isinstance(action, Rejected)
    assert action.digest == action_digest(raw) and action.published["context"]["amount"] == 45.5
    assert decode_request(encode(request)) == request         # the SDK's own bytes round-trip


@pytest.mark.parametrize("text, value", [
    (b"1e18", 10**18), (b"-9.223372036854775808e18", -(2**63)), (b"1e15", 10**15)])
def test_an_integral_number_beyond_the_decimal_range_is_the_long_it_equals(
        text: bytes, value: int) -> None:
    request = decode_request(_raw(b'{"n":' + text + b"}"))
    assert request.context["n"] == value and type(request.context["n"]) is int


@pytest.mark.parametrize("text", [
    b"9223372036854775808", b"-9223372036854775809", b"18446744073709551616",
    b"99999999999999999999999", b"9223372036854775807.0", b"1e300"])
def test_an_integer_beyond_64_bits_is_named_as_such_never_as_a_float(text: bytes) -> None:
    err = _refused(_raw(b'{"n":' + text + b"}"))
    assert err.field == "context.n" and "64-bit" in err.message
    assert "float" not in err.message


def test_a_fraction_beyond_the_decimal_range_is_refused() -> None:
    err = _refused(_raw(b'{"n":922337203685477.6}'))
    assert err.field == "context.n" and "decimal" in err.message


def test_decimals_reach_cedar_and_decide(engine: PolicyEngine) -> None:
    def decide(context: dict[str, Any]) -> list[str]:
        request = ActionRequest.create(agent_id="support-bot-1", action="send_email",
                                       resource={"type": "Email", "id": "e-1"}, context=context)
        return engine.decide(request).codes
    assert decide({"spam_score": 0.12}) == [rc.PERMITTED]
    assert decide({"spam_score": 0.49994}) == [rc.PERMITTED]       # 0.4999
    assert decide({"spam_score": 0.49995}) == [rc.NO_PERMIT]       # 0.5000: resolution 1e-4
    assert decide({"spam_score": 0.5}) == [rc.NO_PERMIT]
    assert decide({"spam_score": 0}) == [rc.POLICY_ERROR]          # a Long is not a decimal


def test_a_float_where_the_schema_says_long_is_denied_never_allowed(engine: PolicyEngine) -> None:
    for amount in (4500.0, 4500.5, 60000.25):
        request = ActionRequest.create(agent_id="billing-bot-1", action="payments.refund",
                                       resource={"type": "Payment", "id": "pay-5001"},
                                       context={"amount_cents": amount})
        decision = engine.decide(request)
        assert decision.decision == "deny" and set(decision.codes) == {rc.POLICY_ERROR}
        assert "decimal" in decision.reasons[0].message and "Long" in decision.reasons[0].message


# ------------------------------------------------------------- 1. nulls --

def test_null_is_an_absent_key_at_any_depth_and_published_as_sent() -> None:
    raw = _raw(b'{"cc":null,"thread":{"id":"t-1","parent":null,"meta":[{"x":null}]}}',
               deadline=None, resource={"type": "Email", "id": "e", "attributes": {"a": None}})
    request, published = decode_request_with_published(raw)
    assert request.context == {"thread": {"id": "t-1", "meta": [{}]}}
    assert request.resource.attributes == {} and request.deadline is None
    assert published["context"]["cc"] is None                 # the verdict echoes what was sent
    assert b"null" not in encode(request)


def decode_request_with_published(raw: bytes) -> tuple[ActionRequest, Any]:
    from holdgate.events import decode_request_obj
    return decode_request_obj(raw)


def test_null_context_and_attributes_are_empty() -> None:
    request = decode_request(orjson.dumps(_obj(context=None) | {"context": None}))
    assert request.context == {}


@pytest.mark.parametrize("context, field", [
    ({"to": ["a@example.com", None]}, "context.to[1]"),
    ({"signals": None}, "context.signals"),              # reserved even when null
    ({"x": {"__extn": None}}, "context.x.__extn")])
def test_null_does_not_hide_what_is_refused(context: dict[str, Any], field: str) -> None:
    assert _refused(orjson.dumps(_obj(context))).field == field


def test_a_required_field_cannot_be_null() -> None:
    err = _refused(orjson.dumps(_obj(agent_id=None)))
    assert err.field == "agent_id" and "null" in err.message


# ------------------------------------------------------------ 1. names --

@pytest.mark.parametrize("name", ["send_email", "get-weather", "mcp__github__create_issue",
                                  "getWeather", "payments.refund", "github.create_issue", "_x"])
def test_mcp_tool_names_are_cedar_actions_verbatim(name: str) -> None:
    assert decode_request(orjson.dumps(_obj(action=name))).action == name


@pytest.mark.parametrize("name", ["", "a b", "a..b", ".a", "a.", "-a", "send_email\n", "é",
                                  "a" * 129, "Action::\"x\""])
def test_names_outside_the_tool_alphabet_are_refused(name: str) -> None:
    assert _refused(orjson.dumps(_obj(action=name))).field == "action"


def test_undeclared_actions_and_group_names_are_denied_clearly(engine: PolicyEngine) -> None:
    def decide(agent: str, action: str) -> Any:
        return engine.decide(ActionRequest.create(
            agent_id=agent, action=action, resource={"type": "Invoice", "id": "inv-1"}))
    group = decide("audit-bot-1", "read")             # auditors: `action in Action::"read"`
    assert group.codes == [rc.NO_PERMIT] and "action group" in group.reasons[0].message
    unknown = decide("audit-bot-1", "Send_Email")
    assert unknown.codes == [rc.NO_PERMIT]
    assert "not declared in the schema" in unknown.reasons[0].message
    assert decide("audit-bot-1", "invoices.read").codes == [rc.PERMITTED]


# ----------------------------------------------------------- 5. escapes --

@pytest.mark.parametrize("text, field", [
    (b'{"__entity":{"type":"Agent","id":"a"}}', "context.__entity"),
    (b'{"a":{"b":[{"__extn":{"fn":"decimal","arg":"1.0"}}]}}', "context.a.b[0].__extn"),
    (b'{"\\u005f_expr":"1"}', "context.__expr"),            # escaped in the text
    (b'{"a":{"__extn":null}}', "context.a.__extn")])
def test_cedar_escape_keys_are_refused_at_any_depth(text: bytes, field: str) -> None:
    assert _refused(_raw(text)).field == field
    attrs = _raw(resource={"type": "Email", "id": "e", "attributes": {"x": "@A@"}})
    attrs = attrs.replace(b'"@A@"', text)
    assert _refused(attrs).field == field.replace("context", "resource.attributes.x", 1)


def test_escape_words_as_values_are_plain_strings(engine: PolicyEngine) -> None:
    context = {"k": "__extn", "list": ["__entity"], "__typename": "Ticket"}
    request = decode_request(orjson.dumps(_obj(context)))
    assert to_cedar(request.context) is request.context      # nothing becomes an escape
    assert engine.decide(request).codes == [rc.NO_PERMIT]     # decided, no score: no permit
    # Cedar itself reads such values as the strings they are
    cedar_request = {"principal": {"type": "Agent", "id": "a"},
                     "action": {"type": "Action", "id": "x"},
                     "resource": {"type": "Email", "id": "e"},
                     "context": orjson.dumps(context).decode()}
    policy = 'permit (principal, action, resource) when { context.k == "__extn" && ' \
             'context.list.contains("__entity") && context.__typename == "Ticket" };'
    [answer] = cedarpy.is_authorized_batch([cedar_request], policy, "[]")
    assert answer.allowed and not answer.diagnostics.errors


# ------------------------------------------------------- 4. duplicates --

_SPACED = b'{ "schema_version" : 1 , "request_id" : "%s" , "agent_id" : "support-bot-1" , ' \
          b'"action" : "send_email" , "resource" : { "type" : "Email" , "id" : "e" } , ' \
          b'"context" : %s , "occurred_at" : 1790000000 }'


@pytest.mark.parametrize("raw, field", [
    (_raw(b"{}")[:-1] + b',"context":{}}', "context"),                       # SDK-like
    (_raw(b'{"amount":1,"amount":100000}'), "context.amount"),
    (_raw(b'{"a":[{"k":1},{"k":1,"k":2}]}'), "context.a[1].k"),
    (orjson.dumps(_obj({"amount": 1}), option=orjson.OPT_INDENT_2).replace(
        b'"amount": 1', b'"amount": 1,\n    "amount": 2'), "context.amount"),  # pretty
    (_SPACED % (RID.encode(), b'{ "a" : 1 , "a" : 2 }'), "context.a"),          # spaced colons
    (_raw(b'{"a":1,"\\u0061":2}'), "context.a")])                            # escaped twin
def test_duplicate_keys_are_refused_at_any_depth(raw: bytes, field: str) -> None:
    err = _refused(raw)
    assert err.field == field and "twice" in err.message


@pytest.mark.parametrize("raw", [
    _raw(b'{"q":"say \\":\\" twice","a":1}'),               # `":` inside a string
    _SPACED % (RID.encode(), b'{ "a" : 1 , "b" : { "a" : 2 } }'),
    orjson.dumps(_obj({"a": {"a": {"a": 1}}}), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)])
def test_repeated_names_in_different_objects_are_fine(raw: bytes) -> None:
    decode_request(raw)


# --------------------------------------------- 3. lone surrogates, keys --

def _runner(engine: PolicyEngine) -> Runner:
    snapshot = Snapshot(engine=engine, policy_version="v", signals=SignalComputer(),
                        recovery_hold=60.0, partitions=PARTS)
    return Runner(snapshot=snapshot, store=MemoryStore(), partitions=PARTS,
                  signer=Signer.generate())


def _verdicts(runner: Runner, raw: RawRecord) -> list[dict[str, Any]]:
    out = runner.run([raw], decided_at=1_790_000_000.5)
    return [orjson.loads(v.value) for v in out.verdicts]


@pytest.mark.parametrize("value", [
    # keys sorted (Go's encoding/json): the context's own request_id comes first
    b'{"action":"send_email","agent_id":"support-bot-1","context":{"note":"\\ud800",'
    b'"request_id":"11111111-2222-4333-8444-555555555555"},"occurred_at":1790000000,'
    b'"request_id":"%s","resource":{"id":"e","type":"Email"},"schema_version":1}' % RID.encode(),
    # the field name escaped, as some encoders write it
    _raw(b'{"note":"\\udc00"}').replace(b'"request_id"', b'"request\\u005fid"')])
def test_a_lone_surrogate_still_denies_the_waiting_request(engine: PolicyEngine,
                                                           value: bytes) -> None:
    part = partition_for("support-bot-1", PARTS)
    raw = RawRecord(key=b"support-bot-1", value=value, partition=part, offset=0,
                    timestamp=1_790_000_000.0)
    assert recover_identity(value, raw.key) == (RID, "support-bot-1")
    [verdict] = _verdicts(_runner(engine), raw)
    assert verdict["request_id"] == RID and verdict["decision"] == "deny"
    assert verdict["reasons"][0]["code"] == rc.MALFORMED
    assert "surrogate" in verdict["reasons"][0]["message"]


def test_a_surrogate_inside_the_request_id_cannot_be_answered() -> None:
    value = _raw().replace(RID.encode(), b"\\ud800" + RID.encode()[6:])
    assert recover_identity(value, b"support-bot-1") is None


def test_a_keyless_record_on_the_right_partition_is_refused(engine: PolicyEngine) -> None:
    value = orjson.dumps(_obj({"spam_score": 0.1}))
    part = partition_for("support-bot-1", PARTS)
    for key in (None, b""):
        [verdict] = _verdicts(_runner(engine), RawRecord(key=key, value=value, partition=part,
                                                         offset=0, timestamp=1_790_000_000.0))
        assert verdict["request_id"] == RID and verdict["reasons"][0]["code"] == rc.MALFORMED
        assert "record key must be the agent_id" in verdict["reasons"][0]["message"]
    # a history file carries no routing: its records are decided as before
    action = decode(RawRecord(key=None, value=value, partition=0, offset=None),
                    partitions=PARTS)
    assert not isinstance(action, Rejected)


# ------------------------------------------- 2. validator == JSON Schema --

def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_lone_surrogates(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")                           # UnicodeEncodeError is a ValueError
    elif isinstance(value, list):
        for item in value:
            _no_lone_surrogates(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_lone_surrogates(key)
            _no_lone_surrogates(item)


def reference_accepts(raw: bytes) -> bool:
    """Strict JSON (RFC 8259 + I-JSON: UTF-8, no NaN, no duplicate or lone-surrogate
    strings) and the published JSON Schema, read by Python's json and jsonschema."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats,
                         parse_constant=_no_constant)
        _no_lone_surrogates(obj)
    except ValueError:
        return False
    return VALIDATOR.is_valid(obj)


def holdgate_accepts(raw: bytes) -> bool:
    try:
        decode_request(raw)
    except ValidationError:
        return False
    return True


def _nest(depth: int, leaf: bytes) -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def _field(name: str, value: Any) -> bytes:
    return orjson.dumps(_obj(**{name: value}))


CORPUS: list[bytes] = [
    *(_raw(b'{"n":%s}' % t) for t in (
        b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
        b"-9223372036854775809", b"18446744073709551615", b"18446744073709551616",
        b"99999999999999999999999", b"1e2", b"1E2", b"12.0", b"-0.0", b"-0", b"0.1", b"1e-7",
        b"0.00001", b"1e15", b"1e18", b"1.5e18", b"9.2233720368547758e18",
        b"-9.223372036854775808e18", b"9223372036854774784.5", b"922337203685477.5",
        b"922337203685477.6", b"-922337203685477.6", b"4503599627370495.5", b"1e308",
        b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-Infinity", b"true", b'""',
        b'"\\u0000"', b'"\\u00e9\\ud83d\\ude00"', b'"\\ud800"', b'"\\udc00x"', b'"\xed\xa0\x80"',
        b"null", b"[null]", b'[{"x":null}]', b'{"x":null}', b"[]", b"{}", b"[1,2.5,\"s\"]")),
    _raw(b'{"":1}'), _raw(b'{"%s":1}' % (b"k" * 10_000)),
    _raw(_nest(7, b"1")), _raw(_nest(8, b"{}")), _raw(_nest(8, b"1")), _raw(_nest(8, b"null")),
    _raw(b'{"__entity":{"type":"A","id":"a"}}'), _raw(b'{"a":[{"__extn":{}}]}'),
    _raw(b'{"\\u005f_extn":1}'), _raw(b'{"k":"__extn","__typename":"X"}'),
    _raw(b'{"signals":null}'), _raw(b'{"approval":{}}'), _raw(b'{"a":{"signals":1}}'),
    _raw(b'{"a":1,"a":2}'), _raw(b'{"a":{"b":1,"b":1}}'),
    _raw(b"null"), _raw(b"[]"),
    _field("deadline", None), _field("deadline", 1_790_000_001), _field("deadline", "soon"),
    _field("schema_version", True), _field("schema_version", 1.0), _field("schema_version", 2),
    _field("occurred_at", 1e2), _field("occurred_at", True), _field("occurred_at", 1e11),
    _field("request_id", RID.replace("-", "")), _field("request_id", f"{{{RID}}}"),
    _field("request_id", RID + "\n"), _field("request_id", RID.upper()),
    _field("agent_id", ""), _field("agent_id", "a" * 128), _field("agent_id", "a" * 129),
    _field("agent_id", "support-bot-1\n"), _field("agent_id", None),
    *(_field("action", a) for a in ("send_email", "getWeather", "a" * 128, "a" * 129, "a..b",
                                    "send_email\n", "", "-x", "x-")),
    *(_field("resource", r) for r in (
        {"type": "Email", "id": ""}, {"type": "Email", "id": "x" * 256},
        {"type": "Email", "id": "x" * 257}, {"type": "Email", "id": "\U0001F600" * 256},
        {"type": "E" * 64, "id": "x"}, {"type": "E" * 65, "id": "x"},
        {"type": "Email\n", "id": "x"}, {"type": "email", "id": "x"},
        {"type": "Email", "id": "x", "attributes": None},
        {"type": "Email", "id": "x", "attributes": {"a": None, "b": 1.5}},
        {"type": "Email", "id": "x", "attributes": []}, {"type": "Email", "id": "x", "z": 1})),
    _field("context", None), _field("context", []), _field("surprise", None),
]


@pytest.mark.parametrize("raw", CORPUS, ids=[f"{i}:{r[-60:]!r}" for i, r in enumerate(CORPUS)])
def test_decoder_and_json_schema_agree(raw: bytes) -> None:
    assert holdgate_accepts(raw) == reference_accepts(raw)


def _random_number(rng: random.Random) -> bytes:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 22))).lstrip("0")
    text = rng.choice(["", "-"]) + (digits or "0")
    if rng.random() < 0.6:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
    if rng.random() < 0.5:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 420))
    return text.encode()


_PIECES = ["a", "é", "\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\u0000", "\\n", '\\"',
           "\\\\", "__extn", "\\u005f", ":", '\\":', " ", "\U0001F600", "\\/"]


def _random_string(rng: random.Random) -> bytes:
    return ('"' + "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 6))) + '"').encode()


def test_decoder_and_json_schema_agree_on_random_numbers_and_strings() -> None:
    rng = random.Random(20_261_129)
    for _ in range(1500):
        number = _random_number(rng)
        raw = _raw(b'{"n":%s,"m":[%s]}' % (number, number))
        assert holdgate_accepts(raw) == reference_accepts(raw), number
    for _ in range(1500):     # keys and values: escapes, surrogates, Cedar words, repeats
        key, other, value = (_random_string(rng) for _ in range(3))
        raw = _raw(b"{%s:%s,%s:{%s:1}}" % (key, value, other, key))
        assert holdgate_accepts(raw) == reference_accepts(raw), raw


def test_the_corpus_covers_both_answers() -> None:
    answers = [holdgate_accepts(raw) for raw in CORPUS]
    assert 30 < sum(answers) < len(answers) - 30


@pytest.mark.parametrize("raw", [
    orjson.dumps(_obj(deadline=1_789_999_999.0)),           # before occurred_at
])
def test_what_the_schema_cannot_state_is_named_in_its_description(raw: bytes) -> None:
    assert reference_accepts(raw) and not holdgate_accepts(raw)
    assert "deadline before occurred_at" in SCHEMA["description"]


def test_sdk_bytes_and_uuid_forms_round_trip() -> None:
    request = ActionRequest.create(agent_id="support-bot-1", action="send_email",
                                   resource={"type": "Email", "id": "e"},
                                   context={"score": 0.5, "cc": None, "n": 10**18},
                                   request_id=str(uuid.uuid4()))
    assert request.context == {"score": 0.5, "n": 10**18}
    assert reference_accepts(encode(request)) and decode_request(encode(request)) == request
