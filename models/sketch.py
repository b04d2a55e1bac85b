"""Fixed-size Bloom filter for novelty ("has this agent ever used X?").

Why a Bloom filter: the exact set of everything an agent ever did grows without
bound, while the changelog value per agent must stay bounded.  A Bloom filter
answers "seen before?" in a fixed number of bits with no false negatives; its
error is one-sided in the other direction: with probability ``fpr(n)`` a truly
new item is reported as seen (``new_* = 0``).  With the default 2048 bits and
4 probes that is ~0.4% after 150 distinct items and ~2% after 300; the filter
keeps working past that, only less sharply (see `false_positive_rate`).

The bitset is held as one Python ``int``: membership and insertion are a single
big-int AND/OR (a few hundred ns, in C), and the probe mask of a key is computed
once and cached by the caller.  Probe positions come from the key's stable
blake2b digest, never from Python's per-process randomized ``hash()``, so a
replay in another process sets exactly the same bits.
"""
from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass

from holdgate.errors import ModelError

__all__ = ["BloomGeometry", "NOVELTY_BLOOM", "BLOOM_DENSE", "bloom_section", "bloom_from"]


@dataclass(frozen=True, slots=True)
class BloomGeometry:
    """Size (a power of two, in bits) and probe count of a Bloom filter.

    >>> g = BloomGeometry(bits=2048, probes=4)
    >>> m = g.mask(bytes.fromhex("0123456789abcdef"))
    >>> bloom = 0
    >>> g.contains(bloom, m), g.contains(bloom | m, m)
    (False, True)
    """

    bits: int = 2048
    probes: int = 4

    def __post_init__(self) -> None:
        if self.bits < 64 or self.bits & (self.bits - 1):
            raise ValueError("bits must be a power of two >= 64")
        if not 1 <= self.probes or self.probes * self._index_bits > 64:
            raise ValueError("probes must fit in a 64-bit digest")

    @property
    def _index_bits(self) -> int:
        return self.bits.bit_length() - 1

    @property
    def nbytes(self) -> int:
        """Serialized size of the bitset."""
        return self.bits // 8

    def mask(self, digest: bytes) -> int:
        """The probe bits of a key, from its (>= 8-byte) stable digest."""
        h = int.from_bytes(digest[:8], "little")
        width = self._index_bits
        low = self.bits - 1
        m = 0
        for i in range(self.probes):
            m |= 1 << ((h >> (i * width)) & low)
        return m

    @staticmethod
    def contains(bloom: int, mask: int) -> bool:
        """True when every probe bit is set (the key was, probably, added)."""
        return bloom & mask == mask

    def false_positive_rate(self, items: int) -> float:
        """Expected chance that a new key looks seen after ``items`` insertions."""
        return (1.0 - math.exp(-self.probes * items / self.bits)) ** self.probes


NOVELTY_BLOOM = BloomGeometry(bits=2048, probes=4)


# -- in a state blob (see holdgate.models.codec) --------------------------------------
#
# Why two forms: most agents use a handful of actions and resource types, so their
# filter has a few dozen bits set: listed as uint16 indexes it is a fraction of the
# 256-byte bitmap.  Both directions are cached: agents that do the same things
# share the same filter, so most encodes and decodes are one dict lookup.

#: `bloom_section` size meaning "the dense bitmap follows"
BLOOM_DENSE = 0xFFFF
_SWAP = sys.byteorder != "little"


def _le(bits: list[int]) -> bytes:
    a = array("H", bits)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a.byteswap()
    return a.tobytes()


def _bits(raw: bytes) -> array:
    a = array("H")
    a.frombytes(raw)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a.byteswap()
    return a


_ENC: dict[int, tuple[int, bytes]] = {}
_DEC: dict[bytes, int] = {}


def bloom_section(bloom: int) -> tuple[int, bytes]:
    """(bloom_len, bytes): the set bits as uint16 while few, else the 256-byte bitmap.

    Cached both ways: agents that do the same things share the same filter."""
    hit = _ENC.get(bloom)
    if hit is not None:
        return hit
    count = bloom.bit_count()
    if 2 * count < NOVELTY_BLOOM.nbytes:
        bits = []
        b = bloom
        while b:
            low = b & -b
            bits.append(low.bit_length() - 1)
            b ^= low
        out = (count, _le(bits))
    else:
        out = (BLOOM_DENSE, bloom.to_bytes(NOVELTY_BLOOM.nbytes, "little"))
    if len(_ENC) >= 4096:
        _ENC.clear()
    _ENC[bloom] = out
    return out


def bloom_from(raw: bytes, size: int) -> int:
    """The filter `bloom_section` wrote as (`size`, `raw`); `ModelError` if impossible."""
    if len(raw) != (NOVELTY_BLOOM.nbytes if size == BLOOM_DENSE else 2 * size):
        raise ModelError("agent state blob is truncated")
    hit = _DEC.get(raw)
    if hit is not None:
        return hit
    if size == BLOOM_DENSE:
        bloom = int.from_bytes(raw, "little")
    else:
        bloom = 0
        for bit in _bits(raw):
            if bit >= NOVELTY_BLOOM.bits:
                raise ModelError("agent state blob holds impossible values")
            bloom |= 1 << bit
        if bloom.bit_count() != size:
            raise ModelError("agent state blob holds impossible values")
    if len(_DEC) >= 4096:
        _DEC.clear()
    _DEC[raw] = bloom
    return bloom
