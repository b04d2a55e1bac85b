"""Working time: shifts in the agent's time zone, with lunch, short breaks and weekends.

Why model it: an agent acting on behalf of humans (answering their tickets,
running their reviews) is busy when its humans are, and a baseline of "how
active is this agent now" is only meaningful against a day with structure.
Every agent draws its own shift (start, length, how often it pauses, whether
it works weekends) and every day jitters around it, so no two agents and no
two days share exact boundaries.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["Shift", "draw_shift", "work_intervals", "DAY"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Shift:
    tz: float                 # hours from UTC
    start: float              # local hour the shift usually starts
    length: float             # hours
    start_jitter: float       # hours, standard deviation day to day
    breaks_per_hour: float    # short pauses (5..15 min)
    lunch: bool
    weekend: float            # probability of working (a shorter day) on Sat/Sun


def draw_shift(rng: random.Random, tz: float, *, early: float = 6.5, late: float = 10.0,
               hours: tuple[float, float] = (7.0, 10.0)) -> Shift:
    return Shift(tz=tz, start=rng.uniform(early, late), length=rng.uniform(*hours),
                 start_jitter=rng.uniform(0.05, 0.5), breaks_per_hour=rng.uniform(0.1, 0.6),
                 lunch=rng.random() < 0.85,
                 weekend=rng.choice((0.0, 0.0, 0.05, 0.2, 0.5)))


def work_intervals(shift: Shift, rng: random.Random, t0: float,
                   t1: float) -> list[tuple[float, float, float]]:
    """``[(begin, end, load), ...]`` in epoch seconds within ``[t0, t1)``.

    ``load`` is the day's workload multiplier (busy Mondays, quiet Fridays,
    random days): activity rates are multiplied by it.
    """
    offset = shift.tz * 3600.0
    out: list[tuple[float, float, float]] = []
    day = (t0 + offset) // DAY * DAY - offset - DAY     # local midnight before t0
    while day < t1:
        weekday = datetime.fromtimestamp(day + offset + DAY / 2, timezone.utc).weekday()
        load = rng.lognormvariate(0.0, 0.25) * (1.15 if weekday == 0 else 1.0)
        length = max(1.0, shift.length + rng.gauss(0.0, 0.4))
        begin = day + (shift.start + rng.gauss(0.0, shift.start_jitter)) * 3600.0
        if weekday >= 5:
            if rng.random() >= shift.weekend:
                day += DAY
                continue
            length *= rng.uniform(0.3, 0.6)
            load *= 0.6
        end = begin + length * 3600.0
        pauses: list[tuple[float, float]] = []
        if shift.lunch and length > 5:
            at = begin + (end - begin) * rng.uniform(0.4, 0.6)
            pauses.append((at, at + rng.uniform(25, 65) * 60.0))
        for _ in range(_poisson(rng, shift.breaks_per_hour * length)):
            at = rng.uniform(begin, end)
            pauses.append((at, at + rng.uniform(5, 15) * 60.0))
        for a, b in _subtract((begin, end), pauses):
            a, b = max(a, t0), min(b, t1)
            if b - a > 30.0:
                out.append((a, b, load))
        day += DAY
    return out


def _subtract(span: tuple[float, float],
              holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    pieces = [span]
    for h0, h1 in sorted(holes):
        nxt = []
        for a, b in pieces:
            if h1 <= a or h0 >= b:
                nxt.append((a, b))
                continue
            if h0 > a:
                nxt.append((a, h0))
            if h1 < b:
                nxt.append((h1, b))
        pieces = nxt
    return pieces


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: means here are small (a few breaks a day)."""
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1
