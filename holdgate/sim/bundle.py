"""A policy bundle for a simulated fleet, so its history replays as is.

The worker denies unknown agents (UNKNOWN_AGENT) and takes the attributes
policies read (``pii_level``, ``sensitivity``, ``amount_cents``,
``environment``) from ``entities.json``; a simulated action against the
default bundle would therefore mostly be denied for reasons that say nothing
about behaviour.  This writes the default policies and schema (or those of
``source``), its cases, and an ``entities.json`` holding the source's own
entities (so the copied cases still pass) plus every simulated agent with its
role, team and owner, and every simulated resource that belongs in an entity
store.  Tickets, invoices and emails stay out: they are transient, and the
policies read nothing of them that the request does not carry.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import orjson

from holdgate.settings import Settings
from holdgate.sim.world import Fleet

__all__ = ["fleet_entities", "write_bundle", "BUNDLE_FILES"]

BUNDLE_FILES = ("policy.cedar", "schema.cedarschema")
ENTITIES = "entities.json"
CASES = "cases"


def _uid(etype: str, eid: str) -> dict[str, str]:
    return {"type": etype, "id": eid}


def fleet_entities(fleet: Fleet) -> list[dict[str, Any]]:
    """Cedar entity JSON for the fleet's roles, teams, agents and stored resources."""
    out: list[dict[str, Any]] = []
    for role in sorted({a.role for a in fleet.agents}):
        out.append({"uid": _uid("Role", role), "attrs": {}, "parents": []})
    for team in sorted({a.team for a in fleet.agents}):
        out.append({"uid": _uid("Team", team), "attrs": {}, "parents": []})
    for a in fleet.agents:
        out.append({"uid": _uid("Agent", a.agent_id),
                    "attrs": {"role": a.role, "team": a.team, "owner": a.owner},
                    "parents": [_uid("Role", a.role), _uid("Team", a.team)]})
    for e in fleet.world.entities():
        out.append({"uid": _uid(e.type, e.id), "attrs": dict(e.attrs), "parents": []})
    return out


def write_bundle(directory: str | Path, fleet: Fleet, *, source: str | Path | None = None) -> Path:
    """Write the bundle for ``fleet`` into ``directory`` (created; bundle files replaced).

    ``source`` is the bundle whose policies, schema, cases and base entities
    are used (default: the one shipped with holdgate).  The source's entities
    come first and win on a clash, so its cases keep their meaning.
    """
    src = Path(source) if source is not None else Settings().policy_path
    dst = Path(directory)
    dst.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        shutil.copyfile(src / name, dst / name)
    if (src / CASES).is_dir():
        shutil.copytree(src / CASES, dst / CASES, dirs_exist_ok=True)
    base: list[dict[str, Any]] = []
    if (src / ENTITIES).is_file():
        base = json.loads((src / ENTITIES).read_text(encoding="utf-8"))
    seen = {(e["uid"]["type"], e["uid"]["id"]) for e in base}
    merged = list(base)
    for entity in fleet_entities(fleet):
        key = (entity["uid"]["type"], entity["uid"]["id"])
        if key not in seen:
            seen.add(key)
            merged.append(entity)
    # One entity per line: readable, and a diff between two seeds stays legible.
    text = b"[\n" + b",\n".join(orjson.dumps(e) for e in merged) + b"\n]\n"
    (dst / ENTITIES).write_bytes(text)
    return dst
