"""Ring counters, Bloom novelty and keyed recency tables (models/windows, sketch, recent)."""
from __future__ import annotations

import random
from array import array

import pytest

from holdgate.models.recent import DistinctWindow, KeyedWindows, find_key
from holdgate.models.sketch import NOVELTY_BLOOM, BloomGeometry
from holdgate.models.windows import COUNTER_MAX, Horizon, WindowSet


def test_counts_accumulate_across_bucket_boundaries() -> None:
    ws = WindowSet(Horizon(1000, 10))
    rings = ws.new()
    last = 0
    seen = []
    for t in (500, 900, 1100, 1999, 2000, 9_000):  # crosses the 1 s and 2 s boundaries
        seen.append(ws.observe(rings, 0, last, t)[0])
        last = t
    assert seen == [1, 2, 3, 4, 5, 6]


def test_window_expires_after_horizon_plus_at_most_one_bucket() -> None:
    ws = WindowSet(Horizon(1000, 10))  # 10 s window, 1 s buckets
    rings = ws.new()
    ws.observe(rings, 0, 0, 0)                      # event at t=0 (bucket 0)
    assert ws.counts(rings, 0, 0, 10_000) == [1]    # exactly 10 s old: still counted
    assert ws.counts(rings, 0, 0, 10_999) == [1]    # never fewer than the horizon...
    assert ws.counts(rings, 0, 0, 11_000) == [0]    # ...and at most one bucket more
    assert ws.counts(rings, 0, 0, 500_000) == [0]   # long idle: fully cleared


def test_counts_is_read_only() -> None:
    ws = WindowSet(Horizon(100, 10), Horizon(5000, 12))
    rings = ws.new()
    ws.observe(rings, 0, 0, 0)
    before = array("H", rings)
    assert ws.counts(rings, 0, 0, 60_000) == [0, 1]
    assert rings == before


def test_several_horizons_and_segments_do_not_interfere() -> None:
    ws = WindowSet(Horizon(100, 10), Horizon(5000, 12), Horizon(300_000, 12))
    rings = array("H", bytes(2 * ws.size * 2))  # two owners side by side
    assert ws.observe(rings, 0, 0, 1_000) == [1, 1, 1]
    assert ws.observe(rings, ws.size, 0, 1_000) == [1, 1, 1]
    assert ws.observe(rings, 0, 1_000, 3_000) == [1, 2, 2]      # 2 s later: 1 s window moved
    assert ws.observe(rings, 0, 3_000, 70_000) == [1, 1, 3]     # 60 s window dropped both
    assert ws.counts(rings, ws.size, 1_000, 1_000) == [1, 1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_and_never_undercounts(seed: int) -> None:
    rng = random.Random(seed)
    h = Horizon(5000, 12)
    ws = WindowSet(h)
    rings = ws.new()
    events: list[int] = []
    t = last = 1_700_000_000_000
    for _ in range(2000):
        t += int(rng.expovariate(1 / 800))
        events.append(t)
        got = ws.observe(rings, 0, last, t)[0]
        last = t
        in_buckets = sum(1 for e in events if h.bucket(e) >= h.bucket(t) - h.buckets)
        exact = sum(1 for e in events if e > t - 60_000)
        assert got == in_buckets
        assert exact <= got
        events = [e for e in events if e > t - 70_000]


def test_counters_saturate_instead_of_wrapping() -> None:
    ws = WindowSet(Horizon(1000, 1))
    rings = ws.new()
    assert ws.observe(rings, 0, 0, 0, add=COUNTER_MAX - 1) == [COUNTER_MAX - 1]
    assert ws.observe(rings, 0, 0, 0, add=5) == [COUNTER_MAX]
    assert ws.observe(rings, 0, 0, 0) == [COUNTER_MAX]


def test_time_going_backwards_is_clamped() -> None:
    ws = WindowSet(Horizon(1000, 10))
    rings = ws.new()
    ws.observe(rings, 0, 0, 50_000)
    assert ws.observe(rings, 0, 50_000, 10_000) == [2]  # counted at 50 s, nothing erased


def test_bloom_has_no_false_negatives_and_bounded_false_positives() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(8) for _ in range(150)]
    bloom = 0
    for k in keys:
        bloom |= NOVELTY_BLOOM.mask(k)
    assert all(NOVELTY_BLOOM.contains(bloom, NOVELTY_BLOOM.mask(k)) for k in keys)
    probes = [rng.randbytes(8) for _ in range(20_000)]
    fp = sum(NOVELTY_BLOOM.contains(bloom, NOVELTY_BLOOM.mask(k)) for k in probes) / len(probes)
    assert fp < 3 * NOVELTY_BLOOM.false_positive_rate(150) + 0.002
    assert bloom.bit_length() <= NOVELTY_BLOOM.bits


def test_bloom_geometry_is_validated() -> None:
    with pytest.raises(ValueError):
        BloomGeometry(bits=1000)
    with pytest.raises(ValueError):
        BloomGeometry(bits=2048, probes=6)  # 6 x 11 bits > 64


def test_find_key_respects_alignment() -> None:
    table = bytearray(b"\x01\x02\x03\x04")
    assert find_key(table, b"\x01\x02") == 0
    assert find_key(table, b"\x03\x04") == 1
    assert find_key(table, b"\x02\x03") == -1  # straddles two keys


def test_keyed_windows_evict_least_recently_touched() -> None:
    kw = KeyedWindows(WindowSet(Horizon(1000, 10)), key_size=1)
    keys, lasts, rings = bytearray(), array("q"), array("H")
    for t, k in enumerate(b"abcab"):
        kw.observe(keys, lasts, rings, bytes([k]), t * 1000, cap=3)
    counts, fresh = kw.observe(keys, lasts, rings, b"d", 6000, cap=3)  # evicts c (t=2s)
    assert (counts, fresh) == ([1], True)
    assert sorted(keys) == sorted(b"abd") and len(rings) == 3 * kw.windows.size
    counts, fresh = kw.observe(keys, lasts, rings, b"a", 7000, cap=3)
    assert (counts, fresh) == ([3], False)


@pytest.mark.parametrize("seed", range(4))
def test_distinct_window_is_exact_up_to_the_cap(seed: int) -> None:
    rng = random.Random(seed)
    h = Horizon(5000, 12)
    dw = DistinctWindow(h, key_size=2)
    keys, buckets = bytearray(), array("I")
    last_touch: dict[bytes, int] = {}
    t = 0
    for _ in range(3000):
        t += rng.randrange(0, 900)
        k = rng.randrange(120 if rng.random() < 0.5 else 20).to_bytes(2, "little")
        got = dw.touch(keys, buckets, k, t, cap=40)
        last_touch[k] = t
        live = sum(1 for v in last_touch.values() if v // 5000 >= t // 5000 - h.buckets)
        assert got == min(live, 40)
        assert len(buckets) <= 40 and len(keys) == 2 * len(buckets)
