"""`holdgate demo`: a small simulated fleet against the running worker.

Before anything it tells "Kafka is down" (exit 3 within --connect-timeout)
from "Kafka is up but no worker answers" (exit 3 after --wait, saying what
the gate waited for).  The probe that finds the worker runs as its own agent,
and the phases' clocks start once the worker answered: waiting for a worker
to join is no part of how fast the gate cuts off a runaway loop.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import click

from holdgate.cli.preflight import EXIT_CODES_HELP, Unavailable, require_kafka
from holdgate.cli.render import verdict_line
from holdgate.settings import Settings

if TYPE_CHECKING:
    from holdgate.client import Gate

__all__ = ["demo"]


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              help="Seconds each action holds for its verdict.")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=90.0,
              help="Seconds to wait for a worker's first verdict (it may still be joining).")
@click.option("--skip-tour", is_flag=True, help="Skip the policy walk-through.")
@click.option("--skip-burst", is_flag=True, help="Skip the machine-speed phase.")
@click.option("--verbose", is_flag=True, help="In the burst phase, print every verdict.")
@click.pass_obj
def demo(settings: Settings, timeout: float, wait: float, skip_tour: bool, skip_burst: bool,
         verbose: bool) -> None:
    """Run a simulated fleet against `holdgate worker` and summarise what the gate did.

    Needs a running worker on the same bootstrap and topics (./dev demo starts
    both). Exits 3 if Kafka cannot be reached or no worker answers.
    """
    from holdgate.cli.fleet import FleetReport, run_machine_speed, run_policy_tour
    from holdgate.client import Gate

    require_kafka(settings)
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
        _wait_for_worker(settings, gate, wait)
        tour, burst = FleetReport(), FleetReport()     # clocks start once the worker answers
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


def _wait_for_worker(settings: Settings, gate: Gate, wait: float) -> None:
    """Return once a worker-made verdict came back; else exit 3 saying what was missing."""
    from holdgate.cli.fleet import probe_gate
    from holdgate.client.verify import LOCAL_POLICY_VERSION

    click.echo(f"waiting for the holdgate worker on {settings.bootstrap} "
               f"(up to {wait:g}s) ...")
    last = probe_gate(gate, wait)
    if last is not None and last.policy_version != LOCAL_POLICY_VERSION:
        return
    why = "; ".join(f"{r.code}: {r.message}" for r in last.reasons) if last else "no probe ran"
    raise Unavailable(f"Kafka at {settings.bootstrap} answers, but no holdgate worker decided "
                      f"a probe action within {wait:g}s ({why[:160]}) — start `holdgate worker` "
                      f"with the same HOLDGATE_* settings (topics {settings.actions_topic} -> "
                      f"{settings.verdicts_topic}), or see its log")


def _approval_scene(settings: Settings, gate: Gate, timeout: float) -> None:
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
