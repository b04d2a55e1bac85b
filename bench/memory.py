"""State size per agent and memory for 100,000 agents.

The worker's table holds one `AgentState.to_bytes()` blob per agent (Faust's
memory store is a dict of bytes), so the measured figure is that dict built
for real: N agents, each after a realistic burst of actions, process RSS and
tracemalloc before and after, against the codec's upper bound per agent.
"""
from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from typing import Any

from holdgate.events import ActionRequest
from holdgate.models import AgentState, SignalComputer, SignalConfig


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _typical_state(actions: int, t0: float) -> bytes:
    comp = SignalComputer()
    states: dict[str, AgentState] = {}
    for i in range(actions):
        req = ActionRequest.create(agent_id="a", action=("tickets.read", "tickets.reply",
                                                         "customers.read")[i % 3],
                                   resource={"type": "Ticket", "id": f"T-{i % 40}"},
                                   context={"n": str(i % 7)}, occurred_at=t0 + i * 2.0)
        comp.observe(states, req)
    return states["a"].to_bytes()


def run(*, agents: int = 100_000, actions_per_agent: int = 50) -> dict[str, Any]:
    t0 = time.time()
    typical = _typical_state(actions_per_agent, t0)
    bound = SignalConfig().max_state_bytes
    fresh = AgentState().to_bytes()
    gc.collect()
    rss0 = _rss_mb()
    tracemalloc.start()
    table: dict[bytes, bytes] = {}
    for i in range(agents):
        blob = bytearray(typical)
        blob[-1:] = typical[-1:]          # a distinct object per agent, as the store has
        table[f"agent-{i:06d}".encode()] = bytes(blob)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_mb()
    return {"agents": agents, "actions_per_agent": actions_per_agent,
            "typical_state_bytes": len(typical), "fresh_state_bytes": len(fresh),
            "bound_state_bytes": bound, "table_mb_tracemalloc": current / 2**20,
            "rss_delta_mb": rss1 - rss0,
            "bound_mb_for_all": agents * (bound + 100) / 2**20}


def report(res: dict[str, Any]) -> str:
    return "\n".join([
        f"memory: {res['agents']:,} agents, state after {res['actions_per_agent']} actions each",
        f"  state per agent: fresh {res['fresh_state_bytes']} B, typical "
        f"{res['typical_state_bytes']} B, upper bound {res['bound_state_bytes']} B",
        f"  table for all agents: {res['table_mb_tracemalloc']:.1f} MiB (tracemalloc), "
        f"RSS +{res['rss_delta_mb']:.1f} MiB; worst case at the bound ≈ "
        f"{res['bound_mb_for_all']:.0f} MiB",
    ])
