"""Bundle problems as compilers print them: ``path:line:col: what is wrong (what to do)``.

One line per problem, so an editor or CI annotator can jump to it, and the
CLI can print them one by one (``holdgate policy validate``) the way ``opa
check`` or a compiler does.  A bundle that cannot load raises
:class:`BundleProblems`, a :class:`~holdgate.errors.PolicyError` that also
carries the problems as a tuple.

JSON files (entities, cases) have no Cedar to ask for positions, so
:func:`json_positions` maps every key and value of a parsed document back to
its offset in the text.
"""
from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from holdgate.errors import PolicyError

__all__ = [
    "BundleProblems",
    "JsonPositions",
    "Problem",
    "TextFile",
    "json_positions",
    "json_syntax_problem",
]

_WS_RE = re.compile(r"[ \t\n\r]*")
_SCALAR_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (file, 1-based line and column, if known) and what."""

    file: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.message}"


class BundleProblems(PolicyError):
    """A bundle (or its cases) refused for ``problems``, each one printable line."""

    def __init__(self, where: str, problems: Iterable[Problem | str], *,
                 what: str = "cannot load policy bundle") -> None:
        self.where = where
        self.problems: tuple[Problem | str, ...] = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{what} {where}:\n{lines}")

    @property
    def lines(self) -> list[str]:
        """The problems as they are printed, one line each."""
        return [str(p) for p in self.problems]


class TextFile:
    """A file's text and the name it is shown by; turns offsets into positions."""

    __slots__ = ("_starts", "name", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    @classmethod
    def in_bundle(cls, root: Path | None, file: str, text: str) -> TextFile:
        """Shown as ``<bundle>/<file>`` when the bundle is a folder, else ``<file>``."""
        return cls(str(root / file) if root is not None else file, text)

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        index = bisect.bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1

    def at(self, offset: int | None, message: str) -> Problem:
        """A problem at ``offset`` (None: the file as a whole); messages stay one line."""
        message = " ".join(message.split("\n"))
        if offset is None:
            return Problem(self.name, None, None, message)
        line, column = self.position(offset)
        return Problem(self.name, line, column, message)


def json_syntax_problem(file: TextFile, exc: json.JSONDecodeError) -> Problem:
    """``file:line:col: invalid JSON: ...`` for a parse error."""
    return Problem(file.name, exc.lineno, exc.colno,
                   f"invalid JSON: {exc.msg} (fix the syntax at this position)")


@dataclass(frozen=True, slots=True)
class JsonPositions:
    """Offsets of a JSON document's values (``values``) and of object keys (``keys``)."""

    values: dict[JsonPath, int]
    keys: dict[JsonPath, int]

    def of(self, path: JsonPath, *, key: bool = True) -> int | None:
        """Where ``path`` is written: its key if it has one (``key``), else its value;
        falling back to the nearest enclosing element that is there."""
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


def json_positions(text: str) -> JsonPositions:
    """Positions of everything in ``text``, a JSON document that ``json.loads`` accepts.

    Whatever cannot be scanned (it should not happen for valid JSON) is left out.
    """
    values: dict[JsonPath, int] = {}
    keys: dict[JsonPath, int] = {}

    def skip(i: int) -> int:
        return _WS_RE.match(text, i).end()  # type: ignore[union-attr]

    def value(i: int, path: JsonPath) -> int:
        i = skip(i)
        values[path] = i
        ch = text[i:i + 1]
        if ch == "{":
            i = skip(i + 1)
            if text[i:i + 1] == "}":
                return i + 1
            while True:
                i = skip(i)
                key_at = i
                key, i = scanstring(text, i + 1)
                keys[path + (key,)] = key_at
                i = skip(i) + 1                         # past ":"
                i = skip(value(i, path + (key,)))
                if text[i:i + 1] != ",":
                    return i + 1                        # past "}"
                i += 1
        if ch == "[":
            i = skip(i + 1)
            if text[i:i + 1] == "]":
                return i + 1
            index = 0
            while True:
                i = skip(value(i, path + (index,)))
                index += 1
                if text[i:i + 1] != ",":
                    return i + 1                        # past "]"
                i += 1
        if ch == '"':
            return int(scanstring(text, i + 1)[1])
        m = _SCALAR_RE.match(text, i)
        if m is None:
            raise ValueError(f"unexpected JSON at offset {i}")
        return m.end()

    try:
        value(0, ())
    except (ValueError, IndexError, RecursionError):
        pass
    return JsonPositions(values, keys)


def describe(value: Any) -> str:
    """A short rendering of a JSON value for a message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
