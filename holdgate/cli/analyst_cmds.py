"""`holdgate fit` and `holdgate backtest`: learn baselines from history, try changes on it."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import click
import orjson

from holdgate.cli.history_cmds import _progress, history_options, load_history
from holdgate.settings import Settings

__all__ = ["fit", "backtest"]


def _actions(records: Iterable[Any], max_bytes: int) -> tuple[list[Any], int]:
    """Valid actions as the signals see them (event time clamped to the broker's)."""
    from holdgate.stream.core import event_view
    from holdgate.stream.edges import decode
    from holdgate.stream.core import Action

    out, bad = [], 0
    for record in records:
        item = decode(record, max_bytes=max_bytes)
        if isinstance(item, Action):
            out.append(event_view(item))
        else:
            bad += 1
    return out, bad


@click.command()
@history_options
@click.option("--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Model folder to write (arrays.npz + manifest.json).")
@click.option("--target-fpr", type=float, default=0.0001, show_default=True,
              help="Share of training actions the anomaly threshold may flag.")
@click.option("--trees", type=int, default=100, show_default=True, help="Isolation trees.")
@click.option("--margin", type=float, default=1.5, show_default=True,
              help="Limit = margin x the typical day's p99.9 (per agent, per 3 hours).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--plots", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the PNG plots [default: <output>/plots].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def fit(settings: Settings, input_path: str | None, since: str | None, until: str,
        policy_dir: Path | None, model: Path | None, out: Path, target_fpr: float, trees: int,
        margin: float, seed: int, plots: Path | None, as_json: bool) -> None:
    """Fit per-agent baselines and an anomaly model from history; write the model.

    \b
    Learns, per agent and per 3-hour block of the day, the rates it reaches on
    normal days, the actions and resource types it uses and when it is active
    (per role too, for agents with little history), then an isolation forest
    over the relative signals. Run the worker with `--model OUTPUT`; every
    verdict then names the model's version.
    """
    from holdgate.models.fit import FitOptions, fit_model
    from holdgate.models.profile_fit import FitConfig
    from holdgate.policies import PolicyBundle

    if model is not None:
        raise click.UsageError("--model is for replay and backtest; fit writes --output")
    settings = settings.with_(policy_dir=str(policy_dir) if policy_dir else None)
    bundle = PolicyBundle.load(settings.policy_path)
    records, _, source = load_history(settings, input_path, since, until)
    actions, bad = _actions(records, settings.max_action_bytes)
    bar = _progress(2 * len(actions), "fitting")
    try:
        result = fit_model(actions, bundle.agent_roles,
                           FitOptions(target_fpr=target_fpr, trees=trees, seed=seed,
                                      profile=FitConfig(margin=margin)), progress=bar.update)
    finally:
        bar.close()
    saved = result.model.save(out)
    report = {**result.report, "model": str(out), "model_version": saved.version,
              "source": source, "skipped_records": bad, "meta": saved.meta}
    pictures = _plots(result, plots or out / "plots")
    report["plots"] = [str(p) for p in pictures]
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    meta = saved.meta
    click.echo(f"fitted {saved.version} from {report['actions']:,} actions of "
               f"{meta['training']['agents']} agents ({source}) in {report['seconds']:.1f}s")
    click.echo(f"  profiled agents: {meta['training']['profiled_agents']} (others use their "
               f"role's profile); roles: {', '.join(meta['training']['roles']) or '-'}")
    for group, limits in meta["thresholds"].items():
        click.echo(f"  {group:<24} busiest-block limits: " +
                   ", ".join(f"{k} {v}" for k, v in limits.items()))
    click.echo(f"  anomaly threshold at {report['threshold_raw']:.4f} (target FPR {target_fpr}):"
               f" {report['flagged']} training actions ({report['flagged_share']:.3%}) flagged")
    for agent, n in list(report["flagged_by_agent"].items())[:10]:
        click.echo(f"    {agent:<30} {n}")
    if pictures:
        click.echo(f"  plots: {', '.join(str(p) for p in pictures)}")
    click.secho(f"wrote {out}", fg="green")


def _plots(result: Any, folder: Path) -> list[Path]:
    """Score distribution with the threshold, and the agents that would be flagged."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        click.echo("  (no plots: pip install 'holdgate[plots]' for matplotlib)", err=True)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    raw, thr = result.raw_scores, result.model.threshold
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(raw, bins=120, color="#1f6feb", log=True)
    ax.axvline(thr, color="#d1242f", linestyle="--",
               label=f"threshold {thr:.3f}: {result.report['flagged_share']:.3%} flagged")
    ax.set_xlabel("isolation score (higher = more unusual)")
    ax.set_ylabel("training actions (log)")
    ax.legend()
    fig.tight_layout()
    scores_png = folder / "scores.png"
    fig.savefig(scores_png, dpi=110)
    plt.close(fig)
    flagged = list(result.report["flagged_by_agent"].items())[:20]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(flagged) + 1)))
    if flagged:
        ax.barh([a for a, _ in flagged][::-1], [n for _, n in flagged][::-1], color="#d1242f")
    ax.set_xlabel("training actions above the threshold")
    ax.set_title("agents that would be flagged on the training window", fontsize=10)
    fig.tight_layout()
    agents_png = folder / "flagged-agents.png"
    fig.savefig(agents_png, dpi=110)
    plt.close(fig)
    del np
    return [scores_png, agents_png]


@click.command()
@history_options
@click.option("--candidate-policy", type=click.Path(path_type=Path, exists=True,
                                                    file_okay=False),
              help="Candidate Cedar bundle (default: the enforced one).")
@click.option("--candidate-model", type=click.Path(path_type=Path, exists=True,
                                                   file_okay=False),
              help="Candidate fitted model (default: the enforced one).")
@click.option("--examples", type=int, default=5, show_default=True,
              help="Examples of each kind of flip to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-on", type=click.Choice(["deny-to-allow", "allow-to-deny", "any"]),
              default=None, help="Exit 1 if the candidate flips decisions this way (for CI).")
@click.pass_obj
def backtest(settings: Settings, input_path: str | None, since: str | None, until: str,
             policy_dir: Path | None, model: Path | None, candidate_policy: Path | None,
             candidate_model: Path | None, examples: int, as_json: bool,
             fail_on: str | None) -> None:
    """Replay history under the enforced and a candidate policy/model; print what flips.

    \b
    Both sides run the worker's own decision core with their own state. A
    deny->allow flip loosens a decision; gate policy changes in CI with
    `--fail-on deny-to-allow` the way code is gated by its tests.
    """
    from holdgate.stream.backtest import backtest as run_backtest
    from holdgate.stream.state import MemoryStore
    from holdgate.stream.worker import build_runner

    if candidate_policy is None and candidate_model is None:
        raise click.UsageError("give --candidate-policy and/or --candidate-model")
    enforced = settings.with_(policy_dir=str(policy_dir) if policy_dir else None,
                              model=str(model) if model else None)
    candidate = enforced.with_(
        policy_dir=str(candidate_policy) if candidate_policy else None,
        model=str(candidate_model) if candidate_model else None)
    runners = [build_runner(s, MemoryStore(), worker_id=name)
               for s, name in ((enforced, "enforced"), (candidate, "candidate"))]
    for runner in runners:
        runner.sealing = False
    records, _, source = load_history(settings, input_path, since, until)
    bar = _progress(len(records) if isinstance(records, list) else None, "backtesting")
    try:
        report = run_backtest(records, *runners, max_examples=examples,
                              on_progress=bar.update)
    finally:
        bar.close()
    if as_json:
        click.echo(orjson.dumps({"source": source, **report.to_obj()},
                                option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(f"backtest over {source}")
        for line in report.lines():
            click.echo(line)
    loosened, tightened = report.flips["deny->allow"], report.flips["allow->deny"]
    if (fail_on == "deny-to-allow" and loosened) or (fail_on == "allow-to-deny" and tightened) \
            or (fail_on == "any" and (loosened or tightened)):
        click.echo(f"failing: {fail_on} flips found", err=True)
        sys.exit(1)
