"""Render bench/results/hold.json as the latency picture in the README (docs/hold-latency.png).

A distribution says what a p50/p99 pair cannot: where the tail starts and
whether the decision shifts the whole curve or only stretches the tail.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main(out: Path = ROOT.parent / "docs" / "hold-latency.png") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        sys.exit("matplotlib is needed: pip install -e '.[bench]'")
    res = json.loads((ROOT / "results" / "hold.json").read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = (("latency", "closed loop: 8 agents, one check in flight each"),
              ("throughput", f"{res['config']['window']} checks in flight"))
    for ax, (mode, title) in zip(axes, panels, strict=True):
        for name, colour in (("bare", "#888888"), ("faust", "#d29922"), ("holdgate", "#1f6feb")):
            if name not in res:
                continue
            ms = np.sort(np.asarray(res[name][mode]["samples_ms"]))
            share = np.arange(1, len(ms) + 1) / len(ms)
            label = (f"{name}: p50 {np.median(ms):.1f} ms, p99 {ms[int(0.99 * len(ms))]:.1f} ms, "
                     f"{res[name][mode]['throughput']:.0f}/s")
            ax.plot(ms, share, color=colour, label=label)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hold latency: publish → verified verdict (ms, log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("share of actions decided within")
    fig.suptitle(f"holdgate vs echo floors (bare aiokafka, Faust), same run — {res['machine']}",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
