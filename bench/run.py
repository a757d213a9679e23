"""End-to-end benchmark: every scenario against every setup in one run, setups alternating
round by round, a Markdown table of medians with ratios to `direct` and to `nginx`.

    python bench/run.py                       # 3 rounds, all scenarios and setups (~9 min)
    python bench/run.py --quick               # 1 round, short windows, 2000 idle connections
    python bench/run.py --scenarios small bulk --setups direct wsgw nginx --rounds 5

Writes the report to --out (default bench/results.md) and the raw per-round numbers next
to it (.json), and prints the report. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    IDLE_CONNECTIONS,
    SCENARIOS,
    SETUP_NAMES,
    Bench,
    Scenario,
    deflate_unsupported,
    machine_summary,
)
from procs import load_average, raise_nofile  # noqa: E402

NOISY_SPREAD = 0.25  # (max - min) / median over rounds above this: flagged as disturbed

# The targets (issue 4), checked against the `wsgw` setup.
CPU_TARGET_US = {"small": 4.8, "bulk": 17.0}
IDLE_TARGET_BYTES = 16 * 1024

Results = dict[tuple[str, str], list[dict[str, Any]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round, 1 s windows, 2000 idle conns")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; quick 1)")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--setups", nargs="+", default=SETUP_NAMES, choices=SETUP_NAMES)
    p.add_argument("--warmup", type=float, default=None, help="seconds before counting (0.5)")
    p.add_argument("--duration", type=float, default=None, help="counted seconds (2.0)")
    p.add_argument(
        "--idle-conns",
        type=int,
        default=None,
        help=f"idle connections (default {IDLE_CONNECTIONS}; quick 2000)",
    )
    p.add_argument(
        "--idle-rounds",
        type=int,
        default=1,
        help="rounds that also run the idle scenario (memory barely varies)",
    )
    p.add_argument(
        "--nginx-extra",
        default="",
        help="extra nginx location directive, e.g. 'proxy_buffer_size 64k;'",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.md")
    p.add_argument("--keep-dir", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.duration = args.duration if args.duration is not None else (1.0 if args.quick else 2.0)
    args.idle_conns = args.idle_conns or (2000 if args.quick else IDLE_CONNECTIONS)
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that kills the children


def run(args: argparse.Namespace) -> tuple[Results, dict[str, object]]:
    results: Results = defaultdict(list)
    meta: dict[str, object] = {"machine": machine_summary(), "load_start": load_average()}
    started = time.monotonic()
    with Bench(keep_dir=args.keep_dir) as bench:
        bench.start_backend()
        for name in args.setups:
            bench.start(name, nginx_extra=args.nginx_extra)
        active = [n for n in args.setups if n in bench.setups]
        meta["notes"] = {n: s.note for n, s in bench.setups.items()}
        meta["skipped"] = dict(bench.skipped)
        for name, why in bench.skipped.items():
            print(f"skipping {name}: {why}", file=sys.stderr)
        timed = [SCENARIOS[s] for s in args.scenarios if SCENARIOS[s].mode != "idle"]
        idles = [SCENARIOS[s] for s in args.scenarios if SCENARIOS[s].mode == "idle"]
        for rnd in range(args.rounds):
            shift = rnd % len(active)
            order = active[shift:] + active[:shift]  # ABC, BCA, CAB: no setup always first
            for scenario in timed:
                for name in order:
                    if scenario.deflate and deflate_unsupported(name):
                        continue  # said in the report, under the scenario's table
                    _cell(bench, args, results, rnd, scenario, name)
            for idle in idles if rnd < args.idle_rounds else []:
                for name in order:
                    if idle.deflate and deflate_unsupported(name):
                        continue
                    _cell(bench, args, results, rnd, idle, name)
        if args.keep_dir:
            print(f"configs and logs kept in {bench.dir}", file=sys.stderr)
    meta["load_end"] = load_average()
    meta["elapsed_s"] = time.monotonic() - started
    return results, meta


def _cell(
    bench: Bench,
    args: argparse.Namespace,
    results: Results,
    rnd: int,
    scenario: Scenario,
    name: str,
) -> None:
    res = bench.run_cell(
        bench.setups[name],
        scenario,
        warmup=args.warmup,
        duration=args.duration,
        idle_conns=args.idle_conns,
    )
    res["round"] = rnd
    res["load"] = load_average()
    results[(scenario.name, name)].append(res)
    if res.get("errors"):
        what = f"ERRORS {res['errors']}: {res.get('error_samples')}"
    elif scenario.mode == "idle":
        what = f"{res['bytes_per_conn'] / 1024:.1f} KiB/conn over {res['connections']} conns"
    else:
        what = f"{res['per_s']:.0f}/s p99 {res['p99_us']:.0f} µs"
        if "wire_bytes" in res:
            what += f", {res['raw_bytes']:.0f} B text as {res['wire_bytes']:.0f} B deflated"
    print(f"[round {rnd + 1}/{args.rounds}] {scenario.name:8} {name:17} {what}", file=sys.stderr)


# ------------------------------------------------------------------------- report
def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("errors")]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _paired_ratio(results: Results, scenario: str, setup: str, base: str) -> float | None:
    """Median over rounds of setup/base measured in the same round (pairs cancel drift)."""
    by_round = {r["round"]: r["per_s"] for r in _ok(results.get((scenario, base), []))}
    ratios = [
        r["per_s"] / by_round[r["round"]]
        for r in _ok(results.get((scenario, setup), []))
        if by_round.get(r["round"])
    ]
    return _median(ratios)


def _cpu_us(row: dict) -> float | None:
    return row["proxy_cpu_s"] / row["count"] * 1e6 if row.get("count") else None


def summarize(results: Results, scenario: str, setup: str) -> dict[str, Any] | None:
    rows = _ok(results.get((scenario, setup), []))
    if not rows:
        return None
    if SCENARIOS[scenario].mode == "idle":
        return {
            "bytes_per_conn": _median([r["bytes_per_conn"] for r in rows]),
            "connections": _median([r["connections"] for r in rows]),
            "growth": _median([r["rss_after"] - r["rss_before"] for r in rows]),
            "open_rate": _median([r["connections"] / r["open_s"] for r in rows]),
        }
    rates = [r["per_s"] for r in rows]
    med = statistics.median(rates)
    return {
        "per_s": med,
        "p50": _median([r["p50_us"] for r in rows]),
        "p99": _median([r["p99_us"] for r in rows]),
        "p999": _median([r["p999_us"] for r in rows]),
        "cpu_us": _median([_cpu_us(r) for r in rows]) if setup != "direct" else None,
        "busy": _median([r["proxy_cpu_s"] / r["window_s"] for r in rows])
        if setup != "direct"
        else None,
        "spread": (max(rates) - min(rates)) / med if med else None,
        "x_direct": _paired_ratio(results, scenario, setup, "direct"),
        "x_nginx": _paired_ratio(results, scenario, setup, "nginx"),
        "x_wsproxy": _paired_ratio(results, scenario, setup, "websockets-proxy"),
        "rounds": len(rows),
    }


def _kib(value: float | None, scale: int) -> float | None:
    return None if value is None else value / scale


def _f(value: float | None, fmt: str = "{:.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def render(results: Results, meta: dict, args: argparse.Namespace) -> str:
    setups = [s for s in args.setups if s not in meta["skipped"]]
    m = meta["machine"]
    lines = [
        "# wsgw end-to-end benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {m['cpus']} CPUs · Linux {m['kernel']} · "
        f"Python {m['python']} · picows {m['picows']} · uvloop {m['uvloop']} · "
        f"websockets {m['websockets']} · nginx {m['nginx']}",
        "",
        f"`{' '.join(['python bench/run.py', *sys.argv[1:]])}`: {args.rounds} round(s), "
        f"{args.warmup} s warm-up + {args.duration} s counted per cell, setups alternating "
        f"round by round; {meta['elapsed_s']:.0f} s in all. Load average "
        f"{meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end.",
        "",
        "Values are medians over rounds. `× direct`/`× nginx`: median over rounds of the "
        "ratio to that setup in the same round. Latency is per round trip (queueing "
        "included). `proxy CPU µs/op`: the proxy process's user+system CPU time over the "
        "counted window (from /proc/PID/stat) divided by the round trips (connection "
        "cycles) counted in it; `busy`: that CPU time as a share of one core.",
        "",
    ]
    for name, why in meta["skipped"].items():
        lines += [f"- **{name} skipped**: {why}", ""]
    for name, note in meta["notes"].items():
        if note:
            lines.append(f"- `{name}`: {note}")
    lines.append("")
    noisy = False
    for sc_name in args.scenarios:
        sc = SCENARIOS[sc_name]
        if sc.mode == "idle":
            continue
        unit = "cycles/s" if sc.mode == "cycle" else "rt/s"
        lines += [
            f"## {sc.title}",
            "",
            f"| setup | {unit} | × direct | × nginx | p50 µs | p99 µs | p99.9 µs | "
            f"proxy CPU µs/{sc.unit} | busy | spread | checks |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        not_run: list[str] = []
        for setup in setups:
            if sc.deflate and (why := deflate_unsupported(setup)):
                lines.append(f"| {setup} | not run |  |  |  |  |  |  |  |  | see below |")
                not_run.append(f"- `{setup}` not run: {why}.")
                continue
            s = summarize(results, sc_name, setup)
            rows = results.get((sc_name, setup), [])
            if s is None:
                errs = "; ".join(str(e) for r in rows for e in r.get("error_samples", []))[:200]
                lines.append(f"| {setup} | failed |  |  |  |  |  |  |  |  | {errs} |")
                continue
            flag = ""
            if s["spread"] is not None and s["spread"] > NOISY_SPREAD:
                flag, noisy = " ⚠", True
            checks = _checks(rows)
            lines.append(
                f"| {setup} | {_f(s['per_s'])} | {_f(s['x_direct'], '{:.2f}')} | "
                f"{_f(s['x_nginx'], '{:.2f}')} | {_f(s['p50'])} | {_f(s['p99'])} | "
                f"{_f(s['p999'])} | {_f(s['cpu_us'], '{:.1f}')} | "
                f"{_f(s['busy'], '{:.0%}')} | {_f(s['spread'], '{:.0%}')}{flag} | {checks} |"
            )
        lines.append("")
        if sc.deflate:
            lines += [*_deflate_notes(results, sc_name, setups), *not_run, ""]
    for idle_name in [s for s in args.scenarios if SCENARIOS[s].mode == "idle"]:
        compressed = ", permessage-deflate negotiated" if SCENARIOS[idle_name].deflate else ""
        lines += [
            f"## {idle_name}: {args.idle_conns} idle connections{compressed}, proxy RSS growth",
            "",
            "| setup | connections | RSS growth MiB | KiB per connection | opened per s |",
            "|---|---:|---:|---:|---:|",
        ]
        for setup in setups:
            if SCENARIOS[idle_name].deflate and deflate_unsupported(setup):
                continue
            s = summarize(results, idle_name, setup)
            if s is None:
                rows = results.get((idle_name, setup), [])
                errs = "; ".join(str(e) for r in rows for e in r.get("error_samples", []))[:200]
                lines.append(f"| {setup} | failed: {errs} |  |  |  |")
                continue
            label = setup + (" (the backend's own growth)" if setup == "direct" else "")
            lines.append(
                f"| {label} | {_f(s['connections'])} | {_f(_kib(s['growth'], 2**20), '{:.1f}')} | "
                f"{_f(_kib(s['bytes_per_conn'], 1024), '{:.1f}')} | {_f(s['open_rate'])} |"
            )
        lines.append("")
    if noisy:
        lines += [
            f"⚠ spread over rounds above {NOISY_SPREAD:.0%}: the machine was busy with "
            "other work during those cells; prefer the ratios (paired per round).",
            "",
        ]
    lines += _targets(results, args)
    return "\n".join(lines)


def _deflate_notes(results: Results, scenario: str, setups: list[str]) -> list[str]:
    """What a compressed scenario's messages were, and what each setup's 101 answered."""
    rows = [r for setup in setups for r in _ok(results.get((scenario, setup), []))]
    raw = _median([r.get("raw_bytes") for r in rows])
    wire = _median([r.get("wire_bytes") for r in rows])
    out = []
    if raw and wire:
        out.append(
            f"Messages: {raw:.0f} B of text, {wire:.0f} B deflated on the wire "
            f"({raw / wire:.2f}× smaller; means over the messages sent, median over cells). "
            "The offer: `permessage-deflate; client_no_context_takeover; "
            "server_no_context_takeover`; every echo carried the same compressed bytes and RSV1."
        )
    answers: dict[str, list[str]] = defaultdict(list)
    for setup in setups:
        seen = {r.get("extension") for r in _ok(results.get((scenario, setup), []))}
        for answer in sorted(a for a in seen if a):
            answers[answer].append(setup)
    for answer, who in answers.items():
        out.append(f"- answer `{answer}`: {', '.join(who)}")
    return out


def _checks(rows: list[dict]) -> str:
    """'verified' when every echo matched; the gateway's counters when it is a gateway."""
    bad = [r for r in rows if r.get("errors")]
    counted = {r.get("counted") for r in rows if "counted" in r}
    parts = [f"{len(bad)} failed rounds" if bad else "echoes verified"]
    if counted:
        parts.append(
            "all counted, none throttled"
            if counted == {"ok"}
            else "; ".join(sorted(c for c in counted if c and c != "ok"))
        )
    return ", ".join(parts)


def _targets(results: Results, args: argparse.Namespace) -> list[str]:
    """The issue's targets for the `wsgw` setup (as users run it)."""
    rows: list[tuple[str, str, str, str]] = []

    def get(sc: str, setup: str = "wsgw") -> dict | None:
        return summarize(results, sc, setup) if sc in args.scenarios else None

    def verdict(value: float | None, target: float, higher: bool = True) -> str:
        if value is None:
            return "not measured"
        met = value >= target if higher else value <= target
        return "met" if met else f"missed by {abs(value / target - 1):.0%}"

    def target(
        label: str,
        goal: float,
        value: float | None,
        *,
        higher: bool = True,
        digits: int = 2,
        unit: float = 1.0,
    ) -> None:
        """One row; `unit` divides goal and value for display (e.g. bytes shown in KiB)."""
        fmt = f"{{:.{digits}f}}"
        shown = None if value is None else value / unit
        rows.append((label, fmt.format(goal / unit), _f(shown, fmt), verdict(value, goal, higher)))

    for sc in ("small", "latency"):
        if (s := get(sc)) is not None:
            target(f"{sc}: wsgw ≥ 1.0 × nginx (rt/s)", 1.0, s["x_nginx"])
    s, n = get("latency"), get("latency", "nginx")
    if s is not None and n is not None:
        rel = s["p99"] / n["p99"] if s["p99"] and n["p99"] else None
        target("latency: p99 ≤ 1.2 × nginx's", 1.2, rel, higher=False)
    if (s := get("bulk")) is not None:
        target("bulk: wsgw ≥ 0.60 × direct", 0.6, s["x_direct"])
    if (s := get("connect")) is not None:
        target("connections/s (token checked): ≥ 0.70 × direct", 0.7, s["x_direct"])
    for sc in ("latency", "small", "bulk", "connect"):
        if (s := get(sc)) is not None:
            target(f"{sc}: ≥ 3 × websockets-proxy", 3.0, s["x_wsproxy"])
    for sc, cpu_target in CPU_TARGET_US.items():
        if (s := get(sc)) is not None:
            label = f"{sc}: proxy CPU ≤ {cpu_target} µs per round trip"
            target(label, cpu_target, s["cpu_us"], higher=False, digits=1)
    if (s := get("idle")) is not None:
        label = "idle: ≤ 16 KiB per relayed connection"
        target(label, IDLE_TARGET_BYTES, s["bytes_per_conn"], higher=False, digits=1, unit=1024)
    if not rows:
        return []
    out = [
        "## Targets (issue 4), for `wsgw` as users run it",
        "",
        "| target | goal | measured | |",
        "|---|---:|---:|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*out, ""]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Also when started with SIGINT ignored (a background job): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_nofile()
    results, meta = run(args)
    report = render(results, meta, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    raw = {f"{sc}/{setup}": rows for (sc, setup), rows in results.items()}
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": raw}, indent=1))
    print(report)
    print(f"\nwritten to {args.out} (raw rounds: {args.out.with_suffix('.json')})", file=sys.stderr)
    failed = any(r.get("errors") for rows in results.values() for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children are gone already (Bench.close in a finally)
        sys.exit(130)
