"""Fuzz wsgw/http.py's RequestReader: any bytes, cut anywhere, parse or raise GatewayError.

Only the general contract is asserted (the reader's pipelining behaviour is changing)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import cuts_for, fuzz, inputs, run, seed_bytes


@st.composite
def request_case(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...]]:
    data = draw(inputs(seed_bytes("http") + seed_bytes("handshake", "req-")))
    return data, cuts_for(draw, data)


@fuzz
@given(request_case())
def test_request_reader(case: tuple[bytes, tuple[int, ...]]) -> None:
    run(harness.check_request, *case)


def test_request_reader_corpus() -> None:
    for name, data in harness.seeds("http"):
        run(harness.run_one, "http", data, name)
        run(harness.check_request, data)
        run(harness.check_request, data, tuple(range(1, len(data))))
