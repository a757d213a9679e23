"""Shared main of the atheris (libFuzzer) scripts fuzz_<target>.py.

    python tests/fuzz/fuzz_http.py -max_total_time=30 tests/fuzz/corpus/http

runs harness.run_one("http", data) on libFuzzer's inputs, the options of each input
(cuts, limits, direction...) derived from its bytes. The committed corpus is only read:
when every corpus directory given is under tests/fuzz/corpus, a scratch directory
($WSGW_FUZZ_WORKDIR/<target>, default /tmp/wsgw-fuzz/<target>) is put first, so new
inputs go there; crash-*/timeout-* files go there too unless -artifact_prefix is given.
A known finding (harness.KNOWN_BUGS) is not a crash unless WSGW_FUZZ_STRICT=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["wsgw", "tests.fuzz.harness"]):
    from tests.fuzz import harness  # noqa: E402

CORPUS = harness.CORPUS


def _argv(target: str, argv: list[str]) -> list[str]:
    flags = [a for a in argv[1:] if a.startswith("-")]
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    work = Path(os.environ.get("WSGW_FUZZ_WORKDIR", "/tmp/wsgw-fuzz")) / target
    work.mkdir(parents=True, exist_ok=True)
    committed = [d for d in dirs if Path(d).resolve().is_relative_to(CORPUS)]
    if dirs and len(committed) == len(dirs):
        dirs = [str(work), *dirs]
        print(f"fuzz_{target}: new inputs go to {work}", file=sys.stderr)
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={work}/")
    if not any(f.startswith("-timeout=") for f in flags):
        flags.append("-timeout=20")
    return [argv[0], *flags, *dirs]


def main(target: str) -> None:
    known: dict[str, int] = {}

    def one_input(data: bytes) -> None:
        try:
            harness.run_one(target, data)
        except harness.Violation as err:
            bug = harness.known_bug(err)
            if bug is None:
                raise
            if bug.id not in known:
                print(f"\nfuzz_{target}: known bug {bug.id} (not a crash)", file=sys.stderr)
            known[bug.id] = known.get(bug.id, 0) + 1

    atheris.Setup(_argv(target, sys.argv), one_input)
    atheris.Fuzz()
