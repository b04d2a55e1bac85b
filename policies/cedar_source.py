"""Where in a Cedar text an error is, when Cedar's message does not say.

cedarpy (4.x) hands parse and validation errors over as bare strings: the
source spans Cedar keeps internally do not cross the binding, and validation
errors name policies by their positional ids (``policy3``).  A bundle author
needs ``policy.cedar:41:17``, so this module finds the place itself:

* a *syntax* error is found by parsing growing prefixes of the text (binary
  search over token boundaries).  Cedar's parser is LR, so a prefix is free of
  errors exactly until it holds the offending token;
* a *semantic* error (an unknown function, a bad escape) is found by
  searching, in the first statement that fails alone, what Cedar's message
  quotes.  Validation errors are :mod:`holdgate.policies.validation_errors`'.

Positions are character offsets into the text; :class:`holdgate.policies.
diagnostics.TextFile` turns them into line and column.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "PolicySource",
    "Token",
    "blank_comments",
    "locate_snippet",
    "locate_syntax_error",
    "matching",
    "quoted_snippets",
    "split_policies",
    "tokenize",
]

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"[0-9]+")
_TWO_CHAR = frozenset({"::", "==", "!=", "<=", ">=", "&&", "||"})
_EOF = "unexpected end of input"
#: Appended to a prefix: Cedar's parser recovers at `;`, so a prefix with an
#: error reports that error (its first one), and a prefix without one reports
#: only the sentinel (or parses).
_SENTINEL = "\n;"
_AT_SEMICOLON = "unexpected token `;`"
_QUOTED_RE = re.compile(r"`([^`]+)`")
_AFTER_COLON_RE = re.compile(r":\s+(@?[A-Za-z_][A-Za-z0-9_]*)\s*$")

Parse = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: ``kind`` is ident, int, str, op or bad (unlexable)."""

    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where one policy statement lies: Cedar's ``policy<index>`` is the index-th."""

    index: int
    start: int                               # its first token (an annotation or the effect)
    effect: int                              # `permit` / `forbid`
    head: tuple[int, int]                    # "(" .. ")" of the scope, end exclusive
    conditions: tuple[tuple[int, int], ...]  # bodies of when/unless, braces excluded
    end: int                                 # just past its `;`
    tokens: tuple[Token, ...]


def tokenize(text: str) -> list[Token]:
    """Cedar (policy or schema) tokens with offsets; ``//`` comments are skipped."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:                       # unterminated: the rest is one bad token
                tokens.append(Token("bad", text[i:], i, n))
                break
            tokens.append(Token("str", text[i:j + 1], i, j + 1))
            i = j + 1
        elif m := _IDENT_RE.match(text, i):
            tokens.append(Token("ident", m.group(), i, m.end()))
            i = m.end()
        elif m := _INT_RE.match(text, i):
            tokens.append(Token("int", m.group(), i, m.end()))
            i = m.end()
        else:
            width = 2 if text[i:i + 2] in _TWO_CHAR else 1
            tokens.append(Token("op", text[i:i + width], i, i + width))
            i += width
    return tokens


def split_policies(text: str) -> list[PolicySource]:
    """The policy statements of a text that Cedar parses, in Cedar's order."""
    out: list[PolicySource] = []
    current: list[Token] = []
    for token in tokenize(text):
        current.append(token)
        if token.kind == "op" and token.text == ";":
            out.append(_policy_source(len(out), current))
            current = []
    if current:                              # no `;`: only for text Cedar rejected
        out.append(_policy_source(len(out), current))
    return out


def _policy_source(index: int, tokens: list[Token]) -> PolicySource:
    i = 0
    while i < len(tokens) and tokens[i].text == "@":      # @name or @name("value")
        i += 2
        if i < len(tokens) and tokens[i].text == "(":
            i = matching(tokens, i) + 1
    effect = tokens[min(i, len(tokens) - 1)]
    head_open = i + 1 if i + 1 < len(tokens) and tokens[i + 1].text == "(" else None
    head = (effect.start, effect.end)
    conditions: list[tuple[int, int]] = []
    if head_open is not None:
        close = matching(tokens, head_open)
        head = (tokens[head_open].start, tokens[min(close, len(tokens) - 1)].end)
        j = close + 1
        while j + 1 < len(tokens) and tokens[j].text in ("when", "unless") \
                and tokens[j + 1].text == "{":
            end = matching(tokens, j + 1)
            if end >= len(tokens):
                break
            conditions.append((tokens[j + 1].end, tokens[end].start))
            j = end + 1
    return PolicySource(index=index, start=tokens[0].start, effect=effect.start, head=head,
                        conditions=tuple(conditions), end=tokens[-1].end, tokens=tuple(tokens))


def matching(tokens: Sequence[Token], open_index: int) -> int:
    """Index of the bracket closing ``tokens[open_index]`` (len(tokens) if none)."""
    depth = 0
    for j in range(open_index, len(tokens)):
        text = tokens[j].text if tokens[j].kind == "op" else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return j
    return len(tokens)


# ------------------------------------------------------------ syntax errors --

def _error(parse: Parse, text: str) -> str | None:
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    return None


def _strip_prefix(message: str) -> str:
    return message.removeprefix("error parsing schema: ")


def _holds_error(parse: Parse, prefix: str) -> str | None:
    """Cedar's message if ``prefix`` already holds an error (other than a stray `;`)."""
    message = _error(parse, prefix + _SENTINEL)
    if message is None or _strip_prefix(message) in (_EOF, _AT_SEMICOLON):
        return None
    return message


def locate_syntax_error(text: str, parse: Parse, message: str, *,
                        statements: bool = True) -> tuple[int, str]:
    """(offset, message) of the first error in ``text``, which ``parse`` rejects.

    ``message`` is Cedar's error for the whole text; the returned message is
    the one for the first error (the same unless the text holds several).
    ``statements``: the text is a sequence of independent ``;``-terminated
    statements (policies; not a schema, whose declarations refer to each other).
    """
    tokens = tokenize(text)
    if not tokens:
        return 0, message
    core = _strip_prefix(message)
    if not core.startswith(("unexpected token", "invalid token", _EOF)):
        # Cedar checks names, escapes and literals once the text parses: look
        # for what the message quotes, in the first statement that fails alone.
        start, end = 0, len(text)
        if statements:
            for source in split_policies(text):
                found = _error(parse, text[source.start:source.end])
                if found is not None:
                    start, end, message = source.start, source.end, found
                    break
        first = next((t.start for t in tokens if t.start >= start), start)
        return locate_snippet(text, start, end, message, default=first), message
    if core == _AT_SEMICOLON:
        # Cedar shows the first error: a `;` where none may be.  The first `;`
        # whose prefix fails on its own is it (a prefix that ends a policy parses).
        for token in tokens:
            if token.text == ";" and _error(parse, text[:token.end]) is not None:
                return token.start, message
    hi = len(tokens) - 1
    if _holds_error(parse, text[:tokens[hi].end]) is None:
        # every token fits: the text just stops (a missing `;` or `}`)
        return tokens[-1].end, message
    lo = 0
    while lo < hi:                           # smallest prefix that holds an error
        mid = (lo + hi) // 2
        if _holds_error(parse, text[:tokens[mid].end]) is None:
            lo = mid + 1
        else:
            hi = mid
    return tokens[lo].start, _holds_error(parse, text[:tokens[lo].end]) or message


def quoted_snippets(message: str) -> list[str]:
    """What an error message quotes: `backticked` parts, else a trailing ``: name``."""
    found = _QUOTED_RE.findall(message)
    tail = _AFTER_COLON_RE.search(message)
    if tail:
        found.append(tail.group(1))
    return found


def locate_snippet(text: str, start: int, end: int, message: str, *, default: int) -> int:
    """Offset of the first thing ``message`` quotes within text[start:end], else ``default``.

    Comments are ignored; a word is matched as a whole word; for a duplicate
    the second occurrence is the offending one.
    """
    region = blank_comments(text[start:end])
    for snippet in reversed(quoted_snippets(message)):     # the last is the most specific
        pattern = re.escape(snippet)
        if snippet[:1].isalnum() or snippet[:1] == "_":
            pattern = r"(?<![A-Za-z0-9_])" + pattern
        if snippet[-1:].isalnum() or snippet[-1:] == "_":
            pattern += r"(?![A-Za-z0-9_])"
        if "declared twice" in message:      # a schema declaration, not a use
            pattern = r"(?<![A-Za-z0-9_])(?:entity|type|action)\s+\"?" + pattern
        hits = [m.start() for m in re.finditer(pattern, region)]
        if hits:
            twice = "duplicate" in message or "declared twice" in message
            pick = hits[1] if twice and len(hits) > 1 else hits[0]
            return start + pick
    return default


def blank_comments(text: str) -> str:
    """``text`` with ``//`` comments (outside strings) replaced by spaces: offsets kept."""
    out = list(text)
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        i += 1
    return "".join(out)
