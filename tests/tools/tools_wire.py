"""A raw WebSocket client for tests that must put exact bytes on the wire (bad UTF-8,
reserved bits, invalid close codes) or see exact frames come back (one frame per message).
Test-only and deliberately tiny: no library would send what these tests send."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct

TIMEOUT = 5.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """A client frame (masked unless told otherwise); `rsv` is the 3 RSV bits, 0..7."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response_head: bytes
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = response_head

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", extra_headers: list[tuple[str, str]] = ()
    ) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in extra_headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer, head)

    def send(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        self.writer.write(encode_frame(opcode, payload, **kwargs))  # type: ignore[arg-type]

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """(fin, opcode, payload) of the next server frame; also checks it is unmasked."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        assert b0 & 0x70 == 0, "no RSV bit without an extension"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def read_close(self) -> int:
        """Skip to the server's close frame; its code (1005 when it has none)."""
        while True:
            _, opcode, payload = await self.read_frame()
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    async def at_eof(self) -> bool:
        """Did the server close TCP (within the timeout)?"""
        try:
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except (TimeoutError, ConnectionError):
            return False
        return rest == b""

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)
