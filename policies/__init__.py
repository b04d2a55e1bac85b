"""Cedar policy bundles and the engine that decides batches of actions with them.

Importable as ``holdgate.policies`` (the top-level ``policies/`` folder is
mapped there by packaging; never import it as bare ``policies``).

    bundle = PolicyBundle.load(default_bundle_path())
    engine = PolicyEngine(bundle)
    decisions = engine.decide_many([(request, {"rate_1s": 3})])
"""
from __future__ import annotations

from holdgate.policies.bundle import (
    ENTITIES_FILE,
    POLICY_FILE,
    SCHEMA_FILE,
    PolicyBundle,
    PolicyInfo,
    bundle_version,
    default_bundle_path,
)
from holdgate.policies.cases import Case, CaseResult, load_cases, run_cases
from holdgate.policies.engine import SIGNAL_NAMES, PolicyDecision, PolicyEngine

__all__ = [
    "PolicyBundle", "PolicyInfo", "PolicyEngine", "PolicyDecision", "SIGNAL_NAMES",
    "Case", "CaseResult", "load_cases", "run_cases", "bundle_version", "default_bundle_path",
    "POLICY_FILE", "SCHEMA_FILE", "ENTITIES_FILE",
]
