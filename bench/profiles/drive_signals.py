"""Profile driver: signals and state codec only, the way the worker calls them.

Per batch of 256: decode the touched agents' blobs, then per wave (one action per
agent) `observe_batch` and `record_outcomes` (every 7th action denied), then
encode the touched agents.  Prints µs per action (CPU time) for signals and codec.

    py-spy record -r 500 -f raw -o raw.txt -- python bench/profiles/drive_signals.py fleet model
    python bench/profiles/collapse.py raw.txt > bench/profiles/<what it shows>.txt

``fleet``: 1,000 agents (a batch is one wave of 256 distinct agents); ``busy``: 6
agents (~43 waves of 6 per batch).  ``model``: with the model fitted by
bench/decide.py's `fitted_model` (cached in /tmp/hg-bench-model for reruns).
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decide import T_RUN, _request, fitted_model  # noqa: E402
from common import fleet_bundle  # noqa: E402

from holdgate.models import AgentState, SignalComputer  # noqa: E402
from holdgate.policies import PolicyBundle  # noqa: E402

CACHE = Path("/tmp/hg-bench-model/model")


def waves(batch):
    out, seen = [], {}
    for r in batch:
        k = seen.get(r.agent_id, 0)
        seen[r.agent_id] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(r)
    return out


def model_for(fleet):
    from holdgate.models.baseline_model import BaselineModel

    if not CACHE.exists():
        path, _ = fleet_bundle(1000)
        m = fitted_model(PolicyBundle.load(path), fleet)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        m.save(CACHE)
    return BaselineModel.load(CACHE)


def run(reqs, model, batch=256, roles=None):
    comp = SignalComputer(model=model, roles=roles)
    store: dict[str, bytes] = {}
    plan = [waves(reqs[i:i + batch]) for i in range(0, len(reqs), batch)]
    sig = codec = 0.0
    k = 0
    for ws in plan:
        c0 = time.process_time()
        states = {}
        for w in ws:
            for r in w:
                if r.agent_id not in states:
                    b = store.get(r.agent_id)
                    states[r.agent_id] = AgentState.from_bytes(b) if b else AgentState()
        c1 = time.process_time()
        for w in ws:
            comp.observe_batch(states, w)
            den = []
            for _ in w:
                k += 1
                den.append(k % 7 == 0)
            comp.record_outcomes(states, w, den)
        c2 = time.process_time()
        for a, st in states.items():
            st.remember_request(a.encode()[:8].ljust(8, b"\0"))
            store[a] = st.to_bytes()
        c3 = time.process_time()
        sig += c2 - c1
        codec += (c1 - c0) + (c3 - c2)
    return sig / len(reqs) * 1e6, codec / len(reqs) * 1e6, store


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "fleet"
    with_model = len(sys.argv) > 2 and sys.argv[2] == "model"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 12_000
    fleet = [f"bench-agent-{i:05d}" for i in range(1000)]
    model = model_for(fleet) if with_model else None
    rnd = random.Random(1)
    reqs = [_request(i, T_RUN + i * 0.05, fleet if which == "fleet" else None, rnd)
            for i in range(n)]
    path, _ = fleet_bundle(1000)
    roles = PolicyBundle.load(path).agent_roles
    for _ in range(3):
        s, c, store = run(reqs, model, roles=roles)
        sizes = sorted(len(b) for b in store.values())
        print(f"{which} {'model' if with_model else 'no model'}: signals {s:.1f} µs/action, "
              f"codec {c:.1f} µs/action, blob median {sizes[len(sizes) // 2]} B", flush=True)


if __name__ == "__main__":
    main()
