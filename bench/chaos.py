"""Chaos: valid load through the SDK, a flood of fuzzed records, worker SIGKILLs, a broker restart.

Not run in CI.  ``python bench/chaos.py --help``; a quick run is
``python bench/chaos.py --fuzz 20000 --kills 3 --seconds 60``; the default
(1,000,000 fuzzed records, 10 kills, 600 s of load) takes 10-20 minutes.

1. A local broker on free ports (or ``--bootstrap``), the gate's topics with 4
   partitions, one ``holdgate worker`` subprocess (static membership).
2. Valid load: one `AsyncGate`, one closed loop per fleet agent, every answer
   recorded.  Beside it a separate process publishes fuzzed records with a raw
   idempotent aiokafka producer as fast as the broker takes them (`Fuzzer`:
   random bytes, truncated and deeply nested JSON, huge strings, wrong types
   and Cedar escapes, lone surrogates, NaN/Infinity, duplicate keys, wrong
   keys and partitions, nulls, tombstones, keyless and unknown-agent requests).
3. The worker is SIGKILLed ``--kills`` times at random moments and restarted
   1-3 s later; the broker is stopped (SIGTERM) and started again on the same
   ports and data once, in the middle.  Exits we did not cause are crashes
   (the worker is restarted and the run goes on).
4. Drain: until every committed action record has a verdict or a dead letter
   naming its partition/offset.  Then actions, verdicts and dead letters are
   read back read_committed and the promise of tests/e2e/test_exactly_once is
   measured, not asserted: duplicate and conflicting verdicts, undecided
   records, SDK answers that differ from the log, per-agent counter continuity
   (`check_counters`).  The worker's RSS is sampled all along.
5. The report is printed and saved to bench/results/chaos.json; the exit
   status is 1 when any figure that must be 0 is not.

An SDK gate that answers nothing but UNAVAILABLE for ``--gate-stuck`` seconds
with the broker up is replaced and the replacement reported (an SDK liveness
failure, kept apart from the worker's figures).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTITIONS = 4
MUST_BE_ZERO = ("requests_with_distinct_decisions", "valid_actions_never_decided",
                "records_with_neither_verdict_nor_deadletter", "sdk_answers_differing",
                "counter_violations", "worker_crashes_not_ours",
                "requests_with_more_verdicts_than_records")


def quiet() -> None:
    """aiokafka logs every failed reconnect at ERROR: thousands of lines per broker restart."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("holdgate.client").setLevel(logging.ERROR)


def now() -> float:
    return time.monotonic()


# =============================================================================== fuzzing
FUZZ_WEIGHTS: dict[str, float] = {
    "random_bytes": 10, "truncated_json": 10, "deep_nesting": 2, "huge_string": 0.05,
    "wrong_types": 20, "lone_surrogate": 6, "nan_infinity": 6, "duplicate_keys": 6,
    "wrong_key": 6, "wrong_partition": 6, "null_value": 5, "tombstone": 4, "no_key": 6,
    "unknown_agent": 8, "unknown_names": 3,
}

# Values of the wrong type for any field, including shapes the Cedar JSON format treats
# specially (entity references and extension calls) when they reach a context or attributes.
_WRONG = [None, True, False, 0, -1, 1.5, -0.0, 2**63, 2**64 - 1, -(2**63) - 1, "", " ",
          "x" * 300, "\u0000", "\u202e", [], {}, [1, "a", None], {"a": None}, {"a": 1.5},
          {"__entity": {"type": "Agent", "id": "support-bot-1"}}, {"__entity": "x"},
          {"__extn": {"fn": "decimal", "arg": "1.2.3.4"}}, {"__extn": {"fn": "ip", "arg": "x"}},
          {"__extn": {"fn": "nope", "arg": 1}}, {"__extn": 5}, {"__expr": "1 + 1"},
          {"signals": {"rate_1s": 0}}, 1e300, -1e300, 1e-300]
_FIELDS = ["schema_version", "request_id", "agent_id", "action", "resource", "resource.type",
           "resource.id", "resource.attributes", "resource.extra", "context", "context.k",
           "context.signals", "occurred_at", "deadline", "extra_field", "$"]


def partition_for(agent: str) -> int:
    from holdgate.routing import partition_for as pf

    return pf(agent, PARTITIONS)


class Fuzzer:
    """Fuzzed action records: (category, key, value, partition); every kind the brief names."""

    def __init__(self, seed: int, agents: list[str]) -> None:
        self.rnd = random.Random(seed)
        self.agents = agents                     # known to the entity store
        self.ghosts = [f"ghost-{i:04d}" for i in range(1000)]
        self.part = {a: partition_for(a) for a in agents + self.ghosts}
        names = list(FUZZ_WEIGHTS)
        self.categories = names
        self.cum = list(_accumulate([FUZZ_WEIGHTS[n] for n in names]))

    def pick(self) -> str:
        x = self.rnd.random() * self.cum[-1]
        for name, c in zip(self.categories, self.cum):
            if x < c:
                return name
        return self.categories[-1]

    def obj(self, agent: str | None = None, **over: Any) -> dict[str, Any]:
        r = self.rnd
        agent = agent or r.choice(self.agents)
        o: dict[str, Any] = {
            "schema_version": 1, "request_id": str(uuid.uuid4()), "agent_id": agent,
            "action": r.choice(["tickets.read", "tickets.reply", "customers.read"]),
            "resource": {"type": "Ticket", "id": f"T-{r.randrange(500)}"},
            "context": {"n": str(r.randrange(10**6))}, "occurred_at": time.time()}
        if r.random() < 0.5:
            o["deadline"] = o["occurred_at"] + r.uniform(1, 30)
        o.update(over)
        return o

    def make(self, cat: str) -> tuple[bytes | None, bytes | None, int]:
        r = self.rnd
        agent = r.choice(self.agents)
        key: bytes | None = agent.encode()
        part = self.part[agent]
        rand_part = r.randrange(PARTITIONS)
        if cat == "random_bytes":
            value = r.randbytes(int(2 ** r.uniform(0, 12)))
            key = r.choice([None, key, r.randbytes(8)])
            return key, value, rand_part
        if cat == "truncated_json":
            full = orjson.dumps(self.obj(agent))
            return key, full[:r.randrange(len(full))], part
        if cat == "deep_nesting":
            depth = int(10 ** r.uniform(1, 5))          # 10 .. 100,000
            shape = r.randrange(3)
            if shape == 0:
                nest = b"[" * depth + b"]" * depth
            elif shape == 1:
                nest = b'{"a":' * depth + b"1" + b"}" * depth
            else:
                nest = b'{"a":[' * depth + b'"x"' + b"]}" * depth
            if r.random() < 0.5:
                return key, nest, part
            head = orjson.dumps(self.obj(agent))[:-1]        # open object
            return key, head + b',"context":' + nest + b"}", part
        if cat == "huge_string":
            n = r.randint(60_000, 70_000) if r.random() < 0.5 \
                else int(10 ** r.uniform(4.8, math.log10(900_000)))
            blob = "".join(r.choices("abcdefghij", k=64)) * (n // 64 + 1)
            blob = blob[:n]
            where = r.choice(["context", "context", "agent_id", "request_id", "resource_id",
                              "action", "key"])
            o = self.obj(agent)
            if where == "context":
                o["context"] = {"blob": blob}
            elif where == "agent_id":
                o["agent_id"] = blob
            elif where == "request_id":
                o["request_id"] = blob
            elif where == "resource_id":
                o["resource"]["id"] = blob
            elif where == "action":
                o["action"] = "a." + blob
            else:
                return blob.encode(), orjson.dumps(o), part
            return key, orjson.dumps(o), part
        if cat == "wrong_types":
            o = self.obj(agent)
            path = r.choice(_FIELDS)
            bad = r.choice(_WRONG)
            if path == "$":
                return key, json.dumps(bad).encode(), part
            if path == "extra_field":
                o["zzz"] = bad
            elif path.startswith("resource."):
                o["resource"][path.split(".", 1)[1]] = bad
            elif path.startswith("context."):
                o["context"][path.split(".", 1)[1]] = bad
            else:
                o[path] = bad
            return key, json.dumps(o).encode(), part      # stdlib: big ints too
        if cat == "lone_surrogate":
            o = self.obj(agent)
            marker = "@@SURR@@"
            target = r.choice(["request_id", "agent_id", "action", "resource.id", "ctxval",
                               "ctxkey"])
            if target == "resource.id":
                o["resource"]["id"] = "T-" + marker
            elif target == "ctxval":
                o["context"]["s"] = marker
            elif target == "ctxkey":
                o["context"][marker] = "v"
            else:
                o[target] = o[target][:8] + marker
            sur = r.choice([b"\\ud800", b"\\udfff", b"\\ud800\\u0041", b"\\udc00\\ud800",
                            b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\\ud83d"])
            return key, orjson.dumps(o).replace(marker.encode(), sur), part
        if cat == "nan_infinity":
            o = self.obj(agent)
            lit = r.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"nan",
                            b"inf", b"1e308"])
            target = r.choice(["occurred_at", "deadline", "ctx", "schema_version"])
            o_marker = 123456789.25
            if target == "ctx":
                o["context"]["x"] = o_marker
            else:
                o[target] = o_marker
            return key, orjson.dumps(o).replace(b"123456789.25", lit), part
        if cat == "duplicate_keys":
            o = self.obj(agent)
            body = orjson.dumps(o)[1:-1]
            dup_field = r.choice(["agent_id", "request_id", "schema_version", "context",
                                  "action", "occurred_at"])
            other = {"agent_id": r.choice(self.agents + self.ghosts),
                     "request_id": str(uuid.uuid4()), "schema_version": r.choice([1, 2]),
                     "context": {"signals": {}}, "action": "payments.refund",
                     "occurred_at": time.time() - r.choice([0, 3600])}[dup_field]
            extra = b'"' + dup_field.encode() + b'":' + orjson.dumps(other)
            value = b"{" + (extra + b"," + body if r.random() < 0.5 else body + b"," + extra) \
                + b"}"
            return key, value, part
        if cat == "wrong_key":
            key = r.choice([r.choice(self.agents).encode(), b"", r.randbytes(12),
                            agent.upper().encode(), agent.encode() + b" ", b"\xff" * 4])
            return key, orjson.dumps(self.obj(agent)), part
        if cat == "wrong_partition":
            return key, orjson.dumps(self.obj(agent)), (part + r.randint(1, 3)) % PARTITIONS
        if cat == "null_value":
            if r.random() < 0.3:
                return key, b"null", part
            o = self.obj(agent)
            target = r.choice(["request_id", "agent_id", "action", "resource", "context",
                               "occurred_at", "deadline", "schema_version", "resource.id",
                               "resource.attributes", "context.k"])
            if target.startswith("resource."):
                o["resource"][target[9:]] = None
            elif target.startswith("context."):
                o["context"]["k"] = None
            else:
                o[target] = None
            return key, orjson.dumps(o), part
        if cat == "tombstone":
            # (a record with neither key nor value is refused by every Python client)
            return key, None, r.choice([part, part, rand_part])
        if cat == "no_key":
            return None, orjson.dumps(self.obj(agent)), part
        if cat == "unknown_agent":
            ghost = r.choice(self.ghosts)
            return ghost.encode(), orjson.dumps(self.obj(ghost)), self.part[ghost]
        if cat == "unknown_names":
            o = self.obj(agent, action=r.choice(["zzz.unknown", "tickets.delete_all"]),
                         resource={"type": r.choice(["Ticket", "Nonexistent", "Agent"]),
                                   "id": "x"})
            return key, orjson.dumps(o), part
        raise ValueError(cat)


def _accumulate(xs: list[float]) -> list[float]:
    out, total = [], 0.0
    for x in xs:
        total += x
        out.append(total)
    return out


async def _fuzz_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """Publish cfg['n'] fuzzed records as fast as the broker takes them; count what happened.

    Idempotent, so a retry never duplicates a record (a duplicate would show up as a second
    verdict).  aiokafka's idempotent producer does not recover from a lost in-flight batch
    (every later batch fails OutOfOrderSequenceNumber after a broker restart), so a producer
    that saw a failed delivery is replaced.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    def new_producer() -> Any:
        return AIOKafkaProducer(bootstrap_servers=cfg["bootstrap"], client_id="chaos-fuzz",
                                linger_ms=20, max_batch_size=256 * 1024,
                                max_request_size=2 * 2**20, enable_idempotence=True,
                                request_timeout_ms=30_000, retry_backoff_ms=200)

    fuzzer = Fuzzer(cfg["seed"], cfg["agents"])
    sent: Counter[str] = Counter()
    acked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    pending: list[tuple[str, asyncio.Future[Any]]] = []
    broken: list[str] = []
    replaced = 0
    rate = cfg.get("rate") or 0.0
    t0 = now()

    def on_done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            broken.append(type(fut.exception()).__name__)

    async def settle(batch: list[tuple[str, asyncio.Future[Any]]]) -> None:
        for cat, fut in batch:
            try:
                await fut
                acked[cat] += 1
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                failed[cat] += 1
                errors[type(exc).__name__] += 1

    producer = new_producer()
    await producer.start()
    try:
        for i in range(cfg["n"]):
            if broken:
                await settle(pending)
                pending.clear()
                broken.clear()
                await producer.stop()
                while True:
                    producer = new_producer()
                    try:
                        await producer.start()
                        break
                    except Exception as exc:  # noqa: BLE001 - broker still away
                        errors[f"start:{type(exc).__name__}"] += 1
                        await producer.stop()
                        await asyncio.sleep(1.0)
                replaced += 1
            cat = fuzzer.pick()
            key, value, part = fuzzer.make(cat)
            fut = None
            for _ in range(120):
                try:
                    fut = await producer.send(cfg["topic"], value, key=key, partition=part)
                    break
                except (KafkaTimeoutError, KafkaConnectionError) as exc:  # broker away: wait
                    errors[f"send:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.5)
                except Exception as exc:  # noqa: BLE001 - refused by the client itself
                    errors[f"refused:{type(exc).__name__}"] += 1
                    if not isinstance(exc, (ValueError, AssertionError, TypeError)):
                        broken.append(type(exc).__name__)
                    break
            if fut is None:
                failed[cat] += 1
                continue
            sent[cat] += 1
            fut.add_done_callback(on_done)
            pending.append((cat, fut))
            if len(pending) >= 20_000:
                await settle(pending[:10_000])
                del pending[:10_000]
            if rate and i % 100 == 0:
                ahead = i / rate - (now() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await settle(pending)
    finally:
        await producer.stop()
    return {"sent": dict(sent), "acked": dict(acked), "failed": dict(failed),
            "errors": dict(errors), "producers_replaced": replaced, "seconds": now() - t0}


def start_fuzz_child(cfg_path: Path, workdir: Path) -> subprocess.Popen[bytes]:
    with open(workdir / "fuzz.log", "wb") as log:
        return subprocess.Popen([sys.executable, __file__, "--fuzz-child", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def fuzz_child_main(cfg_path: str) -> None:
    quiet()
    cfg = json.loads(Path(cfg_path).read_text())
    res = asyncio.run(_fuzz_child(cfg))
    Path(cfg["out"]).write_text(json.dumps(res))


# =============================================================================== processes
@dataclass
class Life:
    pid: int
    started: float
    ended: float | None = None
    returncode: int | None = None
    killed_by_us: bool = False
    rss_kb: list[int] = field(default_factory=list)


class WorkerCtl:
    """The worker subprocess: start, SIGKILL, restart; every exit not ours is a crash."""

    def __init__(self, settings: Any, log_path: Path, t0: float) -> None:
        self.settings = settings
        self.log_path = log_path
        self.t0 = t0
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[Life] = []
        self.crashes: list[dict[str, Any]] = []
        self.samples: list[tuple[float, int, int]] = []    # (t, pid, VmRSS kB)
        self._expect_exit = False

    def start(self) -> None:
        from common import HOLDGATE

        env = {**os.environ, **self.settings.to_env()}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== chaos: worker start at t={now() - self.t0:.1f}s =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen([*HOLDGATE, "worker"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._expect_exit = False
        self.lives.append(Life(self.proc.pid, now() - self.t0))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        self._expect_exit = True
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._close_life(self.proc.returncode, ours=True)
        return self.proc.returncode

    def _close_life(self, rc: int | None, *, ours: bool) -> None:
        life = self.lives[-1]
        if life.ended is None:
            life.ended, life.returncode, life.killed_by_us = now() - self.t0, rc, ours

    def poll_exit(self) -> dict[str, Any] | None:
        """An exit we did not cause: recorded as a crash (the caller restarts)."""
        if self.proc is None or self._expect_exit or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        self._close_life(rc, ours=False)
        crash = {"pid": self.proc.pid, "returncode": rc, "at_s": round(now() - self.t0, 1),
                 "log_tail": tail(self.log_path, 60)}
        self.crashes.append(crash)
        self._expect_exit = True
        return crash

    def sample(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        if m:
            kb = int(m.group(1))
            self.samples.append((round(now() - self.t0, 1), self.proc.pid, kb))
            self.lives[-1].rss_kb.append(kb)


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Broker:
    """Our own LocalKafka (kept, unlike bench/common.broker, so it can be restarted)."""

    def __init__(self, bootstrap: str | None) -> None:
        self.given = bootstrap
        self.kafka: Any = None
        self.tmp: Path | None = None

    def start(self) -> str:
        if self.given:
            return self.given
        from holdgate.cli.localkafka import LocalKafka

        self.tmp = Path(tempfile.mkdtemp(prefix="hg-chaos-kafka-"))
        self.kafka = LocalKafka(workdir=self.tmp)
        print(f"starting a local Kafka on {self.kafka.bootstrap} ...", flush=True)
        return str(self.kafka.start(timeout=120))

    def restart(self) -> dict[str, float]:
        """SIGTERM, then start again on the same ports and data."""
        t = now()
        self.kafka.stop()
        stopped = now() - t
        # same ports and data; its port check (preflight.port_taken) ignores TIME_WAIT
        self.kafka.start(timeout=120)
        return {"stop_s": round(stopped, 1), "down_s": round(now() - t, 1)}

    def close(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


# =============================================================================== valid load
@dataclass
class Answers:
    got: dict[str, tuple[str, tuple[str, ...], bool]] = field(default_factory=dict)
    local: Counter[str] = field(default_factory=Counter)
    local_messages: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class LoadState:
    """What the load's gate watchdog knows: is the broker up, when did the gate last work."""

    broker_up: bool = True
    broker_up_since: float = field(default_factory=now)
    last_usable: float = field(default_factory=now)     # last answer other than UNAVAILABLE
    gates_replaced: list[dict[str, Any]] = field(default_factory=list)


async def valid_load(settings: Any, agents: list[str], answers: Answers, stop: asyncio.Event,
                     timeout: float, st: LoadState, t0: float,
                     stuck_after: float) -> dict[str, Any]:
    """Closed loops through one AsyncGate.

    A gate that answers nothing but UNAVAILABLE for `stuck_after` seconds while the
    broker is up is replaced (what an operator restarting the runtime would do) and
    the replacement is reported: it is an SDK liveness failure, not a worker one.
    """
    from holdgate.client import AsyncGate

    def open_gate() -> Any:
        return AsyncGate(bootstrap=settings.bootstrap, settings=settings)

    box = [await open_gate().start()]
    stats: Counter[str] = Counter()

    async def lane(agent: str) -> None:
        rnd = random.Random(agent)
        i = 0
        while not stop.is_set():
            try:
                v = await box[0].check(action="tickets.read", agent_id=agent, timeout=timeout,
                                       resource={"type": "Ticket",
                                                 "id": f"T-{rnd.randrange(40)}"},
                                       context={"n": str(i)})
            except Exception as exc:  # noqa: BLE001 - a caller bug would show here
                answers.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            local = v.policy_version == "local"
            answers.got[v.request_id] = (v.decision, tuple(v.codes), local)
            i += 1
            code = v.codes[0] if v.codes else "?"
            if not (local and code == "UNAVAILABLE"):
                st.last_usable = now()
            if local:
                answers.local[code] += 1
                if code != "TIMEOUT":
                    message = v.reasons[0].message if v.reasons else ""
                    answers.local_messages[re.sub(r"\d+", "N", message)[:150]] += 1
                await asyncio.sleep(rnd.uniform(0.2, 0.5))     # no spinning on a dead gate
            else:
                await asyncio.sleep(rnd.uniform(0.05, 0.25))

    async def watchdog() -> None:
        while not stop.is_set():
            await asyncio.sleep(2.0)
            if st.broker_up and now() - st.broker_up_since > stuck_after and \
                    now() - st.last_usable > stuck_after:
                old = box[0]
                box[0] = await open_gate().start()
                st.last_usable = now()
                st.gates_replaced.append({"at_s": round(now() - t0, 1),
                                          "old_gate_stats": dict(old.stats)})
                print(f"  !! SDK gate answered only UNAVAILABLE for {stuck_after:.0f}s with the "
                      f"broker up; replaced it ({dict(old.stats)})", flush=True)
                stats.update(old.stats)
                asyncio.ensure_future(old.close())

    dog = asyncio.create_task(watchdog())
    try:
        await asyncio.gather(*(lane(a) for a in agents))
    finally:
        dog.cancel()
        stats.update(box[0].stats)
        await box[0].close()
    return dict(stats)


async def wait_ready(settings: Any, agent: str, answers: Answers, ctl: WorkerCtl,
                     timeout: float = 180.0) -> float:
    from holdgate.client import AsyncGate

    t = now()
    async with AsyncGate(bootstrap=settings.bootstrap, settings=settings) as gate:
        while now() - t < timeout:
            v = await gate.check(action="tickets.read", agent_id=agent, timeout=3.0,
                                 resource={"type": "Ticket", "id": "probe"})
            answers.got[v.request_id] = (v.decision, tuple(v.codes), v.policy_version == "local")
            if v.policy_version != "local":
                return now() - t
            if not ctl.alive():
                raise SystemExit(f"worker exited during start-up:\n{tail(ctl.log_path, 40)}")
            await asyncio.sleep(0.5)
    raise SystemExit(f"worker not ready after {timeout}s:\n{tail(ctl.log_path, 40)}")


# =============================================================================== read back
class Collector:
    """Reads actions, verdicts and dead letters (read_committed), incrementally."""

    def __init__(self, settings: Any, valid_ids: set[str]) -> None:
        self.s = settings
        self.valid_ids = valid_ids
        self.actions: dict[tuple[int, int], str | None] = {}     # (p, o) -> request_id
        self.first_po: dict[str, tuple[int, int]] = {}
        self.records_per_rid: Counter[str] = Counter()
        self.valid_records = 0
        self.verdicts: dict[str, list[tuple[str, tuple[str, ...], str, int | None]]] = \
            defaultdict(list)
        self.n_verdicts = 0
        self.lettered: set[tuple[int, int]] = set()
        self.letters_by_code: Counter[str] = Counter()
        self.letters_by_prefix: Counter[str] = Counter()
        self.letters_foreign = 0
        self.bytes = 0
        self.consumer: Any = None
        self.tps: list[Any] = []

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 2**20, fetch_max_bytes=64 * 2**20,
            request_timeout_ms=60_000)
        await self.consumer.start()
        self.tps = [TopicPartition(t, p) for t in (self.s.actions_topic, self.s.verdicts_topic)
                    for p in range(PARTITIONS)] + [TopicPartition(self.s.deadletter_topic, 0)]
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def catch_up(self) -> None:
        c = self.consumer
        ends = await c.end_offsets(self.tps)
        while True:
            behind = [tp for tp in self.tps if await c.position(tp) < ends[tp]]
            if not behind:
                return
            batch = await c.getmany(*behind, timeout_ms=1000, max_records=20_000)
            for tp, records in batch.items():
                for r in records:
                    self._take(tp.topic, tp.partition, r)

    def _take(self, topic: str, partition: int, r: Any) -> None:
        from holdgate.stream.edges import recover_identity

        s = self.s
        self.bytes += len(r.value or b"") + len(r.key or b"")
        if topic == s.actions_topic:
            rid = None
            if r.value is not None:
                try:
                    obj = orjson.loads(r.value)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("request_id"), str):
                    rid = obj["request_id"]
            self.actions[(partition, r.offset)] = rid
            ids = {rid} if rid is not None else set()
            recovered = recover_identity(r.value, r.key)
            if recovered is not None:
                ids.add(recovered[0])     # the id the worker answers a rejected record under
            for x in ids:
                self.records_per_rid[x] += 1
            if rid is not None:
                self.first_po.setdefault(rid, (partition, r.offset))
                if rid in self.valid_ids:
                    self.valid_records += 1
        elif topic == s.verdicts_topic:
            v = orjson.loads(r.value)
            codes = tuple(x["code"] for x in v["reasons"])
            rate = (v.get("signals") or {}).get("rate_1h")
            self.verdicts[v["request_id"]].append((v["decision"], codes, v["agent_id"], rate))
            self.n_verdicts += 1
        else:
            d = orjson.loads(r.value)
            error = d.get("error", "")
            code = error.split(":", 1)[0]
            self.letters_by_code[code] += 1
            self.letters_by_prefix[_prefix(error)] += 1
            if d.get("topic") == s.actions_topic and d.get("offset") is not None:
                self.lettered.add((d["partition"], d["offset"]))
            else:
                self.letters_foreign += 1

    def missing(self) -> list[tuple[int, int]]:
        return [po for po, rid in self.actions.items()
                if po not in self.lettered and (rid is None or rid not in self.verdicts)]


def _prefix(error: str) -> str:
    """A dead letter's error, generalised: code plus the first words, numbers elided."""
    text = re.sub(r"(?<=[\s(=,:])-?\d+(\.\d+)?", "N", error)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return text[:70]


# =============================================================================== orchestration
def group_lag(settings: Any) -> int:
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.app_id,
                          enable_auto_commit=False, request_timeout_ms=20_000)
    try:
        tps = [TopicPartition(settings.actions_topic, p) for p in range(PARTITIONS)]
        ends = probe.end_offsets(tps)
        return sum(ends[tp] - (probe.committed(tp) or 0) for tp in tps)
    finally:
        probe.close(autocommit=False)


def schedule(seconds: float, kills: int, rnd: random.Random,
             broker_restart: bool) -> list[tuple[float, str]]:
    """K kill moments, one per equal slot of the middle of the run, plus the broker restart."""
    events = []
    lo, hi = 0.08 * seconds, 0.92 * seconds
    slot = (hi - lo) / max(kills, 1)
    for k in range(kills):
        events.append((lo + slot * k + rnd.uniform(0.1, 0.9) * slot, "kill"))
    if broker_restart:
        events.append((seconds * 0.5 + rnd.uniform(-0.03, 0.03) * seconds, "broker"))
    return sorted(events)


async def chaos(events: list[tuple[float, str]], t_load: float, ctl: WorkerCtl, broker: Broker,
                log: list[dict[str, Any]], rnd: random.Random, st: LoadState) -> None:
    last_worker_start = now()
    for at, what in events:
        delay = t_load + at - now()
        if delay > 0:
            await asyncio.sleep(delay)
        if what == "kill":
            await asyncio.sleep(max(0.0, 5.0 - (now() - last_worker_start)))
            rc = await asyncio.to_thread(ctl.kill, signal.SIGKILL)
            pause = rnd.uniform(1.0, 3.0)
            entry = {"event": "sigkill", "at_s": round(now() - ctl.t0, 1), "rc": rc,
                     "restart_after_s": round(pause, 2)}
            await asyncio.sleep(pause)
            ctl.start()
            last_worker_start = now()
        else:
            # A worker restarted a moment ago is still starting (it checks the topics on
            # the broker first); give it 15 s so the broker restart hits a running worker.
            await asyncio.sleep(max(0.0, 15.0 - (now() - last_worker_start)))
            entry = {"event": "broker_restart", "at_s": round(now() - ctl.t0, 1)}
            st.broker_up = False
            try:
                entry.update(await asyncio.to_thread(broker.restart))
            finally:
                st.broker_up, st.broker_up_since = True, now()
        log.append(entry)
        print(f"  chaos: {entry}", flush=True)


async def monitor(ctl: WorkerCtl, stop: asyncio.Event, every: float) -> None:
    last_sample = 0.0
    while not stop.is_set():
        crash = ctl.poll_exit()
        if crash is not None:
            print(f"  !! worker exited on its own: rc={crash['returncode']} at "
                  f"{crash['at_s']}s; restarting", flush=True)
            await asyncio.sleep(1.0)
            ctl.start()
        if now() - last_sample >= every:
            ctl.sample()
            last_sample = now()
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from common import bench_settings, fleet_bundle, machine

    rnd = random.Random(args.seed)
    broker = Broker(args.bootstrap)
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        return await _run(args, rnd, broker, bootstrap, bench_settings, fleet_bundle, machine)
    finally:
        await asyncio.to_thread(broker.close)


async def _run(args: argparse.Namespace, rnd: random.Random, broker: Broker, bootstrap: str,
               bench_settings: Any, fleet_bundle: Any, machine: Any) -> dict[str, Any]:
    t0 = now()
    bundle, fleet = fleet_bundle(args.agents + args.fuzz_agents)
    sdk_agents, fuzz_agents = fleet[:args.agents], fleet[args.agents:]
    settings = bench_settings(bootstrap, "chaos", policy_dir=str(bundle), partitions=PARTITIONS,
                              max_clock_skew=30.0, session_timeout=args.session_timeout)
    workdir = Path(settings.datadir)
    ctl = WorkerCtl(settings, workdir / "worker.log", t0)
    ctl.start()
    answers = Answers()
    print(f"worker log: {ctl.log_path}", flush=True)
    ready_s = await wait_ready(settings, sdk_agents[0], answers, ctl)
    print(f"worker ready in {ready_s:.1f}s; load {args.seconds:.0f}s, {args.agents} agents, "
          f"{args.fuzz:,} fuzzed records, {args.kills} kills", flush=True)
    mon_stop = asyncio.Event()
    mon = asyncio.create_task(monitor(ctl, mon_stop, args.rss_every))

    # fuzz: a separate process with its own producer
    cfg_path, out_path = workdir / "fuzz.json", workdir / "fuzz-result.json"
    cfg_path.write_text(json.dumps({"bootstrap": bootstrap, "topic": settings.actions_topic,
                                    "n": args.fuzz, "seed": args.seed, "agents": fuzz_agents,
                                    "rate": args.fuzz_rate, "out": str(out_path)}))
    fuzz = start_fuzz_child(cfg_path, workdir)
    t_load = now()
    load_stop = asyncio.Event()
    load_state = LoadState()
    load = asyncio.create_task(valid_load(settings, sdk_agents, answers, load_stop,
                                          args.check_timeout, load_state, t0, args.gate_stuck))
    chaos_log: list[dict[str, Any]] = []
    events = schedule(args.seconds, args.kills, rnd, broker_restart=broker.kafka is not None)
    chaos_task = asyncio.create_task(chaos(events, t_load, ctl, broker, chaos_log, rnd,
                                           load_state))
    fuzz_done_at = None
    while True:
        await asyncio.sleep(5.0)
        el = now() - t_load
        if fuzz_done_at is None and fuzz.poll() is not None:
            fuzz_done_at = el
        print(f"  t={el:6.0f}s answers={len(answers.got):,} local={sum(answers.local.values()):,}"
              f" fuzz={'done' if fuzz_done_at else 'running'} rss="
              f"{ctl.samples[-1][2] // 1024 if ctl.samples else 0} MB", flush=True)
        if el >= args.seconds and fuzz_done_at is not None and chaos_task.done():
            break
    load_stop.set()
    gate_stats = await load
    load_s = now() - t_load
    await chaos_task
    fuzz_res: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else \
        {"error": f"fuzz child exited {fuzz.returncode}", "log": tail(workdir / "fuzz.log", 30)}
    print(f"load done after {load_s:.0f}s; draining ...", flush=True)

    # drain
    collector = Collector(settings, set(answers.got))
    await collector.start()
    t_drain = now()
    best_lag, progress_at, zero_since = None, now(), None
    missing: list[tuple[int, int]] = []
    while True:
        try:
            lag = await asyncio.to_thread(group_lag, settings)
        except Exception as exc:  # noqa: BLE001 - keep draining
            print(f"  lag probe failed: {exc!r}", flush=True)
            lag = best_lag if best_lag is not None else 1
        if best_lag is None or lag < best_lag:
            best_lag, progress_at = lag, now()
        t_read = now()
        await collector.catch_up()
        progress_at += now() - t_read           # reading back is not the worker stalling
        missing = collector.missing()
        if lag == 0:
            zero_since = zero_since or now()
            if not missing or now() - zero_since > args.zero_grace:
                break
        else:
            zero_since = None
        stalled = now() - progress_at
        print(f"  drain {now() - t_drain:5.0f}s: lag={lag:,} read={len(collector.actions):,} "
              f"undecided={len(missing):,} stalled={stalled:.0f}s rss="
              f"{ctl.samples[-1][2] // 1024 if ctl.samples else 0} MB", flush=True)
        if stalled > args.drain_stall or now() - t_drain > args.drain_timeout:
            print("  drain gave up", flush=True)
            break
        await asyncio.sleep(3.0)
    drain_s = now() - t_drain
    await asyncio.sleep(min(10.0, args.rss_every * 3))        # an idle RSS sample or three
    ctl.sample()
    await collector.catch_up()
    missing = collector.missing()
    await collector.stop()
    mon_stop.set()
    await mon
    crash = ctl.poll_exit()
    if crash is not None:
        print(f"  !! worker exited on its own: rc={crash['returncode']}", flush=True)
    term_rc = await asyncio.to_thread(ctl.kill, signal.SIGTERM, 30.0)

    res = measure(collector, answers, missing, sdk_agents)
    res.update({
        "config": {k: v for k, v in vars(args).items() if k != "fuzz_child"},
        "machine": machine(),
        "durations_s": {"ready": round(ready_s, 1), "load": round(load_s, 1),
                        "fuzz_publish": round(fuzz_res.get("seconds", float("nan")), 1),
                        "drain": round(drain_s, 1), "total": round(now() - t0, 1)},
        "fuzz": fuzz_res, "chaos": chaos_log, "gate_stats": gate_stats,
        "sdk_local_answers": dict(answers.local), "sdk_errors": dict(answers.errors),
        "sdk_local_messages": dict(answers.local_messages.most_common(10)),
        "sdk_gates_replaced": load_state.gates_replaced,
        "worker": worker_report(ctl, term_rc),
        "dead_letters_not_naming_an_action": collector.letters_foreign,
        "bytes_read_back": collector.bytes,
    })
    res["worker_crashes_not_ours"] = len(ctl.crashes)
    res["must_be_zero"] = {k: res[k] for k in MUST_BE_ZERO}
    res["ok"] = not any(res["must_be_zero"].values())
    return res


def measure(col: Collector, answers: Answers, missing: list[tuple[int, int]],
            sdk_agents: list[str]) -> dict[str, Any]:
    valid_ids = set(answers.got)
    by_rid = col.verdicts
    twice = {rid: vs for rid, vs in by_rid.items() if len(vs) > 1}
    # A fuzzed record may carry a request_id other records carry too (" ", "\u0000"): each
    # such record is answered under it.  Only an id on ONE record names one action.
    shared = {rid for rid, n in col.records_per_rid.items() if n > 1}
    over = {rid: vs for rid, vs in twice.items() if len(vs) > col.records_per_rid.get(rid, 0)}
    single = {rid: vs for rid, vs in twice.items() if rid not in shared}
    distinct = {rid for rid, vs in single.items() if len({v[0] for v in vs}) > 1}
    distinct_codes = {rid for rid, vs in single.items() if len({v[:2] for v in vs}) > 1}
    # valid actions (published by the SDK, on the topic) without a verdict
    published_valid = {rid for rid in col.first_po if rid in valid_ids}
    never = [rid for rid in published_valid if rid not in by_rid]
    # SDK answers against the log
    differ: list[dict[str, Any]] = []
    for rid, (decision, codes, local) in answers.got.items():
        if local:
            if codes[:1] in (("TIMEOUT",), ("UNAVAILABLE",)):
                continue
            differ.append({"request_id": rid, "told": [decision, codes], "recorded": "local "
                           "answer other than TIMEOUT/UNAVAILABLE"})
            continue
        recorded = by_rid.get(rid, [])
        if not recorded or (decision, codes) not in {v[:2] for v in recorded}:
            differ.append({"request_id": rid, "told": [decision, list(codes)],
                           "recorded": [[v[0], list(v[1])] for v in recorded]})
    # counters: every action of an agent counted exactly once, in offset order
    per_agent: dict[str, list[tuple[tuple[int, int], int, str, tuple[str, ...]]]] = \
        defaultdict(list)
    orphan = 0
    for rid, vs in by_rid.items():
        decision, codes, agent, rate = vs[0]
        if not rate:
            continue                          # no signals: rejected before any state
        po = col.first_po.get(rid)
        if po is None:
            orphan += 1
            continue
        per_agent[agent].append((po, rate, decision, codes))
    counters = check_counters(per_agent)
    codes_all: Counter[str] = Counter()
    codes_valid: Counter[str] = Counter()
    for rid, vs in by_rid.items():
        code = vs[0][1][0] if vs[0][1] else "?"
        codes_all[code] += 1
        if rid in valid_ids:
            codes_valid[code] += 1
    n_actions = len(col.actions)
    return {
        "actions_published": {"total": n_actions, "valid": col.valid_records,
                              "fuzzed": n_actions - col.valid_records},
        "sdk_checks_answered": len(answers.got),
        "verdicts": col.n_verdicts, "verdict_request_ids": len(by_rid),
        "dead_letters": sum(col.letters_by_code.values()),
        "requests_with_more_than_one_verdict": len(twice),
        "request_ids_carried_by_several_records": len(shared),
        "requests_with_more_verdicts_than_records": len(over),
        "requests_with_distinct_decisions": len(distinct),
        "requests_with_distinct_decision_or_codes": len(distinct_codes),
        "valid_actions_never_decided": len(never),
        "records_with_neither_verdict_nor_deadletter": len(missing),
        "sdk_answers_differing": len(differ),
        "counter_violations": counters["violations"], "counter_rule": counters["rule"],
        "counter_violations_by_rule": counters["by_rule"],
        "counter_agents_checked": len(per_agent),
        "counter_agents_violating": len(counters["bad"]), "verdicts_without_action": orphan,
        "verdict_codes": dict(codes_all.most_common()),
        "verdict_codes_valid": dict(codes_valid.most_common()),
        "dead_letters_by_code": dict(col.letters_by_code.most_common()),
        "dead_letters_by_prefix": dict(col.letters_by_prefix.most_common(40)),
        "examples": {
            "more_than_one_verdict": [[rid, vs] for rid, vs in list(twice.items())[:5]],
            "more_verdicts_than_records": [[rid, col.records_per_rid.get(rid, 0), vs]
                                           for rid, vs in list(over.items())[:5]],
            "never_decided": never[:10],
            "undecided_records": [list(po) for po in missing[:10]],
            "sdk_differing": differ[:10], "counter_agents": counters["bad"][:5]},
    }


def check_counters(per_agent: dict[str, list[tuple[tuple[int, int], int, str,
                                                    tuple[str, ...]]]]) -> dict[str, Any]:
    """rate_1h along each agent's actions in offset order, under both counting rules.

    every:   each observed action counts in the 1 h window: the k-th has rate_1h == k
             (the rule of tests/e2e/test_exactly_once).
    allowed: the 1 h window counts allowed actions only (models.signals since the fitted
             baselines): rate_1h == 1 + allowed earlier ones, so it steps by 1 after an
             allow and by 0 after a deny; after EXPIRED (Cedar's outcome is not in the
             verdict) by 0 or 1.
    An action counted twice or lost breaks the rule in force.  The rule that fits the
    run is reported with its violations; the other's count shows how far apart they are.
    """
    by_rule: dict[str, int] = {"every": 0, "allowed": 0}
    bad: dict[str, list[dict[str, Any]]] = {"every": [], "allowed": []}
    for agent, seq in per_agent.items():
        seq.sort()
        rates = [r for _, r, _, _ in seq]
        every = sum(1 for k, n in enumerate(rates, 1) if n != k)
        allowed = int(rates[0] != 1)
        for (_, prev, decision, codes), (_, cur, _, _) in pairwise(seq):
            step = cur - prev
            if decision == "allow":
                allowed += step != 1
            elif codes[:1] == ("EXPIRED",):
                allowed += step not in (0, 1)
            else:
                allowed += step != 0
        for rule, wrong in (("every", every), ("allowed", allowed)):
            if wrong:
                by_rule[rule] += wrong
                bad[rule].append({"agent": agent, "wrong": wrong, "first": [
                    [r, d[0], c[:1]] for _, r, d, c in seq[:20]]})
    rule = min(by_rule, key=lambda r: by_rule[r])
    return {"rule": rule, "violations": by_rule[rule], "by_rule": by_rule, "bad": bad[rule]}


def worker_report(ctl: WorkerCtl, term_rc: int | None) -> dict[str, Any]:
    samples = [kb for _, _, kb in ctl.samples]
    log = ""
    try:
        log = ctl.log_path.read_text(errors="replace")
    except OSError:
        pass
    lines = log.splitlines()
    errors = Counter(re.sub(r"^\S+ \S+ ", "", ln)[:140] for ln in lines
                     if " ERROR " in ln or " CRITICAL " in ln)
    warnings = Counter(re.sub(r"\d+", "N", re.sub(r"^\S+ \S+ ", "", ln))[:120] for ln in lines
                       if " WARNING " in ln)
    return {
        "rss_mb": {"start": round(samples[0] / 1024, 1) if samples else None,
                   "max": round(max(samples) / 1024, 1) if samples else None,
                   "end": round(samples[-1] / 1024, 1) if samples else None,
                   "samples": len(samples)},
        "lives": [{"pid": lf.pid, "started_s": round(lf.started, 1),
                   "ended_s": None if lf.ended is None else round(lf.ended, 1),
                   "returncode": lf.returncode, "killed_by_us": lf.killed_by_us,
                   "rss_mb_start_max_end": [round(x / 1024, 1) for x in (
                       lf.rss_kb[0], max(lf.rss_kb), lf.rss_kb[-1])] if lf.rss_kb else None,
                   # after warm-up (the first quarter of its samples) to its end: a leak
                   # shows as growth here in a long life
                   "rss_mb_growth_after_warmup": round(
                       (lf.rss_kb[-1] - lf.rss_kb[len(lf.rss_kb) // 4]) / 1024, 1)
                   if len(lf.rss_kb) >= 8 else None, "samples": len(lf.rss_kb)}
                  for lf in ctl.lives],
        "rss_series": ctl.samples[:: max(1, len(ctl.samples) // 200)],
        "sigkills": sum(1 for lf in ctl.lives if lf.killed_by_us and lf.returncode == -9),
        "final_sigterm_returncode": term_rc,
        "crashes": ctl.crashes,
        "log": {"path": str(ctl.log_path), "tracebacks": log.count("Traceback"),
                "errors": dict(errors.most_common(10)),
                "warnings": dict(warnings.most_common(12))},
    }


def report(res: dict[str, Any]) -> str:
    w = res["worker"]
    rss = w["rss_mb"]
    a = res["actions_published"]
    life = max(w["lives"], key=lambda lf: lf["samples"])
    longest = (f"{life['samples']} samples, MB start/max/end {life['rss_mb_start_max_end']}, "
               f"growth after warm-up {life['rss_mb_growth_after_warmup']} MB")
    mz = res["must_be_zero"]
    lines = [f"chaos: {res['durations_s']}"]
    add = lines.append
    add(f"actions published {a['total']:,} (valid {a['valid']:,}, fuzzed {a['fuzzed']:,}); "
        f"SDK checks answered {res['sdk_checks_answered']:,} (local {res['sdk_local_answers']})")
    add(f"SDK gates replaced after answering only UNAVAILABLE with the broker up: "
        f"{len(res['sdk_gates_replaced'])}; local deny messages {res['sdk_local_messages']}")
    add(f"verdicts {res['verdicts']:,}; dead letters {res['dead_letters']:,}")
    add(f"request_ids with >1 verdict           {res['requests_with_more_than_one_verdict']} "
        f"(carried by several fuzzed records: {res['request_ids_carried_by_several_records']})")
    add(f"  more verdicts than records          {mz['requests_with_more_verdicts_than_records']}"
        "   (must be 0)")
    add(f"request_ids with >1 distinct decision {mz['requests_with_distinct_decisions']}"
        "   (must be 0)")
    add(f"valid actions never decided           {mz['valid_actions_never_decided']}"
        "   (must be 0)")
    add(f"records without verdict/dead letter   "
        f"{mz['records_with_neither_verdict_nor_deadletter']}   (must be 0)")
    add(f"SDK answers differing from the log    {mz['sdk_answers_differing']}   (must be 0)")
    add(f"counter violations                    {mz['counter_violations']} over "
        f"{res['counter_agents_checked']} agents, rule '{res['counter_rule']}' "
        f"{res['counter_violations_by_rule']}   (must be 0)")
    add(f"worker crashes not ours               {mz['worker_crashes_not_ours']}   (must be 0); "
        f"SIGKILLs {w['sigkills']}; final SIGTERM exit {w['final_sigterm_returncode']}")
    add(f"worker RSS MB start {rss['start']} max {rss['max']} end {rss['end']} "
        f"({rss['samples']} samples); longest life: {longest}")
    add(f"verdict codes: {res['verdict_codes']}")
    add("dead letters by error prefix:")
    lines += [f"  {n:>9,}  {p}" for p, n in res["dead_letters_by_prefix"].items()]
    fz = res["fuzz"]
    add(f"fuzz: sent {sum(fz.get('sent', {}).values()):,} failed "
        f"{sum(fz.get('failed', {}).values()):,} {fz.get('errors')}")
    add(f"chaos events: {res['chaos']}")
    add("OK" if res["ok"] else f"PROMISE BROKEN: {mz}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=1_000_000, help="fuzzed records in total")
    ap.add_argument("--kills", type=int, default=10, help="worker SIGKILLs under load")
    ap.add_argument("--seconds", type=float, default=600.0,
                    help="valid load duration (extended until every fuzzed record is out)")
    ap.add_argument("--bootstrap", help="use this broker (no broker restart then)")
    ap.add_argument("--agents", type=int, default=100, help="SDK agents, one closed loop each")
    ap.add_argument("--fuzz-agents", type=int, default=50,
                    help="known agents the fuzzer impersonates")
    ap.add_argument("--fuzz-rate", type=float, default=0.0,
                    help="cap fuzzed records/s (0: as fast as the broker takes them)")
    ap.add_argument("--check-timeout", type=float, default=5.0, help="SDK check timeout (s)")
    ap.add_argument("--gate-stuck", type=float, default=30.0,
                    help="replace an SDK gate answering only UNAVAILABLE this long (s)")
    ap.add_argument("--session-timeout", type=float, default=10.0)
    ap.add_argument("--rss-every", type=float, default=3.0, help="RSS sample period (s)")
    ap.add_argument("--drain-stall", type=float, default=300.0,
                    help="give up draining after this long without progress (s)")
    ap.add_argument("--drain-timeout", type=float, default=7200.0)
    ap.add_argument("--zero-grace", type=float, default=20.0,
                    help="wait this long for verdicts once the group has no lag (s)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--out", default="chaos", help="bench/results/<name>.json")
    ap.add_argument("--fuzz-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fuzz_child:
        fuzz_child_main(args.fuzz_child)
        return
    quiet()
    res = asyncio.run(run(args))
    print(report(res), flush=True)
    from common import save

    print(f"saved {save(args.out, res)}")
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
