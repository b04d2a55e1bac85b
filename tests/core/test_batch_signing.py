"""One signature per batch: the Merkle tree against RFC 9162's definition, and its proofs.

The oracle here is written from the RFC's text, independently of
`holdgate.merkle`: MTH by its recursive definition, and the inclusion path
PATH(m, D[n]) by its own recursion.  Every proof the signer emits must equal
the oracle's, lead back to the signed head, and fail for any other record,
position, batch or key.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from holdgate.keys import Signer, TrustStore
from holdgate.merkle import (TREE_HEAD_PREFIX, build, decode_proof, encode_proof, leaf_hash,
                             root_from_proof, tree_head)
from holdgate.signing import (PROOF_HEADER, SIG_HEADER, read_proof, sign_batch, sign_headers,
                              verify_record)

SIGNER = Signer.generate()
TRUST = TrustStore([SIGNER.public_key])


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(d: list[bytes]) -> bytes:          # RFC 9162 §2.1.1
    n = len(d)
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + _mth(d[:k]) + _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:    # RFC 9162 §2.1.3.1
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return _path(m, d[:k]) + [_mth(d[k:])]
    return _path(m - k, d[k:]) + [_mth(d[:k])]


def _values(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [b'{"request_id":"%d","n":%d}' % (i, rng.randrange(10**9)) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 100, 255, 256, 257])
def test_the_tree_and_every_path_equal_the_rfc_definition(n: int) -> None:
    values = _values(n, n)
    root, paths = build(values)
    assert root == _mth(values)
    for m in range(n):
        assert paths[m] == _path(m, values)
        assert root_from_proof(leaf_hash(values[m]), m, n, paths[m]) == root


def test_a_path_proves_only_its_own_position_and_size() -> None:
    values = _values(13)
    root, paths = build(values)
    leaf = leaf_hash(values[5])
    head = tree_head(13, root)               # what is signed binds the size as well
    for index, size in [(4, 13), (6, 13), (5, 12), (5, 14), (5, 16), (13, 13), (-1, 13)]:
        got = root_from_proof(leaf, index, size, paths[5])
        assert got is None or tree_head(size, got) != head
    assert root_from_proof(leaf, 5, 13, paths[5][:-1]) is None      # too short
    assert root_from_proof(leaf, 5, 13, paths[5] + [root]) is None  # too long
    assert root_from_proof(leaf_hash(values[6]), 5, 13, paths[5]) != root
    headers = sign_batch(SIGNER, values)
    for index, size in [(4, 13), (5, 12), (5, 14)]:
        moved = tuple((k, encode_proof(index, size, paths[5])) if k == PROOF_HEADER else (k, v)
                      for k, v in headers[5])
        assert verify_record(TRUST, values[5], moved) is not None


def test_proof_encoding_round_trips_and_refuses_malformed_bytes() -> None:
    path = [bytes([i]) * 32 for i in range(5)]
    assert decode_proof(encode_proof(3, 20, path)) == (3, 20, path)
    assert decode_proof(b"") is None
    assert decode_proof(encode_proof(3, 20, path)[:-1]) is None     # a hash cut short
    assert decode_proof(encode_proof(20, 20, path)) is None         # index outside the tree
    assert decode_proof(encode_proof(0, 2, [b"x" * 32] * 33)) is None


@pytest.mark.parametrize("n", [2, 3, 64, 256])
def test_every_record_of_a_signed_batch_verifies_alone(n: int) -> None:
    values = _values(n)
    headers = sign_batch(SIGNER, values)
    assert len({dict(h)[SIG_HEADER] for h in headers}) == 1          # one signature
    for value, h in zip(values, headers):
        assert verify_record(TrustStore([SIGNER.public_key]), value, h) is None


def test_a_batch_of_one_is_signed_plainly() -> None:
    [headers] = sign_batch(SIGNER, [b'{"a":1}'])
    assert read_proof(headers) is None and headers == sign_headers(SIGNER, b'{"a":1}')
    assert sign_batch(SIGNER, []) == []


def test_swapped_forged_and_stripped_proofs_fail() -> None:
    values = _values(6)
    headers = sign_batch(SIGNER, values)
    assert verify_record(TRUST, values[0], headers[1]) is not None   # another record's proof
    assert verify_record(TRUST, values[0] + b" ", headers[0]) is not None
    stripped = tuple(h for h in headers[0] if h[0] != PROOF_HEADER)
    assert verify_record(TRUST, values[0], stripped) is not None     # head sig over the value
    broken = tuple((k, v[:-1]) if k == PROOF_HEADER else (k, v) for k, v in headers[0])
    assert "malformed" in (verify_record(TRUST, values[0], broken) or "")
    other = sign_batch(Signer.generate(), values)
    assert "unknown key" in (verify_record(TRUST, values[0], other[0]) or "")
    # A plain signature over a value cannot be passed off with a proof of the same value.
    plain = sign_headers(SIGNER, values[0]) + ((PROOF_HEADER, encode_proof(0, 1, [])),)
    assert verify_record(TRUST, values[0], plain) is not None


def test_a_tree_head_signature_never_passes_as_a_plain_record() -> None:
    values = _values(4)
    root, _ = build(values)
    head = tree_head(4, root)
    assert head.startswith(TREE_HEAD_PREFIX)
    assert "poses as a tree head" in (verify_record(TRUST, head, sign_headers(SIGNER, head))
                                      or "")


def test_remembered_heads_skip_the_check_but_never_pass_another_signature() -> None:
    trust = TrustStore([SIGNER.public_key])
    values = _values(8)
    headers = sign_batch(SIGNER, values)
    calls = 0
    key = trust._keys[SIGNER.key_id]

    class Counting:
        def verify(self, sig: bytes, data: bytes) -> None:
            nonlocal calls
            calls += 1
            key.verify(sig, data)

    trust._keys[SIGNER.key_id] = Counting()  # type: ignore[assignment]
    for value, h in zip(values, headers):
        assert verify_record(trust, value, h) is None
    assert calls == 1
    bad = tuple((k, bytes(64)) if k == SIG_HEADER else (k, v) for k, v in headers[0])
    assert "does not verify" in (verify_record(trust, values[0], bad) or "")
    assert calls == 2
    for _ in range(TrustStore.REMEMBER + 10):                 # the memory stays bounded
        trust.verify(SIGNER.key_id, b"x", b"s", remember=True)
    assert len(trust._verified) <= TrustStore.REMEMBER
