"""The scenario behind ``data/state_v2.json``: agent states as codec v2 wrote them.

Why a stored fixture: workers of the previous release left codec-v2 blobs in their
changelogs, and the current code must read them and carry on computing exactly what
the previous release would have.  The blobs and the signals that follow them were
written by the previous release's own code (``models/`` at commit b259a60, codec v2),
run on this scenario::

    git archive b259a60 holdgate models | tar -x -C /tmp/head
    # lay it out as a package: /tmp/head/src/holdgate with models/ inside
    PYTHONPATH=/tmp/head/src python tests/models/state_fixture.py > tests/models/data/state_v2.json

`tests/models/test_models_state_compat.py` decodes them with the current code; it also
re-runs the scenario on the frozen reference (`reference_signals`, the same code) and
checks it writes the very same bytes, so the fixture can be regenerated from there.

Only the standard library and `holdgate` are used, so any release can run it.
"""
from __future__ import annotations

import json
import random
import sys
import uuid
from typing import Any, Callable

T0 = 1_790_035_200.0 + 5 * 3600
#: small caps: the tables evict, and some of their entries are dead at the clock
CONFIG = {"max_actions": 6, "max_fingerprints": 6, "max_fanout": 12}
AGENTS = ("fx-busy", "fx-late", "fx-one", "fx-early")


def _request(rng: random.Random, agent: str, t: float, action: str, rid: str,
             ctx: dict[str, Any], rtype: str = "Ticket") -> Any:
    from holdgate.events import ActionRequest, Resource

    return ActionRequest(request_id=str(uuid.UUID(int=rng.getrandbits(128))), agent_id=agent,
                         action=action, resource=Resource(rtype, rid, {}), context=ctx,
                         occurred_at=t)


def history(agent: str) -> list[list[Any]]:
    """Batches of requests that build `agent`'s state (deterministic)."""
    rng = random.Random(agent)
    acts = [f"tool{i % 4}.op{i}" for i in range(9)]
    out: list[list[Any]] = []
    if agent == "fx-busy":
        t = T0
        batch = []
        for i in range(200):                      # 9 actions through 6 slots, 30 resources
            t += rng.choice([0.0, 0.001, 0.4, 2.5, 6.0])
            late = t - rng.uniform(0, 4) if i % 11 == 0 else t
            batch.append(_request(rng, agent, late, rng.choice(acts), f"r{rng.randrange(30)}",
                                  {"n": i % 5}, rng.choice(["Ticket", "Customer"])))
            if len(batch) == 17:
                out.append(batch)
                batch = []
        out.append(batch)
        burst = _request(rng, agent, t + 1.0, acts[0], "r1", {"n": 0})
        out.append([_request(rng, agent, burst.occurred_at, acts[0], "r1", {"n": 0})
                    for _ in range(300)])          # counters above one byte
        t += 3_900.0                              # the early actions are dead (over 1 h)
        for i in range(30):
            t += 0.7
            out.append([_request(rng, agent, t, acts[i % 2], f"late{i}", {"i": i % 3})])
    elif agent == "fx-late":
        t = T0 + 100.0
        out.append([_request(rng, agent, t + 9.0, acts[1], "x", {})])       # the clock jumps
        out.append([_request(rng, agent, t + k, acts[k % 3], f"x{k}", {"k": k})
                    for k in range(8)])                                     # older ones
    elif agent == "fx-one":
        out.append([_request(rng, agent, T0 + 7.25, acts[2], "only", {"a": [1, 2]})])
    else:                                         # clocks near the epoch's start
        out.append([_request(rng, agent, 0.002 + 0.3 * k, acts[k % 2], f"e{k % 3}", {})
                    for k in range(12)])
    return out


def follow_ups(agent: str, clock: float) -> list[Any]:
    """Actions after the stored state: dead, evicted, live and new keys, short and long steps."""
    rng = random.Random(agent + "/next")
    plan = [(0.0, "tool0.op0", "r1", {"n": 0}), (0.0004, "tool0.op0", "r1", {"n": 0}),
            (0.05, "tool1.op1", "late1", {"i": 1}), (0.5, "tool3.op7", "r2", {"n": 2}),
            (3.0, "tool2.op2", "fresh", {}), (12.0, "tool0.op8", "r3", {"n": 3}),
            (70.0, "tool1.op5", "r1", {"n": 0}), (400.0, "tool0.op0", "r1", {"n": 0}),
            (3_700.0, "tool3.op3", "z", {"n": 1})]
    return [_request(rng, agent, clock + dt, action, rid, ctx)
            for dt, action, rid, ctx in plan]


def run(computer: Any, state_cls: Any, request_key: Callable[[str], bytes]
        ) -> dict[str, Any]:
    """The scenario on one implementation: blobs (hex), then each agent's follow-up
    signals (rows in signal-name order) computed from its decoded blob."""
    states: dict[str, Any] = {}
    remembered: dict[str, list[str]] = {}
    for agent in AGENTS:
        for k, batch in enumerate(history(agent)):
            computer.observe_batch(states, batch)
            computer.record_outcomes(states, batch, [(k + j) % 4 == 0
                                                     for j in range(len(batch))])
            for req in batch:
                states[agent].remember_request(request_key(req.request_id))
            remembered[agent] = [r.request_id for r in batch][-16:]
    blobs = {agent: states[agent].to_bytes().hex() for agent in AGENTS}
    follow: dict[str, list[list[int]]] = {}
    for agent in AGENTS:
        live = {agent: state_cls.from_bytes(bytes.fromhex(blobs[agent]))}
        rows = []
        for j, req in enumerate(follow_ups(agent, live[agent].clock)):
            sig = computer.observe_batch(live, [req])[0]
            computer.record_outcomes(live, [req], [j % 3 == 1])
            rows.append(list(sig.values()))
        follow[agent] = rows
    return {"config": CONFIG, "blobs": blobs, "remembered": remembered, "follow": follow,
            "clocks": {agent: states[agent].clock for agent in AGENTS}}


def main() -> None:
    from holdgate.models.signals import SignalComputer, SignalConfig
    from holdgate.models.state import CODEC_VERSION, AgentState, request_key

    if CODEC_VERSION != 2:
        sys.exit(f"run this with the codec-v2 release's code, not v{CODEC_VERSION}")
    out = run(SignalComputer(config=SignalConfig(**CONFIG)), AgentState, request_key)
    sys.stdout.write(dumps(out))


def dumps(out: dict[str, Any]) -> str:
    """JSON with one line per blob and per row of signals (readable diffs)."""
    lines = ["{"]
    for i, (name, value) in enumerate(out.items()):
        comma = "," if i < len(out) - 1 else ""
        if name == "follow":
            lines.append(f'  "{name}": {{')
            for j, (agent, rows) in enumerate(value.items()):
                body = ",\n      ".join(json.dumps(r) for r in rows)
                end = "," if j < len(value) - 1 else ""
                lines.append(f'    "{agent}": [\n      {body}\n    ]{end}')
            lines.append(f"  }}{comma}")
        elif isinstance(value, dict) and name != "config":
            lines.append(f'  "{name}": {{')
            items = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
            lines.append(",\n".join(items))
            lines.append(f"  }}{comma}")
        else:
            lines.append(f"  {json.dumps(name)}: {json.dumps(value)}{comma}")
    return "\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    main()
