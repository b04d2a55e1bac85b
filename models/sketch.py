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
from dataclasses import dataclass

__all__ = ["BloomGeometry", "NOVELTY_BLOOM"]


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
