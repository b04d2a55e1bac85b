"""holdgate benchmarks: figures, not assertions.  `python bench/run.py --help`.

Each prints medians/p99 and ratios against a baseline measured in the same
run, and saves JSON under bench/results/ for the README.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all",
                    choices=["all", "hold", "decide", "memory", "replay", "restart", "forest",
                             "detect", "swap", "scale", "profile"],
                    help="hold: end-to-end latency/throughput vs the bare aiokafka and Faust "
                         "echoes (starts Kafka and workers); decide: per-action cost, signals on "
                         "vs off; memory: state per agent and for 100k agents; replay: history "
                         "throughput; restart: fail-closed outage after SIGKILL vs history; "
                         "forest: IsolationForest scoring, sklearn vs numpy; detect: "
                         "simulate, fit, judge per persona (detection quality); swap: shadow "
                         "cost and how fast workers follow a publish; scale: 1 vs 2 workers "
                         "and 2/4/8 partitions, CPU per process; profile (not in all): "
                         "py-spy profile of a loaded worker, by area")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each hold phase")
    ap.add_argument("--agents", type=int, default=8, help="closed-loop agents (hold)")
    ap.add_argument("--window", type=int, default=256, help="checks in flight (hold)")
    ap.add_argument("--fleet", type=int, default=1000, help="distinct agent ids (hold)")
    ap.add_argument("--memory-agents", type=int, default=100_000)
    ap.add_argument("--tag", help="profile: name of the kept profile (default: a timestamp)")
    args = ap.parse_args()
    print(f"machine: {common.machine()}")
    if args.which in ("all", "decide"):
        import decide
        res = decide.run()
        common.save("decide", res)
        print(decide.report(res), "\n", flush=True)
    if args.which in ("all", "replay"):
        import replay
        res = replay.run()
        common.save("replay", res)
        print(replay.report(res), "\n", flush=True)
    if args.which in ("all", "detect"):
        import detect
        res = detect.run()
        common.save("detect", res)
        print(detect.report(res), "\n", flush=True)
    if args.which in ("all", "forest"):
        import forest
        res = forest.run()
        common.save("forest", res)
        print(forest.report(res), "\n", flush=True)
    if args.which in ("all", "memory"):
        import memory
        res = memory.run(agents=args.memory_agents)
        common.save("memory", res)
        print(memory.report(res), "\n", flush=True)
    if args.which in ("all", "hold"):
        import hold
        with common.broker(args.bootstrap) as bootstrap:
            res = hold.run(bootstrap, agents=args.agents, seconds=args.seconds,
                           window=args.window, n_fleet=args.fleet)
        common.save("hold", res)
        print(hold.report(res), flush=True)
        try:
            import plot
            plot.main()
        except SystemExit as exc:          # matplotlib missing: figures printed, no picture
            print(exc)
    if args.which in ("all", "restart"):
        import restart
        with common.broker(args.bootstrap) as bootstrap:
            res = restart.run(bootstrap)
        common.save("restart", res)
        print(restart.report(res), flush=True)
    if args.which in ("all", "swap"):       # shadow cost; workers following a publish
        import swap
        with common.broker(args.bootstrap) as bootstrap:
            res = swap.run(bootstrap)
        common.save("swap", res)
        print(swap.report(res), flush=True)
    if args.which in ("all", "scale"):      # 1 vs 2 workers; partitions on one worker
        import scale
        with common.broker(args.bootstrap) as bootstrap:
            res = scale.run(bootstrap, seconds=args.seconds, window=args.window,
                            n_fleet=args.fleet, max_other=0.15)
        common.save("scale", res)
        print(scale.report(res), flush=True)
    if args.which == "profile":             # evidence, not a figure: not part of "all"
        import profile_worker as worker_profile
        with common.broker(args.bootstrap) as bootstrap:
            res = worker_profile.run(bootstrap, seconds=max(args.seconds, 20.0),
                                     window=args.window, n_fleet=args.fleet, tag=args.tag)
        common.save("profile", res)
        print(worker_profile.report(res), flush=True)


if __name__ == "__main__":
    main()
