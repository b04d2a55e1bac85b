"""Attack personas: an agent that behaves like its benign role until its attack starts.

Why overlay rather than a separate attacker: in production the dangerous
actions come from agents the fleet already knows (a stuck loop, a hijacked
runtime, a leaked credential), so every attack agent first builds an ordinary
history with its cover role's behaviour and is labelled per action: only the
attack's own actions are malicious.  Attacks start at seeded times in
``window`` (after the config's ``attack_after``), and their strength (rate,
duration, targets, pacing) is drawn per seed within the ranges documented on
each function.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

from holdgate.sim.personas import BEHAVIOURS, Event
from holdgate.sim.rand import lognormal, weighted
from holdgate.sim.world import AgentSpec, Entity, World

__all__ = ["Attack", "ATTACK_BEHAVIOURS", "runaway_loop", "sweep", "exfiltration",
           "compromised", "RESOURCE_TYPE"]

Attack = Callable[[AgentSpec, World, random.Random, float, float, tuple[float, float]],
                  list[Event]]

#: The resource type of every action (the schema's ``appliesTo``).
RESOURCE_TYPE: dict[str, str] = {
    "tickets.read": "Ticket", "tickets.reply": "Ticket", "customers.read": "Customer",
    "customers.export": "Customer", "invoices.read": "Invoice", "payments.refund": "Payment",
    "emails.send": "Email", "repo.read": "Repository", "repo.push": "Repository",
    "deploy.create": "Deployment", "records.read": "Record", "records.delete": "Record",
}
#: What a hijacked agent reaches for, and how much more than the rest.
_TEMPTING = (("records.delete", 3.0), ("customers.export", 3.0), ("repo.push", 2.0),
             ("records.read", 2.0), ("deploy.create", 1.0), ("payments.refund", 1.0),
             ("emails.send", 1.0), ("repo.read", 1.0), ("invoices.read", 0.5),
             ("tickets.read", 0.3), ("customers.read", 0.5))


WARMUP = 30


def _start(rng: random.Random, window: tuple[float, float], duration: float,
           history: list[Event]) -> float:
    """A start in the window that leaves room for the whole attack, after the agent
    has built a history of at least :data:`WARMUP` benign actions when it can."""
    w0, w1 = window
    latest = max(w0, w1 - duration - 60.0)
    return rng.uniform(min(_warm(window, history), latest), latest)


def _warm(window: tuple[float, float], history: list[Event]) -> float:
    """The earliest attack time: the window's start, or later after WARMUP benign actions."""
    times = sorted(e[0] for e in history)
    return max(window[0], times[WARMUP] if len(times) > WARMUP else window[0])


def _cap(duration: float, window: tuple[float, float], share: float) -> float:
    return min(duration, (window[1] - window[0]) * share)


def runaway_loop(agent: AgentSpec, world: World, rng: random.Random, t0: float, t1: float,
                 window: tuple[float, float]) -> list[Event]:
    """The agent's last action repeated identically at 50..300/s for 10..60 s.

    The agent is stuck meanwhile and comes back 1..30 minutes after the loop
    (someone restarted it); its other actions stay benign.
    """
    benign = BEHAVIOURS[agent.role](agent, world, rng, t0, t1)
    rate, duration = rng.uniform(50.0, 300.0), _cap(rng.uniform(10.0, 60.0), window, 0.3)
    early, late = _warm(window, benign), window[1] - duration - 1.0
    triggers = [e for e in benign if early <= e[0] <= late]
    if triggers:
        trigger = rng.choice(triggers)
        start = trigger[0] + rng.uniform(0.05, 1.5)
        repeated = trigger[1:6]
    else:                                          # the cover role was off duty all window
        start = _start(rng, window, duration, benign)
        repeated = _default_action(agent.role, world, rng)
    end, restart = start + duration, start + duration + rng.uniform(60.0, 1800.0)
    out = [e for e in benign if not start <= e[0] < restart]
    t = start
    while t < end:
        out.append((t, *repeated, "runaway_loop"))
        t += rng.uniform(0.6, 1.4) / rate
        if rng.random() < 0.002:                   # a garbage collection, a slow call
            t += rng.uniform(0.05, 0.5)
    return out


def _default_action(role: str, world: World, rng: random.Random) -> tuple[Any, ...]:
    if role == "coding":
        repo = world.repo_pop.draw(rng)
        return ("repo.read", "Repository", repo.id, None, {"path": "src/main.py", "ref": "main"})
    if role == "billing":
        return ("invoices.read", "Invoice", f"{world.invoice_prefix}{rng.randint(10_000, 99_999)}",
                None, None)
    return ("tickets.reply", "Ticket", f"{world.ticket_prefix}{rng.randint(100_000, 999_999)}",
            None, {"channel": "email"})


def sweep(agent: AgentSpec, world: World, rng: random.Random, t0: float, t1: float,
          window: tuple[float, float]) -> list[Event]:
    """500..4000 DISTINCT customers or records read at 25..200/s (capped at 90% of the pool)."""
    out = BEHAVIOURS[agent.role](agent, world, rng, t0, t1)
    rate = rng.uniform(25.0, 200.0)
    kind = weighted(rng, [("customers", 0.5), ("records", 0.3), ("both", 0.2)])
    pool: list[tuple[str, Entity]] = []
    if kind in ("customers", "both"):
        pool += [("customers.read", c) for c in world.customers]
    if kind in ("records", "both"):
        pool += [("records.read", r) for r in world.records]
    if rng.random() < 0.5:
        rng.shuffle(pool)                          # else in id order: an enumeration
    count = min(int(rng.uniform(500, 4000)), int(len(pool) * 0.9))
    t = _start(rng, window, count / rate, out)
    labelled = rng.random() < 0.5                  # some attack tooling mimics the labels
    for action, entity in pool[:count]:
        ctx = {"data_sensitivity": "pii"} if labelled else None
        out.append((t, action, entity.type, entity.id, None, ctx, "sweep"))
        t += rng.expovariate(rate)
    return out


def exfiltration(agent: AgentSpec, world: World, rng: random.Random, t0: float, t1: float,
                 window: tuple[float, float]) -> list[Event]:
    """One sensitive read on a resource it never read, every 2..12 s, for 1..6 hours.

    customers.read / records.read / customers.export, each on a distinct
    resource, never with ``data_sensitivity`` (the agent omits it); half of
    the attackers dress the reads with a made-up ticket reference.  The
    cover role's normal work goes on around it.
    """
    out = BEHAVIOURS[agent.role](agent, world, rng, t0, t1)
    interval, sigma = rng.uniform(2.0, 12.0), rng.uniform(0.1, 0.5)
    duration = _cap(rng.uniform(1.0, 6.0) * 3600.0, window, 0.8)
    mix = [("customers.read", rng.uniform(0.4, 0.8)), ("records.read", rng.uniform(0.1, 0.4)),
           ("customers.export", rng.uniform(0.05, 0.25))]
    customers = _shuffled(rng, world.customers)
    records = _shuffled(rng, world.records)
    ticket = f"{world.ticket_prefix}{rng.randint(100_000, 999_999)}" \
        if rng.random() < 0.5 else None
    start = _start(rng, window, duration, out)
    t = start
    while t < start + duration:
        action = weighted(rng, mix)
        entity = next(records if action == "records.read" else customers, None)
        if entity is None:
            break
        ctx = {"ticket": ticket} if ticket else None
        out.append((t, action, entity.type, entity.id, None, ctx, "exfiltration"))
        t += lognormal(rng, interval, sigma)
        if rng.random() < 0.01:                    # pauses, to stay under rate limits
            t += rng.uniform(60.0, 600.0)
    return out


def _shuffled(rng: random.Random, items: list[Entity]) -> Iterator[Entity]:
    order = list(items)
    rng.shuffle(order)
    return iter(order)


def compromised(agent: AgentSpec, world: World, rng: random.Random, t0: float, t1: float,
                window: tuple[float, float]) -> list[Event]:
    """Normal work, then 10..60 minutes of actions it never took, at least one of them on
    a resource type it never touched (a support agent doing records.delete,
    customers.export, repo.push...), one every few seconds to a minute."""
    benign = BEHAVIOURS[agent.role](agent, world, rng, t0, t1)
    duration = _cap(rng.uniform(600.0, 3600.0), window, 0.5)
    start = _start(rng, window, duration, benign)
    before = [e for e in benign if e[0] < start]
    used, used_types = {e[1] for e in before}, {e[2] for e in before}
    options = [(a, w) for a, w in _TEMPTING if a not in used]
    chosen: list[str] = []
    for _ in range(min(len(options), rng.randint(2, 4))):
        pick = weighted(rng, [(a, w) for a, w in options if a not in chosen])
        chosen.append(pick)
    if all(RESOURCE_TYPE[a] in used_types for a in chosen):
        fresh = [a for a, _ in options if RESOURCE_TYPE[a] not in used_types]
        if fresh:
            chosen[-1] = rng.choice(fresh)
    weights = [(a, rng.uniform(0.5, 2.0)) for a in chosen]
    pace = rng.uniform(3.0, 30.0)
    out = list(benign)
    t = start
    while t < start + duration:
        action = weighted(rng, weights)
        out.append((t, action, *_target(action, world, rng), "compromised"))
        t += lognormal(rng, pace, 0.8)
    return out


def _target(action: str, world: World,
            rng: random.Random) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
    """(type, id, attributes, context) of a plausible target for ``action``."""
    rtype = RESOURCE_TYPE[action]
    if rtype == "Record":
        return rtype, world.record_pop.draw(rng).id, None, None
    if rtype == "Customer":
        return rtype, world.customer_pop.draw(rng).id, None, None
    if rtype == "Repository":
        prod = [r for r in world.repositories if r.attrs["environment"] == "production"]
        repo = rng.choice(prod) if prod and rng.random() < 0.5 else \
            rng.choice(world.repositories)
        ctx = {"branch": "main", "commit": f"{rng.getrandbits(28):07x}"} \
            if action == "repo.push" else {"path": "config/secrets.yaml", "ref": "main"}
        return rtype, repo.id, None, ctx
    if rtype == "Deployment":
        return rtype, rng.choice(world.deployments).id, None, None
    if rtype == "Payment":
        payment = rng.choice(world.payments)
        return rtype, payment.id, None, {"amount_cents": int(payment.attrs["amount_cents"])}
    if rtype == "Email":
        return rtype, f"msg-{rng.getrandbits(40):010x}", None, \
            {"recipient_count": rng.randint(50, 2000)}
    if rtype == "Invoice":
        return rtype, f"{world.invoice_prefix}{rng.randint(10_000, 99_999)}", None, None
    return rtype, f"{world.ticket_prefix}{rng.randint(100_000, 999_999)}", None, None


ATTACK_BEHAVIOURS: dict[str, Attack] = {"runaway_loop": runaway_loop, "sweep": sweep,
                                        "exfiltration": exfiltration,
                                        "compromised": compromised}
