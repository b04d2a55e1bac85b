"""`holdgate` command line: thin commands over the library.

Global options override `HOLDGATE_*` environment variables, which override
defaults; every subcommand reads the one `Settings` object built here.
"""
from __future__ import annotations

import sys

import click

from holdgate.errors import HoldgateError
from holdgate.settings import Settings

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--bootstrap", envvar="HOLDGATE_BOOTSTRAP", default=None,
              help="Kafka bootstrap servers [env HOLDGATE_BOOTSTRAP; default 127.0.0.1:9092].")
@click.option("--partitions", type=int, default=None,
              help="Partitions of the actions and verdicts topics (must match).")
@click.version_option(package_name="holdgate")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, partitions: int | None) -> None:
    """holdgate: decide every AI-agent action before it runs.

    \b
    Typical session:
      holdgate kafka up            # local single-node Kafka 4.x (KRaft) on 127.0.0.1
      holdgate worker              # the gate: actions in, signed verdicts out
      holdgate demo                # a simulated fleet against the running worker
      holdgate tail                # follow verdicts as they are decided
    """
    ctx.obj = Settings.from_env(bootstrap=bootstrap, partitions=partitions)


def _register() -> None:
    from holdgate.cli import (analyst_cmds, client_cmds, control_cmds, demo_cmd, history_cmds,
                              kafka_cmds, keys_cmd, policy_cmds, worker_cmd)
    from holdgate.cli import audit_cmds, sim_cmd

    cli.add_command(kafka_cmds.kafka)
    cli.add_command(keys_cmd.keys)
    cli.add_command(control_cmds.revoke)
    cli.add_command(control_cmds.suspend)
    cli.add_command(control_cmds.controls)
    from holdgate.cli import approval_cmds
    cli.add_command(approval_cmds.approvals)
    cli.add_command(approval_cmds.approve)
    cli.add_command(policy_cmds.policy)
    cli.add_command(worker_cmd.worker)
    cli.add_command(client_cmds.send)
    cli.add_command(client_cmds.tail)
    cli.add_command(demo_cmd.demo)
    cli.add_command(history_cmds.replay)
    cli.add_command(history_cmds.export)
    cli.add_command(sim_cmd.simulate)
    cli.add_command(analyst_cmds.fit)
    cli.add_command(analyst_cmds.backtest)
    cli.add_command(audit_cmds.explain)
    cli.add_command(audit_cmds.audit)
    from holdgate.cli.executor_cmd import executor
    cli.add_command(executor)


_register()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HoldgateError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
