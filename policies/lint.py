"""Checks of a loaded bundle against how the worker runs it (``holdgate policy validate``).

A bundle that loads is valid Cedar.  It can still misbehave under holdgate: the
worker sends Cedar any request whose resource type the schema declares, without
the schema, so an action may arrive with a resource type its ``appliesTo`` does
not list.  Cedar's validator assumes that never happens; :func:`lint_bundle`
re-checks the policies for it (see :func:`holdgate.policies.checks.
applies_to_problems`).

These are not load errors: the worker fails closed on them (``POLICY_ERROR``)
and a bundle that Cedar accepts keeps loading, so a running fleet is never
refused a bundle for them.  ``holdgate policy validate`` reports them and
exits 1, so that they are fixed before publishing.
"""
from __future__ import annotations

import json

import cedarpy

from holdgate.policies.bundle import POLICY_FILE, PRINCIPAL_TYPE, SCHEMA_FILE, PolicyBundle
from holdgate.policies.cedar_source import split_policies
from holdgate.policies.checks import applies_to_problems
from holdgate.policies.diagnostics import Problem, TextFile
from holdgate.policies.schema_info import read_schema

__all__ = ["lint_bundle"]


def lint_bundle(bundle: PolicyBundle) -> list[Problem]:
    """Problems of a loaded bundle that Cedar's validation cannot see (empty: none)."""
    file = TextFile.in_bundle(bundle.path, POLICY_FILE, bundle.sources[POLICY_FILE])
    est = json.loads(cedarpy.policies_to_json_str(file.text))
    static = est.get("staticPolicies", {})
    ordered = [static[k] for k in sorted(static, key=lambda k: int(k.removeprefix("policy")))]
    labels = [f"@id({json.dumps(pid)})" for pid in bundle.policy_ids]
    return applies_to_problems(file, split_policies(file.text), labels, ordered,
                               read_schema(bundle.schema), PRINCIPAL_TYPE, SCHEMA_FILE)
