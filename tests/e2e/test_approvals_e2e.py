"""Approvals on the real broker: a held action, a signed human approval, one final verdict.

The agent cannot approve itself (what it writes in its context opens
nothing); only a token signed by a key the worker trusts for the awaited role
lifts the hold, once, for the exact bytes held, before its own expiry and the
action's deadline.  Everything else is dead-lettered with its reason and the
hold (a deny to every reader) stands.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from kafka import KafkaProducer

from holdgate.approvals import Approval
from holdgate.client import Gate, partition_for
from holdgate.events import Verdict
from holdgate.keys import Signer, generate_keypair, load_signer
from holdgate.settings import Settings
from holdgate.signing import sign_headers
from workers import WorkerProcess, read_topic

AGENT = "data-bot-1"
RESTRICTED = {"type": "Record", "id": "hr-salaries"}


@pytest.fixture
def approvers(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """alice approves as human; mallory has a key nobody configured."""
    return {name: generate_keypair(tmp_path / name, name)[:2] for name in ("alice", "mallory")}


@pytest.fixture
def approving(make_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess],
              approvers: dict[str, tuple[Path, Path]]) -> Settings:
    from holdgate.topics import ensure_topics

    settings = make_settings(approver_keys=f"human={approvers['alice'][1]}",
                             approver_key_file=str(approvers["alice"][0]))
    ensure_topics(settings)
    start_worker(settings)
    return settings


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **settings.to_env()})


def _publish(settings: Settings, token: Approval, signer: Signer) -> None:
    value = token.to_bytes()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        producer.send(settings.approvals_topic, key=token.agent_id.encode(), value=value,
                      partition=partition_for(token.agent_id, settings.partitions),
                      headers=list(sign_headers(signer, value))).get(timeout=10)
    finally:
        producer.close(timeout=5)


def _held(gate: Gate, context: dict[str, Any] | None = None, timeout: float = 5.0) -> Verdict:
    v = gate.check(action="records.read", agent_id=AGENT, resource=RESTRICTED,
                   context=context, timeout=timeout)
    assert v.decision == "pending" and not v.allowed, (v.decision, v.codes)
    assert v.awaiting == "human" and v.key_id, v
    return v


def _token(v: Verdict, **over: Any) -> Approval:
    fields = dict(request_id=v.request_id, agent_id=v.agent_id, action_digest=v.action_digest,
                  role="human", approver="alice", ttl=300.0)
    fields.update(over)
    return Approval.mint(**fields)


def _verdicts(settings: Settings, request_id: str) -> list[dict[str, Any]]:
    out = [orjson.loads(r.value) for r in read_topic(settings, settings.verdicts_topic)]
    return [v for v in out if v["request_id"] == request_id]


def _dead_letters(settings: Settings, want: int, within: float = 15.0) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        reasons = [orjson.loads(r.value)["error"]
                   for r in read_topic(settings, settings.deadletter_topic)]
        if len(reasons) >= want or time.monotonic() > deadline:
            return reasons
        time.sleep(0.2)


def test_cli_approval_lifts_the_hold_the_sdk_is_waiting_on(approving: Settings) -> None:
    with Gate(bootstrap=approving.bootstrap, settings=approving) as gate:
        result: dict[str, Verdict] = {}
        # The agent claims approvals in its own context: they open nothing.
        waiting = threading.Thread(target=lambda: result.setdefault("v", gate.check(
            action="records.read", agent_id=AGENT, resource=RESTRICTED, timeout=5,
            context={"approvals": ["human"]}, wait_for_approval=60)))
        waiting.start()
        deadline = time.monotonic() + 30
        while True:
            listed = _cli(approving, "approvals", "--agent", AGENT)
            assert listed.returncode == 0, listed.stderr
            if "1 held action" in listed.stdout:
                break
            assert time.monotonic() < deadline, listed.stdout
            time.sleep(0.3)
        request_id = listed.stdout.split()[0]
        assert "awaits human" in listed.stdout
        approved = _cli(approving, "approve", request_id, "--yes", "--as", "alice@example.com")
        assert approved.returncode == 0, approved.stderr
        assert "hr-salaries" in approved.stdout               # the approver saw what it was
        waiting.join(30)
        verdict = result["v"]
        assert verdict.allowed and verdict.key_id, verdict
        assert verdict.request_id == request_id
        assert gate.stats["held"] == 1
    recorded = _verdicts(approving, request_id)
    assert [v["decision"] for v in recorded] == ["pending", "allow"]
    assert recorded[0]["action_digest"] == recorded[1]["action_digest"]
    assert _cli(approving, "approvals", "--agent", AGENT).stdout.startswith("0 held")
    again = _cli(approving, "approve", request_id, "--yes")    # nothing is held any more
    assert again.returncode != 0 and "no held action" in again.stderr


def test_every_bad_token_is_dead_lettered_and_the_hold_stands(
        approving: Settings, approvers: dict[str, tuple[Path, Path]]) -> None:
    alice, mallory = (load_signer(approvers[n][0]) for n in ("alice", "mallory"))
    with Gate(bootstrap=approving.bootstrap, settings=approving) as gate:
        held = _held(gate)
        other = _held(gate)
        _publish(approving, _token(held), mallory)                          # forged
        _publish(approving, _token(held, action_digest=other.action_digest), alice)
        _publish(approving, _token(held, ttl=-1.0), alice)                  # expired
        _publish(approving, _token(held, role="finance"), alice)            # unknown role
        _publish(approving, _token(held, request_id="never-held"), alice)
        reasons = _dead_letters(approving, 5)
        codes = sorted(r.split(":")[0] for r in reasons)
        assert codes == ["APPROVAL_EXPIRED", "APPROVAL_INVALID", "APPROVAL_INVALID",
                         "APPROVAL_MISMATCH", "APPROVAL_UNMATCHED"], reasons
        assert [v["decision"] for v in _verdicts(approving, held.request_id)] == ["pending"]
        # The good token still works, once: a replay of it lifts nothing.
        good = _token(held)
        _publish(approving, good, alice)
        _publish(approving, good, alice)
        reasons = _dead_letters(approving, 6)
        assert sum(r.startswith("APPROVAL_UNMATCHED") for r in reasons) == 2, reasons
        decided = [v["decision"] for v in _verdicts(approving, held.request_id)]
        assert decided == ["pending", "allow"], decided
        assert [v["decision"] for v in _verdicts(approving, other.request_id)] == ["pending"]


def test_an_approval_after_the_deadline_lifts_into_a_deny(
        approving: Settings, approvers: dict[str, tuple[Path, Path]]) -> None:
    alice = load_signer(approvers["alice"][0])
    with Gate(bootstrap=approving.bootstrap, settings=approving) as gate:
        held = _held(gate, timeout=1.0)                     # deadline: a second from now
        time.sleep(1.5)
        _publish(approving, _token(held), alice)
        deadline = time.monotonic() + 15
        while len(decided := _verdicts(approving, held.request_id)) < 2:
            assert time.monotonic() < deadline, decided
            time.sleep(0.2)
        final = decided[1]
        assert final["decision"] == "deny"
        assert "EXPIRED" in [r["code"] for r in final["reasons"]], final
