"""The analytics events as serialized: exact JSON lines, key order included.

Downstream consumers read these lines (and the Redis Stream's "type" field); the other
event tests compare parsed dicts, which would not see keys reordered.
"""

from __future__ import annotations

from collections.abc import Iterable

from wsgw.pipeline.events import EventLog, Item, Sink
from wsgw.pipeline.recorder import MAX_REASON_CHARS, Recorder

from .conftest import WALL_START, Clock, Counters, record

TS = '"ts":"2023-11-14T22:14:20.000Z"'  # WALL_START + 60


def recorder_with_buffer(clock: Clock) -> tuple[Recorder, Sink]:
    """A Recorder whose one sink is never started: emitted items stay in its buffer."""
    r = Recorder(
        api_labels=[("chat", "v1")],
        application_labels=["acme"],
        clock=clock,
        wall_clock=lambda: WALL_START + 60,
    )
    sink = Sink(100)
    r.events = EventLog([sink])
    return r, sink


def lines(buffer: Iterable[Item]) -> list[tuple[str, str]]:
    return [(kind, line.decode()) for kind, line in buffer]


def test_each_event_line_exactly() -> None:
    clock = Clock()
    r, sink = recorder_with_buffer(clock)
    r.refused("chat", "v1", 401, client="10.0.0.1", application=None, reason="x" * 300)
    r.throttled_handshake("other", "v9", "acme", "application", client="10.0.0.2")
    counters = Counters()
    rec = record(clock, counters, key_type="SANDBOX")
    r.opened(rec)
    counters.add(c2b=(3, 30), b2c=(4, 4000))
    r.throttled(rec, "subscription", "drop", 2)
    clock.now += 0.5
    r.throttled(rec, "api", "close")  # within the interval: reported at the end
    clock.now += 12.0
    rec.close_code, rec.closed_by = 1000, "client"
    r.closed(rec)

    who = '"api":"chat","version":"v1","application":"acme","key_type":"SANDBOX"'
    assert lines(sink.buffer) == [
        (
            "refusal",
            '{"type":"refusal",' + TS + ',"api":"chat","version":"v1","application":"-",'
            '"client":"10.0.0.1","status":401,"reason":"' + "x" * MAX_REASON_CHARS + '"}\n',
        ),
        (
            "throttle",
            '{"type":"throttle",' + TS + ',"api":"other","version":"v9","application":"acme",'
            '"key_type":"-","client":"10.0.0.2","scope":"application","action":"refuse",'
            '"count":1}\n',
        ),
        (
            "throttle",
            '{"type":"throttle",' + TS + "," + who + ',"client":"10.0.0.7",'
            '"scope":"subscription","action":"drop","count":2}\n',
        ),
        (
            "throttle",
            '{"type":"throttle",' + TS + "," + who + ',"client":"10.0.0.7",'
            '"scope":"api","action":"close","count":1}\n',
        ),
        (
            "connection",
            '{"type":"connection",' + TS + "," + who + ',"client":"10.0.0.7",'
            '"start":"2023-11-14T22:13:20.000Z","duration_s":12.5,"messages_in":3,'
            '"bytes_in":30,"messages_out":4,"bytes_out":4000,"close_code":1000,'
            '"closed_by":"client"}\n',
        ),
    ]


def test_events_carry_the_names_as_given_not_the_labels() -> None:
    """Series are bounded to known names; an event is one line, so it keeps the real ones."""
    clock = Clock()
    r, sink = recorder_with_buffer(clock)
    rec = record(clock, None, api="unlisted", application="m", key_type="K9")
    r.opened(rec)
    r.throttled(rec, "scope9", "action9")
    rec.closed_by = "alien"
    r.closed(rec)
    throttle, connection = (line for _, line in lines(sink.buffer))
    fields = '"api":"unlisted","version":"v1","application":"m","key_type":"K9"'
    assert fields + ',"client":"10.0.0.7","scope":"scope9","action":"action9"' in throttle
    assert connection.startswith('{"type":"connection",' + TS + "," + fields)
    assert connection.endswith('"close_code":1006,"closed_by":"alien"}\n')
    assert r.throttled_counts == {("-", "-", "-", "-", "-"): 1}


def test_no_sink_reads_no_clock() -> None:
    """Without sinks an event costs no wall-clock read, and nothing is built."""

    def wall_clock() -> float:
        raise AssertionError("the wall clock was read with no sink to write to")

    clock = Clock()
    r = Recorder(api_labels=[("chat", "v1")], clock=clock, wall_clock=wall_clock)
    r.refused("chat", "v1", 404, client="x", application=None, reason="r")
    r.throttled_handshake("chat", "v1", None, "api")
    rec = record(clock, None)
    r.opened(rec)
    r.throttled(rec, "api", "drop")
    r.closed(rec)
    assert r.events is None and sum(r.close_codes.values()) == 1
