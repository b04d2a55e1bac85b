"""Verdict signatures: an executor acts only on an allow it can verify.

HMAC-SHA256 over the canonical JSON of the verdict (sorted keys, signature
field left out).  A shared secret keeps the dependency footprint of the SDK at
zero; the key id lets operators rotate keys without a flag day.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

import orjson

from holdgate.events import Verdict

__all__ = ["sign", "verify", "signature_of"]


def signature_of(verdict: Verdict, key: bytes) -> str:
    body = orjson.dumps(verdict.to_obj(with_signature=False), option=orjson.OPT_SORT_KEYS)
    return "hmac-sha256:" + hmac.new(key, body, hashlib.sha256).hexdigest()


def sign(verdict: Verdict, key: bytes | None) -> Verdict:
    """Return the verdict with its signature set (unchanged when no key is configured)."""
    if not key:
        return verdict
    return replace(verdict, signature=signature_of(verdict, key))


def verify(verdict: Verdict, key: bytes) -> bool:
    if not verdict.signature:
        return False
    return hmac.compare_digest(verdict.signature, signature_of(verdict, key))
