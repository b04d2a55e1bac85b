"""A broker restart under load: long-lived gates deny fast, deliver nothing late, recover.

Runs on its OWN broker (module scope, own directory and free ports): the test
stops it with SIGTERM and starts it again on the same ports and data dir, which
the session broker the other tests share must never see.

While checks keep coming from a `Gate` (two threads) and an `AsyncGate` (two
tasks), the broker goes down and comes back.  The contract checked:

* no check hangs: each returns within its timeout (plus scheduling slack), and
  during the outage every one is a local deny (UNAVAILABLE or TIMEOUT);
* nothing is delivered late: every action record in the log (actions topic with
  LogAppendTime, read read_committed) was appended no later than its check
  returned, and carries ``deadline = occurred_at + timeout``;
* both gates recover by themselves, without being recreated: checks get the
  responder's signed verdicts again within a bounded time after the restart.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from test_sdk_responder import ALLOWED_ACTION, Responder

from holdgate.client import AsyncGate, Gate
from holdgate.events import Verdict, decode_request
from holdgate.cli.localkafka import LocalKafka
from holdgate.reasons import TIMEOUT, UNAVAILABLE
from holdgate.settings import Settings
from holdgate.topics import ensure_topics

pytestmark = pytest.mark.kafka

CHECK_TIMEOUT = 1.0
CLIENT_TIMEOUT = 120.0       # the gates' default_timeout: longer than the whole outage
SLACK = 0.75                 # scheduling slack on a busy 2-core box, beyond the timeout
OUTAGE = 5.0                 # seconds of checking while the broker is down
RECOVERY_BOUND = 60.0        # both gates allow again within this long after the restart
PAUSE = 0.02                 # between a deny and the next check


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(workdir=Path(tmp_path_factory.mktemp("kafka-restart")))
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_settings(own_broker: LocalKafka, verdict_keys: dict[str, str]) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=own_broker.bootstrap, app_id=f"hg-restart-{tag}",
                        actions_topic=f"r{tag}.actions", verdicts_topic=f"r{tag}.verdicts",
                        deadletter_topic=f"r{tag}.deadletter", partitions=2,
                        signing_key_file=verdict_keys["signing_key_file"],
                        trusted_keys=verdict_keys["trusted_keys"]).validated()
    ensure_topics(settings)            # actions topic: message.timestamp.type=LogAppendTime
    return settings


@dataclass(frozen=True)
class Outcome:
    gate: str
    verdict: Verdict
    started: float               # monotonic
    elapsed: float
    returned_wall: float         # time.time() once check() returned


class Load:
    """Keeps both gates checking until stopped; records every outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def record(self, gate: str, verdict: Verdict, started: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.outcomes.append(Outcome(gate, verdict, started, now - started, time.time()))

    def sync_worker(self, gate: Gate, i: int) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            started = time.monotonic()
            verdict = gate.check(action=ALLOWED_ACTION, timeout=CHECK_TIMEOUT,
                                 resource={"type": "Ticket", "id": f"s{i}-{n}"})
            self.record("sync", verdict, started)
            if not verdict.allowed:
                time.sleep(PAUSE)          # an agent does not retry a deny in a tight loop

    async def async_worker(self, gate: AsyncGate, i: int) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            started = time.monotonic()
            verdict = await gate.check(action=ALLOWED_ACTION, timeout=CHECK_TIMEOUT,
                                       resource={"type": "Ticket", "id": f"a{i}-{n}"})
            self.record("async", verdict, started)
            if not verdict.allowed:
                await asyncio.sleep(PAUSE)

    def between(self, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started >= start and o.started + o.elapsed <= end]

    def first_allow_after(self, gate: str, after: float) -> float | None:
        with self._lock:
            return min((o.started + o.elapsed for o in self.outcomes
                        if o.gate == gate and o.started >= after and o.verdict.allowed
                        and o.verdict.policy_version == "test"), default=None)


def appended_actions(settings: Settings) -> dict[str, tuple[int, dict[str, object]]]:
    """request_id -> (append time ms, request object) for every action in the log."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_committed")
    try:
        tps = [TopicPartition(settings.actions_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        found: dict[str, tuple[int, dict[str, object]]] = {}
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) \
                and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    assert r.timestamp_type == 1, "actions topic must use LogAppendTime"
                    request = decode_request(r.value)
                    found[request.request_id] = (r.timestamp, request.to_obj())
        return found
    finally:
        consumer.close(autocommit=False)


async def test_gates_survive_a_broker_restart_under_load(own_broker: LocalKafka,
                                                         own_settings: Settings) -> None:
    settings = own_settings
    responder = Responder(settings)
    responder.start()
    # The gates' default timeout (which bounds the Kafka clients' own delivery
    # timeouts) is far longer than the outage, and checks use a short one: so a
    # record buffered when the broker went down would still be delivered when it
    # comes back, unless the gate fenced it.  This makes the test about the fence.
    gate = Gate(settings=settings, agent_id="restart-sync", default_timeout=CLIENT_TIMEOUT)
    agate = AsyncGate(settings=settings, agent_id="restart-async",
                      default_timeout=CLIENT_TIMEOUT)
    load = Load()
    threads: list[threading.Thread] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await agate.start()
        # Both gates work before anything happens (first check may wait for set-up).
        assert (await asyncio.to_thread(gate.check, action=ALLOWED_ACTION, timeout=30,
                                        resource={"type": "Ticket", "id": "warm"})).allowed
        assert (await agate.check(action=ALLOWED_ACTION, timeout=30,
                                  resource={"type": "Ticket", "id": "warm"})).allowed
        threads = [threading.Thread(target=load.sync_worker, args=(gate, i), daemon=True)
                   for i in range(2)]
        for t in threads:
            t.start()
        tasks = [asyncio.create_task(load.async_worker(agate, i)) for i in range(2)]
        await asyncio.sleep(1.5)                           # load on a healthy broker

        stopping = time.monotonic()
        await asyncio.to_thread(own_broker.stop)           # SIGTERM, waits for the exit
        down = time.monotonic()
        await asyncio.sleep(OUTAGE)                        # keep checking while it is down
        restarting = time.monotonic()
        await asyncio.to_thread(own_broker.start, 180)     # same ports, same data dir
        up = time.monotonic()

        deadline = up + RECOVERY_BOUND
        while time.monotonic() < deadline and not (
                load.first_allow_after("sync", up) and load.first_allow_after("async", up)):
            await asyncio.sleep(0.2)
    finally:
        load.halt.set()
        for t in threads:
            await asyncio.to_thread(t.join, 10)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        sync_stats, async_stats = gate.stats, agate.stats
        gate.close()
        await agate.close()
        responder.stop()

    outcomes = load.outcomes
    print(f"restart: stop took {down - stopping:.1f}s, start {up - restarting:.1f}s; "
          f"{len(outcomes)} checks; sync {sync_stats}; async {async_stats}")

    # 1. No check hung past its timeout, ever.
    slow = [o for o in outcomes if o.elapsed > CHECK_TIMEOUT + SLACK]
    assert not slow, f"{len(slow)} checks took longer than their timeout: {slow[:3]}"

    # 2. While the broker was down, every check was a local deny, and they kept coming.
    during = load.between(down, restarting)
    assert sync_stats["fences"] >= 1 and async_stats["fences"] >= 1   # the fence was needed
    for flavour in ("sync", "async"):
        mine = [o for o in during if o.gate == flavour]
        assert len(mine) >= 3, f"{flavour} gate made only {len(mine)} checks in the outage"
        assert all(o.verdict.codes[0] in (UNAVAILABLE, TIMEOUT) for o in mine), \
            {o.verdict.codes[0] for o in mine}

    # 3. Both gates recovered by themselves: responder verdicts again, in bounded time.
    for flavour in ("sync", "async"):
        first = load.first_allow_after(flavour, up)
        assert first is not None, f"{flavour} gate did not recover within {RECOVERY_BOUND}s"
        print(f"{flavour} gate allowed again {first - up:.1f}s after the broker was up")

    # 4. Nothing was delivered after its check returned; every request carried its deadline.
    log = appended_actions(settings)
    returned = {o.verdict.request_id: o for o in outcomes}
    ours = {rid: v for rid, v in log.items() if rid in returned}
    assert ours, "no action of the load reached the log"
    late = [(rid, ts / 1000 - returned[rid].returned_wall) for rid, (ts, _) in ours.items()
            if ts > returned[rid].returned_wall * 1000]
    assert not late, f"{len(late)} actions appended after their check returned: {late[:5]}"
    for _, request in ours.values():
        assert request["deadline"] == pytest.approx(
            float(request["occurred_at"]) + CHECK_TIMEOUT)  # type: ignore[arg-type]
    outage_ids = {o.verdict.request_id for o in during}
    print(f"{len(ours)} actions in the log, {len(outage_ids & set(ours))} of them from "
          f"checks made during the outage")
