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


@kafka.command()
@_DIR
@click.option("--port", type=int, default=9092, show_default=True, help="Client port.")
@click.option("--controller-port", type=int, default=9093, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the broker to answer a metadata request.")
def up(workdir: Path, port: int, controller_port: int, timeout: float) -> None:
    """Fetch the jars (first time only), format storage, start and wait until ready."""
    from holdgate.cli.localkafka import LocalKafka

    broker = LocalKafka(workdir=workdir, port=port, controller_port=controller_port)
    click.echo(f"starting Kafka on {broker.bootstrap} (first run downloads ~45 MB of jars)...")
    bootstrap = broker.start(timeout=timeout)
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
