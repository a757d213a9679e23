"""Profile the gateway under load: the load generator runs one scenario through a
`wsgw serve` process while py-spy (Python frames) and perf (native + kernel, when it
works here) sample it; the hottest frames are printed.

    pip install py-spy
    python bench/profile.py                          # small scenario, 6 s per profiler
    python bench/profile.py --scenario connect --svg /tmp/wsgw.svg

py-spy runs non-blocking and drops idle samples (the loop waiting in epoll), so its shares
are of the time the gateway's thread was busy; C code (the Cython codec, uvloop, system
calls) is charged to the Python line that called it. perf samples on-CPU time only
(cpu-clock) and splits it by shared object (kernel, libpython, uvloop, the codec).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import LOADGEN, SCENARIOS, SETUP_NAMES, Bench, deflate_unsupported  # noqa: E402
from procs import raise_nofile  # noqa: E402


def py_spy(pid: int, seconds: float, out: Path, fmt: str) -> None:
    argv = ["py-spy", "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "250"]
    argv += ["-o", str(out), "--format", fmt, "--nonblocking"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"py-spy failed: {done.stderr.strip()[-500:]}")


def summarize_py_spy(collapsed: Path, top: int) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"py-spy: {total} busy samples", "  self (leaf Python line, C callees included):"]
    lines += [f"  {n / max(total, 1):6.1%}  {f}" for f, n in self_t.most_common(top)]
    lines += ["  inclusive (on the stack), wsgw frames:"]
    ours = [(f, n) for f, n in incl.most_common() if "wsgw/" in f or "pipeline/" in f]
    lines += [f"  {n / max(total, 1):6.1%}  {f}" for f, n in ours[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "data_received (/x/wsgw/pipeline/relay.py:125)" -> "data_received (pipeline/relay.py:125)"
    name, _, where = frame.partition(" (")
    if not where:
        return name
    return f"{name} ({'/'.join(Path(where.rstrip(')')).parts[-2:])})"


def perf(pid: int, seconds: float, tmp: Path, top: int) -> str:
    if shutil.which("perf") is None:
        return "perf: not installed"
    data = tmp / "perf.data"
    rec = subprocess.run(
        [
            "perf",
            "record",
            "-F",
            "997",
            "-p",
            str(pid),
            "-o",
            str(data),
            "--",
            "sleep",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if rec.returncode != 0:
        return f"perf record failed: {rec.stderr.strip()[-300:]}"
    out = []
    for sort, limit in (("dso", "1"), ("dso,symbol", "0.7")):
        rep = subprocess.run(
            [
                "perf",
                "report",
                "-i",
                str(data),
                "--stdio",
                "--no-children",
                "--sort",
                sort,
                "--percent-limit",
                limit,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        rows = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        out.append(f"perf (on-CPU samples) by {sort}:")
        out += [f"  {ln.strip()}" for ln in rows[:top]]
    return "\n".join(out)


SYSCALLS = (
    "read",
    "write",
    "writev",
    "recvfrom",
    "sendto",
    "sendmsg",
    "recvmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
)


def syscall_counts(pids: list[int], seconds: float) -> dict[str, int] | None:
    """System calls of `pids` over `seconds` (perf tracepoints), by name, plus "all"."""
    if shutil.which("perf") is None:
        return None
    events = ["raw_syscalls:sys_enter", *(f"syscalls:sys_enter_{n}" for n in SYSCALLS)]
    done = subprocess.run(
        [
            "perf",
            "stat",
            "-x",
            ",",
            "-e",
            ",".join(events),
            "-p",
            ",".join(map(str, pids)),
            "--",
            "sleep",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    counts: dict[str, int] = {}
    for line in done.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            name = fields[2].rpartition("sys_enter_")[2] if "sys_enter_" in fields[2] else "all"
            counts[name] = int(fields[0])
    return counts or None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="small", choices=[s for s in SCENARIOS if s != "idle"])
    p.add_argument("--setup", default="wsgw", choices=[s for s in SETUP_NAMES if s != "direct"])
    p.add_argument("--seconds", type=float, default=6.0, help="per profiler")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--svg", type=Path, help="also write a py-spy flame graph here")
    args = p.parse_args()
    why = deflate_unsupported(args.setup) if SCENARIOS[args.scenario].deflate else None
    if why is not None:
        p.error(f"{args.setup} does not run {args.scenario}: {why}")
    python_setup = args.setup != "nginx"
    if python_setup and shutil.which("py-spy") is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    raise_nofile()
    with Bench() as bench, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bench.start_backend()
        setup = bench.start(args.setup)
        assert setup is not None
        scenario = SCENARIOS[args.scenario]
        phases = 2 + (1 if args.svg else 0) + (1 if python_setup else 0)
        load_s = args.seconds * phases + 3  # longer than all recordings, which start warm
        argv = [sys.executable, str(LOADGEN), scenario.mode, "--url", setup.url]
        argv += ["--conns", str(scenario.conns), "--inflight", str(scenario.inflight)]
        argv += ["--size", str(scenario.size), "--warmup", "1", "--duration", str(load_s)]
        argv += ["--hard-timeout", str(load_s + 60)]
        if scenario.deflate:
            argv.append("--deflate")
        for pid in setup.pids:
            argv += ["--watch-pid", str(pid)]
        for header in setup.headers:
            argv += ["--header", header]
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(1.5)
            collapsed = tmp / "stacks.txt"
            worker = setup.pids[-1]  # nginx: the worker (the master idles)
            if python_setup:
                py_spy(worker, args.seconds, collapsed, "raw")
            perf_text = perf(worker, args.seconds, tmp, args.top)
            calls = syscall_counts(setup.pids, args.seconds)
            if args.svg and python_setup:
                py_spy(worker, args.seconds, args.svg, "flamegraph")
            out, _ = gen.communicate(timeout=load_s + 60)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait(5)
        print(f"{args.setup} ({setup.note}), {scenario.title}")
        print(f"load generator: {out.strip().splitlines()[-1] if out.strip() else 'no result'}")
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        if python_setup:
            print(summarize_py_spy(collapsed, args.top))
        print(perf_text)
        rate = float(result.get("per_s") or 0)
        if calls and rate:
            per = {k: v / args.seconds / rate for k, v in calls.items() if v}
            shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
            print(f"system calls per {scenario.unit} (perf tracepoints; rate-based): {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
