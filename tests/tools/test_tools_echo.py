"""The echo backend against real clients on loopback: websockets, aiohttp and raw bytes."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from wsgw.tools.echo import (
    MessageAssembler,
    is_valid_close_code,
    parse_listen,
    select_subprotocol,
)

from .tools_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    close_payload,
    encode_frame,
)

TIMEOUT = 5.0
SIZES = [0, 1, 2, 7, 8, 125, 126, 127, 65535, 65536, 1024 * 1024]


def ws_connect(port: int, path: str = "/", **kwargs: object):
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        max_size=None,
        compression=None,
        **kwargs,
    )  # type: ignore[arg-type]


async def recv(ws) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


# --- websockets client ---------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_text_and_binary_echo_exact_at_boundary_sizes(echo_port: int, size: int) -> None:
    text = ("héllo wörld €" * (size // 10 + 1)).encode()[:size].decode("utf-8", "ignore")
    binary = bytes(i % 251 for i in range(size))
    async with ws_connect(echo_port) as ws:
        await ws.send(text)
        assert await recv(ws) == text
        await ws.send(binary)
        got = await recv(ws)
        assert isinstance(got, bytes) and got == binary


async def test_prefix_goes_before_text_only(start_echo) -> None:
    port = await start_echo(prefix="echo: ")
    async with ws_connect(port) as ws:
        await ws.send("hi")
        assert await recv(ws) == "echo: hi"
        await ws.send("")
        assert await recv(ws) == "echo: "
        await ws.send(b"\x00\x01")
        assert await recv(ws) == b"\x00\x01"


async def test_fragmented_message_from_websockets_comes_back_whole(start_echo) -> None:
    port = await start_echo(prefix=">")
    async with ws_connect(port) as ws:
        await ws.send(["frag", "men", "ted ", "ünïcode"])
        assert await recv(ws) == ">fragmented ünïcode"
        await ws.send([b"\x01", b"", b"\x02\x03"])
        assert await recv(ws) == b"\x01\x02\x03"
        await ws.send("after")  # the assembler is reset between messages
        assert await recv(ws) == ">after"


async def test_many_messages_stay_in_order(echo_port: int) -> None:
    async with ws_connect(echo_port) as ws:
        for i in range(500):
            await ws.send(f"m{i}")
        got = [await recv(ws) for _ in range(500)]
        assert got == [f"m{i}" for i in range(500)]


async def test_ping_gets_pong_with_same_payload(echo_port: int) -> None:
    async with ws_connect(echo_port) as ws:
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), TIMEOUT)
        assert latency >= 0


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1001, "bye"), (4001, "app code"), (3000, "")]
)
async def test_close_code_is_echoed(echo_port: int, code: int, reason: str) -> None:
    async with ws_connect(echo_port) as ws:
        await ws.close(code, reason)
        assert ws.close_code == code


async def test_subprotocol_first_client_offer_the_server_supports(start_echo) -> None:
    port = await start_echo(subprotocols=["chat", "superchat"])
    async with ws_connect(port, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "superchat"
    async with ws_connect(port, subprotocols=["unknown", "chat"]) as ws:
        assert ws.subprotocol == "chat"
    async with ws_connect(port) as ws:
        assert ws.subprotocol is None


async def test_subprotocol_none_when_nothing_matches(start_echo) -> None:
    port = await start_echo(subprotocols=["chat"])
    raw = await RawClient.connect(port, extra_headers=[("Sec-WebSocket-Protocol", "x, y")])
    assert b"sec-websocket-protocol" not in raw.response_head.lower()
    await raw.aclose()
    unconfigured = await start_echo()
    raw = await RawClient.connect(unconfigured, extra_headers=[("Sec-WebSocket-Protocol", "chat")])
    assert b"sec-websocket-protocol" not in raw.response_head.lower()
    await raw.aclose()


async def test_oversize_single_frame_closes_1009(start_echo) -> None:
    port = await start_echo(max_message_bytes=1000)
    async with ws_connect(port) as ws:
        await ws.send(b"x" * 1000)  # exactly the limit passes
        assert await recv(ws) == b"x" * 1000
        await ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_oversize_fragmented_message_closes_1009(start_echo) -> None:
    port = await start_echo(max_message_bytes=1000)
    async with ws_connect(port) as ws:
        await ws.send([b"x" * 600, b"x" * 400])  # 1000 in total: fine
        assert await recv(ws) == b"x" * 1000
        await ws.send(["y" * 600, "y" * 401])  # every frame small, the message is not
        with pytest.raises(ConnectionClosedError) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_any_path_is_served_and_non_upgrade_is_refused(echo_port: int) -> None:
    async with ws_connect(echo_port, "/echo/1.0?x=1") as ws:
        await ws.send("ok")
        assert await recv(ws) == "ok"
    url = f"http://127.0.0.1:{echo_port}/"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession() as session, session.get(url, timeout=timeout) as resp:
        assert resp.status == 400


# --- raw bytes: what libraries will not send ---------------------------------------------


async def test_fragmented_text_is_echoed_as_one_text_frame(echo_port: int) -> None:
    raw = await RawClient.connect(echo_port)
    raw.send(OP_TEXT, b"ab", fin=False)
    raw.send(OP_PING, b"in between")  # control frames may interleave fragments
    raw.send(OP_CONT, "c\xe2\x82".encode("latin-1"), fin=False)  # '€' split across frames
    raw.send(OP_CONT, b"\xac", fin=True)
    assert await raw.read_frame() == (True, OP_PONG, b"in between")
    assert await raw.read_frame() == (True, OP_TEXT, "abc€".encode())
    raw.send(OP_CLOSE, close_payload(1000))
    assert await raw.read_close() == 1000
    assert await raw.at_eof()


async def test_bad_utf8_closes_1007(echo_port: int) -> None:
    raw = await RawClient.connect(echo_port)
    raw.send(OP_TEXT, b"ok")
    raw.send(OP_TEXT, b"caf\xc3")  # truncated sequence
    assert await raw.read_frame() == (True, OP_TEXT, b"ok")
    assert await raw.read_close() == 1007
    assert await raw.at_eof()


async def test_bad_utf8_in_first_fragment_fails_before_the_message_ends(echo_port: int) -> None:
    raw = await RawClient.connect(echo_port)
    raw.send(OP_TEXT, b"\xff", fin=False)  # never valid anywhere: fail fast
    assert await raw.read_close() == 1007


@pytest.mark.parametrize(
    ("frames", "expected_close"),
    [
        ([(OP_CONT, b"x", {})], 1002),  # continuation with nothing to continue
        ([(OP_TEXT, b"a", {"fin": False}), (OP_TEXT, b"b", {})], 1002),  # nested message
        ([(OP_BINARY, b"x", {"rsv": 4})], 1002),  # RSV1 without permessage-deflate
        ([(OP_CLOSE, close_payload(0), {})], 1002),  # codes picows' enum lets through
        ([(OP_CLOSE, close_payload(1006), {})], 1002),
        ([(OP_CLOSE, close_payload(1005), {})], 1002),
        ([(OP_CLOSE, close_payload(999), {})], 1002),
        ([(OP_CLOSE, close_payload(5000), {})], 1002),
        ([(OP_CLOSE, close_payload(1000, b"\xff"), {})], 1007),  # reason not UTF-8
        ([(OP_CLOSE, b"", {})], 1000),  # no code: answered with 1000
        ([(OP_CLOSE, close_payload(4999, b"why"), {})], 4999),
        ([(0x3, b"", {})], 1002),  # reserved opcode
    ],
)
async def test_protocol_errors_and_close_frames(echo_port: int, frames, expected_close) -> None:
    raw = await RawClient.connect(echo_port)
    for opcode, payload, kwargs in frames:
        raw.send(opcode, payload, **kwargs)
    assert await raw.read_close() == expected_close
    assert await raw.at_eof()


async def test_nothing_is_echoed_after_close(echo_port: int) -> None:
    raw = await RawClient.connect(echo_port)
    raw.writer.write(
        b"".join(
            [
                encode_frame(OP_CLOSE, close_payload(1000)),
                encode_frame(OP_TEXT, b"too late"),
            ]
        )
    )
    assert await raw.read_frame() == (True, OP_CLOSE, struct.pack("!H", 1000))
    assert await raw.at_eof()


async def test_unmasked_client_frame_is_refused_by_picows(echo_port: int) -> None:
    raw = await RawClient.connect(echo_port)
    raw.send(OP_TEXT, b"naked", mask=False)
    assert await raw.read_close() == 1002


# --- aiohttp client ------------------------------------------------------------------------


async def test_aiohttp_client_text_binary_ping_close(start_echo) -> None:
    port = await start_echo(prefix="P:", subprotocols=["v2"])
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"ws://127.0.0.1:{port}/ws",
            protocols=("v1", "v2"),
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT),
        ) as ws,
    ):
        assert ws.protocol == "v2"
        await ws.send_str("text")
        msg = await ws.receive(TIMEOUT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "P:text")
        await ws.send_bytes(b"\xff\x00")
        msg = await ws.receive(TIMEOUT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\xff\x00")
        await ws.ping(b"p")
        msg = await ws.receive(TIMEOUT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"p")
        await ws.close(code=4002, message=b"done")
        assert ws.close_code == 4002


# --- pure helpers --------------------------------------------------------------------------


def test_select_subprotocol_follows_client_order_across_headers() -> None:
    supported = frozenset({"a", "b"})
    assert select_subprotocol(["x, b", "a"], supported) == "b"
    assert select_subprotocol([" a ,b"], supported) == "a"
    assert select_subprotocol(["x", ""], supported) is None
    assert select_subprotocol([], supported) is None


def test_close_code_validity_boundaries() -> None:
    valid = [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999]
    invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
    assert all(is_valid_close_code(c) for c in valid)
    assert not any(is_valid_close_code(c) for c in invalid)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":80") == ("0.0.0.0", 80)
    for bad in ["7001", "host:", "host:port", "h:70000"]:
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_assembler_limits_and_reset() -> None:
    from picows import WSMsgType
    from picows.picows import _make_test_ws_frame as frame

    asm = MessageAssembler(max_bytes=4)
    assert asm.feed(frame(WSMsgType.BINARY, b"ab", False, False)) is None
    assert asm.feed(frame(WSMsgType.CONTINUATION, b"cd", True, False)) == (
        WSMsgType.BINARY,
        b"abcd",
    )
    assert asm.feed(frame(WSMsgType.TEXT, b"four", True, False)) == (WSMsgType.TEXT, b"four")
    from wsgw.tools.echo import MessageError

    with pytest.raises(MessageError) as info:
        asm.feed(frame(WSMsgType.TEXT, b"fives", True, False))
    assert info.value.code == 1009


async def test_bad_upgrade_gets_400_and_the_server_keeps_serving(echo_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )  # no Sec-WebSocket-Key
    head = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 ")
    async with ws_connect(echo_port) as ws:
        await ws.send("still here")
        assert await recv(ws) == "still here"
