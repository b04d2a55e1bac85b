"""`holdgate approvals` and `holdgate approve`: a human lifts a held action, signed.

An approver approves what the worker *held*, never what somebody says it
held: the pending verdict is read from the verdicts topic and its worker
signature checked (HOLDGATE_TRUSTED_KEYS) before anything is shown or signed.
The token binds that verdict's request id, agent and action digest, carries
the approver's role and name, expires after `--ttl`, and goes to the agent's
partition of the approvals topic, signed by the approver's own key.  The
worker checks it again (the role's keys are its HOLDGATE_APPROVER_KEYS).
"""
from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any, Iterator

import click

from holdgate.events import Verdict
from holdgate.keys import Signer
from holdgate.settings import Settings

__all__ = ["approve", "approvals", "held_actions", "publish_approval"]

_SINCE = click.option("--since", default="24h", show_default=True,
                      help="How far back to look for held actions (e.g. 30m, 24h, ISO time).")
_AGENT = click.option("--agent", default=None,
                      help="Only this agent (reads just its partition: much faster).")


def held_actions(settings: Settings, since: str,
                 agent: str | None) -> Iterator[tuple[Verdict, str]]:
    """Pending verdicts still open, verified, oldest first: (verdict, problem-or-'')."""
    import orjson

    from holdgate.errors import ValidationError
    from holdgate.events import decode_verdict
    from holdgate.routing import partition_for
    from holdgate.signing import verify_record
    from holdgate.stream.history import parse_when
    from holdgate.stream.logread import offset_bounds, open_consumer, partition_count, scan

    trust = settings.trust()
    consumer = open_consumer(settings, "holdgate-approvals")
    try:
        topic = settings.verdicts_topic
        n = partition_count(consumer, topic)
        parts = [partition_for(agent, n)] if agent else list(range(n))
        open_: dict[str, tuple[Verdict, str]] = {}
        for rec in scan(consumer, topic, offset_bounds(consumer, topic, parts,
                                                       parse_when(since))):
            try:
                verdict = decode_verdict(rec.value or b"")
            except (ValidationError, orjson.JSONDecodeError, TypeError, ValueError):
                continue
            if agent is not None and verdict.agent_id != agent:
                continue
            if verdict.decision == "pending":
                problem = verify_record(trust, rec.value or b"", rec.headers) or ""
                open_[verdict.request_id] = (verdict, problem)
            else:
                open_.pop(verdict.request_id, None)      # decided: nothing to approve
    finally:
        consumer.close()
    yield from sorted(open_.values(), key=lambda vp: vp[0].decided_at)


def publish_approval(settings: Settings, signer: Signer, verdict: Verdict, *, role: str,
                     approver: str, ttl: float) -> None:
    """Sign a token for the action `verdict` held and put it where its worker reads it."""
    from kafka import KafkaProducer

    from holdgate.approvals import Approval
    from holdgate.kafka_options import kafka_python_options
    from holdgate.routing import partition_for
    from holdgate.signing import sign_headers
    from holdgate.topics import ensure_topics

    token = Approval.mint(request_id=verdict.request_id, agent_id=verdict.agent_id,
                          action_digest=verdict.action_digest, role=role, approver=approver,
                          ttl=ttl)
    value = token.to_bytes()
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                             client_id="holdgate-approve", **kafka_python_options(settings))
    try:
        producer.send(settings.approvals_topic, key=verdict.agent_id.encode(), value=value,
                      partition=partition_for(verdict.agent_id, settings.partitions),
                      headers=list(sign_headers(signer, value))).get(timeout=10)
    finally:
        producer.close(timeout=5)


def _describe(v: Verdict) -> str:
    req: dict[str, Any] = dict(v.request or {})
    res = req.get("resource") or {}
    lines = [f"request   {v.request_id}", f"agent     {v.agent_id}",
             f"action    {req.get('action')} {res.get('type')}:{res.get('id')}",
             f"awaiting  {v.awaiting or '?'}",
             f"why held  {'; '.join(r.message or r.code for r in v.reasons)}",
             f"digest    {v.action_digest}"]
    if res.get("attributes"):
        lines.append(f"resource  {res['attributes']}")
    if req.get("context"):
        lines.append(f"context   {req['context']}")
    if req.get("deadline"):
        import time
        left = float(req["deadline"]) - time.time()
        lines.append("deadline  " + (f"in {left:.0f}s" if left > 0
                                     else "PASSED (approving lifts nothing)"))
    return "\n".join(lines)


@click.command()
@_SINCE
@_AGENT
@click.pass_obj
def approvals(settings: Settings, since: str, agent: str | None) -> None:
    """List actions held for an approval that no later verdict has decided."""
    count = 0
    for verdict, problem in held_actions(settings, since, agent):
        count += 1
        flag = click.style(f"  UNVERIFIED: {problem}", fg="red") if problem else ""
        req = verdict.request or {}
        res = req.get("resource") or {}
        click.echo(f"{verdict.request_id}  {verdict.agent_id:<16} {req.get('action')} "
                   f"{res.get('type')}:{res.get('id')}  awaits {verdict.awaiting}{flag}")
    click.echo(f"{count} held action(s)")


@click.command()
@click.argument("request_id")
@click.option("--role", default=None,
              help="The role you approve as [default: the one the hold awaits, if only one].")
@click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Your approver private key [env HOLDGATE_APPROVER_KEY_FILE].")
@click.option("--ttl", type=float, default=600.0, show_default=True,
              help="Seconds the approval stays usable (the action's deadline still applies).")
@click.option("--as", "approver", default=None, help="Your name, recorded [default: $USER].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_SINCE
@_AGENT
@click.pass_obj
def approve(settings: Settings, request_id: str, role: str | None, key_file: Path | None,
            ttl: float, approver: str | None, yes: bool, since: str,
            agent: str | None) -> None:
    """Approve the held action REQUEST_ID: sign a token the worker lifts the hold with.

    The action is shown first and must carry a valid worker signature
    (HOLDGATE_TRUSTED_KEYS).  The worker decides it again with
    `context.approval` = your role and name; its policies still apply.

    \b
    Example:
      holdgate approvals --since 1h
      holdgate approve 7b0c...e1 --role human --key ~/.holdgate/alice.key
    """
    from holdgate.keys import load_signer

    path = key_file or settings.approver_key_file
    if not path:
        raise click.UsageError("no approver key: --key FILE or HOLDGATE_APPROVER_KEY_FILE "
                               "(`holdgate keys generate --name alice`)")
    signer = load_signer(path)
    found = [(v, p) for v, p in held_actions(settings, since, agent) if v.request_id == request_id]
    if not found:
        raise click.ClickException(
            f"no held action {request_id} on {settings.verdicts_topic} since {since}: it was "
            "decided already, never held, or is older (--since)")
    verdict, problem = found[-1]
    if problem:
        raise click.ClickException(f"the pending verdict for {request_id} {problem}; refusing "
                                   "to approve an action the worker did not hold")
    awaited = [r for r in (verdict.awaiting or "").split(",") if r]
    role = role or (awaited[0] if len(awaited) == 1 else None)
    if role is None:
        raise click.UsageError(f"the hold awaits one of {awaited}: choose with --role")
    if role not in awaited:
        raise click.UsageError(f"the hold awaits {', '.join(awaited)}, not {role!r}")
    click.echo(_describe(verdict))
    if not yes:
        click.confirm(f"approve this action as {role}?", abort=True)
    publish_approval(settings, signer, verdict, role=role,
                     approver=approver or getpass.getuser(), ttl=ttl)
    click.secho(f"approved {request_id} as {role} (signed by {signer.key_id}, usable for "
                f"{ttl:g}s); the worker decides it again now", fg="green")
