"""Hold latency and sustained throughput: holdgate's worker against echo floors.

Every processor runs as a real process on the same broker in the same run, and
the same SDK drives them:
- latency: C agents in closed loops (one check in flight per agent), for D s;
- throughput: one AsyncGate keeping W checks in flight across the fleet, for D s.
The floor is a bare aiokafka consume -> produce echo (bench/echo_bare.py); a
Faust echo (bench/echo_faust.py) is the second line.  holdgate's ratios against
the bare floor are what its decision, state and exactly-once commits cost.
Against the bare echo only, a raw aiokafka client (a producer and a consumer,
no SDK) makes the same round trips with 1 and with C in flight: the difference
to the SDK's closed loop is what the SDK itself adds.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common import bench_settings, fleet_bundle, summary_ms, worker

from holdgate.client import AsyncGate, Gate, partition_for
from holdgate.cli.fleet import wait_for_gate
from holdgate.events import ActionRequest, encode
from holdgate.kafka_options import aiokafka_options


def _resource(i: int) -> dict[str, Any]:
    return {"type": "Ticket", "id": f"T-{i % 5000}"}


def _one_per_partition(agents: list[str], partitions: int) -> list[str]:
    """Warm-up set: the timed part should never wait on a new partition assignment."""
    firsts: dict[int, str] = {}
    for a in agents:
        firsts.setdefault(partition_for(a, partitions), a)
    return list(firsts.values())


def _wait_ready(gate: Gate) -> None:
    if not wait_for_gate(gate, timeout=120):
        raise SystemExit("worker never answered; see its log in the datadir")


def closed_loop(settings: Any, agents: list[str], seconds: float,
                n_lanes: int) -> dict[str, Any]:
    lat: list[float] = []
    lock = threading.Lock()
    codes: dict[str, int] = {}
    stop = time.monotonic() + seconds
    with Gate(bootstrap=settings.bootstrap, agent_id=agents[0], settings=settings) as gate:
        _wait_ready(gate)
        for a in _one_per_partition(agents, settings.partitions):
            gate.check(action="tickets.read", resource=_resource(0), agent_id=a, timeout=30)

        def run(lane: int) -> None:
            # Each closed loop cycles through its share of the fleet, so no single agent
            # trips the per-agent rate guards and the run measures the allow path.
            mine = agents[lane::n_lanes]
            i = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                v = gate.check(action="tickets.read", resource=_resource(i),
                               agent_id=mine[i % len(mine)], timeout=10)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    codes[v.codes[0]] = codes.get(v.codes[0], 0) + 1
                i += 1

        threads = [threading.Thread(target=run, args=(k,)) for k in range(n_lanes)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t_start
    return {**summary_ms(lat), "throughput": len(lat) / elapsed, "codes": codes,
            "samples_ms": [x * 1000 for x in lat]}


async def _open_window(settings: Any, agents: list[str], seconds: float,
                       window: int) -> dict[str, Any]:
    lat: list[float] = []
    codes: dict[str, int] = {}
    async with AsyncGate(bootstrap=settings.bootstrap, agent_id=agents[0],
                         settings=settings) as gate:
        for a in _one_per_partition(agents, settings.partitions):
            await gate.check(action="tickets.read", resource=_resource(0), agent_id=a,
                             timeout=30)
        # a short unmeasured warm-up so JIT-less start-up costs (first batches, metadata,
        # connection setup) are not in the figures
        await asyncio.gather(*(gate.check(action="tickets.read", resource=_resource(i),
                                          agent_id=agents[i % len(agents)], timeout=30)
                               for i in range(window * 4)))
        stop = time.monotonic() + seconds
        counter = iter(range(10**9))

        async def lane(k: int) -> None:
            while time.monotonic() < stop:
                i = next(counter)
                t0 = time.perf_counter()
                v = await gate.check(action="tickets.read", resource=_resource(i),
                                     agent_id=agents[i % len(agents)], timeout=10)
                lat.append(time.perf_counter() - t0)
                codes[v.codes[0]] = codes.get(v.codes[0], 0) + 1

        t_start = time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(window)))
        elapsed = time.perf_counter() - t_start
    return {**summary_ms(lat), "throughput": len(lat) / elapsed, "codes": codes,
            "samples_ms": [x * 1000 for x in lat]}


async def raw_round_trip(settings: Any, agents: list[str], seconds: float,
                         in_flight: int) -> dict[str, Any]:
    """Closed loops of a bare aiokafka producer + consumer: the SDK's floor.

    The same request bytes and keys the SDK publishes (acks=all, idempotent,
    no linger), answers read by a consumer assigned every verdict partition;
    nothing is verified or fenced.
    """
    s = settings
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=0, acks="all",
                                enable_idempotence=True, **aiokafka_options(s))
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                fetch_max_wait_ms=100, isolation_level="read_committed",
                                **aiokafka_options(s))
    await producer.start()
    await consumer.start()
    waiting: dict[str, asyncio.Future[float]] = {}
    lat: list[float] = []
    try:
        tps = [TopicPartition(s.verdicts_topic, p) for p in range(s.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        async def read() -> None:
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    for r in records:
                        fut = waiting.pop(orjson.loads(r.value or b"{}").get("request_id"), None)
                        if fut is not None and not fut.done():
                            fut.set_result(time.perf_counter())

        reader = asyncio.ensure_future(read())

        async def lane(k: int, until: float, keep: bool) -> None:
            i = k
            while time.monotonic() < until:
                agent = agents[i % len(agents)]
                req = ActionRequest.create(agent_id=agent, action="tickets.read",
                                           resource=_resource(i))
                fut = waiting[req.request_id] = asyncio.get_running_loop().create_future()
                t0 = time.perf_counter()
                await producer.send(s.actions_topic, encode(req), key=agent.encode(),
                                    partition=partition_for(agent, s.partitions))
                t1 = await asyncio.wait_for(fut, 10)
                if keep:
                    lat.append(t1 - t0)
                i += in_flight

        await asyncio.gather(*(lane(k, time.monotonic() + 2.0, False)   # warm-up
                               for k in range(in_flight)))
        await asyncio.gather(*(lane(k, time.monotonic() + seconds, True)
                               for k in range(in_flight)))
        reader.cancel()
    finally:
        await producer.stop()
        await consumer.stop()
    return {**summary_ms(lat), "in_flight": in_flight}


def run(bootstrap: str, *, agents: int, seconds: float, window: int,
        n_fleet: int, with_faust: bool = True) -> dict[str, Any]:
    bundle, fleet = fleet_bundle(n_fleet)
    out: dict[str, Any] = {"config": {"agents": agents, "seconds": seconds, "window": window,
                                      "fleet": n_fleet, "partitions": 4}}
    runs: list[tuple[str, str | None]] = [("bare", "bare"), ("holdgate", None)]
    if with_faust:
        runs.insert(1, ("faust", "faust"))
    for name, echo in runs:
        settings = bench_settings(bootstrap, name, policy_dir=str(bundle))
        with worker(settings, echo=echo):
            print(f"[{name}] closed loop: {agents} agents x {seconds:.0f}s ...", flush=True)
            with Gate(bootstrap=bootstrap, agent_id=fleet[0], settings=settings) as g:
                _wait_ready(g)
            latency = closed_loop(settings, fleet, seconds, agents)
            print(f"[{name}] open window: {window} in flight x {seconds:.0f}s ...", flush=True)
            tput = asyncio.run(_open_window(settings, fleet, seconds, window))
            out[name] = {"latency": latency, "throughput": tput}
            if echo == "bare":
                print(f"[raw client] 1 and {agents} in flight x {seconds:.0f}s ...", flush=True)
                out["raw"] = {str(n): asyncio.run(raw_round_trip(settings, fleet, seconds, n))
                              for n in (1, agents)}
    return out


def report(res: dict[str, Any]) -> str:
    names = [n for n in ("bare", "faust", "holdgate") if n in res]
    metrics = [
        ("hold latency p50 (ms), closed loop", "latency", "p50_ms"),
        ("hold latency p99 (ms), closed loop", "latency", "p99_ms"),
        ("actions/s, closed loop", "latency", "throughput"),
        ("hold latency p50 (ms), window", "throughput", "p50_ms"),
        ("hold latency p99 (ms), window", "throughput", "p99_ms"),
        ("max sustained actions/s, window", "throughput", "throughput"),
    ]
    c = res["config"]
    head = f"{'metric':<38}" + "".join(f"{n:>10}" for n in names) + f"{'vs bare':>9}"
    if "faust" in res:
        head += f"{'vs faust':>9}"
    lines = [f"hold: {c['agents']} closed-loop agents, window {c['window']}, {c['seconds']:.0f}s "
             f"each, fleet {c['fleet']}, {c['partitions']} partitions", head]
    for label, mode, key in metrics:
        values = [res[n][mode][key] for n in names]
        h, b = res["holdgate"][mode][key], res["bare"][mode][key]
        line = f"{label:<38}" + "".join(f"{v:>10.1f}" for v in values)
        line += f"{h / b if b else float('nan'):>8.2f}x"
        if "faust" in res:
            f = res["faust"][mode][key]
            line += f"{h / f if f else float('nan'):>8.2f}x"
        lines.append(line)
    lines.append(f"holdgate verdict codes (window): {res['holdgate']['throughput']['codes']}")
    if "raw" in res:
        n = str(c["agents"])
        one, many = res["raw"]["1"], res["raw"][n]
        sdk = res["bare"]["latency"]
        lines.append(f"raw aiokafka client vs the bare echo: p50/p99 {one['p50_ms']:.1f}/"
                     f"{one['p99_ms']:.1f} ms with 1 in flight, {many['p50_ms']:.1f}/"
                     f"{many['p99_ms']:.1f} ms with {n}; the sync Gate's {n} closed loops: "
                     f"{sdk['p50_ms']:.1f}/{sdk['p99_ms']:.1f} ms (SDK adds "
                     f"{sdk['p50_ms'] - many['p50_ms']:+.1f} ms at p50)")
    return "\n".join(lines)
