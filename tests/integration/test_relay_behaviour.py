"""The relay after the upgrade: close codes end to end, peers that vanish or break the
protocol, the message size limit, backpressure (bounded memory), the idle timeout, and
bytes that arrive in the same TCP segment as the handshake."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import aiohttp
import picows
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .backends import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TIMEOUT,
    RawBackend,
    RawClient,
    RecordingBackend,
    close_payload,
    encode_frame,
    gateway_buffered_bytes,
    read_frame,
    read_until_close,
    switching_protocols,
)
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")

BUFFER_BOUND = 2 * 1024 * 1024


async def recorded(
    make_gateway: GatewayFactory,
    peers: Peers,
    edit=None,  # noqa: ANN001
) -> tuple[Env, RecordingBackend]:
    backend = await peers.recording()
    env = await make_gateway(edit=edit, production=backend.url)
    return env, backend


async def ws_connect(env: Env, **kwargs: object) -> ClientConnection:
    kwargs.setdefault("compression", None)
    return await connect(
        env.url, additional_headers=env.auth(), proxy=None, close_timeout=2, **kwargs
    )


async def expect_closed(ws: ClientConnection, timeout: float = TIMEOUT) -> None:
    """Read until the connection closes (bounded)."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()


# --------------------------------------------------------------- close pass-through


@pytest.mark.parametrize(("code", "reason"), [(4001, "bye"), (1000, ""), (3000, "ünïcode")])
async def test_client_close_code_and_reason_reach_the_backend(
    make_gateway: GatewayFactory, peers: Peers, code: int, reason: str
) -> None:
    env, backend = await recorded(make_gateway, peers)
    ws = await ws_connect(env)
    await ws.close(code, reason)
    seen = await backend.next()
    await seen.wait_ended()
    assert (seen.close_code, seen.close_reason) == (code, reason)
    # websockets answers with the code it received: it comes back unchanged too.
    assert (ws.close_code, ws.close_reason) == (code, reason)


@pytest.mark.parametrize(("code", "reason"), [(4002, "later"), (1000, ""), (1011, "oops")])
async def test_backend_close_code_and_reason_reach_the_client(
    make_gateway: GatewayFactory, peers: Peers, code: int, reason: str
) -> None:
    env, backend = await recorded(make_gateway, peers)
    ws = await ws_connect(env)
    await ws.send(f"!close {code} {reason}")
    await expect_closed(ws)
    assert (ws.close_code, ws.close_reason) == (code, reason)
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == code


async def test_empty_close_frame_passes_both_ways(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    ws = await ws_connect(env)
    await ws.close(None)  # type: ignore[arg-type]  # no status code: 1005 on the other side
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1005

    ws = await ws_connect(env)
    await ws.send("!close")
    await expect_closed(ws)
    assert ws.close_code == 1005


async def test_backend_dying_without_close_gets_the_client_1014(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    closes: asyncio.Queue[int] = asyncio.Queue()

    class Listener(picows.WSListener):
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                closes.put_nowait(frame.get_close_code())
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    transport, _ = await picows.ws_connect(Listener, env.url, extra_headers=env.auth())
    try:
        transport.send(picows.WSMsgType.TEXT, b"!abort")
        assert await asyncio.wait_for(closes.get(), TIMEOUT) == 1014
        await asyncio.wait_for(transport.wait_disconnected(), TIMEOUT)
    finally:
        transport.disconnect()
    await wait_no_connections(env)


async def test_client_vanishing_gets_the_backend_1001(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    for vanish in ("close", "abort"):
        client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
        assert client.status == 101
        seen = await backend.next()
        if vanish == "close":
            client.writer.close()  # FIN, no close frame
        else:
            client.writer.transport.abort()  # RST
        await seen.wait_ended()
        assert seen.close_code == 1001
    await wait_no_connections(env)


async def wait_no_connections(env: Env, timeout: float = TIMEOUT) -> None:
    """The gateway forgets a connection once both of its legs are closed (bounded)."""
    async with asyncio.timeout(timeout):
        while env.gateway.connections:
            await asyncio.sleep(0.02)


# ------------------------------------------------------- control frames end to end


async def test_backend_ping_inside_a_fragmented_message_gets_the_clients_pong(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, _ = await recorded(make_gateway, peers)
    ws = await ws_connect(env)
    try:
        await ws.send("!ping")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "ping answered"
    finally:
        await ws.close()


async def test_raw_ping_payload_and_pong_pass_unchanged(env: Env) -> None:
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    try:
        payload = bytes(range(125))  # the largest control payload
        client.send(encode_frame(OP_TEXT, b"frag", fin=False))
        client.send(encode_frame(OP_PING, payload))
        client.send(encode_frame(OP_CONT, b"ment"))
        pong = await client.frame()
        assert (pong.opcode, pong.payload, pong.masked) == (OP_PONG, payload, False)
        echo = await client.frame()
        assert (echo.opcode, echo.payload) == (OP_TEXT, b"[production] fragment")
    finally:
        client.close()


# ----------------------------------------------------- a peer vanishing mid-frame


async def test_client_vanishing_mid_frame_never_completes_the_frame_with_gateway_bytes(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    assert client.status == 101
    seen = await backend.next()
    whole = encode_frame(OP_BINARY, b"0123456789ab")  # 2 + 4 + 12 bytes
    client.send(whole[:10])  # the header and 4 of the 12 payload bytes
    await client.writer.drain()
    await asyncio.sleep(0.1)
    client.writer.transport.abort()
    # The gateway cannot frame a close now; it must end the TCP connection instead of
    # writing a close frame whose first bytes the backend would take as the payload.
    await seen.wait_ended(timeout=1.5)
    assert seen.messages == []
    assert seen.close_code == 1006


async def test_backend_dying_mid_frame_never_completes_the_frame_with_gateway_bytes(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            partial = encode_frame(OP_BINARY, b"0123456789ab", mask=False)[:6]
            writer.write(switching_protocols(key) + partial)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.transport.abort()

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    ws = await ws_connect(env)
    received = []
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(ConnectionClosed):
            while True:
                received.append(await ws.recv())
    assert received == []
    assert ws.close_code == 1006


# ------------------------------------------------------------------------ size limit


def small_messages(config: dict) -> None:
    config["gateway"]["max_message_bytes"] = 1024


async def test_message_over_the_limit_gets_1009_and_closes_the_backend(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers, small_messages)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(env.url, headers=env.auth(), autoclose=False) as ws,
    ):
        await ws.send_bytes(b"x" * 1024)  # exactly the limit: fine
        assert (await ws.receive(timeout=TIMEOUT)).data == b"x" * 1024
        await ws.send_bytes(b"x" * 1025)
        message = await ws.receive(timeout=TIMEOUT)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == 1009
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1009
    assert seen.messages == [b"x" * 1024]


async def test_fragmented_message_over_the_limit_gets_1009(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers, small_messages)
    ws = await ws_connect(env)
    with contextlib.suppress(ConnectionClosed):
        await ws.send([b"a" * 600, b"b" * 600])
    await expect_closed(ws)
    assert ws.close_code == 1009
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1009


# ------------------------------------------------------------------ protocol errors


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(OP_TEXT, b"not masked", mask=False),
        encode_frame(3, b"reserved opcode"),
        encode_frame(11, b"reserved control opcode"),
        encode_frame(OP_TEXT, b"rsv1", rsv1=True),
        encode_frame(OP_PING, b"p" * 126),
        encode_frame(OP_PING, b"fragmented ping", fin=False),
        encode_frame(OP_CONT, b"continuation of nothing"),
        encode_frame(OP_CLOSE, b"\x03"),
    ],
    ids=[
        "unmasked",
        "opcode-3",
        "opcode-11",
        "rsv1",
        "ping-126",
        "ping-fragmented",
        "lone-continuation",
        "close-1-byte",
    ],
)
async def test_client_protocol_error_gets_1002(
    make_gateway: GatewayFactory, peers: Peers, frame: bytes
) -> None:
    env, backend = await recorded(make_gateway, peers)
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    try:
        assert client.status == 101
        client.send(encode_frame(OP_TEXT, b"fine"))
        reply = await client.frame()
        assert (reply.opcode, reply.payload) == (OP_TEXT, b"fine")
        client.send(frame)
        close = await client.frame()
        assert close.opcode == OP_CLOSE and not close.masked
        assert close.close_code == 1002
        assert await client.eof()
    finally:
        client.close()
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1002


async def test_masked_frame_from_the_backend_gets_the_client_1014(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            writer.write(switching_protocols(key) + encode_frame(OP_TEXT, b"masked", mask=True))
            await asyncio.sleep(TIMEOUT)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    ws = await ws_connect(env)
    await expect_closed(ws)
    assert ws.close_code == 1014


# -------------------------------------------------------------------- backpressure


async def watch_buffers(
    env: Env,
    progress,
    seconds: float = 5.0,  # noqa: ANN001
) -> tuple[bool, int]:
    """Sample the gateway's buffered bytes until `progress()` stalls for 0.5 s (after it
    started) or `seconds` pass. Returns (stalled, the largest sample)."""
    largest = 0
    last_value, last_change = progress(), time.monotonic()
    deadline = last_change + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        largest = max(largest, gateway_buffered_bytes(env.gateway))
        value = progress()
        now = time.monotonic()
        if value != last_value:
            last_value, last_change = value, now
        elif value > 0 and now - last_change > 0.5:
            return True, largest
    return False, largest


async def test_backend_that_never_reads_does_not_grow_the_gateway(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            writer.write(switching_protocols(key))
            # Never read again: the stream stops reading its socket past 128 KiB.
            await asyncio.sleep(3 * TIMEOUT)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    ws = await ws_connect(env)
    sent = 0
    chunk = os.urandom(64 * 1024)

    async def push() -> None:
        nonlocal sent
        while sent < 64 * 1024 * 1024:
            await ws.send(chunk)  # blocks once websockets' write buffer is full
            sent += len(chunk)

    pusher = asyncio.create_task(push())
    try:
        stalled, largest = await watch_buffers(env, lambda: sent)
    finally:
        pusher.cancel()
        ws.transport.abort()
    assert stalled, f"the client pushed {sent} bytes without being held back"
    assert sent < 64 * 1024 * 1024
    assert largest < BUFFER_BOUND, f"gateway buffered {largest} bytes"


async def test_client_that_never_reads_does_not_grow_the_gateway(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    try:
        assert client.status == 101
        client.send(encode_frame(OP_TEXT, b"!flood 5"))
        seen = await backend.next()
        # The raw client never reads: its stream stops reading the socket past 128 KiB.
        stalled, largest = await watch_buffers(env, lambda: seen.flooded)
    finally:
        client.writer.transport.abort()
    assert stalled, f"the backend flooded {seen.flooded} bytes without being held back"
    assert largest < BUFFER_BOUND, f"gateway buffered {largest} bytes"
    # The client is gone: the backend gets its 1001 at once, not after close_timeout_s (2).
    await seen.wait_ended(timeout=1.5)
    assert seen.close_code == 1001
    await wait_no_connections(env, timeout=1.5)


async def test_echo_of_a_burst_the_client_does_not_read(env: Env) -> None:
    """The client writes a burst and reads nothing: the echo backend's replies back up to
    the gateway, which must stop reading the backend, which stops reading the gateway..."""
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    written = 0
    frame = encode_frame(OP_BINARY, os.urandom(64 * 1024))

    async def push() -> None:
        nonlocal written
        while written < 64 * 1024 * 1024:
            client.send(frame)
            await client.writer.drain()
            written += len(frame)

    pusher = asyncio.create_task(push())
    try:
        stalled, largest = await watch_buffers(env, lambda: written)
    finally:
        pusher.cancel()
        client.writer.transport.abort()
    assert stalled, f"the client pushed {written} bytes without being held back"
    assert largest < BUFFER_BOUND, f"gateway buffered {largest} bytes"


# ---------------------------------------------------------------------- idle timeout


def short_idle(config: dict) -> None:
    config["gateway"]["idle_timeout_s"] = 0.5


async def test_idle_connection_is_closed_with_1001_on_both_sides(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers, short_idle)
    ws = await ws_connect(env, ping_interval=None)
    started = time.monotonic()
    await expect_closed(ws)
    idle = time.monotonic() - started
    assert ws.close_code == 1001
    assert 0.5 <= idle < 2.0
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1001


async def test_a_connection_in_use_is_not_idle(make_gateway: GatewayFactory, peers: Peers) -> None:
    """Traffic every 0.35 s, never 0.5 s of silence: the connection must stay open."""
    env, _ = await recorded(make_gateway, peers, short_idle)
    ws = await ws_connect(env, ping_interval=None)
    try:
        for i in range(4):  # 1.4 s: the old check closed it after 1.0 s
            await asyncio.sleep(0.35)
            await ws.send(f"keep-alive {i}")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"keep-alive {i}"
    finally:
        ws.transport.abort()


# --------------------------------------------------------------------- close timeout


def short_close(config: dict) -> None:
    config["gateway"]["close_timeout_s"] = 0.4


def close_then(after_close: str, held_for: list[float]):  # noqa: ANN201 - handler factory
    """A backend that reads frames until the client's close arrives, then either never
    answers (`silent`) or answers with its close frame but keeps its TCP connection open
    (`reply`). It records how long the gateway kept its connection after that."""

    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            writer.write(switching_protocols(key))
            await read_until_close(reader)
            if after_close == "reply":
                writer.write(encode_frame(OP_CLOSE, close_payload(1000), mask=False))
            closed_at = time.monotonic()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(reader.read(), TIMEOUT)  # EOF or reset: dropped
            held_for.append(time.monotonic() - closed_at)
            writer.close()

        return handler

    return make_handler


@pytest.mark.parametrize("after_close", ["silent", "reply"])
async def test_the_gateway_drops_a_backend_stuck_in_the_close_handshake(
    make_gateway: GatewayFactory, peers: Peers, after_close: str
) -> None:
    """No close reply, or a reply but no TCP close: either way the gateway drops the
    backend's connection after close_timeout_s (and never before), and forgets it."""
    held: list[float] = []
    backend = await peers.raw(close_then(after_close, held))
    env = await make_gateway(edit=short_close, production=backend.url)
    ws = await ws_connect(env, ping_interval=None)
    await ws.close(1000, "done")
    async with asyncio.timeout(TIMEOUT):
        while not held:
            await asyncio.sleep(0.02)
    (held_for,) = held
    assert 0.3 <= held_for < 2.0  # 0.4 s after the close began, up to a tick and slack later
    if after_close == "reply":
        assert ws.close_code == 1000  # the client's own handshake completed cleanly
    await wait_no_connections(env)


# -------------------------------------------------- bytes in the handshake's segment


async def test_early_frames_after_the_upgrade_request_are_relayed(env: Env) -> None:
    early = encode_frame(OP_TEXT, b"early bird") + encode_frame(OP_BINARY, b"\x00second")
    client = await RawClient.connect(
        env.gateway.address, "/echowebsocket/1.0", env.auth(), early=early
    )
    try:
        assert client.status == 101
        first, second = await client.frame(), await client.frame()
        assert (first.opcode, first.payload) == (OP_TEXT, b"[production] early bird")
        assert (second.opcode, second.payload) == (OP_BINARY, b"\x00second")
        client.send(encode_frame(OP_CLOSE, close_payload(1000)))
        assert (await client.frame()).close_code == 1000
    finally:
        client.close()


async def test_frames_sent_while_the_backend_handshake_runs_are_held_then_relayed(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    """More than the gateway holds (64 KiB) is sent before its 101: it stops reading the
    client until the backend is ready, then relays everything, in order."""

    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            await asyncio.sleep(0.3)  # a slow backend
            writer.write(switching_protocols(key))
            while True:  # a frame-level echo
                frame = await read_frame(reader)
                writer.write(encode_frame(frame.opcode, frame.payload, mask=False))
                if frame.opcode == OP_CLOSE:
                    return

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    client = await RawClient.connect_later(env.gateway.address, "/echowebsocket/1.0", env.auth())
    try:
        payloads = [bytes([i]) * 100_000 for i in range(3)] + [b"last"]
        for payload in payloads:
            client.send(encode_frame(OP_BINARY, payload))
        assert (await client.response())[0] == 101
        for payload in payloads:
            frame = await client.frame()
            assert (frame.opcode, frame.payload) == (OP_BINARY, payload)
    finally:
        client.writer.transport.abort()


async def test_frame_in_the_same_segment_as_the_101_reaches_the_client(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            hello = encode_frame(OP_TEXT, b"welcome", mask=False)
            writer.write(switching_protocols(key) + hello + hello)
            await asyncio.sleep(TIMEOUT)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    ws = await ws_connect(env)
    try:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "welcome"
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "welcome"
    finally:
        ws.transport.abort()


# ------------------------------------------------------------------------- shutdown


async def test_stop_closes_open_connections_with_1001_on_both_sides(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await recorded(make_gateway, peers)
    ws = await ws_connect(env)
    await ws.send("hello")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
    seen = await backend.next()
    started = time.monotonic()
    await env.gateway.stop(grace_s=3.0)
    assert time.monotonic() - started < 1.0
    await expect_closed(ws)
    assert ws.close_code == 1001
    await seen.wait_ended()
    assert seen.close_code == 1001
    assert not env.gateway.connections


async def test_stop_during_a_backend_handshake_answers_503(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)
            await asyncio.sleep(3 * TIMEOUT)  # a slow backend: no answer for a while

        return handler

    def slow_backend(config: dict) -> None:
        config["gateway"]["backend_handshake_timeout_s"] = 10

    backend = await peers.raw(make_handler)
    env = await make_gateway(edit=slow_backend, production=backend.url)
    client = await RawClient.connect_later(env.gateway.address, "/echowebsocket/1.0", env.auth())
    async with asyncio.timeout(TIMEOUT):
        while not backend.requests:
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await env.gateway.stop(grace_s=3.0)
    assert time.monotonic() - started < 1.0, "stop waited for a handshake in progress"
    status, headers = await client.response()
    assert status == 503
    assert "upgrade" not in headers.get("connection", "").lower()
    assert not env.gateway.connections


async def test_client_vanishing_during_the_backend_handshake(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    backend_eof = asyncio.Event()

    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)
            await reader.read()  # until the gateway drops us
            backend_eof.set()

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    client = await RawClient.connect_later(env.gateway.address, "/echowebsocket/1.0", env.auth())
    async with asyncio.timeout(TIMEOUT):
        while not backend.requests:
            await asyncio.sleep(0.01)
    client.writer.transport.abort()
    await asyncio.wait_for(backend_eof.wait(), 1.0)
    await wait_no_connections(env, timeout=1.0)
