"""Benign behaviour: support, billing and coding agents, and the nightly batch job.

Each behaviour is a function ``(agent, world, rng, t0, t1) -> [Event, ...]``
that walks the agent's own working time and emits what it would do.  Why this
shape: a persona is a small program with state (open tickets, the repository
it is working in, the batch cursor), which is easier to keep realistic as
code than as a table of rates.  Every parameter (pace, mix of actions,
probability of each step, how diligently it labels sensitive reads) is drawn
per agent from ``rng``, so two agents of the same persona differ, and a seed
never repeats another's fleet.

An :data:`Event` is ``(time, action, resource type, resource id, resource
attributes or None, context or None, attack name or None)``.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from holdgate.sim.rand import lognormal, weighted
from holdgate.sim.schedule import DAY, draw_shift, work_intervals
from holdgate.sim.world import AgentSpec, Entity, World

__all__ = ["Event", "Behaviour", "BEHAVIOURS", "support", "billing", "coding", "batch",
           "label_habit", "ROLE_ACTIONS"]

Event = tuple[float, str, str, str, "dict[str, Any] | None", "dict[str, Any] | None",
              "str | None"]
Behaviour = Callable[[AgentSpec, World, random.Random, float, float], list[Event]]

#: What each role does when benign (the compromised persona turns to the others).
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "support": frozenset({"tickets.read", "tickets.reply", "customers.read", "emails.send"}),
    "billing": frozenset({"invoices.read", "customers.read", "payments.refund", "emails.send"}),
    "coding": frozenset({"repo.read", "repo.push", "deploy.create"}),
    "data": frozenset({"customers.read", "records.read"}),
}


def label_habit(rng: random.Random) -> float:
    """Probability that this agent puts ``data_sensitivity`` on a sensitive read.

    Most runtimes label diligently; some never do.  So an unlabelled read is
    suspicious, not proof: the exfiltration persona's omission has to be
    learned against agents that omit it for benign reasons.
    """
    return rng.uniform(0.9, 1.0) if rng.random() < 0.8 else rng.uniform(0.0, 0.4)


def _ctx(rng: random.Random, p_label: float, label: str, **values: Any) -> dict[str, Any]:
    if rng.random() < p_label:
        values["data_sensitivity"] = label
    return values


def _msg(rng: random.Random) -> str:
    return f"msg-{rng.getrandbits(40):010x}"


def support(agent: AgentSpec, world: World, rng: random.Random, t0: float,
            t1: float) -> list[Event]:
    """Tickets one at a time: read, look up the customer, think, reply, maybe email."""
    out: list[Event] = []
    shift = draw_shift(rng, agent.tz)
    gap = lognormal(rng, 300.0, 0.45)             # median idle seconds between tickets
    think = lognormal(rng, 25.0, 0.35)
    reply_think = lognormal(rng, 100.0, 0.4)
    p_lookup, p_history = rng.uniform(0.55, 0.95), rng.uniform(0.03, 0.3)
    p_email, p_more = rng.uniform(0.15, 0.7), rng.uniform(0.1, 0.45)
    p_follow, p_triage = rng.uniform(0.08, 0.35), rng.uniform(0.05, 0.2)
    p_label, p_local = label_habit(rng), rng.uniform(0.4, 0.9)
    p_retry = rng.uniform(0.0, 0.015)
    channel = rng.choice(("email", "chat", "portal"))
    oncall = rng.choice((0.0, 0.0, rng.uniform(0.05, 0.4)))     # tickets/hour off shift
    regional = world.regional_pop.get(agent.region, world.customer_pop)
    waiting: list[tuple[str, Entity, str]] = []

    def emit(t: float, action: str, rtype: str, rid: str, attrs: dict[str, Any] | None,
             ctx: dict[str, Any] | None) -> None:
        out.append((t, action, rtype, rid, attrs, ctx, None))
        if rng.random() < p_retry:     # the runtime timed out and sent it again
            out.append((t + rng.uniform(1.0, 6.0), action, rtype, rid, attrs, ctx, None))

    def session(t: float, load: float) -> float:
        if waiting and rng.random() < p_follow:
            tid, customer, prio = waiting.pop(rng.randrange(len(waiting)))
        else:
            tid = f"{world.ticket_prefix}{rng.randint(100_000, 999_999)}"
            pool = regional if rng.random() < p_local else world.customer_pop
            customer, prio = pool.draw(rng), weighted(rng, world.priorities)
        speed = 0.7 if prio in ("high", "urgent") else 1.0
        emit(t, "tickets.read", "Ticket", tid, {"priority": prio}, None)
        t += lognormal(rng, think * speed, 0.9)
        if rng.random() < p_lookup:
            emit(t, "customers.read", "Customer", customer.id, None,
                 _ctx(rng, p_label, "pii", ticket=tid))
            if rng.random() < p_history:
                for _ in range(rng.randint(1, 3)):
                    t += lognormal(rng, think * 0.5, 0.8)
                    old = f"{world.ticket_prefix}{rng.randint(100_000, 999_999)}"
                    emit(t, "tickets.read", "Ticket", old, {"priority": "low"}, None)
        if rng.random() < p_triage:
            waiting.append((tid, customer, prio))
            return t
        replies = 1
        while replies < 4 and rng.random() < p_more:
            replies += 1
        for _ in range(replies):
            t += lognormal(rng, reply_think * speed / max(load, 0.3) ** 0.3, 0.8)
            emit(t, "tickets.reply", "Ticket", tid, None, {"channel": channel})
        if rng.random() < p_email:
            t += lognormal(rng, think, 0.8)
            count = 1 if rng.random() < 0.9 else rng.randint(2, 5)
            emit(t, "emails.send", "Email", _msg(rng),
                 {"recipient_domain": world.domains[customer.id]},
                 {"recipient_count": count, "ticket": tid})
        if rng.random() < 0.25 and len(waiting) < 40:
            waiting.append((tid, customer, prio))
        return t

    for a, b, load in work_intervals(shift, rng, t0, t1):
        t = a + rng.expovariate(1.0 / gap) * 0.5
        while t < b:
            t = session(t, load) + lognormal(rng, gap / load, 0.7)
    if oncall:
        t = t0 + rng.expovariate(oncall / 3600.0)
        while t < t1:
            t = session(t, 1.0) + rng.expovariate(oncall / 3600.0)
    return out


def billing(agent: AgentSpec, world: World, rng: random.Random, t0: float,
            t1: float) -> list[Event]:
    """Invoice reviews in sessions; the odd refund (with its amount) and a receipt email."""
    out: list[Event] = []
    shift = draw_shift(rng, agent.tz, early=7.0, late=10.0, hours=(6.0, 9.0))
    session_gap = lognormal(rng, 1500.0, 0.5)
    per_session, inv_gap = rng.uniform(6, 30), rng.uniform(3.0, 15.0)
    p_customer, p_refund = rng.uniform(0.1, 0.4), rng.uniform(0.01, 0.05)
    p_receipt, p_label = rng.uniform(0.6, 0.95), label_habit(rng)
    head, growth = rng.randint(20_000, 90_000), rng.uniform(20, 120)     # invoices per hour
    reasons = [("duplicate", rng.random()), ("goodwill", rng.random()),
               ("service-outage", 0.3 * rng.random()), ("cancelled", rng.random())]
    for a, b, load in work_intervals(shift, rng, t0, t1):
        t = a + rng.uniform(0, 600)
        while t < b:
            for _ in range(max(1, int(lognormal(rng, per_session * load, 0.7)))):
                latest = head + int((t - t0) / 3600.0 * growth)
                invoice = f"{world.invoice_prefix}{latest - int(rng.expovariate(1 / 400.0))}"
                out.append((t, "invoices.read", "Invoice", invoice, None, None, None))
                if rng.random() < p_customer:
                    t += lognormal(rng, 4.0, 0.6)
                    customer = world.customer_pop.draw(rng)
                    out.append((t, "customers.read", "Customer", customer.id, None,
                                _ctx(rng, p_label, "pii", invoice=invoice), None))
                if rng.random() < p_refund:
                    t = _refund(world, rng, t + lognormal(rng, 30.0, 0.7), invoice, reasons,
                                p_receipt, out)
                t += lognormal(rng, inv_gap, 0.8)
            t += lognormal(rng, session_gap / load, 0.7)
    return out


def _refund(world: World, rng: random.Random, t: float, invoice: str,
            reasons: list[tuple[str, float]], p_receipt: float, out: list[Event]) -> float:
    payment = rng.choice(world.payments)
    paid = int(payment.attrs["amount_cents"])
    amount = paid if rng.random() < 0.4 else max(1, int(paid * rng.uniform(0.05, 0.9)))
    ctx: dict[str, Any] = {"amount_cents": amount, "reason": weighted(rng, reasons),
                           "invoice": invoice}
    if amount > 50_000:                 # a diligent agent gets the approval first
        t += lognormal(rng, 600.0, 0.8)
        ctx["approvals"] = ["human"]
    out.append((t, "payments.refund", "Payment", payment.id, None, ctx, None))
    if rng.random() < p_receipt:
        t += lognormal(rng, 20.0, 0.7)
        out.append((t, "emails.send", "Email", _msg(rng), None,
                    {"recipient_count": 1, "template": "refund-receipt"}, None))
    return t


def coding(agent: AgentSpec, world: World, rng: random.Random, t0: float,
           t1: float) -> list[Event]:
    """Bursts of repo.read, pushes to staging/development, a deploy now and then."""
    out: list[Event] = []
    shift = draw_shift(rng, agent.tz, early=8.0, late=11.0, hours=(6.0, 11.0))
    session_gap = lognormal(rng, 1500.0, 0.5)
    reads, read_gap = rng.uniform(8, 45), rng.uniform(0.25, 2.0)
    p_push, p_deploy, p_prod = rng.uniform(0.25, 0.7), rng.uniform(0.1, 0.35), \
        rng.uniform(0.02, 0.12)
    pushable = [r for r in world.repositories if r.attrs["environment"] != "production"] \
        or world.repositories
    staging = [d for d in world.deployments if d.attrs["environment"] == "staging"]
    prod = {d.attrs["service"]: d for d in world.deployments
            if d.attrs["environment"] == "production"}

    def session(t: float, load: float) -> float:
        repo = world.repo_pop.draw(rng)
        branch = "main" if rng.random() < 0.3 else f"feat-{rng.randint(1, 999)}"
        for _ in range(max(1, int(lognormal(rng, reads * load, 0.7)))):
            target = repo if rng.random() > 0.05 else world.repo_pop.draw(rng)
            out.append((t, "repo.read", "Repository", target.id, None,
                        {"path": world.files[target.id].draw(rng), "ref": branch}, None))
            t += lognormal(rng, read_gap, 0.6)
            if rng.random() < 0.08:          # runs the tests, thinks, plans
                t += lognormal(rng, 45.0, 0.9)
        if rng.random() >= p_push:
            return t
        target = repo if repo in pushable else rng.choice(pushable)
        commit = ""
        for _ in range(rng.randint(1, 3)):
            t += lognormal(rng, 90.0, 0.9)
            commit = f"{rng.getrandbits(28):07x}"
            out.append((t, "repo.push", "Repository", target.id, None,
                        {"branch": branch, "commit": commit}, None))
        if staging and rng.random() < p_deploy:
            t += lognormal(rng, 240.0, 0.6)
            deployment = rng.choice(staging)
            out.append((t, "deploy.create", "Deployment", deployment.id, None,
                        {"commit": commit}, None))
            if rng.random() < p_prod:        # rare, and with the human's approval
                t += lognormal(rng, 1800.0, 0.5)
                out.append((t, "deploy.create", "Deployment",
                            prod[deployment.attrs["service"]].id, None,
                            {"commit": commit, "approvals": ["human"],
                             "change": f"CHG-{rng.randint(1000, 9999)}"}, None))
        return t

    for a, b, load in work_intervals(shift, rng, t0, t1):
        t = a + rng.uniform(0, 900)
        while t < b:
            t = session(t, load) + lognormal(rng, session_gap / load, 0.8)
    return out


def batch(agent: AgentSpec, world: World, rng: random.Random, t0: float,
          t1: float) -> list[Event]:
    """A legitimate nightly job: at a fixed UTC time, ~40 reads/s for ~3 minutes, nothing else.

    It walks customers then records with a cursor that carries over from
    night to night (an incremental sync), so it reads many distinct resources
    fast: exactly what a sweep looks like, except that it is expected.
    """
    out: list[Event] = []
    hour = round(rng.uniform(0.5, 5.0) * 12) / 12          # on a 5-minute boundary
    rate0, dur0 = rng.uniform(36.0, 44.0), rng.uniform(160.0, 200.0)
    shape, page = rng.uniform(4.0, 12.0), rng.randint(200, 1000)
    job = rng.choice(("nightly-sync", "crm-export", "warehouse-load", "dedupe"))
    p_label = label_habit(rng)
    targets = [("customers.read", c) for c in world.customers] + \
        [("records.read", r) for r in world.readable_records]
    cursor = rng.randrange(len(targets))
    day = t0 // DAY * DAY
    while day < t1:
        begin = day + hour * 3600.0 + (rng.uniform(0, 15) if rng.random() < 0.9
                                       else rng.uniform(30, 300))
        rate = rate0 * rng.uniform(0.95, 1.05)
        end = begin + dur0 * rng.uniform(0.92, 1.08)
        run = f"{job}-{int(day // DAY)}"
        t, k = begin, 0
        while t < end:
            if t >= t0:
                action, entity = targets[cursor % len(targets)]
                label = "pii" if action == "customers.read" else "internal"
                out.append((t, action, entity.type, entity.id, None,
                            _ctx(rng, p_label, label, job=job, run=run), None))
            cursor += 1
            k += 1
            t += rng.gammavariate(shape, 1.0 / (rate * shape))
            if k % page == 0:                  # commits a page
                t += rng.uniform(0.05, 0.4)
        day += DAY
    return out


BEHAVIOURS: dict[str, Behaviour] = {"support": support, "billing": billing, "coding": coding,
                                    "data": batch}
