"""Snapshot assembly for hot swaps, and the refusal to decide under unknown versions."""
from __future__ import annotations

import dataclasses

from holdgate.events import ActionRequest, encode
from holdgate.policies import PolicyBundle, default_bundle_path
from holdgate.settings import Settings
from holdgate.stream import MemoryStore, RawRecord
from holdgate.stream.swap import VERSIONS_UNKNOWN, assemble
from holdgate.stream.worker import build_runner

T0 = 1_790_000_000.0


def _strict() -> PolicyBundle:
    policy = (default_bundle_path() / "policy.cedar").read_text()
    start = policy.index('@id("support-tickets")')
    policy = policy[:start] + policy[policy.index(";", start) + 1:]
    return PolicyBundle.from_sources(
        policy=policy, schema=(default_bundle_path() / "schema.cedarschema").read_text(),
        entities=(default_bundle_path() / "entities.json").read_text(), origin="strict")


def _read(n: int) -> RawRecord:
    req = ActionRequest.create(agent_id="support-bot-1", action="tickets.read",
                               resource={"type": "Ticket", "id": f"T-{n}"},
                               occurred_at=T0 + n)
    return RawRecord(key=b"support-bot-1", value=encode(req), partition=0, offset=n,
                     timestamp=T0 + n)


def test_assemble_names_versions_and_carries_a_policy_shadow() -> None:
    settings = Settings(partitions=1)
    bundle, strict = PolicyBundle.load(default_bundle_path()), _strict()
    plain = assemble(settings, bundle, None)
    assert plain.policy_version == bundle.version and plain.shadow is None
    shadowed = assemble(settings, bundle, None, shadow_bundle=strict)
    assert shadowed.shadow is not None and shadowed.shadow.policy_version == strict.version
    assert shadowed.shadow.signals is None              # a policy-only candidate
    runner = build_runner(settings, MemoryStore(), snapshot=shadowed)
    runner.sealing = False
    [d] = runner.run([_read(1)], decided_at=T0 + 1).decisions
    assert d.allowed and d.policy_version == bundle.version
    assert d.shadow is not None and d.shadow["decision"] == "deny"
    assert d.shadow["policy_version"] == strict.version


def test_unknown_versions_deny_everything_state_recovering_and_touch_nothing() -> None:
    settings = Settings(partitions=1)
    snapshot = dataclasses.replace(assemble(settings, PolicyBundle.load(default_bundle_path()),
                                            None), unavailable=VERSIONS_UNKNOWN)
    store = MemoryStore()
    runner = build_runner(settings, store, snapshot=snapshot)
    runner.sealing = False
    out = runner.run([_read(1), _read(2)], decided_at=T0 + 2)
    assert [d.codes for d in out.decisions] == [["STATE_RECOVERING"]] * 2
    assert "not known yet" in out.decisions[0].reasons[0].message
    runner.apply(out.writes)
    assert store.get(0, "support-bot-1") is None        # nothing learned from them
