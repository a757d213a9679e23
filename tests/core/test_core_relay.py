"""FrameRelay: re-masking, pass-through, streaming, protocol errors, close, counters."""

from __future__ import annotations

import random

import pytest

from .core_support import (
    Impl,
    client_frame,
    counters,
    decode_stream,
    deflated,
    feed,
    frame,
    header,
    split,
    unmasked,
    ws_parse,
)

KEY = b"\x11\x22\x33\x44"
SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 125, 126, 127, 65535, 65536, 1 << 20]


def payload_of(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


# --- re-masking (client -> backend) and pass-through (backend -> client) ---------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("encoding", [None, 64])
def test_client_frame_is_remasked_with_a_fresh_key(impl: Impl, n: int, encoding: int) -> None:
    payload = payload_of(n)
    wire = frame(2, payload, key=KEY, encoding=encoding)
    relay = impl.frames.FrameRelay(from_client=True)
    assert relay.process(wire) == impl.frames.NEED_DATA
    out = relay.take_output()
    assert len(out) == len(wire)
    hl = len(wire) - n
    assert out[: hl - 4] == wire[: hl - 4]  # header identical but for the key
    new_key = out[hl - 4 : hl]
    assert new_key != KEY
    assert impl.mask.apply_mask(out[hl:], new_key) == payload
    assert relay.take_output() is None


@pytest.mark.parametrize("n", SIZES)
def test_server_frame_passes_verbatim(impl: Impl, n: int) -> None:
    wire = frame(1, payload_of(n))
    relay = impl.frames.FrameRelay(from_client=False)
    assert relay.process(wire) == impl.frames.NEED_DATA
    out = relay.take_output()
    assert out == wire
    assert out is wire  # zero copy: the whole input passed through


def test_every_frame_gets_its_own_key(impl: Impl) -> None:
    wire = b"".join(client_frame(2, b"abcdefgh") for _ in range(200))
    relay = impl.frames.FrameRelay(from_client=True)
    relay.process(wire)
    decoded = decode_stream(relay.take_output())
    assert len(decoded) == 200
    keys = {key for _head, key, _payload in decoded}
    assert KEY not in keys
    assert len(keys) > 190  # 4 random bytes each: collisions are rare
    assert all(payload == b"abcdefgh" for _h, _k, payload in decoded)


def test_keys_are_drawn_across_pool_refills(impl: Impl) -> None:
    """More frames than one 4 KiB pool holds keys for: still valid, still fresh."""
    wire = client_frame(2, b"xyz") * 3000
    relay = impl.frames.FrameRelay(from_client=True)
    relay.process(wire)
    decoded = decode_stream(relay.take_output())
    assert [p for _h, _k, p in decoded] == [b"xyz"] * 3000
    assert len({k for _h, k, _p in decoded}) > 2900


def mixed_stream(client: bool) -> bytes:
    key = KEY if client else None
    parts = [
        frame(1, "héllo".encode(), key=key),
        frame(2, payload_of(300), key=key, fin=False),
        frame(9, b"ping!", key=key),
        frame(0, payload_of(70000), key=key, fin=False),
        frame(10, b"", key=key),
        frame(0, payload_of(5), key=key),
        frame(2, payload_of(126), key=key, encoding=64),
        frame(9, payload_of(125), key=key),
        frame(8, b"\x03\xe8done", key=key),
    ]
    return b"".join(parts)


@pytest.mark.parametrize("client", [True, False])
def test_chunking_does_not_change_events_or_payloads(impl: Impl, client: bool) -> None:
    wire = mixed_stream(client)
    whole = impl.frames.FrameRelay(from_client=client)
    events, out, _ = feed(whole, [wire])
    assert events == [impl.frames.CLOSE]
    expected = unmasked(out)
    assert [p for _h, p in expected][-1] == b"\x03\xe8done"
    if not client:
        assert out == wire
    rng = random.Random(1234)
    chunkings = [
        [wire[i : i + 1] for i in range(min(len(wire), 2000))] + [wire[2000:]],
        split(wire, [rng.randrange(len(wire)) for _ in range(300)]),
        split(wire, list(range(0, len(wire), 13))),
    ]
    for chunks in chunkings:
        relay = impl.frames.FrameRelay(from_client=client)
        got_events, got_out, _ = feed(relay, chunks)
        assert got_events == events
        assert unmasked(got_out) == expected
        assert counters(relay) == counters(whole)
        if not client:
            assert got_out == wire


def test_byte_by_byte_small_frames(impl: Impl) -> None:
    wire = b"".join(
        client_frame(op, payload_of(n)) for op, n in [(1, 0), (2, 9), (9, 3), (2, 130), (10, 0)]
    )
    relay = impl.frames.FrameRelay(from_client=True)
    events, out, _ = feed(relay, [bytes([b]) for b in wire])
    assert events == []
    assert unmasked(out) == unmasked(wire)
    assert len(unmasked(out)) == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_input_types(impl: Impl, kind: type) -> None:
    for client in (True, False):
        wire = mixed_stream(client)
        relay = impl.frames.FrameRelay(from_client=client)
        assert relay.process(kind(wire)) == impl.frames.CLOSE
        out = relay.take_output()
        assert type(out) is bytes
        assert unmasked(out) == unmasked(wire)


def test_websockets_accepts_the_remasked_stream(impl: Impl) -> None:
    wire = client_frame(1, b"hello") + client_frame(2, payload_of(70000))
    relay = impl.frames.FrameRelay(from_client=True)
    relay.process(wire)
    out = relay.take_output()
    first = ws_parse(out, mask=True)
    assert bytes(first.data) == b"hello"
    second = ws_parse(out[11:], mask=True)
    assert bytes(second.data) == payload_of(70000)


# --- streaming and bounded retention -------------------------------------------------


@pytest.mark.parametrize("client", [True, False])
def test_large_frame_streams_chunk_by_chunk(impl: Impl, client: bool) -> None:
    payload = payload_of(1 << 20)
    wire = frame(2, payload, key=KEY if client else None)
    relay = impl.frames.FrameRelay(from_client=client)
    chunks = split(wire, list(range(4096, len(wire), 4096)))
    events, out, sizes = feed(relay, chunks)
    assert events == []
    # Every call forwards everything it got: nothing of the payload is held back.
    assert sizes == [len(c) for c in chunks]
    assert unmasked(out) == [(wire[:2] + wire[2:10], payload)]


def test_header_is_retained_until_complete(impl: Impl) -> None:
    wire = header(2, 1 << 40, key=KEY)  # 14 bytes, longest possible header
    relay = impl.frames.FrameRelay(from_client=True)
    for b in wire[:-1]:
        assert relay.process(bytes([b])) == impl.frames.NEED_DATA
        assert relay.take_output() is None
    relay.process(wire[-1:] + b"\x00" * 10)
    out = relay.take_output()
    assert len(out) == 24 and out[:10] == wire[:10] and out[10:14] != KEY
    assert relay.data_bytes == 1 << 40


@pytest.mark.parametrize("client", [True, False])
def test_control_frame_is_held_until_complete(impl: Impl, client: bool) -> None:
    key = KEY if client else None
    ping = frame(9, payload_of(125), key=key)
    relay = impl.frames.FrameRelay(from_client=client)
    for b in ping[:-1]:
        relay.process(bytes([b]))
        assert relay.take_output() is None
    relay.process(ping[-1:])
    out = relay.take_output()
    assert unmasked(out) == unmasked(ping)
    assert relay.control_frames == 1


def test_huge_declared_length_streams_without_buffering(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    head = header(2, (1 << 63) - 1)
    chunk = bytes(65536)
    assert relay.process(head) == impl.frames.NEED_DATA
    assert relay.take_output() == head
    for _ in range(20):
        assert relay.process(chunk) == impl.frames.NEED_DATA
        assert relay.take_output() is chunk


# --- zero copy and output accumulation ----------------------------------------------


def test_fast_path_only_when_the_whole_input_passes(impl: Impl) -> None:
    f = impl.frames
    wire = frame(2, b"abc") + frame(1, b"de")
    relay = f.FrameRelay(from_client=False)
    relay.process(wire)
    assert relay.take_output() is wire
    # A trailing partial header is retained: not the same object.
    data = wire + b"\x82"
    relay.process(data)
    out = relay.take_output()
    assert out == wire and out is not data
    rest = b"\x03xyz"
    relay.process(rest)
    assert relay.take_output() == b"\x82\x03xyz"
    # bytearray input: never handed back (it could change under the caller).
    ba = bytearray(wire)
    relay.process(ba)
    out = relay.take_output()
    assert out == wire and type(out) is bytes
    # Two calls without take_output: one object with both.
    relay.process(wire)
    relay.process(wire)
    assert relay.take_output() == wire + wire
    assert relay.take_output() is None


def test_client_output_accumulates_until_taken(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=True)
    first, second = client_frame(1, b"one"), client_frame(1, b"two")
    relay.process(first)
    relay.process(second[:3])
    relay.process(second[3:])
    out = relay.take_output()
    assert [p for _h, p in unmasked(out)] == [b"one", b"two"]
    assert relay.take_output() is None


# --- close frames ---------------------------------------------------------------------


@pytest.mark.parametrize("client", [True, False])
@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"", 1005, b""),
        (b"\x03\xe8", 1000, b""),
        (b"\x0f\xa0" + b"r" * 123, 4000, b"r" * 123),
        (b"\x03\xe9\xff\xfe", 1001, b"\xff\xfe"),  # not validated: the far peer judges
        (b"\x00\x00", 0, b""),
    ],
)
def test_close_payload(impl: Impl, client: bool, payload: bytes, code: int, reason: bytes) -> None:
    f = impl.frames
    key = KEY if client else None
    before = frame(1, b"hi", key=key)
    close = frame(8, payload, key=key)
    relay = f.FrameRelay(from_client=client)
    assert relay.process(before + close + frame(1, b"after", key=key)) == f.CLOSE
    assert (relay.close_code, relay.close_reason, relay.closed) == (code, reason, True)
    assert (relay.error_code, relay.error_reason) == (0, "")
    out = relay.take_output()
    assert unmasked(out) == unmasked(before + close)  # the close goes out, nothing after it
    assert relay.control_frames == 1 and relay.data_frames == 1
    assert relay.process(frame(1, b"more", key=key)) == f.NEED_DATA
    assert relay.take_output() is None


def test_close_payload_of_one_byte_is_an_error(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    assert relay.process(frame(8, b"\x03")) == impl.frames.ERROR
    assert (relay.error_code, relay.close_code, relay.closed) == (1002, 0, True)
    assert relay.take_output() is None


def test_close_split_across_calls(impl: Impl) -> None:
    f = impl.frames
    close = client_frame(8, b"\x03\xe8bye")
    relay = f.FrameRelay(from_client=True)
    assert relay.process(close[:7]) == f.NEED_DATA
    assert relay.take_output() is None
    assert relay.process(close[7:] + b"trailing garbage") == f.CLOSE
    assert unmasked(relay.take_output()) == unmasked(close)
    assert (relay.close_code, relay.close_reason) == (1000, b"bye")


# --- protocol errors ------------------------------------------------------------------

GOOD = b"\x11\x22\x33\x44"
ERROR_CASES = [
    # (name, from_client, frames, code, kwargs)
    ("client frame not masked", True, [frame(2, b"x")], 1002, {}),
    ("server frame masked", False, [frame(2, b"x", key=GOOD)], 1002, {}),
    ("rsv2", True, [client_frame(2, b"x", rsv=0b010)], 1002, {}),
    ("rsv3", False, [frame(2, b"x", rsv=0b001)], 1002, {}),
    ("rsv1 without extension", True, [client_frame(2, b"x", rsv=0b100)], 1002, {}),
    (
        "rsv1 on continuation",
        True,
        [client_frame(1, b"a", fin=False, rsv=0b100), client_frame(0, b"b", rsv=0b100)],
        1002,
        {"allow_rsv1": True},
    ),
    ("rsv1 on control", False, [frame(9, b"", rsv=0b100)], 1002, {"allow_rsv1": True}),
    *[
        (f"reserved opcode {op}", False, [frame(op, b"")], 1002, {})
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    ],
    ("control payload 126", True, [client_frame(9, bytes(126))], 1002, {}),
    ("control payload 126, short header", False, [header(10, 126, encoding=16)], 1002, {}),
    ("fragmented ping", False, [frame(9, b"", fin=False)], 1002, {}),
    ("fragmented close", True, [client_frame(8, b"", fin=False)], 1002, {}),
    ("continuation without message", False, [frame(0, b"x")], 1002, {}),
    ("continuation after final frame", False, [frame(1, b"a"), frame(0, b"b")], 1002, {}),
    (
        "text inside fragmented message",
        True,
        [client_frame(1, b"a", fin=False), client_frame(1, b"b")],
        1002,
        {},
    ),
    (
        "binary inside fragmented message",
        False,
        [frame(2, b"a", fin=False), frame(9, b""), frame(2, b"b")],
        1002,
        {},
    ),
    ("64-bit length with MSB set", False, [b"\x82\x7f\x80" + bytes(7)], 1002, {}),
    ("close payload 1 byte", True, [client_frame(8, b"\x03")], 1002, {}),
    ("message too big, one frame", False, [frame(2, bytes(11))], 1009, {"max_message_bytes": 10}),
    (
        "message too big, fragments",
        True,
        [client_frame(2, bytes(6), fin=False), client_frame(9, b""), client_frame(0, bytes(5))],
        1009,
        {"max_message_bytes": 10},
    ),
]


@pytest.mark.parametrize(
    ("name", "client", "frames", "code", "kwargs"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
@pytest.mark.parametrize("bytewise", [False, True])
def test_protocol_errors(
    impl: Impl,
    name: str,
    client: bool,
    frames: list[bytes],
    code: int,
    kwargs: dict,
    bytewise: bool,
) -> None:
    f = impl.frames
    key = KEY if client else None
    prior = frame(2, b"fine", key=key)
    wire = prior + b"".join(frames) + frame(1, b"never", key=key)
    relay = f.FrameRelay(from_client=client, **kwargs)
    chunks = [bytes([b]) for b in wire] if bytewise else [wire]
    events, out, _ = feed(relay, chunks)
    assert events == [f.ERROR], name
    assert relay.error_code == code
    assert relay.error_reason
    assert relay.closed
    # The output holds what came before the offending frame, none of it.
    assert unmasked(out) == unmasked(prior + b"".join(frames[:-1]))
    assert relay.process(frame(1, b"more", key=key)) == f.NEED_DATA
    assert relay.take_output() is None


def test_error_reasons_name_the_problem(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=True)
    relay.process(frame(2, b"x"))
    assert relay.error_reason == "frame not masked"
    relay = impl.frames.FrameRelay(from_client=False)
    relay.process(frame(2, b"x", key=KEY))
    assert relay.error_reason == "frame masked"
    relay = impl.frames.FrameRelay(from_client=False, max_message_bytes=1)
    relay.process(frame(2, b"xx"))
    assert relay.error_reason == "message too big"


def test_rsv1_allowed_on_first_frame_of_a_message(impl: Impl) -> None:
    f = impl.frames
    first, rest = deflated(b"ab")[:2], deflated(b"ab")[2:]
    wire = (
        client_frame(1, first, fin=False, rsv=0b100)
        + client_frame(0, rest)
        + client_frame(2, deflated(b"c"), rsv=0b100)
    )
    relay = f.FrameRelay(from_client=True, allow_rsv1=True)
    events, out, _ = feed(relay, [wire])
    assert events == []
    assert [h[0] for h, _p in unmasked(out)] == [0x41, 0x80, 0xC2]


def test_control_frames_between_fragments(impl: Impl) -> None:
    f = impl.frames
    wire = (
        frame(1, b"frag1", fin=False)
        + frame(9, b"p")
        + frame(0, b"frag2", fin=False)
        + frame(10, b"q")
        + frame(9, b"")
        + frame(0, b"end")
        + frame(2, b"next")
    )
    relay = f.FrameRelay(from_client=False)
    assert feed(relay, [wire])[:2] == ([], wire)
    assert (relay.data_frames, relay.data_bytes, relay.control_frames) == (4, 17, 3)


def test_max_message_bytes_boundaries(impl: Impl) -> None:
    f = impl.frames
    wire = (
        frame(2, bytes(4), fin=False)
        + frame(0, bytes(6))  # exactly 10: fine
        + frame(1, bytes(10))  # a new message starts the count again
        + frame(2, bytes(10), fin=False)
        + frame(0, b"", fin=False)
    )  # empty: fine
    relay = f.FrameRelay(from_client=False, max_message_bytes=10)
    assert feed(relay, [wire])[:2] == ([], wire)
    assert relay.process(frame(0, b"!")) == f.ERROR
    assert relay.error_code == 1009
    assert relay.take_output() is None
    assert (
        f.FrameRelay(from_client=False, max_message_bytes=0).process(header(2, 1 << 62))
        == f.NEED_DATA
    )
    with pytest.raises((ValueError, OverflowError)):
        f.FrameRelay(from_client=False, max_message_bytes=-1)


def test_non_minimal_lengths_are_accepted(impl: Impl) -> None:
    wire = frame(2, b"abc", encoding=16) + frame(9, b"p", encoding=64) + frame(1, b"", encoding=64)
    relay = impl.frames.FrameRelay(from_client=False)
    assert feed(relay, [wire])[:2] == ([], wire)
    assert (relay.data_frames, relay.control_frames) == (2, 1)


def test_counters(impl: Impl) -> None:
    f = impl.frames
    relay = f.FrameRelay(from_client=True)
    assert counters(relay) == (0, 0, 0, False, 0, b"", 0, "", 0, 0)
    feed(relay, [mixed_stream(True)])
    assert relay.data_frames == 5
    assert relay.data_bytes == len("héllo".encode()) + 300 + 70000 + 5 + 126
    assert relay.control_frames == 4
    assert (relay.close_code, relay.close_reason, relay.closed) == (1000, b"done", True)
    assert relay.from_client is True


def test_attributes_are_read_only(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    for name in (
        "close_code",
        "close_reason",
        "error_code",
        "error_reason",
        "data_frames",
        "data_bytes",
        "control_frames",
        "closed",
    ):
        with pytest.raises(AttributeError):
            setattr(relay, name, 1)
