"""FrameRelay with a Gate: drop whole messages, THROTTLED and resume, shared limits, counters.

The relay reads the real monotonic clock, so the limits here never refill by themselves:
either LOCAL with a clock an hour ahead (the relay's clock is "in the past" for them, and a
clock going backwards is ignored) or LEASED. Tokens come back only through grant().
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from .core_support import Impl, feed, frame, split, unmasked

KEY = b"\x11\x22\x33\x44"
SCOPE = 7


def future() -> int:
    return time.monotonic_ns() + 3600 * 10**9


def frozen_limit(impl: Impl, mpm: int = 0, bpm: int = 0, burst: int = 0) -> Any:
    """A LOCAL limit that will not refill during the test."""
    return impl.gate.Limit(mpm, bpm, burst, now_ns=future())


def leased_limit(
    impl: Impl, messages: int = 0, nbytes: int = 0, *, mpm: int = 1000, bpm: int = 0
) -> Any:
    limit = impl.gate.Limit(mpm, bpm, now_ns=0)
    limit.set_leased(True, 0)
    limit.grant(messages, nbytes)
    return limit


def relay_with(
    impl: Impl, client: bool, limit: Any, action: int, scope: int = SCOPE, **kw: Any
) -> Any:
    relay = impl.frames.FrameRelay(from_client=client, **kw)
    relay.set_gate(impl.gate.Gate([(limit, action, scope)]))
    return relay


def f(client: bool, opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
    return frame(opcode, payload, key=KEY if client else None, **kw)


def drop_stream(client: bool) -> tuple[bytes, bytes]:
    """(wire, what must come out) for a limit of 3 messages with ACTION_DROP."""
    kept = [
        f(client, 1, b"one"),  # message 1: admitted
        f(client, 2, b"two-a", fin=False),  # message 2: admitted (1 token)...
        f(client, 0, b"two-b"),  # ...its continuation is forced
    ]
    ping = f(client, 9, b"still here")
    pong = f(client, 10, b"")
    wire = b"".join(
        [
            *kept,
            f(client, 2, b"three-a", fin=False),  # message 3: no token left: dropped
            ping,  # control frames still go through
            f(client, 0, b"three-b", fin=False),
            pong,
            f(client, 0, b"three-c"),
            f(client, 1, b"four"),  # message 4: dropped too
        ]
    )
    return wire, b"".join([*kept, ping, pong])


def check_drop_counters(relay: Any) -> None:
    assert relay.dropped_messages == 2
    assert relay.dropped_frames == 4
    assert relay.drop_scope == SCOPE
    assert relay.data_frames == 3  # forwarded data frames only
    assert relay.data_bytes == len(b"onetwo-atwo-b")
    assert relay.control_frames == 2
    assert relay.retry_after_ns > 0


@pytest.mark.parametrize("client", [True, False])
def test_drop_drops_whole_messages(impl: Impl, client: bool) -> None:
    wire, expected = drop_stream(client)
    limit = frozen_limit(impl, mpm=3)
    relay = relay_with(impl, client, limit, impl.gate.ACTION_DROP)
    events, out, _ = feed(relay, [wire])
    assert events == []
    assert unmasked(out) == unmasked(expected)
    if not client:
        assert out == expected  # verbatim around the holes
    check_drop_counters(relay)
    # message 2's continuation was forced: 1 + 2 messages, no more.
    assert (limit.consumed_messages, limit.consumed_bytes) == (3, 13)
    assert limit.messages_available(0) == 0
    assert relay.closed is False


@pytest.mark.parametrize("client", [True, False])
@pytest.mark.parametrize("chunking", ["bytewise", "random", "per-frame"])
def test_drop_across_process_calls(impl: Impl, client: bool, chunking: str) -> None:
    wire, expected = drop_stream(client)
    if chunking == "bytewise":
        chunks = [wire[i : i + 1] for i in range(len(wire))]
    elif chunking == "random":
        rng = random.Random(99)
        chunks = split(wire, [rng.randrange(len(wire)) for _ in range(12)])
    else:  # one frame per call: the drop state must survive between calls
        sizes = [
            len(f(client, 1, b"one")),
            len(f(client, 2, b"two-a")),
            len(f(client, 0, b"two-b")),
            len(f(client, 2, b"three-a")),
            len(f(client, 9, b"still here")),
            len(f(client, 0, b"three-b")),
            len(f(client, 10)),
            len(f(client, 0, b"three-c")),
        ]
        cuts = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        chunks = split(wire, cuts)
        assert len(chunks) == 9
    relay = relay_with(impl, client, frozen_limit(impl, mpm=3), impl.gate.ACTION_DROP)
    events, out, _ = feed(relay, chunks)
    assert events == []
    assert unmasked(out) == unmasked(expected)
    if not client:
        assert out == expected
    check_drop_counters(relay)


def test_drop_of_a_large_frame_streams_nothing(impl: Impl) -> None:
    big = bytes(range(256)) * 1024
    wire = frame(2, big) + frame(1, b"after")
    limit = leased_limit(impl, messages=0)
    relay = relay_with(impl, False, limit, impl.gate.ACTION_DROP)
    chunks = split(wire, list(range(1000, len(wire), 4096)))
    head_chunk, rest = chunks[0], chunks[1:]
    assert relay.process(head_chunk) == impl.frames.NEED_DATA
    assert relay.take_output() is None
    limit.grant(1, 0)  # arrives mid-frame: the dropped message stays dropped
    events, out, _ = feed(relay, rest)
    assert (events, out) == ([], frame(1, b"after"))
    assert (relay.dropped_messages, relay.dropped_frames, relay.data_frames) == (1, 1, 1)


def test_drop_keeps_dropping_after_the_gate_is_removed(impl: Impl) -> None:
    relay = relay_with(impl, False, leased_limit(impl), impl.gate.ACTION_DROP)
    relay.process(frame(1, b"a", fin=False))
    relay.set_gate(None)
    assert relay.gate is None
    relay.process(frame(0, b"b", fin=False) + frame(9, b"p") + frame(0, b"c") + frame(1, b"d"))
    assert relay.take_output() == frame(9, b"p") + frame(1, b"d")
    assert (relay.dropped_frames, relay.dropped_messages, relay.data_frames) == (3, 1, 1)


def test_drop_by_bytes(impl: Impl) -> None:
    limit = frozen_limit(impl, bpm=10)
    relay = relay_with(impl, True, limit, impl.gate.ACTION_DROP, scope=3)
    wire = b"".join(f(True, 2, bytes(6)) for _ in range(3))
    events, out, _ = feed(relay, [wire])
    assert unmasked(out) == [(b"\x82\x86", bytes(6))]  # 10 -> 4 bytes: the next 6 wait
    assert (relay.dropped_messages, relay.drop_scope) == (2, 3)
    assert limit.bytes_available(0) == 4


@pytest.mark.parametrize("client", [True, False])
@pytest.mark.parametrize("action", [2, 3])  # ACTION_CLOSE, ACTION_SHAPE
def test_throttled_stops_before_the_frame_and_resumes(
    impl: Impl, client: bool, action: int
) -> None:
    fr = impl.frames
    m1, m2, m3 = f(client, 1, b"first"), f(client, 2, b"second"), f(client, 1, b"third")
    ping = f(client, 9, b"p")
    limit = leased_limit(impl, messages=1)
    relay = relay_with(impl, client, limit, action, scope=4)
    wire = m1 + ping + m2 + m3
    assert relay.process(wire) == fr.THROTTLED
    out = relay.take_output()
    assert unmasked(out) == unmasked(m1 + ping)
    assert (relay.throttle_action, relay.throttle_scope) == (action, 4)
    assert relay.retry_after_ns == 50_000_000  # LEASED: the lease cadence
    assert (relay.data_frames, relay.control_frames, relay.closed) == (1, 1, False)
    assert limit.starved is True
    # No tokens yet: the same answer, nothing consumed, nothing output.
    assert relay.process(b"") == fr.THROTTLED
    assert relay.take_output() is None
    assert limit.consumed_messages == 1
    limit.grant(2, 0)
    assert relay.process(b"") == fr.NEED_DATA
    rest = relay.take_output()
    assert unmasked(rest) == unmasked(m2 + m3)
    if not client:
        assert rest == m2 + m3
    assert (relay.data_frames, limit.consumed_messages) == (3, 3)
    assert relay.process(b"") == fr.NEED_DATA  # nothing retained any more
    assert relay.take_output() is None


@pytest.mark.parametrize("client", [True, False])
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_throttled_on_a_header_split_across_calls(impl: Impl, client: bool, cut: int) -> None:
    """The header began in an earlier call: it stays retained, nothing of it goes out."""
    fr = impl.frames
    m1, m2 = f(client, 1, b"first"), f(client, 2, b"x" * 200)  # m2: 4-byte length header
    limit = leased_limit(impl, messages=1)
    relay = relay_with(impl, client, limit, impl.gate.ACTION_SHAPE)
    assert relay.process(m1 + m2[:cut]) == fr.NEED_DATA
    assert unmasked(relay.take_output()) == unmasked(m1)
    assert relay.process(m2[cut:20]) == fr.THROTTLED
    assert relay.take_output() is None
    assert relay.process(m2[20:]) == fr.THROTTLED  # more data is kept behind it
    assert relay.take_output() is None
    limit.grant(1, 0)
    assert relay.process(b"") == fr.NEED_DATA
    out = relay.take_output()
    assert unmasked(out) == unmasked(m2)
    if not client:
        assert out == m2


def test_throttled_keeps_the_input_and_hands_it_back_whole(impl: Impl) -> None:
    fr = impl.frames
    wire = frame(2, b"abc") + frame(1, b"de")
    limit = leased_limit(impl)
    relay = relay_with(impl, False, limit, impl.gate.ACTION_SHAPE)
    assert relay.process(wire) == fr.THROTTLED
    assert relay.take_output() is None
    limit.grant(2, 0)
    assert relay.process(b"") == fr.NEED_DATA
    assert relay.take_output() is wire  # zero copy survives the wait


def test_throttled_with_bytearray_input(impl: Impl) -> None:
    fr = impl.frames
    wire = frame(2, b"abc") + frame(1, b"de")
    limit = leased_limit(impl, messages=1)
    relay = relay_with(impl, False, limit, impl.gate.ACTION_CLOSE)
    data = bytearray(wire)
    assert relay.process(data) == fr.THROTTLED
    data[:] = bytes(len(data))  # the caller reuses its buffer: the relay kept a copy
    assert relay.take_output() == frame(2, b"abc")
    limit.grant(1, 0)
    assert relay.process(memoryview(b"")) == fr.NEED_DATA
    assert relay.take_output() == frame(1, b"de")


def test_both_directions_share_one_gate(impl: Impl) -> None:
    g = impl.gate
    limit = frozen_limit(impl, mpm=3, bpm=1000)
    gate = g.Gate([(limit, g.ACTION_DROP, 0)])
    up = impl.frames.FrameRelay(from_client=True)
    down = impl.frames.FrameRelay(from_client=False)
    up.set_gate(gate)
    down.set_gate(gate)
    assert up.gate is gate and down.gate is gate
    feed(up, [f(True, 1, b"u1") + f(True, 2, b"u2!")])
    feed(down, [f(False, 1, b"d1xx") + f(False, 1, b"d2")])  # the second is one too many
    feed(up, [f(True, 1, b"u3")])
    assert (limit.consumed_messages, limit.consumed_bytes) == (3, 9)
    assert (up.data_frames, down.data_frames) == (2, 1)
    assert (up.dropped_messages, down.dropped_messages) == (1, 1)


def test_control_frames_never_count(impl: Impl) -> None:
    fr = impl.frames
    limit = leased_limit(impl, messages=0, mpm=1, bpm=1)
    relay = relay_with(impl, True, limit, impl.gate.ACTION_SHAPE)
    controls = f(True, 9, b"x" * 125) + f(True, 10, b"y" * 20) + f(True, 8, b"\x03\xe8bye")
    assert relay.process(controls) == fr.CLOSE
    assert unmasked(relay.take_output()) == unmasked(controls)
    assert (limit.consumed_messages, limit.consumed_bytes, limit.starved) == (0, 0, False)


def test_protocol_errors_come_before_the_gate(impl: Impl) -> None:
    fr = impl.frames
    relay = relay_with(impl, True, leased_limit(impl), impl.gate.ACTION_SHAPE)
    assert relay.process(frame(2, b"unmasked")) == fr.ERROR
    assert relay.error_code == 1002


def test_throttle_does_not_count_twice(impl: Impl) -> None:
    """A retried first frame counts once towards max_message_bytes and the counters."""
    fr = impl.frames
    limit = leased_limit(impl)
    relay = relay_with(impl, True, limit, impl.gate.ACTION_SHAPE, max_message_bytes=10)
    wire = f(True, 2, bytes(6), fin=False) + f(True, 0, bytes(4))
    for _ in range(3):
        assert relay.process(b"" if _ else wire) == fr.THROTTLED
    limit.grant(1, 0)
    assert relay.process(b"") == fr.NEED_DATA
    assert (relay.data_frames, relay.data_bytes) == (2, 10)
    assert (limit.consumed_messages, limit.consumed_bytes) == (2, 10)


def test_no_gate_no_change(impl: Impl) -> None:
    wire, _ = drop_stream(False)
    relay = impl.frames.FrameRelay(from_client=False)
    assert relay.gate is None
    relay.process(wire)
    assert relay.take_output() is wire
    assert (relay.dropped_messages, relay.dropped_frames, relay.throttle_action) == (0, 0, 0)
    with pytest.raises(TypeError):
        relay.set_gate(object())
    for name in (
        "gate",
        "throttle_action",
        "throttle_scope",
        "retry_after_ns",
        "dropped_messages",
        "dropped_frames",
        "drop_scope",
    ):
        with pytest.raises(AttributeError):
            setattr(relay, name, 1)
