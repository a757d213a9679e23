"""Analytics events: JSON lines per connection end, refusal and throttling decision."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from wsgw.pipeline import events as events_mod
from wsgw.pipeline.events import iso_utc

from .conftest import WALL_START, Clock, Counters, L, make_telemetry, record, scrape

TS = "2023-11-14T22:14:20.000Z"  # the test telemetry's wall clock: WALL_START + 60
START = "2023-11-14T22:13:20.000Z"

CONNECTION_KEYS = {
    "type", "ts", "api", "version", "application", "key_type", "client", "start",
    "duration_s", "messages_in", "bytes_in", "messages_out", "bytes_out", "close_code",
    "closed_by",
}  # fmt: skip


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def wait_until(predicate, timeout_s: float = 3.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_iso_utc() -> None:
    assert iso_utc(WALL_START) == START
    assert iso_utc(WALL_START + 0.1234) == "2023-11-14T22:13:20.123Z"


async def test_each_event_type_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    t = make_telemetry(clock, events_file=str(path))
    await t.start()
    t.refused("chat", "v1", 401, client="10.0.0.1", application=None, reason="invalid token")
    t.throttled_handshake("chat", "v1", "acme", "subscription", client="10.0.0.2")
    counters = Counters()
    rec = record(clock, counters, client="10.0.0.7")
    t.opened(rec)
    counters.add(c2b=(3, 30), b2c=(4, 4000))
    t.throttled(rec, "application", "drop", 2)
    clock.now += 12.3456
    rec.close_code, rec.closed_by = 1000, "client"
    t.closed(rec)
    await t.stop()

    refusal, throttle_hs, throttle, connection = read_lines(path)
    assert refusal == {
        "type": "refusal", "ts": TS, "api": "chat", "version": "v1", "application": "-",
        "client": "10.0.0.1", "status": 401, "reason": "invalid token",
    }  # fmt: skip
    assert throttle_hs == {
        "type": "throttle", "ts": TS, "api": "chat", "version": "v1", "application": "acme",
        "key_type": "-", "client": "10.0.0.2", "scope": "subscription", "action": "refuse",
        "count": 1,
    }  # fmt: skip
    assert throttle == {
        "type": "throttle", "ts": TS, "api": "chat", "version": "v1", "application": "acme",
        "key_type": "PRODUCTION", "client": "10.0.0.7", "scope": "application",
        "action": "drop", "count": 2,
    }  # fmt: skip
    assert connection == {
        "type": "connection", "ts": TS, "api": "chat", "version": "v1", "application": "acme",
        "key_type": "PRODUCTION", "client": "10.0.0.7", "start": START, "duration_s": 12.346,
        "messages_in": 3, "bytes_in": 30, "messages_out": 4, "bytes_out": 4000,
        "close_code": 1000, "closed_by": "client",
    }  # fmt: skip
    assert set(connection) == CONNECTION_KEYS
    assert t.stats()["events"]["file"] == {"written": 4, "buffered": 0, "dropped": 0, "failed": 0}


async def test_connection_without_close_frame_is_1006(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    t = make_telemetry(clock, events_file=str(path))
    await t.start()
    rec = record(clock, None)
    t.opened(rec)
    rec.closed_by = "client"
    t.closed(rec)
    await t.stop()
    (event,) = read_lines(path)
    assert event["close_code"] == 1006 and event["closed_by"] == "client"
    assert event["messages_in"] == event["bytes_out"] == 0


async def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    t = make_telemetry(events_file="-")
    await t.start()
    t.refused("quotes", "1.0", 404, client="::1", application=None, reason="no route")
    await t.stop()
    out = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["reason"] for line in out] == ["no route"]
    assert t.sinks()[0].name == "stdout"


async def test_throttle_events_rate_limited_per_connection(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock(now=500.0)
    t = make_telemetry(clock, events_file=str(path))
    await t.start()
    a = record(clock, None, client="a")
    b = record(clock, None, client="b")
    t.opened(a)
    t.opened(b)
    t.throttled(a, "subscription", "drop")  # t=0: event (count 1)
    clock.now += 0.2
    t.throttled(a, "subscription", "drop", 2)  # suppressed
    t.throttled(b, "api", "shape")  # another connection: its own limit, event
    clock.now += 0.5
    t.throttled(a, "subscription", "drop")  # t=0.7: suppressed
    clock.now += 0.3
    t.throttled(a, "subscription", "drop")  # t=1.0: event, 1 + the 3 suppressed
    clock.now += 0.5
    t.throttled(a, "application", "close", 5)  # t=1.5: suppressed ...
    t.closed(a)  # ... and reported when the connection ends
    await t.stop()

    throttles = [(e["client"], e["scope"], e["action"], e["count"]) for e in read_lines(path)
                 if e["type"] == "throttle"]  # fmt: skip
    assert throttles == [
        ("a", "subscription", "drop", 1),
        ("b", "api", "shape", 1),
        ("a", "subscription", "drop", 4),
        ("a", "application", "close", 5),
    ]
    samples, _ = scrape(t)  # the metric counts every decision, events or not
    acme = dict(api="chat", version="v1", application="acme")
    assert samples[("wsgw_throttled_total", L(**acme, scope="subscription", action="drop"))] == 5
    assert samples[("wsgw_throttled_total", L(**acme, scope="application", action="close"))] == 5


async def test_buffer_overflow_drops_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    t = make_telemetry(events_file=str(path), buffer_events=5)
    for i in range(8):  # before start(): nothing drains
        t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    samples, _ = scrape(t)
    assert samples[("wsgw_events_dropped_total", L(sink="file"))] == 3
    assert samples[("wsgw_events_failed_total", L(sink="file"))] == 0
    await t.start()
    await t.stop()
    assert [e["reason"] for e in read_lines(path)] == ["r0", "r1", "r2", "r3", "r4"]


class StuckStdout:
    """A stdout whose writes block until released: a pipe nobody reads."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.buffer = self
        self.data = io.BytesIO()

    def write(self, data: bytes) -> int:
        self.release.wait(5.0)
        return self.data.write(data)

    def flush(self) -> None:
        pass


async def test_slow_sink_never_slows_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = StuckStdout()
    monkeypatch.setattr(sys, "stdout", stuck)
    clock = Clock()
    t = make_telemetry(clock, events_file="-", buffer_events=1000)
    await t.start()
    try:
        t.refused("chat", "v1", 429, client="x", application="acme", reason="first")
        sink = t.sinks()[0]
        await wait_until(lambda: not sink.buffer)  # the first batch is stuck in write()
        began = time.perf_counter()
        for i in range(5000):
            rec = record(clock, None)
            t.opened(rec)
            t.closed(rec)
            t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
        elapsed = time.perf_counter() - began
        assert elapsed < 1.0, f"10000 events took {elapsed:.3f}s with a stuck sink"
        assert len(sink.buffer) == 1000
        assert sink.dropped == 9000
    finally:
        stuck.release.set()
    await t.stop()
    lines = stuck.data.getvalue().splitlines()
    assert len(lines) == 1 + 1000  # the stuck batch, then the buffer, in order
    assert orjson.loads(lines[0])["reason"] == "first"


async def test_file_errors_are_counted_and_retried(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    path = folder / "events.jsonl"
    t = make_telemetry(events_file=str(path))
    await t.start()
    t.refused("chat", "v1", 403, client="x", application="acme", reason="one")
    t.refused("chat", "v1", 403, client="x", application="acme", reason="two")
    sink = t.sinks()[0]
    await wait_until(lambda: sink.failed >= 1)
    samples, _ = scrape(t)
    assert samples[("wsgw_events_failed_total", L(sink="file"))] >= 1
    assert len(sink.buffer) == 2  # kept for the retry
    folder.mkdir()
    await wait_until(lambda: sink.written == 2)
    t.refused("chat", "v1", 403, client="x", application="acme", reason="three")
    await t.stop()
    assert [e["reason"] for e in read_lines(path)] == ["one", "two", "three"]
    assert sink.dropped == 0


async def test_batches_are_bounded_and_flushed_without_waiting(tmp_path: Path) -> None:
    """Over FLUSH_EVENTS waiting wakes the drain at once, in batches of FLUSH_EVENTS."""
    path = tmp_path / "events.jsonl"
    t = make_telemetry(events_file=str(path))
    sink = t.sinks()[0]
    sizes: list[int] = []
    write = sink.write_batch

    async def recording(batch):  # noqa: ANN001, ANN202
        sizes.append(len(batch))
        await write(batch)

    sink.write_batch = recording  # type: ignore[method-assign]
    await t.start()
    n = events_mod.FLUSH_EVENTS * 2 + 7
    for i in range(n):
        t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    await wait_until(lambda: sink.written == n)
    await t.stop()
    assert max(sizes) == events_mod.FLUSH_EVENTS and sum(sizes) == n
    assert [e["reason"] for e in read_lines(path)] == [f"r{i}" for i in range(n)]


async def test_no_sink_configured_costs_nothing() -> None:
    t = make_telemetry()
    await t.start()
    t.refused("chat", "v1", 429, client="x", application="acme", reason="r")
    assert t.events is None and t.stats()["events"] == {}
    await t.stop()
