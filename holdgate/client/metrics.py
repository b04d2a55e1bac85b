"""The runtime's view of the gate, as numbers: checks, local denies, hold latency.

What the worker's metrics cannot show is what the *agents* saw: how many
checks ended in an allow, how many were denied by the SDK itself (TIMEOUT,
UNAVAILABLE, INVALID_VERDICT: the worker never heard of them, or its answer
was refused) and how long an agent held from publishing its action to
reading the verdict.  `GateCore` keeps these as plain counters and fixed
histogram buckets (`CheckCounters`), so the SDK needs nothing new and costs
nothing when nobody looks; `Gate.metrics` / `AsyncGate.metrics` return a
frozen `GateMetrics`.

`register(gate, registry)` exports them to Prometheus, only when asked:
``prometheus_client`` is imported by that call, never by importing this
module, so the SDK stays importable without it::

    from prometheus_client import CollectorRegistry, generate_latest
    from holdgate.client.metrics import register

    registry = CollectorRegistry()
    register(gate, registry, name="billing")     # several gates: one name each
    generate_latest(registry)                    # holdgate_sdk_checks_total{...} ...
"""
from __future__ import annotations

import weakref
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from holdgate.client.verify import LOCAL_POLICY_VERSION
from holdgate.events import Verdict

__all__ = ["CheckCounters", "GateMetrics", "HoldHistogram", "HOLD_BUCKETS", "register"]

#: Upper bounds (seconds) of the hold-latency buckets: publish -> first verdict read.
HOLD_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class HoldHistogram:
    """A histogram as Prometheus has it: cumulative counts per upper bound, +Inf last."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]          # cumulative, len(buckets) + 1 (the last is +Inf)
    sum: float
    count: int


@dataclass(frozen=True)
class GateMetrics:
    """A snapshot of one gate's numbers (`Gate.metrics`)."""

    checks: Mapping[str, int]          # outcome of the verdict returned: allow|deny|pending
    local_denies: Mapping[str, int]    # code of the SDK's own denies: TIMEOUT, ...
    hold: HoldHistogram                # seconds from publish to the first verdict read
    stats: Mapping[str, int]           # GateCore.stats (sent, verdicts, ignored, fences, ...)


@dataclass
class CheckCounters:
    """Live counters, updated by `GateCore` on the gate's event loop (not thread-safe)."""

    checks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("allow", "deny", "pending"), 0))
    local_denies: dict[str, int] = field(default_factory=dict)
    buckets: tuple[float, ...] = HOLD_BUCKETS
    hold_counts: list[int] = field(default_factory=lambda: [0] * (len(HOLD_BUCKETS) + 1))
    hold_sum: float = 0.0

    def settled(self, verdict: Verdict) -> Verdict:
        """Count the verdict a check returns (and return it)."""
        self.checks[verdict.decision] = self.checks.get(verdict.decision, 0) + 1
        if verdict.policy_version == LOCAL_POLICY_VERSION:
            for code in {r.code for r in verdict.reasons}:
                self.local_denies[code] = self.local_denies.get(code, 0) + 1
        return verdict

    def held(self, seconds: float) -> None:
        """One check's hold: from its publish to its first verdict record."""
        seconds = max(0.0, seconds)
        self.hold_counts[bisect_left(self.buckets, seconds)] += 1
        self.hold_sum += seconds

    def snapshot(self, stats: Mapping[str, int]) -> GateMetrics:
        running, cumulative = 0, []
        for n in self.hold_counts:
            running += n
            cumulative.append(running)
        return GateMetrics(dict(self.checks), dict(self.local_denies),
                           HoldHistogram(self.buckets, tuple(cumulative), self.hold_sum,
                                         running), dict(stats))


# ---------------------------------------------------------------------- Prometheus
_STATS = (("sent", "holdgate_sdk_actions_sent", "Actions published."),
          ("verdicts", "holdgate_sdk_verdicts", "Verdict records that resolved a check."),
          ("ignored", "holdgate_sdk_verdicts_ignored",
           "Verdict records for no waiting check (another gate's, or late after a timeout)."),
          ("fences", "holdgate_sdk_producer_fences",
           "Producers fenced so that an action could not be delivered after its check."),
          ("held", "holdgate_sdk_approval_waits",
           "Pending verdicts a check kept waiting on for an approval."))
_registered: weakref.WeakKeyDictionary[Any, _GateCollector] = weakref.WeakKeyDictionary()


class _GateCollector:
    """Collects every gate registered on one registry, one `gate` label value each."""

    def __init__(self) -> None:
        self.gates: dict[str, weakref.ref[Any]] = {}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        checks = CounterMetricFamily("holdgate_sdk_checks", "Checks returned, by the "
                                     "outcome of their verdict.", labels=["gate", "outcome"])
        local = CounterMetricFamily("holdgate_sdk_local_denies", "Denies the SDK made itself, "
                                    "by code.", labels=["gate", "code"])
        hold = HistogramMetricFamily("holdgate_sdk_hold_seconds", "Seconds from publishing "
                                     "an action to reading its first verdict.", labels=["gate"])
        stats = {name: CounterMetricFamily(name, text, labels=["gate"])
                 for _, name, text in _STATS}
        for label, ref in sorted(self.gates.items()):
            gate = ref()
            if gate is None:
                continue
            m: GateMetrics = gate.metrics
            for outcome, n in sorted(m.checks.items()):
                checks.add_metric([label, outcome], n)
            for code, n in sorted(m.local_denies.items()):
                local.add_metric([label, code], n)
            bounds = [*(repr(float(b)) for b in m.hold.buckets), "+Inf"]
            hold.add_metric([label], list(zip(bounds, m.hold.counts)), m.hold.sum)
            for key, name, _ in _STATS:
                stats[name].add_metric([label], m.stats.get(key, 0))
        yield from (checks, local, hold, *stats.values())


def register(gate: Any, registry: Any = None, *, name: str = "default") -> None:
    """Export `gate`'s metrics on `registry` (prometheus_client's global one by default).

    `gate` is a `Gate` or `AsyncGate`; `name` tells gates on one registry apart
    (label ``gate``).  Raises ImportError if prometheus_client is not installed.
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        raise ImportError("holdgate.client.metrics.register needs prometheus_client "
                          "(pip install prometheus-client); Gate.metrics works without "
                          "it") from None
    registry = REGISTRY if registry is None else registry
    collector = _registered.get(registry)
    if collector is None:
        collector = _registered[registry] = _GateCollector()
        registry.register(collector)
    if name in collector.gates and collector.gates[name]() is not None:
        raise ValueError(f"a gate named {name!r} is already registered on this registry")
    collector.gates[name] = weakref.ref(gate)
