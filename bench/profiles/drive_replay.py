"""Profile driver: `replay` of the bench history (bench/replay.py), in this process.

Replays a generated history of a 1,000-agent fleet with signals on (as
`holdgate replay --input` in one process) and prints µs per action of CPU time,
so a profile's shares can be turned into µs per action by part:

    py-spy record -r 200 -f raw -o raw.txt -- python bench/profiles/drive_replay.py 100000
    python bench/profiles/replay_areas.py raw.txt <µs CPU per action> > replay_<when>.txt
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import fleet_bundle  # noqa: E402
from replay import make_history  # noqa: E402

from holdgate.models import SignalComputer  # noqa: E402
from holdgate.policies import PolicyBundle, PolicyEngine  # noqa: E402
from holdgate.stream import MemoryStore, Runner, Snapshot  # noqa: E402
from holdgate.stream.history import read_jsonl  # noqa: E402
from holdgate.stream.replay import replay  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    bundle_path, agents = fleet_bundle(1000)
    path = Path(tempfile.mkdtemp(prefix="hg-replay-profile-")) / "history.jsonl"
    make_history(path, agents, n)
    bundle = PolicyBundle.load(bundle_path)
    snapshot = Snapshot(engine=PolicyEngine(bundle), policy_version=bundle.version,
                        signals=SignalComputer(), partitions=4)
    runner = Runner(snapshot=snapshot, store=MemoryStore(), partitions=4, sealing=False)
    c0 = time.process_time()
    report = replay(read_jsonl(path), runner)
    cpu = time.process_time() - c0
    print(f"{report.records:,} actions: {report.rate:,.0f}/s, "
          f"{1e6 * cpu / report.records:.1f} µs CPU per action")


if __name__ == "__main__":
    main()
