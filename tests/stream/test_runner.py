"""The runner without Kafka: the same per-batch sequence the worker drives, over a MemoryStore."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import orjson
import pytest

from holdgate.events import ActionRequest, encode
from holdgate.keys import Signer
from holdgate.models import SignalComputer, SignalConfig
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.routing import partition_for
from holdgate.stream import BatchOutput, MemoryStore, RawRecord, Runner, Snapshot
from holdgate.stream.marks import MARK_KEY, PartitionMark

PARTS = 4
SIGNER = Signer.generate()
T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(PolicyBundle.load(default_bundle_path()))


class Pipeline:
    """A runner plus its state, fed like the Kafka driver feeds it (offsets per partition)."""

    def __init__(self, engine: PolicyEngine, hold: float = 60.0) -> None:
        self.store = MemoryStore()
        self.offsets = [0] * PARTS
        snapshot = Snapshot(engine=engine, policy_version="v", signals=SignalComputer(),
                            recovery_hold=hold, partitions=PARTS)
        self.runner = Runner(snapshot=snapshot, store=self.store, partitions=PARTS,
                             signer=SIGNER)
        self.now = T0

    def agent_state(self, agent: str) -> bytes | None:
        return self.store.get(partition_for(agent, PARTS), agent)

    def record(self, req: ActionRequest, *, broker_time: float | None = None) -> RawRecord:
        p = partition_for(req.agent_id, PARTS)
        off = self.offsets[p]
        self.offsets[p] += 1
        return RawRecord(key=req.agent_id.encode(), value=encode(req), partition=p, offset=off,
                         timestamp=req.occurred_at if broker_time is None else broker_time)

    def run(self, records: list[RawRecord]) -> BatchOutput:
        out = self.runner.run(records, decided_at=self.now)
        self.runner.apply(out.writes)
        return out


def _verdicts(result: BatchOutput) -> list[dict[str, Any]]:
    return [orjson.loads(v.value) for v in result.verdicts]


def _req(agent: str, action: str, rtype: str, rid: str, t: float, n: int = 0,
         **context: Any) -> ActionRequest:
    return ActionRequest.create(agent_id=agent, action=action,
                                resource={"type": rtype, "id": rid}, context=context,
                                occurred_at=t, request_id=f"00000000-0000-4000-8000-{n:012d}")


def _runaway(n: int, t: float = T0) -> list[ActionRequest]:
    return [_req("support-bot-2", "emails.send", "Email", "welcome", t + i * 0.002, i,
                 template="welcome") for i in range(n)]


def test_runaway_loop_is_cut_at_the_threshold_in_the_same_second(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    out = _verdicts(pipe.run([pipe.record(r) for r in _runaway(300)]))
    decisions = [v["decision"] for v in out]
    first_deny = decisions.index("deny")
    assert decisions[:first_deny] == ["allow"] * first_deny and first_deny <= 5
    assert set(decisions[first_deny:]) == {"deny"}
    assert {"REPETITION"} <= {r["code"] for r in out[first_deny]["reasons"]}
    assert out[first_deny]["signals"]["repeat_10s"] == first_deny + 1
    assert out[-1]["request"]["occurred_at"] - out[0]["request"]["occurred_at"] < 1.0


def test_human_paced_agent_doing_the_same_work_is_never_denied(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    reqs = [_req("support-bot-2", "emails.send", "Email", f"welcome-{i}", T0 + i * 20, i,
                 template="welcome") for i in range(180)]          # an hour, one per 20 s
    for r in reqs:
        pipe.now = r.occurred_at
        [v] = _verdicts(pipe.run([pipe.record(r)]))
        assert v["decision"] == "allow", (r.occurred_at - T0, v["reasons"], v["signals"])


def test_batch_boundaries_do_not_change_signals_or_verdicts(engine: PolicyEngine) -> None:
    reqs = _runaway(60) + [
        _req("data-bot-1", "customers.read", "Customer", f"cus-{i}", T0 + i * 0.01, 100 + i)
        for i in range(80)]
    reqs.sort(key=lambda r: r.occurred_at)

    def replay(chunks: Iterable[int]) -> list[tuple[Any, ...]]:
        pipe = Pipeline(engine)
        recs = [pipe.record(r) for r in reqs]
        out: list[dict[str, Any]] = []
        i = 0
        for size in chunks:
            out += _verdicts(pipe.run(recs[i:i + size]))
            i += size
        out += _verdicts(pipe.run(recs[i:]))
        return sorted((v["request_id"], v["decision"], orjson.dumps(v["reasons"]),
                       orjson.dumps(v["signals"], option=orjson.OPT_SORT_KEYS)) for v in out)

    one_by_one = replay([1] * len(reqs))
    assert replay([len(reqs)]) == one_by_one
    assert replay([7, 50, 3, 33]) == one_by_one
    assert any(v[1] == "deny" for v in one_by_one) and any(v[1] == "allow" for v in one_by_one)


def test_clock_skew_is_denied_against_broker_time(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    late = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0 - 3600, 1)
    early = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0 + 60, 2)
    ok = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0 + 1, 3)
    out = _verdicts(pipe.run([pipe.record(late, broker_time=T0), pipe.record(early, broker_time=T0),
                              pipe.record(ok, broker_time=T0 + 1.5)]))
    assert [v["reasons"][0]["code"] for v in out] == ["CLOCK_SKEW", "CLOCK_SKEW", "PERMITTED"]
    assert "behind" in out[0]["reasons"][0]["message"]
    assert "ahead of" in out[1]["reasons"][0]["message"]


def test_future_stamps_cannot_spread_a_burst(engine: PolicyEngine) -> None:
    """300 calls in 0.3 s of broker time, stamped as if spread over 10 s: still cut off."""
    pipe = Pipeline(engine, hold=0)
    reqs = [dataclasses.replace(r, occurred_at=T0 + i * 0.033) for i, r in
            enumerate(_runaway(300))]
    out = _verdicts(pipe.run([pipe.record(r, broker_time=T0 + i * 0.001)
                              for i, r in enumerate(reqs)]))
    assert max(v["signals"]["rate_1s"] for v in out) >= 250
    assert sum(v["decision"] == "deny" for v in out) >= 290


def test_lost_state_holds_the_partition_in_state_recovering(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine, hold=5.0)
    reqs = _runaway(3)
    pipe.run([pipe.record(r) for r in reqs])
    part = partition_for("support-bot-2", PARTS)
    assert pipe.store.get(part, MARK_KEY) is not None
    pipe.store.drop(part)                          # the changelog is gone...
    pipe.store.apply(part, {MARK_KEY: PartitionMark(hold_pending=True).to_bytes()})  # ...noticed
    later = [_req("support-bot-2", "emails.send", "Email", f"e-{i}", T0 + 1 + i, 10 + i)
             for i in range(8)]
    out = _verdicts(pipe.run([pipe.record(r) for r in later]))
    codes = [v["reasons"][0]["code"] for v in out]
    assert codes[:5] == ["STATE_RECOVERING"] * 5      # event time T0+1 .. T0+5 < hold end
    assert "STATE_RECOVERING" not in codes[5:]        # windows refilled: normal decisions
    assert out[4]["signals"]["rate_60s"] == 5         # recovering actions were still counted


def test_a_request_id_published_twice_is_decided_once(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    reqs = _runaway(3)
    out = pipe.run([pipe.record(r) for r in reqs])
    state_before = pipe.agent_state("support-bot-2")
    again = pipe.run([pipe.record(r) for r in reqs])     # a runtime re-sent the same records
    assert again.verdicts == [] and len(again.deadletters) == 3
    assert all(b"DUPLICATE_REQUEST" in letter for letter in again.deadletters)
    assert pipe.agent_state("support-bot-2") == state_before    # not counted either
    nxt = _verdicts(pipe.run([pipe.record(_runaway(4)[3])]))
    assert nxt[0]["signals"]["repeat_10s"] == 4
    assert len(out.verdicts) == 3


def test_corrupt_state_blob_denies_and_holds(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine, hold=30.0)
    pipe.run([pipe.record(_runaway(1)[0])])
    pipe.store.apply(partition_for("support-bot-2", PARTS), {"support-bot-2": b"HGAS\x01garbage"})
    out = _verdicts(pipe.run([pipe.record(_runaway(2)[1])]))
    assert out[0]["reasons"][0]["code"] == "STATE_RECOVERING"


def test_state_stays_bounded_under_unique_resources(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    bound = SignalConfig().max_state_bytes
    for chunk in range(20):
        reqs = [_req("data-bot-1", "customers.read", "Customer", f"cus-{chunk}-{i}",
                     T0 + chunk * 5 + i * 0.01, chunk * 500 + i, q=f"{i}") for i in range(500)]
        pipe.run([pipe.record(r) for r in reqs])
        assert len(pipe.agent_state("data-bot-1") or b"") <= bound


def test_wrong_partition_is_refused(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    req = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0, 1)
    right = partition_for("support-bot-1", PARTS)
    raw = RawRecord(key=b"support-bot-1", value=encode(req), partition=(right + 1) % PARTS,
                    offset=0, timestamp=T0)
    result = pipe.run([raw])
    [v] = _verdicts(result)
    assert v["reasons"][0]["code"] == "MALFORMED" and "partition" in v["reasons"][0]["message"]
    assert len(result.deadletters) == 1


def test_unexpected_engine_failure_denies_everything(engine: PolicyEngine) -> None:
    class Broken:
        def decide_many(self, items: Any) -> Any:
            raise RuntimeError("boom")

    pipe = Pipeline(engine)
    pipe.runner.snapshot = dataclasses.replace(pipe.runner.snapshot, engine=Broken())
    result = pipe.run([pipe.record(r) for r in _runaway(3)])
    out = _verdicts(result)
    assert len(out) == 3 and {v["reasons"][0]["code"] for v in out} == {"INTERNAL_ERROR"}
    assert len(result.deadletters) == 3


def test_idle_agents_are_forgotten_on_event_time_and_swept(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    part = partition_for("support-bot-1", PARTS)
    assert part == partition_for("support-bot-2", PARTS)
    old = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0, 1)
    pipe.run([pipe.record(old)])
    pipe.runner.snapshot = dataclasses.replace(pipe.runner.snapshot, idle_ttl=600)
    fresh = _req("support-bot-2", "tickets.read", "Ticket", "T-2", T0 + 500, 2)
    pipe.run([pipe.record(fresh)])
    assert pipe.runner.sweep(part) == {}                       # 500 s idle < 600 s
    later = _req("support-bot-2", "tickets.read", "Ticket", "T-3", T0 + 700, 3)
    pipe.run([pipe.record(later)])
    assert pipe.runner.sweep(part) == {"support-bot-1": None}
    # not swept yet, support-bot-1 is already new again: the same answer either way
    back = _req("support-bot-1", "tickets.read", "Ticket", "T-1", T0 + 701, 4)
    [v] = _verdicts(pipe.run([pipe.record(back)]))
    assert v["signals"]["new_action"] == 1 and v["signals"]["rate_1h"] == 1


def test_verdicts_are_numbered_per_partition_across_batches(engine: PolicyEngine) -> None:
    pipe = Pipeline(engine)
    reqs = [_req(a, "tickets.read", "Ticket", f"T-{i}", T0 + i, i)
            for i, a in enumerate(["support-bot-1", "support-bot-2", "audit-bot-1"] * 4)]
    seqs: dict[int, list[int]] = {}
    for chunk in (reqs[:5], reqs[5:7], reqs[7:]):
        out = pipe.run([pipe.record(r) for r in chunk])
        for v in out.verdicts:
            seqs.setdefault(v.partition, []).append(orjson.loads(v.value)["seq"])
    assert all(s == list(range(len(s))) for s in seqs.values()) and sum(map(len,
                                                                            seqs.values())) == 12


def test_a_batch_is_signed_once_and_each_verdict_verifies_alone(engine: PolicyEngine) -> None:
    from holdgate.keys import TrustStore
    from holdgate.signing import PROOF_HEADER, read_proof, verify_record
    trust = TrustStore([SIGNER.public_key])
    pipe = Pipeline(engine)
    batch = pipe.run([pipe.record(r) for r in _runaway(40)])
    assert len(batch.verdicts) == 40
    assert len({dict(v.headers)["hg-sig"] for v in batch.verdicts}) == 1
    assert all(read_proof(v.headers) is not None for v in batch.verdicts)
    assert all(verify_record(trust, v.value, v.headers) is None for v in batch.verdicts)
    pipe.now += 60
    [single] = pipe.run([pipe.record(_req("x-bot", "tickets.read", "Ticket", "t", pipe.now,
                                          999))]).verdicts
    assert PROOF_HEADER not in dict(single.headers)                  # alone: signed plainly
    assert verify_record(trust, single.value, single.headers) is None
