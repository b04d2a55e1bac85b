"""The benches start real workers the way `./dev bench` runs them: from the repo root.

`./dev bench` installs the wheel and runs from the repository root, whose own
`holdgate/` folder has no `stream/`, `models/` or `policies/` (the wheel maps them
in).  A child started there with ``python -m holdgate`` imported that folder and
died on ``holdgate.policies``, so the hold, restart, swap and scale benches never
got a verdict.  With the wheel installed (as `./dev test` does) this fails unless
the bench keeps the working directory off its children's ``sys.path``
(`common.HOLDGATE`: ``python -P``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

from holdgate.client import Gate
from holdgate.cli.fleet import wait_for_gate
from holdgate.settings import Settings
from holdgate.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]


def _bench_common() -> ModuleType:
    """bench/common.py under a name of its own (a bare `common` could be anyone's)."""
    spec = importlib.util.spec_from_file_location("holdgate_bench_common",
                                                  ROOT / "bench" / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bench_worker_started_from_the_repo_root_answers(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    assert (ROOT / "holdgate").is_dir(), "the shadowing folder this test is about"
    common = _bench_common()
    settings = make_settings()
    Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    ensure_topics(settings)
    monkeypatch.chdir(ROOT)
    with common.worker(settings) as proc:
        def alive(_: object) -> None:
            if proc.poll() is not None:
                log = (Path(settings.datadir) / "worker.log").read_text(errors="replace")
                pytest.fail(f"the bench's worker exited with {proc.returncode}:\n{log[-3000:]}")

        with Gate(bootstrap=settings.bootstrap, agent_id="support-bot-1",
                  settings=settings) as gate:
            assert wait_for_gate(gate, 90, progress=alive), "no verdict from the bench's worker"
