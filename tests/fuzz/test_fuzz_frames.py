"""Fuzz the frame codec (wsgw/_core/frames.pyx and its pure twin frames_py.py): random
streams in both directions, with compression allowed or not, message and ping limits,
self-contained checking and a dropping or shaping gate. Never an exception, ERROR only
with 1002/1007/1008/1009, compiled == pure, and the cuts of the input do not matter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import cuts_for, fuzz, inputs, mutated, run, seed_bytes


@st.composite
def frame_case(draw: st.DrawFn) -> harness.FrameCase:
    client = draw(st.booleans())
    pool = seed_bytes("frames", "client-" if client else "backend-")
    stream = draw(
        st.one_of(
            inputs(pool),
            # several seeds back to back (one of them mutated): messages after messages
            st.lists(
                st.one_of(st.sampled_from(pool), mutated(pool, 2)), min_size=2, max_size=5
            ).map(b"".join),
        )
    )
    gate = draw(st.sampled_from(harness.GATES))
    return harness.FrameCase(
        stream=stream,
        client=client,
        allow_rsv1=draw(st.booleans()),
        max_message_bytes=draw(st.sampled_from(harness.MESSAGE_LIMITS)),
        max_control_per_second=draw(st.sampled_from(harness.CONTROL_RATES)),
        self_contained=draw(st.booleans()),
        gate=gate,
        tokens=draw(st.integers(0, 2)),
        grants=tuple(draw(st.lists(st.integers(0, 2), min_size=1, max_size=4))),
        cuts=cuts_for(draw, stream),
    )


@fuzz
@given(frame_case())
def test_frame_relay(case: harness.FrameCase) -> None:
    run(harness.check_frames, case)


def test_frame_relay_corpus() -> None:
    for name, data in harness.seeds("frames"):
        client = name.startswith("client-")
        run(harness.run_one, "frames", data, name)
        for limit in (0, 100):
            for gate in harness.GATES:
                case = harness.FrameCase(
                    data,
                    client,
                    max_message_bytes=limit,
                    gate=gate,
                    self_contained=True,
                    max_control_per_second=2,
                    tokens=0,
                    grants=(1, 0),
                    cuts=tuple(range(1, len(data), 7)),
                )
                run(harness.check_frames, case)
