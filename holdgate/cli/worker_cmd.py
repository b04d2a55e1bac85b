"""`holdgate worker`: run the gate.

Configuration is checked before Kafka is: a missing key or a broken bundle is
exit 2 whatever the broker's state, so the message names what to fix first.
Then a short reachability probe: with Kafka down the worker says so in one
line (exit 3) instead of a client traceback after 30 s.
"""
from __future__ import annotations

from pathlib import Path

import click

from holdgate.cli.preflight import EXIT_CODES_HELP, require_kafka
from holdgate.settings import Settings

__all__ = ["worker"]

@click.command(epilog=EXIT_CODES_HELP)
@click.option("--policy-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              envvar="HOLDGATE_POLICY_DIR", default=None, show_default="built-in bundle",
              help="Cedar bundle folder.")
@click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False),
              envvar="HOLDGATE_MODEL", default=None, show_default="none",
              help="Fitted baseline model (holdgate fit).")
@click.option("--app-id", envvar="HOLDGATE_APP_ID", default=Settings.app_id,
              help="Consumer group / app id.")
@click.option("--datadir", envvar="HOLDGATE_DATADIR", default=Settings.datadir,
              help="Worker state folder.")
@click.option("--batch-max", type=click.IntRange(min=1), envvar="HOLDGATE_BATCH_MAX",
              default=Settings.batch_max, help="Max actions per micro-batch.")
@click.option("--batch-within", type=click.FloatRange(min=0), envvar="HOLDGATE_BATCH_WITHIN",
              default=Settings.batch_within, help="Seconds to wait filling a micro-batch.")
@click.option("--log-level", envvar="HOLDGATE_LOG_LEVEL", default=Settings.log_level,
              help="debug|info|warning|error.")
@click.pass_obj
def worker(settings: Settings, policy_dir: Path | None, model: Path | None, app_id: str,
           datadir: str, batch_max: int, batch_within: float, log_level: str) -> None:
    """Consume intended actions, decide each (policy + signals), publish signed verdicts.

    Refuses to start on an invalid policy bundle, mismatched topics or without
    a signing key (HOLDGATE_SIGNING_KEY_FILE, made by `holdgate keys generate`;
    executors verify with its public key).
    """
    from holdgate.policies import PolicyBundle
    from holdgate.stream.worker import run_worker

    settings = settings.with_(policy_dir=str(policy_dir) if policy_dir else None,
                              model=str(model) if model else None, app_id=app_id,
                              datadir=datadir, batch_max=batch_max, batch_within=batch_within,
                              log_level=log_level)
    settings.signer()                          # no key: exit 2 before anything else
    PolicyBundle.load(settings.policy_path)    # a broken bundle: exit 2, Kafka or not
    require_kafka(settings)
    run_worker(settings)
