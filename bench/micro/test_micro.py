"""Micro-benchmarks of the compiled core (wsgw/_core/*.pyx) against its pure-Python twins.

    python -m pytest bench/micro                                   # run, grouped per measure
    python -m pytest bench/micro --benchmark-compare=0001 --benchmark-compare-fail=mean:50%

Each benchmark's group holds the `cython` and `python` variants of one measure, so the
table reads as a ratio; bench/gate.py checks those ratios in CI. Not collected by the main
test run (the root pyproject has testpaths = ["tests"]).
"""

from __future__ import annotations

import pytest
import workloads

IMPLS = [pytest.param(impl, id=impl) for impl in workloads.IMPLS]


def _build(impl: str, factory, *args):  # noqa: ANN001, ANN202
    try:
        return factory(impl, *args)
    except ImportError:
        pytest.skip("compiled core not built: python setup.py build_ext --inplace")


@pytest.mark.parametrize("size", [16, 65536])
@pytest.mark.parametrize("impl", IMPLS)
def test_parse_header(benchmark, impl: str, size: int) -> None:
    """Frame header parse: parse_header() of a masked client frame (16 B or 64 KiB payload)."""
    benchmark.group = f"parse_header, {size} B frame"
    run = _build(impl, workloads.parse_header, size)
    assert benchmark(run).masked


@pytest.mark.parametrize("size", workloads.REMASK_SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_remask(benchmark, impl: str, size: int) -> None:
    """Unmask + re-mask: FrameRelay(from_client=True).process(frame) + take_output()."""
    benchmark.group = f"remask, {size} B payload"
    run = _build(impl, workloads.remask, size)
    out = benchmark(run)
    assert len(out) == len(workloads.client_frame(size))


@pytest.mark.parametrize("impl", IMPLS)
def test_passthrough(benchmark, impl: str) -> None:
    """Backend→client: FrameRelay(from_client=False) validating a 1 KiB frame, output verbatim."""
    benchmark.group = "passthrough, 1024 B payload"
    run = _build(impl, workloads.passthrough, 1024)
    assert len(benchmark(run)) == 1024 + 4


@pytest.mark.parametrize("impl", IMPLS)
def test_remask_gated(benchmark, impl: str) -> None:
    """A metered client frame (32 B): gate admission + re-mask, wsgw's per-frame work."""
    benchmark.group = "remask + gate admit, 32 B payload"
    run = _build(impl, workloads.remask_gated, 32)
    assert len(benchmark(run)) == 32 + 6


@pytest.mark.parametrize("impl", IMPLS)
def test_bucket_consume(benchmark, impl: str) -> None:
    """TokenBucket.consume(1, now): one token from a 10**9/min bucket."""
    benchmark.group = "token bucket consume"
    run = _build(impl, workloads.bucket_consume)
    assert benchmark(run) is True


@pytest.mark.parametrize("impl", IMPLS)
def test_gate_admit(benchmark, impl: str) -> None:
    """Gate.admit(32, now): one message through a one-limit gate (10**9 messages/min)."""
    benchmark.group = "gate admit"
    run = _build(impl, workloads.gate_admit)
    assert benchmark(run) == 0
