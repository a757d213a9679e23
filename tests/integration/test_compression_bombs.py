"""Compression bombs against `python -m wsgw serve` as a real process (set up with the CLI,
as in test_serve_process), between a websockets client and a websockets backend that both
keep their default permessage-deflate. The backend takes messages of any size
(max_size=None): only the gateway's inflated-size limits stand between it and a bomb.

The gateway measures a compressed message's inflated size as it streams and keeps none of
the output, so its memory must not grow with what bombs inflate to: its VmRSS is read from
/proc/PID/status after a warm-up and again after many bombs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate

from .backends import TIMEOUT, free_port
from .conftest import base_config
from .test_serve_process import Deployment

KiB, MiB = 1 << 10, 1 << 20
LIMIT = MiB  # gateway.max_message_bytes
FRAGMENT, FRAGMENTS = 256 * KiB, 80
BOMB = FRAGMENT * FRAGMENTS  # 20 MiB of zeros: ~20 KB once deflated
TOO_BIG = "message too big once inflated"
# A bomb inflates to 20 MiB. A gateway that kept (or leaked) even the first 1 MiB of each
# bomb's output would grow by 18 MiB over the 18 bombs after the warm-up; what it does
# keep per connection (a pooled ~44 KiB zlib state, the relay objects, allocator slack) is
# well under 1 MiB in all. 8 MiB sits between the two.
BOMB_GROWTH_BOUND = 8 * MiB
SMALL, SMALL_SIZE = 200, 900_000
# 180 more messages after the first 20: a leak of a meter's window (32 KiB) per message is
# 5.6 MiB, of its output 158 MiB; a steady relay stays within allocator noise.
SMALL_GROWTH_BOUND = 4 * MiB

Closed = tuple[int | None, str | None]  # the close code and reason a client got
Start = Callable[..., Awaitable[tuple[Deployment, dict[str, str], "Backend"]]]


class Backend:
    """Records (length, sha256) of every message it receives and echoes it; answers the
    text "bomb" with BOMB zero bytes, "big" with 5 MiB of random bytes (as large on the
    wire). `ended` gets each connection's close code."""

    def __init__(self) -> None:
        self.received: list[tuple[int, bytes]] = []
        self.ended: asyncio.Queue[int | None] = asyncio.Queue()
        self.extensions: list[list[type]] = []

    async def handle(self, ws: ServerConnection) -> None:
        self.extensions.append([type(e) for e in ws.protocol.extensions])
        try:
            async for message in ws:
                self.received.append(fingerprint(message))
                reply = {"bomb": bytes(BOMB), "big": os.urandom(5 * MiB)}.get(message, message)
                await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self.ended.put_nowait(ws.close_code)

    async def connection_end(self) -> int | None:
        return await asyncio.wait_for(self.ended.get(), TIMEOUT)


def fingerprint(message: str | bytes) -> tuple[int, bytes]:
    data = message.encode() if isinstance(message, str) else message
    return len(data), hashlib.sha256(data).digest()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * KiB
    return fields


def mib(n: int) -> str:
    return f"{n / MiB:.2f} MiB"


def assert_deflate(ws: ClientConnection) -> None:
    assert [type(e) for e in ws.protocol.extensions] == [PerMessageDeflate]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """`await start(**gateway_fields)`: the backend, then a gateway process in front of it
    (keys, application, subscription and token made by the CLI). Returns the deployment,
    the client's headers and the backend."""
    backend = Backend()
    server = await serve(backend.handle, "127.0.0.1", 0, max_size=None)
    backend_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    started: list[Deployment] = []

    async def factory(**gateway_fields: object) -> tuple[Deployment, dict[str, str], Backend]:
        raw = base_config(backend_url, None)
        del raw["apis"][0]["endpoints"]["sandbox"]
        port, admin_port = free_port(), free_port()
        raw["gateway"].update(
            listen=f"127.0.0.1:{port}",
            admin_listen=f"127.0.0.1:{admin_port}",
            max_message_bytes=LIMIT,
            **gateway_fields,
        )
        config = tmp_path / "wsgw.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        dep = Deployment(tmp_path, config, port, admin_port)
        await dep.cli("keys", "init")
        await dep.cli("app", "create", "DefaultApplication")
        await dep.cli("keys", "generate", "DefaultApplication", "--key-type", "production")
        await dep.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
        headers = {"Authorization": f"Bearer {await dep.token()}"}
        await dep.serve()
        started.append(dep)
        return dep, headers, backend

    yield factory
    for dep in started:
        assert dep.process is not None
        if dep.process.returncode is None:
            dep.process.kill()
        await dep.process.wait()
        assert dep.process.stderr is not None
        stderr = (await dep.process.stderr.read()).decode()
        assert "Traceback" not in stderr, stderr
    server.close()
    await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def send_and_close(
    dep: Deployment, headers: dict[str, str], message: bytes | list[bytes]
) -> Closed:
    """One connection: send `message` (a list: one fragmented message), expect the gateway
    to close. Returns the close code and reason the client received."""
    async with connect(dep.url, additional_headers=headers, proxy=None) as ws:
        assert_deflate(ws)
        with contextlib.suppress(ConnectionClosed):  # the close may land mid-send
            await ws.send(message)
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            pytest.fail(f"the bomb came back: {len(got)} bytes")
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        return ws.close_code, ws.close_reason


async def bomb_series(start: Start, bomb: bytes | list[bytes]) -> list[Closed]:
    """20 connections, one bomb each: the backend gets none of them, the gateway's memory
    stays flat. Returns the close (code, reason) each client received."""
    dep, headers, backend = await start()
    assert dep.process is not None
    pid = dep.process.pid
    before, results, ends = memory(pid), [], []
    async with asyncio.timeout(60):
        for n in range(1, 21):
            results.append(await send_and_close(dep, headers, bomb))
            # The backend got a close (1009), or its TCP connection dropped mid-frame (1006).
            ends.append(await backend.connection_end())
            assert ends[-1] in (1009, 1006), f"bomb {n}"
            if n == 2:
                warm = memory(pid)
    after = memory(pid)
    assert backend.received == []  # not one message of any size reached it
    assert backend.extensions == [[PerMessageDeflate]] * 20
    growth, peak = after["VmRSS"] - warm["VmRSS"], after["VmHWM"] - before["VmRSS"]
    figures = (
        f"{'fragmented' if isinstance(bomb, list) else 'one-frame'} bombs: VmRSS before"
        f" {mib(before['VmRSS'])}, after 2 {mib(warm['VmRSS'])}, after 20"
        f" {mib(after['VmRSS'])}: growth {mib(growth)} (bound {mib(BOMB_GROWTH_BOUND)});"
        f" peak {mib(after['VmHWM'])}, {mib(peak)} over start; client closes {Counter(results)},"
        f" backend closes {Counter(ends)}"
    )
    print(f"\n{figures}")
    assert growth < BOMB_GROWTH_BOUND, figures
    # Nor did the gateway ever hold a bomb's 20 MiB at once, even briefly.
    assert peak < BOMB // 2, figures
    return results


async def test_one_frame_bombs_get_1009_reach_nothing_leave_memory_flat(start: Start) -> None:
    assert await bomb_series(start, bytes(BOMB)) == [(1009, TOO_BIG)] * 20


async def test_fragmented_bombs_get_1009_reach_nothing_leave_memory_flat(start: Start) -> None:
    # The client is still sending fragments when the gateway refuses: the gateway half-closes
    # after its close frame instead of closing, so no reset destroys the 1009 unread.
    results = await bomb_series(start, [bytes(FRAGMENT)] * FRAGMENTS)
    assert results == [(1009, TOO_BIG)] * 20


def patterned(i: int) -> bytes:
    """About 900 KB that deflates to a few KB: a unit of 97 to 157 bytes that depends on i,
    repeated, after the message's number."""
    unit = bytes((i * 31 + k * (i % 7 + 1)) % 256 for k in range(97 + i % 61))
    return f"{i}:".encode() + (unit * (SMALL_SIZE // len(unit) + 1))[:SMALL_SIZE]


async def test_many_large_inflating_messages_arrive_exactly(start: Start) -> None:
    dep, headers, backend = await start()
    assert dep.process is not None
    pid = dep.process.pid
    sent: list[tuple[int, bytes]] = []
    began = time.monotonic()
    async with connect(dep.url, additional_headers=headers, proxy=None) as ws:
        assert_deflate(ws)
        async with asyncio.timeout(30):
            for i in range(SMALL):
                message = patterned(i)
                sent.append(fingerprint(message))
                await ws.send(message)
                echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert fingerprint(echo) == sent[-1], f"echo of message {i}"
                if i == 19:
                    first = memory(pid)
        after = memory(pid)
        await asyncio.wait_for(await ws.ping(), TIMEOUT)  # still open, still relaying
    elapsed = time.monotonic() - began
    assert backend.received == sent  # every message, in order, byte for byte
    assert await backend.connection_end() == 1000
    growth = after["VmRSS"] - first["VmRSS"]
    figures = (
        f"{SMALL} messages of {SMALL_SIZE} B: VmRSS after 20 {mib(first['VmRSS'])}, after"
        f" {SMALL} {mib(after['VmRSS'])}: growth {mib(growth)} (bound {mib(SMALL_GROWTH_BOUND)});"
        f" {elapsed:.1f} s"
    )
    print(f"\n{figures}")
    assert growth < SMALL_GROWTH_BOUND, figures
    assert elapsed < 30


async def backend_bomb(start: Start, command: str = "bomb") -> Closed:
    """The backend answers "bomb" with 20 MiB of zeros: it gets 1009 (or its TCP connection
    closed), the client never gets the bomb. Returns the client's close code and reason."""
    dep, headers, backend = await start(max_backend_message_bytes=4 * MiB)
    assert dep.process is not None
    before = memory(dep.process.pid)
    # max_size=None: were the bomb relayed, the client would take it in, not refuse it.
    async with connect(dep.url, additional_headers=headers, proxy=None, max_size=None) as ws:
        assert_deflate(ws)
        await ws.send(command)
        with pytest.raises(ConnectionClosed):
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            pytest.fail(f"the backend's bomb reached the client: {len(got)} bytes")
    backend_code = await backend.connection_end()
    after = memory(dep.process.pid)
    print(
        f"\nbackend bomb: client got {ws.close_code} {ws.close_reason!r}, backend"
        f" {backend_code}; peak VmRSS {mib(after['VmHWM'] - before['VmRSS'])} over start"
    )
    assert backend.received == [fingerprint(command)]
    assert backend_code in (1009, 1006)  # a close 1009, or TCP dropped mid-frame
    assert after["VmHWM"] - before["VmRSS"] < BOMB // 2
    return ws.close_code, ws.close_reason


async def test_backend_bomb_is_stopped_inside_its_frame(start: Start) -> None:
    # Only inflating shows the bomb too big, once its frame is under way to the client: no
    # close frame of the gateway's can follow a frame it cannot finish, so TCP ends (1006).
    assert await backend_bomb(start) == (1006, "")


async def test_backend_message_too_big_on_the_wire_gets_1014(start: Start) -> None:
    # Refused at its header, before any byte of it went out: the client is told why.
    assert await backend_bomb(start, "big") == (1014, "backend message too big")


async def test_exactly_the_limit_passes_one_byte_more_gets_1009(start: Start) -> None:
    dep, headers, backend = await start()
    exact = bytes(range(256)) * (LIMIT // 256)
    assert len(exact) == LIMIT
    async with connect(dep.url, additional_headers=headers, proxy=None) as ws:
        assert_deflate(ws)
        await ws.send(exact)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == exact
        assert backend.received == [fingerprint(exact)]
        await ws.send(exact + b"\x00")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (1009, TOO_BIG)
    assert backend.received == [fingerprint(exact)]
    assert await backend.connection_end() in (1009, 1006)
