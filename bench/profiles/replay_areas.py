"""py-spy raw output of a replay -> samples by area (innermost frame that names one), then
the stacks inside the replay, function-level (no line numbers, as collapse.py), heaviest
first.  With the run's µs CPU per action, each area's share is also given in µs.

Garbage collection shows up in whatever frame allocated when a collection started.

    python bench/profiles/replay_areas.py raw.txt [µs_per_action] > replay_<when>.txt
"""
from __future__ import annotations

import collections
import re
import sys

_FRAME = re.compile(r" \((?:.*/)?([^/:]+):\d+\)$")

#: (area, substrings of a frame "function (file:line)"), checked in order, innermost first.
AREAS = (
    ("state codec: AgentState encode/decode", (
        "from_bytes (", "to_bytes (", "models/codec", "_decode_v", "_keyed_parts", "_fan_parts")),
    ("state view: BatchStates, LiveStates, marks, store", (
        "stream/state.py", "stream/store.py", "stream/marks.py", "LiveStates")),
    ("signals (models/)", ("models/",)),
    ("policy: Cedar", ("cedarpy", "is_authorized")),
    ("policy: engine (cache, key, projection)", ("policies/",)),
    ("decode: parse + validate the request", (
        "holdgate/events.py", "wire_json", "cedar_values", "stream/edges.py")),
    ("core: waves, Decision objects", ("stream/core.py", "dataclasses.py")),
    ("runner", ("stream/runner.py",)),
    ("read: read_jsonl", ("stream/history.py",)),
    ("replay loop (counting, batches, freeing them)", ("stream/replay.py",)),
)


def _area(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, needles in AREAS:
            if any(n in frame for n in needles):
                return name
    return "other"


def main() -> None:
    us = float(sys.argv[2]) if len(sys.argv) > 2 else None
    by_area: collections.Counter[str] = collections.Counter()
    stacks: collections.Counter[str] = collections.Counter()
    for line in open(sys.argv[1]):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        start = next((i for i, f in enumerate(frames)
                      if f.startswith(("replay (", "_shard_main ("))), None)
        if start is None:
            continue                    # start-up, history generation: not what is measured
        by_area[_area(stack)] += int(n)
        stacks[";".join(_FRAME.sub(r" (\1)", f) for f in frames[start:])] += int(n)
    total = sum(by_area.values())
    print(f"# {total} samples inside replay; by area" +
          (f" (µs per action at {us:.1f} µs CPU per action)" if us else ""))
    for name, n in by_area.most_common():
        print(f"# {100 * n / total:5.1f}%  {name}" +
              (f"  {us * n / total:6.1f} µs" if us else ""))
    for stack, n in stacks.most_common():
        print(f"{stack} {n}")


if __name__ == "__main__":
    main()
