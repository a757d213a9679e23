"""in_frame / in_message: where the relay's output stands, so the gateway knows when a frame
of its own (a close, a throttle notice) may be inserted without corrupting the stream."""

from __future__ import annotations

from .core_support import Impl, frame


def test_at_rest_between_messages(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    assert not relay.in_frame and not relay.in_message
    relay.process(frame(1, b"whole"))
    assert not relay.in_frame and not relay.in_message


def test_inside_a_streamed_frame(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    data = frame(2, b"x" * 1000)
    relay.process(data[:100])  # header and part of the payload went out
    assert relay.in_frame and relay.in_message
    relay.process(data[100:])
    assert not relay.in_frame and not relay.in_message


def test_a_partial_header_is_not_output_yet(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    relay.process(frame(2, b"x" * 1000)[:1])
    assert not relay.in_frame and not relay.in_message


def test_between_fragments_only_control_frames_fit(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    relay.process(frame(1, b"frag", fin=False))
    assert not relay.in_frame and relay.in_message
    relay.process(frame(9, b"ping"))  # a control frame between fragments
    assert relay.in_message
    relay.process(frame(0, b"ment", fin=True))
    assert not relay.in_message


def test_a_dropped_message_was_never_output(impl: Impl) -> None:
    relay = impl.frames.FrameRelay(from_client=False)
    limit = impl.gate.Limit(1, 0, 0, 0)
    relay.set_gate(impl.gate.Gate([(limit, impl.gate.ACTION_DROP, 0)]))
    relay.process(frame(1, b"spends the token"))
    relay.process(frame(1, b"dropped", fin=False)[:6])  # mid-payload of a dropped frame
    assert relay.dropped_messages == 1
    assert not relay.in_frame and not relay.in_message
