"""What happened on each connection, for /metrics, /stats and the analytics events.

The relay calls this module once per handshake, once per connection end, and once per
throttling decision it sees; never per message. Per-message counts live in the codec
(FrameRelay.data_frames / data_bytes): a live connection's counts are read through its
record's `counters` callable when /metrics or /stats is read, and added to the closed
connections' totals when it ends. All state is plain ints and dicts; the Prometheus
families are built at scrape time (wsgw/pipeline/metrics.py).

Labels come only from configured names (APIs, versions, applications) and fixed sets
(key types, scopes, actions, closers, failure reasons), so the number of series is
bounded whatever the clients send; anything else becomes "-".
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wsgw.pipeline.events import EventLog, FileSink, RedisStreamSink, Sink, iso_utc
from wsgw.pipeline.metrics import (
    CONTENT_TYPE,
    DURATION_BUCKETS,
    HANDSHAKE_BUCKETS,
    ExtraCollector,
    Histogram,
    MetricsExporter,
)

__all__ = ["CONTENT_TYPE", "ConnectionRecord", "Telemetry"]

log = logging.getLogger("wsgw.telemetry")

UNKNOWN = "-"
KEY_TYPES = frozenset({"PRODUCTION", "SANDBOX", "NONE"})
SCOPES = frozenset({"subscription", "application", "api", "connections"})
ACTIONS = frozenset({"drop", "close", "shape", "refuse"})
CLOSERS = frozenset({"client", "backend", "gateway"})
FAILURE_REASONS = frozenset({"refused", "timeout", "bad_handshake", "protocol_error", "vanished"})
# The error answers of POST /oauth2/token; "blocked" is the 429 of the failure limit.
TOKEN_FAILURE_REASONS = ("invalid_request", "invalid_client", "unsupported_grant_type", "blocked")
# The registry's grant for `auth: none` APIs; always a known application.
ANONYMOUS = "anonymous"
# RFC 6455 §7.1.5: a connection that ended without a close frame has close code 1006.
NO_CLOSE_FRAME = 1006
THROTTLE_EVENT_INTERVAL_S = 1.0
MAX_REASON_CHARS = 200

Counts = tuple[int, int, int, int]  # c2b_frames, c2b_bytes, b2c_frames, b2c_bytes
ZERO: Counts = (0, 0, 0, 0)
# Per direction (c2b, then b2c): compressed payload bytes, the part of them the gateway
# inflated (to check a limit), and what that part inflated to.
Inflation = tuple[int, int, int, int, int, int]
NO_INFLATION: Inflation = (0, 0, 0, 0, 0, 0)
Totals = dict[tuple[str, str, str], list[int]]  # per (api, version, application)
DIRECTIONS = ("client_to_backend", "backend_to_client")
# The codec's reasons for refusing a message that are limits (or a broken compression
# agreement), by metric label; other protocol errors show in the close codes only.
MESSAGE_LIMITS = {
    "message too big": "message_size",
    "message too big once inflated": "inflated_size",
    "too many control frames": "control_rate",
    "invalid compressed data": "invalid_compressed",
    "compressed message refers to an earlier message (no context takeover agreed)": (
        "context_takeover"
    ),
}


@dataclass(slots=True, eq=False)  # eq=False: a record is an identity (kept in a set)
class ConnectionRecord:
    """One upgraded connection, created by the relay at the 101."""

    api: str
    version: str
    application: str
    key_type: str
    client: str  # address
    started_wall: float  # time.time()
    started_mono: float  # the Telemetry clock (time.monotonic() by default)
    handshake_seconds: float
    close_code: int | None = None
    closed_by: str = "-"  # client | backend | gateway
    # A zero-arg callable returning Counts, or an object with c2b_frames, c2b_bytes,
    # b2c_frames, b2c_bytes attributes; read at scrape time and at the end.
    counters: Any = None
    # A zero-arg callable returning the permessage-deflate Inflation counts per direction.
    compression: Any = None
    # Telemetry's own bookkeeping.
    labels: tuple[str, str, str, str] | None = field(default=None, repr=False)
    ended: bool = field(default=False, repr=False)
    throttle_last: float | None = field(default=None, repr=False)
    throttle_pending: int = field(default=0, repr=False)
    throttle_pending_scope: str = field(default="", repr=False)
    throttle_pending_action: str = field(default="", repr=False)


def read_counters(counters: Any) -> Counts:
    if counters is None:
        return ZERO
    if callable(counters):
        c2b_f, c2b_b, b2c_f, b2c_b = counters()
        return c2b_f, c2b_b, b2c_f, b2c_b
    return counters.c2b_frames, counters.c2b_bytes, counters.b2c_frames, counters.b2c_bytes


def close_code_label(code: int) -> str:
    return str(code) if 1000 <= code <= 4999 else "other"


class Telemetry:
    def __init__(
        self,
        *,
        events_file: str | None = None,
        redis_url: str | None = None,
        redis_stream: str | None = None,
        stream_maxlen: int = 100_000,
        buffer_events: int = 10_000,
        api_labels: Iterable[tuple[str, str]] = (),
        application_labels: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self._apis: frozenset[tuple[str, str]] = frozenset()
        self._apps: frozenset[str] = frozenset()
        self.set_labels(api_labels, application_labels)

        # The metrics' state; keys are label tuples in the metric's label order.
        self.active: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.connections: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.closed_traffic: Totals = {}
        self.closed_compression: Totals = {}
        self.message_limits: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.live: set[ConnectionRecord] = set()
        self.throttled_counts: defaultdict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self.close_codes: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.backend_failures: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.handshake: dict[tuple[str, str], Histogram] = {}
        self.duration: dict[tuple[str, str], Histogram] = {}
        self.collectors: list[ExtraCollector] = []
        # Every reason from 0, so that rate() sees the first failure.
        self.token_failures: dict[tuple[str], int] = {(r,): 0 for r in TOKEN_FAILURE_REASONS}

        sinks: list[Sink] = []
        if events_file:
            sinks.append(FileSink(events_file, buffer_events))
        if redis_url and redis_stream:
            sinks.append(RedisStreamSink(redis_url, redis_stream, stream_maxlen, buffer_events))
        self.events: EventLog | None = EventLog(sinks) if sinks else None
        self._exporter = MetricsExporter(self)

    # ------------------------------------------------------------------ labels
    def set_labels(
        self, api_labels: Iterable[tuple[str, str]], application_labels: Iterable[str]
    ) -> None:
        """The names metrics may carry; call again when the config or subscriptions reload
        (connections already open keep the labels they got)."""
        self._apis = frozenset(api_labels)
        self._apps = frozenset(application_labels) | {ANONYMOUS}

    def _api(self, api: str, version: str) -> tuple[str, str]:
        return (api, version) if (api, version) in self._apis else (UNKNOWN, UNKNOWN)

    def _app(self, application: str | None) -> str:
        return application if application in self._apps else UNKNOWN

    def _labels(self, rec: ConnectionRecord) -> tuple[str, str, str, str]:
        labels = rec.labels
        if labels is None:
            api, version = self._api(rec.api, rec.version)
            key_type = rec.key_type if rec.key_type in KEY_TYPES else UNKNOWN
            labels = rec.labels = (api, version, self._app(rec.application), key_type)
        return labels

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.events is not None:
            await self.events.start()

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Flush the event sinks, bounded by timeout_s."""
        if self.events is not None:
            await self.events.stop(timeout_s)

    def sinks(self) -> list[Sink]:
        return self.events.sinks if self.events is not None else []

    # --------------------------------------------------------------- handshake
    def refused(
        self,
        api: str,
        version: str,
        status: int,
        *,
        client: str,
        application: str | None,
        reason: str,
    ) -> None:
        api_l, version_l = self._api(api, version)
        outcome = str(status) if 100 <= status <= 599 else "other"
        self.connections[(api_l, version_l, outcome)] += 1
        if self.events is not None:
            self.events.emit(
                {
                    "type": "refusal",
                    "ts": iso_utc(self.wall_clock()),
                    "api": api,
                    "version": version,
                    "application": application or UNKNOWN,
                    "client": client,
                    "status": status,
                    "reason": reason[:MAX_REASON_CHARS],
                }
            )

    def opened(self, rec: ConnectionRecord) -> None:
        api, version, app, key_type = labels = self._labels(rec)
        self.active[labels] += 1
        self.connections[(api, version, "upgraded")] += 1
        histogram = self.handshake.get((api, version))
        if histogram is None:
            histogram = self.handshake[(api, version)] = Histogram(HANDSHAKE_BUCKETS)
        histogram.observe(rec.handshake_seconds)
        self.live.add(rec)

    def throttled_handshake(
        self, api: str, version: str, application: str | None, scope: str, *, client: str = "-"
    ) -> None:
        """A handshake refused by a max_connections cap (the relay also calls refused())."""
        api_l, version_l = self._api(api, version)
        scope_l = scope if scope in SCOPES else UNKNOWN
        self.throttled_counts[(api_l, version_l, self._app(application), scope_l, "refuse")] += 1
        if self.events is not None:
            self.events.emit(
                {
                    "type": "throttle",
                    "ts": iso_utc(self.wall_clock()),
                    "api": api,
                    "version": version,
                    "application": application or UNKNOWN,
                    "key_type": UNKNOWN,
                    "client": client,
                    "scope": scope,
                    "action": "refuse",
                    "count": 1,
                }
            )

    def backend_failure(self, api: str, version: str, reason: str) -> None:
        api_l, version_l = self._api(api, version)
        reason_l = reason if reason in FAILURE_REASONS else UNKNOWN
        self.backend_failures[(api_l, version_l, reason_l)] += 1

    # ------------------------------------------------------------- connection
    def throttled(self, rec: ConnectionRecord, scope: str, action: str, count: int = 1) -> None:
        """`count` throttling decisions on one connection (e.g. messages dropped since the
        relay last reported). The event is rate-limited to one per connection per
        THROTTLE_EVENT_INTERVAL_S; the suppressed decisions are counted in the next one."""
        api, version, app, _ = self._labels(rec)
        scope_l = scope if scope in SCOPES else UNKNOWN
        action_l = action if action in ACTIONS else UNKNOWN
        self.throttled_counts[(api, version, app, scope_l, action_l)] += count
        if self.events is None:
            return
        now = self.clock()
        last = rec.throttle_last
        if last is not None and now - last < THROTTLE_EVENT_INTERVAL_S:
            rec.throttle_pending += count
            rec.throttle_pending_scope = scope
            rec.throttle_pending_action = action
            return
        rec.throttle_last = now
        pending, rec.throttle_pending = rec.throttle_pending, 0
        self._throttle_event(rec, scope, action, count + pending)

    def _throttle_event(self, rec: ConnectionRecord, scope: str, action: str, count: int) -> None:
        assert self.events is not None
        self.events.emit(
            {
                "type": "throttle",
                "ts": iso_utc(self.wall_clock()),
                "api": rec.api,
                "version": rec.version,
                "application": rec.application,
                "key_type": rec.key_type,
                "client": rec.client,
                "scope": scope,
                "action": action,
                "count": count,
            }
        )

    def closed(self, rec: ConnectionRecord) -> None:
        if rec.ended:
            return  # counted once, whichever path ended the connection first
        rec.ended = True
        labels = self._labels(rec)
        api, version, app, _ = labels
        if rec in self.live:
            self.live.discard(rec)
            self.active[labels] -= 1
        counts = self._counts(rec)
        _add(self.closed_traffic, (api, version, app), counts)
        _add(self.closed_compression, (api, version, app), self._compression(rec))
        code = rec.close_code if rec.close_code is not None else NO_CLOSE_FRAME
        by = rec.closed_by if rec.closed_by in CLOSERS else UNKNOWN
        self.close_codes[(api, version, close_code_label(code), by)] += 1
        duration = max(0.0, self.clock() - rec.started_mono)
        histogram = self.duration.get((api, version))
        if histogram is None:
            histogram = self.duration[(api, version)] = Histogram(DURATION_BUCKETS)
        histogram.observe(duration)
        events = self.events
        if events is None:
            return
        if rec.throttle_pending:
            # Decisions suppressed by the rate limit would otherwise never be reported.
            pending, rec.throttle_pending = rec.throttle_pending, 0
            self._throttle_event(
                rec, rec.throttle_pending_scope, rec.throttle_pending_action, pending
            )
        events.emit(
            {
                "type": "connection",
                "ts": iso_utc(self.wall_clock()),
                "api": rec.api,
                "version": rec.version,
                "application": rec.application,
                "key_type": rec.key_type,
                "client": rec.client,
                "start": iso_utc(rec.started_wall),
                "duration_s": round(duration, 3),
                "messages_in": counts[0],
                "bytes_in": counts[1],
                "messages_out": counts[2],
                "bytes_out": counts[3],
                "close_code": code,
                "closed_by": rec.closed_by,
            }
        )

    def _counts(self, rec: ConnectionRecord) -> Counts:
        try:
            return read_counters(rec.counters)
        except Exception:  # a broken counters object must not break a scrape or an end
            log.exception("connection counters unreadable")
            return ZERO

    def _compression(self, rec: ConnectionRecord) -> Inflation:
        if rec.compression is None:
            return NO_INFLATION
        try:
            c2b_z, c2b_in, c2b_out, b2c_z, b2c_in, b2c_out = rec.compression()
        except Exception:
            log.exception("connection compression counters unreadable")
            return NO_INFLATION
        return c2b_z, c2b_in, c2b_out, b2c_z, b2c_in, b2c_out

    def message_refused(self, rec: ConnectionRecord, from_client: bool, reason: str) -> None:
        """The codec refused a message for one of MESSAGE_LIMITS (other reasons: no-op)."""
        limit = MESSAGE_LIMITS.get(reason)
        if limit is not None:
            api, version, _, _ = self._labels(rec)
            self.message_limits[(api, version, DIRECTIONS[0 if from_client else 1], limit)] += 1

    # ----------------------------------------------------------------- reading
    def traffic(self) -> dict[tuple[str, str, str], list[int]]:
        """Messages and bytes per (api, version, application): the closed connections'
        totals plus the live connections' counters, read now."""
        return self._with_live(self.closed_traffic, self._counts)

    def compression(self) -> Totals:
        """permessage-deflate bytes per (api, version, application), both directions: the
        Inflation counts of closed and live connections."""
        return self._with_live(self.closed_compression, self._compression)

    def _with_live(
        self, closed: Totals, read: Callable[[ConnectionRecord], tuple[int, ...]]
    ) -> Totals:
        out = {key: list(values) for key, values in closed.items()}
        for rec in self.live:
            api, version, app, _ = self._labels(rec)
            _add(out, (api, version, app), read(rec))
        return out

    def add_collector(self, fn: ExtraCollector) -> None:
        """fn() -> iterable of (name, type, help, labels, value), sampled at each scrape."""
        self.collectors.append(fn)

    def metrics_text(self) -> bytes:
        return self._exporter.render()

    def stats(self) -> dict[str, Any]:
        """The same numbers as /metrics, per API and per application, JSON-able."""
        apis: dict[str, dict[str, Any]] = {}
        apps: dict[str, dict[str, Any]] = {}

        def api_entry(api: str, version: str) -> dict[str, Any]:
            name = UNKNOWN if api == UNKNOWN else f"{api}:{version}"
            entry = apis.get(name)
            if entry is None:
                entry = apis[name] = {
                    "connections_active": 0,
                    "connections": {},
                    "messages": {"client_to_backend": 0, "backend_to_client": 0},
                    "bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "compressed_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "inflate_input_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "inflate_output_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "message_limit_closes": {},
                    "throttled": {},
                    "close_codes": {},
                    "backend_failures": {},
                    "handshake_seconds": {"count": 0, "sum": 0.0},
                    "connection_duration_seconds": {"count": 0, "sum": 0.0},
                }
            return entry

        def app_entry(app: str) -> dict[str, Any]:
            entry = apps.get(app)
            if entry is None:
                entry = apps[app] = {
                    "connections_active": 0,
                    "messages": {"client_to_backend": 0, "backend_to_client": 0},
                    "bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "compressed_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "inflate_input_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "inflate_output_bytes": {"client_to_backend": 0, "backend_to_client": 0},
                    "throttled": {},
                }
            return entry

        for (api, version, app, _), n in self.active.items():
            api_entry(api, version)["connections_active"] += n
            app_entry(app)["connections_active"] += n
        for (api, version, outcome), n in self.connections.items():
            _bump(api_entry(api, version)["connections"], outcome, n)
        for (api, version, app), (c2b_f, c2b_b, b2c_f, b2c_b) in self.traffic().items():
            for entry in (api_entry(api, version), app_entry(app)):
                _bump(entry["messages"], "client_to_backend", c2b_f)
                _bump(entry["messages"], "backend_to_client", b2c_f)
                _bump(entry["bytes"], "client_to_backend", c2b_b)
                _bump(entry["bytes"], "backend_to_client", b2c_b)
        for (api, version, app), counts in self.compression().items():
            for entry in (api_entry(api, version), app_entry(app)):
                for i, direction in enumerate(DIRECTIONS):
                    z, inflate_in, inflate_out = counts[3 * i : 3 * i + 3]
                    _bump(entry["compressed_bytes"], direction, z)
                    _bump(entry["inflate_input_bytes"], direction, inflate_in)
                    _bump(entry["inflate_output_bytes"], direction, inflate_out)
        for (api, version, direction, limit), n in self.message_limits.items():
            limits = api_entry(api, version)["message_limit_closes"].setdefault(direction, {})
            _bump(limits, limit, n)
        for (api, version, app, scope, action), n in self.throttled_counts.items():
            for entry in (api_entry(api, version), app_entry(app)):
                _bump(entry["throttled"].setdefault(scope, {}), action, n)
        for (api, version, code, by), n in self.close_codes.items():
            _bump(api_entry(api, version)["close_codes"].setdefault(code, {}), by, n)
        for (api, version, reason), n in self.backend_failures.items():
            _bump(api_entry(api, version)["backend_failures"], reason, n)
        for histograms, field_name in (
            (self.handshake, "handshake_seconds"),
            (self.duration, "connection_duration_seconds"),
        ):
            for (api, version), h in histograms.items():
                api_entry(api, version)[field_name] = {"count": h.count, "sum": h.sum}
        return {
            "connections_active": sum(self.active.values()),
            "apis": apis,
            "applications": apps,
            "events": {
                sink.name: {
                    "written": sink.written,
                    "buffered": len(sink.buffer),
                    "dropped": sink.dropped,
                    "failed": sink.failed,
                }
                for sink in self.sinks()
            },
        }

    def token_failure(self, reason: str) -> None:
        """An error answer of POST /oauth2/token, by its `error` or "blocked" (429)."""
        key = (reason if reason in TOKEN_FAILURE_REASONS else UNKNOWN,)
        self.token_failures[key] = self.token_failures.get(key, 0) + 1


def _add(totals: Totals, key: tuple[str, str, str], counts: tuple[int, ...]) -> None:
    into = totals.get(key)
    if into is None:
        into = totals[key] = [0] * len(counts)
    for i, n in enumerate(counts):
        into[i] += n


def _bump(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n
