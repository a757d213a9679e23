"""The echo backend against real clients on loopback: websockets, aiohttp and raw bytes."""

from __future__ import annotations

import asyncio
import random
import signal
import struct
import zlib

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.extensions.permessage_deflate import PerMessageDeflate

from wsgw.tools.echo import (
    MessageAssembler,
    deflate_message,
    inflate_message,
    is_valid_close_code,
    negotiate_deflate,
    parse_listen,
    select_subprotocol,
)

from .test_tools_echo_cli import start_echo_process, stop
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
    # compressed (RSV1 on the first frame): returned as received, UTF-8 not checked here
    assert asm.feed_message(frame(WSMsgType.TEXT, b"\xff", False, True)) is None
    assert asm.feed_message(frame(WSMsgType.CONTINUATION, b"\xfe", True, False)) == (
        WSMsgType.TEXT,
        b"\xff\xfe",
        True,
    )
    assert asm.feed_message(frame(WSMsgType.BINARY, b"ab", True, False)) == (
        WSMsgType.BINARY,
        b"ab",
        False,
    )
    from wsgw.tools.echo import MessageError

    asm.feed_message(frame(WSMsgType.BINARY, b"a", False, True))
    with pytest.raises(MessageError) as info:
        asm.feed_message(frame(WSMsgType.CONTINUATION, b"b", True, True))
    assert info.value.code == 1002  # RSV1 belongs on the first frame only
    asm = MessageAssembler(max_bytes=4)

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


# --- permessage-deflate (RFC 7692) ----------------------------------------------------------

DEFLATE_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hôtel", "€uro"]


def varied_text(rng: random.Random, size: int) -> str:
    """Compressible (few words) but never periodic: words, numbers and separators drawn
    at random, so every message differs from the others at offsets that keep shifting."""
    parts: list[str] = []
    length = 0
    while length < size:
        number = rng.randrange(10 ** rng.randrange(1, 6))
        part = f"{rng.choice(WORDS)}{number}{rng.choice(' ,;:')}"
        parts.append(part)
        length += len(part)
    return "".join(parts)[:size]


def deflate_connect(port: int, **kwargs: object):
    """The websockets client with its default compression: it offers
    `permessage-deflate; client_max_window_bits`."""
    return connect(
        f"ws://127.0.0.1:{port}/",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        max_size=None,
        **kwargs,
    )  # type: ignore[arg-type]


async def read_any_frame(raw: RawClient) -> tuple[int, int, bytes]:
    """(RSV bits, opcode, payload) of the next server frame, RSV bits allowed."""
    b0, b1 = await asyncio.wait_for(raw.reader.readexactly(2), TIMEOUT)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await raw.reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await raw.reader.readexactly(8))
    payload = await asyncio.wait_for(raw.reader.readexactly(n), TIMEOUT)
    return (b0 >> 4) & 0x7, b0 & 0x0F, payload


async def test_websockets_default_compression_is_negotiated_and_echoed_exactly(
    start_echo,
) -> None:
    port = await start_echo(permessage_deflate=True)
    rng = random.Random(7692)
    async with deflate_connect(port) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == DEFLATE_ANSWER
        (ext,) = ws.protocol.extensions
        assert isinstance(ext, PerMessageDeflate)
        assert ext.local_no_context_takeover and ext.remote_no_context_takeover
        for size in SIZES:
            text = varied_text(rng, size)
            binary = rng.randbytes(size // 2) + varied_text(rng, size - size // 2).encode()
            await ws.send(text)
            assert await recv(ws) == text
            await ws.send(binary)
            got = await recv(ws)
            assert isinstance(got, bytes) and got == binary


async def test_compressed_messages_stay_in_order_and_distinct(start_echo) -> None:
    port = await start_echo(permessage_deflate=True)
    rng = random.Random(1)
    sent = [f"{i}:{varied_text(rng, rng.randrange(50, 3000))}" for i in range(300)]
    assert len(set(sent)) == len(sent)
    async with deflate_connect(port) as ws:
        for message in sent:
            await ws.send(message)
        assert [await recv(ws) for _ in sent] == sent


async def test_compressed_fragmented_message_and_prefix(start_echo) -> None:
    port = await start_echo(permessage_deflate=True, prefix="[p] ")
    rng = random.Random(2)
    pieces = [varied_text(rng, n) for n in (700, 0, 1, 5000)]
    async with deflate_connect(port) as ws:
        await ws.send(pieces)  # one deflate stream across 4 frames, RSV1 on the first only
        assert await recv(ws) == "[p] " + "".join(pieces)
        await ws.send(b"no prefix on binary")
        assert await recv(ws) == b"no prefix on binary"


async def test_compression_offers_with_windows_are_honoured(start_echo) -> None:
    port = await start_echo(permessage_deflate=True, prefix="w ")
    rng = random.Random(3)
    async with deflate_connect(port, compression=None, extensions=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    factory = ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=12)
    async with deflate_connect(port, compression=None, extensions=[factory]) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            DEFLATE_ANSWER + "; server_max_window_bits=10; client_max_window_bits=10"
        )
        for size in (10, 2000, 70000):
            text = varied_text(rng, size)
            await ws.send(text)
            assert await recv(ws) == "w " + text


async def test_raw_compressed_frames_come_back_verbatim_with_rsv1(start_echo) -> None:
    port = await start_echo(permessage_deflate=True)
    raw = await RawClient.connect(port, extra_headers=OFFER)
    assert f"sec-websocket-extensions: {DEFLATE_ANSWER}".encode() in raw.response_head.lower()
    rng = random.Random(4)
    for i in range(20):
        body = f"{i} {varied_text(rng, 40 + 97 * i)}".encode()
        compressed = deflate_message(body)
        raw.send(OP_BINARY, compressed, rsv=4)
        assert await read_any_frame(raw) == (4, OP_BINARY, compressed)  # same bytes, RSV1
    raw.send(OP_TEXT, b"plain")  # an uncompressed message stays uncompressed
    assert await read_any_frame(raw) == (0, OP_TEXT, b"plain")
    raw.send(OP_TEXT, deflate_message("tëxt".encode()), rsv=4)
    assert await read_any_frame(raw) == (4, OP_TEXT, deflate_message("tëxt".encode()))
    raw.send(OP_CLOSE, close_payload(1000))
    assert await raw.read_close() == 1000
    assert await raw.at_eof()


@pytest.mark.parametrize(
    ("frames", "expected_close"),
    [
        ([(OP_BINARY, b"x", {"rsv": 2})], 1002),  # RSV2: no extension uses it
        ([(OP_BINARY, b"x", {"rsv": 1})], 1002),  # RSV3
        ([(OP_CLOSE, close_payload(1000), {"rsv": 4})], 1002),  # RSV1 on a control frame
        (
            [(OP_BINARY, b"\x02\x00", {"rsv": 4, "fin": False}), (OP_CONT, b"x", {"rsv": 4})],
            1002,  # RSV1 on a continuation frame
        ),
        ([(OP_TEXT, deflate_message(b"caf\xc3"), {"rsv": 4})], 1007),  # bad UTF-8 inside
        ([(OP_TEXT, b"\xff\xff\xff", {"rsv": 4})], 1002),  # not DEFLATE at all
        ([(OP_TEXT, deflate_message(b"a" * 2001), {"rsv": 4})], 1009),  # too big inflated
    ],
)
async def test_compressed_protocol_errors(start_echo, frames, expected_close) -> None:
    port = await start_echo(permessage_deflate=True, max_message_bytes=2000)
    raw = await RawClient.connect(port, extra_headers=OFFER)
    for opcode, payload, kwargs in frames:
        raw.send(opcode, payload, **kwargs)
    assert await raw.read_close() == expected_close
    assert await raw.at_eof()


async def test_compressed_binary_is_never_inflated(start_echo) -> None:
    """Not DEFLATE, or a bomb: binary comes back as sent, the echo never inflates it."""
    port = await start_echo(permessage_deflate=True, max_message_bytes=2000)
    raw = await RawClient.connect(port, extra_headers=OFFER)
    for payload in (b"\xff\xff\xff", deflate_message(b"\x00" * 100_000)):
        raw.send(OP_BINARY, payload, rsv=4)
        assert await read_any_frame(raw) == (4, OP_BINARY, payload)
    await raw.aclose()


async def test_rsv1_refused_when_no_extension_was_negotiated(start_echo) -> None:
    for kwargs, headers in (({"permessage_deflate": True}, []), ({}, OFFER)):
        port = await start_echo(**kwargs)
        raw = await RawClient.connect(port, extra_headers=headers)
        assert b"sec-websocket-extensions" not in raw.response_head.lower()
        raw.send(OP_BINARY, deflate_message(b"x"), rsv=4)
        assert await raw.read_close() == 1002
        assert await raw.at_eof()


async def test_echo_command_negotiates_compression() -> None:
    """`wsgw echo` accepts permessage-deflate (the benchmark's compressed scenarios need it)."""
    proc, port = await start_echo_process("--listen", "127.0.0.1:0", "--prefix", "> ")
    try:
        rng = random.Random(5)
        async with deflate_connect(port) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == DEFLATE_ANSWER
            for size in (0, 200, 16384):
                text = varied_text(rng, size)
                await ws.send(text)
                assert await recv(ws) == "> " + text
                await ws.send(text.encode())
                assert await recv(ws) == text.encode()
    finally:
        code, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        (["permessage-deflate"], DEFLATE_ANSWER),
        (["permessage-deflate; client_max_window_bits"], DEFLATE_ANSWER),
        (["x-webkit-deflate-frame, permessage-deflate"], DEFLATE_ANSWER),
        (["foo", "PerMessage-Deflate; Client_No_Context_Takeover"], DEFLATE_ANSWER),
        (["permessage-deflate; client_max_window_bits=9"], DEFLATE_ANSWER),
        (
            ["permessage-deflate; server_max_window_bits=12; client_max_window_bits"],
            DEFLATE_ANSWER + "; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            ['permessage-deflate; server_max_window_bits="11"; client_max_window_bits=10'],
            DEFLATE_ANSWER + "; server_max_window_bits=11; client_max_window_bits=10",
        ),
        (
            ["permessage-deflate; server_max_window_bits=15; client_max_window_bits"],
            DEFLATE_ANSWER + "; server_max_window_bits=15; client_max_window_bits=15",
        ),
        # the client's window could exceed the one it inflates our echo with: next offer
        (["permessage-deflate; server_max_window_bits=10, permessage-deflate"], DEFLATE_ANSWER),
        (["permessage-deflate; server_max_window_bits=10"], None),
        (["permessage-deflate; server_max_window_bits=8; client_max_window_bits"], None),
        (["permessage-deflate; server_max_window_bits=9; client_max_window_bits=8"], None),
        # malformed or unknown: declined (RFC 7692 §5.1)
        (["permessage-deflate; server_max_window_bits"], None),
        (["permessage-deflate; server_max_window_bits=16"], None),
        (["permessage-deflate; client_max_window_bits=010"], None),
        (["permessage-deflate; client_max_window_bits=7"], None),
        (["permessage-deflate; server_no_context_takeover=1"], None),
        (["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], None),
        (["permessage-deflate; mystery"], None),
        (["deflate-frame"], None),
        ([], None),
    ],
)
def test_negotiate_deflate(offers: list[str], answer: str | None) -> None:
    got = negotiate_deflate(offers)
    assert (got.header if got is not None else None) == answer


def test_inflate_and_deflate_message_round_trip() -> None:
    rng = random.Random(6)
    data = varied_text(rng, 5000).encode()
    wire = deflate_message(data, 10)
    assert not wire.endswith(b"\x00\x00\xff\xff")  # RFC 7692 §7.2.1: removed
    assert inflate_message(wire, len(data)) == data
    inflater = zlib.decompressobj(-10)  # also inflates within the window it was made for
    assert inflater.decompress(wire + b"\x00\x00\xff\xff") == data
    assert inflate_message(deflate_message(b""), 0) == b""
