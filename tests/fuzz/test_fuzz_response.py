"""Fuzz wsgw/http.py's ResponseReader (the backend's answer): parse or raise GatewayError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import cuts_for, fuzz, inputs, run, seed_bytes


@st.composite
def response_case(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...]]:
    data = draw(inputs(seed_bytes("response") + seed_bytes("handshake", "resp-")))
    return data, cuts_for(draw, data)


@fuzz
@given(response_case())
def test_response_reader(case: tuple[bytes, tuple[int, ...]]) -> None:
    run(harness.check_response, *case)


def test_response_reader_corpus() -> None:
    for name, data in harness.seeds("response"):
        run(harness.run_one, "response", data, name)
        run(harness.check_response, data)
        run(harness.check_response, data, tuple(range(1, len(data))))
