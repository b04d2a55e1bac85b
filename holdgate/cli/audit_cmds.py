"""`holdgate explain` and `holdgate audit export|verify`: the decision log, examined.

Thin commands over `holdgate.stream.explain`, `holdgate.stream.audit` and
`holdgate.stream.audit_verify`; the formats and what they prove are documented
there.  Progress bars appear only on a terminal.
"""
from __future__ import annotations

import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import click
import orjson

from holdgate.settings import Settings

__all__ = ["explain", "audit"]

_TRUSTED = click.option("--trusted-keys", metavar="PATHS",
                        help="Public key files or folders, comma separated "
                             "[env HOLDGATE_TRUSTED_KEYS].")


def _progress(desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=None, desc=desc, unit=" records", disable=not sys.stderr.isatty(),
                file=sys.stderr, leave=False)


def _trust(settings: Settings, trusted_keys: str | None) -> Any:
    return settings.with_(trusted_keys=trusted_keys).trust()


def _utc(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@click.command()
@click.argument("request_id")
@click.option("--from", "since", metavar="WHEN",
              help="Look from this time on (ISO time or a duration ago: 30m, 2h, 1d) "
                   "[default: the topics' first retained records].")
@click.option("--agent", metavar="AGENT",
              help="The agent that sent it: only its partition is read (much faster).")
@click.option("--policy-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Bundle to re-evaluate under [env HOLDGATE_POLICY_DIR; default: built-in].")
@click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Fitted baseline model to re-evaluate under [env HOLDGATE_MODEL].")
@_TRUSTED
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.pass_obj
def explain(settings: Settings, request_id: str, since: str | None, agent: str | None,
            policy_dir: Path | None, model: Path | None, trusted_keys: str | None,
            as_json: bool) -> None:
    """Show why REQUEST_ID was decided as it was, and decide it again to check.

    \b
    Shows the recorded verdict (decision, reasons with the text of the
    determining policies, signals, versions, signature status), then replays
    the agent's partition up to the action through the decision core under
    the local bundle and model, decided at the recorded times, and says
    whether the recorded decision is reproduced. When the local versions differ
    from the ones the verdict names, the decision cannot be confirmed: the
    local answer is shown anyway.

    \b
    --json fields: request_id agent_id decision reasons signals policy_version
    model_version seq decided_at request verdict_at action_at signature{status,
    key_id,detail} policies[{id,line,effect,text}] local{policy_version,
    model_version,policy_version_matches,model_version_matches} replayed
    history outcome reproduced notes.  outcome is one of reproduced, warm-up,
    mismatch, unconfirmed, not-replayed.

    Exits 0 when the decision is reproduced and its signature verifies, 1 otherwise.
    """
    from holdgate.stream.explain import explain as run_explain
    from holdgate.stream.history import parse_when

    settings = settings.with_(policy_dir=str(policy_dir) if policy_dir else None,
                              model=str(model) if model else None)
    bar = _progress("searching verdicts")
    try:
        found = run_explain(settings, request_id, trust=_trust(settings, trusted_keys),
                            since=parse_when(since) if since else None, agent=agent,
                            progress=bar)
    finally:
        bar.close()
    if found is None:
        where = f"partition of {agent}" if agent else "any partition"
        click.echo(f"no verdict for request {request_id} on {settings.verdicts_topic} "
                   f"({where}{', since ' + since if since else ''})", err=True)
        raise SystemExit(1)
    if as_json:
        click.echo(orjson.dumps(found.to_obj(), option=orjson.OPT_INDENT_2).decode())
    else:
        _render(found.to_obj())
    if not found.reproduced or found.signature["status"] != "valid":
        raise SystemExit(1)


def _render(e: dict[str, Any]) -> None:
    out = click.echo
    at = e["verdict_at"]
    out(f"request   {e['request_id']}  agent {e['agent_id']}")
    out(f"verdict   {at['topic']} partition {at['partition']} offset {at['offset']}"
        f"{' seq ' + str(e['seq']) if e['seq'] is not None else ''}, decided "
        f"{_utc(e['decided_at'])}")
    sig = e["signature"]
    out(f"signature {click.style(sig['status'].upper(), fg='green' if sig['status'] == 'valid' else 'red')}: {sig['detail']}")  # noqa: E501
    allowed = e["decision"] == "allow"
    out("decision  " + click.style(str(e["decision"]).upper(), fg="green" if allowed else "red",
                                   bold=True))
    for r in e["reasons"]:
        cited = f" (policy {r['policy_id']})" if r.get("policy_id") else ""
        out(f"  {r.get('code')}{cited}: {r.get('message')}")
    signals = " ".join(f"{k}={v}" for k, v in sorted(e["signals"].items())) or "none"
    out(f"signals   {signals}")
    local = e["local"]
    out(f"versions  policy {e['policy_version']}, model {e['model_version']}")
    for p in e["policies"]:
        if p["text"] is None:
            out(f"policy {p['id']}: not in the local bundle")
            continue
        same = "" if local["policy_version_matches"] else \
            f" -- local bundle {local['policy_version']}, NOT the verdict's version"
        out(f"policy {p['id']} (policy.cedar line {p['line']}, {p['effect']}){same}:")
        out(textwrap.indent(p["text"], "    "))
    out("re-evaluation")
    h = e["history"]
    if h:
        out(f"  replayed {h['actions']} actions of partition {h['partition']} "
            f"({h['same']} as recorded, {h['warmup']} warm-up, {h['mismatches']} mismatches)")
    r = e["replayed"]
    if r is not None:
        recorded, replayed = e["signals"], r["signals"]
        changed = " ".join(f"{k}={recorded.get(k)}->{replayed.get(k)}"
                           for k in sorted(set(recorded) | set(replayed))
                           if recorded.get(k) != replayed.get(k))
        out(f"  local decision {str(r['decision']).upper()} {[x['code'] for x in r['reasons']]}"
            f", signals {'as recorded' if not changed else 'differ: ' + changed}")
    color = "green" if e["reproduced"] else "red"
    word = {"reproduced": "REPRODUCED: the recorded decision follows from the history "
            "under the same versions"}.get(e["outcome"], e["outcome"].upper())
    out("  " + click.style(word, fg=color, bold=True))
    for note in e["notes"]:
        out(f"  {note}")


@click.group()
def audit() -> None:
    """Export the decision log with its signatures, and verify an export offline."""


@audit.command("export")
@click.option("--from", "since", required=True, metavar="WHEN",
              help="Start: ISO time or a duration ago (30m, 2h, 1d).")
@click.option("--to", "until", default="now", show_default=True, metavar="WHEN", help="End.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Audit file to write ('-': stdout).")
@click.option("--lookback", default="1h", show_default=True, metavar="DURATION",
              help="How far before --from to look for the actions of the range's verdicts.")
@click.pass_obj
def export_cmd(settings: Settings, since: str, until: str, output: str, lookback: str) -> None:
    """Write the verdicts of a time range, joined with their actions, as JSON Lines.

    \b
    Every verdict keeps its exact bytes, signature, key id, partition and
    offset; its action keeps its exact bytes (or is null, with the reason,
    when it is not found). A header line records each partition's complete
    offset range and first/last seq; an end line the record count and a
    SHA-256 chain over every line. `holdgate audit verify FILE` checks it
    with the public keys alone.
    """
    from holdgate.stream.audit import export_audit
    from holdgate.stream.history import parse_when

    start, end = parse_when(since), parse_when(until)
    if not re.fullmatch(r"\d+(\.\d+)?\s*[smhdw]", lookback.strip()):
        raise click.BadParameter("a duration such as 30m, 1h or 1d", param_hint="--lookback")
    back = -parse_when(lookback, now=0.0)
    if end <= start:
        raise click.BadParameter("must be after --from", param_hint="--to")
    bar = _progress("exporting")
    sink = sys.stdout.buffer if output == "-" else open(output, "wb")
    try:
        summary = export_audit(settings, start, end, sink, lookback=back, progress=bar)
    finally:
        bar.close()
        if sink is not sys.stdout.buffer:
            sink.close()
    click.echo(f"exported {summary.records} verdicts of {settings.verdicts_topic} with "
               f"{summary.actions} actions ({summary.missing_actions} not found) to {output}",
               err=True)


@audit.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_TRUSTED
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.pass_obj
def verify_cmd(settings: Settings, file: Path, trusted_keys: str | None, as_json: bool) -> None:
    """Check an audit file offline, with the workers' public keys only.

    \b
    Checks every verdict signature, every action's SHA-256 against its
    verdict's action_digest, each partition's signed seq and offsets (gaps are
    removed lines, steps back reordered ones), the header's complete offset
    ranges, and the end line's count and chain (truncation). Prints one line
    per problem: `line N: what failed`. Exits 0 when everything verifies, 1
    otherwise.

    \b
    --json fields: ok lines records actions key_ids problems[{line,problem}]
    notices[{line,notice}].
    """
    from holdgate.errors import ConfigError
    from holdgate.stream.audit_verify import verify_audit

    trust = _trust(settings, trusted_keys)
    if not len(trust):
        raise ConfigError("no trusted keys: give --trusted-keys or HOLDGATE_TRUSTED_KEYS "
                          "(the workers' public keys)")
    with open(file, "rb") as f:
        report = verify_audit(f, trust)
    if as_json:
        click.echo(orjson.dumps(report.to_obj(), option=orjson.OPT_INDENT_2).decode())
    else:
        for p in report.problems:
            click.echo(str(p))
        for n in report.notices[:20]:
            click.echo(f"notice: {n}", err=True)
        if len(report.notices) > 20:
            click.echo(f"notice: ... {len(report.notices) - 20} more", err=True)
        keys = ", ".join(f"{k} ({n})" for k, n in sorted(report.key_ids.items())) or "none"
        verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        click.echo(f"{verdict}: {report.records} verdicts, {report.actions} actions checked; "
                   f"signed by {keys}", err=True)
    if not report.ok:
        raise SystemExit(1)
