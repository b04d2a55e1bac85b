"""The SDK's own metrics: checks by outcome, local denies by code, hold latency.

Driven through the sans-I/O core with a fake clock (exact latencies), then
exported with `holdgate.client.metrics.register`, and finally imported with
prometheus_client unavailable (the SDK must not need it).
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from test_core import FakeClock, allow, bring_up, check, new_core

from holdgate.client.core import GateCore
from holdgate.client.transport import TransportError
from holdgate.events import Reason
from holdgate.reasons import INVALID_VERDICT, TIMEOUT, UNAVAILABLE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _deny(p: object, code: str = "RATE_LIMIT") -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    from test_core import SIGNER

    from holdgate.events import decode_verdict, encode
    from holdgate.signing import sign_headers

    value, _ = allow(p)  # type: ignore[arg-type]
    verdict = replace(decode_verdict(value), decision="deny", reasons=(Reason(code),))
    value = encode(verdict)
    return value, sign_headers(SIGNER, value)


def _played(clock: FakeClock) -> GateCore:
    """2 allows (0.004 s and 0.3 s), 1 worker deny, 1 TIMEOUT, 1 UNAVAILABLE, 1 INVALID."""
    core = new_core(clock)
    bring_up(core, object())
    a, b, d, t, bad = (check(core) for _ in range(5))
    for p in (a, b, d, t, bad):
        core.admit(p)
    clock.advance(0.004)
    assert core.receive([allow(a)]) == [a]
    core.finish(a)
    clock.advance(0.296)
    core.receive([allow(b), _deny(d), allow(bad, action_digest="sha256:" + "0" * 64)])
    for p in (b, d, bad):
        core.finish(p)
    core.expire(t)                                    # nothing came for it: TIMEOUT
    u = check(core)
    core.admit(u)
    core.delivered(u, TransportError("delivery failed"))
    core.finish(u)                                    # UNAVAILABLE
    return core


def test_outcomes_local_denies_and_hold_latency(clock: FakeClock) -> None:
    m = _played(clock).metrics
    assert m.checks == {"allow": 2, "deny": 4, "pending": 0}
    assert m.local_denies == {TIMEOUT: 1, UNAVAILABLE: 1, INVALID_VERDICT: 1}
    # verdict records read: a after 4 ms; b, d and bad after 300 ms (not t, not u)
    assert m.hold.count == 4 and m.hold.sum == pytest.approx(0.004 + 3 * 0.3)
    bounds = dict(zip(m.hold.buckets, m.hold.counts))
    assert bounds[0.0025] == 0 and bounds[0.005] == 1 and bounds[0.25] == 1
    assert bounds[0.5] == 4 and m.hold.counts[-1] == 4
    assert m.stats["timeouts"] == 1 and m.stats["verdicts"] == 4


def test_a_deny_before_sending_is_counted_and_has_no_latency(clock: FakeClock) -> None:
    core = new_core(clock)
    core.not_ready(check(core))                       # never set up: UNAVAILABLE
    core.close()
    core.admit(check(core))                           # closed: UNAVAILABLE
    m = core.metrics
    assert m.checks["deny"] == 2 and m.local_denies == {UNAVAILABLE: 2} and m.hold.count == 0


def test_pending_verdict_counts_once_as_pending(clock: FakeClock) -> None:
    core = new_core(clock)
    bring_up(core, object())
    p = check(core)
    core.admit(p)
    clock.advance(0.02)
    core.receive([allow(p, decision="pending", reasons=(Reason("APPROVAL_REQUIRED"),))])
    assert core.finish(p).decision == "pending"
    m = core.metrics
    assert m.checks == {"allow": 0, "deny": 0, "pending": 1} and m.hold.count == 1


def test_register_exports_to_prometheus(clock: FakeClock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from holdgate.client.metrics import register

    class FakeGate:                                   # anything with .metrics
        def __init__(self, core: GateCore) -> None:
            self.core = core

        @property
        def metrics(self):  # type: ignore[no-untyped-def]
            return self.core.metrics

    gate, other = FakeGate(_played(clock)), FakeGate(new_core(FakeClock()))
    registry = CollectorRegistry()
    register(gate, registry, name="billing")
    register(other, registry, name="support")
    with pytest.raises(ValueError, match="already registered"):
        register(other, registry, name="support")
    text = generate_latest(registry).decode()
    for line in ('holdgate_sdk_checks_total{gate="billing",outcome="allow"} 2.0',
                 'holdgate_sdk_checks_total{gate="billing",outcome="deny"} 4.0',
                 'holdgate_sdk_local_denies_total{code="TIMEOUT",gate="billing"} 1.0',
                 'holdgate_sdk_local_denies_total{code="INVALID_VERDICT",gate="billing"} 1.0',
                 'holdgate_sdk_hold_seconds_bucket{gate="billing",le="0.005"} 1.0',
                 'holdgate_sdk_hold_seconds_count{gate="billing"} 4.0',
                 'holdgate_sdk_actions_sent_total{gate="billing"} 0.0',
                 'holdgate_sdk_checks_total{gate="support",outcome="allow"} 0.0'):
        assert line in text, text


def test_gate_and_async_gate_expose_metrics() -> None:
    import asyncio

    from holdgate.client.mock import MockBroker
    from test_sdk_mock import SIGNER, TICKET, agate, gate, worker

    with gate(MockBroker(worker, signer=SIGNER)) as g:
        g.check(action="tickets.read", resource=TICKET)
        g.check(action="tickets.delete", resource=TICKET)
        m = g.metrics
    assert m.checks == {"allow": 1, "deny": 1, "pending": 0} and m.hold.count == 2

    async def run() -> None:
        async with agate(MockBroker(worker, signer=SIGNER)) as a:
            await a.check(action="tickets.read", resource=TICKET)
            assert a.metrics.checks["allow"] == 1 and a.metrics.hold.count == 1

    asyncio.run(run())


def test_the_sdk_imports_and_counts_without_prometheus_client() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None          # as if it were not installed
from holdgate.client import Gate
from holdgate.client.metrics import register, GateMetrics
from holdgate.client.mock import MockTransport
from holdgate.keys import Signer, TrustStore
from holdgate.settings import Settings
with Gate(agent_id="support-bot-1", transport=MockTransport(),
          trusted_keys=TrustStore([Signer.generate().public_key]),
          settings=Settings(bootstrap="mock:9092")) as gate:
    gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-1"}, timeout=0.5)
    m = gate.metrics
assert isinstance(m, GateMetrics) and sum(m.checks.values()) == 1, m
try:
    register(gate)
except ImportError as exc:
    print("ImportError:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ImportError: holdgate.client.metrics.register needs prometheus_client" \
        in done.stdout
