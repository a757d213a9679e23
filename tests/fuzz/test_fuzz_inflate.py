"""Fuzz the inflate meter (wsgw/_core/inflate.pyx and inflate_py.py) on any payload, cut
anywhere, both modes, with and without a limit: a status, never an exception, the twins
agree, and a restarted meter measures the next message exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import cuts_for, fuzz, inputs, run, seed_bytes


@st.composite
def inflate_case(draw: st.DrawFn) -> harness.InflateCase:
    payload = draw(inputs(seed_bytes("inflate")))
    return harness.InflateCase(
        payload=payload,
        self_contained=draw(st.booleans()),
        limit=draw(st.sampled_from(harness.INFLATE_LIMITS)),
        finish=draw(st.booleans()),
        cuts=cuts_for(draw, payload),
    )


@fuzz
@given(inflate_case())
def test_inflate_meter(case: harness.InflateCase) -> None:
    run(harness.check_inflate, case)


def test_inflate_meter_corpus() -> None:
    for _name, data in harness.seeds("inflate"):
        run(harness.run_one, "inflate", data)
        for sc in (False, True):
            for limit in (0, 1000):
                run(harness.check_inflate, harness.InflateCase(data, sc, limit))
