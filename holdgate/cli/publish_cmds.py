"""`holdgate policy publish`, `model publish`, `promote`, `rollback`, `shadow`, `status`.

Change without fear: every change to what workers enforce is a signed record
on a compacted topic (`holdgate.artifacts`), so publishing, shadowing,
promoting and rolling back are the same small act, and the topic keeps the
history.  Each command first reads the topic whole, verified with the
operators' keys as workers do, so what it calls current is what workers see.
Exit codes: 0 done (or nothing to do), 1 refused or a problem found, 2 usage.
"""
from __future__ import annotations

import functools
import getpass
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson

from holdgate.artifacts import KINDS, Artifact, Kind, Pointer, Role
from holdgate.errors import ConfigError, HoldgateError, PolicyTestFailure
from holdgate.keys import Signer
from holdgate.settings import Settings

__all__ = ["model", "promote", "publish_policy", "rollback", "shadow", "status"]

_KEY = click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False),
                    default=None, help="Operator private key [env HOLDGATE_OPERATOR_KEY_FILE].")
_BY = click.option("--by", default=None, help="Who: recorded with the record [default: $USER].")


def _kind(default: str) -> Callable[..., Any]:
    return click.option("--kind", type=click.Choice(KINDS), default=None,
                        help=f"policy or model [default: {default}].")


_TRUSTED = click.option("--trusted-keys", metavar="PATHS", default=None, help="Worker "
                        "public keys, files or folders, comma list [env HOLDGATE_TRUSTED_KEYS].")


def _kafka(fn: Callable[..., None]) -> Callable[..., None]:
    """A broker that cannot be reached is one line and exit 1, not a traceback."""
    @functools.wraps(fn)
    def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> None:
        from kafka.errors import KafkaError

        try:
            fn(settings, *args, **kwargs)
        except KafkaError as exc:
            raise click.ClickException(f"Kafka at {settings.bootstrap}: {exc!r}") from None
    return wrapper


def _one_line(exc: BaseException) -> str:
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _signer(settings: Settings, key_file: Path | None) -> Signer:
    from holdgate.artifacts import operator_signer

    try:
        return operator_signer(settings, str(key_file) if key_file else None)
    except ConfigError as exc:
        raise click.UsageError(_one_line(exc)) from None


def _state(settings: Settings, kind: Kind) -> Any:
    """The kind's `Published` state; None when its topic does not exist yet."""
    from holdgate.stream.published import read_published

    try:
        published, read = read_published(settings, kind)
    except ConfigError:
        return None
    if read.rejected:
        click.echo(f"note: {len(read.rejected)} record(s) on {read.topic} ignored (not signed "
                   f"by an operator key, or unreadable); last: {read.rejected[-1]}", err=True)
    return published


def _send(settings: Settings, signer: Signer, topic: str,
          records: list[Artifact | Pointer]) -> None:
    from holdgate.stream.published import publish_records

    try:
        publish_records(settings, signer, topic, records)
    except HoldgateError as exc:
        raise click.ClickException(f"refused: {_one_line(exc)}") from None


def _publish(settings: Settings, kind: Kind, directory: Path, as_shadow: bool,
             key_file: Path | None, note: str, by: str | None) -> None:
    from holdgate.artifacts import check_record_size
    from holdgate.stream.published import Published, topic_of
    from holdgate.stream.versions import model_artifact, policy_artifact
    from holdgate.topics import ensure_topics

    signer = _signer(settings, key_file)
    who = by or getpass.getuser()
    make = policy_artifact if kind == "policy" else model_artifact
    try:
        artifact = make(directory, by=who, note=note)
        check_record_size(artifact.key.encode(), artifact.to_bytes())
    except PolicyTestFailure as exc:
        first = exc.failures[0]
        raise click.ClickException(
            f"refused: {len(exc.failures)} case(s) of {directory} fail (first {first.name}: "
            f"{first.detail}); see `holdgate policy test {directory}`") from None
    except HoldgateError as exc:
        raise click.ClickException(f"refused: {_one_line(exc)}") from None
    role: Role = "shadow" if as_shadow else "enforce"
    ensure_topics(settings)
    published = _state(settings, kind) or Published(kind)
    before = published.enforced if role == "enforce" else published.shadow
    try:
        records = published.plan(artifact, role, by=who, reason=note, now=time.time())
    except ValueError as exc:
        raise click.ClickException(f"refused: {exc}") from None
    if not records:
        click.echo(f"{kind} {artifact.version} is already the {role}: nothing published")
        return
    _send(settings, signer, topic_of(settings, kind), records)
    sent = f"{artifact.size / 1024:,.1f} KiB" if records[0] is artifact else "content was there"
    click.secho(f"published {kind} {artifact.version} ({sent}) to {role}, signed by "
                f"{signer.key_id}; workers swap to it between batches", fg="green")
    click.echo(f"  previous {role}: {before.version if before else '-'}; "
               "`holdgate status` shows which workers run it" +
               ("; `holdgate shadow report --from 1h` compares it" if as_shadow else ""))


def _publish_command(kind: Kind) -> click.Command:
    what = "Cedar bundle folder" if kind == "policy" else "model folder (holdgate fit)"
    cases = " and must pass all its cases (holdgate policy test)" if kind == "policy" else ""
    folder = "bundle" if kind == "policy" else "model"

    @click.command(name="publish", help=f"""Validate DIR, a {what}, and publish it to enforce.

    The {kind} is checked first as a worker would load it{cases}; anything a
    worker would refuse is refused here (exit 1). Then its files go to the
    {kind} topic under their version, with a signed pointer saying enforce (or
    shadow) that version; running workers swap to it between two batches. A
    record over 8 MiB (the topic's max.message.bytes; files are base64-encoded)
    is refused before anything is sent, naming its size and the limit: never split.

    \b
    Examples:
      holdgate {kind} publish ./{folder} --note 'CHG-1234'
      holdgate {kind} publish ./candidate --shadow     # decided beside, never enforced
      holdgate promote sha256:0123abcd4567             # then enforce the shadow
    """)
    @click.argument("directory", metavar="DIR",
                    type=click.Path(path_type=Path, exists=True, file_okay=False))
    @click.option("--shadow", "as_shadow", is_flag=True,
                  help="Run it as the shadow: recorded in every verdict, never enforced.")
    @click.option("--note", default=None, help="Why: recorded with the artifact and pointer.")
    @_BY
    @_KEY
    @click.pass_obj
    @_kafka
    def command(settings: Settings, directory: Path, as_shadow: bool, note: str | None,
                by: str | None, key_file: Path | None) -> None:
        _publish(settings, kind, directory, as_shadow, key_file, note or "", by)

    return command


publish_policy = _publish_command("policy")


@click.group()
def model() -> None:
    """Publish fitted baseline models (holdgate fit) to running workers."""


model.add_command(_publish_command("model"))


def _states(settings: Settings, kind: Kind | None) -> dict[Kind, Any]:
    """Published state of the kind (both without one); topics that do not exist are left out."""
    states = {k: _state(settings, k) for k in ([kind] if kind else KINDS)}
    return {k: p for k, p in states.items() if p is not None}


def _point(settings: Settings, signer: Signer, kind: Kind, published: Any,
           changes: list[tuple[Role, str | None]], reason: str, by: str | None) -> None:
    """Publish pointers (role, version) in order, each after the previous one."""
    from holdgate.stream.published import topic_of

    records = published.pointers(changes, by=by or getpass.getuser(), reason=reason,
                                 now=time.time())
    _send(settings, signer, topic_of(settings, kind), list(records))
    for p in records:
        click.secho(f"{kind} {p.role}: {p.previous or '-'} -> {p.version or '-'} (signed by "
                    f"{signer.key_id}); workers swap between batches", fg="green")


@click.command()
@click.argument("version")
@_kind("the topic that has VERSION")
@click.option("--reason", default=None, help="Why: recorded in the pointer.")
@_BY
@_KEY
@click.pass_obj
@_kafka
def promote(settings: Settings, version: str, kind: Kind | None, reason: str | None,
            by: str | None, key_file: Path | None) -> None:
    """Enforce a published VERSION (a policy or a model; a unique prefix will do).

    \b
    The topic holding VERSION says whether it is a policy or a model. If it
    was the shadow, the shadow is cleared too (it is now what is enforced).
    Examples:
      holdgate promote sha256:9f2c41d0a7be --reason 'shadow clean for 24h'
      holdgate promote sha256:9f2c41d0a7be --kind model
    """
    signer, states = _signer(settings, key_file), _states(settings, kind)
    found = [(k, v) for k, pub in states.items() for v in pub.contents if v == version]
    found = found or [(k, v) for k, pub in states.items() for v in pub.contents
                      if len(version) >= 12 and v.startswith(version)]
    if not found:
        raise click.ClickException(f"no published {kind or 'policy or model'} {version} "
                                   "(`holdgate status --json` lists the versions)")
    if len(found) > 1:
        raise click.ClickException(f"{version} is ambiguous: " +
                                   ", ".join(f"{k} {v}" for k, v in found))
    kind, full = found[0]
    published = states[kind]
    if published.enforced and published.enforced.version == full:
        click.echo(f"{kind} {full} is already enforced: nothing published")
        return
    changes: list[tuple[Role, str | None]] = [("enforce", full)]
    if published.shadow and published.shadow.version == full:
        changes.append(("shadow", None))
    _point(settings, signer, kind, published, changes, reason or "promote", by)


@click.command()
@_kind("whichever changed last")
@click.option("--reason", default=None, help="Why: recorded in the pointer.")
@_BY
@_KEY
@click.pass_obj
@_kafka
def rollback(settings: Settings, kind: Kind | None, reason: str | None, by: str | None,
             key_file: Path | None) -> None:
    """Enforce again the version enforced before the current one.

    \b
    Without --kind, rolls back whichever of policy and model changed last.
    Repeated rollbacks walk further back (v3 -> v2 -> v1), never forth; a
    version rolled back from can be promoted again. Refused (exit 1) when
    there is nothing before the current version.
    Examples:
      holdgate rollback --reason 'refunds denied since 10:02'
      holdgate rollback --kind model
    """
    signer = _signer(settings, key_file)
    live = {k: p for k, p in _states(settings, kind).items() if p.enforced_pointer}
    if not live:
        raise click.ClickException(f"refused: no {kind or 'policy or model'} has been "
                                   "published to enforce; nothing to roll back")
    chosen = max(live, key=lambda k: live[k].enforced_pointer.at) if kind is None else kind
    published = live[chosen]
    target = published.rollback_target()
    if target is None:
        raise click.ClickException(f"refused: {chosen} {published.enforced.version} is the "
                                   "first in its enforce history; nothing before it")
    _point(settings, signer, chosen, published, [("enforce", target)], reason or "rollback",
           by)


@click.group()
def shadow() -> None:
    """Shadow candidates: compare what they decide with what is enforced, or stop them."""


@shadow.command(name="clear")
@_kind("both")
@click.option("--reason", default=None, help="Why: recorded in the pointer.")
@_BY
@_KEY
@click.pass_obj
@_kafka
def shadow_clear(settings: Settings, kind: Kind | None, reason: str | None, by: str | None,
                 key_file: Path | None) -> None:
    """Stop the shadow policy and/or model (both without --kind).

    \b
    Workers stop deciding with it between two batches; verdicts stop carrying
    a "shadow" record. The candidate stays published (promote it later, or
    shadow it again with `holdgate policy publish DIR --shadow`).
    Examples:
      holdgate shadow clear
      holdgate shadow clear --kind model --reason 'too many allow->deny'
    """
    signer, done = _signer(settings, key_file), 0
    for k, published in _states(settings, kind).items():
        if published.shadow_pointer and published.shadow_pointer.version:
            _point(settings, signer, k, published, [("shadow", None)], reason or "clear", by)
            done += 1
    if not done:
        click.echo(f"no shadow {kind or 'policy or model'} is set: nothing published")


@shadow.command(name="report")
@click.option("--from", "since", required=True, metavar="WHEN",
              help="Start: ISO time or a duration ago (30m, 2h, 1d).")
@click.option("--to", "until", default="now", show_default=True, metavar="WHEN", help="End.")
@click.option("--examples", type=int, default=5, show_default=True,
              help="Examples of each kind of flip to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-on", type=click.Choice(["deny-to-allow", "allow-to-deny", "any"]),
              default=None, help="Exit 1 if the shadow flips decisions this way.")
@_TRUSTED
@click.pass_obj
@_kafka
def shadow_report(settings: Settings, since: str, until: str, examples: int, as_json: bool,
                  fail_on: str | None, trusted_keys: str | None) -> None:
    """Compare live verdicts with what the shadow decided for the same actions.

    \b
    Reads the verdicts stamped in [--from, --to), keeps those signed by a trusted
    worker key (others are counted, never compared) and prints the same report
    as `holdgate backtest`: allow->deny, deny->allow, per agent and action, with
    examples naming the rules and the signals that moved.
    Examples:
      holdgate shadow report --from 2h
      holdgate shadow report --from 2026-11-29T08:00:00Z --to 1h --fail-on deny-to-allow
    """
    from holdgate.stream.history import parse_when
    from holdgate.stream.shadow_report import scan_shadow

    try:
        trust = settings.with_(trusted_keys=trusted_keys).trust()
        start, end = parse_when(since), parse_when(until)
    except ConfigError as exc:
        raise click.UsageError(_one_line(exc)) from None
    if not len(trust):
        raise click.UsageError("no trusted worker keys: --trusted-keys or "
                               "HOLDGATE_TRUSTED_KEYS (only signed verdicts are compared)")
    try:
        found = scan_shadow(settings, start, end, trust=trust, max_examples=examples)
    except ConfigError as exc:
        raise click.ClickException(_one_line(exc)) from None
    if as_json:
        click.echo(orjson.dumps(found.to_obj(), option=orjson.OPT_INDENT_2).decode())
    else:
        span = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in (start, end))
        click.echo(f"shadow report over {settings.verdicts_topic} from {next(span)} to "
                   f"{next(span)}")
        for line in found.lines():
            click.echo(line)
    if found.fails(fail_on):
        click.echo(f"failing: {fail_on} flips found", err=True)
        raise SystemExit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@_TRUSTED
@click.pass_obj
@_kafka
def status(settings: Settings, as_json: bool, trusted_keys: str | None) -> None:
    """What is published to enforce and shadow, and what each worker says it runs.

    \b
    Pointers are read from the policies and models topics (verified with
    HOLDGATE_OPERATOR_KEYS), worker statuses from the status topic (verified
    with the worker keys, HOLDGATE_TRUSTED_KEYS). Flagged: a worker silent for
    more than 30 s (stale), not ready, reporting problems, or running other
    versions than the published ones; and records nobody trusted signed.
    Exits 1 when anything is flagged.
    Examples:
      holdgate status
      holdgate status --json | jq '.workers[] | select(.flags != [])'
    """
    from holdgate.stream.published import read_overview

    try:
        trust = settings.with_(trusted_keys=trusted_keys).trust()
        if not len(settings.operators()):
            raise ConfigError("HOLDGATE_OPERATOR_KEYS is not set: published pointers cannot "
                              "be verified")
    except ConfigError as exc:
        raise click.UsageError(_one_line(exc)) from None
    overview = read_overview(settings, trust)
    if as_json:
        click.echo(orjson.dumps(overview.to_obj(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in overview.lines():
            click.secho(line, fg="red" if line.lstrip().startswith("!") else None)
        click.secho("ok" if not overview.flags else f"{len(overview.flags)} thing(s) to check",
                    fg="red" if overview.flags else "green")
    if overview.flags:
        raise SystemExit(1)
