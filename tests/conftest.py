"""Shared fixtures: one real KRaft broker per test session, fresh topics per test.

The broker is the project's own `LocalKafka` on free ports, so a developer's
broker on 9092 and a parallel run never collide.  HOLDGATE_TEST_BOOTSTRAP
points the suite at an already running broker instead (CI starts its own).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from holdgate.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("HOLDGATE_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from holdgate.cli.localkafka import LocalKafka

    broker = LocalKafka(workdir=Path(tmp_path_factory.mktemp("kafka")))
    bootstrap = broker.start(timeout=120)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def verdict_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One Ed25519 pair for the session's workers: the worker signs, everyone else verifies."""
    from holdgate.keys import generate_keypair

    private, public, key_id = generate_keypair(tmp_path_factory.mktemp("keys"), "worker")
    return {"signing_key_file": str(private), "trusted_keys": str(public), "key_id": key_id}


@pytest.fixture
def make_settings(kafka_bootstrap: str, tmp_path: Path,
                  verdict_keys: dict[str, str]) -> Callable[..., Settings]:
    """Settings with topic names and app id unique to this test (own consumer groups too)."""

    def factory(**overrides: object) -> Settings:
        tag = uuid.uuid4().hex[:8]
        base = dict(bootstrap=kafka_bootstrap, app_id=f"hg-test-{tag}",
                    actions_topic=f"t{tag}.actions", verdicts_topic=f"t{tag}.verdicts",
                    deadletter_topic=f"t{tag}.deadletter", control_topic=f"t{tag}.control",
                    approvals_topic=f"t{tag}.approvals", policies_topic=f"t{tag}.policies",
                    models_topic=f"t{tag}.models", status_topic=f"t{tag}.status",
                    partitions=2, datadir=str(tmp_path / f"worker-{tag}"),
                    signing_key_file=verdict_keys["signing_key_file"],
                    trusted_keys=verdict_keys["trusted_keys"])
        base.update(overrides)
        return Settings(**base).validated()  # type: ignore[arg-type]

    return factory


@pytest.fixture
def gate_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings whose topics already exist (as a running worker would have made them)."""
    from holdgate.topics import ensure_topics

    settings = make_settings()
    ensure_topics(settings)
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., "WorkerProcess"]]:
    """Factory: start a real `holdgate worker` for the given settings, ready to decide."""
    from workers import WorkerProcess

    started: list[WorkerProcess] = []

    def factory(settings: Settings, *, wait: bool = True) -> WorkerProcess:
        proc = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log").start()
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield factory
    for proc in started:
        proc.stop()


if False:  # pragma: no cover - typing only
    from workers import WorkerProcess  # noqa: F401
