"""Publish, hot swap, shadow, promote and roll back on running workers (real broker).

No worker is restarted to change what it enforces.  Every verdict names the
versions that decided it; a stream of actions published across a swap is
decided exactly once each, each under one version; what cannot be loaded or
is not signed by an operator changes nothing and is reported.
"""
from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from click.testing import CliRunner, Result
from kafka import KafkaProducer

from holdgate.artifacts import Artifact, Pointer, content_key
from holdgate.client import Gate
from holdgate.cli.publish_cmds import promote, publish_policy, rollback, shadow, status
from holdgate.keys import Signer, generate_keypair
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.settings import Settings
from holdgate.signing import sign_headers
from holdgate.topics import ensure_topics
from workers import WorkerProcess, read_topic


@pytest.fixture
def operated(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    private, public, _ = generate_keypair(tmp_path / "op", "operator")
    settings = make_settings(operator_keys=str(public), operator_key_file=str(private))
    ensure_topics(settings)
    return settings


def _variant(tmp: Path, n: int, *, strict: bool = False) -> Path:
    """The default bundle under another version; `strict` also drops the ticket permit."""
    out = Path(shutil.copytree(default_bundle_path(), tmp / f"bundle-{n}"))
    policy = (out / "policy.cedar").read_text()
    if strict:
        start = policy.index('@id("support-tickets")')
        policy = policy[:start] + policy[policy.index(";", start) + 1:]
        shutil.rmtree(out / "cases")        # its own cases would no longer hold
        (out / "cases" / "deny").mkdir(parents=True)
        shutil.copy(default_bundle_path() / "cases" / "deny" / "unknown-agent.json",
                    out / "cases" / "deny")
    (out / "policy.cedar").write_text(policy + f"\n// variant {n}\n")
    return out


def _cli(command: Any, settings: Settings, *args: str) -> Result:
    result = CliRunner().invoke(command, list(args), obj=settings, catch_exceptions=False)
    return result


def _read(gate: Gate, n: int) -> Any:
    return gate.check(action="tickets.read", agent_id="support-bot-1", timeout=5,
                      resource={"type": "Ticket", "id": f"T-{n}"})


def _until_version(gate: Gate, version: str, within: float = 20.0) -> float:
    t0 = time.monotonic()
    n = 0
    while True:
        n += 1
        v = _read(gate, n)
        if v.policy_version == version:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, (v.policy_version, version)
        time.sleep(0.05)


def test_a_publish_swaps_the_policy_of_a_running_worker_without_losing_an_action(
        operated: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    start_worker(operated)
    v2 = _variant(tmp_path, 2)
    v2_version = PolicyBundle.load(v2).version
    default_version = PolicyBundle.load(default_bundle_path()).version
    stop = threading.Event()
    seen: list[Any] = []
    with Gate(bootstrap=operated.bootstrap, settings=operated) as gate:
        assert _read(gate, 0).policy_version == default_version

        def traffic() -> None:
            n = 1000
            while not stop.is_set():
                n += 1
                seen.append(_read(gate, n))
                time.sleep(0.1)            # below the support agents' rate limits

        worker_traffic = threading.Thread(target=traffic)
        worker_traffic.start()
        time.sleep(1.0)
        assert _cli(publish_policy, operated, str(v2)).exit_code == 0
        took = _until_version(gate, v2_version)
        time.sleep(1.0)
        stop.set()
        worker_traffic.join(30)
    assert took < 10, took
    assert len(seen) > 10 and all(v.policy_version != "local" for v in seen)   # none lost
    assert all(v.allowed for v in seen), {tuple(v.codes) for v in seen if not v.allowed}
    versions = [v.policy_version for v in seen]
    switch = versions.index(v2_version)
    assert set(versions[:switch]) == {default_version} and set(versions[switch:]) == {v2_version}
    # exactly one verdict per request on the log, each under one named version
    logged = [orjson.loads(r.value) for r in read_topic(operated, operated.verdicts_topic)]
    ids = [v["request_id"] for v in logged]
    assert len(ids) == len(set(ids))
    assert {v.request_id for v in seen} <= set(ids)


def test_unsigned_tampered_or_broken_publishes_change_nothing_and_are_reported(
        operated: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    start_worker(operated)
    version = PolicyBundle.load(default_bundle_path()).version
    v3 = _variant(tmp_path, 3)
    files = {n: (v3 / n).read_bytes() for n in ("policy.cedar", "schema.cedarschema",
                                                "entities.json")}
    good = Artifact(kind="policy", version=PolicyBundle.load(v3).version, files=files,
                    published_at=time.time(), by="mallory")
    tampered_files = dict(files, **{"policy.cedar": files["policy.cedar"] + b"\n// edit\n"})
    tampered = Artifact(kind="policy", version=good.version, files=tampered_files,
                        published_at=time.time(), by="mallory")
    operator = Signer.generate()        # not a key the worker trusts
    pointer = Pointer(kind="policy", role="enforce", version=good.version, at=time.time(),
                      by="mallory")
    producer = KafkaProducer(bootstrap_servers=operated.bootstrap, acks="all",
                             max_request_size=8 * 2**20)
    try:
        for key, value, signer in ((content_key(good.version), good.to_bytes(), operator),
                                   (pointer.key, pointer.to_bytes(), operator),
                                   (content_key(good.version), good.to_bytes(), None)):
            headers = list(sign_headers(signer, value)) if signer else []
            producer.send(operated.policies_topic, key=key.encode(), value=value,
                          headers=headers).get(10)
        # Signed by the real operator key, but the files do not hash to the version.
        from holdgate.keys import load_signer
        real = load_signer(operated.operator_key_file)
        later = Pointer(kind="policy", role="enforce", version=good.version,
                        at=time.time() + 1, by="op")
        for key, value in ((content_key(good.version), tampered.to_bytes()),
                           (later.key, later.to_bytes())):
            producer.send(operated.policies_topic, key=key.encode(), value=value,
                          headers=list(sign_headers(real, value))).get(10)
    finally:
        producer.close()
    with Gate(bootstrap=operated.bootstrap, settings=operated) as gate:
        time.sleep(3.0)
        assert _read(gate, 1).policy_version == version          # still the old one
    deadline = time.monotonic() + 20
    while True:                                                  # and the worker says why
        report = orjson.loads(_cli(status, operated, "--json").output)
        problems = [p for w in report["workers"] for p in w["problems"]]
        if any("hashes to" in p for p in problems) and any("ignored" in p for p in problems):
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.5)
    assert not report["ok"] and all(w["enforced"]["policy"] == version
                                    for w in report["workers"])


def test_shadow_is_recorded_never_enforced_and_reported_exactly(
        operated: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    start_worker(operated)
    strict = _variant(tmp_path, 4, strict=True)
    strict_version = PolicyBundle.load(strict).version
    assert _cli(publish_policy, operated, str(strict), "--shadow").exit_code == 0
    with Gate(bootstrap=operated.bootstrap, settings=operated) as gate:
        deadline = time.monotonic() + 20
        while True:                                    # until the shadow runs
            v = _read(gate, 0)
            if v.shadow is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        tickets = [_read(gate, n) for n in range(1, 8)]
        others = [gate.check(action="customers.read", agent_id="support-bot-1", timeout=5,
                             resource={"type": "Customer", "id": f"cus-{n}"})
                  for n in range(5)]
    assert all(v.allowed for v in tickets + others)               # never enforced
    assert all(v.shadow["decision"] == "deny" and v.shadow["policy_version"] == strict_version
               for v in tickets)
    assert all(v.shadow["decision"] == "allow" for v in others)
    out = _cli(shadow, operated, "report", "--from", "5m", "--json")
    report = orjson.loads(out.output)
    # the tickets read here and the probe that first saw the shadow; nothing else
    assert report["allow_to_deny"] == len(tickets) + 1, report
    assert report["deny_to_allow"] == 0, report
    assert report["by_action"] == {"tickets.read": {"allow->deny": len(tickets) + 1}}


def test_a_worker_started_after_a_publish_decides_its_first_action_under_it(
        operated: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    v5 = _variant(tmp_path, 5)
    assert _cli(publish_policy, operated, str(v5)).exit_code == 0
    start_worker(operated)
    with Gate(bootstrap=operated.bootstrap, settings=operated) as gate:
        assert _read(gate, 1).policy_version == PolicyBundle.load(v5).version


def test_two_workers_converge_on_a_promotion_and_a_rollback_restores(
        operated: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    start_worker(operated)
    start_worker(dataclasses.replace(operated, datadir=str(tmp_path / "worker-b")))
    v6, v7 = _variant(tmp_path, 6), _variant(tmp_path, 7)
    v6_version, v7_version = (PolicyBundle.load(b).version for b in (v6, v7))
    assert _cli(publish_policy, operated, str(v6)).exit_code == 0
    assert _cli(publish_policy, operated, str(v7), "--shadow").exit_code == 0
    agents = ["support-bot-1", "support-bot-2"]        # one per partition of two

    def versions(gate: Gate) -> set[str]:
        return {gate.check(action="tickets.read", agent_id=a, timeout=5,
                           resource={"type": "Ticket", "id": "T-1"}).policy_version
                for a in agents}

    with Gate(bootstrap=operated.bootstrap, settings=operated) as gate:
        deadline = time.monotonic() + 30
        while versions(gate) != {v6_version}:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert _cli(promote, operated, v7_version).exit_code == 0
        t0 = time.monotonic()
        while versions(gate) != {v7_version}:
            assert time.monotonic() - t0 < 15
            time.sleep(0.1)
        assert _cli(rollback, operated, "--kind", "policy").exit_code == 0
        while versions(gate) != {v6_version}:
            assert time.monotonic() - t0 < 30
            time.sleep(0.1)
    deadline = time.monotonic() + 20
    while True:
        out = orjson.loads(_cli(status, operated, "--json").output)
        workers = out["workers"]
        enforced = {w["enforced"]["policy"] for w in workers}
        if len(workers) >= 2 and enforced == {v6_version}:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.5)
