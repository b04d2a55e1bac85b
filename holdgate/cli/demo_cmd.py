"""`holdgate demo`: a small simulated fleet against the running worker."""
from __future__ import annotations

import threading
import time

import click

from holdgate.cli.render import verdict_line
from holdgate.settings import Settings

__all__ = ["demo"]


@click.command()
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds each action holds for its verdict.")
@click.option("--skip-tour", is_flag=True, help="Skip the policy walk-through.")
@click.option("--skip-burst", is_flag=True, help="Skip the machine-speed phase.")
@click.option("--verbose", is_flag=True, help="In the burst phase, print every verdict.")
@click.pass_obj
def demo(settings: Settings, timeout: float, skip_tour: bool, skip_burst: bool,
         verbose: bool) -> None:
    """Run a simulated fleet against `holdgate worker` and summarise what the gate did.

    Needs a running worker on the same bootstrap and topics (./dev demo starts
    both). Exits 1 if the gate never answers.
    """
    from holdgate.client import Gate
    from holdgate.cli.fleet import FleetReport, run_machine_speed, run_policy_tour, wait_for_gate

    tour, burst = FleetReport(), FleetReport()
    lock = threading.Lock()
    burst_shown: set[str] = set()

    def show_tour(step, verdict) -> None:  # type: ignore[no-untyped-def]
        click.echo(verdict_line(verdict))
        click.secho(f"           ↳ {step.note}: " + "; ".join(
            r.message for r in verdict.reasons if r.message)[:110], dim=True)

    def show_burst(step, verdict) -> None:  # type: ignore[no-untyped-def]
        # The report already holds each agent's verdicts (one thread per agent), with
        # the time each came since the burst began.
        with lock:
            seen = burst.verdicts[step.agent]
            n, ms = len(seen), seen[-1][0] * 1000
            if verbose:
                click.echo(verdict_line(verdict))
                return
            if verdict.allowed and step.note == "human pace":
                click.echo(verdict_line(verdict))
            elif not verdict.allowed and step.agent not in burst_shown:
                burst_shown.add(step.agent)
                click.echo(verdict_line(verdict))
                click.secho(f"           ↳ {step.note}: cut off at action #{n}, "
                            f"{ms:.0f} ms into the burst; every later attempt is denied too",
                            fg="yellow")

    with Gate(bootstrap=settings.bootstrap, agent_id="support-bot-1", settings=settings) as gate:
        click.echo(f"waiting for the holdgate worker on {settings.bootstrap} ...")
        if not wait_for_gate(gate):
            raise click.ClickException("no verdict from the gate: is `holdgate worker` running?")
        if not skip_tour:
            click.secho("\n── phase 1: policy-as-code (Cedar) ─────────────────────────────",
                        bold=True)
            run_policy_tour(gate, tour, show_tour, timeout=timeout)
            _summary("policy tour", tour)
            if settings.approver_key_file:
                _approval_scene(settings, gate, timeout)
        if not skip_burst:
            click.secho("\n── phase 2: machine speed (runaway loop, record sweep) ─────────",
                        bold=True)
            burst.started = time.monotonic()
            run_machine_speed(gate, burst, show_burst, timeout=timeout)
            _summary("machine speed", burst)


def _approval_scene(settings: Settings, gate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """A held refund, found and signed by a human approver, lifted by the worker."""
    from holdgate.cli.approval_cmds import held_actions, publish_approval
    from holdgate.cli.fleet import APPROVAL_STEP, run_approval
    from holdgate.keys import load_signer

    click.secho("\n── a human approves a held action ──────────────────────────────", bold=True)
    signer = load_signer(settings.approver_key_file)

    def approve(since: float):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [v for v, problem in held_actions(settings, "10m", APPROVAL_STEP.agent)
                     if not problem and v.decided_at >= since - 1.0]
            if found:
                click.echo(verdict_line(found[-1]))
                click.secho("           ↳ the agent holds; `holdgate approve` as a human "
                            f"(key {signer.key_id}) ...", dim=True)
                publish_approval(settings, signer, found[-1], role="human",
                                 approver="demo-approver", ttl=60.0)
                return found[-1]
            time.sleep(0.2)
        return None

    held, final = run_approval(gate, approve, timeout=timeout)
    click.echo(verdict_line(final))
    if held is None:
        click.secho("           ↳ the hold was not found in time: the agent got a deny", fg="red")
    else:
        click.secho(f"           ↳ {APPROVAL_STEP.note}: the worker decided it again with "
                    "context.approval and signed the final verdict", dim=True)


def _summary(title: str, report) -> None:  # type: ignore[no-untyped-def]
    click.secho(f"\n── summary: {title} " + "─" * (50 - len(title)), bold=True)
    click.echo(f"{'agent':<16} {'allow':>6} {'deny':>6}  {'first deny':<16} top deny codes")
    for agent, allowed, denied, cut, codes in report.rows():
        click.echo(f"{agent:<16} {allowed:>6} {denied:>6}  {cut:<16} {codes}")
    p50, p99 = report.latency_ms()
    click.echo(f"\nhold latency (publish → verified verdict): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
               f"over {len(report.latencies)} actions")
