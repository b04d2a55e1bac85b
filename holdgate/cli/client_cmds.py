"""`holdgate send` and `holdgate tail`: poke the gate by hand and watch it decide."""
from __future__ import annotations

import orjson
import click

from holdgate.cli.render import verdict_line
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings

__all__ = ["send", "tail"]


def _json_obj(ctx: click.Context, param: click.Parameter, value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise click.BadParameter("must be a JSON object")
    return obj


@click.command()
@click.option("--agent", "agent_id", required=True, help="Agent id, e.g. billing-bot-1.")
@click.option("--action", required=True, help="Dotted action, e.g. payments.refund.")
@click.option("--resource", "resource_ref", required=True, metavar="TYPE:ID",
              help="Typed resource, e.g. Invoice:inv-42.")
@click.option("--attrs", callback=_json_obj, default=None, metavar="JSON",
              help="Resource attributes as a JSON object.")
@click.option("--context", callback=_json_obj, default=None, metavar="JSON",
              help='Context as a JSON object, e.g. \'{"approvals": ["alice"]}\'.')
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to hold for the verdict before denying with TIMEOUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the full verdict as JSON.")
@click.pass_obj
def send(settings: Settings, agent_id: str, action: str, resource_ref: str, attrs: dict | None,
         context: dict | None, timeout: float, as_json: bool) -> None:
    """Publish one intended action, hold for its verdict, print it; exit 1 on deny."""
    from holdgate.client import Gate

    rtype, sep, rid = resource_ref.partition(":")
    if not sep or not rid:
        raise click.BadParameter("use TYPE:ID, e.g. Invoice:inv-42", param_hint="--resource")
    with Gate(bootstrap=settings.bootstrap, agent_id=agent_id, settings=settings) as gate:
        verdict = gate.check(action=action, resource={"type": rtype, "id": rid,
                                                      "attributes": attrs or {}},
                             context=context or {}, timeout=timeout)
    if as_json:
        click.echo(orjson.dumps(verdict.to_obj(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(verdict_line(verdict))
        for reason in verdict.reasons:
            click.echo(f"  {reason.code}: {reason.message}")
    if not verdict.allowed:
        raise SystemExit(1)


@click.command()
@click.option("--from-beginning", is_flag=True, help="Replay the whole verdict log first.")
@click.option("--agent", "agents", multiple=True, help="Only these agents (repeatable).")
@click.option("--deny-only", is_flag=True, help="Show denies only.")
@click.option("--max", "limit", type=int, default=0, help="Stop after N verdicts (0: follow).")
@click.pass_obj
def tail(settings: Settings, from_beginning: bool, agents: tuple[str, ...], deny_only: bool,
         limit: int) -> None:
    """Follow the verdict log (the decision record), one readable line per decision."""
    from kafka import KafkaConsumer, TopicPartition

    from holdgate.errors import ValidationError
    from holdgate.events import decode_verdict

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             client_id="holdgate-tail", **kafka_python_options(settings))
    try:
        parts = consumer.partitions_for_topic(settings.verdicts_topic)
        if not parts:
            raise click.ClickException(f"topic {settings.verdicts_topic} does not exist yet "
                                       "(start `holdgate worker` first)")
        tps = [TopicPartition(settings.verdicts_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        shown = 0
        while not limit or shown < limit:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        v = decode_verdict(rec.value)
                    except ValidationError as exc:
                        click.secho(f"undecodable verdict at {rec.partition}/{rec.offset}: {exc}",
                                    fg="yellow")
                        continue
                    if (agents and v.agent_id not in agents) or (deny_only and v.allowed):
                        continue
                    click.echo(verdict_line(v))
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
