"""From a fleet to a time-sorted history of (ActionRequest, Label) pairs.

Why generate everything, then sort: each agent's behaviour is a sequential
program in its own time, but the history interleaves all agents by event
time, exactly as a topic read back in time order would.  A few hundred
thousand small tuples sort in well under a second, and the sorted order fixes
the request ids (drawn from one seeded stream), so the same seed always gives
the same bytes.

Requests are built with the ``ActionRequest`` constructor rather than
``ActionRequest.create``: the bytes are the same (``encode`` serialises the
same fields in the same order), but ``create`` re-validates every value at
about 50 µs an action, which alone would cap generation near 20k actions/s.
Every value is valid by construction (fixed action and type vocabularies,
UUIDs, Cedar-safe context values); ``SimConfig(validate=True)`` runs the SDK's
checks on every request anyway, and the tests decode every line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from holdgate.events import SCHEMA_VERSION, ActionRequest, Resource
from holdgate.sim.attacks import ATTACK_BEHAVIOURS
from holdgate.sim.config import SimConfig
from holdgate.sim.personas import BEHAVIOURS, Event
from holdgate.sim.rand import derive, request_id
from holdgate.sim.world import AgentSpec, Fleet, build_fleet

__all__ = ["Label", "Simulation", "simulate", "agent_events"]


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one request, kept OUT of the request (the decoder refuses
    unknown fields, and a detector must never see it).

    ``persona`` is the agent's (an attack agent keeps its attack's name on its
    benign actions too); ``malicious``/``attack`` are per action: an attack
    agent's actions before and around its attack are benign.
    """

    request_id: str
    agent_id: str
    persona: str
    malicious: bool
    attack: str | None

    def to_obj(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "agent_id": self.agent_id,
                "persona": self.persona, "malicious": self.malicious, "attack": self.attack}


def agent_events(fleet: Fleet, agent: AgentSpec) -> list[Event]:
    """Everything one agent does over the span, unsorted, from its own seeded stream."""
    config = fleet.config
    rng = derive(config.seed, "agent", agent.agent_id)
    t0 = agent.appears_at if agent.appears_at is not None else config.start
    attack = ATTACK_BEHAVIOURS.get(agent.persona)
    if attack is not None:
        return attack(agent, fleet.world, rng, t0, config.end,
                      (config.attack_start, config.end))
    return BEHAVIOURS[agent.role](agent, fleet.world, rng, t0, config.end)


class Simulation:
    """The whole history of one config, generated once; iterate it for pairs.

    ``len()`` is known before iterating (progress bars), and iterating twice
    gives the same requests with the same ids.
    """

    def __init__(self, config: SimConfig | None = None, *, fleet: Fleet | None = None) -> None:
        self.fleet = fleet if fleet is not None else build_fleet(config or SimConfig())
        self.config = self.fleet.config
        rows: list[tuple[float, int, int, Event]] = []
        start, end = self.config.start, self.config.end
        for agent in self.fleet.agents:
            index = agent.index
            rows += [(e[0], index, seq, e)
                     for seq, e in enumerate(agent_events(self.fleet, agent))
                     if start <= e[0] < end]
        rows.sort()       # (time, agent, seq) is unique: the event itself is never compared
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[tuple[ActionRequest, Label]]:
        validate = self.config.validate
        for t, request_id_, agent, (_, action, rtype, rid, attrs, ctx, attack) in self._walk():
            request = ActionRequest(
                request_id=request_id_, agent_id=agent.agent_id, action=action,
                resource=Resource(type=rtype, id=rid, attributes=dict(attrs) if attrs else {}),
                context=dict(ctx) if ctx else {}, occurred_at=t)
            if validate:
                request = ActionRequest.from_obj(request.to_obj())
            yield request, Label(request_id_, agent.agent_id, agent.persona,
                                 attack is not None, attack)

    def records(self) -> Iterator[tuple[float, dict[str, Any], Label]]:
        """``(occurred_at, request.to_obj(), label)`` without building request objects.

        ``orjson.dumps`` of the object gives exactly ``encode(request)`` of
        :meth:`__iter__` (the tests compare every line); writers use this to
        serialise many at once (see ``output.write_history``).
        """
        if self.config.validate:
            for request, label in self:
                yield request.occurred_at, request.to_obj(), label
            return
        for t, request_id_, agent, (_, action, rtype, rid, attrs, ctx, attack) in self._walk():
            yield t, {"schema_version": SCHEMA_VERSION, "request_id": request_id_,
                      "agent_id": agent.agent_id, "action": action,
                      "resource": {"type": rtype, "id": rid, "attributes": attrs or {}},
                      "context": ctx or {}, "occurred_at": t}, \
                Label(request_id_, agent.agent_id, agent.persona, attack is not None, attack)

    def _walk(self) -> Iterator[tuple[float, str, AgentSpec, Event]]:
        c = self.config       # ids differ whenever the history does, even under one seed
        ids = derive(c.seed, "request-ids", c.start, c.hours, c.agents, c.attacks, c.attack_after)
        agents = self.fleet.agents
        for t, index, _, event in self._rows:
            yield t, request_id(ids), agents[index], event


def simulate(config: SimConfig | None = None) -> Iterator[tuple[ActionRequest, Label]]:
    """``(request, label)`` pairs in event-time order for ``config`` (defaults: 72 h, seed 1)."""
    return iter(Simulation(config))
