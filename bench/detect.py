"""Detection quality: simulate, fit on one history, judge another, per persona.

Two questions, one table each:
- unseen fleet: fit on seed A, replay seed B (other agents, other rates and
  hours, attacks at other times): the model can only use role priors;
- same fleet, later: a week of seed B's fleet, fitted on the days before its
  first attack (about five), replayed whole: the agents' own profiles apply.
Both replay through the worker's runner with the fitted model and the default
bundle's guards, with every agent-supplied data_sensitivity label removed from
the contexts (detection by behaviour alone).  Printed per persona: actions, %
denied, time from the first bad action to the first behavioural deny and to
"everything after is denied"; and the benign false-positive rate (benign
actions denied by a behavioural guard), overall and for the nightly batch job.
Targets (printed, not asserted): every attack detected; runaway and sweep
blocked within 1 s; exfiltration and tool switching within 5 min; benign FPR
at most 0.1 %, the batch job included.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import orjson

from holdgate.events import ActionRequest
from holdgate.models.fit import FitOptions, fit_model
from holdgate.policies import PolicyBundle
from holdgate.settings import Settings
from holdgate.sim import SimConfig, Simulation, write_bundle
from holdgate.stream import MemoryStore
from holdgate.stream.edges import RawRecord
from holdgate.stream.worker import build_runner

BEHAVIOUR = {"RATE_LIMIT", "REPETITION", "FANOUT", "ANOMALY", "UNUSUAL"}
ATTACK_TARGETS = {"runaway_loop": 1.0, "sweep": 1.0, "exfiltration": 300.0,
                  "compromised": 300.0}


def _strip(req: ActionRequest) -> bytes:
    obj = req.to_obj()
    obj["context"] = {k: v for k, v in obj["context"].items() if k != "data_sensitivity"}
    return orjson.dumps(obj)


def _fit(pairs: list[tuple[ActionRequest, Any]], bundle: Path, model_dir: Path,
         seed: int) -> Any:
    roles = PolicyBundle.load(bundle).agent_roles
    result = fit_model([req for req, _ in pairs], roles, FitOptions(seed=seed))
    return result.model.save(model_dir), result.report


def _judge(pairs: Iterable[tuple[ActionRequest, Any]], bundle: Path,
           model_dir: Path) -> dict[str, Any]:
    settings = Settings(policy_dir=str(bundle), model=str(model_dir), partitions=4)
    runner = build_runner(settings, MemoryStore(), worker_id="detect")
    runner.sealing = False
    pairs = list(pairs)
    labels = {req.request_id: (req, label) for req, label in pairs}
    decisions: dict[str, Any] = {}
    chunk: list[RawRecord] = []
    for req, _ in pairs:
        chunk.append(RawRecord(key=None, value=_strip(req), partition=0))
        if len(chunk) == 256:
            for d in _run(runner, chunk):
                decisions[d.request_id] = d
            chunk = []
    for d in _run(runner, chunk):
        decisions[d.request_id] = d
    return _table(labels, decisions)


def _run(runner: Any, chunk: list[RawRecord]) -> list[Any]:
    if not chunk:
        return []
    out = runner.run(chunk, decided_at=0.0)
    runner.apply(out.writes)
    return out.decisions


def _table(labels: dict[str, Any], decisions: dict[str, Any]) -> dict[str, Any]:
    personas: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "actions": 0, "denied": 0, "behaviour_denied": 0, "malicious": 0})
    attacks: dict[tuple[str, str], list[tuple[float, bool, bool]]] = defaultdict(list)
    benign = benign_fp = batch = batch_fp = 0
    fp_codes: dict[str, int] = defaultdict(int)
    for rid, (req, label) in labels.items():
        d = decisions.get(rid)
        if d is None:
            continue
        codes = {r.code for r in d.reasons}
        behaviour = bool(codes & BEHAVIOUR)
        row = personas[label.persona]
        row["actions"] += 1
        row["denied"] += not d.allowed
        row["behaviour_denied"] += behaviour
        if label.malicious:
            row["malicious"] += 1
            attacks[(label.persona, label.agent_id)].append(
                (req.occurred_at, not d.allowed, behaviour))
        else:
            benign += 1
            benign_fp += behaviour
            if behaviour:
                for c in codes & BEHAVIOUR:
                    fp_codes[c] += 1
            if label.persona == "batch":
                batch += 1
                batch_fp += behaviour
    detected = {}
    for (persona, agent), seq in sorted(attacks.items()):
        seq.sort()
        start = seq[0][0]
        first = next((t for t, _, b in seq if b), None)
        last_allowed = max((t for t, denied, _ in seq if not denied), default=None)
        settled = 0.0 if last_allowed is None else last_allowed - start
        everything = None if seq[-1][1] is False else settled
        detected[persona] = {
            "agent": agent, "malicious_actions": len(seq),
            "denied_pct": 100.0 * sum(d for _, d, _ in seq) / len(seq),
            "first_behaviour_deny_s": None if first is None else first - start,
            "all_denied_after_s": everything,
            "target_s": ATTACK_TARGETS.get(persona)}
    return {"personas": dict(personas), "attacks": detected,
            "benign_actions": benign, "benign_fpr": benign_fp / max(1, benign),
            "batch_actions": batch, "batch_fpr": batch_fp / max(1, batch),
            "fp_codes": dict(fp_codes)}


def run(*, train_seed: int = 1, test_seed: int = 2, hours: float = 72.0,
        agents: int = 20) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hg-detect-"))
    out: dict[str, Any] = {"train_seed": train_seed, "test_seed": test_seed,
                           "hours": hours, "agents": agents}
    sim_a = Simulation(SimConfig(seed=train_seed, hours=hours, agents=agents))
    sim_b = Simulation(SimConfig(seed=test_seed, hours=hours, agents=agents))
    bundle_a = write_bundle(tmp / "bundle-a", sim_a.fleet)
    bundle_b = write_bundle(tmp / "bundle-b", sim_b.fleet)
    pairs_a, pairs_b = list(sim_a), list(sim_b)
    print(f"  fit on seed {train_seed} ({len(pairs_a):,} actions) ...", flush=True)
    _, report = _fit(pairs_a, bundle_a, tmp / "model-a", train_seed)
    out["fit_a"] = {k: report[k] for k in ("actions", "seconds", "flagged_share")}
    print(f"  judge seed {test_seed} ({len(pairs_b):,} actions), an unseen fleet ...",
          flush=True)
    out["unseen_fleet"] = _judge(pairs_b, bundle_b, tmp / "model-a")
    week = Simulation(SimConfig(seed=test_seed, hours=168.0, agents=agents,
                                attack_after=0.75))
    pairs_w = list(week)
    bundle_w = write_bundle(tmp / "bundle-week", week.fleet)
    split = week.config.attack_start
    before = [(r, lb) for r, lb in pairs_w if r.occurred_at < split]
    print(f"  a week of seed {test_seed}: fit before its first attack ({len(before):,} of "
          f"{len(pairs_w):,}), judge it all ...", flush=True)
    _fit(before, bundle_w, tmp / "model-w", test_seed)
    out["same_fleet"] = _judge(pairs_w, bundle_w, tmp / "model-w")
    out["same_fleet"]["note"] = "whole history replayed; attacks only after the split"
    return out


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def report(res: dict[str, Any]) -> str:
    lines = [f"detect: simulated {res['hours']:.0f} h, {res['agents']} benign agents; fit on "
             f"seed {res['train_seed']}, judge seed {res['test_seed']}"]
    for key, title in (("unseen_fleet", "unseen fleet (role priors only)"),
                       ("same_fleet", "same fleet, fitted before its attacks")):
        t = res[key]
        lines.append(f"[{title}]")
        lines.append(f"  {'persona':<14}{'actions':>9}{'denied':>9}   attack: first behaviour "
                     "deny / all denied after (target)")
        for persona, row in sorted(t["personas"].items()):
            pct = 100.0 * row["denied"] / max(1, row["actions"])
            extra = ""
            if persona in t["attacks"]:
                a = t["attacks"][persona]
                extra = (f"   {_fmt_s(a['first_behaviour_deny_s'])} / "
                         f"{_fmt_s(a['all_denied_after_s'])} (<= {a['target_s']:.0f}s)")
            lines.append(f"  {persona:<14}{row['actions']:>9,}{pct:>8.2f}%{extra}")
        lines.append(f"  benign false positives (behavioural denies): {t['benign_fpr']:.3%} of "
                     f"{t['benign_actions']:,}; batch job {t['batch_fpr']:.3%} of "
                     f"{t['batch_actions']:,}; by guard {t['fp_codes']}")
    return "\n".join(lines)
