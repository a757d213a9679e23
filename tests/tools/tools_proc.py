"""Running `python -m wsgw …` as a child process, every wait bounded."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wsgw_env() -> dict[str, str]:
    """Environment for `python -m wsgw …` children: the repo on the path, unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_wsgw(
    *argv: str, stdin: bytes | None = None, stdin_file: object = None, timeout: float = 15.0
) -> tuple[int, str, str]:
    """Run `python -m wsgw ARGV…` to completion (bounded); (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsgw",
        *argv,
        stdin=stdin_file if stdin_file is not None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=wsgw_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
