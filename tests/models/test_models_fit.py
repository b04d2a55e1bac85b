"""Fitted baselines end to end: a nightly job is normal for itself, not for a support agent.

A small handcrafted fleet (no simulator): two human-paced support agents and a
reporting job that reads 40 records a second for three minutes every night.
The model is fitted on three days and judged on a fourth, through the same
runner the worker uses.
"""
from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from holdgate.errors import ModelError
from holdgate.events import ActionRequest, encode
from holdgate.models.baseline_model import BaselineModel
from holdgate.models.fit import FitOptions, fit_model
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.settings import Settings
from holdgate.stream import MemoryStore
from holdgate.stream.edges import RawRecord
from holdgate.stream.worker import build_runner

DAY = 86_400.0
T0 = 1_790_035_200.0          # a midnight (UTC)


def _bundle(tmp: Path) -> Path:
    dst = tmp / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    entities = json.loads((dst / "entities.json").read_text())
    entities.append({"uid": {"type": "Agent", "id": "report-job-1"},
                     "attrs": {"role": "data", "team": "analytics", "owner": "t@example.com"},
                     "parents": [{"type": "Role", "id": "data"},
                                 {"type": "Team", "id": "analytics"}]})
    (dst / "entities.json").write_text(json.dumps(entities))
    return dst


ATTRS = {"Record": {"sensitivity": "internal"}, "Customer": {"pii_level": "low"}}


def _req(agent: str, action: str, rtype: str, rid: str, t: float) -> ActionRequest:
    return ActionRequest.create(agent_id=agent, action=action, occurred_at=t,
                                resource={"type": rtype, "id": rid,
                                          "attributes": ATTRS.get(rtype, {})},
                                request_id=str(uuid.UUID(int=random.getrandbits(128))))


def _day(day: int, rnd: random.Random) -> list[ActionRequest]:
    out = []
    start = T0 + day * DAY
    t = start + 2 * 3600                       # the job at 02:00, 40/s for 180 s
    for i in range(40 * 180):
        out.append(_req("report-job-1", "customers.read", "Customer", f"cus-{day}-{i}",
                        t + i / 40))
    for agent in ("support-bot-1", "support-bot-2"):
        t = start + 9 * 3600                   # 09:00-17:00, one action every ~20 s
        while t < start + 17 * 3600:
            action, rtype = rnd.choice((("tickets.read", "Ticket"),
                                        ("tickets.reply", "Ticket"),
                                        ("customers.read", "Customer")))
            out.append(_req(agent, action, rtype, f"{rtype[:1]}-{rnd.randrange(300)}", t))
            t += rnd.expovariate(1 / 20.0)
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    random.seed(5)
    tmp = tmp_path_factory.mktemp("fit")
    bundle = _bundle(tmp)
    rnd = random.Random(1)
    history = [r for d in range(3) for r in _day(d, rnd)]
    roles = PolicyBundle.load(bundle).agent_roles
    result = fit_model(history, roles, FitOptions(trees=50, seed=1))
    model = result.model.save(tmp / "model")
    return {"tmp": tmp, "bundle": bundle, "model": model, "result": result,
            "rnd": rnd}


def _decide(fitted: dict[str, Any], requests: list[ActionRequest],
            with_model: bool = True) -> list[Any]:
    settings = Settings(policy_dir=str(fitted["bundle"]), partitions=2,
                        model=str(fitted["tmp"] / "model") if with_model else "")
    runner = build_runner(settings, MemoryStore())
    runner.sealing = False
    decisions = []
    records = [RawRecord(key=None, value=encode(r), partition=0) for r in requests]
    for i in range(0, len(records), 64):
        out = runner.run(records[i:i + 64], decided_at=0.0)
        runner.apply(out.writes)
        decisions += out.decisions
    return decisions


def test_the_nightly_job_runs_and_the_same_burst_from_support_is_denied(
        fitted: dict[str, Any]) -> None:
    night = [r for r in _day(3, fitted["rnd"]) if r.agent_id == "report-job-1"]
    job = _decide(fitted, night)
    assert sum(not d.allowed for d in job) / len(job) < 0.001, \
        {tuple(r.code for r in d.reasons) for d in job if not d.allowed}
    without = _decide(fitted, night, with_model=False)
    assert sum(not d.allowed for d in without) > 0.9 * len(without)   # the old fixed limits
    burst = [_req("support-bot-1", "customers.read", "Customer", f"C-{i}",
                  T0 + 3 * DAY + 11 * 3600 + i / 40) for i in range(400)]
    support = _decide(fitted, burst)
    first_deny = next(i for i, d in enumerate(support) if not d.allowed)
    assert burst[first_deny].occurred_at - burst[0].occurred_at < 1.0
    assert all(not d.allowed for d in support[first_deny:])


def test_a_throttled_agent_that_calms_down_is_allowed_again(fitted: dict[str, Any]) -> None:
    start = T0 + 3 * DAY + 10 * 3600
    burst = [_req("support-bot-2", "tickets.read", "Ticket", f"T-{i % 7}", start + i / 50)
             for i in range(500)]                    # 10 s of a runaway
    calm = [_req("support-bot-2", "tickets.read", "Ticket", f"T-{i}", start + 90 + 20 * i)
            for i in range(20)]                       # then human pace again
    decisions = _decide(fitted, burst + calm)
    assert sum(not d.allowed for d in decisions[:500]) > 450     # blocked while hammering
    assert all(d.allowed for d in decisions[500:]), \
        [(tuple(r.code for r in d.reasons), dict(d.signals)) for d in decisions[500:]
         if not d.allowed][:3]


def test_model_round_trip_and_its_version_is_named(fitted: dict[str, Any]) -> None:
    model: BaselineModel = fitted["model"]
    loaded = BaselineModel.load(fitted["tmp"] / "model")
    assert loaded.version == model.version and loaded.version.startswith("sha256:")
    X = np.random.default_rng(0).uniform(0, 6, size=(200, 11))
    assert np.array_equal(loaded.anomaly(X), fitted["result"].model.anomaly(X))
    meta = loaded.meta
    assert meta["training"]["actions"] == len(fitted["result"].agents)
    assert "scikit-learn" in meta["libraries"] and meta["fit"]["target_fpr"] == 0.0001
    [d] = _decide(fitted, [_req("support-bot-1", "tickets.read", "Ticket", "T-1",
                                T0 + 3 * DAY + 10 * 3600)])
    assert d.model_version == model.version


def test_tampered_or_foreign_artifacts_are_refused(fitted: dict[str, Any],
                                                   tmp_path: Path) -> None:
    src = fitted["tmp"] / "model"
    bad = tmp_path / "tampered"
    shutil.copytree(src, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["meta"]["calibration"]["threshold"] = 0.01       # loosen it, keep the hash
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="hash"):
        BaselineModel.load(bad)
    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated)
    data = (truncated / "arrays.npz").read_bytes()
    (truncated / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        BaselineModel.load(truncated)
    from holdgate.models.artifact import save_model

    save_model(tmp_path / "other", {"w": np.zeros(3)}, {"kind": "something-else"})
    with pytest.raises(ModelError, match="not a holdgate baseline"):
        BaselineModel.load(tmp_path / "other")


def test_backtest_same_snapshot_reports_no_flips(fitted: dict[str, Any]) -> None:
    from holdgate.stream.backtest import backtest

    requests = _day(3, random.Random(9))[:3000]
    records = [RawRecord(key=None, value=encode(r), partition=0) for r in requests]
    settings = Settings(policy_dir=str(fitted["bundle"]), partitions=2,
                        model=str(fitted["tmp"] / "model"))
    a, b = (build_runner(settings, MemoryStore()) for _ in range(2))
    report = backtest(records, a, b)
    assert report.actions == len(records) and report.same == len(records)
    assert not report.flips and not report.examples
