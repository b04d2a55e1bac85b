"""Fitting `Profiles` from history: robust limits per agent, role and fleet.

Limits are *day-robust*: for each agent, 3-hour block of the day and day, take
a high quantile (p99.9) of each signal at the agent's own actions, then the
busiest of those days *leaving out the single busiest one*, times a margin; a
block seen on a single day only (when the history spans several) is not
trusted on its own.  A nightly job that reads 40/s every night gets a limit above
40 for its night block; a runaway loop or an exfiltration on one day of the
training window moves one day's quantile, not the limit, so history with an
incident in it still fits.

A role's prior is the largest of its agents' day-robust limits over the whole
day, and stands in for agents with less than `FitConfig.min_agent_rows` actions
of history (or none: a fleet the model has never seen): an unknown member of
the role may do what its busiest known member normally does, at any hour, no
more.  The fleet prior is the same over every agent, for roles nobody has seen.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from holdgate.models.profile import BLOCK_SECONDS, BLOCKS, KINDS, Profiles

__all__ = ["FitConfig", "TrainingRows", "fit_profiles"]


@dataclass(frozen=True, slots=True)
class FitConfig:
    quantile: float = 0.999
    margin: float = 1.5               # limit = margin x typical-day quantile
    floors: tuple[int, ...] = (5, 30, 300, 10, 15)   # per kind: never stricter than this
    action_floor: int = 3
    min_group_rows: int = 20          # an agent-block-day needs this many actions to count
    min_days: int = 2                 # a block's limit needs this many days (if history has them)
    min_agent_rows: int = 100         # fewer: the agent is judged by its role's profile
    active_min_rows: int = 10         # actions in a block (over the window) to call it usual


@dataclass
class TrainingRows:
    """Per training action: who, what, when, and the counters it saw (all allowed)."""

    t: np.ndarray                    # float64 event time
    agent: Sequence[str]
    action: Sequence[str]
    rtype: Sequence[str]
    values: np.ndarray               # int64 [n, len(KINDS)]
    action_rate_1s: np.ndarray       # int64 [n]

    def __len__(self) -> int:
        return len(self.t)


def _limit(q: float, margin: float, floor: int) -> int:
    return max(floor, int(math.ceil(q * margin)))


def _group_quantiles(keys: np.ndarray, values: np.ndarray, q: float,
                     min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique key rows and the q-quantile of `values` per key (groups with >= min_rows)."""
    if len(keys) == 0:
        return keys[:0], values[:0].astype(np.float64)
    order = np.lexsort(keys.T[::-1])
    k, v = keys[order], values[order]
    change = np.any(k[1:] != k[:-1], axis=1)
    starts = np.concatenate(([0], np.nonzero(change)[0] + 1))
    ends = np.concatenate((starts[1:], [len(k)]))
    uniq, quants = [], []
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s < min_rows:
            continue
        uniq.append(k[s])
        quants.append(np.quantile(v[s:e], q, axis=0, method="higher"))
    if not uniq:
        return keys[:0], np.zeros((0, values.shape[1]))
    return np.array(uniq), np.array(quants, dtype=np.float64)


def _median_by(keys: np.ndarray, quants: np.ndarray, width: int,
               min_days: int = 1) -> dict[tuple[int, ...], np.ndarray]:
    """Per group of the first `width` key columns: the largest day but the largest one.

    Normal days vary (a heavier Monday), so the limit covers all but the most
    extreme day; one incident day can never raise it.  Groups seen on fewer
    than `min_days` days are left out.
    """
    out: dict[tuple[int, ...], list[np.ndarray]] = defaultdict(list)
    for key, qv in zip(keys.tolist(), quants):
        out[tuple(key[:width])].append(qv)
    result = {}
    for k, v in out.items():
        if len(v) < min_days:
            continue
        ordered = np.sort(np.array(v), axis=0)
        result[k] = ordered[-2] if len(v) >= 2 else ordered[0]
    return result


def fit_profiles(rows: TrainingRows, roles: Mapping[str, str],
                 config: FitConfig | None = None) -> Profiles:
    """Robust per-agent, per-role and fleet limits, action sets and active blocks."""
    cfg = config or FitConfig()
    n = len(rows)
    agents_all, agent_code = np.unique(np.asarray(rows.agent, dtype=str), return_inverse=True)
    role_names = sorted({roles.get(a, "") for a in agents_all.tolist()} - {""})
    role_index = {r: i for i, r in enumerate(role_names)}
    role_of_agent = np.array([role_index.get(roles.get(a, ""), -1) for a in agents_all.tolist()],
                             dtype=np.int64)
    day = (rows.t // 86_400).astype(np.int64)
    block = ((rows.t // BLOCK_SECONDS).astype(np.int64) % BLOCKS)
    values = rows.values.astype(np.float64)
    counts = np.bincount(agent_code, minlength=len(agents_all)) if n else np.zeros(0, int)
    profiled = [i for i in range(len(agents_all)) if counts[i] >= cfg.min_agent_rows]
    new_index = {old: new for new, old in enumerate(profiled)}

    def limits_from(med: dict[tuple[int, ...], np.ndarray], shape: tuple[int, ...],
                    index_of: dict[int, int] | None) -> np.ndarray:
        out = np.zeros(shape + (BLOCKS, len(KINDS)), dtype=np.int32)
        for key, qv in med.items():
            *who, b = key
            if index_of is not None:
                if who[0] not in index_of:
                    continue
                who = [index_of[who[0]]]
            for k in range(len(KINDS)):
                out[(*who, b, k)] = _limit(float(qv[k]), cfg.margin, cfg.floors[k])
        return out

    keys = np.stack([agent_code, block, day], axis=1) if n else np.zeros((0, 3), np.int64)
    gk, gq = _group_quantiles(keys, values, cfg.quantile, cfg.min_group_rows)
    days = len(np.unique(day)) if n else 0
    typical = _median_by(gk, gq, 2, min(cfg.min_days, max(days, 1)))
    every = limits_from(typical, (len(agents_all),), {i: i for i in range(len(agents_all))})
    # A block the agent was seen in on one day only takes its own busiest confirmed normal
    # (a one-day spike is not learned), then the role prior at lookup.
    for i in range(len(agents_all)):
        confirmed = every[i].max(axis=0)
        seen = np.zeros(BLOCKS, dtype=bool)
        seen[np.unique(block[agent_code == i])] = True
        for b in np.nonzero(seen & (every[i].max(axis=1) == 0))[0].tolist():
            every[i, b] = confirmed
    agent_limits = every[profiled] if profiled else \
        np.zeros((0, BLOCKS, len(KINDS)), dtype=np.int32)
    # Priors stand in for agents the model does not know, at any hour: a new fleet's
    # nightly job may run at another hour than the one the model saw.
    role_limits = np.zeros((len(role_names), BLOCKS, len(KINDS)), dtype=np.int32)
    for r in range(len(role_names)):
        members = [i for i in profiled if role_of_agent[i] == r]
        if members:
            role_limits[r] = every[members].max(axis=(0, 1))
    fleet_limits = np.zeros((BLOCKS, len(KINDS)), dtype=np.int32)
    if profiled:
        fleet_limits[:] = every[profiled].max(axis=(0, 1))

    per_block = np.zeros((len(agents_all), BLOCKS), dtype=np.int64)
    np.add.at(per_block, (agent_code, block), 1)
    agent_active = np.array([_bits(per_block[i] >= cfg.active_min_rows) for i in profiled],
                            dtype=np.uint8)
    role_active = np.array([_bits(per_block[role_of_agent == r].sum(axis=0)
                                  >= cfg.active_min_rows) for r in range(len(role_names))],
                           dtype=np.uint8)

    act_q: dict[tuple[int, str], list[int]] = defaultdict(list)
    types: dict[int, set[str]] = defaultdict(set)
    for i in range(n):
        a = int(agent_code[i])
        act_q[(a, rows.action[i])].append(int(rows.action_rate_1s[i]))
        types[a].add(rows.rtype[i])
    agent_actions: dict[str, dict[str, int]] = {agents_all[i]: {} for i in profiled}
    role_pool: dict[tuple[int, str], list[int]] = defaultdict(list)
    for (a, action), rates in act_q.items():
        limit = _limit(float(np.quantile(rates, cfg.quantile, method="higher")), cfg.margin,
                       cfg.action_floor)
        if a in new_index:
            agent_actions[agents_all[a]][action] = limit
        if role_of_agent[a] >= 0:
            role_pool[(int(role_of_agent[a]), action)].extend(rates)
    role_actions: dict[str, dict[str, int]] = {r: {} for r in role_names}
    for (r, action), pooled in role_pool.items():
        role_actions[role_names[r]][action] = _limit(
            float(np.quantile(pooled, cfg.quantile, method="higher")), cfg.margin,
            cfg.action_floor)
    role_types: dict[str, set[str]] = {r: set() for r in role_names}
    for a, ts in types.items():
        if role_of_agent[a] >= 0:
            role_types[role_names[role_of_agent[a]]] |= ts
    return Profiles(
        agents=tuple(str(agents_all[i]) for i in profiled), roles=tuple(role_names),
        agent_role=np.array([role_of_agent[i] for i in profiled], dtype=np.int32),
        agent_limits=agent_limits, role_limits=role_limits, fleet_limits=fleet_limits,
        agent_active=agent_active, role_active=role_active, agent_actions=agent_actions,
        role_actions=role_actions,
        agent_types={str(agents_all[i]): frozenset(types.get(i, ())) for i in profiled},
        role_types={r: frozenset(v) for r, v in role_types.items()})


def _bits(flags: np.ndarray) -> int:
    return int(sum(1 << b for b, f in enumerate(flags.tolist()) if f))
