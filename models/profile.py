"""Fitted baselines: what is normal for each agent, for its role and for the fleet.

A fixed fleet-wide threshold cannot tell a nightly reporting job reading 40
records a second from a support agent doing the same: the first is normal *for
that agent at that hour*, the second is not.  A `Profiles` table holds, per
agent and per 3-hour block of the (UTC) day, the rates it reaches on normal
days (its limit per window), the actions and resource types it uses, and the
blocks it is active in; the same per role, to stand in for agents with little
history; and per fleet, for agents of a role nobody has seen.

The stream turns limits into relative signals (``rate_1s_pct`` = 100 x rate /
limit, rounded up, so ``> 100`` means above normal for this agent); policies
decide how far above normal is too far.  Without a fitted model the limits are
`DEFAULT_LIMITS`, the fleet-wide thresholds the default bundle used to hard-code,
so a worker without a model behaves as before.

Arrays only (`to_arrays`/`from_arrays`), so a profile table travels inside a
model artifact that cannot run code when loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from holdgate.errors import ModelError

__all__ = ["KINDS", "BLOCKS", "BLOCK_SECONDS", "DEFAULT_LIMITS", "DEFAULT_ACTION_LIMIT",
           "Profiles", "block_of", "pct"]

#: What a limit is about: the agent's rate over three windows and its fan-out over two.
KINDS: tuple[str, ...] = ("rate_1s", "rate_60s", "rate_1h", "fanout_60s", "fanout_10m")
BLOCK_SECONDS = 3 * 3600
BLOCKS = 86_400 // BLOCK_SECONDS
#: Limits without a model (0: no limit): the old fixed guards of the default bundle.
DEFAULT_LIMITS: tuple[int, ...] = (20, 0, 5000, 50, 0)
DEFAULT_ACTION_LIMIT = 5


def block_of(t: float) -> int:
    """The 3-hour block of the UTC day an event time falls in (0..7)."""
    return int(t // BLOCK_SECONDS) % BLOCKS


def pct(value: int, limit: int) -> int:
    """100 x value / limit rounded up, so ``pct > 100`` exactly when value > limit."""
    if limit <= 0:
        return 0
    return (100 * value + limit - 1) // limit


@dataclass(frozen=True, eq=False)
class Profiles:
    """Per-agent, per-role and fleet baselines; lookups fall back agent > role > fleet."""

    agents: tuple[str, ...]
    roles: tuple[str, ...]
    agent_role: np.ndarray          # int32 [A]: index into roles, -1 unknown
    agent_limits: np.ndarray        # int32 [A, BLOCKS, KINDS]; 0 = no data
    role_limits: np.ndarray         # int32 [R, BLOCKS, KINDS]
    fleet_limits: np.ndarray        # int32 [BLOCKS, KINDS]
    agent_active: np.ndarray        # uint8 [A]: bit b set = usually active in block b
    role_active: np.ndarray         # uint8 [R]
    agent_actions: Mapping[str, Mapping[str, int]]   # agent -> action -> action_rate_1s limit
    role_actions: Mapping[str, Mapping[str, int]]
    agent_types: Mapping[str, frozenset[str]]
    role_types: Mapping[str, frozenset[str]]
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _rindex: dict[str, int] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, str | None, int], tuple[int, ...]] = field(
        default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index.update({a: i for i, a in enumerate(self.agents)})
        self._rindex.update({r: i for i, r in enumerate(self.roles)})

    def knows(self, agent: str) -> bool:
        return agent in self._index

    # ------------------------------------------------------------------ lookups
    def limits(self, agent: str, role: str | None, block: int) -> tuple[int, ...]:
        """Per kind: the agent's own limit in this block, else its role's, else the fleet's."""
        key = (agent, role, block)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        a = self._index.get(agent)
        r = self._rindex.get(role) if role is not None else None
        out = []
        for k in range(len(KINDS)):
            value = int(self.agent_limits[a, block, k]) if a is not None else 0
            if value <= 0 and r is not None:
                value = int(self.role_limits[r, block, k])
            if value <= 0:
                value = int(self.fleet_limits[block, k])
            out.append(value if value > 0 else DEFAULT_LIMITS[k])
        limits = tuple(out)
        if len(self._cache) > 65_536:
            self._cache.clear()
        self._cache[key] = limits
        return limits

    def action_limit(self, agent: str, role: str | None, action: str) -> int:
        own = self.agent_actions.get(agent)
        if own is not None and action in own:
            return own[action]
        mine = self.role_actions.get(role or "")
        if mine is not None and action in mine:
            return mine[action]
        return DEFAULT_ACTION_LIMIT

    def unusual(self, agent: str, role: str | None, action: str, rtype: str) -> tuple[int, int]:
        """(unusual_action, unusual_resource_type) against the agent, or its role if new."""
        actions = self.agent_actions.get(agent)
        types = self.agent_types.get(agent)
        if actions is None:
            actions = self.role_actions.get(role or "")
            types = self.role_types.get(role or "")
        if actions is None or types is None:
            return 0, 0
        return int(action not in actions), int(rtype not in types)

    def off_hours(self, agent: str, role: str | None, block: int) -> int:
        a = self._index.get(agent)
        if a is not None:
            return 0 if int(self.agent_active[a]) >> block & 1 else 1
        r = self._rindex.get(role) if role is not None else None
        if r is not None:
            return 0 if int(self.role_active[r]) >> block & 1 else 1
        return 0

    # ------------------------------------------------------------------ arrays
    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "agents": np.array(self.agents or ("",), dtype=str)[:len(self.agents)],
            "roles": np.array(self.roles or ("",), dtype=str)[:len(self.roles)],
            "agent_role": self.agent_role.astype(np.int32),
            "agent_limits": self.agent_limits.astype(np.int32),
            "role_limits": self.role_limits.astype(np.int32),
            "fleet_limits": self.fleet_limits.astype(np.int32),
            "agent_active": self.agent_active.astype(np.uint8),
            "role_active": self.role_active.astype(np.uint8),
        }
        out.update(_pairs("agent_action", self.agent_actions))
        out.update(_pairs("role_action", self.role_actions))
        out.update(_pairs("agent_type", {k: dict.fromkeys(v, 0)
                                         for k, v in self.agent_types.items()}))
        out.update(_pairs("role_type", {k: dict.fromkeys(v, 0)
                                        for k, v in self.role_types.items()}))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Profiles:
        try:
            agents = tuple(str(a) for a in arrays["agents"])
            roles = tuple(str(r) for r in arrays["roles"])
            a, r = len(agents), len(roles)
            shapes = {"agent_role": (a,), "agent_limits": (a, BLOCKS, len(KINDS)),
                      "role_limits": (r, BLOCKS, len(KINDS)),
                      "fleet_limits": (BLOCKS, len(KINDS)), "agent_active": (a,),
                      "role_active": (r,)}
            for name, shape in shapes.items():
                if tuple(arrays[name].shape) != shape:
                    raise ModelError(f"profile array {name} has shape "
                                     f"{tuple(arrays[name].shape)}, expected {shape}")
            agent_role = np.asarray(arrays["agent_role"], dtype=np.int32)
            if agent_role.size and (agent_role.min() < -1 or agent_role.max() >= max(r, 1)):
                raise ModelError("profile array agent_role points outside the role list")
            return cls(
                agents=agents, roles=roles, agent_role=agent_role,
                agent_limits=np.asarray(arrays["agent_limits"], dtype=np.int32),
                role_limits=np.asarray(arrays["role_limits"], dtype=np.int32),
                fleet_limits=np.asarray(arrays["fleet_limits"], dtype=np.int32),
                agent_active=np.asarray(arrays["agent_active"], dtype=np.uint8),
                role_active=np.asarray(arrays["role_active"], dtype=np.uint8),
                agent_actions=_unpairs("agent_action", arrays, agents),
                role_actions=_unpairs("role_action", arrays, roles),
                agent_types={k: frozenset(v) for k, v in
                             _unpairs("agent_type", arrays, agents).items()},
                role_types={k: frozenset(v) for k, v in
                            _unpairs("role_type", arrays, roles).items()})
        except KeyError as exc:
            raise ModelError(f"model artifact lacks profile array {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"profile arrays are inconsistent: {exc}") from None


def _pairs(prefix: str, table: Mapping[str, Mapping[str, int]]) -> dict[str, np.ndarray]:
    """owner index / name / value arrays for a table of owner -> name -> value."""
    owners = sorted(table)
    index = {o: i for i, o in enumerate(owners)}
    rows = [(index[o], name, int(v)) for o in owners for name, v in sorted(table[o].items())]
    return {f"{prefix}_owner_names": np.array(owners, dtype=str) if owners
            else np.array([], dtype="<U1"),
            f"{prefix}_owner": np.array([i for i, _, _ in rows], dtype=np.int32),
            f"{prefix}_name": np.array([n for _, n, _ in rows], dtype=str) if rows
            else np.array([], dtype="<U1"),
            f"{prefix}_value": np.array([v for _, _, v in rows], dtype=np.int32)}


def _unpairs(prefix: str, arrays: Mapping[str, np.ndarray],
             known: tuple[str, ...]) -> dict[str, dict[str, int]]:
    owners = [str(o) for o in arrays[f"{prefix}_owner_names"]]
    idx = np.asarray(arrays[f"{prefix}_owner"], dtype=np.int64)
    names = [str(n) for n in arrays[f"{prefix}_name"]]
    values = np.asarray(arrays[f"{prefix}_value"], dtype=np.int64)
    if not (len(idx) == len(names) == len(values)):
        raise ModelError(f"profile arrays {prefix}_* differ in length")
    if idx.size and (idx.min() < 0 or idx.max() >= len(owners)):
        raise ModelError(f"profile array {prefix}_owner points outside its owner list")
    out: dict[str, dict[str, int]] = {o: {} for o in owners}
    for i, name, value in zip(idx.tolist(), names, values.tolist()):
        out[owners[i]][name] = int(value)
    return out
