"""Executor fixtures: a worker key, a trust store and an executor over a fresh replay file."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from executor_helpers import Clock

from holdgate.executor import Executor, ReplayStore
from holdgate.keys import Signer, TrustStore

SIGNER = Signer.generate()


@pytest.fixture
def signer() -> Signer:
    return SIGNER


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def replay_path(tmp_path: Path) -> Path:
    return tmp_path / "executor" / "replay.sqlite3"


@pytest.fixture
def make_executor(replay_path: Path, clock: Clock) -> Iterator[Callable[..., Executor]]:
    """Factory: an executor trusting `keys` (default: SIGNER) over the test's replay file."""
    made: list[Executor] = []

    def factory(*keys: Signer, path: Path | None = None, **store: object) -> Executor:
        trust = TrustStore([k.public_key for k in keys or (SIGNER,)])
        replay = ReplayStore(path or replay_path, clock=clock, **store)  # type: ignore[arg-type]
        executor = Executor(trust=trust, replay=replay, clock=clock)
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        executor.close()


@pytest.fixture
def executor(make_executor: Callable[..., Executor]) -> Executor:
    return make_executor()
