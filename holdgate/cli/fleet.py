"""A simulated agent fleet for `holdgate demo`: real SDK, real worker, real Kafka.

Phase 1 walks well-behaved and misbehaving requests through the policy so a
newcomer sees allows and denies with their reasons.  Phase 2 runs agents at
machine speed beside human-paced ones: a runaway loop and a record sweep,
which the behavioural guards must cut off within the first second while the
others carry on.  Everything goes through one `Gate`: one producer and one
consumer for the whole fleet, as in a real multi-agent runtime.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from holdgate.client import Gate
from holdgate.client.verify import LOCAL_POLICY_VERSION
from holdgate.events import Verdict

__all__ = ["APPROVAL_STEP", "POLICY_TOUR", "PROBE_AGENT", "FleetReport", "Step", "probe_gate",
           "run_approval", "run_machine_speed", "run_policy_tour", "wait_for_gate"]


@dataclass(frozen=True)
class Step:
    agent: str
    action: str
    resource: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _r(rtype: str, rid: str, **attrs: Any) -> dict[str, Any]:
    return {"type": rtype, "id": rid, "attributes": attrs}


POLICY_TOUR: tuple[Step, ...] = (
    Step("support-bot-1", "tickets.read", _r("Ticket", "T-4711", priority="high"),
         note="support reads a ticket"),
    Step("support-bot-1", "customers.read", _r("Customer", "cus-1002"),
         note="...and looks up its customer"),
    Step("support-bot-1", "customers.export", _r("Customer", "cus-1001"),
         note="export of a PII-high customer"),
    Step("billing-bot-1", "payments.refund", _r("Payment", "pay-5001"),
         {"amount_cents": 4500}, note="small refund"),
    Step("billing-bot-1", "payments.refund", _r("Payment", "pay-5002"),
         {"amount_cents": 90000}, note="large refund: held for a human approver"),
    Step("billing-bot-1", "payments.refund", _r("Payment", "pay-5002"),
         {"amount_cents": 90000, "approvals": ["human"]},
         note="same, the agent claims a human approved: still held"),
    Step("coder-bot-1", "repo.push", _r("Repository", "holdgate-sandbox"),
         note="push to staging"),
    Step("coder-bot-1", "repo.push", _r("Repository", "holdgate", environment="staging"),
         note="push to production, claiming it is staging: held"),
    Step("coder-bot-1", "deploy.create", _r("Deployment", "payments-api-prod"),
         {"approvals": ["human"]}, note="production deploy, self-approved: held"),
    Step("support-bot-2", "payments.refund", _r("Payment", "pay-5001"),
         {"amount_cents": 100}, note="support agent tries a refund"),
    Step("rogue-agent-9", "records.read", _r("Record", "hr-salaries"),
         note="an agent nobody registered"),
)


#: The held action a human approves in the demo (the tour's large refund).
APPROVAL_STEP = Step("billing-bot-1", "payments.refund", _r("Payment", "pay-5002"),
                     {"amount_cents": 90000}, note="a human approved it")


@dataclass
class FleetReport:
    """Per-agent verdicts, when they came (since the phase began) and hold latencies."""

    verdicts: dict[str, list[tuple[float, Verdict]]] = field(
        default_factory=lambda: defaultdict(list))
    latencies: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, v: Verdict, latency: float) -> None:
        with self.lock:
            self.verdicts[v.agent_id].append((time.monotonic() - self.started, v))
            self.latencies.append(latency)

    def rows(self) -> list[tuple[str, int, int, str, str]]:
        """(agent, allowed, denied, first deny as '#n after t ms', top codes) per agent."""
        out = []
        for agent, seen in sorted(self.verdicts.items()):
            allowed = sum(v.allowed for _, v in seen)
            # one count per verdict and code: several guards may name the same code
            codes = Counter(c for _, v in seen if not v.allowed for c in set(v.codes))
            first = next(((i, t) for i, (t, v) in enumerate(seen) if not v.allowed), None)
            cut = "-" if first is None else f"#{first[0] + 1} at {first[1] * 1000:.0f} ms"
            out.append((agent, allowed, len(seen) - allowed, cut,
                        ", ".join(f"{c}×{n}" for c, n in codes.most_common(3)) or "-"))
        return out

    def latency_ms(self) -> tuple[float, float]:
        if not self.latencies:
            return (0.0, 0.0)
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return statistics.median(ordered) * 1000, p99 * 1000


def _check(gate: Gate, step: Step, report: FleetReport, timeout: float) -> Verdict:
    t0 = time.perf_counter()
    v = gate.check(action=step.action, resource=step.resource, context=step.context,
                   timeout=timeout, agent_id=step.agent)
    report.add(v, time.perf_counter() - t0)
    return v


#: Who asks "is a worker there?": no agent of the tour or the burst, so the probes
#: count toward nobody's rate or repetition signals.  It is in no entity store either:
#: its UNKNOWN_AGENT deny is a worker-made verdict, which is all the probe needs.
PROBE_AGENT = "holdgate-probe"


def probe_gate(gate: Gate, timeout: float = 90.0,
               progress: Callable[[float], None] | None = None,
               agent_id: str = PROBE_AGENT) -> Verdict | None:
    """Probe until a worker-made verdict comes back (the worker may still be joining).

    Returns that verdict, or else the last local deny (its reason says what the
    gate waited for: topics, a connection, a verdict), or None if no probe ran.
    """
    deadline = time.monotonic() + timeout
    last: Verdict | None = None
    while time.monotonic() < deadline:
        last = gate.check(action="tickets.read", resource=_r("Ticket", "probe"),
                          timeout=min(2.0, max(0.1, deadline - time.monotonic())),
                          agent_id=agent_id)
        if last.policy_version != LOCAL_POLICY_VERSION:
            return last
        time.sleep(0.5)         # UNAVAILABLE answers at once while topics are missing
        if progress:
            progress(deadline - time.monotonic())
    return last


def wait_for_gate(gate: Gate, timeout: float = 90.0,
                  progress: Callable[[float], None] | None = None,
                  agent_id: str = PROBE_AGENT) -> bool:
    """True once a worker-made verdict came back within `timeout` (see `probe_gate`)."""
    found = probe_gate(gate, timeout, progress, agent_id)
    return found is not None and found.policy_version != LOCAL_POLICY_VERSION


def run_policy_tour(gate: Gate, report: FleetReport, show: Callable[[Step, Verdict], None],
                    timeout: float = 5.0, pause: float = 0.15) -> None:
    for step in POLICY_TOUR:
        show(step, _check(gate, step, report, timeout))
        time.sleep(pause)


def _loop(gate: Gate, report: FleetReport, steps: Callable[[int], Step], count: int,
          interval: float, show: Callable[[Step, Verdict], None], timeout: float) -> None:
    for i in range(count):
        step = steps(i)
        v = _check(gate, step, report, timeout)
        show(step, v)
        if interval:
            time.sleep(interval)


def run_machine_speed(gate: Gate, report: FleetReport, show: Callable[[Step, Verdict], None],
                      seconds: float = 3.0, timeout: float = 5.0) -> None:
    """Two machine-speed agents beside two human-paced ones, all at once."""
    human = int(seconds / 0.5)
    jobs = [
        # runaway: the same email in a tight loop (a retry bug, a prompt-injected loop)
        (lambda i: Step("support-bot-2", "emails.send", _r("Email", "welcome-cus-1002"),
                        {"template": "welcome"}, "runaway loop"), 200, 0.0),
        # sweep: reads hundreds of customer records in a second
        (lambda i: Step("data-bot-1", "customers.read",
                        _r("Customer", f"cus-{20000 + i}", pii_level="low"), {}, "sweep"),
         200, 0.0),
        (lambda i: Step("support-bot-1", "tickets.read", _r("Ticket", f"T-{5000 + i}"), {},
                        "human pace"), human, 0.5),
        (lambda i: Step("billing-bot-1", "invoices.read",
                        _r("Invoice", f"inv-{300 + i}", amount_cents=1000 + i), {},
                        "human pace"), human, 0.5),
    ]
    threads = [threading.Thread(target=_loop, args=(gate, report, fn, n, pause, show, timeout),
                                daemon=True) for fn, n, pause in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_approval(gate: Gate, approve: Callable[[float], Verdict | None],
                 timeout: float = 5.0, wait: float = 30.0) -> tuple[Verdict | None, Verdict]:
    """The agent holds for an approval while `approve` (the human) finds and signs it.

    `approve(since)` looks for the hold decided after `since` (wall clock) and
    approves it, returning the pending verdict it approved (None if it found none).
    """
    result: dict[str, Verdict] = {}
    since = time.time()
    step = APPROVAL_STEP
    waiting = threading.Thread(target=lambda: result.setdefault("v", gate.check(
        action=step.action, resource=step.resource, context=step.context, timeout=timeout,
        agent_id=step.agent, wait_for_approval=wait)), daemon=True)
    waiting.start()
    held = approve(since)
    waiting.join(timeout + wait + 5)
    return held, result["v"]
