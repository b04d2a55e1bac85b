"""`holdgate executor`: run tools for verified allows only, each request at most once."""
from __future__ import annotations

import importlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from holdgate.settings import Settings

__all__ = ["executor", "load_handler"]


def load_handler(spec: str) -> tuple[str, Callable[..., Any]]:
    """``ACTION=module:function`` to (action name, the function); errors say which part."""
    action, sep, target = spec.partition("=")
    module_name, colon, attr = target.partition(":")
    if not sep or not colon or not action or not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: expected ACTION=module:function, e.g. "
                                 "payments.refund=mytools.billing:refund")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"{spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise click.BadParameter(f"{spec!r}: {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise click.BadParameter(f"{spec!r}: {attr!r} is not callable")
    return action, obj


@click.command()
@click.option("--handler", "handlers", multiple=True, required=True,
              metavar="ACTION=MODULE:FUNCTION",
              help="Run FUNCTION(request) for verified allows of ACTION (repeatable).")
@click.option("--replay-store", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="SQLite file of executed request ids; share it between executors that "
                   "serve the same actions [default: executor/replay.sqlite3 beside the "
                   "worker datadir].")
@click.option("--lookback", type=float, default=300.0, show_default=True,
              help="Seconds of both topics re-read on start (longer than an allow lives).")
@click.option("--partition", "partitions", type=int, multiple=True,
              help="Serve only these partitions (repeatable) [default: all].")
@click.option("--trusted-keys", default=None,
              help="Public key files/folders, comma separated [env HOLDGATE_TRUSTED_KEYS].")
@click.pass_obj
def executor(settings: Settings, handlers: tuple[str, ...], replay_store: Path | None,
             lookback: float, partitions: tuple[int, ...], trusted_keys: str | None) -> None:
    """Consume actions and verdicts; run a handler only for a verified, unexpired allow.

    Each verdict's Ed25519 signature, expiry, deadline and action digest are
    checked against the exact bytes, and each request id runs at most once,
    across restarts (the replay store).  Stop with Ctrl-C or SIGTERM.
    """
    from holdgate.executor import Executor, ExecutorService

    settings = settings.with_(trusted_keys=trusted_keys)
    table = dict(load_handler(spec) for spec in handlers)
    ex = Executor.from_settings(settings, replay_path=replay_store)
    service = ExecutorService(
        settings=settings, executor=ex, handlers=table, lookback=lookback,
        partitions=partitions or None,
        on_executed=lambda req, _: click.echo(f"executed {req.action} {req.request_id}"),
        on_refusal=lambda refusal: click.echo(f"refused {refusal}", err=True))
    signal.signal(signal.SIGTERM, lambda *_: service.stop(0))
    try:
        service.start()                 # returns once both topics are positioned
        click.echo(f"executor ready: {', '.join(sorted(table))} from "
                   f"{settings.actions_topic} / {settings.verdicts_topic}, "
                   f"replay store {ex.replay.path}")
        while not service.wait(0.5):
            pass
    except KeyboardInterrupt:
        service.stop()
    finally:
        ex.close()
