"""Replay: history through the same runner as the live worker, no Kafka hop per action.

Signals are rebuilt in order from an empty state, so a replay of the whole
topic reproduces every recorded verdict.  Against the verdicts recorded on the
topic it classifies each action:

* **same**: the replayed decision and reason codes equal the recorded ones;
* **warm-up**: they differ, but so do the signals or the versions, because the
  replay started mid-topic (counters begin at zero) or ran another bundle or
  model: expected, reported as a count;
* **mismatch**: same versions, same signals, different decision or codes.  The
  decision is a function of exactly those inputs, so this is a determinism bug:
  `ReplayReport.ok` is False and the CLI exits non-zero.

Recorded ``STATE_RECOVERING`` denies (state was lost at the time) count as
warm-up: a replay from an empty state has nothing to hold.

Speed without another decision: the worker decodes each touched agent's state
blob at the start of a batch and encodes it at the end, because its store must
be durable bytes.  A replay's store is memory, so it keeps the
decoded states between batches (`LiveStates`) and encodes only when it evicts
one or finishes; records are run in batches of up to ``RUN_MAX`` (the chunks of
``chunk_size`` that share one decision clock), and no verdict bytes are sealed.
Each of these is a thing the core already promises not to depend on: batch
boundaries (waves), and how a state is held in memory (`AgentState.__eq__`).
`replay_sharded` runs the agents of a history in worker processes, one runner
each (per-agent state and per-partition marks never cross agents), and merges
their decisions back in record order.
"""
from __future__ import annotations

import gc
import heapq
import os
import queue
import time
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping

import orjson

from holdgate import reasons as rc
from holdgate.errors import ModelError
from holdgate.models import AgentState
from holdgate.routing import partition_for
from holdgate.stream.core import Decision
from holdgate.stream.edges import RawRecord
from holdgate.stream.heap import settle
from holdgate.stream.runner import Runner
from holdgate.stream.state import StateStore, Writes

__all__ = ["ReplayReport", "Mismatch", "replay", "replay_sharded", "runner_for",
           "replaying", "decision_line", "LiveStates"]

#: Records per decision clock: a chunk is decided at its latest broker time (see
#: `_event_clock`), so this is part of what a topic replay reproduces.
CHUNK = 512
#: Consecutive chunks with the same clock (a whole file history: no broker times) run
#: as one batch of up to this many records: fewer, larger waves and Cedar batches.
RUN_MAX = 4096
#: Decoded agent states a replay keeps; beyond, the least recently written are encoded.
LIVE_MAX = 100_000
#: Allocations between two young-generation collections while a replay runs (Python's
#: default is 700): a batch allocates some 25 container objects per action, most of them
#: alive until the batch ends, so the default collects young objects that survive anyway
#: hundreds of times a batch (22 µs of 130 per action measured), and 20,000 still some 5
#: µs; at about one batch of allocations (4,096 x 25), 1 µs.  Cycles are still collected.
GC_YOUNG = 100_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for a replay; put it back afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_YOUNG), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class LiveStates(MutableMapping[str, AgentState]):
    """Agent states kept decoded between batches: a replay's `Runner.state_view`.

    The same mapping the core gets from `BatchStates`, minus the codec round trip
    per batch: an agent is decoded from the store at most once (when it was there
    before the replay, or was evicted), its state object then stays live, and it is
    encoded when more than `limit` agents are live (least recently written first)
    or at `flush`.  The signals are the same either way: the worker holds a state
    object over many waves of one batch too, and `AgentState` promises the same
    signals however a state is held (decoded or not, see its ``__eq__``).

    Exact because the core assigns back every state it changes (`BatchStates`
    persists only assignments): a change made in place and never assigned would be
    lost by `BatchStates` at the end of the batch but kept here.
    """

    def __init__(self, store: StateStore, partition_of: Callable[[str], int], *,
                 limit: int = LIVE_MAX) -> None:
        self._store = store
        self._partition_of = partition_of
        self.limit = max(1, limit)
        self.live: dict[str, AgentState] = {}
        self.corrupt: set[str] = set()

    def __call__(self, store: StateStore, partition_of: Callable[[str], int]) -> LiveStates:
        """The runner's per-batch view: this object (`corrupt` is per batch)."""
        if store is not self._store:
            raise ValueError("LiveStates belongs to another store")
        self._partition_of = partition_of
        self.corrupt = set()
        return self

    def __getitem__(self, key: str) -> AgentState:
        state = self.live.get(key)
        if state is not None:
            return state
        blob = self._store.get(self._partition_of(key), key)
        if blob is None:
            raise KeyError(key)
        try:
            state = AgentState.from_bytes(blob)
        except ModelError:
            self.corrupt.add(key)           # as BatchStates: reads as absent, holds
            raise KeyError(key) from None
        self.live[key] = state
        return state

    def get(self, key: str, default: Any = None) -> Any:
        state = self.live.get(key)
        if state is not None:
            return state
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: AgentState) -> None:
        live = self.live
        live.pop(key, None)                 # most recently written last
        live[key] = value

    def __delitem__(self, key: str) -> None:
        self.live.pop(key, None)
        self._store.apply(self._partition_of(key), {key: None})

    def __iter__(self) -> Iterator[str]:
        return iter(self.live)

    def __len__(self) -> int:
        return len(self.live)

    def writes(self) -> Writes:
        """What the batch must write to the store: only states evicted past `limit`."""
        excess = len(self.live) - self.limit
        if excess <= 0:
            return {}
        out: Writes = {}
        live = self.live
        for key in list(live)[:excess + self.limit // 10]:    # a tenth more: evict rarely
            out.setdefault(self._partition_of(key), {})[key] = live.pop(key).to_bytes()
        return out

    def flush(self) -> None:
        """Encode every live state into the store (the store then holds the end state)."""
        for key, state in self.live.items():
            self._store.apply(self._partition_of(key), {key: state.to_bytes()})
        self.live.clear()


@dataclass(frozen=True, slots=True)
class Mismatch:
    request_id: str
    agent_id: str
    recorded: tuple[str, tuple[str, ...]]
    replayed: tuple[str, tuple[str, ...]]
    signals: Mapping[str, int]


@dataclass
class ReplayReport:
    records: int = 0
    decisions: int = 0
    allowed: int = 0
    denied: int = 0
    deadletters: int = 0
    compared: int = 0
    same: int = 0
    warmup: int = 0
    unrecorded: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def decision_line(d: Decision) -> dict[str, Any]:
    """One replayed verdict as a JSON Lines object (the `--output` format)."""
    return {"request_id": d.request_id, "agent_id": d.agent_id, "decision": d.decision,
            "codes": [r.code for r in d.reasons], "signals": dict(d.signals),
            "policy_version": d.policy_version, "model_version": d.model_version}


def _chunks(records: Iterable[RawRecord], size: int) -> Iterable[list[RawRecord]]:
    chunk: list[RawRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def replay(records: Iterable[RawRecord], runner: Runner, *,
           recorded: Mapping[str, Mapping[str, Any]] | None = None,
           on_decision: Callable[[Decision], None] | None = None,
           on_progress: Callable[[int], None] | None = None,
           decided_at: float | None = None, chunk_size: int = CHUNK,
           batch_max: int = RUN_MAX, live: bool = True,
           live_max: int = LIVE_MAX) -> ReplayReport:
    """Run `records` in order through `runner` (state in its store) and compare.

    `chunk_size` records share a decision clock; consecutive chunks with the same
    clock run as one batch of up to `batch_max` records and `live` keeps agent
    states decoded between batches (see `LiveStates`).  The store holds the end
    states either way.  No verdicts are sealed (the runner's `sealing` is restored).
    """
    report = ReplayReport()
    t0 = time.perf_counter()
    recorded = recorded or {}
    with replaying(runner, live=live, live_max=live_max):
        for batch, at in _batches(records, recorded, decided_at, chunk_size, batch_max):
            out = runner.run(batch, decided_at=at)
            runner.apply(out.writes)
            report.records += len(batch)
            report.deadletters += len(out.deadletters)
            for d in out.decisions:
                report.decisions += 1
                if d.allowed:
                    report.allowed += 1
                else:
                    report.denied += 1
                if on_decision is not None:
                    on_decision(d)
                if recorded:
                    _compare(d, recorded.get(d.request_id), report)
            if on_progress is not None:
                on_progress(len(batch))
    report.seconds = time.perf_counter() - t0
    return report


@contextmanager
def replaying(runner: Runner, *, live: bool = True, live_max: int = LIVE_MAX
              ) -> Iterator[None]:
    """`runner` as a replay runs it, put back afterwards.

    No verdicts are sealed, young objects are collected less often and, with
    `live`, agent states stay decoded between batches (`LiveStates`; flushed to
    the store at the end).
    """
    view = None
    if live and runner.state_view is None:
        view = runner.state_view = LiveStates(runner.store, runner.partition_of,
                                              limit=live_max)
    sealing, runner.sealing = runner.sealing, False
    try:
        with _fewer_collections():
            yield
    finally:
        runner.sealing = sealing
        if view is not None:
            runner.state_view = None
            view.flush()


def _batches(records: Iterable[RawRecord], recorded: Mapping[str, Mapping[str, Any]],
             decided_at: float | None, chunk_size: int, batch_max: int
             ) -> Iterator[tuple[list[RawRecord], float]]:
    """(records, decision clock): chunks of `chunk_size`, merged while their clocks agree."""
    batch: list[RawRecord] = []
    batch_at = 0.0
    for chunk in _chunks(records, chunk_size):
        if recorded:
            chunk = [_with_recorded_time(r, recorded) for r in chunk]
        at = decided_at if decided_at is not None else _event_clock(chunk)
        if batch and (at != batch_at or len(batch) + len(chunk) > batch_max):
            yield batch, batch_at
            batch = []
        batch += chunk
        batch_at = at
    if batch:
        yield batch, batch_at


def _event_clock(chunk: list[RawRecord]) -> float:
    """A file history has no decision times: decide each chunk at its latest broker time.

    Per-record recorded times (topic replays) take precedence in the runner.
    """
    times = [r.timestamp for r in chunk if r.timestamp is not None]
    return max(times) if times else 0.0


def _with_recorded_time(record: RawRecord, recorded: Mapping[str, Mapping[str, Any]]
                        ) -> RawRecord:
    """Decide at the recorded time, so deadline checks (EXPIRED) come out the same."""
    try:
        request_id = orjson.loads(record.value or b"").get("request_id")
    except (orjson.JSONDecodeError, AttributeError):
        return record
    verdict = recorded.get(request_id) if isinstance(request_id, str) else None
    at = verdict.get("decided_at") if verdict is not None else None
    return replace(record, decided_at=float(at)) if isinstance(at, (int, float)) else record


def _compare(d: Decision, verdict: Mapping[str, Any] | None, report: ReplayReport) -> None:
    if verdict is None:
        report.unrecorded += 1
        return
    _compare_to(verdict, report, d.request_id, d.agent_id, d.decision,
                tuple(r.code for r in d.reasons), d.signals, d.policy_version, d.model_version)


def _compare_to(verdict: Mapping[str, Any], report: ReplayReport, request_id: str,
                agent_id: str, decision: str, codes: tuple[str, ...],
                signals: Mapping[str, int], policy_version: str,
                model_version: str | None) -> None:
    report.compared += 1
    rec_codes = tuple(r.get("code", "") for r in verdict.get("reasons") or ())
    if verdict.get("decision") == decision and rec_codes == codes:
        report.same += 1
        return
    same_inputs = (verdict.get("policy_version") == policy_version
                   and verdict.get("model_version") == model_version
                   and (verdict.get("signals") or {}) == dict(signals)
                   and rc.STATE_RECOVERING not in rec_codes)
    if not same_inputs:
        report.warmup += 1
        return
    report.mismatches.append(Mismatch(request_id, agent_id, (str(verdict.get("decision")),
                                                             rec_codes),
                                      (decision, codes), dict(signals)))


# -- sharded: agents over worker processes ---------------------------------------------------

#: Batches a shard may be behind the reader before the reader waits for it.
_AHEAD = 3


def replay_sharded(records: Iterable[RawRecord], make_runner: Callable[[], Runner], *,
                   partitions: int, workers: int | None = None,
                   recorded: Mapping[str, Mapping[str, Any]] | None = None,
                   on_line: Callable[[bytes], None] | None = None,
                   on_decision: Callable[[Decision], None] | None = None,
                   on_progress: Callable[[int], None] | None = None,
                   decided_at: float | None = None, chunk_size: int = CHUNK,
                   batch_max: int = RUN_MAX, live_max: int = LIVE_MAX) -> ReplayReport:
    """`replay` over `workers` processes (default: one per CPU), the same decisions in order.

    An agent's decisions depend only on its own state and its partition's mark, so
    each worker process runs its own runner (``make_runner()``, which must pickle:
    a module-level function or a `functools.partial` of one) over the records of its
    agents in their original order: a record from Kafka goes by its partition (the
    routing contract puts its agent there, and the decoding edge refuses it
    otherwise), a file record by its agent's partition (``partitions``: the
    runner's), a record that names no agent to the first (it touches no state).  Batches
    are cut and clocked as `replay` cuts them, each shard decides its part of every
    batch at the batch's clock, and the decisions are merged back in record order.

    `on_line` gets each decision as its ``--output`` JSON line (`decision_line`),
    cheap to hand between processes; `on_decision` gets the `Decision` itself (it
    costs a pickle each way).
    """
    import multiprocessing

    workers = max(1, workers or os.cpu_count() or 1)
    report = ReplayReport()
    t0 = time.perf_counter()
    recorded = recorded or {}
    mode = "decisions" if on_decision is not None else \
        "lines" if on_line is not None or recorded else "counts"
    ctx = multiprocessing.get_context("spawn")
    inboxes = [ctx.Queue() for _ in range(workers)]
    outboxes = [ctx.Queue() for _ in range(workers)]
    procs = [ctx.Process(target=_shard_main, name=f"holdgate-replay-{i}", daemon=True,
                         args=(make_runner, mode, live_max, inboxes[i], outboxes[i]))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    sizes: deque[int] = deque()
    try:
        for i in range(workers):                # each built its runner, or says why not
            _receive(procs, outboxes, i)
        base = 0
        for batch, at in _batches(records, recorded, decided_at, chunk_size, batch_max):
            parts: list[list[tuple[Any, ...]]] = [[] for _ in range(workers)]
            for n, r in enumerate(batch, base):
                parts[_shard_of(r, partitions, workers)].append(
                    (n, r.key, r.value, r.partition, r.offset, r.topic, r.timestamp,
                     r.decided_at, r.headers))
            for inbox, part in zip(inboxes, parts):
                inbox.put((at, part))
            base += len(batch)
            sizes.append(len(batch))
            if len(sizes) > _AHEAD:
                _merge(procs, outboxes, sizes.popleft(), report, recorded, mode, on_line,
                       on_decision, on_progress)
        while sizes:
            _merge(procs, outboxes, sizes.popleft(), report, recorded, mode, on_line,
                   on_decision, on_progress)
        for inbox in inboxes:
            inbox.put(None)
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for q in (*inboxes, *outboxes):
            q.close()
            q.cancel_join_thread()
    report.seconds = time.perf_counter() - t0
    return report


def runner_for(settings: Any, worker_id: str = "replay") -> Runner:
    """A fresh replay runner for `settings` over memory (``functools.partial(runner_for,
    settings)`` is a `make_runner` for `replay_sharded`)."""
    from holdgate.stream.state import MemoryStore
    from holdgate.stream.worker import build_runner

    runner = build_runner(settings, MemoryStore(), worker_id=worker_id)
    runner.sealing = False
    return runner


def _shard_of(record: RawRecord, partitions: int, workers: int) -> int:
    if record.offset is not None:
        return record.partition % workers
    try:
        agent = orjson.loads(record.value or b"").get("agent_id")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return partition_for(agent, partitions) % workers if isinstance(agent, str) else 0


def _receive(procs: list[Any], outboxes: list[Any], i: int) -> Any:
    """The next message of worker `i`; raises if it failed or died."""
    while True:
        try:
            kind, body = outboxes[i].get(timeout=1.0)
        except queue.Empty:
            if not procs[i].is_alive():
                raise RuntimeError(f"replay worker {i} died (exit code "
                                   f"{procs[i].exitcode})") from None
            continue
        if kind == "error":
            raise RuntimeError(f"replay worker {i} failed:\n{body}")
        return body


def _merge(procs: list[Any], outboxes: list[Any], size: int, report: ReplayReport,
           recorded: Mapping[str, Mapping[str, Any]], mode: str,
           on_line: Callable[[bytes], None] | None,
           on_decision: Callable[[Decision], None] | None,
           on_progress: Callable[[int], None] | None) -> None:
    """Fold one batch's results from every worker into `report`, in record order."""
    results = [_receive(procs, outboxes, i) for i in range(len(procs))]
    report.records += size
    for decisions, allowed, deadletters, _ in results:
        report.decisions += decisions
        report.allowed += allowed
        report.denied += decisions - allowed
        report.deadletters += deadletters
    if mode != "counts":
        for _, item in heapq.merge(*(r[3] for r in results), key=lambda x: x[0]):
            if mode == "decisions":
                if on_decision is not None:
                    on_decision(item)
                if recorded:
                    _compare(item, recorded.get(item.request_id), report)
                continue
            if on_line is not None:
                on_line(item)
            if recorded:
                line = orjson.loads(item)
                verdict = recorded.get(line["request_id"])
                if verdict is None:
                    report.unrecorded += 1
                else:
                    _compare_to(verdict, report, line["request_id"], line["agent_id"],
                                line["decision"], tuple(line["codes"]), line["signals"],
                                line["policy_version"], line["model_version"])
    if on_progress is not None:
        on_progress(size)


def _shard_main(make_runner: Callable[[], Runner], mode: str, live_max: int,
                inbox: Any, outbox: Any) -> None:
    """A worker process: decide its share of every batch, hand back counts and decisions."""
    try:
        runner = make_runner()
        runner.sealing = False
        runner.track_sources = True
        # as `replay` does (see LiveStates), without its final flush: a worker's store
        # is thrown away with it
        runner.state_view = LiveStates(runner.store, runner.partition_of, limit=live_max)
        settle()                                # a process of its own: as the worker does
        t0, t1, t2 = gc.get_threshold()         # and as `replay` does
        gc.set_threshold(max(t0, GC_YOUNG), t1, t2)
        outbox.put(("ready", None))
        while True:
            message = inbox.get()
            if message is None:
                break
            at, rows = message
            if not rows:
                outbox.put(("ok", (0, 0, 0, [])))
                continue
            batch = [RawRecord(key=k, value=v, partition=p, offset=o, topic=t, timestamp=ts,
                               decided_at=d, headers=h) for _, k, v, p, o, t, ts, d, h in rows]
            index = {id(r): row[0] for r, row in zip(batch, rows)}
            out = runner.run(batch, decided_at=at)
            runner.apply(out.writes)
            allowed = sum(1 for d in out.decisions if d.allowed)
            items: list[tuple[int, Any]] = []
            if mode == "lines":
                items = [(index[id(r)], orjson.dumps(decision_line(d)))
                         for d, r in zip(out.decisions, out.sources, strict=True)]
            elif mode == "decisions":
                items = [(index[id(r)], d) for d, r in zip(out.decisions, out.sources,
                                                            strict=True)]
            outbox.put(("ok", (len(out.decisions), allowed, len(out.deadletters), items)))
    except BaseException:  # noqa: BLE001 - the reader must learn why, not wait forever
        outbox.put(("error", traceback.format_exc()))
