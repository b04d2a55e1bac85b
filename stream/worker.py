"""Start a worker: load and check everything first, refuse to run on anything invalid.

An invalid policy bundle, mismatched topics or a missing key stop the worker
before it consumes a single action, with a message saying what to fix: a gate
that runs with a broken policy would be worse than one that is down (agents
fail closed on timeout either way).
"""
from __future__ import annotations

import logging
import os
import socket

from holdgate.settings import Settings
from holdgate.stream.decider import Decider

__all__ = ["build_decider", "run_worker"]

log = logging.getLogger(__name__)


def build_decider(settings: Settings) -> Decider:
    from holdgate.models import SignalComputer
    from holdgate.policies import PolicyBundle, PolicyEngine

    bundle = PolicyBundle.load(settings.policy_path)
    return Decider(
        engine=PolicyEngine(bundle), policy_version=bundle.version,
        signing_key=settings.key_bytes, verdict_ttl=settings.verdict_ttl,
        max_clock_skew=settings.max_clock_skew, partitions=settings.partitions,
        signals=SignalComputer() if settings.signals == "on" else None,
        worker_id=f"{socket.gethostname()}:{os.getpid()}")


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; raises HoldgateError subclasses on bad setup."""
    import faust

    from holdgate.stream.app import create_app
    from holdgate.topics import ensure_topics

    decider = build_decider(settings)
    if not settings.key_bytes:
        log.warning("HOLDGATE_SIGNING_KEY is not set: verdicts are unsigned and executors "
                    "configured with a key will refuse them")
    ensure_topics(settings)
    app = create_app(settings, decider)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False)
    worker.execute_from_commandline()
