"""Prometheus exposition of the gateway's telemetry, built at scrape time.

The telemetry keeps plain ints, dicts and bucket arrays (wsgw/pipeline/telemetry.py); this
module turns them into metric families only when /metrics is scraped, through a custom
collector in a registry of our own (the global registry would also export whatever any
imported library registered). Nothing here runs per message or per connection event.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from wsgw.pipeline.telemetry import Telemetry

log = logging.getLogger("wsgw.metrics")

# generate_latest() writes the classic text format (names escaped to underscores), which
# every Prometheus version reads; say so rather than prometheus_client's newest default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A WebSocket handshake is one TCP connect plus one HTTP round trip to the backend: a
# millisecond on loopback, seconds when the backend is struggling (the timeout is ~10 s).
HANDSHAKE_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Connections live from a second (a probe) to hours or days (a dashboard left open).
DURATION_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    43200.0,
    86400.0,
)

# (name, type, help, labels, value) sampled at scrape time from other modules.
ExtraSample = tuple[str, str, str, dict[str, str], float]
ExtraCollector = Callable[[], Iterable[ExtraSample]]


class Histogram:
    """A fixed-bucket histogram as a plain list of ints: observe() is a bisect and an add."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((_bound(bound), total))
        out.append(("+Inf", self.count))
        return out


def _bound(value: float) -> str:
    # The "le" label as Prometheus clients write it: 0.005, 1.0, 10.0.
    return repr(float(value))


class TelemetryCollector(Collector):
    """Reads a Telemetry's plain state and yields metric families, on each scrape."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self.t
        g = GaugeMetricFamily(
            "wsgw_connections_active",
            "WebSocket connections open now (upgraded, not yet ended)",
            labels=["api", "version", "application", "key_type"],
        )
        for key, n in t.active.items():
            g.add_metric(key, n)
        yield g

        yield _counter(
            "wsgw_connections_total",
            "WebSocket handshakes by outcome: upgraded, or the HTTP status of the refusal",
            ["api", "version", "outcome"],
            t.connections.items(),
        )

        messages = CounterMetricFamily(
            "wsgw_messages_total",
            "Data frames relayed (text, binary, continuation), closed and live connections",
            labels=["api", "version", "application", "direction"],
        )
        octets = CounterMetricFamily(
            "wsgw_bytes_total",
            "Payload bytes of the data frames relayed, closed and live connections",
            labels=["api", "version", "application", "direction"],
        )
        for (api, version, app), (c2b_f, c2b_b, b2c_f, b2c_b) in t.traffic().items():
            messages.add_metric([api, version, app, "client_to_backend"], c2b_f)
            messages.add_metric([api, version, app, "backend_to_client"], b2c_f)
            octets.add_metric([api, version, app, "client_to_backend"], c2b_b)
            octets.add_metric([api, version, app, "backend_to_client"], b2c_b)
        yield messages
        yield octets

        labels = ["api", "version", "application", "direction"]
        families = (
            CounterMetricFamily(
                "wsgw_compressed_bytes_total",
                "Payload bytes of permessage-deflate messages as relayed (on the wire)",
                labels=labels,
            ),
            CounterMetricFamily(
                "wsgw_inflate_input_bytes_total",
                "Of those, the bytes the gateway inflated: messages that could exceed a size "
                "limit, or checked for context takeover after a drop",
                labels=labels,
            ),
            CounterMetricFamily(
                "wsgw_inflate_output_bytes_total",
                "What those bytes inflated to (measured, never kept)",
                labels=labels,
            ),
        )
        for (api, version, app), counts in t.compression().items():
            for i, direction in enumerate(("client_to_backend", "backend_to_client")):
                for family, n in zip(families, counts[3 * i : 3 * i + 3], strict=True):
                    family.add_metric([api, version, app, direction], n)
        yield from families
        yield _counter(
            "wsgw_message_limit_closes_total",
            "Connections closed for a message over a limit, by direction and limit: "
            "message_size (wire), inflated_size, control_rate, invalid_compressed, "
            "context_takeover (a peer broke the no-context-takeover agreement)",
            ["api", "version", "direction", "limit"],
            t.message_limits.items(),
        )

        yield _counter(
            "wsgw_throttled_total",
            "Throttling decisions: messages dropped, connections closed, reads paused "
            "(shape) or handshakes refused",
            ["api", "version", "application", "scope", "action"],
            t.throttled_counts.items(),
        )
        yield _counter(
            "wsgw_close_codes_total",
            "Ended connections by close code and by who closed (client, backend, gateway)",
            ["api", "version", "code", "by"],
            t.close_codes.items(),
        )
        yield _histogram(
            "wsgw_handshake_seconds",
            "Time from the client's upgrade request to the 101 answer (backend included)",
            t.handshake,
        )
        yield _histogram(
            "wsgw_connection_duration_seconds",
            "Lifetime of ended WebSocket connections, from the upgrade to the end",
            t.duration,
        )
        yield _counter(
            "wsgw_backend_failures_total",
            "Backend connection failures: refused, timeout, bad_handshake, protocol_error, "
            "vanished",
            ["api", "version", "reason"],
            t.backend_failures.items(),
        )

        dropped = CounterMetricFamily(
            "wsgw_events_dropped_total",
            "Analytics events dropped because the sink's buffer was full",
            labels=["sink"],
        )
        failed = CounterMetricFamily(
            "wsgw_events_failed_total",
            "Analytics sink writes that failed (the events are retried later)",
            labels=["sink"],
        )
        for sink in t.sinks():
            dropped.add_metric([sink.name], sink.dropped)
            failed.add_metric([sink.name], sink.failed)
        yield dropped
        yield failed

        yield _counter(
            "wsgw_token_failures_total",
            "POST /oauth2/token error answers by reason: invalid_request (400, 405), "
            "invalid_client (401), unsupported_grant_type (400), blocked (429: too many "
            "failed client authentications from the address or for the client id)",
            ["reason"],
            t.token_failures.items(),
        )

        yield from _extra_families(t.collectors)


def _counter(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[Sequence[str], int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in values:
        family.add_metric(key, n)
    return family


def _histogram(
    name: str, doc: str, histograms: dict[tuple[str, str], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["api", "version"])
    for key, h in histograms.items():
        family.add_metric(list(key), h.cumulative(), h.sum)
    return family


def _extra_families(collectors: list[ExtraCollector]) -> Iterator[Metric]:
    """Samples from other modules (e.g. the cluster limits' Redis health), grouped by name.
    A collector that raises loses its samples for this scrape, never the whole scrape."""
    families: dict[str, Metric] = {}
    for fn in collectors:
        try:
            samples = list(fn())
        except Exception:
            log.exception("metrics collector %r failed", fn)
            continue
        for name, typ, doc, labels, value in samples:
            base = name.removesuffix("_total") if typ == "counter" else name
            family = families.get(base)
            if family is None:
                family = families[base] = Metric(base, doc, typ)
            sample_name = base + "_total" if typ == "counter" else base
            family.add_sample(sample_name, {k: str(v) for k, v in labels.items()}, float(value))
    yield from families.values()


class MetricsExporter:
    """A private registry holding one TelemetryCollector; render() is the /metrics body."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TelemetryCollector(telemetry))

    def render(self) -> bytes:
        return generate_latest(self.registry)
