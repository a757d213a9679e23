"""Shared helpers for tests/core: the two implementations and frame-stream tools."""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from websockets.frames import Frame
from websockets.streams import StreamReader

from wsgw._core import bucket_py, frames_py, gate_py, legs_py, mask_py


@dataclass(frozen=True)
class Impl:
    name: str
    frames: ModuleType
    mask: ModuleType
    bucket: ModuleType
    gate: ModuleType
    legs: ModuleType

    def __repr__(self) -> str:
        return self.name


PURE = Impl("python", frames_py, mask_py, bucket_py, gate_py, legs_py)

COMPILED: Impl | None
COMPILED_IMPORT_ERROR: str = ""
try:
    COMPILED = Impl(
        "cython",
        importlib.import_module("wsgw._core.frames"),
        importlib.import_module("wsgw._core.mask"),
        importlib.import_module("wsgw._core.bucket"),
        importlib.import_module("wsgw._core.gate"),
        importlib.import_module("wsgw._core.legs"),
    )
except ImportError as exc:
    COMPILED = None
    COMPILED_IMPORT_ERROR = str(exc)


def header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    encoding: int | None = None,
) -> bytes:
    """A frame header built by hand. ``encoding`` forces 7, 16 or 64-bit length."""
    if encoding is None:
        encoding = 7 if length < 126 else 16 if length < 65536 else 64
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if key is not None else 0
    if encoding == 7:
        head = bytes([b0, mbit | length])
    elif encoding == 16:
        head = bytes([b0, mbit | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + length.to_bytes(8, "big")
    return head + (key or b"")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    encoding: int | None = None,
) -> bytes:
    """A whole frame built by hand; masked with ``key`` when given."""
    body = mask_py.apply_mask(payload, key) if key is not None else payload
    return header(opcode, len(payload), fin=fin, rsv=rsv, key=key, encoding=encoding) + body


def client_frame(opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
    """A client frame with a fixed, recognisable key."""
    return frame(opcode, payload, key=b"\x11\x22\x33\x44", **kw)


def deflated(message: bytes, compressor: Any = None) -> bytes:
    """``message`` as a permessage-deflate payload (RFC 7692 §7.2.1): raw DEFLATE, sync
    flush, the trailing 00 00 ff ff removed. A fresh compressor (no context) by default."""
    c = compressor or zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def decode_stream(out: bytes) -> list[tuple[bytes, bytes | None, bytes]]:
    """Split relay output into (header without key, key, unmasked payload) per frame.

    The last frame may be cut short (its payload was still streaming).
    """
    frames: list[tuple[bytes, bytes | None, bytes]] = []
    pos = 0
    while pos < len(out):
        h = frames_py.parse_header(out, pos)
        assert h is not None, f"truncated header at {pos} in output"
        hl = h.header_length
        head = out[pos : pos + hl - (4 if h.masked else 0)]
        payload = out[pos + hl : pos + hl + h.payload_length]
        if h.masked:
            payload = mask_py.apply_mask(payload, h.mask_key)
        frames.append((head, h.mask_key, payload))
        pos += hl + h.payload_length
    return frames


def unmasked(out: bytes) -> list[tuple[bytes, bytes]]:
    """(header without key, unmasked payload) per frame: what must not depend on keys."""
    return [(head, payload) for head, _key, payload in decode_stream(out)]


def feed(relay: Any, chunks: list[bytes]) -> tuple[list[int], bytes, list[int]]:
    """Feed chunks; returns (non-NEED_DATA results, all output, output size per call)."""
    events: list[int] = []
    out = bytearray()
    sizes: list[int] = []
    for chunk in chunks:
        result = relay.process(chunk)
        if result:
            events.append(result)
        piece = relay.take_output()
        sizes.append(len(piece) if piece else 0)
        if piece:
            out += piece
    return events, bytes(out), sizes


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """data cut at the given offsets (sorted, deduplicated, clipped)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def counters(relay: Any) -> tuple[Any, ...]:
    return (
        relay.data_frames,
        relay.data_bytes,
        relay.control_frames,
        relay.closed,
        relay.close_code,
        relay.close_reason,
        relay.error_code,
        relay.error_reason,
        relay.compressed_messages,
        relay.compressed_bytes,
    )


def ws_parse(data: bytes, *, mask: bool) -> Frame:
    """Parse one frame with websockets' own parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=mask, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("websockets wanted more data")
