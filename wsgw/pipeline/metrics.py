"""Prometheus exposition of the recorder's state, built at scrape time.

The recorder keeps plain ints, dicts and bucket arrays (wsgw/pipeline/recorder.py); this
module turns them into metric families only when /metrics is scraped, through a custom
collector in a registry of our own (the global registry would also export whatever any
imported library registered). Nothing here runs per message or per connection event.

HANDSHAKE_BUCKETS, DURATION_BUCKETS and Histogram are the recorder's, re-exported: they
are what the exposition's histograms are made of.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from wsgw.pipeline.recorder import (
    DURATION_BUCKETS,
    HANDSHAKE_BUCKETS,
    ExtraCollector,
    Histogram,
    Recorder,
    Totals,
    by_direction,
)

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "HANDSHAKE_BUCKETS",
    "Histogram",
    "MetricsExporter",
    "TelemetryCollector",
]

log = logging.getLogger("wsgw.metrics")

# generate_latest() writes the classic text format (names escaped to underscores), which
# every Prometheus version reads; say so rather than prometheus_client's newest default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The label names of the per-direction traffic families.
TRAFFIC_LABELS = ("api", "version", "application", "direction")


class TelemetryCollector(Collector):
    """Reads a Recorder's plain state and yields metric families, on each scrape."""

    def __init__(self, recorder: Recorder) -> None:
        self.t = recorder

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

        yield from _per_direction(
            t.traffic(),
            CounterMetricFamily(
                "wsgw_messages_total",
                "Data frames relayed (text, binary, continuation), closed and live connections",
                labels=TRAFFIC_LABELS,
            ),
            CounterMetricFamily(
                "wsgw_bytes_total",
                "Payload bytes of the data frames relayed, closed and live connections",
                labels=TRAFFIC_LABELS,
            ),
        )
        yield from _per_direction(
            t.compression(),
            CounterMetricFamily(
                "wsgw_compressed_bytes_total",
                "Payload bytes of permessage-deflate messages as relayed (on the wire)",
                labels=TRAFFIC_LABELS,
            ),
            CounterMetricFamily(
                "wsgw_inflate_input_bytes_total",
                "Of those, the bytes the gateway inflated: messages that could exceed a size "
                "limit, or checked for context takeover after a drop",
                labels=TRAFFIC_LABELS,
            ),
            CounterMetricFamily(
                "wsgw_inflate_output_bytes_total",
                "What those bytes inflated to (measured, never kept)",
                labels=TRAFFIC_LABELS,
            ),
        )
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


def _per_direction(totals: Totals, *families: CounterMetricFamily) -> tuple[Metric, ...]:
    """Fill one family per field of the totals' per-direction counts (see by_direction)."""
    for (api, version, app), counts in totals.items():
        for direction, values in by_direction(counts):
            for family, n in zip(families, values, strict=True):
                family.add_metric([api, version, app, direction], n)
    return families


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

    def __init__(self, recorder: Recorder) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TelemetryCollector(recorder))

    def render(self) -> bytes:
        return generate_latest(self.registry)
