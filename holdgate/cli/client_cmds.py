"""`holdgate send` and `holdgate tail`: poke the gate by hand and watch it decide.

Both check first that Kafka answers (`holdgate.cli.preflight`): with the broker
down they say so in one line within ``--connect-timeout`` instead of a client
traceback half a minute later.
"""
from __future__ import annotations

from typing import Any

import click
import orjson

from holdgate.cli.preflight import EXIT_DENIED, EXIT_UNAVAILABLE, connect_timeout, require_kafka
from holdgate.cli.render import verdict_line
from holdgate.events import Verdict
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings

__all__ = ["TAIL_CONSUMER_OPTIONS", "send", "send_exit_code", "tail"]

#: kafka-python settings for `tail`.  Its defaults back off reconnecting up to 30 s and
#: refresh metadata every 5 minutes, so after a broker restart tail stayed silent for
#: 30-40 s; a human watching the log wants it back within a second or two.
TAIL_CONSUMER_OPTIONS: dict[str, Any] = {
    "reconnect_backoff_ms": 100,
    "reconnect_backoff_max_ms": 1000,
    "retry_backoff_ms": 100,
    "metadata_max_age_ms": 5000,
    "request_timeout_ms": 5000,
    "fetch_max_wait_ms": 500,
    # asking for a missing topic's partitions must not create it (with the broker's
    # default partition count, which would break actions/verdicts co-partitioning)
    "allow_auto_create_topics": False,
}


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


def send_exit_code(verdict: Verdict) -> int:
    """0 allowed; 1 a worker denied or held it; 3 no worker verdict (a local deny)."""
    from holdgate.client.verify import LOCAL_POLICY_VERSION

    if verdict.allowed:
        return 0
    return EXIT_UNAVAILABLE if verdict.policy_version == LOCAL_POLICY_VERSION else EXIT_DENIED


@click.command(epilog="Exit codes: 0 allowed; 1 denied or held by the gate (a worker verdict); "
                      "2 usage or configuration error; 3 no verdict: Kafka unreachable, or a "
                      "local UNAVAILABLE / TIMEOUT / INVALID_VERDICT deny (no worker "
                      "answered in time, or its verdict did not verify).")
@click.option("--agent", "agent_id", required=True, help="Agent id, e.g. billing-bot-1.")
@click.option("--action", required=True, help="Dotted action, e.g. payments.refund.")
@click.option("--resource", "resource_ref", required=True, metavar="TYPE:ID",
              help="Typed resource, e.g. Invoice:inv-42.")
@click.option("--attrs", callback=_json_obj, default=None, metavar="JSON",
              help="Resource attributes as a JSON object.")
@click.option("--context", callback=_json_obj, default=None, metavar="JSON",
              help='Context as a JSON object, e.g. \'{"approvals": ["alice"]}\'.')
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              help="Seconds to hold for the verdict before denying with TIMEOUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the full verdict as JSON.")
@click.pass_obj
def send(settings: Settings, agent_id: str, action: str, resource_ref: str, attrs: dict | None,
         context: dict | None, timeout: float, as_json: bool) -> None:
    """Publish one intended action, hold for its verdict, print it.

    Exits 0 on allow, 1 on a deny or hold by the gate, 3 when no worker verdict
    came (Kafka down, no worker, or a verdict that failed verification).
    """
    from holdgate.client import Gate

    rtype, sep, rid = resource_ref.partition(":")
    if not sep or not rid:
        raise click.BadParameter("use TYPE:ID, e.g. Invoice:inv-42", param_hint="--resource")
    require_kafka(settings)
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
    code = send_exit_code(verdict)
    if code == EXIT_UNAVAILABLE:
        click.secho(f"error: no verdict from the gate ({', '.join(verdict.codes)}): is "
                    f"`holdgate worker` running on {settings.bootstrap} with the same topics "
                    "and trusted keys?", fg="red", err=True)
    if code:
        raise SystemExit(code)


@click.command(epilog="Exit codes: 0 done (--max reached, or Ctrl-C); 1 no verdict topic yet; "
                      "2 usage or configuration error; 3 Kafka unreachable.")
@click.option("--from-beginning", is_flag=True, help="Replay the whole verdict log first.")
@click.option("--agent", "agents", multiple=True, help="Only these agents (repeatable).")
@click.option("--deny-only", is_flag=True, help="Show denies only.")
@click.option("--max", "limit", type=click.IntRange(min=0), default=0,
              help="Stop after N verdicts (0: follow until Ctrl-C).")
@click.pass_obj
def tail(settings: Settings, from_beginning: bool, agents: tuple[str, ...], deny_only: bool,
         limit: int) -> None:
    """Follow the verdict log (the decision record), one readable line per decision.

    Reads committed verdicts only (those of an aborted worker transaction were
    never decided), and keeps following across a broker restart.
    """
    from kafka import KafkaConsumer, TopicPartition

    require_kafka(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             client_id="holdgate-tail", isolation_level="read_committed",
                             bootstrap_timeout_ms=int(connect_timeout() * 1000),
                             **TAIL_CONSUMER_OPTIONS, **kafka_python_options(settings))
    try:
        parts = consumer.partitions_for_topic(settings.verdicts_topic)
        if not parts:
            raise click.ClickException(f"topic {settings.verdicts_topic} does not exist yet "
                                       "(start `holdgate worker` first)")
        tps = [TopicPartition(settings.verdicts_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        _follow(consumer, agents, deny_only, limit)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _follow(consumer: Any, agents: tuple[str, ...], deny_only: bool, limit: int) -> None:
    """Print matching verdicts until `limit` of them were shown (0: forever)."""
    from holdgate.errors import ValidationError
    from holdgate.events import decode_verdict

    shown = 0
    while True:
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
                if shown == limit:      # checked per record: a poll batch holds hundreds
                    return
