"""`fast_init` must build exactly what the dataclass's own ``__init__`` builds."""
from __future__ import annotations

import dataclasses
import inspect
import random
from dataclasses import FrozenInstanceError, InitVar, dataclass, field
from typing import Any, ClassVar

import pytest

from holdgate.events import ActionRequest, Resource
from holdgate.fastinit import fast_init
from holdgate.stream.core import Action, Decision
from holdgate.stream.edges import Outgoing, RawRecord

HOT = (Resource, ActionRequest, Action, Decision, RawRecord, Outgoing)


class Base:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Plain(Base):
    a: int
    b: str
    c: float | None = None
    d: dict[str, Any] = field(default_factory=dict)
    e: tuple[int, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Fast(Base):           # Plain again, with the fast __init__
    a: int
    b: str
    c: float | None = None
    d: dict[str, Any] = field(default_factory=dict)
    e: tuple[int, ...] = ()


def _values(cls: type, rng: random.Random) -> list[Any]:
    return [rng.random() for _ in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_the_hot_classes_keep_their_signature_and_store_every_field(cls: type) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty
    values = _values(cls, random.Random(7))
    for obj in (cls(*values), cls(**{f.name: v for f, v in zip(fields, values)})):
        assert [getattr(obj, f.name) for f in fields] == values
        with pytest.raises(FrozenInstanceError):
            setattr(obj, fields[0].name, 1)
        assert dataclasses.replace(obj, **{fields[0].name: "x"}) != obj
        assert hash(obj) == hash(cls(*values))


def test_defaults_and_factories_match_the_generated_init() -> None:
    assert Fast(1, "b") == Fast(1, "b")
    slow, fast = Plain(1, "b"), Fast(1, "b")
    assert [getattr(fast, f.name) for f in dataclasses.fields(Fast)] == \
        [getattr(slow, f.name) for f in dataclasses.fields(Plain)]
    assert Fast(1, "b").d is not Fast(1, "b").d          # a fresh dict each time
    given: dict[str, Any] = {"k": 1}
    assert Fast(1, "b", d=given).d is given
    assert Fast(1, "b", 2.0, given, (3,)).e == (3,)


@pytest.mark.parametrize("call", [
    lambda: Fast(1),
    lambda: Fast(1, "b", 2.0, {}, (), 9),
    lambda: Fast(1, "b", z=3),
    lambda: Fast(1, "b", a=2),
])
def test_wrong_arguments_fail_as_with_the_generated_init(call: Any) -> None:
    with pytest.raises(TypeError):
        call()


def test_a_class_it_cannot_serve_is_refused_at_decoration() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int]

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True, slots=True)
    class WithClassVar:
        a: int
        b: ClassVar[int] = 1

    @dataclass(frozen=True, slots=True)
    class NoInit:
        a: int
        b: int = field(init=False, default=0)

    for cls in (NoSlots, NotFrozen, PostInit, WithInitVar, KwOnly, WithClassVar, NoInit, int):
        with pytest.raises(TypeError):
            fast_init(cls)
