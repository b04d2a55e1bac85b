"""Where in policy.cedar a Cedar *validation* error is (type errors, unknown names).

Cedar's validator names the policy (positionally, ``policy3``) and the problem,
never the place.  The place is found by re-validating parts of the policy on
their own: the scope alone (``permit (...);``), then each condition, then the
parts of a condition joined by ``||``/``&&``, inside ``!``, parentheses and
``if-then-else``, keeping the smallest part that still fails with the same
message; within it, the attribute or name the message quotes.  Only error
paths pay for it (one validation of a one-policy text per probe).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from holdgate.policies.cedar_source import (
    PolicySource,
    Token,
    blank_comments,
    locate_snippet,
    matching,
    tokenize,
)

__all__ = ["locate_validation_error", "normalize_validation"]

_POSITIONAL_ID_RE = re.compile(r"^for policy `policy\d+`,\s*")


_ATTRIBUTE_RE = re.compile(
    r"attribute `([^`]+)` (?:on entity type `[^`]+`|in context)|"
    r"optional attribute `([^`]+)`( in context)?")


def _attribute_pattern(message: str) -> str | None:
    """A regex for the attribute access a validation message is about."""
    m = _ATTRIBUTE_RE.search(message)
    if not m:
        return None
    path = (m.group(1) or m.group(2)).split(".")
    in_context = "in context" in message
    parts = [r"\bcontext"] if in_context else []
    parts += [re.escape(p) for p in path]
    body = r"\s*\.\s*".join(parts)
    return (body if in_context else r"\.\s*" + body) + r"(?![A-Za-z0-9_])"


def normalize_validation(message: str) -> str:
    """Cedar's validation message without its positional ``for policy `policyN`,``."""
    return _POSITIONAL_ID_RE.sub("", message).strip()


def locate_validation_error(text: str, policy: PolicySource, message: str,
                            validate: Callable[[str], list[str]]) -> int:
    """Offset of what a validation error of ``policy`` is about.

    ``validate`` type-checks a one-policy text and returns its normalized
    messages.  The error is narrowed to the scope or to the smallest part of a
    condition that, alone as ``when { part }``, still fails with ``message``;
    within it, to what the message quotes.
    """
    wanted = normalize_validation(message)
    head = text[policy.effect:policy.head[1]]
    region = (policy.effect, policy.end)
    if wanted in validate(head + ";"):
        region = policy.head
        if "applicable action" in wanted:
            action = next((t for t in policy.tokens if t.start >= policy.head[0]
                           and t.text == "action"), None)
            return action.start if action else policy.effect
    else:
        for start, end in policy.conditions:
            narrowed = _narrow(text, head, start, end, wanted, validate)
            if narrowed is not None:
                region = narrowed
                break
    pattern = _attribute_pattern(wanted)
    if pattern:
        hit = re.search(pattern, blank_comments(text[region[0]:region[1]]))
        if hit:
            return region[0] + hit.start() + (0 if hit.group().startswith("context") else 1)
    first = next((t.start for t in policy.tokens if t.start >= region[0]), region[0])
    return locate_snippet(text, region[0], region[1], wanted, default=first)


def _narrow(text: str, head: str, start: int, end: int, wanted: str,
            validate: Callable[[str], list[str]], depth: int = 0) -> tuple[int, int] | None:
    """The smallest (start, end) within a condition that alone reproduces ``wanted``."""
    if wanted not in validate(f"{head} when {{ {text[start:end]} }};"):
        return None
    if depth > 12:
        return start, end
    tokens = [t for t in tokenize(text[start:end])]
    if not tokens:
        return start, end
    if tokens[0].text in ("(", "!") and (tokens[0].text == "!" or
                                         matching(tokens, 0) == len(tokens) - 1):
        inner = (start + tokens[1].start, start + tokens[-1].start) if tokens[0].text == "(" \
            else (start + tokens[1].start, end) if len(tokens) > 1 else None
        if inner:
            found = _narrow(text, head, inner[0], inner[1], wanted, validate, depth + 1)
            if found:
                return found
    if tokens[0].text == "if":
        for a, b in _if_parts(tokens):
            found = _narrow(text, head, start + a, start + b, wanted, validate, depth + 1)
            if found:
                return found
        return start, end
    for op in ("||", "&&"):
        parts = _split_top(tokens, op)
        if len(parts) > 1:
            for a, b in parts:
                found = _narrow(text, head, start + a, start + b, wanted, validate, depth + 1)
                if found:
                    return found
            break
    return start, end


def _split_top(tokens: list[Token], op: str) -> list[tuple[int, int]]:
    """Offsets of the parts of ``tokens`` between depth-0 ``op`` (none if an `if` is there)."""
    parts: list[tuple[int, int]] = []
    depth, first = 0, 0
    for i, token in enumerate(tokens):
        text = token.text if token.kind in ("op", "ident") else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and text == "if":
            return []
        elif depth == 0 and text == op and token.kind == "op":
            parts.append((tokens[first].start, tokens[i - 1].end))
            first = i + 1
    if parts and first < len(tokens):
        parts.append((tokens[first].start, tokens[-1].end))
    return parts


def _if_parts(tokens: list[Token]) -> list[tuple[int, int]]:
    """Offsets of condition, then- and else-branch of ``if c then a else b`` (all tokens)."""
    depth, nested = 0, 0
    marks: list[int] = []
    for i, token in enumerate(tokens[1:], 1):
        text = token.text if token.kind in ("op", "ident") else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and text == "if":
            nested += 1
        elif depth == 0 and text == "else" and nested:
            nested -= 1
        elif depth == 0 and not nested and text in ("then", "else") and len(marks) < 2:
            marks.append(i)
    if len(marks) != 2 or not 1 < marks[0] < marks[1] < len(tokens) - 1:
        return []
    bounds = [(1, marks[0] - 1), (marks[0] + 1, marks[1] - 1), (marks[1] + 1, len(tokens) - 1)]
    return [(tokens[a].start, tokens[b].end) for a, b in bounds if a <= b]
