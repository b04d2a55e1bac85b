"""Labelled, seeded agent traffic with known ground truth, for fitting and backtesting.

Why: a baseline or detector is only as credible as the traffic it was judged
on.  This package generates a fleet's history (benign personas with working
hours, think times, Zipf-like resource popularity and session structure, plus
attacks at seeded times) together with a label per action, so an analyst can
fit on the early part, test on the later part and count exactly what was
caught.  Everything that could be memorised (rates, shifts, pool sizes,
popularity, naming, team layout, attack strength and timing) is drawn from the
seed: fit on one seed, evaluate on others.

Personas (``config.PERSONAS``):

    support       human-paced tickets: read, customer lookup, replies, emails
    coding        bursts of repo.read, pushes to staging, rare approved deploys
    billing       invoice reviews, occasional refunds (amount_cents), receipts
    batch         legitimate nightly job (role data): ~40 reads/s for ~3 min
    new_agent     a benign support/billing/coding agent appearing mid-stream
    runaway_loop  attack: its last action repeated identically at 50..300/s
    sweep         attack: many distinct customers/records at machine speed
    exfiltration  attack: a distinct sensitive read every few seconds for hours,
                  without data_sensitivity
    compromised   attack: normal for long, then actions and resource types it
                  never used (records.delete, customers.export, repo.push...)

Attack agents are benign before their attack; labels are per action.

API::

    from holdgate.sim import SimConfig, Simulation, simulate, write_bundle, write_history

    config = SimConfig(seed=7, hours=72, agents=20)        # attacks: all
    sim = Simulation(config)                               # generated, time-sorted
    for request, label in sim:                             # ActionRequest, Label
        ...
    with open("h.jsonl", "wb") as out, open("labels.jsonl", "wb") as lab:
        summary = write_history(sim, out, lab)             # encode() per line
    write_bundle("bundle/", sim.fleet)                     # replays without UNKNOWN_AGENT

    simulate(config)     # the same pairs as a plain iterator
    Label(request_id, agent_id, persona, malicious, attack)
    config.attack_start  # no malicious action before it: the fit/test split

Live: ``publish(sim, KafkaSink(settings), speed=...)`` (``holdgate.sim.publish``).
The command line is ``holdgate simulate``.
"""
from __future__ import annotations

from holdgate.sim.bundle import fleet_entities, write_bundle
from holdgate.sim.config import (
    ATTACKS, BENIGN_PERSONAS, DEFAULT_START, PERSONAS, SimConfig, parse_attacks, parse_start,
)
from holdgate.sim.generate import Label, Simulation, agent_events, simulate
from holdgate.sim.output import AttackSpan, Summary, write_history
from holdgate.sim.world import AgentSpec, Entity, Fleet, World, build_fleet

__all__ = [
    "SimConfig", "ATTACKS", "BENIGN_PERSONAS", "PERSONAS", "DEFAULT_START", "parse_attacks",
    "parse_start", "Label", "Simulation", "simulate", "agent_events", "Summary", "AttackSpan",
    "write_history", "write_bundle", "fleet_entities", "AgentSpec", "Entity", "Fleet", "World",
    "build_fleet",
]
