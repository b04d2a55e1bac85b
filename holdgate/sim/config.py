"""What to simulate: one frozen config, the persona and attack names, and flag parsing.

The config is small on purpose: everything else (rates, working hours, pool
sizes, popularity skew, attack times) is *drawn from the seed*, so a learner
fitted on one seed meets a different fleet on the next instead of a fixed
pattern it could memorise.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from holdgate.errors import ConfigError

__all__ = ["SimConfig", "BENIGN_PERSONAS", "ATTACKS", "PERSONAS", "DEFAULT_START",
           "parse_attacks", "parse_start", "iso"]

#: Personas whose every action is benign.
BENIGN_PERSONAS: tuple[str, ...] = ("support", "coding", "billing", "batch", "new_agent")
#: Attack personas: an agent that behaves like a benign role until its attack starts.
ATTACKS: tuple[str, ...] = ("runaway_loop", "sweep", "exfiltration", "compromised")
PERSONAS: tuple[str, ...] = BENIGN_PERSONAS + ATTACKS

#: 2026-01-05T00:00:00Z, a Monday: the default span starts with three working days.
DEFAULT_START = 1767571200.0
MIN_AGENTS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Seed and shape of one simulated history.

    ``agents`` scales the benign fleet (support, billing, coding, batch and new
    agents); every attack in ``attacks`` adds its own agent(s).  Attacks start
    at seeded times after ``attack_after`` (a fraction of the span), so fitting
    on the span before that point and testing on the rest is leak-free.
    """

    seed: int = 1
    start: float = DEFAULT_START
    hours: float = 72.0
    agents: int = 20
    attacks: tuple[str, ...] = ATTACKS
    attack_after: float = 0.5
    #: Validate every request with the SDK's checks (``ActionRequest.from_obj``);
    #: off by default because it costs ~50 µs an action and values are valid by
    #: construction (the tests decode every line).
    validate: bool = False

    def __post_init__(self) -> None:
        if self.hours <= 0:
            raise ConfigError("hours must be > 0")
        if self.agents < MIN_AGENTS:
            raise ConfigError(f"agents must be >= {MIN_AGENTS} (one of each benign persona)")
        if not 0.0 <= self.attack_after < 1.0:
            raise ConfigError("attack_after must be a fraction of the span in [0, 1)")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"unknown attack {unknown[0]!r}; known: {', '.join(ATTACKS)}")

    @property
    def end(self) -> float:
        return self.start + self.hours * 3600.0

    @property
    def attack_start(self) -> float:
        """No attack action happens before this time: fit before it, test after."""
        return self.start + self.attack_after * self.hours * 3600.0


def parse_attacks(text: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma list of attack names (order kept, duplicates dropped)."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    if text == "all":
        return ATTACKS
    names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}, "
                          "'all' or 'none'")
    return tuple(dict.fromkeys(names))


def parse_start(text: str) -> float:
    """Epoch seconds from an ISO 8601 time; UTC unless it names a zone."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not an ISO time such as 2026-01-05T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def iso(epoch: float) -> str:
    """``2026-01-05T00:00:00Z`` for an epoch time (summaries, labels of attack windows)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
