"""`holdgate kafka up|down|status`: the project's own local broker, for demo and development."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["kafka"]

_DIR = click.option("--dir", "workdir", type=click.Path(path_type=Path),
                    default=Path(".holdgate/kafka"), show_default=True,
                    help="Where the broker keeps its config, data and log.")


@click.group()
def kafka() -> None:
    """Run a single-node Kafka 4.x (KRaft) on 127.0.0.1 from Maven Central jars."""


_PORT = click.IntRange(1, 65535)


@kafka.command()
@_DIR
@click.option("--port", type=_PORT, default=9092, show_default=True, show_envvar=True,
              envvar="HOLDGATE_KAFKA_PORT", help="Client port.")
@click.option("--controller-port", type=_PORT, default=9093, show_default=True,
              show_envvar=True, envvar="HOLDGATE_KAFKA_CONTROLLER_PORT",
              help="KRaft controller port.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True,
              help="Seconds to wait for the broker to answer a metadata request.")
def up(workdir: Path, port: int, controller_port: int, timeout: float) -> None:
    """Fetch the jars (first time only), format storage, start and wait until ready.

    Refuses a port another process listens on, saying which (exit 2); connections
    a stopped broker left behind (TIME_WAIT) do not count.
    """
    from holdgate.cli.localkafka import LocalKafka

    broker = LocalKafka(workdir=workdir, port=port, controller_port=controller_port)
    if broker.pid() is not None:
        click.echo(f"Kafka already running on {broker.bootstrap} (pid {broker.pid()})")
    else:
        click.echo(f"starting Kafka on {broker.bootstrap} ...")
    bootstrap = broker.start(timeout=timeout, announce=click.echo)
    click.secho(f"Kafka ready on {bootstrap}  (log: {broker.log_file})", fg="green")


@kafka.command()
@_DIR
def down(workdir: Path) -> None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL if it hangs)."""
    from holdgate.cli.localkafka import LocalKafka

    stopped = LocalKafka(workdir=workdir).stop()
    click.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka.command()
@_DIR
def status(workdir: Path) -> None:
    """Say whether the broker runs and answers; exit 1 if not."""
    from holdgate.cli.localkafka import LocalKafka

    info = LocalKafka(workdir=workdir).status()
    for key, value in info.items():
        click.echo(f"{key:>9}: {value}")
    if not info["ready"]:
        raise SystemExit(1)
