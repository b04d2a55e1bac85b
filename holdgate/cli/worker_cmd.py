"""`holdgate worker`: run the gate."""
from __future__ import annotations

from pathlib import Path

import click

from holdgate.settings import Settings

__all__ = ["worker"]


@click.command()
@click.option("--policy-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None,
              help="Cedar bundle folder [env HOLDGATE_POLICY_DIR; default: built-in].")
@click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="Fitted baseline model (holdgate fit) [env HOLDGATE_MODEL].")
@click.option("--app-id", default=None, help="Consumer group / app id [env HOLDGATE_APP_ID].")
@click.option("--datadir", default=None, help="Worker state folder [env HOLDGATE_DATADIR].")
@click.option("--batch-max", type=int, default=None, help="Max actions per micro-batch.")
@click.option("--batch-within", type=float, default=None,
              help="Seconds to wait filling a micro-batch.")
@click.option("--log-level", default=None, help="debug|info|warning|error.")
@click.pass_obj
def worker(settings: Settings, policy_dir: Path | None, model: Path | None, app_id: str | None,
           datadir: str | None, batch_max: int | None, batch_within: float | None,
           log_level: str | None) -> None:
    """Consume intended actions, decide each (policy + signals), publish signed verdicts.

    Refuses to start on an invalid policy bundle or mismatched topics. Set
    HOLDGATE_SIGNING_KEY so executors can verify verdicts.
    """
    from holdgate.stream.worker import run_worker

    settings = settings.with_(policy_dir=str(policy_dir) if policy_dir else None,
                              model=str(model) if model else None, app_id=app_id,
                              datadir=datadir, batch_max=batch_max, batch_within=batch_within,
                              log_level=log_level)
    run_worker(settings)
