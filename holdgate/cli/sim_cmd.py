"""`holdgate simulate`: labelled, seeded agent traffic to a file, a bundle, or the live topic."""
from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import IO, Any

import click

from holdgate.settings import Settings

__all__ = ["simulate"]


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" actions", disable=not sys.stderr.isatty(),
                file=sys.stderr, leave=False)


def _open(stack: ExitStack, path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    return stack.enter_context(open(path, "wb"))


@click.command()
@click.option("--output", metavar="FILE",
              help="Write the actions here, JSON Lines, one ActionRequest per line as the SDK "
                   "publishes it, sorted by occurred_at ('-': stdout).")
@click.option("--labels", metavar="FILE",
              help="Write the ground truth here, one line per action: request_id, agent_id, "
                   "persona, malicious, attack.")
@click.option("--bundle", metavar="DIR",
              help="Write a policy bundle for the simulated fleet (default policies, schema "
                   "and cases; entities.json with every agent and stored resource).")
@click.option("--publish", is_flag=True,
              help="Publish to the actions topic instead of a file, paced by event time "
                   "(occurred_at becomes the wall clock at send time).")
@click.option("--speed", type=float, default=1.0, show_default=True, metavar="X",
              help="With --publish: multiplies every rate by X (divides every gap; a 40/s "
                   "job arrives at 40*X/s); 1 = real time. For demos, not for fitting.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Everything (fleet, rates, hours, targets, attack times) follows from it.")
@click.option("--agents", type=int, default=20, show_default=True,
              help="Size of the benign fleet (support, billing, coding, batch, new agents).")
@click.option("--attacks", default="all", show_default=True, metavar="LIST",
              help="Comma list of runaway_loop, sweep, exfiltration, compromised; or "
                   "'all' or 'none'.")
@click.option("--start", default="2026-01-05T00:00:00Z", show_default=True, metavar="ISO",
              help="Event time of the start of the span (a Monday by default).")
@click.option("--hours", type=float, default=72.0, show_default=True, help="Length of the span.")
@click.option("--attack-after", type=float, default=0.5, show_default=True, metavar="FRACTION",
              help="Attacks start at seeded times after this fraction of the span: fit before, "
                   "test after.")
@click.pass_obj
def simulate(settings: Settings, output: str | None, labels: str | None, bundle: str | None,
             publish: bool, speed: float, seed: int, agents: int, attacks: str, start: str,
             hours: float, attack_after: float) -> None:
    """Generate a seeded, labelled history of a simulated agent fleet.

    \b
    Benign personas: support (human-paced tickets, working hours, breaks),
    coding (repo.read bursts, staging pushes, rare approved deploys), billing
    (invoices, refunds, receipts), batch (a legitimate nightly job, ~40 reads/s
    for ~3 min), new agents appearing mid-stream. Attacks, each by an agent that
    is benign until then: runaway_loop, sweep, exfiltration, compromised.
    Rates, hours, popularity and attack times vary with --seed: fit on one
    seed, evaluate on others.

    \b
    Examples:
      holdgate simulate --output h.jsonl --labels labels.jsonl --bundle sim-bundle
      holdgate replay --input h.jsonl --policy-dir sim-bundle
      holdgate simulate --publish --speed 30 --hours 1 --start 2026-01-05T09:00:00Z
    """
    from holdgate.sim import SimConfig, Simulation, parse_attacks, parse_start, write_bundle
    from holdgate.sim.output import write_history

    if publish and output:
        raise click.UsageError("--publish sends to the broker instead of a file: drop --output")
    if not (publish or output or labels or bundle):
        raise click.UsageError("nothing to do: give --output FILE, --publish or --bundle DIR")
    if speed <= 0:
        raise click.BadParameter("must be > 0", param_hint="--speed")
    config = SimConfig(seed=seed, start=parse_start(start), hours=hours, agents=agents,
                       attacks=parse_attacks(attacks), attack_after=attack_after)
    sim = Simulation(config)
    err = sys.stderr                       # click.get_text_stream is deprecated (8.5)
    if bundle:
        write_bundle(bundle, sim.fleet)
        click.echo(f"bundle for {len(sim.fleet.agents)} agents written to {bundle}", file=err)
    with ExitStack() as stack:
        label_sink = _open(stack, labels) if labels else None
        bar = stack.enter_context(_progress(len(sim), "publishing" if publish else "writing"))
        if publish:
            from holdgate.sim.publish import KafkaSink
            from holdgate.sim.publish import publish as run_publish

            sink = KafkaSink(settings)
            stack.callback(sink.close)
            summary = run_publish(sim, sink, speed=speed, labels=label_sink,
                                  on_sent=lambda _r, _l: bar.update(1))
        elif output or labels:
            sink_out = _open(stack, output) if output else None
            summary = write_history(sim, sink_out, label_sink, on_progress=bar.update)
        else:
            return
    click.echo(summary.render(sim.fleet), file=err)
