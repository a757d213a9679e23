"""A flood of repeated events writes a bounded number of log lines (wsgw/logs.py)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest

from wsgw import logs
from wsgw.pipeline import accept

from .backends import TIMEOUT
from .conftest import Env

pytestmark = pytest.mark.usefixtures("no_tracebacks")


@pytest.fixture
def relay_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[logs.Throttled]:
    """The HTTP leg's throttled log, fresh, with a short interval (the process keeps one)."""
    throttled = logs.throttled(accept.log)
    throttled.reset()
    monkeypatch.setattr(throttled, "interval_s", 0.5)
    yield throttled
    throttled.reset()


async def test_request_timeouts_are_one_line_and_a_summary(
    env: Env,
    relay_log: logs.Throttled,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 connections that send nothing (a probe's flood, scaled down): one line when the
    first times out, one summary when the interval ends; not 20 lines. (20: under
    gateway.max_pending_per_address, so that none is refused at accept.)"""
    caplog.set_level(logging.INFO, logger="wsgw")
    monkeypatch.setattr("wsgw.pipeline.accept.REQUEST_TIMEOUT_S", 0.2)
    host, _, port = env.gateway.address.rpartition(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
    for reader, _ in conns:  # the gateway closes each one
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    for _, writer in conns:
        writer.close()

    def timeouts() -> list[str]:
        return [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]

    for _ in range(100):  # bounded: 2 s at most; the summary is due 0.5 s after the first
        if len(timeouts()) == 2:
            break
        await asyncio.sleep(0.02)
    first, summary = timeouts()
    assert first == "request from 127.0.0.1 timed out"
    assert re.fullmatch(
        r"request from 127\.0\.0\.1 timed out \.\.\. and 19 more in the last 0\.[5-9] s", summary
    ), summary
    assert all(r.levelno == logging.INFO for r in caplog.records if "timed out" in r.message)
