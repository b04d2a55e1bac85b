"""Signed records: an Ed25519 signature over the exact bytes published, in record headers.

Why headers and exact bytes: an executor in any language verifies the value it
received, byte for byte, with nothing to re-serialise or canonicalise (floats,
key order and escapes cannot make a valid verdict fail, nor a forged one pass).
The value stays plain JSON; two headers carry the proof:

    hg-sig   the 64-byte Ed25519 signature over the record value
    hg-kid   the signing key's id (``ed25519:`` + 16 hex of SHA-256 of the raw key)

Outside Python (documented in the README)::

    openssl pkeyutl -verify -pubin -inkey worker.pub -rawin -in value.bin -sigfile sig.bin

Verdicts are signed by the worker; control records and published bundles by
operator keys; approvals by approver keys.  All go through these functions.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from holdgate.keys import Signer, TrustStore

__all__ = ["SIG_HEADER", "KID_HEADER", "Headers", "sign_headers", "read_signature",
           "verify_record"]

SIG_HEADER = "hg-sig"
KID_HEADER = "hg-kid"
Headers = Sequence[tuple[str, bytes]]


def sign_headers(signer: Signer, value: bytes) -> tuple[tuple[str, bytes], ...]:
    """The headers that prove `signer` published exactly `value`."""
    return ((SIG_HEADER, signer.sign(value)), (KID_HEADER, signer.key_id.encode()))


def read_signature(headers: Iterable[tuple[str, bytes | None]] | None
                   ) -> tuple[str | None, bytes | None]:
    """(key id, signature) from record headers; None for what is missing."""
    kid = sig = None
    for name, value in headers or ():
        if name == SIG_HEADER and value:
            sig = bytes(value)
        elif name == KID_HEADER and value:
            try:
                kid = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                kid = None
    return kid, sig


def verify_record(trust: TrustStore, value: bytes | None,
                  headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """None when `value` carries a valid signature by a trusted key, else why not."""
    if value is None:
        return "empty record"
    kid, sig = read_signature(headers)
    return trust.verify(kid, value, sig)
