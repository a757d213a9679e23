"""The /stats JSON built by wsgw/pipeline/stats.py straight from a Recorder's state.

Consumers parse this JSON, so the tests pin whole entries and the order of their keys,
not only a few values.
"""

from __future__ import annotations

import orjson

from wsgw.pipeline.recorder import Recorder
from wsgw.pipeline.stats import stats

from .conftest import WALL_START, Clock, Counters, record

API_KEYS = [
    "connections_active", "connections", "messages", "bytes", "compressed_bytes",
    "inflate_input_bytes", "inflate_output_bytes", "message_limit_closes", "throttled",
    "close_codes", "backend_failures", "handshake_seconds", "connection_duration_seconds",
]  # fmt: skip
APP_KEYS = [
    "connections_active", "messages", "bytes", "compressed_bytes", "inflate_input_bytes",
    "inflate_output_bytes", "throttled",
]  # fmt: skip


def both(c2b: int, b2c: int) -> dict[str, int]:
    return {"client_to_backend": c2b, "backend_to_client": b2c}


def make_recorder(clock: Clock, **kwargs: object) -> Recorder:
    return Recorder(
        api_labels=[("chat", "v1")],
        application_labels=["acme"],
        clock=clock,
        wall_clock=lambda: WALL_START,
        **kwargs,  # type: ignore[arg-type]
    )


def test_live_then_closed_connection_whole_entries() -> None:
    clock = Clock()
    r = make_recorder(clock)
    counters = Counters()
    rec = record(clock, counters, handshake_seconds=0.25)
    inflation = [100, 40, 400, 7, 0, 0]
    rec.compression = lambda: tuple(inflation)
    r.opened(rec)
    r.refused("nope", "v1", 404, client="x", application=None, reason="no route")
    counters.add(c2b=(2, 20), b2c=(1, 10))
    r.throttled(rec, "api", "shape")
    r.message_refused(rec, False, "message too big once inflated")
    r.message_refused(rec, True, "not a limit")  # not counted
    r.backend_failure("chat", "v1", "vanished")

    live = orjson.loads(orjson.dumps(stats(r)))
    assert list(live) == ["connections_active", "apis", "applications", "events"]
    assert live["connections_active"] == 1
    assert list(live["apis"]) == ["chat:v1", "-"]
    chat = live["apis"]["chat:v1"]
    assert list(chat) == API_KEYS
    assert chat == {
        "connections_active": 1,
        "connections": {"upgraded": 1},
        "messages": both(2, 1),
        "bytes": both(20, 10),
        "compressed_bytes": both(100, 7),
        "inflate_input_bytes": both(40, 0),
        "inflate_output_bytes": both(400, 0),
        "message_limit_closes": {"backend_to_client": {"inflated_size": 1}},
        "throttled": {"api": {"shape": 1}},
        "close_codes": {},
        "backend_failures": {"vanished": 1},
        "handshake_seconds": {"count": 1, "sum": 0.25},
        "connection_duration_seconds": {"count": 0, "sum": 0.0},
    }
    # An unknown API is one "-" entry; a refusal names no application entry.
    unknown = live["apis"]["-"]
    assert list(unknown) == API_KEYS
    assert unknown["connections"] == {"404": 1}
    assert unknown["messages"] == both(0, 0) and unknown["compressed_bytes"] == both(0, 0)
    assert list(live["applications"]) == ["acme"]
    acme = live["applications"]["acme"]
    assert list(acme) == APP_KEYS
    assert acme == {
        "connections_active": 1,
        "messages": both(2, 1),
        "bytes": both(20, 10),
        "compressed_bytes": both(100, 7),
        "inflate_input_bytes": both(40, 0),
        "inflate_output_bytes": both(400, 0),
        "throttled": {"api": {"shape": 1}},
    }
    assert live["events"] == {}

    # The end moves the live counts into the totals: still counted once, not twice.
    counters.add(b2c=(1, 5))
    inflation[3] += 3
    clock.now += 2
    rec.close_code, rec.closed_by = 1001, "backend"
    r.closed(rec)
    counters.add(c2b=(50, 500))  # after the end: no longer read
    ended = stats(r)
    chat = ended["apis"]["chat:v1"]
    assert ended["connections_active"] == 0 and chat["connections_active"] == 0
    assert chat["messages"] == both(2, 2) and chat["bytes"] == both(20, 15)
    assert chat["compressed_bytes"] == both(100, 10)
    assert chat["close_codes"] == {"1001": {"backend": 1}}
    assert chat["connection_duration_seconds"] == {"count": 1, "sum": 2.0}
    assert ended["applications"]["acme"]["messages"] == both(2, 2)


def test_events_show_each_sink_before_it_drains(tmp_path) -> None:  # noqa: ANN001
    r = make_recorder(Clock(), events_file=str(tmp_path / "e.jsonl"), buffer_events=2)
    for i in range(3):  # not started: nothing drains, the third does not fit
        r.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    assert stats(r)["events"] == {"file": {"written": 0, "buffered": 2, "dropped": 1, "failed": 0}}


def test_empty_recorder() -> None:
    assert stats(make_recorder(Clock())) == {
        "connections_active": 0,
        "apis": {},
        "applications": {},
        "events": {},
    }
