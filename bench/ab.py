"""A/B: this checkout's gateway against another checkout's, in one run.

    git worktree add /tmp/wsgw-base HEAD~1
    (cd /tmp/wsgw-base && python setup.py build_ext --inplace)
    python bench/ab.py --base /tmp/wsgw-base --scenarios small bulk connect --rounds 5

Both gateways run as users run them (the `wsgw` setup: token, Metered tier), side by side
against the same echo backend; cells alternate A B, B A, … and each round gives paired
ratios, so drifts in the machine's load cancel. Reported per scenario: the median over
rounds of this checkout ÷ base for throughput and for gateway CPU per operation (below 1:
this checkout spends less). Use it to decide whether a change to the relay pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SCENARIOS, Bench, Setup  # noqa: E402


def cpu_per_op(result: dict) -> float:
    return result["proxy_cpu_s"] / result["count"] * 1e6 if result.get("count") else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, type=Path, help="the other checkout (built)")
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=["small", "bulk"],
        choices=["latency", "small", "bulk", "connect", "small-z", "bulk-z"],
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=2.0)
    args = p.parse_args(argv)
    base = args.base.resolve()
    if not (base / "wsgw" / "__init__.py").exists():
        p.error(f"{base} is not a wsgw checkout")

    failures = 0
    with Bench() as bench:
        bench.start_backend()
        setups: dict[str, Setup] = {
            "this": bench._start_wsgw("this", "Metered", None),
            "base": bench._start_wsgw("base", "Metered", {"PYTHONPATH": str(base)}),
        }
        for name, setup in setups.items():
            print(f"{name}: {setup.note}", file=sys.stderr)
        for scenario_name in args.scenarios:
            scenario = SCENARIOS[scenario_name]
            speed: list[float] = []
            cpu: list[float] = []
            raw: dict[str, list[float]] = {"this": [], "base": []}
            for rnd in range(args.rounds):
                order = ["this", "base"] if rnd % 2 == 0 else ["base", "this"]
                got = {}
                for name in order:
                    res = bench.run_cell(
                        setups[name], scenario, warmup=args.warmup, duration=args.duration
                    )
                    if res.get("errors") or res.get("counted", "ok") != "ok":
                        failures += 1
                        print(
                            f"  {scenario_name}/{name}: {res.get('error_samples')}", file=sys.stderr
                        )
                        continue
                    got[name] = res
                    raw[name].append(cpu_per_op(res))
                if len(got) == 2:
                    speed.append(got["this"]["per_s"] / got["base"]["per_s"])
                    cpu.append(cpu_per_op(got["this"]) / cpu_per_op(got["base"]))
            if speed:
                unit = scenario.unit
                print(
                    f"{scenario_name:8} this ÷ base: {unit}/s {statistics.median(speed):.3f}"
                    f"  CPU µs/{unit} {statistics.median(cpu):.3f}"
                    f"  (CPU µs/{unit}: this {statistics.median(raw['this']):.1f},"
                    f" base {statistics.median(raw['base']):.1f}; {len(speed)} paired rounds)"
                )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
