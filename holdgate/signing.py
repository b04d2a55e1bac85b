"""Signed records: an Ed25519 signature over the exact bytes published, in record headers.

Why headers and exact bytes: an executor in any language verifies the value it
received, byte for byte, with nothing to re-serialise or canonicalise (floats,
key order and escapes cannot make a valid verdict fail, nor a forged one pass).
The value stays plain JSON; headers carry the proof:

    hg-sig    the 64-byte Ed25519 signature
    hg-kid    the signing key's id (``ed25519:`` + 16 hex of SHA-256 of the raw key)
    hg-proof  only on records signed as a batch: the record's Merkle inclusion proof

Without ``hg-proof`` the signature covers the record value itself.  With it,
the signature covers the batch's tree head, which the proof and the value's
hash lead to (`holdgate.merkle`: one signature per micro-batch of verdicts,
each still verifiable alone).  A batch of one is always signed plainly.

Outside Python (documented in the README), a plainly signed record::

    openssl pkeyutl -verify -pubin -inkey worker.pub -rawin -in value.bin -sigfile sig.bin

and a batch-signed one the same way with ``-in`` the tree head the proof leads to.

Verdicts are signed by the worker; control records and published bundles by
operator keys; approvals by approver keys.  All go through these functions.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from holdgate.keys import Signer, TrustStore
from holdgate.merkle import (TREE_HEAD_PREFIX, build, decode_proof, encode_proof, leaf_hash,
                             root_from_proof, tree_head)

__all__ = ["SIG_HEADER", "KID_HEADER", "PROOF_HEADER", "Headers", "sign_headers",
           "sign_batch", "read_signature", "read_proof", "signed_bytes", "verify_record"]

SIG_HEADER = "hg-sig"
KID_HEADER = "hg-kid"
PROOF_HEADER = "hg-proof"
Headers = Sequence[tuple[str, bytes]]


def sign_headers(signer: Signer, value: bytes) -> tuple[tuple[str, bytes], ...]:
    """The headers that prove `signer` published exactly `value`."""
    return ((SIG_HEADER, signer.sign(value)), (KID_HEADER, signer.key_id.encode()))


def sign_batch(signer: Signer, values: Sequence[bytes]) -> list[tuple[tuple[str, bytes], ...]]:
    """Headers for each of `values` from one signature over their Merkle tree head.

    A single value is signed plainly (`sign_headers`): at low load most batches
    are one verdict, and those keep the one-command OpenSSL recipe.
    """
    if len(values) == 1:
        return [sign_headers(signer, values[0])]
    if not values:
        return []
    root, paths = build(values)
    size = len(values)
    sig, kid = signer.sign(tree_head(size, root)), signer.key_id.encode()
    return [((SIG_HEADER, sig), (KID_HEADER, kid), (PROOF_HEADER, encode_proof(i, size, path)))
            for i, path in enumerate(paths)]


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


def read_proof(headers: Iterable[tuple[str, bytes | None]] | None) -> bytes | None:
    """The raw ``hg-proof`` header, or None for a plainly signed (or unsigned) record."""
    for name, value in headers or ():
        if name == PROOF_HEADER and value is not None:
            return bytes(value)
    return None


def signed_bytes(value: bytes, proof: bytes | None) -> tuple[bytes | None, str | None]:
    """(what the signature must cover, None) or (None, why no signature can cover it).

    Plain: the value itself, unless it poses as a tree head (no worker ever
    signs such a value; refusing it keeps the two forms from being confused).
    With a proof: the tree head the value's leaf hash and the path lead to.
    """
    if proof is None:
        if value.startswith(TREE_HEAD_PREFIX):
            return None, "record value poses as a tree head"
        return value, None
    parsed = decode_proof(proof)
    if parsed is None:
        return None, "malformed hg-proof header"
    index, size, path = parsed
    root = root_from_proof(leaf_hash(value), index, size, path)
    if root is None:
        return None, "hg-proof does not fit its claimed position in the batch"
    return tree_head(size, root), None


def verify_record(trust: TrustStore, value: bytes | None,
                  headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """None when `value` carries a valid signature by a trusted key, else why not."""
    if value is None:
        return "empty record"
    headers = tuple(headers or ())
    kid, sig = read_signature(headers)
    proof = read_proof(headers)
    data, problem = signed_bytes(value, proof)
    if data is None:
        return problem
    return trust.verify(kid, data, sig, remember=proof is not None)
