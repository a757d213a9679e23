"""/metrics exposition: names, labels and values for a scripted sequence of relay calls."""

from __future__ import annotations

import orjson
import pytest

from wsgw.pipeline.metrics import CONTENT_TYPE, DURATION_BUCKETS, HANDSHAKE_BUCKETS, Histogram
from wsgw.pipeline.telemetry import read_counters

from .conftest import Clock, Counters, L, make_telemetry, record, scrape, series

DIRS = ("client_to_backend", "backend_to_client")


def test_scripted_sequence_exact_series() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    t.refused("chat", "v1", 401, client="10.0.0.1", application=None, reason="no token")
    t.refused("nope", "v9", 404, client="10.0.0.1", application=None, reason="no route")
    t.refused("-", "-", 404, client="10.0.0.1", application=None, reason="no route")

    c1, c2 = Counters(), Counters()
    r1 = record(clock, c1, handshake_seconds=0.004)
    r2 = record(
        clock, c2, version="v2", application="globex", key_type="SANDBOX", handshake_seconds=0.3
    )
    r3 = record(clock, None, api="quotes", version="1.0", handshake_seconds=0.0005)
    for r in (r1, r2, r3):
        t.opened(r)
    c1.add(c2b=(3, 300), b2c=(5, 500))
    c2.add(c2b=(1, 10))

    samples, types = scrape(t)
    assert types["wsgw_connections_active"] == "gauge"
    for counter in (
        "wsgw_connections",
        "wsgw_messages",
        "wsgw_bytes",
        "wsgw_throttled",
        "wsgw_close_codes",
        "wsgw_backend_failures",
        "wsgw_events_dropped",
        "wsgw_events_failed",
    ):
        assert types[counter] == "counter", counter
    assert types["wsgw_handshake_seconds"] == "histogram"
    assert types["wsgw_connection_duration_seconds"] == "histogram"

    assert series(samples, "wsgw_connections_active") == {
        L(api="chat", version="v1", application="acme", key_type="PRODUCTION"): 1,
        L(api="chat", version="v2", application="globex", key_type="SANDBOX"): 1,
        L(api="quotes", version="1.0", application="acme", key_type="PRODUCTION"): 1,
    }
    assert series(samples, "wsgw_connections_total") == {
        L(api="chat", version="v1", outcome="401"): 1,
        L(api="-", version="-", outcome="404"): 2,
        L(api="chat", version="v1", outcome="upgraded"): 1,
        L(api="chat", version="v2", outcome="upgraded"): 1,
        L(api="quotes", version="1.0", outcome="upgraded"): 1,
    }
    assert series(samples, "wsgw_messages_total") == {
        L(api="chat", version="v1", application="acme", direction="client_to_backend"): 3,
        L(api="chat", version="v1", application="acme", direction="backend_to_client"): 5,
        L(api="chat", version="v2", application="globex", direction="client_to_backend"): 1,
        L(api="chat", version="v2", application="globex", direction="backend_to_client"): 0,
        L(api="quotes", version="1.0", application="acme", direction="client_to_backend"): 0,
        L(api="quotes", version="1.0", application="acme", direction="backend_to_client"): 0,
    }
    bytes_ = series(samples, "wsgw_bytes_total")
    v1_acme = dict(api="chat", version="v1", application="acme")
    v2_globex = dict(api="chat", version="v2", application="globex")
    assert bytes_[L(**v1_acme, direction="client_to_backend")] == 300
    assert bytes_[L(**v1_acme, direction="backend_to_client")] == 500
    assert bytes_[L(**v2_globex, direction="client_to_backend")] == 10

    # Live counters move between two scrapes with no telemetry call at all.
    c1.add(c2b=(2, 20))
    samples, _ = scrape(t)
    chat_acme = dict(api="chat", version="v1", application="acme")
    assert samples[("wsgw_messages_total", L(**chat_acme, direction="client_to_backend"))] == 5
    assert samples[("wsgw_bytes_total", L(**chat_acme, direction="client_to_backend"))] == 320

    t.throttled(r1, "subscription", "drop", 4)
    t.throttled(r1, "application", "close")
    t.throttled_handshake("chat", "v1", "acme", "connections")
    t.backend_failure("chat", "v1", "timeout")
    t.backend_failure("chat", "v1", "timeout")
    t.backend_failure("quotes", "1.0", "refused")

    clock.now += 42
    c1.add(b2c=(1, 1))
    r1.close_code, r1.closed_by = 1008, "gateway"
    t.closed(r1)
    t.closed(r1)  # a second report of the same end counts nothing
    clock.now += 7200
    r2.closed_by = "client"  # no close code: ended without a close frame
    t.closed(r2)

    samples, _ = scrape(t)
    assert series(samples, "wsgw_connections_active") == {
        L(api="chat", version="v1", application="acme", key_type="PRODUCTION"): 0,
        L(api="chat", version="v2", application="globex", key_type="SANDBOX"): 0,
        L(api="quotes", version="1.0", application="acme", key_type="PRODUCTION"): 1,
    }
    # The ended connection's final counts stay in the totals.
    assert samples[("wsgw_messages_total", L(**chat_acme, direction="client_to_backend"))] == 5
    assert samples[("wsgw_messages_total", L(**chat_acme, direction="backend_to_client"))] == 6
    assert samples[("wsgw_bytes_total", L(**chat_acme, direction="backend_to_client"))] == 501
    assert series(samples, "wsgw_throttled_total") == {
        L(**chat_acme, scope="subscription", action="drop"): 4,
        L(**chat_acme, scope="application", action="close"): 1,
        L(**chat_acme, scope="connections", action="refuse"): 1,
    }
    assert series(samples, "wsgw_close_codes_total") == {
        L(api="chat", version="v1", code="1008", by="gateway"): 1,
        L(api="chat", version="v2", code="1006", by="client"): 1,
    }
    assert series(samples, "wsgw_backend_failures_total") == {
        L(api="chat", version="v1", reason="timeout"): 2,
        L(api="quotes", version="1.0", reason="refused"): 1,
    }

    # Histograms: cumulative buckets, count and sum per API.
    hs = series(samples, "wsgw_handshake_seconds_bucket")
    assert hs[L(api="chat", version="v1", le="0.0025")] == 0
    assert hs[L(api="chat", version="v1", le="0.005")] == 1
    assert hs[L(api="chat", version="v1", le="+Inf")] == 1
    assert hs[L(api="chat", version="v2", le="0.25")] == 0
    assert hs[L(api="chat", version="v2", le="0.5")] == 1
    assert hs[L(api="quotes", version="1.0", le="0.001")] == 1
    assert samples[("wsgw_handshake_seconds_count", L(api="chat", version="v2"))] == 1
    handshake_sum = samples[("wsgw_handshake_seconds_sum", L(api="chat", version="v2"))]
    assert handshake_sum == pytest.approx(0.3)
    ds = series(samples, "wsgw_connection_duration_seconds_bucket")
    assert ds[L(api="chat", version="v1", le="15.0")] == 0
    assert ds[L(api="chat", version="v1", le="60.0")] == 1
    assert ds[L(api="chat", version="v2", le="7200.0")] == 0
    assert ds[L(api="chat", version="v2", le="14400.0")] == 1
    assert samples[("wsgw_connection_duration_seconds_sum", L(api="chat", version="v2"))] == 7242
    # Only ended connections have a duration.
    assert ("wsgw_connection_duration_seconds_count", L(api="quotes", version="1.0")) not in samples


def test_histogram_buckets_and_bounds() -> None:
    h = Histogram(HANDSHAKE_BUCKETS)
    for v in (0.0, 0.001, 0.0011, 0.005, 9.9, 10.0, 10.01, 3600.0):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum["0.001"] == 2  # le is "less than or equal": the bound itself is in
    assert cum["0.0025"] == 3
    assert cum["0.005"] == 4
    assert cum["10.0"] == 6
    assert cum["+Inf"] == 8 == h.count
    assert h.sum == pytest.approx(3629.9171)
    assert list(cum)[:-1] == [repr(b) for b in HANDSHAKE_BUCKETS]
    # Buckets fit WebSockets: handshakes in ms..s, connections in s..hours.
    assert HANDSHAKE_BUCKETS[0] <= 0.001 and HANDSHAKE_BUCKETS[-1] >= 5
    assert DURATION_BUCKETS[0] <= 1 and DURATION_BUCKETS[-1] >= 4 * 3600


def test_labels_bounded_to_configured_names() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    for i in range(200):
        t.refused(f"probe{i}", "v1", 404, client="x", application=f"app{i}", reason="no route")
        r = record(clock, None, api=f"evil{i}", version="x", application=f"m{i}", key_type=f"K{i}")
        t.opened(r)
        t.throttled(r, f"scope{i}", f"action{i}")
        r.close_code, r.closed_by = 900 + i, f"alien{i}"
        t.closed(r)
        t.backend_failure(f"evil{i}", "x", f"reason{i}")
    samples, _ = scrape(t)
    unknown = dict(api="-", version="-")
    assert series(samples, "wsgw_connections_total") == {
        L(**unknown, outcome="404"): 200,
        L(**unknown, outcome="upgraded"): 200,
    }
    assert series(samples, "wsgw_connections_active") == {
        L(**unknown, application="-", key_type="-"): 0
    }
    assert series(samples, "wsgw_throttled_total") == {
        L(**unknown, application="-", scope="-", action="-"): 200
    }
    assert series(samples, "wsgw_backend_failures_total") == {L(**unknown, reason="-"): 200}
    # 900..1099: below 1000 "other", the rest by number; the closer is bounded too.
    codes = series(samples, "wsgw_close_codes_total")
    assert codes[L(**unknown, code="other", by="-")] == 100
    assert codes[L(**unknown, code="1000", by="-")] == 1
    assert len(codes) == 101


def test_close_code_and_status_edges() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    for code in (999, 1000, 4999, 5000, 65535):
        r = record(clock, None)
        t.opened(r)
        r.close_code, r.closed_by = code, "backend"
        t.closed(r)
    t.refused("chat", "v1", 700, client="x", application="acme", reason="?")
    samples, _ = scrape(t)
    chat = dict(api="chat", version="v1")
    assert series(samples, "wsgw_close_codes_total") == {
        L(**chat, code="other", by="backend"): 3,
        L(**chat, code="1000", by="backend"): 1,
        L(**chat, code="4999", by="backend"): 1,
    }
    assert samples[("wsgw_connections_total", L(**chat, outcome="other"))] == 1


def test_set_labels_after_a_reload() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    before = record(clock, None, application="initech")
    t.opened(before)
    t.set_labels([("chat", "v1")], ["initech"])
    after = record(clock, None, application="initech")
    t.opened(after)
    samples, _ = scrape(t)
    assert series(samples, "wsgw_connections_active") == {
        L(api="chat", version="v1", application="-", key_type="PRODUCTION"): 1,
        L(api="chat", version="v1", application="initech", key_type="PRODUCTION"): 1,
    }
    # An open connection keeps the labels it got: its end is counted against them.
    t.closed(before)
    samples, _ = scrape(t)
    unlabelled = L(api="chat", version="v1", application="-", key_type="PRODUCTION")
    assert samples[("wsgw_connections_active", unlabelled)] == 0


def test_auth_none_application_is_a_label() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    t.opened(record(clock, None, application="anonymous"))
    samples, _ = scrape(t)
    assert series(samples, "wsgw_connections_active") == {
        L(api="chat", version="v1", application="anonymous", key_type="PRODUCTION"): 1
    }


def test_counters_as_attributes_or_callable() -> None:
    class Pair:
        c2b_frames, c2b_bytes, b2c_frames, b2c_bytes = 1, 2, 3, 4

    assert read_counters(Pair()) == (1, 2, 3, 4)
    assert read_counters(lambda: (5, 6, 7, 8)) == (5, 6, 7, 8)
    assert read_counters(None) == (0, 0, 0, 0)

    clock = Clock()
    t = make_telemetry(clock)
    t.opened(record(clock, Pair()))
    samples, _ = scrape(t)
    acme = dict(api="chat", version="v1", application="acme")
    assert samples[("wsgw_bytes_total", L(**acme, direction="backend_to_client"))] == 4


def test_extra_collectors_and_a_broken_one() -> None:
    t = make_telemetry()
    healthy = [1]

    def cluster() -> list[tuple[str, str, str, dict[str, str], float]]:
        return [
            ("wsgw_cluster_redis_errors_total", "counter", "Redis errors", {}, 3),
            ("wsgw_cluster_fallbacks_total", "counter", "fallbacks", {"failure": "open"}, 1),
            ("wsgw_cluster_healthy", "gauge", "Redis reachable", {}, healthy[0]),
        ]

    def broken() -> list[tuple[str, str, str, dict[str, str], float]]:
        raise RuntimeError("boom")

    t.add_collector(broken)
    t.add_collector(cluster)
    samples, types = scrape(t)
    assert types["wsgw_cluster_redis_errors"] == "counter"
    assert types["wsgw_cluster_healthy"] == "gauge"
    assert samples[("wsgw_cluster_redis_errors_total", L())] == 3
    assert samples[("wsgw_cluster_fallbacks_total", L(failure="open"))] == 1
    assert samples[("wsgw_cluster_healthy", L())] == 1
    healthy[0] = 0  # sampled at scrape time
    samples, _ = scrape(t)
    assert samples[("wsgw_cluster_healthy", L())] == 0
    assert "wsgw_connections_active" in types  # the broken collector cost nothing else


def test_content_type_is_prometheus_text() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_stats_are_the_same_numbers_per_api_and_application() -> None:
    clock = Clock()
    t = make_telemetry(clock)
    c1, c2 = Counters(), Counters()
    r1 = record(clock, c1)
    r2 = record(clock, c2, version="v2", application="acme", key_type="SANDBOX")
    t.opened(r1)
    t.opened(r2)
    t.refused("chat", "v1", 403, client="x", application="globex", reason="not subscribed")
    c1.add(c2b=(2, 20), b2c=(3, 30))
    c2.add(c2b=(1, 5))
    t.throttled(r1, "subscription", "drop", 2)
    t.backend_failure("chat", "v2", "bad_handshake")
    clock.now += 3
    r1.close_code, r1.closed_by = 1000, "client"
    t.closed(r1)

    stats = orjson.loads(orjson.dumps(t.stats()))  # JSON-able as served
    assert stats["connections_active"] == 1
    v1, v2 = stats["apis"]["chat:v1"], stats["apis"]["chat:v2"]
    assert v1["connections_active"] == 0 and v2["connections_active"] == 1
    assert v1["connections"] == {"upgraded": 1, "403": 1}
    assert v1["messages"] == {"client_to_backend": 2, "backend_to_client": 3}
    assert v1["bytes"] == {"client_to_backend": 20, "backend_to_client": 30}
    assert v1["throttled"] == {"subscription": {"drop": 2}}
    assert v1["close_codes"] == {"1000": {"client": 1}}
    assert v1["connection_duration_seconds"] == {"count": 1, "sum": 3.0}
    assert v2["backend_failures"] == {"bad_handshake": 1}
    assert v2["messages"] == {"client_to_backend": 1, "backend_to_client": 0}
    acme = stats["applications"]["acme"]
    assert acme["connections_active"] == 1
    assert acme["messages"] == {"client_to_backend": 3, "backend_to_client": 3}
    assert acme["bytes"] == {"client_to_backend": 25, "backend_to_client": 30}
    assert acme["throttled"] == {"subscription": {"drop": 2}}

    # And they agree with the exposition.
    samples, _ = scrape(t)
    for api_version, entry in (("v1", v1), ("v2", v2)):
        for d in DIRS:
            key = L(api="chat", version=api_version, application="acme", direction=d)
            assert samples[("wsgw_messages_total", key)] == entry["messages"][d]
            assert samples[("wsgw_bytes_total", key)] == entry["bytes"][d]
