"""`holdgate policy validate|test`: check a Cedar bundle before a worker ever loads it."""
from __future__ import annotations

from pathlib import Path

import click

from holdgate.settings import Settings

__all__ = ["policy"]

_BUNDLE = click.argument("bundle", required=False,
                         type=click.Path(path_type=Path, exists=True, file_okay=False))


def _resolve(settings: Settings, bundle: Path | None) -> Path:
    return bundle if bundle is not None else settings.policy_path


@click.group()
def policy() -> None:
    """Validate and test policy bundles (policy.cedar, schema, entities.json, cases/)."""


@policy.command()
@_BUNDLE
@click.pass_obj
def validate(settings: Settings, bundle: Path | None) -> None:
    """Parse BUNDLE and validate its policies and entities against its schema."""
    from holdgate.policies import PolicyBundle

    loaded = PolicyBundle.load(_resolve(settings, bundle))
    click.secho(f"ok: {loaded.path}  {len(loaded.policy_ids)} policies  version {loaded.version}",
                fg="green")


@policy.command(name="test")
@_BUNDLE
@click.option("-v", "--verbose", is_flag=True, help="Show every case, not only failures.")
@click.pass_obj
def test_cmd(settings: Settings, bundle: Path | None, verbose: bool) -> None:
    """Run BUNDLE's cases/allow and cases/deny; exit 1 on any mismatch (like `opa test`)."""
    from holdgate.policies import run_cases

    results = run_cases(_resolve(settings, bundle))
    failed = [r for r in results if not r.ok]
    for r in results:
        if verbose or not r.ok:
            mark = click.style("PASS", fg="green") if r.ok else click.style("FAIL", fg="red")
            codes = ",".join(getattr(x, "code", str(x)) for x in r.reasons)
            click.echo(f"{mark} {r.name}: expected {r.expected}, got {r.actual} [{codes}]")
            if not r.ok:                       # say what differed, not just the decision
                for part in r.detail.split("; "):
                    click.echo(f"       {part}")
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    click.secho(summary, fg="red" if failed else "green")
    if failed or not results:
        raise SystemExit(1)
