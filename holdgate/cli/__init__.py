"""`holdgate` command line: thin commands over the library.

Global options override `HOLDGATE_*` environment variables, which override
defaults; every subcommand reads the one `Settings` object built here.  The
global options are accepted after the subcommand too (``holdgate tail
--bootstrap X`` as well as ``holdgate --bootstrap X tail``): people type them
where they think of them, and a flag silently refused there was a trap.

Exit codes are in `holdgate.cli.preflight` (0 ok, 1 denied, 2 usage or
configuration, 3 unavailable, 130 interrupted).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from holdgate.cli.preflight import (
    CONNECT_TIMEOUT_KEY,
    DEFAULT_CONNECT_TIMEOUT,
    EXIT_CODES_HELP,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from holdgate.errors import HoldgateError
from holdgate.settings import Settings

__all__ = ["cli", "global_options", "main"]

#: Commands that never talk to the gate's Kafka: they keep only their own options.
_LOCAL_GROUPS = ("kafka", "keys")


def _options(*, late: bool) -> list[click.Option]:
    """--bootstrap, --partitions, --connect-timeout: on the group, or (late) on a subcommand.

    The late copies change the settings only when given on the command line:
    their environment value or default is already in the group's settings, and
    must not override a flag given before the subcommand.
    """
    def apply(field: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
        def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
            if ctx.get_parameter_source(param.name or "") is not ParameterSource.COMMANDLINE:
                return value
            if field == "connect_timeout":
                ctx.meta[CONNECT_TIMEOUT_KEY] = value
            elif isinstance(ctx.obj, Settings):
                ctx.obj = ctx.obj.with_(**{field: value})
            return value
        return callback

    def opt(decl: str, field: str, **kw: Any) -> click.Option:
        extra: dict[str, Any] = {"expose_value": False, "callback": apply(field)} if late else {}
        return click.Option([decl], envvar=f"HOLDGATE_{field.upper()}", show_envvar=True,
                            show_default=True, **kw, **extra)

    return [
        opt("--bootstrap", "bootstrap", metavar="HOST:PORT[,..]", default=Settings.bootstrap,
            help="Kafka bootstrap servers."),
        opt("--partitions", "partitions", type=click.IntRange(min=1),
            default=Settings.partitions,
            help="Partitions of the actions and verdicts topics (must match)."),
        opt("--connect-timeout", "connect_timeout", type=click.FloatRange(min=0.1),
            default=DEFAULT_CONNECT_TIMEOUT, metavar="SECONDS",
            help="How long to try reaching Kafka before saying it is down."),
    ]


def global_options(command: click.Command) -> click.Command:
    """Add the global options (late copies) to `command`, skipping any name it has."""
    taken = {o for p in command.params for o in getattr(p, "opts", ())}
    for option in _options(late=True):
        if not taken.intersection(option.opts):
            option.name = f"hg_late_{option.name}"     # never clashes with the command's own
            command.params.append(option)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "show_default": True},
             epilog=EXIT_CODES_HELP)
@click.version_option(package_name="holdgate")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str, partitions: int,
        connect_timeout: float) -> None:
    """holdgate: decide every AI-agent action before it runs.

    \b
    Typical session:
      holdgate kafka up            # local single-node Kafka 4.x (KRaft) on 127.0.0.1
      holdgate worker              # the gate: actions in, signed verdicts out
      holdgate demo                # a simulated fleet against the running worker
      holdgate tail                # follow verdicts as they are decided
    """
    ctx.meta[CONNECT_TIMEOUT_KEY] = connect_timeout
    ctx.obj = Settings.from_env(bootstrap=bootstrap, partitions=partitions)


cli.params[:0] = _options(late=False)


def _walk(command: click.Command, top: str) -> None:
    """Give every subcommand the late global options and show each option's env var."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar:
            param.show_envvar = True
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _walk(sub, top or name)
    elif top and top not in _LOCAL_GROUPS:
        global_options(command)


def _register() -> None:
    from holdgate.cli import (
        analyst_cmds,
        audit_cmds,
        client_cmds,
        control_cmds,
        demo_cmd,
        history_cmds,
        kafka_cmds,
        keys_cmd,
        policy_cmds,
        sim_cmd,
        worker_cmd,
    )

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
    from holdgate.cli import publish_cmds
    policy_cmds.policy.add_command(publish_cmds.publish_policy, "publish")
    cli.add_command(publish_cmds.model)
    cli.add_command(publish_cmds.promote)
    cli.add_command(publish_cmds.rollback)
    cli.add_command(publish_cmds.shadow)
    cli.add_command(publish_cmds.status)
    _walk(cli, "")


_register()


def _is_kafka_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("kafka", "aiokafka")


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
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        # A Kafka client error a command did not handle (the broker went away mid-way):
        # one line, not a traceback of the client's internals.  Anything else is a bug
        # and keeps its traceback.
        if not _is_kafka_error(exc):
            raise
        click.secho(f"error: Kafka: {type(exc).__name__}: {exc}", fg="red", err=True)
        sys.exit(EXIT_UNAVAILABLE)
