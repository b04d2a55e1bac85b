"""A faster ``__init__`` for the frozen dataclasses the hot path builds for every action.

Why: a frozen dataclass's generated ``__init__`` stores each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup
and a generic call that finds the slot by name.  The worker builds five of them
per action (the record as read, the request, its resource, the action and the
decision: 45 fields), about a tenth of the runner's time in a profile of
``bench/decide.py``.  With ``slots=True`` every field is a member descriptor, and
calling that descriptor's own ``__set__`` stores the value directly: the same
store, some 40 % cheaper.

Only ``__init__`` is replaced, with the same parameters, order and defaults as
the generated one; the class stays frozen (``__setattr__`` still raises), and
``__eq__``, ``__hash__``, ``__repr__`` and `dataclasses.replace` are the
dataclass's own.  Classes with ``__post_init__``, ``InitVar``, ``init=False`` or
keyword-only fields are refused rather than half supported.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T", bound=type)

_FACTORY = object()     # the default of a field with a default_factory: "not given"


def fast_init(cls: T) -> T:
    """Give the frozen, slotted dataclass `cls` an ``__init__`` that sets its slots directly."""
    # A programming error, found at import: TypeError, as dataclasses itself raises.
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init needs a frozen dataclass with slots, not {cls!r}")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__: keep the generated __init__")
    fields = dataclasses.fields(cls)
    if len(fields) != len(cls.__dataclass_fields__):   # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} has InitVar or ClassVar pseudo-fields")
    if any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__} has init=False or keyword-only fields")
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(fields):
        scope[f"_set{i}"] = _slot(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_FACTORY")
            body.append(f"    if {f.name} is _FACTORY: {f.name} = _factory{i}()")
        else:
            args.append(f.name)
        body.append(f"    _set{i}(self, {f.name})")
    source = (f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"])
              + "\n")
    exec(source, scope)  # noqa: S102 - built from the class's own field names, as dataclasses does
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__dict__["__init__"].__doc__
    setattr(cls, "__init__", init)      # noqa: B010 - mypy may not see a method assigned
    return cls


def _slot(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None and hasattr(found, "__set__"):
            return found
    raise TypeError(f"{cls.__name__}.{name} is not a slot")
