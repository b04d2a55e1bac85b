"""Behavioural guards on the real broker: runaway loops, restarts, rebalances, replay, recovery."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from holdgate.client import Gate, partition_for
from holdgate.events import ActionRequest, Verdict
from holdgate.settings import Settings
from workers import publish_raw


def _gate(settings: Settings, agent: str) -> Gate:
    return Gate(bootstrap=settings.bootstrap, agent_id=agent, settings=settings)


def _reads(gate: Gate, n: int, agent: str = "audit-bot-1", prefix: str = "r") -> list[Verdict]:
    return [gate.check(action="records.read", agent_id=agent, timeout=30,
                       resource={"type": "Record", "id": "web-analytics-2024"},
                       context={"n": f"{prefix}{i}"}) for i in range(n)]


def test_runaway_loop_is_cut_off_in_the_first_second_humans_carry_on(
        gate_settings: Settings, start_worker: Callable[..., Any]) -> None:
    start_worker(gate_settings)
    with _gate(gate_settings, "support-bot-2") as gate:
        def runaway(_: int) -> Verdict:
            return gate.check(action="emails.send", resource={"type": "Email", "id": "welcome"},
                              context={"template": "welcome"}, timeout=20,
                              agent_id="support-bot-2")

        human: list[Verdict] = []

        def human_paced() -> None:
            for i in range(6):
                human.append(gate.check(action="emails.send", agent_id="support-bot-1",
                                        resource={"type": "Email", "id": f"reply-{i}"},
                                        context={"template": "reply"}, timeout=20))
                time.sleep(0.8)

        with ThreadPoolExecutor(max_workers=33) as pool:
            human_job = pool.submit(human_paced)
            t0 = time.time()
            loop = list(pool.map(runaway, range(300)))
            human_job.result()
    by_count = sorted(loop, key=lambda v: v.signals["repeat_10s"])
    assert [v.signals["repeat_10s"] for v in by_count] == list(range(1, 301))
    allowed = [v for v in by_count if v.allowed]
    assert [v.signals["repeat_10s"] for v in allowed] == [1, 2, 3]   # threshold: > 3 in 10 s
    first_deny = by_count[3]
    assert "REPETITION" in first_deny.codes
    assert first_deny.decided_at - t0 < 1.0          # stopped within the first second
    assert all(v.allowed for v in human), [(v.codes, v.signals) for v in human]


def test_counters_survive_a_crash_and_restart(gate_settings: Settings,
                                              start_worker: Callable[..., Any]) -> None:
    worker = start_worker(gate_settings)
    with _gate(gate_settings, "audit-bot-1") as gate:
        before = _reads(gate, 5)
        assert [v.signals["action_rate_60s"] for v in before] == [1, 2, 3, 4, 5]
        worker.stop(sig=signal.SIGKILL)             # a crash, not a clean shutdown
        start_worker(gate_settings)
        after = _reads(gate, 2, prefix="after")
    assert [v.signals["action_rate_60s"] for v in after] == [6, 7]
    assert after[0].signals["new_action"] == 0


def test_two_workers_rebalance_and_counts_stay_right(gate_settings: Settings,
                                                     start_worker: Callable[..., Any],
                                                     tmp_path: Any) -> None:
    a = start_worker(gate_settings)
    b = start_worker(replace(gate_settings, datadir=str(tmp_path / "worker-b")))
    agents = {"audit-bot-1": 1, "billing-bot-1": 0}        # one agent on each partition
    assert {partition_for(x, 2) for x in agents} == {0, 1}
    with _gate(gate_settings, "audit-bot-1") as gate:
        for agent in agents:
            first = [gate.check(action="invoices.read" if agent == "billing-bot-1" else
                                "records.read", agent_id=agent, timeout=30,
                                resource={"type": "Invoice", "id": f"inv-{i}",
                                          "attributes": {"amount_cents": 100}}
                                if agent == "billing-bot-1" else
                                {"type": "Record", "id": "web-analytics-2024"},
                                context={"i": str(i)}) for i in range(3)]
            assert [v.signals["rate_60s"] for v in first] == [1, 2, 3], [v.codes for v in first]
        b.stop()                                     # its partitions move to worker a
        for agent in agents:
            v = gate.check(action="invoices.read" if agent == "billing-bot-1" else
                           "records.read", agent_id=agent, timeout=60,
                           resource={"type": "Invoice", "id": "inv-9",
                                     "attributes": {"amount_cents": 100}}
                           if agent == "billing-bot-1" else
                           {"type": "Record", "id": "web-analytics-2024"},
                           context={"i": "after"})
            assert v.signals.get("rate_60s") == 4, (agent, v.codes, v.signals)
    a.assert_alive()


def _verdicts(settings: Settings, want: int, timeout: float = 60) -> dict[str, dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(settings.verdicts_topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            for r in recs:
                obj = orjson.loads(r.value)
                out[obj["request_id"]] = obj
    consumer.close()
    return out


def test_a_group_started_late_never_turns_a_given_up_check_into_an_allow(
        gate_settings: Settings, start_worker: Callable[..., Any], tmp_path: Any) -> None:
    """Replaying history is `holdgate replay`'s job; a second LIVE group deciding old
    actions long after their runtimes stopped waiting must deny them all (EXPIRED)."""
    worker = start_worker(gate_settings)
    with _gate(gate_settings, "audit-bot-1") as gate:
        first = [gate.check(action="records.read", agent_id="audit-bot-1", timeout=3,
                            resource={"type": "Record", "id": "web-analytics-2024"},
                            context={"n": str(i)}) for i in range(10)]
    worker.stop()
    assert all(v.allowed for v in first)
    time.sleep(max(0.0, max(v.request["deadline"] for v in first if v.request) - time.time()))
    original = _verdicts(gate_settings, 10)
    late = replace(gate_settings, app_id=gate_settings.app_id + "-late",
                   verdicts_topic=gate_settings.verdicts_topic + ".late",
                   deadletter_topic=gate_settings.deadletter_topic + ".late",
                   datadir=str(tmp_path / "late"))
    start_worker(late, wait=False)
    again = _verdicts(late, len(original))
    assert set(again) >= {v.request_id for v in first}
    for v in first:
        redecided = again[v.request_id]
        assert redecided["decision"] == "deny"
        assert [r["code"] for r in redecided["reasons"]][:2] == ["EXPIRED", "PERMITTED"]


def test_lost_state_is_denied_state_recovering(gate_settings: Settings,
                                              start_worker: Callable[..., Any]) -> None:
    worker = start_worker(gate_settings)
    with _gate(gate_settings, "audit-bot-1") as gate:
        assert all(v.allowed for v in _reads(gate, 3))
        worker.stop()
        admin = KafkaAdminClient(bootstrap_servers=gate_settings.bootstrap)
        admin.delete_topics([gate_settings.changelog_topic])     # every counter is gone
        deadline = time.monotonic() + 30
        while gate_settings.changelog_topic in admin.list_topics():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        admin.close()
        start_worker(gate_settings)
        v = _reads(gate, 1, prefix="after-loss")[0]
    assert not v.allowed and v.codes == ["STATE_RECOVERING"]
    assert v.signals["action_rate_60s"] == 1     # counted again from here, but not trusted


@pytest.mark.parametrize("offset, word", [(-3600, "behind"), (120, "ahead of")])
def test_skewed_timestamps_are_denied(gate_settings: Settings, start_worker: Callable[..., Any],
                                      offset: float, word: str) -> None:
    start_worker(gate_settings)
    req = ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                               resource={"type": "Ticket", "id": "T-1"},
                               occurred_at=time.time() + offset)
    result = publish_raw(gate_settings, req)
    assert result is not None
    found = result[1]
    assert found is not None and found["decision"] == "deny"
    assert found["reasons"][0]["code"] == "CLOCK_SKEW" and word in found["reasons"][0]["message"]
