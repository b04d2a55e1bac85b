"""Shadow candidates in the decision core: recorded beside every decision, never enforced.

A shadow policy is decided from the same signals; a shadow model re-reads the
same counters (`SignalComputer.rederive`) and must give exactly what observing
with that model from the start gives.  Enforced decisions, signals and the
state written are byte-identical with and without a shadow.
"""
from __future__ import annotations

import json
import random
import shutil
import uuid
from typing import Any

import pytest

from holdgate.events import ActionRequest, encode
from holdgate.models import SignalComputer
from holdgate.models.baseline_model import BaselineModel
from holdgate.models.fit import FitOptions, fit_model
from holdgate.models.state import AgentState
from holdgate.policies import PolicyBundle, PolicyEngine, default_bundle_path
from holdgate.settings import Settings
from holdgate.stream import MemoryStore
from holdgate.stream.core import Shadow
from holdgate.stream.edges import RawRecord
from holdgate.stream.worker import build_runner, build_snapshot

DAY = 86_400.0
T0 = 1_790_035_200.0          # a midnight (UTC)
JOB = "report-job-1"


def _req(agent: str, action: str, rtype: str, rid: str, t: float,
         rnd: random.Random) -> ActionRequest:
    attrs = {"Record": {"sensitivity": "internal"}, "Customer": {"pii_level": "low"}}
    return ActionRequest.create(agent_id=agent, action=action, occurred_at=t,
                                resource={"type": rtype, "id": rid,
                                          "attributes": attrs.get(rtype, {})},
                                request_id=str(uuid.UUID(int=rnd.getrandbits(128))))


def _day(day: int, rnd: random.Random, job_seconds: int = 120) -> list[ActionRequest]:
    """A nightly job at 40/s from 02:00 and two human-paced support agents by day."""
    start = T0 + day * DAY
    out = [_req(JOB, "customers.read", "Customer", f"cus-{day}-{i}", start + 7200 + i / 40, rnd)
           for i in range(40 * job_seconds)]
    for agent in ("support-bot-1", "support-bot-2"):
        t = start + 9 * 3600
        while t < start + 13 * 3600:
            action, rtype = rnd.choice((("tickets.read", "Ticket"), ("customers.read", "Customer")))
            out.append(_req(agent, action, rtype, f"{rtype[:1]}-{rnd.randrange(300)}", t, rnd))
            t += rnd.expovariate(1 / 30.0)
    return sorted(out, key=lambda r: r.occurred_at)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("shadow")
    bundle = tmp / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    entities = json.loads((bundle / "entities.json").read_text())
    entities.append({"uid": {"type": "Agent", "id": JOB},
                     "attrs": {"role": "data", "team": "analytics", "owner": "t@example.com"},
                     "parents": [{"type": "Role", "id": "data"},
                                 {"type": "Team", "id": "analytics"}]})
    (bundle / "entities.json").write_text(json.dumps(entities))
    rnd = random.Random(7)
    history = [r for d in range(3) for r in _day(d, rnd)]
    roles = PolicyBundle.load(bundle).agent_roles
    fit_model(history, roles, FitOptions(trees=30, seed=2)).model.save(tmp / "model")
    model = tmp / "model"
    # A candidate bundle without the support agents' ticket permit.
    strict = tmp / "strict"
    shutil.copytree(bundle, strict)
    policy = (strict / "policy.cedar").read_text()
    start = policy.index('@id("support-tickets")')
    end = policy.index(";", start) + 1
    (strict / "policy.cedar").write_text(policy[:start] + policy[end:])
    return {"bundle": bundle, "model": model, "strict": strict, "roles": roles,
            "today": _day(3, rnd)}


def test_rederive_equals_observing_with_the_model(fitted: dict[str, Any]) -> None:
    model = BaselineModel.load(fitted["model"])
    with_model = SignalComputer(model=model, roles=fitted["roles"])
    without = SignalComputer(roles=fitted["roles"])
    a: dict[str, AgentState] = {}
    b: dict[str, AgentState] = {}
    requests = fitted["today"][:3000]
    for req in requests:
        expected = with_model.observe(a, req)
        plain = without.observe(b, req)
        [got] = with_model.rederive([plain], [req], [b[req.agent_id].clock])
        assert got == expected, req


def _run(settings: Settings, requests: list[ActionRequest], shadow: Shadow | None
         ) -> tuple[list[Any], dict[int, dict[str, bytes]]]:
    snapshot = build_snapshot(settings)
    if shadow is not None:
        import dataclasses
        snapshot = dataclasses.replace(snapshot, shadow=shadow)
    store = MemoryStore()
    runner = build_runner(settings, store, snapshot=snapshot)
    runner.sealing = False
    decisions = []
    records = [RawRecord(key=r.agent_id.encode(), value=encode(r),
                         partition=runner.partition_of(r.agent_id)) for r in requests]
    for i in range(0, len(records), 128):
        out = runner.run(records[i:i + 128], decided_at=0.0)
        runner.apply(out.writes)
        decisions += out.decisions
    dump = {p: {k: store.get(p, k) for k in store.keys(p)} for p in range(settings.partitions)}
    return decisions, dump   # type: ignore[return-value]


def test_a_shadow_policy_is_recorded_and_never_enforced(fitted: dict[str, Any]) -> None:
    settings = Settings(policy_dir=str(fitted["bundle"]), partitions=2)
    strict = PolicyBundle.load(fitted["strict"])
    shadow = Shadow(engine=PolicyEngine(strict), policy_version=strict.version)
    requests = [r for r in fitted["today"] if r.agent_id != JOB][:400]
    plain, plain_state = _run(settings, requests, None)
    shadowed, shadowed_state = _run(settings, requests, shadow)
    assert plain_state == shadowed_state                         # state never learns from it
    assert [(d.decision, d.reasons, dict(d.signals)) for d in plain] == \
        [(d.decision, d.reasons, dict(d.signals)) for d in shadowed]
    assert all(d.shadow is not None for d in shadowed)
    flips = [(d.request["action"], d.decision, d.shadow["decision"]) for d in shadowed
             if d.decision != d.shadow["decision"]]
    tickets = sum(r.action == "tickets.read" for r in requests)
    assert tickets and len(flips) == tickets
    assert {f for f in flips} == {("tickets.read", "allow", "deny")}
    assert all(d.shadow["policy_version"] == strict.version for d in shadowed)
    assert all(d.shadow["signals"] == {} for d in shadowed)       # same model: same signals


def test_a_shadow_model_reads_the_same_counters_against_its_own_baselines(
        fitted: dict[str, Any]) -> None:
    settings = Settings(policy_dir=str(fitted["bundle"]), partitions=2)
    bundle = PolicyBundle.load(fitted["bundle"])
    model = BaselineModel.load(fitted["model"])
    shadow = Shadow(engine=PolicyEngine(bundle), policy_version=bundle.version,
                    signals=SignalComputer(model=model, roles=bundle.agent_roles),
                    model_version=model.version)
    night = [r for r in fitted["today"] if r.agent_id == JOB]
    decisions, _ = _run(settings, night, shadow)
    enforced_denied = sum(not d.allowed for d in decisions)
    shadow_denied = sum(d.shadow["decision"] != "allow" for d in decisions)
    assert enforced_denied > 0.9 * len(night)         # fixed fleet limits block the job
    assert shadow_denied < 0.01 * len(night)          # its own fitted normal lets it run
    # (Not necessarily what enforcing the model would decide: the 1 h windows count
    # allowed actions, so the shadow reads the counters as the enforced decisions shaped
    # them.  That is the documented meaning of a shadow.)
    assert decisions[0].shadow["model_version"] == model.version
    assert "rate_1s_pct" in decisions[-1].shadow["signals"]
