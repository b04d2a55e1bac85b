"""State size per agent and what 100,000 agents cost the worker in memory.

What is resident: the worker's store (`MemoryStore` in replays and tests, RocksDB
in the worker) holds one encoded `AgentState.to_bytes()` blob per agent, keyed by
agent id and partition; a batch decodes only the agents it touches
(`holdgate.stream.state.BatchStates`) and drops them after encoding the changed
ones.  So the figures are:

* the encoded blob: fresh, typical, and the codec's upper bound under the default
  caps.  "Typical" is an agent after 50 actions the way the worker records them
  (observe, the outcome fed back, the request id remembered): three tools in
  turn, 40 tickets, 7 contexts, one action every 2 s;
* the store for N such agents, built for real as a `MemoryStore` (4 partitions,
  real agent-id keys, distinct blobs of 64 differently seeded typical agents),
  measured by tracemalloc and by process RSS;
* the decoded objects a batch holds at most (256 touched agents).
"""
from __future__ import annotations

import gc
import random
import resource
import tracemalloc
import uuid
from typing import Any

from holdgate.events import ActionRequest, Resource
from holdgate.models import AgentState, SignalComputer, SignalConfig
from holdgate.models.state import request_key
from holdgate.routing import partition_for
from holdgate.stream import MemoryStore

T0 = 1_790_035_200.0 + 10 * 3600
PARTS = 4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def typical_state(actions: int = 50, seed: int = 0, *, worker: bool = True) -> AgentState:
    """One agent after `actions` typical actions; `worker`: outcomes and ids recorded too."""
    rnd = random.Random(seed)
    comp = SignalComputer()
    states: dict[str, AgentState] = {}
    t = T0 + rnd.uniform(0, 3600)
    for i in range(actions):
        req = ActionRequest(request_id=str(uuid.UUID(int=rnd.getrandbits(128))), agent_id="a",
                            action=("tickets.read", "tickets.reply", "customers.read")[i % 3],
                            resource=Resource("Ticket", f"T-{(i + seed) % 40}", {}),
                            context={"n": str(i % 7)}, occurred_at=t + i * 2.0)
        comp.observe(states, req)
        if worker:
            comp.record_outcomes(states, [req], [False])
            states["a"].remember_request(request_key(req.request_id))
    return states["a"]


def run(*, agents: int = 100_000, actions_per_agent: int = 50) -> dict[str, Any]:
    typical = typical_state(actions_per_agent)
    blob = typical.to_bytes()
    observe_only = typical_state(actions_per_agent, worker=False).to_bytes()
    blobs = [typical_state(actions_per_agent, seed=s).to_bytes() for s in range(64)]
    bound = SignalConfig().max_state_bytes
    fresh = AgentState().to_bytes()
    parts = [partition_for(f"agent-{i:06d}", PARTS) for i in range(agents)]
    gc.collect()
    rss0 = _rss_mb()
    tracemalloc.start()
    store = MemoryStore()
    for i, p in enumerate(parts):                   # keys and blobs: distinct objects
        b = blobs[i % len(blobs)]
        store.apply(p, {f"agent-{i:06d}": b[:-1] + b[-1:]})
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_mb()
    decoded = [AgentState.from_bytes(blobs[i % len(blobs)]) for i in range(256)]
    batch_bytes = sum(st.memory_bytes() for st in decoded)
    sizes = sorted(len(b) for b in blobs)
    del store
    return {"agents": agents, "actions_per_agent": actions_per_agent,
            "typical_state_bytes": len(blob), "typical_observe_only_bytes": len(observe_only),
            "typical_median_bytes": sizes[len(sizes) // 2], "typical_max_bytes": sizes[-1],
            "fresh_state_bytes": len(fresh), "bound_state_bytes": bound,
            "store_mb_tracemalloc": current / 2**20,
            "store_bytes_per_agent": current / agents, "rss_delta_mb": rss1 - rss0,
            "decoded_bytes_per_agent": batch_bytes / len(decoded),
            "decoded_batch_mb": batch_bytes / 2**20,
            "bound_mb_for_all": agents * (bound + 100) / 2**20}


def report(res: dict[str, Any]) -> str:
    return "\n".join([
        f"memory: {res['agents']:,} agents, state after {res['actions_per_agent']} actions each",
        f"  encoded blob per agent: fresh {res['fresh_state_bytes']} B, typical "
        f"{res['typical_state_bytes']} B (64 seeds: median {res['typical_median_bytes']}, max "
        f"{res['typical_max_bytes']}; observe only {res['typical_observe_only_bytes']} B), "
        f"upper bound {res['bound_state_bytes']} B",
        f"  worker store (MemoryStore) for all agents: {res['store_mb_tracemalloc']:.1f} MiB "
        f"(tracemalloc; {res['store_bytes_per_agent']:.0f} B per agent with key and dict "
        f"slot), RSS +{res['rss_delta_mb']:.1f} MiB; worst case at the bound ≈ "
        f"{res['bound_mb_for_all']:.0f} MiB",
        f"  decoded (only the agents a batch touches): {res['decoded_bytes_per_agent']:.0f} B "
        f"per agent, {res['decoded_batch_mb']:.2f} MiB for a batch of 256",
    ])
