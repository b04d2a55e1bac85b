"""On the real broker with a real `holdgate worker`: the executor in-process and as a service."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holdgate.client import Gate
from holdgate.events import ActionRequest
from holdgate.executor import ExecutionRefused, Executor, ExecutorService
from holdgate.executor import refusals as r
from holdgate.settings import Settings

pytestmark = pytest.mark.kafka

TICKET = {"type": "Ticket", "id": "T-exec"}
REFUND = {"type": "Payment", "id": "pay-exec"}


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def worker_env(gate_settings: Settings, start_worker: Callable[..., Any]) -> Settings:
    start_worker(gate_settings)
    return gate_settings


def test_in_process_executor_runs_a_worker_allow_once_and_refuses_replays(
        worker_env: Settings, tmp_path: Path) -> None:
    replay = tmp_path / "replay.sqlite3"
    runs: list[ActionRequest] = []
    with Gate(settings=worker_env, agent_id="support-bot-1") as gate:
        allowed = gate.check(action="tickets.read", resource=TICKET, timeout=10,
                             with_proof=True)
        denied = gate.check(action="payments.refund", resource=REFUND,
                            context={"amount_cents": 100}, timeout=10, with_proof=True)
    assert allowed.allowed, allowed.verdict.reasons
    with Executor.from_settings(worker_env, replay_path=replay) as executor:
        executor.execute_checked(allowed, runs.append)
        with pytest.raises(ExecutionRefused) as again:
            executor.execute_checked(allowed, runs.append)
        assert again.value.code == r.REPLAYED
        # the worker's deny is signed and handed over, and refused as such
        assert not denied.allowed and denied.signed is not None
        with pytest.raises(ExecutionRefused) as deny:
            executor.execute_checked(denied, runs.append)
        assert deny.value.code == r.NOT_ALLOWED
    with Executor.from_settings(worker_env, replay_path=replay) as restarted:
        with pytest.raises(ExecutionRefused) as after_restart:
            restarted.execute_checked(allowed, runs.append)
        assert after_restart.value.code == r.REPLAYED
    assert [req.request_id for req in runs] == [allowed.verdict.request_id]
    assert runs[0].resource.id == "T-exec"


def test_service_runs_an_allowed_action_exactly_once_and_a_denied_one_never(
        worker_env: Settings, tmp_path: Path) -> None:
    replay = tmp_path / "replay.sqlite3"
    ran: Counter[str] = Counter()
    refunds: list[str] = []

    def read_ticket(request: ActionRequest) -> None:
        ran[request.request_id] += 1

    def refund(request: ActionRequest) -> None:
        refunds.append(request.request_id)

    handlers = {"tickets.read": read_ticket, "payments.refund": refund}
    first = ExecutorService(settings=worker_env, handlers=handlers, lookback=0.0,
                            executor=Executor.from_settings(worker_env, replay_path=replay))
    with first:
        with Gate(settings=worker_env, agent_id="support-bot-1") as gate:
            allowed = gate.check(action="tickets.read", resource=TICKET, timeout=10)
            denied = gate.check(action="payments.refund", resource=REFUND,
                                context={"amount_cents": 100}, timeout=10)
        assert allowed.allowed and not denied.allowed, (allowed.codes, denied.codes)
        wait_until(lambda: ran[allowed.request_id] == 1 and first.stats["denied"] >= 1)
        time.sleep(1.0)                                 # nothing more arrives for them
    first.executor.close()
    assert ran[allowed.request_id] == 1 and refunds == []

    # A restart re-reads the last minutes of both topics: the allow is refused as a replay,
    # the deny is still a deny.
    second = ExecutorService(settings=worker_env, handlers=handlers, lookback=120.0,
                             executor=Executor.from_settings(worker_env, replay_path=replay))
    with second:
        wait_until(lambda: second.stats["replayed"] >= 1 and second.stats["denied"] >= 1)
    second.executor.close()
    assert ran[allowed.request_id] == 1 and refunds == []
    assert first.stats["refused"] == 0
