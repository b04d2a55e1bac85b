"""Publish, promote, rollback, status and the shadow report, on the real broker."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from kafka import KafkaProducer

from holdgate.artifacts import Artifact, Pointer, parse_record
from holdgate.cli.publish_cmds import model, promote, publish_policy, rollback, shadow, status
from holdgate.keys import Signer, generate_keypair, load_signer
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.settings import Settings
from holdgate.signing import sign_headers, verify_record
from holdgate.status import WorkerStatus
from holdgate.stream.logread import offset_bounds, open_consumer, scan
from holdgate.stream.published import read_published
from holdgate.topics import ensure_topics


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    private, public, _ = generate_keypair(tmp_path / "op", "operator")
    return make_settings(operator_keys=str(public), operator_key_file=str(private))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_bundle_path(), tmp_path / "bundle"))


def _variant(bundle: Path, n: int) -> Path:
    """Same decisions, another version (the text is hashed, comments included)."""
    out = Path(shutil.copytree(bundle, bundle.parent / f"bundle-{n}"))
    (out / "policy.cedar").write_text((out / "policy.cedar").read_text() + f"\n// v{n}\n")
    return out


def _run(command: Any, settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), obj=settings, catch_exceptions=False)


def _records(settings: Settings, topic: str) -> list[Any]:
    consumer = open_consumer(settings, "test-read")
    try:
        return list(scan(consumer, topic, offset_bounds(consumer, topic, [0])))
    finally:
        consumer.close()


def _send(settings: Settings, topic: str, items: list[tuple[bytes, bytes, Signer | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        for key, value, signer in items:
            headers = list(sign_headers(signer, value)) if signer else []
            producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_publish_needs_an_operator_key_that_workers_trust(settings: Settings, bundle: Path,
                                                          tmp_path: Path) -> None:
    out = _run(publish_policy, settings.with_(operator_key_file=""), str(bundle))
    assert out.exit_code == 2 and "no operator key" in out.output
    stranger, _, kid = generate_keypair(tmp_path / "x", "stranger")
    out = _run(publish_policy, settings, str(bundle), "--key", str(stranger))
    assert out.exit_code == 2 and kid in out.output and "would ignore" in out.output
    out = _run(publish_policy, settings.with_(operator_keys=""), str(bundle))
    assert out.exit_code == 2 and "HOLDGATE_OPERATOR_KEYS" in out.output


def test_publish_puts_signed_content_and_pointer_on_the_topic(settings: Settings,
                                                              bundle: Path) -> None:
    out = _run(publish_policy, settings, str(bundle), "--note", "CHG-1", "--by", "alice")
    assert out.exit_code == 0, out.output
    version = PolicyBundle.load(bundle).version
    assert f"published policy {version}" in out.output
    records = _records(settings, settings.policies_topic)
    assert [r.key.decode().split("/")[0] for r in records] == ["content", "pointer"]
    for r in records:
        assert verify_record(settings.operators(), r.value, r.headers) is None
    content, pointer = (parse_record(r.key, r.value) for r in records)
    assert isinstance(content, Artifact) and isinstance(pointer, Pointer)
    assert content.version == version and content.by == "alice" and content.note == "CHG-1"
    assert content.files["policy.cedar"] == (bundle / "policy.cedar").read_bytes()
    assert (pointer.role, pointer.version, pointer.previous) == ("enforce", version, None)
    again = _run(publish_policy, settings, str(bundle))
    assert again.exit_code == 0 and "nothing published" in again.output
    shadowed = _run(publish_policy, settings, str(bundle), "--shadow")
    assert shadowed.exit_code == 1 and "enforced one" in shadowed.output
    assert len(_records(settings, settings.policies_topic)) == 2


def test_a_bundle_failing_its_cases_is_refused_before_anything_is_sent(
        settings: Settings, bundle: Path) -> None:
    case = min((bundle / "cases" / "allow").glob("*.json"))
    obj = json.loads(case.read_text())
    obj["expect"] = "deny"
    (bundle / "cases" / "deny" / case.name).write_text(json.dumps(obj))
    case.unlink()
    out = _run(publish_policy, settings, str(bundle))
    assert out.exit_code == 1 and "refused: 1 case(s)" in out.output and case.stem in out.output
    assert len(out.output.strip().splitlines()) == 1
    ensure_topics(settings)
    assert _records(settings, settings.policies_topic) == []


def test_size_limit_refused_before_sending_and_a_large_bundle_travels(
        settings: Settings, bundle: Path) -> None:
    policy = (bundle / "policy.cedar").read_text()
    # base64 of 6.5 MiB is over 8 MiB: refused, and nothing reaches the topic
    (bundle / "policy.cedar").write_text(policy + "\n// " + "x" * (6_500_000) + "\n")
    out = _run(publish_policy, settings, str(bundle))
    assert out.exit_code == 1 and "refused" in out.output and "8,388,608" in out.output
    assert "not split" in out.output
    # 5 MB of incompressible text (about 6.7 MB as base64, gzip-compressed over 1 MiB): fits
    (bundle / "policy.cedar").write_text(policy + "\n// " + secrets.token_hex(2_500_000) + "\n")
    out = _run(publish_policy, settings, str(bundle))
    assert out.exit_code == 0, out.output
    published, read = read_published(settings, "policy")
    assert published.enforced is not None and not read.rejected
    assert published.enforced.version == PolicyBundle.load(bundle).version


def test_promote_and_rollback_keep_the_pointer_history(settings: Settings,
                                                       bundle: Path) -> None:
    v1, v2, v3 = (PolicyBundle.load(b).version
                  for b in (bundle, _variant(bundle, 2), _variant(bundle, 3)))
    assert _run(publish_policy, settings, str(bundle)).exit_code == 0
    assert _run(publish_policy, settings, str(bundle.parent / "bundle-2"),
                "--shadow").exit_code == 0
    out = _run(promote, settings, v2[:20], "--reason", "shadow clean")
    assert out.exit_code == 0, out.output
    assert f"policy enforce: {v1} -> {v2}" in out.output and "policy shadow:" in out.output
    out = _run(rollback, settings, "--reason", "oops")
    assert out.exit_code == 0 and f"{v2} -> {v1}" in out.output, out.output
    out = _run(rollback, settings)
    assert out.exit_code == 1 and "nothing before it" in out.output
    assert _run(publish_policy, settings, str(bundle.parent / "bundle-3")).exit_code == 0
    assert _run(rollback, settings, "--kind", "policy").exit_code == 0
    published, _ = read_published(settings, "policy")
    assert [(p.role, p.version, p.previous) for p in published.history] == [
        ("enforce", v1, None), ("shadow", v2, None), ("enforce", v2, v1), ("shadow", None, v2),
        ("enforce", v1, v2), ("enforce", v3, v1), ("enforce", v1, v3)]
    assert published.enforced and published.enforced.version == v1
    assert published.shadow is None and published.problems == []
    assert [p.reason for p in published.history][2:5] == ["shadow clean", "shadow clean", "oops"]
    missing = _run(promote, settings, "sha256:" + "0" * 64)
    assert missing.exit_code == 1 and "no published" in missing.output
    out = _run(rollback, settings, "--kind", "model")
    assert out.exit_code == 1 and "no model" in out.output


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny fitted models (same arrays, other metadata: two versions)."""
    import dataclasses
    import random
    import uuid

    from holdgate.events import ActionRequest
    from holdgate.models.fit import FitOptions, fit_model

    rnd, t0 = random.Random(1), 1_790_000_000.0
    history = [ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                                    occurred_at=t0 + day * 86_400 + i * 20,
                                    resource={"type": "Ticket", "id": f"T-{rnd.randrange(50)}"},
                                    request_id=str(uuid.UUID(int=rnd.getrandbits(128))))
               for day in range(2) for i in range(300)]
    fitted = fit_model(history, {"support-bot-1": "support"}, FitOptions(trees=5, seed=1)).model
    root = tmp_path_factory.mktemp("models")
    fitted.save(root / "m1")
    dataclasses.replace(fitted, meta={**fitted.meta, "note": "refit"}).save(root / "m2")
    return root / "m1", root / "m2"


def test_models_publish_shadow_promote_and_clear(settings: Settings, bundle: Path,
                                                 models: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    from holdgate.models.baseline_model import BaselineModel

    m1, m2 = (BaselineModel.load(m).version for m in models)
    assert m1 != m2
    out = _run(model, settings, "publish", str(models[0]), "--note", "first fit")
    assert out.exit_code == 0 and f"published model {m1}" in out.output, out.output
    assert _run(publish_policy, settings, str(bundle)).exit_code == 0
    out = _run(rollback, settings)                       # the policy changed last
    assert out.exit_code == 1 and "policy" in out.output and "nothing before it" in out.output
    assert _run(model, settings, "publish", str(models[1]), "--shadow").exit_code == 0
    assert _run(publish_policy, settings, str(_variant(bundle, 2)), "--shadow").exit_code == 0
    out = _run(shadow, settings, "clear", "--kind", "policy")
    assert out.exit_code == 0 and "policy shadow:" in out.output and "model" not in out.output
    assert read_published(settings, "policy")[0].shadow is None
    assert read_published(settings, "model")[0].shadow.version == m2  # type: ignore[union-attr]
    out = _run(promote, settings, m2, "--kind", "model")
    assert out.exit_code == 0 and f"model enforce: {m1} -> {m2}" in out.output
    published, read = read_published(settings, "model")
    assert published.enforced and published.enforced.version == m2 and published.shadow is None
    assert not read.rejected and published.rollback_target() == m1
    assert "nothing published" in _run(shadow, settings, "clear").output
    out = _run(model, settings, "publish", str(tmp_path))
    assert out.exit_code == 1 and out.output.startswith("Error: refused: ")


def _status(worker: str, updated_at: float, policy: str | None) -> WorkerStatus:
    return WorkerStatus(worker=worker, host="h", pid=os.getpid(),
                        enforced={"policy": policy, "model": None},
                        shadow={"policy": None, "model": None}, since=updated_at - 5,
                        updated_at=updated_at, partitions=[0, 1], ready=True, problems=[])


def test_status_shows_pointers_and_verified_workers(settings: Settings, bundle: Path,
                                                    verdict_keys: dict[str, str]) -> None:
    from holdgate.cli import cli
    from holdgate.cli.policy_cmds import policy

    version = PolicyBundle.load(bundle).version
    assert _run(publish_policy, settings, str(bundle), "--note", "CHG-9").exit_code == 0
    worker_key = load_signer(verdict_keys["signing_key_file"])
    fresh = _status("host-a:1", time.time(), version)
    _send(settings, settings.status_topic, [(b"host-a:1", fresh.to_bytes(), worker_key)])
    out = _run(status, settings, "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    assert view["ok"] and view["published"]["policy"]["enforced"] == version
    assert view["published"]["policy"]["enforced_pointer"]["reason"] == "CHG-9"
    assert view["published"]["model"]["enforced"] is None
    assert [w["worker"] for w in view["workers"]] == ["host-a:1"]

    stale = _status("host-b:2", time.time() - 45, "sha256:old")
    _send(settings, settings.status_topic, [
        (b"host-b:2", stale.to_bytes(), worker_key),
        (b"host-c:3", _status("host-c:3", time.time(), version).to_bytes(), None),  # unsigned
        (b"host-d:4", fresh.to_bytes(), worker_key)])              # replayed under another key
    view = json.loads(_run(status, settings, "--json").output)
    assert not view["ok"] and [w["worker"] for w in view["workers"]] == ["host-a:1", "host-b:2"]
    assert view["workers"][1]["flags"][0].startswith("stale: last status 4")
    assert any("published" in f for f in view["workers"][1]["flags"])
    assert sum("ignored" in f for f in view["flags"]) == 2

    # registered as the lead will register it: through the real `holdgate` group
    policy.add_command(publish_policy, "publish")
    for command in (model, promote, rollback, shadow, status):
        cli.add_command(command)
    out = CliRunner().invoke(cli, ["status"], env=settings.to_env())
    assert out.exit_code == 1, out.output
    assert f"policy  enforce  {version[:19]}" in out.output and "CHG-9" in out.output
    assert "! stale: last status" in out.output and "signed as the status of" in out.output
    assert CliRunner().invoke(cli, ["policy", "publish", "--help"]).exit_code == 0


def _verdict(rid: str, decision: str, code: str, shadow: tuple[str, str] | None,
             action: str = "tickets.read", signals: dict[str, int] | None = None) -> bytes:
    v: dict[str, Any] = {
        "schema_version": 1, "request_id": rid, "agent_id": "support-bot-1",
        "decision": decision, "reasons": [{"code": code, "message": "", "policy_id": "p1"}],
        "policy_version": "sha256:enforced", "model_version": None, "signals": {"rate_1s": 1},
        "action_digest": "sha256:x", "decided_at": time.time(), "expires_at": time.time() + 30,
        "request": {"action": action}}
    if shadow:
        v["shadow"] = {"decision": shadow[0], "policy_version": "sha256:candidate",
                       "model_version": None, "signals": signals or {},
                       "reasons": [{"code": shadow[1], "message": "", "policy_id": "p2"}]}
    return orjson.dumps(v)


@pytest.fixture
def verdict_signer(tmp_path: Path) -> Iterator[tuple[Signer, str]]:
    signer = Signer.generate()
    pub = tmp_path / "test-worker.pub"
    pub.write_bytes(signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    yield signer, str(pub)


def test_shadow_report_counts_exactly_the_crafted_disagreements(
        settings: Settings, verdict_signer: tuple[Signer, str]) -> None:
    signer, pub = verdict_signer
    settings = settings.with_(trusted_keys=pub)
    ensure_topics(settings)
    records = [
        _verdict("r1", "allow", "PERMITTED", ("allow", "PERMITTED")),
        _verdict("r2", "deny", "SENSITIVE_DATA", ("deny", "RATE_LIMIT")),      # other reasons
        _verdict("r3", "allow", "PERMITTED", ("deny", "RATE_LIMIT"), "emails.send",
                 {"rate_1s": 40}),
        _verdict("r4", "deny", "NO_PERMIT", ("allow", "PERMITTED"), "customers.export"),
        _verdict("r5", "allow", "PERMITTED", None),                            # no shadow
    ]
    forged = _verdict("r6", "deny", "NO_PERMIT", ("allow", "PERMITTED"))
    _send(settings, settings.verdicts_topic, [(b"support-bot-1", r, signer) for r in records] +
          [(b"support-bot-1", forged, None), (b"support-bot-1", forged, Signer.generate())])
    out = _run(shadow, settings, "report", "--from", "10m", "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert (got["records"], got["unverified"], got["without_shadow"], got["unreadable"]) == \
        (7, 2, 1, 0)
    assert (got["actions"], got["same"], got["codes_changed"]) == (4, 1, 1)
    assert (got["allow_to_deny"], got["deny_to_allow"]) == (1, 1)
    assert got["by_action"] == {"customers.export": {"deny->allow": 1},
                                "emails.send": {"allow->deny": 1}}
    flip = next(e for e in got["examples"] if e["request_id"] == "r3")
    assert flip["signals_changed"] == {"rate_1s": [1, 40]}
    out = _run(shadow, settings, "report", "--from", "10m")
    assert "4 actions: 1 same, 1 same decision with other reasons, 1 allow->deny, " \
           "1 deny->allow" in out.output
    assert "7 verdicts read: 4 compared, 1 without a shadow, 2 not verified" in out.output
    out = _run(shadow, settings, "report", "--from", "10m", "--fail-on", "deny-to-allow")
    assert out.exit_code == 1
    out = _run(shadow, settings.with_(trusted_keys=""), "report", "--from", "10m")
    assert out.exit_code == 2 and "trusted worker keys" in out.output
