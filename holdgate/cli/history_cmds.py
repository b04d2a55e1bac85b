"""`holdgate replay` and `holdgate export`: history through the same runner as the worker."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import click
import orjson

from holdgate.settings import Settings

__all__ = ["replay", "export", "history_options", "load_history"]

F = TypeVar("F", bound=Callable[..., Any])


def history_options(fn: F) -> F:
    """--input FILE or --from/--to, plus --policy-dir and --model: shared by analyst commands."""
    options = [
        click.option("--input", "input_path", metavar="FILE",
                     help="JSON Lines history, one ActionRequest per line ('-': stdin)."),
        click.option("--from", "since", metavar="WHEN",
                     help="Start of a topic range: ISO time or a duration ago (30m, 2h, 1d)."),
        click.option("--to", "until", metavar="WHEN", default="now", show_default=True,
                     help="End of the topic range."),
        click.option("--policy-dir", type=click.Path(path_type=Path, exists=True,
                                                      file_okay=False),
                     help="Cedar bundle [env HOLDGATE_POLICY_DIR; default: built-in]."),
        click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False),
                     help="Fitted baseline model (holdgate fit) [env HOLDGATE_MODEL]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _progress(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" actions", disable=not sys.stderr.isatty(),
                file=sys.stderr, leave=False)


def load_history(settings: Settings, input_path: str | None, since: str | None,
                 until: str) -> tuple[Iterable[Any], dict[str, Any] | None, str]:
    """(records, recorded verdicts or None, description) from the chosen source."""
    from holdgate.stream.history import parse_when, read_jsonl, read_topic

    if bool(input_path) == bool(since):
        raise click.UsageError("give exactly one history source: --input FILE or --from WHEN")
    if input_path:
        return read_jsonl(input_path), None, f"file {input_path}"
    start, end = parse_when(since or ""), parse_when(until)
    bar = _progress(None, "reading topic")
    try:
        history = read_topic(settings, start, end, progress=bar)
    finally:
        bar.close()
    return history.records, history.recorded, f"{settings.actions_topic} {since} .. {until}"


#: A history at least this large is replayed in one process per CPU by default.
SHARD_FROM_ACTIONS = 100_000
SHARD_FROM_BYTES = 32 * 2**20           # a file of about that many actions


def _workers(wanted: int | None, input_path: str | None, records: Iterable[Any]) -> int:
    """Processes for a replay: as asked, else one per CPU for a large history."""
    if wanted is not None:
        return max(1, wanted)
    large = False
    if isinstance(records, list):
        large = len(records) >= SHARD_FROM_ACTIONS
    elif input_path and input_path != "-":
        large = os.path.getsize(input_path) >= SHARD_FROM_BYTES
    return (os.cpu_count() or 1) if large else 1


@click.command()
@history_options
@click.option("--output", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write one replayed verdict per line (JSON Lines) here ('-': stdout).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes to replay in, agents split between them (same decisions, "
                   "same order) [default: one per CPU from 100,000 actions (a 32 MiB "
                   "file), else 1].")
@click.pass_obj
def replay(settings: Settings, input_path: str | None, since: str | None, until: str,
           policy_dir: Path | None, model: Path | None, output: str | None,
           workers: int | None) -> None:
    """Replay history through the decision core and compare with the recorded verdicts.

    \b
    Signals are rebuilt in order from an empty state, exactly as the worker
    builds them. From a topic range, every action whose replayed decision
    differs from the recorded one under the same versions and signals is a
    determinism bug: it is listed and the command exits 1.
    """
    from holdgate.stream.replay import decision_line, replay_sharded, runner_for
    from holdgate.stream.replay import replay as run_replay

    settings = settings.with_(policy_dir=str(policy_dir) if policy_dir else None,
                              model=str(model) if model else None)
    runner = runner_for(settings)       # also checks the bundle and model before reading
    records, recorded, source = load_history(settings, input_path, since, until)
    processes = _workers(workers, input_path, records)
    sink = None
    if output:
        sink = sys.stdout.buffer if output == "-" else open(output, "wb")
    bar = _progress(len(records) if isinstance(records, list) else None, "replaying")

    def write(d: Any) -> None:
        if sink is not None:
            sink.write(orjson.dumps(decision_line(d)) + b"\n")

    def write_line(line: bytes) -> None:
        if sink is not None:
            sink.write(line + b"\n")

    try:
        if processes > 1:
            del runner
            report = replay_sharded(records, functools.partial(runner_for, settings),
                                    partitions=settings.partitions, workers=processes,
                                    recorded=recorded,
                                    on_line=write_line if sink is not None else None,
                                    on_progress=bar.update)
        else:
            report = run_replay(records, runner, recorded=recorded, on_decision=write,
                                on_progress=bar.update)
    finally:
        bar.close()
        if sink is not None and sink is not sys.stdout.buffer:
            sink.close()
    err = sys.stderr                       # click.get_text_stream is deprecated (8.5)
    click.echo(f"replayed {report.records} records from {source} in {report.seconds:.2f}s "
               f"({report.rate:,.0f}/s" + (f", {processes} processes" if processes > 1 else "")
               + f"): {report.allowed} allow, {report.denied} deny, "
               f"{report.deadletters} dead letters", file=err)
    if recorded is not None:
        click.echo(f"compared with {report.compared} recorded verdicts: {report.same} same, "
                   f"{report.warmup} differ with different signals or versions (warm-up), "
                   f"{len(report.mismatches)} determinism mismatches; {report.unrecorded} "
                   "actions had no recorded verdict", file=err)
        for m in report.mismatches[:20]:
            click.secho(f"  MISMATCH {m.request_id} {m.agent_id}: recorded {m.recorded[0]} "
                        f"{list(m.recorded[1])}, replayed {m.replayed[0]} "
                        f"{list(m.replayed[1])}", fg="red", file=err)
    if not report.ok:
        raise SystemExit(1)


@click.command()
@click.option("--from", "since", required=True, metavar="WHEN",
              help="Start: ISO time or a duration ago (30m, 2h, 1d).")
@click.option("--to", "until", default="now", show_default=True, metavar="WHEN", help="End.")
@click.option("--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="JSON Lines file to write ('-': stdout).")
@click.pass_obj
def export(settings: Settings, since: str, until: str, output: str) -> None:
    """Write the actions of a time range as JSON Lines, byte for byte as published.

    The file replays with `holdgate replay --input FILE` (and fits and backtests
    the same way). Records that are not JSON objects are left out and counted.
    """
    from holdgate.stream.history import export_line, parse_when, read_topic

    start, end = parse_when(since), parse_when(until)
    bar = _progress(None, "exporting")
    try:
        history = read_topic(settings, start, end, with_verdicts=False, progress=bar)
    finally:
        bar.close()
    sink = sys.stdout.buffer if output == "-" else open(output, "wb")
    written = skipped = 0
    try:
        for record in history.records:
            line = export_line(record.value)
            if line is None:
                skipped += 1
                continue
            sink.write(line + b"\n")
            written += 1
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
    click.echo(f"exported {written} actions from {settings.actions_topic} ({skipped} records "
               "that are not JSON objects left out)", err=True)
