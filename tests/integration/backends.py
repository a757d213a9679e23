"""Purpose-built peers for the integration tests: a recording websockets backend, raw TCP
backends that misbehave on cue, a raw client, and a small independent frame codec.

The frame codec here is deliberately not the gateway's own (wsgw._core): a test that
encodes with the code under test cannot catch that code's mistakes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

TIMEOUT = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

FLOOD_LIMIT = 64 * 1024 * 1024
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def free_port() -> int:
    """A port nobody listens on (bound, then released: nothing accepts there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


# --------------------------------------------------------------------------- frames


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    mask: bool = True,
    fin: bool = True,
    rsv1: bool = False,
) -> bytes:
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4) if b2 & 0x80 else b""
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return Frame(bool(b1 & 0x80), bool(b1 & 0x40), b1 & 0x0F, bool(key), payload)


async def read_until_close(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> Frame:
    """Skip data frames until the close frame; bounded."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await read_frame(reader)
            if frame.opcode == OP_CLOSE:
                return frame


# ----------------------------------------------------------------------------- HTTP


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The start line and the header fields (names lower-cased) of one HTTP message."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    start, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return start, headers


def upgrade_request(path: str, headers: dict[str, str] | None = None, key: str = "") -> bytes:
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or new_key(),
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def switching_protocols(key: str, extra: str = "") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ws_accept(key)}\r\n{extra}\r\n"
    ).encode()


@dataclass
class RawClient:
    """A hand-driven WebSocket client on a plain asyncio stream."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]

    @classmethod
    async def connect(
        cls,
        address: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        early: bytes = b"",
        key: str = "",
    ) -> RawClient:
        """Send an upgrade request (and `early` bytes in the same write), read the head."""
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
        writer.write(upgrade_request(path, headers, key) + early)
        start, response_headers = await read_head(reader)
        return cls(reader, writer, int(start.split()[1]), response_headers)

    @classmethod
    async def connect_later(
        cls, address: str, path: str, headers: dict[str, str] | None = None
    ) -> RawClient:
        """Send an upgrade request without waiting for the answer (see `response`)."""
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
        writer.write(upgrade_request(path, headers))
        return cls(reader, writer, 0, {})

    async def response(self) -> tuple[int, dict[str, str]]:
        start, self.headers = await read_head(self.reader)
        self.status = int(start.split()[1])
        return self.status, self.headers

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> Frame:
        return await asyncio.wait_for(read_frame(self.reader), TIMEOUT)

    async def eof(self) -> bool:
        """True once the peer closed the TCP connection (bounded)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while await self.reader.read(65536):
                    pass
        except (ConnectionError, TimeoutError):
            return False
        return True

    def close(self) -> None:
        self.writer.close()


# ----------------------------------------------------------------- raw TCP backends

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A TCP server running `handler` per connection: the backend that misbehaves."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RawBackend:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            # A handler ends by itself, by the peer going away or by close(): all are fine.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.handler(reader, writer)
            self._tasks.discard(task)

        self.server = await asyncio.start_server(run, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handshake(self, reader: asyncio.StreamReader) -> str:
        """Read the gateway's upgrade request; returns its Sec-WebSocket-Key."""
        start, headers = await read_head(reader)
        self.requests.append((start, headers))
        return headers["sec-websocket-key"]

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()


# ------------------------------------------------------------ recording websockets server


@dataclass
class Seen:
    """What a RecordingBackend saw on one connection."""

    path: str
    headers: Headers
    subprotocol: str | None
    connection: ServerConnection
    messages: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    flooded: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_ended(self, timeout: float = TIMEOUT) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)


class RecordingBackend:
    """A websockets server that records each connection and echoes its messages.

    Text commands make it act: "!close CODE REASON" closes with that code ("!close" alone
    sends an empty close frame), "!abort" drops the TCP connection without a close frame,
    "!ping" sends a fragmented message "ping answered" whose second fragment goes out once
    a ping sent after the first one got its pong, "!flood SECONDS" sends 64 KiB binary
    messages for that long (or 64 MiB), counting the bytes sent in `Seen.flooded`.
    """

    def __init__(self) -> None:
        self.server: Server | None = None
        self.seen: asyncio.Queue[Seen] = asyncio.Queue()
        self.connections: list[ServerConnection] = []

    async def start(self, path: str = "", **serve_kwargs: object) -> RecordingBackend:
        self.path = path
        serve_kwargs.setdefault("compression", None)
        self.server = await serve(self._handle, "127.0.0.1", 0, **serve_kwargs)  # type: ignore[arg-type]
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}{self.path}"

    async def next(self, timeout: float = TIMEOUT) -> Seen:
        return await asyncio.wait_for(self.seen.get(), timeout)

    async def _handle(self, ws: ServerConnection) -> None:
        seen = Seen(ws.request.path, ws.request.headers, ws.subprotocol, ws)
        self.connections.append(ws)
        self.seen.put_nowait(seen)
        try:
            async for message in ws:
                seen.messages.append(message)
                if isinstance(message, str) and message.startswith("!close"):
                    _, _, rest = message.partition(" ")
                    if rest:
                        code, _, reason = rest.partition(" ")
                        await ws.close(int(code), reason)
                    else:
                        await ws.close(None)  # type: ignore[arg-type]  # an empty close frame
                elif message == "!abort":
                    ws.transport.abort()
                elif message == "!ping":
                    await self._fragments_around_a_ping(ws)
                elif isinstance(message, str) and message.startswith("!flood "):
                    await self._flood(ws, seen, float(message.split()[1]))
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            seen.close_code = ws.close_code
            seen.close_reason = ws.close_reason
            seen.ended.set()

    @staticmethod
    async def _fragments_around_a_ping(ws: ServerConnection) -> None:
        """A fragmented message with a ping (answered) between its fragments."""

        async def fragments() -> AsyncIterator[str]:
            yield "ping "
            pong = await ws.ping(b"backend ping")
            await asyncio.wait_for(pong, TIMEOUT)
            yield "answered"

        await ws.send(fragments())

    @staticmethod
    async def _flood(ws: ServerConnection, seen: Seen, seconds: float) -> None:
        chunk = os.urandom(64 * 1024)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while seen.flooded < FLOOD_LIMIT:
                    await ws.send(chunk)  # blocks while the write buffer is over its limit
                    seen.flooded += len(chunk)

    def close(self) -> None:
        for ws in self.connections:
            ws.transport.abort()
        if self.server is not None:
            self.server.close()


def gateway_buffered_bytes(gateway: object) -> int:
    """Bytes the gateway holds in its transports' write buffers, both legs, all connections."""
    total = 0
    for conn in list(gateway.connections):  # type: ignore[attr-defined]
        for transport in (conn.transport, conn.backend.transport if conn.backend else None):
            if transport is not None and not transport.is_closing():
                total += transport.get_write_buffer_size()
    return total
