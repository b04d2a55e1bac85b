"""Published state from pointer history, artifacts <-> bundles/models, shadow report (no Kafka)."""
from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from holdgate.artifacts import Artifact, Pointer
from holdgate.errors import ModelError, PolicyError, PolicyTestFailure
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.stream.published import Published
from holdgate.stream.shadow_report import add_verdict, shadow_report
from holdgate.stream.versions import load_model, load_policy, model_artifact, policy_artifact

T = 1_790_000_000.0


def _content(version: str, kind: Any = "policy") -> Artifact:
    return Artifact(kind=kind, version=version, files={"f.txt": version.encode()},
                    published_at=T, by="alice")


def _ptr(role: Any, version: str | None, at: float, kind: Any = "policy") -> Pointer:
    return Pointer(kind=kind, role=role, version=version, at=T + at, by="alice")


def _values(*records: Artifact | Pointer) -> dict[str, Artifact | Pointer]:
    return {r.key: r for r in records}


def test_enforced_is_the_latest_enforce_pointer_and_history_is_kept_in_order() -> None:
    values = _values(_content("v1"), _content("v2"), _ptr("enforce", "v2", 20),
                     _ptr("enforce", "v1", 10), _ptr("shadow", "v2", 5))
    pub = Published.from_values(values, "policy")
    assert pub.enforced is not None and pub.enforced.version == "v2"
    assert pub.enforced_pointer is not None and pub.enforced_pointer.at == T + 20
    assert [(p.role, p.version) for p in pub.history] == [("shadow", "v2"), ("enforce", "v1"),
                                                         ("enforce", "v2")]
    assert pub.shadow is None                 # the shadow was promoted: nothing to compare
    assert pub.problems == [] and pub.rollback_target() == "v1"
    assert Published.from_values({}, "model").enforced is None


def test_a_pointer_to_missing_content_is_a_problem_and_the_previous_version_stays() -> None:
    values = _values(_content("v1"), _ptr("enforce", "v1", 1), _ptr("enforce", "gone", 2),
                     _ptr("shadow", "gone", 3))
    pub = Published.from_values(values, "policy")
    assert pub.enforced is not None and pub.enforced.version == "v1"
    assert pub.shadow is None and pub.shadow_pointer is not None
    assert len(pub.problems) == 2 and all("gone" in p and "no content" in p
                                          for p in pub.problems)


def test_values_under_the_wrong_key_or_kind_are_ignored() -> None:
    v1, v2 = _content("v1"), _content("v2")
    old = _ptr("enforce", "v1", 1)
    values: dict[str, Any] = {v1.key: v1, "content/v9": v2,            # v2 replayed as v9
                              old.key: old,
                              _ptr("enforce", "v1", 99).key: _ptr("enforce", "v2", 2),
                              _ptr("enforce", "m", 3, kind="model").key:
                                  _ptr("enforce", "m", 3, kind="model")}
    pub = Published.from_values(values, "policy")
    assert pub.enforced is not None and pub.enforced.version == "v1"
    assert "v9" not in pub.contents and len(pub.history) == 1
    assert len(pub.problems) == 3
    assert any("mismatch" in p for p in pub.problems)
    assert any("a model record on the policy topic" in p for p in pub.problems)


def test_shadow_set_cleared_and_named_by_the_latest_shadow_pointer() -> None:
    base: list[Artifact | Pointer] = [_content("v1"), _content("v2"), _content("v3"),
                                      _ptr("enforce", "v1", 1)]
    pub = Published.from_values(_values(*base, _ptr("shadow", "v2", 2)), "policy")
    assert pub.shadow is not None and pub.shadow.version == "v2"
    pub = Published.from_values(_values(*base, _ptr("shadow", "v2", 2), _ptr("shadow", None, 3)),
                                "policy")
    assert pub.shadow is None and pub.shadow_pointer is not None
    pub = Published.from_values(_values(*base, _ptr("shadow", None, 2), _ptr("shadow", "v3", 3)),
                                "policy")
    assert pub.shadow is not None and pub.shadow.version == "v3"


def test_rollback_walks_back_the_lineage_never_forth() -> None:
    records: list[Artifact | Pointer] = [_content(v) for v in ("v1", "v2", "v3")]
    records += [_ptr("enforce", "v1", 1), _ptr("enforce", "v2", 2), _ptr("enforce", "v3", 3)]
    pub = Published.from_values(_values(*records), "policy")
    assert pub.lineage == ("v1", "v2", "v3") and pub.rollback_target() == "v2"
    records.append(_ptr("enforce", "v2", 4))               # rollback
    pub = Published.from_values(_values(*records), "policy")
    assert pub.enforced and pub.enforced.version == "v2" and pub.rollback_target() == "v1"
    records.append(_ptr("enforce", "v1", 5))               # rollback again: further back
    pub = Published.from_values(_values(*records), "policy")
    assert pub.rollback_target() is None
    records.append(_ptr("enforce", "v3", 6))               # promote v3 again
    pub = Published.from_values(_values(*records), "policy")
    assert pub.lineage == ("v1", "v3") and pub.rollback_target() == "v1"


def test_plan_and_pointers_say_what_to_publish() -> None:
    pub = Published.from_values(_values(_content("v1"), _ptr("enforce", "v1", 100)), "policy")
    assert pub.plan(_content("v1"), "enforce", by="a", reason="", now=T) == []
    with pytest.raises(ValueError, match="enforced one"):
        pub.plan(_content("v1"), "shadow", by="a", reason="", now=T)
    new = pub.plan(_content("v2"), "shadow", by="a", reason="try", now=T)   # clock behind
    assert isinstance(new[0], Artifact) and isinstance(new[1], Pointer)
    assert new[1].role == "shadow" and new[1].previous is None and new[1].at > T + 100
    promote = pub.pointers([("enforce", "v2"), ("shadow", None)], by="a", reason="p", now=T + 500)
    assert [p.previous for p in promote] == ["v1", None]
    assert promote[0].at == T + 500 < promote[1].at
    again = Published.from_values(_values(_content("v1"), _content("v2"),
                                          _ptr("enforce", "v1", 1)), "policy")
    assert [type(r) for r in again.plan(_content("v2"), "enforce", by="a", reason="",
                                        now=T + 9)] == [Pointer]    # content already there


# ---------------------------------------------------------------- versions --

@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_bundle_path(), tmp_path / "bundle"))


def test_policy_artifact_carries_the_version_verdicts_name(bundle: Path) -> None:
    from holdgate.settings import Settings
    from holdgate.stream.worker import build_snapshot

    artifact = policy_artifact(bundle, by="alice", note="CHG-1")
    snapshot = build_snapshot(Settings(policy_dir=str(bundle)))
    assert artifact.version == PolicyBundle.load(bundle).version == snapshot.policy_version
    assert sorted(artifact.files) == ["entities.json", "policy.cedar", "schema.cedarschema"]
    loaded = load_policy(Artifact.from_bytes(artifact.to_bytes()))
    assert loaded.version == artifact.version and loaded.path is None


def test_a_bundle_failing_its_cases_or_without_cases_is_refused(bundle: Path) -> None:
    case = min((bundle / "cases" / "allow").glob("*.json"))
    obj = json.loads(case.read_text())
    obj["expect"] = "deny"
    (bundle / "cases" / "deny" / case.name).write_text(json.dumps(obj))
    case.unlink()
    with pytest.raises(PolicyTestFailure) as err:
        policy_artifact(bundle, by="alice")
    assert [f.name for f in err.value.failures] == [f"deny/{case.stem}"]
    shutil.rmtree(bundle / "cases")
    with pytest.raises(PolicyError, match="no cases"):
        policy_artifact(bundle, by="alice")
    (bundle / "policy.cedar").write_text("permit (principal, action, resource")
    with pytest.raises(PolicyError, match="policy.cedar"):
        policy_artifact(bundle, by="alice")


def test_tampered_policy_files_do_not_load_under_the_claimed_version(bundle: Path) -> None:
    artifact = policy_artifact(bundle, by="alice")
    files = dict(artifact.files)
    files["policy.cedar"] += b"\n// one more line\n"
    tampered = Artifact(**{**artifact.__dict__, "files": files})
    with pytest.raises(PolicyError, match="hashes to"):
        load_policy(tampered)
    for bad in ({**artifact.files, "extra.txt": b"x"},
                {k: v for k, v in artifact.files.items() if k != "entities.json"},
                {**artifact.files, "entities.json": b"\xff[]"}):
        with pytest.raises(PolicyError):
            load_policy(Artifact(**{**artifact.__dict__, "files": bad}))
    with pytest.raises(PolicyError, match="not a policy"):
        load_policy(Artifact(**{**artifact.__dict__, "kind": "model"}))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from holdgate.events import ActionRequest
    from holdgate.models.fit import FitOptions, fit_model

    rnd = random.Random(1)
    history = [ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                                    occurred_at=T + day * 86_400 + 9 * 3600 + i * 20,
                                    resource={"type": "Ticket", "id": f"T-{rnd.randrange(50)}"},
                                    request_id=str(uuid.UUID(int=rnd.getrandbits(128))))
               for day in range(2) for i in range(300)]
    result = fit_model(history, {"support-bot-1": "support"}, FitOptions(trees=5, seed=1))
    out = tmp_path_factory.mktemp("model") / "model"
    result.model.save(out)
    return out


def test_model_artifact_round_trip_and_version(model_dir: Path) -> None:
    from holdgate.models import SignalComputer
    from holdgate.models.baseline_model import BaselineModel

    artifact = model_artifact(model_dir, by="alice")
    local = BaselineModel.load(model_dir)
    assert artifact.version == local.version == SignalComputer(model=local).model_version
    loaded = load_model(Artifact.from_bytes(artifact.to_bytes()))
    assert loaded.version == artifact.version and loaded.threshold == local.threshold


def test_tampered_or_foreign_models_are_refused(model_dir: Path, tmp_path: Path) -> None:
    artifact = model_artifact(model_dir, by="alice")
    manifest = json.loads(artifact.files["manifest.json"])
    manifest["meta"]["calibration"]["threshold"] = 0.1
    tampered = {**artifact.files, "manifest.json": json.dumps(manifest).encode()}
    with pytest.raises(ModelError, match="published model") as err:
        load_model(Artifact(**{**artifact.__dict__, "files": tampered}))
    assert "/tmp" not in str(err.value)
    renamed = Artifact(**{**artifact.__dict__, "version": "sha256:0000000000000000"})
    with pytest.raises(ModelError, match="hashes to"):
        load_model(renamed)
    with pytest.raises(ModelError):
        model_artifact(tmp_path, by="alice")


# ----------------------------------------------------------- shadow report --

def _verdict(rid: str, decision: str, codes: list[str], shadow: dict[str, Any] | None,
             agent: str = "support-bot-1", action: str = "tickets.read",
             signals: dict[str, int] | None = None) -> dict[str, Any]:
    v: dict[str, Any] = {
        "schema_version": 1, "request_id": rid, "agent_id": agent, "decision": decision,
        "reasons": [{"code": c, "message": c.lower(), "policy_id": f"p-{c.lower()}"}
                    for c in codes],
        "policy_version": "sha256:enforced", "model_version": "sha256:m1",
        "signals": signals or {"rate_1s": 1, "anomaly": 10}, "action_digest": "sha256:x",
        "decided_at": T, "expires_at": T + 30,
        "request": {"action": action, "agent_id": agent}}
    if shadow is not None:
        v["shadow"] = shadow
    return v


def _shadow(decision: str, codes: list[str], signals: dict[str, int] | None = None,
            ) -> dict[str, Any]:
    return {"decision": decision, "policy_version": "sha256:candidate",
            "model_version": "sha256:m2", "signals": signals or {},
            "reasons": [{"code": c, "message": "", "policy_id": f"p-{c.lower()}"}
                        for c in codes]}


def crafted_verdicts() -> list[dict[str, Any]]:
    """Exactly: 2 same, 1 same decision other codes, 2 allow->deny, 1 deny->allow."""
    return [
        _verdict("r1", "allow", ["PERMITTED"], _shadow("allow", ["PERMITTED"])),
        _verdict("r2", "deny", ["NO_PERMIT"], _shadow("deny", ["NO_PERMIT"])),
        _verdict("r3", "deny", ["SENSITIVE_DATA"], _shadow("deny", ["RATE_LIMIT"])),
        _verdict("r4", "allow", ["PERMITTED"], _shadow("deny", ["RATE_LIMIT"], {"rate_1s": 9}),
                 agent="billing-bot-1", action="payments.refund"),
        _verdict("r5", "allow", ["PERMITTED"], _shadow("deny", ["ANOMALY"], {"anomaly": 950})),
        _verdict("r6", "deny", ["SENSITIVE_DATA"], _shadow("allow", ["PERMITTED"]),
                 action="customers.export"),
        _verdict("r7", "allow", ["PERMITTED"], None),                        # no shadow ran
    ]


def test_shadow_report_counts_exactly_the_disagreements() -> None:
    report = shadow_report(crafted_verdicts(), max_examples=5)
    assert (report.actions, report.same, report.codes_changed) == (6, 2, 1)
    assert report.flips == {"allow->deny": 2, "deny->allow": 1}
    assert dict(report.by_agent["billing-bot-1"]) == {"allow->deny": 1}
    assert dict(report.by_agent["support-bot-1"]) == {"allow->deny": 1, "deny->allow": 1}
    assert dict(report.by_action["customers.export"]) == {"deny->allow": 1}
    assert report.before == {"policy_version": "sha256:enforced", "model_version": "sha256:m1"}
    assert report.after == {"policy_version": "sha256:candidate", "model_version": "sha256:m2"}
    examples = {e.request_id: e for e in report.examples}
    assert examples["r4"].signals_changed == {"rate_1s": (1, 9)}
    assert examples["r5"].signals_changed == {"anomaly": (10, 950)}
    assert examples["r6"].after == ("allow", ("PERMITTED",), ("p-permitted",))
    lines = report.lines("enforced", "shadow")
    assert lines[0] == ("6 actions: 2 same, 1 same decision with other reasons, "
                        "2 allow->deny, 1 deny->allow")


def test_unreadable_shadows_are_not_compared() -> None:
    from holdgate.stream.backtest import FlipReport

    report = FlipReport()
    bad = _verdict("r1", "allow", ["PERMITTED"], {"decision": "maybe", "reasons": []})
    assert add_verdict(report, bad) == "unreadable"
    not_an_object: Any = "nope"
    assert add_verdict(report, _verdict("r2", "allow", [], not_an_object)) == "unreadable"
    assert add_verdict(report, _verdict("r3", "allow", [], None)) == "no-shadow"
    assert report.actions == 0


def test_signed_table_then_published_refuses_a_replay_under_another_key() -> None:
    """The worker's path: SignedTable keeps values by key (parse sees the value only)."""
    from holdgate.artifacts import parse_value
    from holdgate.keys import Signer, TrustStore
    from holdgate.signing import sign_headers
    from holdgate.stream.signed_table import SignedTable

    operator = Signer.generate()
    table: SignedTable[Artifact | Pointer] = SignedTable(
        "unused:9092", "policies", TrustStore([operator.public_key]), parse_value)
    v1, v2 = _content("v1"), _content("v2")
    old, new = _ptr("enforce", "v1", 1), _ptr("enforce", "v2", 2)
    for record in (v1, v2, old, new):
        value = record.to_bytes()
        assert table.offer(record.key.encode(), value, sign_headers(operator, value))
    unsigned = _ptr("enforce", "v1", 3)
    assert not table.offer(unsigned.key.encode(), unsigned.to_bytes(), ())
    replay = old.to_bytes()                           # v1's signed pointer, made "newest"
    assert table.offer(_ptr("enforce", "v1", 9).key.encode(), replay,
                       sign_headers(operator, replay))
    pub = Published.from_values(table.values, "policy")
    assert pub.enforced is not None and pub.enforced.version == "v2"
    assert len(pub.problems) == 1 and "mismatch" in pub.problems[0]
