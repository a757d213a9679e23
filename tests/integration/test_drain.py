"""The drain of a real `wsgw serve` process: SIGTERM (or POST /drain at the admin port) makes
/health answer 503 at once and refuses new upgrades with 503; the open connections keep
working for gateway.drain_s; then the rest are closed with 1001, one in each equal slice of
gateway.drain_close_window_s at a random point of it; then the process exits 0. A second
SIGTERM, a SIGINT, or drain_s 0 with a window of 0 close everyone at once.

Clients are websockets with its defaults (permessage-deflate offered) and the echo backend
accepts compression, so the drained connections are compressed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import websockets
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsgw.tools.echo import start_echo_server

from .backends import free_port
from .conftest import base_config
from .test_serve_process import Deployment

PREFIX = "[production] "
RECV_S = 5.0


@dataclass
class Drainable:
    """A deployment serving, a token for it, and the connections opened through it."""

    deployment: Deployment
    token: str

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self.deployment.process is not None
        return self.deployment.process

    async def open(self, n: int) -> list[ClientConnection]:
        """n connections through the gateway, each checked with one echo (compressed)."""
        conns = await asyncio.gather(*(self.connect() for _ in range(n)))
        for ws in conns:
            assert ws.protocol.extensions, "permessage-deflate not negotiated"
            await echo_check(ws, random.Random(id(ws)), 1)
        return list(conns)

    def connect(self) -> connect:
        headers = {"Authorization": f"Bearer {self.token}"}
        return connect(
            self.deployment.url, additional_headers=headers, proxy=None, open_timeout=RECV_S
        )

    async def exit_status(self, timeout_s: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()


Deploy = Callable[..., Awaitable[Drainable]]


@pytest.fixture
async def deploy(tmp_path: Path) -> AsyncIterator[Deploy]:
    """`await deploy(drain_s=…, window_s=…, *serve_args)`: a `wsgw serve` process with that
    drain, set up with the CLI (keys, an application subscribed to the echo API, a
    token)."""
    echo = await start_echo_server("127.0.0.1", 0, prefix=PREFIX, permessage_deflate=True)
    echo_url = f"ws://127.0.0.1:{echo.sockets[0].getsockname()[1]}"
    deployments: list[Deployment] = []

    async def factory(drain_s: float, window_s: float, *serve_args: str) -> Drainable:
        raw = base_config(echo_url, None)
        del raw["apis"][0]["endpoints"]["sandbox"]
        port, admin_port = free_port(), free_port()
        raw["gateway"].update(
            listen=f"127.0.0.1:{port}",
            admin_listen=f"127.0.0.1:{admin_port}",
            drain_s=drain_s,
            drain_close_window_s=window_s,
        )
        config = tmp_path / "wsgw.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        dep = Deployment(tmp_path, config, port, admin_port)
        deployments.append(dep)
        await dep.cli("keys", "init")
        await dep.cli("app", "create", "DefaultApplication")
        await dep.cli("keys", "generate", "DefaultApplication", "--key-type", "production")
        await dep.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
        token = await dep.token()
        await dep.serve(*serve_args)
        return Drainable(dep, token)

    yield factory
    for dep in deployments:
        if dep.process is not None and dep.process.returncode is None:
            dep.process.kill()
            await dep.process.wait()
    echo.close()


# ------------------------------------------------------------------------- helpers


async def http(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request on loopback: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(-1), RECV_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def health(dep: Deployment) -> tuple[int, int]:
    """/health's status on the admin port and on the gateway port."""
    admin, gateway = await asyncio.gather(
        http(dep.admin_port, "GET", "/health"), http(dep.port, "GET", "/health")
    )
    return admin[0], gateway[0]


async def until_draining(dep: Deployment, since: float, within_s: float) -> float:
    """Poll both /health until both say 503 {"status": "draining"}: the delay since `since`."""
    while True:
        statuses = await health(dep)
        if statuses == (503, 503):
            break
        assert statuses == (200, 200), statuses
        assert time.monotonic() - since < within_s, f"/health still {statuses}"
        await asyncio.sleep(0.01)
    delay = time.monotonic() - since
    for port in (dep.admin_port, dep.port):
        status, _, body = await http(port, "GET", "/health")
        assert status == 503
        assert orjson.loads(body)["status"] == "draining"
    return delay


def messages(rng: random.Random, n: int) -> list[str | bytes]:
    """Varied messages: text with non-ASCII characters, compressible and random binary,
    an empty one, and one of several deflate blocks' worth."""
    out: list[str | bytes] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(f"{i} héllo ✓ " * rng.randint(1, 50))
        elif kind == 1:
            out.append(rng.randbytes(rng.randint(1, 3000)))
        elif kind == 2:
            out.append(bytes([i % 256]) * rng.randint(1, 70_000))
        elif kind == 3:
            out.append("" if rng.random() < 0.3 else "".join(rng.choices("abc ", k=200)))
        else:
            out.append(rng.randbytes(rng.randint(20_000, 60_000)))
    return out


async def echo_check(ws: ClientConnection, rng: random.Random, n: int) -> int:
    """Send n varied messages one at a time: each comes back byte for byte (text with the
    backend's prefix)."""
    for message in messages(rng, n):
        await ws.send(message)
        expected = PREFIX + message if isinstance(message, str) else message
        assert await asyncio.wait_for(ws.recv(), RECV_S) == expected
    return n


async def closed_at(ws: ClientConnection, origin: float) -> tuple[float, int | None]:
    """Wait for the gateway to close `ws`: (when, since `origin`; the close code)."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    return time.monotonic() - origin, ws.close_code


async def refused_upgrade(drainable: Drainable) -> None:
    """A new upgrade while draining: the TCP connection is accepted, the handshake
    answered 503 with Retry-After: 0."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with drainable.connect():
            pass
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "0"


async def no_traceback(drainable: Drainable) -> None:
    stderr = await drainable.stderr()
    assert "Traceback" not in stderr, stderr
    assert drainable.token not in stderr


# --------------------------------------------------------------------------- tests

DRAIN_S = 1.5
WINDOW_S = 1.5
N = 20


async def test_sigterm_drains_then_closes_over_the_window_with_jitter(deploy: Deploy) -> None:
    drainable = await deploy(drain_s=DRAIN_S, window_s=WINDOW_S)
    dep = drainable.deployment
    conns = await drainable.open(N)
    assert await health(dep) == (200, 200)

    drainable.process.send_signal(signal.SIGTERM)
    origin = time.monotonic()
    assert await until_draining(dep, origin, 0.2) < 0.2
    await refused_upgrade(drainable)

    async def keep_working(i: int, ws: ClientConnection) -> tuple[int, float, int | None]:
        """Echo until shortly before drain_s, then wait for the gateway's close."""
        rng = random.Random(i)
        sent = 0
        while time.monotonic() - origin < DRAIN_S - 0.3:
            sent += await echo_check(ws, rng, 5)
            await asyncio.sleep(0.02)
        at, code = await closed_at(ws, origin)
        return sent, at, code

    results = await asyncio.gather(*(keep_working(i, ws) for i, ws in enumerate(conns)))
    exited = await drainable.exit_status(5.0)
    assert exited == 0
    assert all(sent >= 10 for sent, _, _ in results), [sent for sent, _, _ in results]
    assert [code for _, _, code in results] == [1001] * N
    times = sorted(at for _, at, _ in results)
    # Open through drain_s, all closed within the window after it (plus scheduling slack).
    assert times[0] >= DRAIN_S - 0.05, times
    assert times[-1] <= DRAIN_S + WINDOW_S + 0.3, times
    # Spread: the last ones near the end of the window, never a third in a tenth of it.
    assert times[-1] - times[0] >= WINDOW_S * 0.7, times
    for at in times:
        assert sum(at <= t < at + WINDOW_S / 10 for t in times) <= N / 3, times
    # Jitter: where in its slice each close fell, measured from the first (the offset of
    # the window as the client sees it cancels out). Lockstep closes (one at the same point
    # of every slice) would leave only the measurement noise, a few ms in 75 ms slices.
    step = WINDOW_S / N
    positions = [(at - times[0]) / step - i for i, at in enumerate(times)]
    assert statistics.pstdev(positions) > 0.1, positions
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) - min(gaps) > step / 4, gaps
    await no_traceback(drainable)


async def test_the_same_sigterm_delivered_twice_does_not_end_the_drain(deploy: Deploy) -> None:
    """systemd signals every process of the unit and the supervisor passes SIGTERM on too:
    two in the same instant are one request to drain."""
    drainable = await deploy(drain_s=20, window_s=20)
    conns = await drainable.open(3)
    drainable.process.send_signal(signal.SIGTERM)
    drainable.process.send_signal(signal.SIGTERM)
    await until_draining(drainable.deployment, time.monotonic(), 0.2)
    await asyncio.sleep(0.5)
    for i, ws in enumerate(conns):  # still working: no fast path was taken
        await echo_check(ws, random.Random(100 + i), 5)
    drainable.process.send_signal(signal.SIGINT)
    assert await drainable.exit_status(3.0) == 0


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_closes_everyone_at_once(
    deploy: Deploy, second: signal.Signals
) -> None:
    drainable = await deploy(drain_s=20, window_s=20)
    dep = drainable.deployment
    conns = await drainable.open(10)
    drainable.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await until_draining(dep, sent, 0.2)
    for i, ws in enumerate(conns):  # still working
        await echo_check(ws, random.Random(i), 5)
    # A SIGTERM within a second of the first is taken for the same one delivered twice.
    await asyncio.sleep(1.1 - (time.monotonic() - sent))
    drainable.process.send_signal(second)
    origin = time.monotonic()
    results = await asyncio.gather(*(closed_at(ws, origin) for ws in conns))
    assert [code for _, code in results] == [1001] * 10
    assert max(at for at, _ in results) < 1.0, results
    assert await drainable.exit_status(2.0) == 0
    assert time.monotonic() - origin < 2.0
    await no_traceback(drainable)


async def test_no_drain_and_no_window_close_everyone_at_once(deploy: Deploy) -> None:
    drainable = await deploy(drain_s=0, window_s=0)
    conns = await drainable.open(10)
    drainable.process.send_signal(signal.SIGTERM)
    origin = time.monotonic()
    results = await asyncio.gather(*(closed_at(ws, origin) for ws in conns))
    assert [code for _, code in results] == [1001] * 10
    assert max(at for at, _ in results) < 1.0, results
    assert await drainable.exit_status(2.0) == 0
    await no_traceback(drainable)


async def test_post_drain_at_the_admin_port_drains_and_exits_0(deploy: Deploy) -> None:
    drain_s, window_s = 0.8, 0.8
    drainable = await deploy(drain_s=drain_s, window_s=window_s)
    dep = drainable.deployment
    conns = await drainable.open(5)

    origin = time.monotonic()
    status, _, body = await http(dep.admin_port, "POST", "/drain")
    assert status == 202, body  # accepted: the drain is under way
    assert orjson.loads(body) == {"status": "draining", "connections": 5}
    await until_draining(dep, origin, 0.2)
    await refused_upgrade(drainable)
    for i, ws in enumerate(conns):
        await echo_check(ws, random.Random(i), 5)
    # Asked again: the same drain, not a second one (nor the fast path).
    status, _, body = await http(dep.admin_port, "POST", "/drain")
    assert status == 202, body  # accepted: the drain is under way
    assert orjson.loads(body)["status"] == "draining"

    results = await asyncio.gather(*(closed_at(ws, origin) for ws in conns))
    assert [code for _, code in results] == [1001] * 5
    times = sorted(at for at, _ in results)
    assert drain_s - 0.05 <= times[0] and times[-1] <= drain_s + window_s + 0.3, times
    assert await drainable.exit_status(5.0) == 0
    await no_traceback(drainable)


async def test_with_reuse_port_the_listener_closes_at_once(deploy: Deploy) -> None:
    """--reuse-port: new connections are for the other processes on the port, so the
    listener closes at once (here nothing else listens: connecting is refused); the open
    connections keep working through the drain all the same."""
    drain_s, window_s = 0.8, 0.4
    drainable = await deploy(drain_s, window_s, "--reuse-port")
    dep = drainable.deployment
    conns = await drainable.open(4)
    drainable.process.send_signal(signal.SIGTERM)
    origin = time.monotonic()
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", dep.port)
        except ConnectionRefusedError:
            break
        writer.close()
        assert time.monotonic() - origin < 0.2, "the gateway port still accepts"
        await asyncio.sleep(0.01)
    status, _, body = await http(dep.admin_port, "GET", "/health")
    assert status == 503 and orjson.loads(body)["status"] == "draining"
    for i, ws in enumerate(conns):
        await echo_check(ws, random.Random(i), 5)
    results = await asyncio.gather(*(closed_at(ws, origin) for ws in conns))
    assert [code for _, code in results] == [1001] * 4
    times = sorted(at for at, _ in results)
    assert drain_s - 0.05 <= times[0] and times[-1] <= drain_s + window_s + 0.3, times
    assert await drainable.exit_status(5.0) == 0
    await no_traceback(drainable)


async def test_a_drain_with_nothing_open_ends_at_once(deploy: Deploy) -> None:
    """drain_s is a bound, not a wait: with no connection open the process exits at once."""
    drainable = await deploy(drain_s=30, window_s=30)
    conns = await drainable.open(1)
    await conns[0].close()
    await asyncio.sleep(0.1)
    drainable.process.send_signal(signal.SIGTERM)
    origin = time.monotonic()
    assert await drainable.exit_status(3.0) == 0
    assert time.monotonic() - origin < 2.0
    await no_traceback(drainable)
