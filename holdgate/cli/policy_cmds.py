"""`holdgate policy validate|test`: check a Cedar bundle before a worker ever loads it.

Output follows compilers and ``opa check``/``opa test``: one problem per line,
``path:line:col: what is wrong (what to do)``, on stderr, so that editors and
CI annotators can jump to it.  Exit codes: 0 clean, 1 problems or failed
cases, 2 usage (a folder that does not exist, a bad option).
"""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from holdgate.errors import PolicyError
from holdgate.settings import Settings

__all__ = ["policy"]

#: Problems found or cases failed (usage errors exit 2, through click).
EXIT_PROBLEMS = 1

_BUNDLE = click.argument("bundle", required=False,
                         type=click.Path(path_type=Path, exists=True, file_okay=False))


def _resolve(settings: Settings, bundle: Path | None) -> Path:
    """BUNDLE, else the configured policy folder, which must exist (else a usage error)."""
    path = bundle if bundle is not None else Path(settings.policy_path)
    if not path.is_dir():
        raise click.UsageError(f"no policy bundle folder at {path} (give BUNDLE, or set "
                               "HOLDGATE_POLICY_DIR)")
    return path


def _problem_lines(exc: PolicyError) -> list[str]:
    """One line per problem: BundleProblems carries them, any other PolicyError is one."""
    from holdgate.policies.diagnostics import BundleProblems

    if isinstance(exc, BundleProblems):
        return exc.lines
    return [" ".join(str(exc).split())]


def _report(lines: list[str], where: Path) -> NoReturn:
    for line in lines:
        click.echo(line, err=True)
    count = len(lines)
    click.secho(f"{count} problem{'s' if count != 1 else ''} in {where}", fg="red", err=True)
    raise SystemExit(EXIT_PROBLEMS)


@click.group()
def policy() -> None:
    """Validate and test policy bundles (policy.cedar, schema, entities.json, cases/)."""


@policy.command()
@_BUNDLE
@click.pass_obj
def validate(settings: Settings, bundle: Path | None) -> None:
    """Check BUNDLE as the worker will run it: policies, schema, entities and case files.

    Beyond Cedar's validation, reports policies that would fail (POLICY_ERROR)
    on an action used with a resource type its appliesTo does not list.
    Prints `file:line:col: problem (fix)` lines and exits 1 on any problem.
    """
    from holdgate.policies import PolicyBundle, load_cases
    from holdgate.policies.lint import lint_bundle

    path = _resolve(settings, bundle)
    try:
        loaded = PolicyBundle.load(path)
    except PolicyError as exc:
        _report(_problem_lines(exc), path)
    lines = [str(p) for p in lint_bundle(loaded)]
    cases = []
    try:
        cases = load_cases(path, loaded)
    except PolicyError as exc:
        lines += _problem_lines(exc)
    if lines:
        _report(lines, path)
    click.secho(f"ok: {path}  {len(loaded.policy_ids)} policies  {len(cases)} cases  "
                f"version {loaded.version}", fg="green")


@policy.command(name="test")
@_BUNDLE
@click.option("-v", "--verbose", is_flag=True, help="Show every case, not only failures.")
@click.pass_obj
def test_cmd(settings: Settings, bundle: Path | None, verbose: bool) -> None:
    """Run BUNDLE's cases (allow/, deny/, pending/); exit 1 on any mismatch (like `opa test`).

    A failed case prints each expectation that was not met, at its line of
    the case file, then what the decision was made of.
    """
    from holdgate.policies import run_cases

    path = _resolve(settings, bundle)
    try:
        results = run_cases(path)
    except PolicyError as exc:
        _report(_problem_lines(exc), path)
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            if verbose:
                held = f" awaiting {r.awaiting!r}" if r.awaiting else ""
                codes = ",".join(dict.fromkeys(x.code for x in r.reasons))
                click.echo(f"{click.style('PASS', fg='green')} {r.name}: "
                           f"{r.actual}{held} [{codes}]")
            continue
        about = f": {r.description}" if r.description else ""
        click.echo(f"{click.style('FAIL', fg='red')} {r.name}{about}")
        for difference in r.differences:
            click.echo(f"  {difference}")
        for note in r.notes:
            click.echo(f"  {note}")
    if not results:
        click.secho(f"no cases in {path}/cases/{{allow,deny,pending}}/*.json", fg="red",
                    err=True)
        raise SystemExit(EXIT_PROBLEMS)
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    click.secho(summary, fg="red" if failed else "green")
    if failed:
        raise SystemExit(EXIT_PROBLEMS)
