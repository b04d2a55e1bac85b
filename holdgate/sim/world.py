"""The simulated company: its resources (customers, records, payments, repositories,
deployments) and its agent fleet, all drawn from the seed.

Why draw the *world* too, not only the traffic: a baseline that keys on a
resource id, a pool size, an agent naming scheme or a team layout seen in one
fleet must not carry over to the next.  Pool sizes, sensitivity mixes,
popularity skew, naming styles, team time zones and the fleet's composition
all change with the seed.  Resources that policies read attributes of live
here, so the bundle (`holdgate.sim.bundle`) can put exactly these in
``entities.json`` and every simulated action decides without a policy error.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from holdgate.sim.config import SimConfig
from holdgate.sim.rand import Zipf, derive, weighted
from holdgate.sim.schedule import DAY

__all__ = ["Entity", "World", "AgentSpec", "Fleet", "build_fleet", "build_world"]

REGIONS = ("eu", "us", "apac", "latam")
_TABLES = (("orders", 0.05), ("events", 0.02), ("accounts", 0.10), ("contracts", 0.15),
           ("hr", 0.85), ("analytics", 0.02), ("shipments", 0.03), ("payroll", 0.95),
           ("support_archive", 0.10), ("leads", 0.05))
_SERVICES = ("payments-api", "web", "search", "billing-worker", "notifications", "auth",
             "catalog", "reports", "gateway", "ledger")
_REPO_WORDS = ("core", "api", "web", "infra", "docs", "sdk", "cli", "ml", "etl", "mobile",
               "admin", "design", "terraform", "lib", "proto", "jobs")
_FILE_DIRS = ("src", "src/app", "src/lib", "tests", "docs", "scripts", "config", "src/api",
              "src/models", "deploy")
_FILE_NAMES = ("main", "util", "models", "handlers", "routes", "client", "schema", "config",
               "views", "service", "db", "auth", "cache", "jobs", "types", "index", "README")
_OWNER_NAMES = ("dana", "omar", "lee", "priya", "sam", "noor", "ines", "kofi", "mei", "tomas",
                "ayla", "ravi", "jon", "lena", "yusuf", "eva")
_ROLE_PREFIXES = {"support": ("support", "helpdesk", "care", "cs"),
                  "billing": ("billing", "finance", "ar"),
                  "coding": ("coder", "dev", "codegen", "swe"),
                  "data": ("etl", "nightly-sync", "warehouse", "batch")}
_ROLE_TEAMS = {"billing": ("finance", "revenue-ops"), "coding": ("platform", "dev-experience"),
               "data": ("analytics", "data-eng")}
_TIMEZONES = ((0.0, "emea"), (1.0, "emea"), (-5.0, "us"), (-8.0, "us"), (5.5, "apac"),
              (8.0, "apac"), (-3.0, "latam"))


@dataclass(frozen=True, slots=True)
class Entity:
    """One resource as it appears in ``entities.json`` (and in requests: type and id)."""

    type: str
    id: str
    attrs: dict[str, Any]


@dataclass(slots=True)
class World:
    """Resource pools and their popularity samplers."""

    customers: list[Entity]
    records: list[Entity]
    payments: list[Entity]
    repositories: list[Entity]
    deployments: list[Entity]
    customer_pop: Zipf[Entity]
    regional_pop: dict[str, Zipf[Entity]]
    record_pop: Zipf[Entity]
    repo_pop: Zipf[Entity]
    files: dict[str, Zipf[str]]
    domains: dict[str, str]
    ticket_prefix: str
    invoice_prefix: str
    priorities: list[tuple[str, float]]

    def entities(self) -> list[Entity]:
        return [*self.customers, *self.records, *self.payments, *self.repositories,
                *self.deployments]

    @property
    def readable_records(self) -> list[Entity]:
        """Records benign readers touch: anything not restricted (that needs a human)."""
        return [r for r in self.records if r.attrs["sensitivity"] != "restricted"]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One simulated agent: who it is (bundle entity) and how it behaves (persona)."""

    index: int
    agent_id: str
    persona: str          # a name of config.PERSONAS
    role: str             # support | billing | coding | data: its benign behaviour
    team: str
    owner: str
    tz: float             # hours from UTC of its working day
    region: str           # where its customers mostly are
    appears_at: float | None = None   # new agents: first possible action


@dataclass(slots=True)
class Fleet:
    config: SimConfig
    world: World
    agents: list[AgentSpec] = field(default_factory=list)

    def by_persona(self, persona: str) -> list[AgentSpec]:
        return [a for a in self.agents if a.persona == persona]


def build_world(rng: random.Random) -> World:
    """Pools sized a few thousand: enough distinct targets for sweeps and exfiltration,
    small enough that the bundle loads in well under a second."""
    pii_mix = [("low", rng.uniform(0.3, 0.6)), ("medium", rng.uniform(0.2, 0.4)),
               ("high", rng.uniform(0.08, 0.25))]
    region_mix = [(r, rng.uniform(0.2, 1.0)) for r in REGIONS]
    first = rng.randrange(10_000, 60_000)
    ids = rng.sample(range(first, first + 200_000), rng.randint(3000, 6000))
    customers = [Entity("Customer", f"cus-{i}", {"pii_level": weighted(rng, pii_mix),
                                                 "region": weighted(rng, region_mix)})
                 for i in sorted(ids)]
    tables = rng.sample(_TABLES, rng.randint(4, 7))
    records = []
    for table, restricted in tables:
        count = rng.randint(300, 900)
        mix = [("public", rng.uniform(0.0, 0.3)), ("internal", rng.uniform(0.3, 1.0)),
               ("confidential", rng.uniform(0.1, 0.6)), ("restricted", 0.0)]
        for i in range(count):
            level = "restricted" if rng.random() < restricted else weighted(rng, mix)
            records.append(Entity("Record", f"{table}-{i + 1:05d}",
                                  {"sensitivity": level, "table": table}))
    currencies = [("EUR", rng.random()), ("USD", rng.random()), ("GBP", 0.2 * rng.random())]
    pay0 = rng.randrange(100_000, 900_000)
    payments = [Entity("Payment", f"pay-{pay0 + i * rng.randint(1, 9)}",
                       {"amount_cents": max(100, int(rng.lognormvariate(8.8, 1.1))),
                        "currency": weighted(rng, currencies)})
                for i in range(rng.randint(500, 1500))]
    payments = list({p.id: p for p in payments}.values())
    repo_names = rng.sample(_REPO_WORDS, rng.randint(5, 12))
    org = rng.choice(("acme", "globex", "initech", "umbrella", "hooli", "stark"))
    repositories = []
    for k, name in enumerate(repo_names):
        env = "production" if k < max(1, len(repo_names) // 4) else \
            weighted(rng, [("staging", 0.6), ("development", 0.4)])
        repositories.append(Entity("Repository", f"{org}-{name}", {"environment": env}))
    deployments = []
    for service in rng.sample(_SERVICES, rng.randint(3, 7)):
        deployments.append(Entity("Deployment", f"{service}-staging",
                                  {"environment": "staging", "service": service}))
        deployments.append(Entity("Deployment", f"{service}-prod",
                                  {"environment": "production", "service": service}))
    s = rng.uniform(0.7, 1.3)
    by_region: dict[str, list[Entity]] = {r: [] for r in REGIONS}
    for c in customers:
        by_region[c.attrs["region"]].append(c)
    files = {}
    for repo in repositories:
        paths = {f"{rng.choice(_FILE_DIRS)}/{rng.choice(_FILE_NAMES)}{rng.randint(0, 40)}."
                 f"{rng.choice(('py', 'ts', 'go', 'md', 'yaml'))}"
                 for _ in range(rng.randint(30, 300))}
        files[repo.id] = Zipf(sorted(paths), rng, rng.uniform(0.8, 1.4))
    return World(
        customers=customers, records=records, payments=payments, repositories=repositories,
        deployments=deployments,
        customer_pop=Zipf(customers, rng, s, offset=rng.uniform(1.0, 20.0)),
        regional_pop={r: Zipf(v, rng, s, offset=rng.uniform(1.0, 10.0))
                      for r, v in by_region.items() if v},
        record_pop=Zipf(records, rng, rng.uniform(0.6, 1.2), offset=5.0),
        repo_pop=Zipf(repositories, rng, rng.uniform(0.8, 1.5)),
        files=files,
        domains={c.id: f"{c.id.removeprefix('cus-')}.example.{c.attrs['region']}"
                 for c in customers},
        ticket_prefix=rng.choice(("T-", "TCK-", "SUP-", "CS-")),
        invoice_prefix=rng.choice(("INV-", "IN-", "BILL-")),
        priorities=[("low", rng.uniform(0.1, 0.4)), ("normal", rng.uniform(0.4, 0.7)),
                    ("high", rng.uniform(0.05, 0.2)), ("urgent", rng.uniform(0.0, 0.06))],
    )


def _composition(rng: random.Random, n: int) -> dict[str, int]:
    """How many benign agents of each persona: shares jittered per seed, one of each at least."""
    batch = max(1, round(n / rng.uniform(20, 35)))
    coding = max(1, round(n * rng.uniform(0.08, 0.16)))
    billing = max(1, round(n * rng.uniform(0.12, 0.22)))
    new = max(1, round(n * rng.uniform(0.06, 0.14)))
    support = max(1, n - batch - coding - billing - new)
    return {"support": support, "coding": coding, "billing": billing, "batch": batch,
            "new_agent": new}


def build_fleet(config: SimConfig) -> Fleet:
    """The world plus every agent, benign and attacking, with ids in the fleet's naming style."""
    world = build_world(derive(config.seed, "world"))
    rng = derive(config.seed, "fleet")
    counts = _composition(rng, config.agents)
    # (persona, role) per agent, before names are given
    plan: list[tuple[str, str]] = []
    plan += [("support", "support")] * counts["support"]
    plan += [("coding", "coding")] * counts["coding"]
    plan += [("billing", "billing")] * counts["billing"]
    plan += [("batch", "data")] * counts["batch"]
    plan += [("new_agent", rng.choice(("support", "support", "billing", "coding")))
             for _ in range(counts["new_agent"])]
    per_attack = 1 + config.agents // 60
    for attack in config.attacks:
        for _ in range(per_attack):
            cover = {"runaway_loop": ("support", "billing", "coding"),
                     "sweep": ("support", "billing"),
                     "exfiltration": ("support", "support", "billing"),
                     "compromised": ("support", "support", "billing", "coding")}[attack]
            plan.append((attack, rng.choice(cover)))
    names = _names(rng, plan)
    support_zones = rng.sample(_TIMEZONES, rng.randint(1, 3))
    teams = {role: rng.choice(options) for role, options in _ROLE_TEAMS.items()}
    home = rng.choice(_TIMEZONES)
    owners = {role: rng.sample(_OWNER_NAMES, 2) for role in _ROLE_PREFIXES}
    span = config.end - config.start
    fleet = Fleet(config=config, world=world)
    for index, ((persona, role), agent_id) in enumerate(zip(plan, names, strict=True)):
        if role == "support":
            tz, zone = rng.choice(support_zones)
            team = "customer-ops" if len(support_zones) == 1 else f"customer-ops-{zone}"
        else:
            tz, zone = home
            team = teams[role]
        region = {"emea": "eu"}.get(zone, zone)
        appears = None
        if persona == "new_agent":
            appears = _deployed_at(rng, tz, config.start + span * rng.uniform(0.1, 0.9),
                                   config.start + 0.05 * span, config.end - 0.05 * span)
        fleet.agents.append(AgentSpec(
            index=index, agent_id=agent_id, persona=persona, role=role, team=team,
            owner=f"{rng.choice(owners[role])}@example.com", tz=tz, region=region,
            appears_at=appears))
    return fleet


def _deployed_at(rng: random.Random, tz: float, t: float, lo: float, hi: float) -> float:
    """Move ``t`` to 10:00-13:00 local time on a weekday near it within ``[lo, hi]``:
    agents are deployed, and start working, while their team is at work."""
    offset = tz * 3600.0
    day = (t + offset) // DAY * DAY - offset
    for shift in (0, 1, -1, 2, -2, 3, -3):
        candidate = day + shift * DAY
        weekday = int((candidate + offset) // DAY + 3) % 7       # 1970-01-01 was a Thursday
        at = candidate + rng.uniform(10.0, 13.0) * 3600.0
        if weekday < 5 and lo <= at <= hi:
            return at
    return t


def _names(rng: random.Random, plan: list[tuple[str, str]]) -> list[str]:
    """Agent ids in one naming style per role, numbered in a shuffled order, so neither
    the name nor the number says which agent is new or attacking."""
    style = rng.choice(("{p}-agent-{n:02d}", "{p}-{n}", "{p}-{h}", "{p}-bot-{n:03d}"))
    prefix = {role: rng.choice(options) for role, options in _ROLE_PREFIXES.items()}
    numbers: dict[str, list[int]] = {}
    for role in prefix:
        size = sum(1 for _, r in plan if r == role)
        numbers[role] = rng.sample(range(1, 3 * size + 10), size)
    names: list[str] = []
    taken: set[str] = set()
    for _, role in plan:
        n = numbers[role].pop()
        name = style.format(p=prefix[role], n=n, h=f"{rng.getrandbits(16):04x}")
        while name in taken:
            name = f"{prefix[role]}-{rng.getrandbits(24):06x}"
        taken.add(name)
        names.append(name)
    return names

