"""`python -m wsgw echo` as a real child process: ready line, serving, SIGTERM/SIGINT → 0."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .tools_proc import REPO, run_wsgw, wsgw_env

TIMEOUT = 5.0
READY = re.compile(r"^echo backend listening on ws://127\.0\.0\.1:(\d+)$")


async def start_echo_process(*argv: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsgw",
        "echo",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=wsgw_env(),
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().rstrip("\n")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    match = READY.match(line)
    assert match, f"unexpected ready line {line!r}"
    return proc, int(match.group(1))


async def stop(proc: asyncio.subprocess.Process, sig: int) -> tuple[int, bytes]:
    proc.send_signal(sig)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_echo_command_serves_until_signal_then_exits_0(sig: int) -> None:
    proc, port = await start_echo_process("--listen", "127.0.0.1:0", "--prefix", "X")
    try:
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Xhello"
            await ws.send(b"\x01")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x01"
    finally:
        code, err = await stop(proc, sig)
    assert code == 0, err
    assert err == b""


async def test_live_connections_are_told_going_away_on_shutdown() -> None:
    proc, port = await start_echo_process("--listen", "127.0.0.1:0")
    try:
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT) as ws:
            await ws.send("x")
            await asyncio.wait_for(ws.recv(), TIMEOUT)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


async def test_echo_command_bad_listen_value_exits_2() -> None:
    code, out, err = await run_wsgw("echo", "--listen", "nonsense", stdin=b"")
    assert code == 2
    assert "HOST:PORT" in err and out == ""


async def test_echo_command_port_in_use_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_wsgw("echo", "--listen", f"127.0.0.1:{port}", stdin=b"")
    assert code == 1
    assert "cannot listen" in err and out == ""
