"""wsgw.logs.Throttled: one line per event per interval, then a summary. Injected clock and
scheduler: no sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from wsgw import logs
from wsgw.logs import Throttled

LOGGER = "wsgw.test.throttled"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """A scheduler the test fires by hand: (delay, callback, cancelled)."""

    def __init__(self) -> None:
        self.pending: list[list] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timers.Handle:
        entry = [delay, callback, False]
        self.pending.append(entry)
        return Timers.Handle(entry)

    class Handle:
        def __init__(self, entry: list) -> None:
            self.entry = entry

        def cancel(self) -> None:
            self.entry[2] = True

    def fire_all(self) -> None:
        due, self.pending = self.pending, []
        for _, callback, cancelled in due:
            if not cancelled:
                callback()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def make(clock: Clock, interval_s: float = 60.0, **kwargs) -> Throttled:
    kwargs.setdefault("schedule", None)
    return Throttled(logging.getLogger(LOGGER), interval_s, clock=clock, **kwargs)


def test_first_line_then_one_summary_at_the_next_occurrence(clock, caplog_info) -> None:
    t = make(clock)
    assert t.info("request from %s timed out", "10.0.0.1") is True
    for i in range(11_499):
        clock.now += 0.001
        assert t.info("request from %s timed out", f"10.0.{i // 250}.{i % 250}") is False
    assert lines(caplog_info) == ["request from 10.0.0.1 timed out"]
    clock.now = 1060.0  # the interval is over: the summary, then the new window's first line
    assert t.info("request from %s timed out", "10.9.9.9") is True
    assert lines(caplog_info) == [
        "request from 10.0.0.1 timed out",
        "request from 10.0.0.1 timed out ... and 11499 more in the last 60 s",
        "request from 10.9.9.9 timed out",
    ]
    assert all(r.levelno == logging.INFO for r in caplog_info.records)


def test_a_steady_flood_is_two_lines_per_interval(clock, caplog_info) -> None:
    t = make(clock, 10.0)
    for i in range(10_000):  # 100 s at 100 events a second
        clock.now = 1000.0 + i / 100
        t.warning("backend %s refused", "b1")
    t.flush()
    got = lines(caplog_info)
    assert len(got) == 20
    assert got[0::2] == ["backend b1 refused"] * 10
    assert all(line.startswith("backend b1 refused ... and 999 more") for line in got[1::2])


def test_no_summary_when_nothing_was_held_back(clock, caplog_info) -> None:
    t = make(clock)
    t.info("once")
    clock.now += 120
    t.info("once")
    t.flush()
    assert lines(caplog_info) == ["once", "once"]


def test_keys_are_independent_and_default_to_the_format_string(clock, caplog_info) -> None:
    t = make(clock)
    t.info("a %s", 1)
    t.info("b %s", 1)
    t.info("a %s", 2)  # same format string: same event
    t.info("a %s", 3, key="other")  # an explicit key
    assert lines(caplog_info) == ["a 1", "b 1", "a 3"]


def test_timer_writes_the_summary_when_the_interval_ends(clock, caplog_info) -> None:
    timers = Timers()
    t = make(clock, 30.0, schedule=timers)
    t.error("refused %d", 1)
    assert timers.pending == []  # nothing held back yet: no timer
    clock.now += 5
    t.error("refused %d", 2)
    t.error("refused %d", 3)
    assert [entry[0] for entry in timers.pending] == [25.0]  # one timer, at the window's end
    clock.now += 25
    timers.fire_all()
    assert lines(caplog_info) == ["refused 1", "refused 1 ... and 2 more in the last 30 s"]
    assert caplog_info.records[-1].levelno == logging.ERROR
    assert t.tracked == 0
    t.error("refused %d", 4)  # a new window: written at once
    assert lines(caplog_info)[-1] == "refused 4"


def test_a_cancelled_window_does_not_write_twice(clock, caplog_info) -> None:
    timers = Timers()
    t = make(clock, 30.0, schedule=timers)
    t.info("x")
    t.info("x")
    clock.now += 31
    t.info("x")  # closes the window lazily (summary) and cancels its timer
    timers.fire_all()
    assert lines(caplog_info) == ["x", "x ... and 1 more in the last 31 s", "x"]


def test_a_stale_timer_is_ignored(clock, caplog_info) -> None:
    timers = Timers()
    t = make(clock, 30.0, schedule=timers)
    t.info("x")
    t.info("x")
    stale = timers.pending[0][1]
    t.flush()
    stale()  # the timer of a window already closed
    assert lines(caplog_info) == ["x", "x ... and 1 more in the last 0 s"]


def test_keys_are_bounded(clock, caplog_info) -> None:
    t = make(clock, 60.0, max_keys=3)
    for i in range(1000):
        t.info("event %d", i, key=i)
    assert t.tracked <= 4  # three keys and the shared overflow window
    assert lines(caplog_info) == [
        "event 0",
        "event 1",
        "event 2",
        "event 3 (more log lines like this)",
    ]
    t.flush()
    assert lines(caplog_info)[-1] == "event 3 (more log lines like this) ... and 996 more in " + (
        "the last 0 s"
    )
    # Once their windows are over, old keys make room for new ones.
    clock.now += 61
    t.info("event %d", 5000, key=5000)
    assert lines(caplog_info)[-1] == "event 5000"


def test_disabled_level_costs_nothing_and_keeps_no_state(clock, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    t = make(clock)
    assert t.info("quiet") is False
    assert t.tracked == 0 and lines(caplog) == []


def test_record_names_the_caller(clock, caplog_info) -> None:
    t = make(clock)
    t.info("from the test")
    t.log(logging.INFO, "via log()")
    assert [r.filename for r in caplog_info.records] == ["test_logs.py", "test_logs.py"]
    assert [r.funcName for r in caplog_info.records] == ["test_record_names_the_caller"] * 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Throttled(logging.getLogger(LOGGER), 0)
    with pytest.raises(ValueError):
        Throttled(logging.getLogger(LOGGER), 1.0, max_keys=0)


async def test_default_schedule_uses_the_running_loop(caplog_info) -> None:
    """Inside asyncio the summary comes from a loop timer, with no further event needed."""
    t = Throttled(logging.getLogger(LOGGER), 0.05)
    t.info("tick")
    t.info("tick")
    for _ in range(100):  # bounded: 2 s at most
        if len(lines(caplog_info)) == 2:
            break
        await asyncio.sleep(0.02)
    assert lines(caplog_info)[0] == "tick"
    assert lines(caplog_info)[1].startswith("tick ... and 1 more in the last ")


def test_outside_a_loop_there_is_no_timer() -> None:
    assert logs.loop_schedule(1.0, lambda: None) is None


def test_throttled_is_one_per_logger() -> None:
    a = logging.getLogger(LOGGER + ".registry")
    assert logs.throttled(a) is logs.throttled(a)
    assert logs.throttled(a) is not logs.throttled(logging.getLogger(LOGGER + ".other"))
