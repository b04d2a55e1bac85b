"""py-spy raw output -> function-level collapsed stacks (no line numbers; flamegraph input),
sorted by weight, plus a header with the top self and inclusive frames."""
from __future__ import annotations

import collections
import re
import sys

_FRAME = re.compile(r" \((?:.*/)?([^/:]+):\d+\)$")


def main() -> None:
    stacks: collections.Counter[str] = collections.Counter()
    for line in open(sys.argv[1]):
        stack, _, n = line.rstrip().rpartition(" ")
        frames = [_FRAME.sub(r" (\1)", f) for f in stack.split(";")]
        if not any(f.startswith("run (") for f in frames):
            continue                       # imports, fitting: not what is measured
        start = frames.index(next(f for f in frames if f.startswith("run (")))
        stacks[";".join(frames[start:])] += int(n)
    total = sum(stacks.values())
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for s, n in stacks.items():
        frames = s.split(";")
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"# {total} samples; top frames (inclusive | self), then collapsed stacks")
    for (f, n), (g, m) in zip(incl.most_common(25), self_c.most_common(25)):
        print(f"# {100 * n / total:5.1f}% {f:<55} | {100 * m / total:5.1f}% {g}")
    for s, n in stacks.most_common():
        print(f"{s} {n}")


if __name__ == "__main__":
    main()
