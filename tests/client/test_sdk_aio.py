"""AsyncGate (aiokafka) against the real broker: the sync suite's essentials, on an event loop."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

import pytest
from test_sdk_responder import ALLOWED_ACTION, Responder, agents_by_partition

from holdgate.client import AsyncGate
from holdgate.errors import ActionDenied
from holdgate.cli.localkafka import free_port
from holdgate.reasons import INVALID_VERDICT, NO_PERMIT, TIMEOUT, UNAVAILABLE
from holdgate.settings import Settings

pytestmark = pytest.mark.kafka


AGENT = "support-bot-async"
TICKET = {"type": "Ticket", "id": "t-1"}


@pytest.fixture
async def gate(gate_settings: Settings) -> AsyncIterator[AsyncGate]:
    async with AsyncGate(settings=gate_settings, agent_id=AGENT, default_timeout=2.0) as g:
        yield g


async def test_allow_and_deny_round_trip(gate: AsyncGate, responder: Responder) -> None:
    allowed = await gate.check(action=ALLOWED_ACTION, resource=TICKET)
    assert allowed.allowed and allowed.key_id and allowed.policy_version == "test"
    denied = await gate.check(action="tickets.delete", resource=TICKET)
    assert not denied.allowed and denied.codes == [NO_PERMIT]


async def test_timeout_without_responder(gate: AsyncGate) -> None:
    started = time.monotonic()
    verdict = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.0)
    assert 0.95 <= time.monotonic() - started < 1.5
    assert verdict.codes == [TIMEOUT] and verdict.policy_version == "local"


async def test_late_verdict_is_ignored(gate: AsyncGate, responder: Responder) -> None:
    late = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=0.5,
                            context={"delay_ms": 1000})
    assert late.codes == [TIMEOUT]
    await asyncio.to_thread(responder.wait_replied, 1)
    for _ in range(100):
        if gate.stats["ignored"]:
            break
        await asyncio.sleep(0.02)
    assert gate.stats["ignored"] == 1 and gate.stats["verdicts"] == 0


@pytest.mark.parametrize("mode", ["tamper", "expired", "bad_digest", "unsigned"])
async def test_untrustworthy_allow_is_invalid_verdict(gate: AsyncGate, responder: Responder,
                                                      mode: str) -> None:
    verdict = await gate.check(action=ALLOWED_ACTION, resource=TICKET, context={"respond": mode})
    assert verdict.codes == [INVALID_VERDICT]


async def test_guard_on_async_function(gate: AsyncGate, responder: Responder) -> None:
    calls: list[str] = []

    @gate.guard(action=ALLOWED_ACTION,
                resource=lambda ticket_id, **kw: {"type": "Ticket", "id": ticket_id})
    async def read(ticket_id: str) -> str:
        calls.append(ticket_id)
        return ticket_id.upper()

    @gate.guard(action="tickets.delete",
                resource=lambda ticket_id, **kw: {"type": "Ticket", "id": ticket_id})
    async def delete(ticket_id: str) -> None:
        calls.append("deleted " + ticket_id)

    assert await read(ticket_id="t-7") == "T-7"
    with pytest.raises(ActionDenied) as denied:
        await delete("t-7")
    assert denied.value.verdict.codes == [NO_PERMIT] and calls == ["t-7"]
    with pytest.raises(TypeError, match="not async"):
        gate.guard(action=ALLOWED_ACTION, resource=TICKET)(lambda: None)


async def test_concurrent_gather(gate: AsyncGate, responder: Responder) -> None:
    actions = [ALLOWED_ACTION if i % 4 else "tickets.delete" for i in range(200)]
    verdicts = await asyncio.gather(*(
        gate.check(action=a, resource={"type": "Ticket", "id": f"t-{i}"})
        for i, a in enumerate(actions)))
    assert [v.allowed for v in verdicts] == [a == ALLOWED_ACTION for a in actions]
    assert gate.stats["sent"] == 200 and gate.stats["verdicts"] == 200


async def test_two_agents_and_in_flight_verdicts_survive_reassignment(
        gate_settings: Settings, responder: Responder) -> None:
    agents = agents_by_partition(2)
    async with AsyncGate(settings=gate_settings, agent_id=agents[0],
                         default_timeout=3.0) as gate:
        assert (await gate.check(action=ALLOWED_ACTION, resource=TICKET)).allowed
        assert gate._consumer is not None
        assert {tp.partition for tp in gate._consumer.raw.assignment()} == {0}
        slow = [asyncio.create_task(gate.check(action=ALLOWED_ACTION, resource=TICKET,
                                               context={"delay_ms": 300})) for _ in range(8)]
        await asyncio.sleep(0.1)
        other = await gate.check(action=ALLOWED_ACTION, resource=TICKET, agent_id=agents[1])
        assert other.allowed and other.agent_id == agents[1]
        assert all(v.allowed for v in await asyncio.gather(*slow))
        assert {tp.partition for tp in gate._consumer.raw.assignment()} == {0, 1}
        assert gate.assigned_partitions() == {0, 1}


async def test_missing_topics_deny_unavailable_quickly(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with AsyncGate(settings=settings, agent_id=AGENT) as gate:
        started = time.monotonic()
        verdict = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=3.0)
        assert time.monotonic() - started < 1.5
        assert verdict.codes == [UNAVAILABLE]
        assert settings.verdicts_topic in verdict.reasons[0].message


async def test_unreachable_broker_denies_within_timeout(gate_settings: Settings) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    async with AsyncGate(settings=gate_settings, bootstrap=bootstrap, agent_id=AGENT) as gate:
        started = time.monotonic()
        verdict = await gate.check(action=ALLOWED_ACTION, resource=TICKET, timeout=1.0)
        assert time.monotonic() - started < 1.5 and verdict.codes == [UNAVAILABLE]
