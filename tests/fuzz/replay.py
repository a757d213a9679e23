"""Replay inputs through a fuzz oracle, and shrink one that fails:

    python -m tests.fuzz.replay frames /tmp/wsgw-fuzz/frames/crash-*
    python -m tests.fuzz.replay config tests/fuzz/corpus/config --minimize

Each file runs as harness.run_one runs it (options derived from its bytes and name, as in
the atheris scripts and the corpus replays). ``--minimize`` shrinks each failing input
while it fails the same way (same target, kind and exception type), by removing chunks,
then single bytes, and writes ``<file>.min`` next to it. Exit status 1 when any fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tests.fuzz import harness


def outcome(target: str, data: bytes, name: str = "") -> harness.Violation | None:
    try:
        harness.run_one(target, data, name)
    except harness.Violation as err:
        return err
    return None


def signature(err: harness.Violation) -> tuple[str, str, str]:
    exc = err.exc if isinstance(err, harness.Unexpected) else err
    return err.target, err.kind, type(exc).__name__


def minimize(data: bytes, fails: Callable[[bytes], bool]) -> bytes:
    """Greedy delta debugging: drop chunks of halving size while ``fails`` still holds."""
    size = max(1, len(data) // 2)
    while True:
        i = 0
        while i < len(data):
            candidate = data[:i] + data[i + size :]
            if candidate != data and fails(candidate):
                data = candidate
            else:
                i += size
        if size == 1:
            return data
        size = max(1, size // 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=harness.TARGETS)
    parser.add_argument("paths", nargs="+", type=Path, help="input files or directories")
    parser.add_argument("--minimize", action="store_true", help="shrink failing inputs")
    args = parser.parse_args(argv)
    files = [f for p in args.paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    failed = 0
    for path in files:
        if not path.is_file() or path.suffix == ".min":
            continue
        data = path.read_bytes()
        # A corpus file's name tells which way it goes; libFuzzer's names do not.
        name = path.name if harness.CORPUS in path.resolve().parents else ""
        err = outcome(args.target, data, name)
        if err is None:
            print(f"ok      {path}")
            continue
        failed += 1
        bug = harness.matching_bug(err)
        label = f"known bug {bug.id}" if bug else "FAILS"
        print(f"{label:7} {path}: {err}")
        if args.minimize:
            want = signature(err)

            def fails(
                candidate: bytes, want: tuple[str, str, str] = want, name: str = name
            ) -> bool:
                e = outcome(args.target, candidate, name)
                return e is not None and signature(e) == want

            small = minimize(data, fails)
            out = path.with_name(path.name + ".min")
            out.write_bytes(small)
            print(f"        minimized {len(data)} -> {len(small)} bytes: {out} {small!r:.200}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
