"""`holdgate revoke|suspend|controls`: the kill switch, from one command."""
from __future__ import annotations

import getpass
import time
from pathlib import Path

import click

from holdgate.kafka_options import aiokafka_options, kafka_python_options
from holdgate.settings import Settings

__all__ = ["revoke", "suspend", "controls"]

_KEY = click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False),
                    default=None, help="Operator private key [env HOLDGATE_OPERATOR_KEY_FILE].")
_REASON = click.option("--reason", default="", help="Why: recorded in every denied verdict.")
_UNDO = click.option("--undo", is_flag=True, help="Lift it again (a newer record, same target).")
_BY = click.option("--by", default=None, help="Who: recorded with the control [default: $USER].")


def _publish(settings: Settings, key_file: Path | None, control: object) -> None:
    from kafka import KafkaProducer

    from holdgate.controls import Control
    from holdgate.keys import load_signer
    from holdgate.signing import sign_headers
    from holdgate.topics import ensure_topics

    assert isinstance(control, Control)
    path = key_file or settings.operator_key_file
    if not path:
        raise click.UsageError("no operator key: --key FILE or HOLDGATE_OPERATOR_KEY_FILE "
                               "(`holdgate keys generate --name operator`); workers ignore "
                               "unsigned controls")
    signer = load_signer(path)
    ensure_topics(settings)
    value = control.to_bytes()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                             client_id="holdgate-control", **kafka_python_options(settings))
    try:
        producer.send(settings.control_topic, key=control.key.encode(), value=value,
                      headers=list(sign_headers(signer, value))).get(timeout=10)
    finally:
        producer.close(timeout=5)
    state = "lifted" if not control.active else "in force"
    click.secho(f"{control.kind} {state}: {control.key} (signed by {signer.key_id}); "
                "workers apply it within a second", fg="yellow" if control.active else "green")


@click.command()
@click.argument("agent")
@_UNDO
@_REASON
@_BY
@_KEY
@click.pass_obj
def revoke(settings: Settings, agent: str, undo: bool, reason: str, by: str | None,
           key_file: Path | None) -> None:
    """Stop AGENT: every action it attempts is denied REVOKED, before any policy runs.

    Survives worker restarts and rebalances (a compacted, signed control topic).
    `--undo` restores it.
    """
    from holdgate.controls import Control

    _publish(settings, key_file, Control(kind="revoke", agent=agent, active=not undo,
                                         reason=reason, by=by or getpass.getuser(),
                                         at=time.time()))


@click.command()
@click.option("--action", default=None, metavar="GLOB", help="Actions to stop, e.g. 'payments.*'.")
@click.option("--agent", default=None, help="Only this agent.")
@click.option("--role", default=None, help="Only agents of this role (from the entity store).")
@_UNDO
@_REASON
@_BY
@_KEY
@click.pass_obj
def suspend(settings: Settings, action: str | None, agent: str | None, role: str | None,
            undo: bool, reason: str, by: str | None, key_file: Path | None) -> None:
    """Pause actions, agents or roles: matching actions are denied SUSPENDED.

    \b
    Examples:
      holdgate suspend --action 'payments.*' --reason 'refund fraud wave'
      holdgate suspend --role billing
      holdgate suspend --action 'payments.*' --undo
    """
    from holdgate.controls import Control

    if not (action or agent or role):
        raise click.UsageError("name what to suspend: --action, --agent and/or --role")
    _publish(settings, key_file, Control(kind="suspend", agent=agent, role=role, action=action,
                                         active=not undo, reason=reason,
                                         by=by or getpass.getuser(), at=time.time()))


@click.command()
@click.pass_obj
def controls(settings: Settings) -> None:
    """List the controls in force, as a worker trusting HOLDGATE_OPERATOR_KEYS sees them."""
    import asyncio
    import contextlib

    from holdgate.controls import Control
    from holdgate.stream.signed_table import SignedTable

    table: SignedTable[Control] = SignedTable(settings.bootstrap, settings.control_topic,
                                              settings.operators(), Control.from_bytes,
                                              client_options=aiokafka_options(settings))

    async def read() -> None:
        task = asyncio.ensure_future(table.run(lambda: None))
        try:
            await asyncio.wait_for(table.caught_up.wait(), 30.0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    asyncio.run(read())
    active = [c for c in table.values.values() if c.active]
    for c in sorted(active, key=lambda c: c.key):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.at)) if c.at else "?"
        click.echo(f"{c.kind:<8} {c.key:<60} by {c.by or '?'} at {when}  {c.reason}")
    click.echo(f"{len(active)} in force; {table.rejected.count} record(s) ignored "
               "(unsigned or not by a trusted operator key)"
               + (f", last: {table.rejected.last}" if table.rejected.count else ""))
