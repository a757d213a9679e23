"""Wire bytes of the frame codec helpers: parse_header, build_frame, build_close_payload."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from .core_support import Impl, header, ws_parse

SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 125, 126, 127, 65535, 65536, 1 << 20]


def expected_header(opcode: int, n: int, mask_bit: int = 0) -> bytes:
    b0 = 0x80 | opcode
    if n < 126:
        return bytes([b0, mask_bit | n])
    if n < 65536:
        return bytes([b0, mask_bit | 126, n >> 8, n & 0xFF])
    return bytes([b0, mask_bit | 127]) + n.to_bytes(8, "big")


def test_rfc6455_examples(impl: Impl) -> None:
    """The worked examples of RFC 6455 §5.7, byte for byte."""
    f = impl.frames
    assert f.build_frame(f.OP_TEXT, b"Hello") == b"\x81\x05Hello"
    masked = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert impl.mask.apply_mask(masked[6:], masked[2:6]) == b"Hello"
    h = f.parse_header(masked)
    assert (h.fin, h.opcode, h.masked, h.mask_key, h.payload_length, h.header_length) == (
        True,
        1,
        True,
        b"\x37\xfa\x21\x3d",
        5,
        6,
    )
    assert f.build_frame(f.OP_TEXT, b"Hel", fin=False) == b"\x01\x03Hel"
    assert f.build_frame(f.OP_CONT, b"lo") == b"\x80\x02lo"
    assert f.build_frame(f.OP_PING, b"Hello") == b"\x89\x05Hello"
    assert f.build_frame(f.OP_BINARY, bytes(256))[:4] == b"\x82\x7e\x01\x00"
    assert f.build_frame(f.OP_BINARY, bytes(65536))[:10] == b"\x82\x7f" + bytes(5) + b"\x01\x00\x00"


@pytest.mark.parametrize("n", SIZES)
def test_build_frame_unmasked_wire_bytes(impl: Impl, n: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    wire = impl.frames.build_frame(impl.frames.OP_BINARY, payload)
    assert wire == expected_header(2, n) + payload
    assert wire == Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("n", SIZES)
def test_build_frame_masked_wire_bytes(impl: Impl, n: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    wire = impl.frames.build_frame(impl.frames.OP_TEXT, payload, mask=True)
    head = expected_header(1, n, 0x80)
    assert wire[: len(head)] == head
    key = wire[len(head) : len(head) + 4]
    assert len(wire) == len(head) + 4 + n
    assert impl.mask.apply_mask(wire[len(head) + 4 :], key) == payload
    parsed = ws_parse(wire, mask=True)  # websockets' server side accepts it
    assert (parsed.opcode, parsed.fin, bytes(parsed.data)) == (Opcode.TEXT, True, payload)


def test_build_frame_flags_and_keys(impl: Impl) -> None:
    f = impl.frames
    assert f.build_frame(f.OP_BINARY, b"z", fin=False, rsv1=True) == b"\x42\x01z"
    keys = {f.build_frame(f.OP_BINARY, b"", mask=True)[2:6] for _ in range(50)}
    assert len(keys) > 40  # a fresh key per frame
    with pytest.raises(ValueError):
        f.build_frame(16, b"")
    # No policy check: tests build bad frames with it.
    assert f.build_frame(f.OP_PING, bytes(200))[:4] == b"\x89\x7e\x00\xc8"


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_parse_header_every_prefix(impl: Impl, n: int, masked: bool) -> None:
    key = b"\x01\x02\x03\x04" if masked else None
    head = header(2, n, key=key)
    for cut in range(len(head)):
        assert impl.frames.parse_header(head[:cut]) is None
    h = impl.frames.parse_header(head + b"xy")
    assert h is not None
    assert (h.fin, h.rsv1, h.rsv2, h.rsv3, h.opcode) == (True, False, False, False, 2)
    assert (h.masked, h.mask_key, h.payload_length, h.header_length) == (masked, key, n, len(head))


def test_parse_header_fields_offsets_and_encodings(impl: Impl) -> None:
    pf = impl.frames.parse_header
    h = pf(bytearray(b"junk" + header(0xB, 5, fin=False, rsv=0b111)), 4)
    assert (h.fin, h.rsv1, h.rsv2, h.rsv3, h.opcode, h.payload_length) == (
        False,
        True,
        True,
        True,
        11,
        5,
    )
    assert pf(memoryview(b"..\x81\x00"), 2).header_length == 2
    assert pf(b"\x81\x00", 2) is None
    # Non-minimal encodings and a length with bit 63 set are parsed as sent.
    assert pf(header(1, 5, encoding=16)).payload_length == 5
    assert pf(header(1, 5, encoding=64)).header_length == 10
    assert pf(b"\x82\xff" + b"\x80" + bytes(7) + b"abcd").payload_length == 1 << 63
    assert pf(b"\x82\x7f" + b"\xff" * 8).payload_length == (1 << 64) - 1
    for bad in (-1, 3):
        with pytest.raises(ValueError):
            pf(b"\x81\x00", bad)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1000, b"", b"\x03\xe8"),
        (1001, "bye", b"\x03\xe9bye"),
        (4000, b"raw", b"\x0f\xa0raw"),
        (1005, "ignored", b""),
        (1006, b"", b""),
        (1015, "tls", b""),
        (1000, "a" * 200, b"\x03\xe8" + b"a" * 123),
        (1000, b"\xff" * 200, b"\x03\xe8" + b"\xff" * 123),
        # 122 ASCII + "é" (2 bytes) = 124: the "é" must go whole, not half.
        (1000, "a" * 122 + "é", b"\x03\xe8" + b"a" * 122),
        # 3-byte "€" ×41 = 123 bytes exactly: kept; ×42 cut back to 41.
        (1000, "€" * 41, b"\x03\xe8" + "€".encode() * 41),
        (1000, "€" * 42, b"\x03\xe8" + "€".encode() * 41),
        (1000, "😀" * 31, b"\x03\xe8" + "😀".encode() * 30),
    ],
)
def test_build_close_payload(impl: Impl, code: int, reason: str | bytes, expected: bytes) -> None:
    payload = impl.frames.build_close_payload(code, reason)
    assert payload == expected
    assert len(payload) <= 125
    if isinstance(reason, str):
        payload[2:].decode("utf-8")  # always valid UTF-8


def test_build_close_payload_rejects_out_of_range_codes(impl: Impl) -> None:
    for bad in (-1, 65536):
        with pytest.raises((ValueError, OverflowError)):
            impl.frames.build_close_payload(bad)


def test_constants(impl: Impl) -> None:
    f = impl.frames
    assert (f.OP_CONT, f.OP_TEXT, f.OP_BINARY, f.OP_CLOSE, f.OP_PING, f.OP_PONG) == (
        0,
        1,
        2,
        8,
        9,
        10,
    )
    assert (f.NEED_DATA, f.CLOSE, f.ERROR) == (0, 1, 2)
