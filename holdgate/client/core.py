"""The gate protocol with no I/O: what both gates do, as a plain state machine.

Everything that decides something lives here, once, in the manner of h11.
Its driver, `AsyncGate` (which the blocking `Gate` runs on a thread of its
own), only waits and drives aiokafka: it feeds in events ("the consumer
opened", "these records arrived", "this send failed", "the check's time is
up") and carries out what the core answers ("send to partition 3 through this
producer", "deny", "fence this producer", "open a producer").  No sockets,
threads, locks or event loop; the clock is injected, so the core is tested
directly (tests/client/test_core.py) and the gates through a fake transport
(`holdgate.client.mock`).  The vocabulary lives in `steps`.

The rules it keeps:

* **No missed verdict.**  A check is sent only once its agent's verdict
  partition is assigned with a *resolved* position, and its pending entry is
  registered before the send.
* **Bound to its bytes and its deadline.**  A request carries ``deadline =
  occurred_at + timeout - delivery_margin(timeout)`` (the worker denies EXPIRED
  after it and commits no allow after it) and the digest of the exact bytes
  published, which an allow must bind.
* **Never delivered after its check returned.**  A check that ends with its
  action unacknowledged names the producer to fence (`expire`, `abandon`);
  a fenced or failed producer is replaced, never reused.
* **A pending verdict is a deny.**  Unless the check asked to wait for an
  approval (`approval_wait`): then it keeps waiting, that much longer, for the
  final verdict the approval produces, and returns the pending one if none
  comes.
* **Fail closed and fast.**  While a session is being re-established after a
  failure, checks are denied UNAVAILABLE at once; a setup failure is answered
  from cache for `RETRY_AFTER` seconds instead of being retried per check.

Not thread-safe by design: only the gate's event loop calls it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from holdgate.client.metrics import CheckCounters, GateMetrics
from holdgate.client.routing import GateConfig, partition_for
from holdgate.client.transport import Received
from holdgate.client.steps import Clock, Deny, Pending, Send, Step, SystemClock, Work
from holdgate.client.verify import Failure, local_deny, parse_record, verify_verdict
from holdgate.errors import ConfigError
from holdgate.events import ActionRequest, Resource, Verdict, encode
from holdgate.reasons import TIMEOUT, UNAVAILABLE

__all__ = ["GateCore", "RETRY_AFTER", "COUNTERS", "delivery_margin"]

RETRY_AFTER = 1.0          # seconds a setup failure is answered from cache


def delivery_margin(timeout: float) -> float:
    """The end of a check's wait kept for the verdict's commit and delivery.

    The request's deadline is this much before the check gives up: an allow the
    worker commits before the deadline (it aborts and re-decides a batch whose
    allow would commit later) still has time to reach the check, so a runtime
    never gives up on an action that then gets an allow.
    """
    return min(1.0, 0.2 * timeout)

BACKOFF = (0.2, 2.0)       # first and longest wait between reconnect attempts
COUNTERS = ("sent", "verdicts", "ignored", "timeouts", "unavailable", "fences", "held")


class _Link:
    """One client session: up, or down since `error` with a growing backoff."""

    __slots__ = ("up", "error", "retry_at", "backoff")

    def __init__(self) -> None:
        self.up = False
        self.error: str | None = None
        self.retry_at, self.backoff = 0.0, BACKOFF[0]

    def opened(self) -> None:
        self.up, self.error, self.backoff = True, None, BACKOFF[0]

    def failed(self, message: str, now: float) -> None:
        self.up, self.error, self.retry_at = False, message, now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF[1])

    def lost(self, message: str, now: float) -> None:
        self.up, self.error, self.retry_at, self.backoff = False, message, now, BACKOFF[0]


class _Agent:
    __slots__ = ("partition", "error", "failed_at")

    def __init__(self) -> None:
        self.partition: int | None = None
        self.error: str | None = None
        self.failed_at = 0.0


class GateCore:
    """State and decisions of one gate; see the module docstring."""

    def __init__(self, config: GateConfig, *, name: str, agent_id: str | None,
                 default_timeout: float, clock: Clock | None = None) -> None:
        self.config, self.name, self.agent_id = config, name, agent_id
        self.default_timeout = default_timeout
        self.clock: Clock = clock or SystemClock()
        self._consumer, self._producer = _Link(), _Link()
        self.producer: Any = None                 # the current producer handle
        self._prepared = False                    # its send() will not wait for metadata
        self._partitions: int | None = None       # partition count of actions == verdicts
        self._ready: set[int] = set()             # assigned, positions resolved
        self._agents: dict[str, _Agent] = {}
        self._pending: dict[str, Pending] = {}
        self._recovering: str | None = None       # why a once-working session is down
        self.closed = False
        self._stats = dict.fromkeys(COUNTERS, 0)
        self._checks = CheckCounters()            # outcomes, local denies, hold latency
        if agent_id:
            self._agent(agent_id)                 # warm up: assign before the first check

    # ------------------------------------------------------------------ views
    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    @property
    def metrics(self) -> GateMetrics:
        """Checks by outcome, the SDK's own denies by code, hold latency (`client.metrics`)."""
        return self._checks.snapshot(self._stats)

    @property
    def assigned_partitions(self) -> frozenset[int]:
        return frozenset(self._ready)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def status(self) -> str:
        """One line on what the gate is waiting for (it ends up in UNAVAILABLE denies)."""
        if self.closed:
            return "gate is closed"
        if self._recovering is not None:
            return f"reconnecting to {self.config.bootstrap} after: {self._recovering}"
        if not self._consumer.up:
            return self._consumer.error or f"connecting to {self.config.bootstrap}"
        if not self._producer.up and self._producer.error:
            return self._producer.error
        return "ready" if self._ready else f"connected to {self.config.bootstrap}"

    # ------------------------------------------------------------------ checks
    def begin(self, *, action: str, resource: Resource | Mapping[str, Any],
              context: Mapping[str, Any] | None, timeout: float | None,
              agent_id: str | None, approval_wait: float = 0.0) -> Pending:
        """Build the request and its bytes; raises only for caller bugs (no agent, bad action).

        With `approval_wait` the request's deadline covers the approval too: a
        human's approval after it would lift nothing (the worker denies EXPIRED).
        """
        agent = agent_id or self.agent_id
        if not agent:
            raise ConfigError(f"no agent_id: pass agent_id= to {self.name}() or to check()")
        wait = self.default_timeout if timeout is None else max(0.0, float(timeout))
        extra = max(0.0, float(approval_wait or 0.0))
        wall = self.clock.time()
        request = ActionRequest.create(agent_id=agent, action=action, resource=resource,
                                       context=context, occurred_at=wall,
                                       deadline=wall + wait - delivery_margin(wait) + extra)
        return Pending(request, encode(request), wait, self.clock.monotonic() + wait, extra)

    def admit(self, p: Pending) -> Send | Deny | None:
        """Send, deny now, or None: wait for set-up (and call again when something changed)."""
        if self.closed:
            return Deny(self._unavailable(p, "gate is closed"))
        if self._recovering is not None:
            return Deny(self._unavailable(p, self.status))
        agent = self._agent(p.request.agent_id)
        if agent.error is not None:
            if self.clock.monotonic() - agent.failed_at < RETRY_AFTER:
                return Deny(self._unavailable(p, agent.error))
            agent.error = None                    # stale failure: set it up again
        if agent.partition is None or agent.partition not in self._ready \
                or not self._prepared or not self._consumer.up:
            return None
        p.partition, p.producer = agent.partition, self.producer
        p.sent_at = self.clock.monotonic()
        self._pending[p.request_id] = p
        return Send(agent.partition, self.producer)

    def not_ready(self, p: Pending) -> Verdict:
        """The check's time ran out before it could be sent."""
        return self._unavailable(p, f"gate not ready within {p.timeout:g}s: {self.status}")

    def sent(self, p: Pending) -> None:
        self._stats["sent"] += 1

    def send_failed(self, p: Pending, error: BaseException) -> Verdict:
        """The producer refused the record outright (nothing was queued)."""
        self._pending.pop(p.request_id, None)
        return self._unavailable(p, f"could not publish the action: {error}")

    def delivered(self, p: Pending, error: BaseException | None) -> Pending | None:
        """The producer's verdict on one record; returns the check to wake if it failed."""
        if error is None:
            p.acked = True
            return None
        if self._pending.get(p.request_id) is not p:
            return None
        del self._pending[p.request_id]
        p.result = Failure(UNAVAILABLE, f"could not publish the action: {error}")
        return p

    def receive(self, records: Iterable[Received]) -> list[Pending]:
        """Verdict records arrived: resolve their checks, count the rest as ignored."""
        woken: list[Pending] = []
        for raw, headers in records:
            request_id, result = parse_record(raw, headers, self.config.trust)
            p = self._pending.pop(request_id, None) if request_id is not None else None
            if p is None:
                self._stats["ignored"] += 1       # another gate's, or late after a timeout
                continue
            if p.held is None and p.sent_at is not None:   # the first verdict for it
                self._checks.held(self.clock.monotonic() - p.sent_at)
            if p.approval_wait and p.held is None and isinstance(result, Verdict) \
                    and result.decision == "pending":
                # Wait on, once, for the verdict its approval produces (same request id).
                held = verify_verdict(result, p.request, self.clock.time(), digest=p.digest)
                if held.decision == "pending" and held.key_id:   # signed: not a forger's stall
                    p.held, p.deadline = (held, (raw, headers)), p.deadline + p.approval_wait
                    self._pending[p.request_id] = p
                    self._stats["held"] += 1
                    continue
            p.result, p.record = result, (raw, headers)
            self._stats["verdicts"] += 1
            woken.append(p)
        return woken

    def expire(self, p: Pending) -> tuple[Verdict, Any]:
        """The check's time is up: (its verdict, the producer to fence first, or None)."""
        if p.result is not None:                  # resolved in the same instant: use it
            return self.finish(p), None
        if p.held is not None:                    # no approval came: the pending verdict
            self._pending.pop(p.request_id, None)
            p.record = p.held[1]
            return self._checks.settled(p.held[0]), None
        self._stats["timeouts"] += 1
        verdict = local_deny(p.request, code=TIMEOUT, digest=p.digest, message=(
            f"no verdict within {p.timeout:g}s; a verdict arriving later is ignored"))
        return self._checks.settled(verdict), self.abandon(p)

    def abandon(self, p: Pending) -> Any:
        """The check ends without its verdict: forget it; the producer to fence, or None."""
        if self._pending.pop(p.request_id, None) is None and p.result is not None:
            return None
        return p.producer if p.producer is not None and not p.acked else None

    def finish(self, p: Pending) -> Verdict:
        """The verdict a resolved check returns: verified, or a local deny."""
        result = p.result
        assert result is not None, "finish() before the check was resolved"
        if isinstance(result, Failure):
            if result.code == UNAVAILABLE:
                self._stats["unavailable"] += 1
            return self._checks.settled(local_deny(p.request, code=result.code,
                                                   message=result.message, digest=p.digest))
        return self._checks.settled(verify_verdict(result, p.request, self.clock.time(),
                                                   digest=p.digest))

    def _unavailable(self, p: Pending, message: str) -> Verdict:
        self._stats["unavailable"] += 1
        return self._checks.settled(local_deny(p.request, code=UNAVAILABLE, message=message,
                                               digest=p.digest))

    # ------------------------------------------------------------------ set-up
    def next_work(self) -> Step | float | None:
        """What the driver should do next: a step, seconds to wait first, or None (idle)."""
        if self.closed:
            return None
        now = self.clock.monotonic()
        for link, work in ((self._consumer, Work.CONNECT), (self._producer, Work.OPEN_PRODUCER)):
            if not link.up:
                return Step(work) if now >= link.retry_at else link.retry_at - now
        if self._partitions is None:
            wanted = any(a.error is None for a in self._agents.values())
            return Step(Work.DISCOVER) if wanted else None
        if not self._prepared:
            return Step(Work.PREPARE)
        todo = frozenset(a.partition for a in self._agents.values()
                         if a.error is None and a.partition is not None
                         and a.partition not in self._ready)
        return Step(Work.ASSIGN, todo) if todo else None

    def consumer_opened(self) -> None:
        self._consumer.opened()
        self._maybe_recovered()

    def consumer_failed(self, message: str) -> None:
        self._consumer.failed(message, self.clock.monotonic())
        self._fail_waiting(message)

    def discovered(self, counts: Mapping[str, int]) -> None:
        """Partition counts of (actions, verdicts): both must exist and be equal."""
        names = (self.config.actions_topic, self.config.verdicts_topic)
        missing = [t for t in names if not counts.get(t)]
        if missing:
            self._fail_waiting(self.config.missing_topics_message(missing))
            return
        actions, verdicts = (counts[t] for t in names)
        if actions != verdicts:
            self._fail_waiting(self.config.partition_counts_message(actions, verdicts))
            return
        self._partitions = actions
        for agent_id, agent in self._agents.items():
            agent.partition = partition_for(agent_id, actions)

    def discovery_failed(self, message: str) -> None:
        self._fail_waiting(f"topic metadata unavailable: {message}")

    def producer_opened(self, producer: Any) -> None:
        self.producer, self._prepared = producer, False
        self._producer.opened()

    def producer_prepared(self) -> None:
        self._prepared = True
        self._maybe_recovered()

    def producer_failed(self, message: str) -> Any:
        """Opening or preparing the producer failed: back off; returns a handle to fence."""
        producer, self.producer, self._prepared = self.producer, None, False
        self._producer.failed(message, self.clock.monotonic())
        self._fail_waiting(message)
        return producer

    def assigned(self, partitions: Iterable[int], errors: Mapping[int, str]) -> None:
        """Result of an ASSIGN step: ready partitions, and agents to fail for the others."""
        for partition in partitions:
            if partition in errors:
                self._fail_agents(lambda a, p=partition: a.partition == p, (
                    f"cannot read verdicts partition {self.config.verdicts_topic}"
                    f"[{partition}]: {errors[partition]}"))
            else:
                self._ready.add(partition)

    def producer_fault(self, producer: Any, message: str) -> list[Pending]:
        """`producer` was fenced or broke: deny its unacknowledged checks, replace it.

        Call only once `producer.fence()` has returned: the checks woken here
        return at once, so their actions must already be beyond delivery.
        """
        woken = [p for p in self._pending.values() if p.producer is producer and not p.acked]
        for p in woken:
            del self._pending[p.request_id]
            p.result = Failure(UNAVAILABLE, f"action dropped, producer replaced: {message}")
        if producer is not None and producer is self.producer:
            self.producer, self._prepared = None, False
            self._stats["fences"] += 1
            self._producer.lost(message, self.clock.monotonic())
            self._recovering = message
        return woken

    def consumer_fault(self, message: str) -> list[Pending]:
        """The consumer broke: deny every waiting check, reopen and re-assign at the end.

        The current producer must have been fenced (`producer_fault`) first.
        """
        woken = list(self._pending.values())
        self._pending.clear()
        for p in woken:
            p.result = Failure(UNAVAILABLE, f"verdict consumer lost: {message}")
        self._consumer.lost(message, self.clock.monotonic())
        self._ready.clear()
        self._recovering = message
        return woken

    def close(self, message: str = "gate is closed") -> list[Pending]:
        """Deny every waiting check; the driver fences the producer first."""
        self.closed = True
        woken = list(self._pending.values())
        self._pending.clear()
        for p in woken:
            p.result = Failure(UNAVAILABLE, message)
        return woken

    # ------------------------------------------------------------------ helpers
    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = _Agent()
            if self._partitions is not None:
                agent.partition = partition_for(agent_id, self._partitions)
        return agent

    def _maybe_recovered(self) -> None:
        if self._consumer.up and self._prepared:
            self._recovering = None

    def _fail_waiting(self, message: str) -> None:
        """Fail agents still being set up (not during recovery: those are re-set-up eagerly)."""
        if self._recovering is None:
            self._fail_agents(lambda a: a.partition is None or a.partition not in self._ready,
                              message)

    def _fail_agents(self, which: Any, message: str) -> None:
        now = self.clock.monotonic()
        for agent in self._agents.values():
            if which(agent):                      # a new failure refreshes an old one
                agent.error, agent.failed_at = message, now
