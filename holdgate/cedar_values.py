"""What a value in an action's ``context`` or resource ``attributes`` may be, and what it
means to Cedar.

These values reach Cedar, so they are restricted to what Cedar can hold and
checked here, at the exact path, before Cedar sees them (a bad value would
otherwise surface as a policy evaluation error far from its cause):

==================  =====================================================
JSON                Cedar
==================  =====================================================
string, boolean     String, Bool
integer literal     Long; must fit 64 bits (-2**63 .. 2**63-1)
number with a       decimal (``decimal("12.5")``), when its magnitude is at most
fraction or         :data:`DECIMAL_LIMIT`; read as an IEEE-754 double (as orjson,
exponent            JavaScript and the JSON Schema validators of those languages
                    read it), then its shortest representation is rounded
                    half-to-even to 4 fractional digits.  Beyond the decimal
                    range only integral values exist (every double above 2**52
                    is one): such a value is the Long it equals if it fits 64
                    bits, otherwise it is refused.
array               Set (its elements are checked the same way; null is
                    refused in an array: it has no meaning there)
object              Record
null                the member is absent (``context has x`` is false): at any
                    depth of a record, the key is dropped from the decoded view
==================  =====================================================

A Cedar type follows the JSON text, not the value: ``12`` is a Long and
``12.0`` a decimal, and a policy comparing one with the other's operators
(``context.amount_cents > 500`` on ``500.5``) fails to evaluate, which holdgate
turns into a ``POLICY_ERROR`` deny: a number of the wrong kind can never open a
door.  Policies read decimals with ``decimal("0.5")`` and ``.lessThan()``,
``.greaterThanOrEqual()``, ...

Why round rather than refuse a fifth fractional digit: JSON Schema cannot state
a number of fractional digits (``multipleOf: 0.0001`` is float arithmetic in its
validators, where 0.3 fails it), so a refusal could not be published in the
schema other runtimes validate against; and agent frameworks send scores such
as 0.87345213 whose fifth digit no policy needs.  The price: a policy decides at
a resolution of 0.0001 and can miss a threshold by less than 0.00005, so
amounts that must be exact belong in integer minor units (``amount_cents``).

Cedar's JSON escapes (``__entity``, ``__extn``, ``__expr``) are refused as keys
at every depth: an agent could otherwise forge an entity reference or an
extension value.  Strings that merely *contain* such a word are plain strings
to Cedar and are accepted.  The only ``__extn`` a request ever carries is the
one :func:`to_cedar` writes for a decimal.
"""
from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import Any

from holdgate.errors import ValidationError

__all__ = [
    "CEDAR_ESCAPES",
    "DECIMAL_LIMIT",
    "DECIMAL_PLACES",
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "Reread",
    "cedar_record",
    "decimal_arg",
    "to_cedar",
]

MAX_DEPTH = 8
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
#: Largest magnitude of a JSON number with a fraction or an exponent that becomes a Cedar
#: decimal.  Cedar's range is +-922337203685477.5807 (a 64-bit count of ten-thousandths);
#: this is the largest double inside it, an exact binary fraction, so every JSON Schema
#: validator compares against exactly this value.
DECIMAL_LIMIT = 922337203685477.5
DECIMAL_PLACES = 4
CEDAR_ESCAPES = frozenset({"__entity", "__extn", "__expr"})

_QUANTUM = decimal.Decimal(1).scaleb(-DECIMAL_PLACES)
_DECIMAL_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
_SCALARS = (str, bool)


class Reread(Exception):
    """A float beyond the decimal range was parsed by orjson, which reads an integer
    literal beyond 64 bits as a double: the record must be read again exactly
    (:func:`holdgate.wire_json.loads_exact`) before the value can be judged."""


def _fail(path: str, message: str) -> ValidationError:
    return ValidationError(path, message)


def cedar_record(record: Mapping[str, Any], path: str, *, wire: bool = False,
                 depth: int = 0) -> Any:
    """Check a record (context, attributes) and return its decoded view.

    The view is ``record`` itself when nothing changes (the common case, no
    copy); otherwise a copy without the null members, with integral numbers
    beyond the decimal range as ints.  ``wire``: the record was parsed by
    orjson, whose floats beyond the decimal range may be rounded integer
    literals (raises :class:`Reread`).
    """
    if depth >= MAX_DEPTH and record:
        raise _fail(f"{path}.{next(iter(record))}", _TOO_DEEP)
    copy: dict[str, Any] | None = None
    for key, item in record.items():
        if type(key) is not str:
            raise _fail(f"{path}.{key!r}", "keys must be strings")
        if key in CEDAR_ESCAPES:
            # Cedar's JSON escapes would let an agent forge an entity reference or an
            # extension value, or make Cedar fail on a key no policy reads.
            raise _fail(f"{path}.{key}", "is a Cedar escape form; agents may not send "
                                         "entity references or extension values")
        kind = type(item)
        if kind is str or kind is bool:
            continue
        if kind is int:
            if not INT_MIN <= item <= INT_MAX:
                raise _fail(f"{path}.{key}", _INT_RANGE)
            continue
        if item is None:    # null: the key is absent
            if copy is None:
                copy = dict(record)
            del copy[key]
            continue
        mapped = _cedar_value(item, f"{path}.{key}", depth + 1, wire)
        if mapped is not item:
            if copy is None:
                copy = dict(record)
            copy[key] = mapped
    return record if copy is None else copy


_INT_RANGE = f"integer outside Cedar's 64-bit range ({INT_MIN}..{INT_MAX})"
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def _cedar_value(value: Any, path: str, depth: int, wire: bool) -> Any:
    """One value at `depth` (its record's members are at depth + 1)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _fail(path, _INT_RANGE)
        return value
    if isinstance(value, float):
        return _number(value, path, wire)
    if isinstance(value, dict):
        return cedar_record(value, path, wire=wire, depth=depth)
    if isinstance(value, list):
        if depth >= MAX_DEPTH and value:
            raise _fail(f"{path}[0]", _TOO_DEEP)
        items: list[Any] | None = None
        for index, item in enumerate(value):
            if item is None:
                raise _fail(f"{path}[{index}]", "null in a list has no meaning in Cedar; "
                                                "leave the element out")
            mapped = _cedar_value(item, f"{path}[{index}]", depth + 1, wire)
            if mapped is not item:
                if items is None:
                    items = list(value)
                items[index] = mapped
        return value if items is None else items
    if value is None:
        raise _fail(path, "null is not allowed here; omit the key instead")
    raise _fail(path, f"unsupported type {type(value).__name__}")


def _number(value: float, path: str, wire: bool) -> float | int:
    if -DECIMAL_LIMIT <= value <= DECIMAL_LIMIT:
        return value
    if math.isnan(value):   # never from the wire (orjson refuses NaN); from the SDK, maybe
        raise _fail(path, "NaN is not a number Cedar can hold")
    if wire:
        raise Reread(path)
    if not value.is_integer():
        raise _fail(path, f"number {value!r} is outside Cedar's decimal range "
                          f"(+-{DECIMAL_LIMIT})")
    if not INT_MIN <= value <= INT_MAX:
        raise _fail(path, f"number {value!r} is outside Cedar's 64-bit integer range "
                          f"({INT_MIN}..{INT_MAX})")
    return int(value)


def decimal_arg(value: float) -> str:
    """The Cedar ``decimal("...")`` text for a number within :data:`DECIMAL_LIMIT`.

    The double's shortest representation, rounded half-to-even to 4
    fractional digits, in Cedar's grammar (``-?[0-9]+\\.[0-9]{1,4}``, never an
    exponent); negative zero is ``0.0`` (Cedar has one zero).
    """
    if not -DECIMAL_LIMIT <= value <= DECIMAL_LIMIT:
        raise ValueError(f"{value!r} is outside Cedar's decimal range")
    exact = _DECIMAL_CONTEXT.quantize(decimal.Decimal(repr(value)), _QUANTUM)
    if not exact:
        return "0.0"
    text = format(exact, "f").rstrip("0")
    return text + "0" if text.endswith(".") else text


def to_cedar(value: Any) -> Any:
    """A decoded context or attribute record as Cedar's JSON reads it.

    Every float becomes ``{"__extn": {"fn": "decimal", "arg": ...}}``; the
    record comes back unchanged (the same object) when it holds no float, so
    the common request pays one pass and no copy.
    """
    kind = type(value)
    if kind is float:
        return {"__extn": {"fn": "decimal", "arg": decimal_arg(value)}}
    if kind is dict:
        copy: dict[str, Any] | None = None
        for key, item in value.items():
            if type(item) in _MAPPED:
                mapped = to_cedar(item)
                if mapped is not item:
                    if copy is None:
                        copy = dict(value)
                    copy[key] = mapped
        return value if copy is None else copy
    if kind is list:
        items: list[Any] | None = None
        for index, item in enumerate(value):
            if type(item) in _MAPPED:
                mapped = to_cedar(item)
                if mapped is not item:
                    if items is None:
                        items = list(value)
                    items[index] = mapped
        return value if items is None else items
    return value


_MAPPED = (float, dict, list)
