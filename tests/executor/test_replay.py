"""The replay store: claimed before the run, atomic across threads and processes, bounded."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from executor_helpers import NOW, Clock, make

from holdgate.events import ActionRequest
from holdgate.executor import Claim, ExecutionRefused, Executor, ReplayStore
from holdgate.executor import refusals as r
from holdgate.keys import Signer


def test_claim_is_durable_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    with ReplayStore(path) as store:
        assert store.claim("a", expires_at=NOW + 30, now=NOW) is Claim.CLAIMED
        assert store.claim("a", expires_at=NOW + 30, now=NOW) is Claim.DUPLICATE
    with ReplayStore(path) as store:
        assert store.state("a") == "claimed"            # a crash before finish() stays claimed
        assert store.claim("a", expires_at=NOW + 30, now=NOW) is Claim.DUPLICATE
        store.finish("a", ok=True)
        assert store.state("a") == "done"


def test_entries_are_pruned_once_their_verdict_expired_plus_grace(tmp_path: Path) -> None:
    clock = Clock()
    store = ReplayStore(tmp_path / "r.sqlite3", grace=10.0, prune_interval=0.0, clock=clock)
    for i in range(100):
        store.claim(f"old-{i}", expires_at=NOW + 30)
    store.claim("young", expires_at=NOW + 300)
    assert len(store) == 101
    clock.now = NOW + 30 + 10                              # expired, but within the grace
    assert store.prune() == 0 and len(store) == 101
    clock.now = NOW + 30 + 10.001
    assert store.prune() == 100 and len(store) == 1
    assert store.state("young") == "claimed"
    # the next claim prunes by itself (prune_interval 0): the store stays small under load
    for i in range(1000):
        clock.now = NOW + 1000 + i
        store.claim(f"load-{i}", expires_at=clock.now + 1)
    assert len(store) <= 12
    store.close()


def test_at_capacity_live_entries_are_never_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    store = ReplayStore(tmp_path / "r.sqlite3", max_entries=3, grace=0.0,
                        prune_interval=3600.0, clock=clock)
    for rid in "abc":
        assert store.claim(rid, expires_at=NOW + 30) is Claim.CLAIMED
    assert store.claim("d", expires_at=NOW + 30) is Claim.FULL       # refuse, don't evict
    assert store.claim("a", expires_at=NOW + 30) in (Claim.FULL, Claim.DUPLICATE)
    clock.now = NOW + 31                                             # a, b, c expired
    assert store.claim("d", expires_at=NOW + 60) is Claim.CLAIMED    # full -> prune -> room
    assert len(store) == 1
    store.close()


def test_a_full_store_refuses_execution(make_executor: Callable[..., Executor],
                                        signer: Signer) -> None:
    executor = make_executor(max_entries=1)
    first, second = make(signer), make(signer)
    executor.execute(first.signed, first.action, lambda req: None)
    with pytest.raises(ExecutionRefused) as info:
        executor.execute(second.signed, second.action, lambda req: None)
    assert info.value.code == r.STORE_FULL


def test_non_finite_expiry_is_rejected(tmp_path: Path) -> None:
    with ReplayStore(tmp_path / "r.sqlite3") as store, pytest.raises(ValueError):
        store.claim("a", expires_at=float("inf"))


def test_concurrent_threads_run_a_request_once(executor: Executor, signer: Signer) -> None:
    m = make(signer)
    runs: list[str] = []
    barrier = threading.Barrier(16)

    def tool(request: ActionRequest) -> str:
        runs.append(request.request_id)
        time.sleep(0.05)                                   # still running when others try
        return "ran"

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            return executor.execute(m.signed, m.action, tool)
        except ExecutionRefused as exc:
            return exc.code

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert runs == [m.request.request_id]
    assert sorted(outcomes) == ["REPLAYED"] * 15 + ["ran"]


def test_concurrent_threads_with_separate_executors_on_one_file(
        make_executor: Callable[..., Executor], signer: Signer) -> None:
    executors = [make_executor() for _ in range(4)]        # four connections, one file
    m = make(signer)
    runs: list[int] = []
    barrier = threading.Barrier(4)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            executors[i].execute(m.signed, m.action, lambda req: runs.append(i))
        except ExecutionRefused as exc:
            assert exc.code == r.REPLAYED

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(attempt, range(4)))
    assert len(runs) == 1


_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from holdgate.client.proof import SignedVerdict
    from holdgate.executor import ExecutionRefused, Executor, ReplayStore
    from holdgate.keys import TrustStore
    from holdgate.signing import KID_HEADER, SIG_HEADER

    d = Path(sys.argv[1])
    trust = TrustStore.from_paths([d / "worker.pub"])
    signed = SignedVerdict((d / "verdict").read_bytes(),
                           ((SIG_HEADER, (d / "sig").read_bytes()),
                            (KID_HEADER, (d / "kid").read_bytes())), None)
    executor = Executor(trust=trust, replay=ReplayStore(d / "replay.sqlite3"))
    while not (d / "go").exists():
        time.sleep(0.001)

    def tool(request):
        with open(d / "runs", "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(0.1)

    try:
        executor.execute(signed, (d / "action").read_bytes(), tool)
        print("ran")
    except ExecutionRefused as exc:
        print(exc.code)
""")


def test_concurrent_processes_run_a_request_once(tmp_path: Path) -> None:
    """Executors in separate processes sharing one replay file: exactly one runs it."""
    from cryptography.hazmat.primitives import serialization

    from holdgate.signing import read_signature

    signer = Signer.generate()
    m = make(signer, now=time.time())
    (tmp_path / "worker.pub").write_bytes(signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    kid, sig = read_signature(m.signed.headers)
    assert kid is not None and sig is not None
    (tmp_path / "verdict").write_bytes(m.signed.value)
    (tmp_path / "sig").write_bytes(sig)
    (tmp_path / "kid").write_bytes(kid.encode())
    (tmp_path / "action").write_bytes(m.action)
    ReplayStore(tmp_path / "replay.sqlite3").close()      # schema made once, before the race
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(6)]
    time.sleep(1.0)                                        # let them all import and wait
    (tmp_path / "go").touch()
    outputs = [c.communicate(timeout=60) for c in children]
    codes = sorted(out.decode().strip() for out, _ in outputs)
    assert codes == ["REPLAYED"] * 5 + ["ran"], [err.decode()[-800:] for _, err in outputs]
    assert len((tmp_path / "runs").read_text().splitlines()) == 1
