"""What the listeners do with connections that never become useful, with real sockets: the
admin port's request timeout and connection cap, the file descriptor limit (raised at start,
a reserve kept for the admin port, exhaustion logged once and counted) and the per-address
cap on connections that have not upgraded yet.

Clients come from several loopback addresses (127.0.0.x) so that one machine plays many."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import connect

from tests.tls_support import self_signed_certificate
from wsgw import admin
from wsgw.oauth.keys import generate_signing_key
from wsgw.pipeline.flow import CONNECTING
from wsgw.tools.echo import start_echo_server

from .backends import TIMEOUT, RawBackend, free_port, read_head, upgrade_request
from .conftest import Env, GatewayFactory, base_config
from .test_serve_process import child_env

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def open_from(address: str, source: str = "127.0.0.1") -> Stream:
    host, port = split(address)
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0)), TIMEOUT
    )


async def http_get(address: str, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    reader, writer = await open_from(address, source)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
    try:
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the peer ends the connection (EOF or reset) within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def first_bytes(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the peer sends first: None if nothing within `seconds` (the connection is held),
    b"" if it closed (or reset) the connection without a word."""
    try:
        return await asyncio.wait_for(reader.read(4096), seconds)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def echo_through(url: str, source: str = "127.0.0.1") -> str:
    async with connect(url, proxy=None, local_addr=(source, 0)) as ws:
        await ws.send("still served")
        return await asyncio.wait_for(ws.recv(), TIMEOUT)  # type: ignore[return-value]


async def until(condition: Callable[[], bool], seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def anonymous(raw: dict) -> None:
    raw["apis"][0]["auth"] = "none"


# ------------------------------------------------------------------------------ admin port


async def test_idle_admin_connection_is_closed_after_the_request_timeout(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "ADMIN_REQUEST_TIMEOUT_S", 0.5)
    env = await make_gateway()
    idle = await open_from(env.gateway.admin_address)
    partial = await open_from(env.gateway.admin_address)
    partial[1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
    started = time.monotonic()
    assert await closed_within(idle[0], 2.5), "an idle admin connection stayed open"
    assert await closed_within(partial[0], 2.5), "an incomplete admin request stayed open"
    assert 0.45 < time.monotonic() - started < 2.0
    for _, writer in (idle, partial):
        writer.close()
    # A request sent in time is still answered.
    assert (await http_get(env.gateway.admin_address, "/health"))[0] == 200


async def test_admin_request_head_is_bounded(env: Env) -> None:
    reader, writer = await open_from(env.gateway.admin_address)
    writer.write(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n")
    start, _ = await asyncio.wait_for(read_head(reader), TIMEOUT)
    assert start.split()[1] == "431"
    writer.close()


async def test_admin_connections_are_capped_and_the_oldest_idle_one_makes_room(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway(anonymous)
    admin = env.gateway.admin_address
    idle = [await open_from(admin) for _ in range(64)]
    await asyncio.sleep(0.1)
    # The 65th gets in (a health check is never locked out by idle connections): the
    # oldest connection that has not sent its request is closed to make room.
    assert (await http_get(admin, "/health"))[0] == 200
    assert await closed_within(idle[0][0], 1.0), "the oldest idle connection is still open"
    assert not await closed_within(idle[1][0], 0.2)
    more = [await open_from(admin) for _ in range(10)]
    await asyncio.sleep(0.1)
    closed = await asyncio.gather(*(closed_within(reader, 0.1) for reader, _ in idle[1:]))
    assert closed == [True] * 9 + [False] * 54, "not the oldest nine, or not only them"
    assert len(env.gateway.admin_connections) == 64
    # The gateway port is not affected.
    assert await echo_through(env.url) == "[production] still served"
    status, body = await http_get(admin, "/metrics")
    assert status == 200
    # Ten evictions, and one more for the scrape's own connection.
    assert 'wsgw_admin_connections_closed_total{reason="evicted"} 11.0' in body.decode()
    for _, writer in idle + more:
        writer.close()


async def test_admin_cap_answers_503_when_no_connection_can_make_room(env: Env) -> None:
    admin = env.gateway.admin_address
    held = [await open_from(admin) for _ in range(64)]
    await asyncio.sleep(0.1)
    # Every one of them busy with its answer (a slow reader of /metrics, say): none evictable.
    for conn in env.gateway.admin_connections:
        conn.reader = None
    status, body = await http_get(admin, "/health")
    assert status == 503
    assert b"too many admin connections" in body
    assert not any(await asyncio.gather(*(closed_within(reader, 0.1) for reader, _ in held)))
    for _, writer in held:
        writer.close()


# ------------------------------------------------------------- per-address pending cap


async def test_one_address_gets_at_most_32_pending_connections(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway(anonymous)
    address = env.gateway.address
    flood = [await open_from(address, "127.0.0.1") for _ in range(40)]
    answers = await asyncio.gather(*(first_bytes(reader, 0.5) for reader, _ in flood))
    held = [answer for answer in answers if answer is None]
    refused = [answer for answer in answers if answer is not None]
    assert len(held) == 32
    assert answers[32:] == refused, "not the 33rd and later that were refused"
    assert all(answer.startswith(b"HTTP/1.1 429 ") for answer in refused), refused[:1]
    # Another address is not affected, and upgrades.
    assert await echo_through(env.url, "127.0.0.2") == "[production] still served"
    # Upgraded connections do not count: 40 open WebSockets from one address.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(40):
            await stack.enter_async_context(
                connect(env.url, proxy=None, local_addr=("127.0.0.3", 0))
            )
        assert env.gateway.pending.by_address == {"127.0.0.1": 32}
    _, body = await http_get(env.gateway.admin_address, "/metrics")
    assert "wsgw_pending_refused_total 8.0" in body.decode()
    for _, writer in flood:
        writer.close()
    # Only addresses with pending connections are remembered.
    await until(lambda: not env.gateway.pending.by_address)
    assert await echo_through(env.url, "127.0.0.1") == "[production] still served"


async def test_connections_waiting_for_the_backend_count_as_pending(
    make_gateway: GatewayFactory,
) -> None:
    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    backend = await RawBackend(never_answers).start()
    try:
        env = await make_gateway(anonymous, production=backend.url)
        waiting = []
        for _ in range(32):
            stream = await open_from(env.gateway.address, "127.0.0.4")
            stream[1].write(upgrade_request("/echowebsocket/1.0"))
            waiting.append(stream)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            states = [leg.state for leg in env.gateway.connections]
            if states.count(CONNECTING) == 32:
                break
            await asyncio.sleep(0.02)
        assert states.count(CONNECTING) == 32
        reader, writer = await open_from(env.gateway.address, "127.0.0.4")
        assert (await first_bytes(reader, 1.0) or b"").startswith(b"HTTP/1.1 429 ")
        writer.close()
        # The backend handshake timeout (2 s) ends them: the address is forgotten.
        answers = await asyncio.gather(*(first_bytes(r, TIMEOUT) for r, _ in waiting))
        assert all((a or b"").startswith(b"HTTP/1.1 504 ") for a in answers)
        await until(lambda: not env.gateway.pending.by_address)
        for _, writer in waiting:
            writer.close()
    finally:
        backend.close()


async def test_a_client_on_a_reserved_descriptor_gets_503_on_both_listeners(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)

    def with_tls(raw: dict) -> None:
        anonymous(raw)
        raw["gateway"]["tls"] = {
            "listen": "127.0.0.1:0",
            "cert_file": str(cert_file),
            "key_file": str(key_file),
        }

    env = await make_gateway(with_tls)
    env.gateway.fds.threshold = 0  # every descriptor is in the reserve now
    reader, writer = await open_from(env.gateway.address)
    assert (await first_bytes(reader, TIMEOUT) or b"").startswith(b"HTTP/1.1 503 ")
    writer.close()
    host, port = split(env.gateway.tls_address or "")
    context = ssl.create_default_context(cafile=str(cert_file))
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    assert (await first_bytes(reader, TIMEOUT) or b"").startswith(b"HTTP/1.1 503 ")
    writer.close()
    assert env.gateway.fds.exhausted_total == 2
    assert not env.gateway.connections and not env.gateway.pending.by_address
    # The admin port is what the reserve is for.
    assert (await http_get(env.gateway.admin_address, "/health"))[0] == 200


# ---------------------------------------------------------- file descriptors (a process)


@dataclass
class Served:
    process: asyncio.subprocess.Process
    port: int
    admin_port: int
    stderr: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echowebsocket/1.0"

    def log(self) -> str:
        return self.stderr.read_text()

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def nofile(self) -> tuple[int, int]:
        for line in Path(f"/proc/{self.process.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise AssertionError("no open files limit")


Serve = Callable[[int, int], Awaitable[Served]]


@pytest.fixture
async def serve_with_nofile(tmp_path: Path) -> AsyncIterator[Serve]:
    """`wsgw serve` as a process whose RLIMIT_NOFILE starts at (soft, hard); an echo backend
    and an `auth: none` API, so that any client may upgrade."""
    echo = await start_echo_server("127.0.0.1", 0, prefix="[production] ")
    started: list[Served] = []

    async def serve(soft: int, hard: int) -> Served:
        raw = base_config(f"ws://127.0.0.1:{echo.sockets[0].getsockname()[1]}", None)
        anonymous(raw)
        port, admin_port = free_port(), free_port()
        raw["gateway"]["listen"] = f"127.0.0.1:{port}"
        raw["gateway"]["admin_listen"] = f"127.0.0.1:{admin_port}"
        (tmp_path / "wsgw.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        (tmp_path / "subscriptions.yaml").write_text("applications: []\n")
        generate_signing_key(tmp_path / "keys" / "signing.pem")
        stderr = tmp_path / "stderr.log"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wsgw",
                "serve",
                "-c",
                "wsgw.yaml",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                cwd=tmp_path,
                env=child_env(),
                preexec_fn=limit,
            )
        served = Served(process, port, admin_port, stderr)
        started.append(served)
        deadline = time.monotonic() + 10
        while "wsgw listening" not in served.log():
            assert process.returncode is None, f"wsgw serve exited: {served.log()}"
            assert time.monotonic() < deadline, "wsgw serve did not start"
            await asyncio.sleep(0.05)
        return served

    yield serve
    for served in started:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()
    echo.close()


async def test_serve_raises_the_soft_fd_limit_to_the_hard_one(serve_with_nofile: Serve) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    served = await serve_with_nofile(256, hard)
    assert served.nofile() == (hard, hard)
    assert f"file descriptors: soft limit raised from 256 to {hard}" in served.log()
    assert await echo_through(served.url) == "[production] still served"


async def test_fd_exhaustion_is_logged_once_and_the_admin_port_still_answers(
    serve_with_nofile: Serve,
) -> None:
    served = await serve_with_nofile(256, 300)
    assert served.nofile() == (300, 300)
    gateway = f"127.0.0.1:{served.port}"
    admin = f"127.0.0.1:{served.admin_port}"
    # 400 idle connections from 16 addresses (25 each: under the per-address cap).
    flood = [await open_from(gateway, f"127.0.0.{2 + i // 25}") for i in range(400)]
    answers = await asyncio.gather(*(first_bytes(reader, 1.0) for reader, _ in flood))
    held = sum(answer is None for answer in answers)
    refused = [answer for answer in answers if answer is not None]
    # The gateway keeps what it holds, refuses the rest with a 503 (not a silent close)…
    assert 150 < held < 300 - 64, held
    assert len(refused) == 400 - held
    assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused), refused[:1]
    # …and its admin port still answers, from the reserve.
    status, body = await http_get(admin, "/health")
    assert status == 200, body
    # More refusals within the interval are counted, not logged again.
    late = [await open_from(gateway, "127.0.0.20") for _ in range(20)]
    assert all(await asyncio.gather(*(first_bytes(reader, 1.0) for reader, _ in late)))
    log = served.log()
    assert len(re.findall("file descriptors exhausted", log)) == 1, log
    status, body = await http_get(admin, "/metrics")
    metrics = body.decode()
    assert f"wsgw_fd_exhausted_total {len(refused) + 20}.0" in metrics
    assert "wsgw_max_fds 300.0" in metrics
    open_fds = float(re.search(r"^wsgw_open_fds (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert held < open_fds <= 300
    # The flood gone (the gateway sees the connections end), new clients are served again.
    for _, writer in flood + late:
        writer.close()
    await until(lambda: served.open_fds() < 64)
    assert await echo_through(served.url, "127.0.0.30") == "[production] still served"
    assert "Traceback" not in served.log()
