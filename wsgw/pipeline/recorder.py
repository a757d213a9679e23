"""What happened on each connection: the plain state behind /metrics, /stats and the events.

The relay calls the Recorder once per handshake, once per connection end, and once per
throttling decision it sees; never per message. Per-message counts live in the codec
(FrameRelay.data_frames / data_bytes): a live connection's counts are read through its
record's `counters` callable when /metrics or /stats is read, and added to the closed
connections' totals when it ends. All state is plain ints, dicts and bucket arrays, read
by the exposition (wsgw/pipeline/metrics.py) and the /stats JSON (wsgw/pipeline/stats.py),
neither of which this module imports: the imports point one way, towards it.

Labels come only from configured names (APIs, versions, applications) and fixed sets
(wsgw/names.py, and the failure reasons below), so the number of series is bounded
whatever the clients send; anything else becomes "-".
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsgw.names import (
    ANONYMOUS,
    CLOSERS,
    CONNECTIONS_SCOPE,
    KEY_TYPES,
    LIMIT_SCOPES,
    REFUSE,
    THROTTLE_ACTIONS,
)
from wsgw.pipeline.events import EventLog, FileSink, RedisStreamSink, Sink, iso_utc

log = logging.getLogger("wsgw.telemetry")

UNKNOWN = "-"
KEY_TYPE_LABELS = frozenset(KEY_TYPES)
# The scope of a TooManyRequests that names no limit (its default in wsgw/errors.py).
SCOPE_LABELS = frozenset(LIMIT_SCOPES) | {CONNECTIONS_SCOPE}
ACTION_LABELS = frozenset(THROTTLE_ACTIONS)
CLOSER_LABELS = frozenset(CLOSERS)
FAILURE_REASONS = frozenset({"refused", "timeout", "bad_handshake", "protocol_error", "vanished"})
# The error answers of POST /oauth2/token; "blocked" is the 429 of the failure limit.
TOKEN_FAILURE_REASONS = ("invalid_request", "invalid_client", "unsupported_grant_type", "blocked")
# RFC 6455 §7.1.5: a connection that ended without a close frame has close code 1006.
NO_CLOSE_FRAME = 1006
THROTTLE_EVENT_INTERVAL_S = 1.0
MAX_REASON_CHARS = 200

# Both count tuples hold the client_to_backend fields, then the same backend_to_client ones
# (split them with by_direction()).
Counts = tuple[int, int, int, int]  # c2b_frames, c2b_bytes, b2c_frames, b2c_bytes
ZERO: Counts = (0, 0, 0, 0)
# Per direction: compressed payload bytes, the part of them the gateway inflated (to check
# a limit), and what that part inflated to.
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
        """(le, count of values ≤ le) per bucket, +Inf last: what Prometheus exposes."""
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


@dataclass(slots=True, eq=False)  # eq=False: a record is an identity (kept in a set)
class ConnectionRecord:
    """One upgraded connection, created by the relay at the 101."""

    api: str
    version: str
    application: str
    key_type: str
    client: str  # address
    started_wall: float  # time.time()
    started_mono: float  # the Recorder's clock (time.monotonic() by default)
    handshake_seconds: float
    close_code: int | None = None
    closed_by: str = UNKNOWN  # client | backend | gateway
    # A zero-arg callable returning Counts, or an object with c2b_frames, c2b_bytes,
    # b2c_frames, b2c_bytes attributes; read at scrape time and at the end.
    counters: Any = None
    # A zero-arg callable returning the permessage-deflate Inflation counts per direction.
    compression: Any = None
    # The Recorder's own bookkeeping.
    labels: tuple[str, str, str, str] | None = field(default=None, repr=False)
    ended: bool = field(default=False, repr=False)
    throttle_last: float | None = field(default=None, repr=False)
    throttle_pending: int = field(default=0, repr=False)
    throttle_pending_scope: str = field(default="", repr=False)
    throttle_pending_action: str = field(default="", repr=False)


def read_counters(counters: Any) -> Counts:
    """A record's `counters`, whichever of its two forms (or None: nothing relayed)."""
    if counters is None:
        return ZERO
    if callable(counters):
        c2b_f, c2b_b, b2c_f, b2c_b = counters()
        return c2b_f, c2b_b, b2c_f, b2c_b
    return counters.c2b_frames, counters.c2b_bytes, counters.b2c_frames, counters.b2c_bytes


def by_direction(counts: Sequence[int]) -> Iterator[tuple[str, Sequence[int]]]:
    """(direction, its fields) of a Counts or an Inflation, client_to_backend first."""
    half = len(counts) // 2
    yield DIRECTIONS[0], counts[:half]
    yield DIRECTIONS[1], counts[half:]


def close_code_label(code: int) -> str:
    return str(code) if 1000 <= code <= 4999 else "other"


class Recorder:
    """The counters, histograms and event sinks, and the calls the relay makes on them."""

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
            key_type = rec.key_type if rec.key_type in KEY_TYPE_LABELS else UNKNOWN
            labels = rec.labels = (api, version, self._app(rec.application), key_type)
        return labels

    # ------------------------------------------------------------------ events
    def _emit(self, kind: str, who: ConnectionRecord | dict[str, Any], **fields: Any) -> None:
        """One analytics event: its type and time, who it is about (a connection's record,
        or _who() of what a handshake knows), then `fields`. Events carry the names as
        given, not the bounded labels: they are not series."""
        events = self.events
        if events is None:
            return
        if isinstance(who, ConnectionRecord):
            who = _who(who.api, who.version, who.application, who.client, who.key_type)
        events.emit({"type": kind, "ts": iso_utc(self.wall_clock()), **who, **fields})

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
        who = _who(api, version, application or UNKNOWN, client)
        self._emit("refusal", who, status=status, reason=reason[:MAX_REASON_CHARS])

    def opened(self, rec: ConnectionRecord) -> None:
        api, version, app, key_type = labels = self._labels(rec)
        self.active[labels] += 1
        self.connections[(api, version, "upgraded")] += 1
        _observe(self.handshake, (api, version), HANDSHAKE_BUCKETS, rec.handshake_seconds)
        self.live.add(rec)

    def throttled_handshake(
        self, api: str, version: str, application: str | None, scope: str, *, client: str = "-"
    ) -> None:
        """A handshake refused by a max_connections cap (the relay also calls refused())."""
        api_l, version_l = self._api(api, version)
        scope_l = scope if scope in SCOPE_LABELS else UNKNOWN
        self.throttled_counts[(api_l, version_l, self._app(application), scope_l, REFUSE)] += 1
        # key_type "-": this call is not given the grant's.
        who = _who(api, version, application or UNKNOWN, client, UNKNOWN)
        self._emit("throttle", who, scope=scope, action=REFUSE, count=1)

    def backend_failure(self, api: str, version: str, reason: str) -> None:
        api_l, version_l = self._api(api, version)
        reason_l = reason if reason in FAILURE_REASONS else UNKNOWN
        self.backend_failures[(api_l, version_l, reason_l)] += 1

    def token_failure(self, reason: str) -> None:
        """An error answer of POST /oauth2/token, by its `error` or "blocked" (429)."""
        key = (reason if reason in TOKEN_FAILURE_REASONS else UNKNOWN,)
        self.token_failures[key] = self.token_failures.get(key, 0) + 1

    # ------------------------------------------------------------- connection
    def throttled(self, rec: ConnectionRecord, scope: str, action: str, count: int = 1) -> None:
        """`count` throttling decisions on one connection (e.g. messages dropped since the
        relay last reported). The event is rate-limited to one per connection per
        THROTTLE_EVENT_INTERVAL_S; the suppressed decisions are counted in the next one."""
        api, version, app, _ = self._labels(rec)
        scope_l = scope if scope in SCOPE_LABELS else UNKNOWN
        action_l = action if action in ACTION_LABELS else UNKNOWN
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
        self._emit("throttle", rec, scope=scope, action=action, count=count + pending)

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
        by = rec.closed_by if rec.closed_by in CLOSER_LABELS else UNKNOWN
        self.close_codes[(api, version, close_code_label(code), by)] += 1
        duration = max(0.0, self.clock() - rec.started_mono)
        _observe(self.duration, (api, version), DURATION_BUCKETS, duration)
        if self.events is None:
            return
        if rec.throttle_pending:
            # Decisions suppressed by the rate limit would otherwise never be reported.
            pending, rec.throttle_pending = rec.throttle_pending, 0
            scope, action = rec.throttle_pending_scope, rec.throttle_pending_action
            self._emit("throttle", rec, scope=scope, action=action, count=pending)
        self._emit(
            "connection",
            rec,
            start=iso_utc(rec.started_wall),
            duration_s=round(duration, 3),
            messages_in=counts[0],
            bytes_in=counts[1],
            messages_out=counts[2],
            bytes_out=counts[3],
            close_code=code,
            closed_by=rec.closed_by,
        )

    def message_refused(self, rec: ConnectionRecord, from_client: bool, reason: str) -> None:
        """The codec refused a message for one of MESSAGE_LIMITS (other reasons: no-op)."""
        limit = MESSAGE_LIMITS.get(reason)
        if limit is not None:
            api, version, _, _ = self._labels(rec)
            self.message_limits[(api, version, DIRECTIONS[0 if from_client else 1], limit)] += 1

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

    # ----------------------------------------------------------------- reading
    def traffic(self) -> Totals:
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


def _add(totals: Totals, key: tuple[str, str, str], counts: tuple[int, ...]) -> None:
    into = totals.get(key)
    if into is None:
        into = totals[key] = [0] * len(counts)
    for i, n in enumerate(counts):
        into[i] += n


def _observe(
    histograms: dict[tuple[str, str], Histogram],
    key: tuple[str, str],
    bounds: tuple[float, ...],
    value: float,
) -> None:
    histogram = histograms.get(key)
    if histogram is None:
        histogram = histograms[key] = Histogram(bounds)
    histogram.observe(value)


def _who(
    api: str, version: str, application: str, client: str, key_type: str | None = None
) -> dict[str, Any]:
    """The identity fields of an event, in the order consumers read them. A refusal has no
    key_type field at all (the token may be what was refused)."""
    who: dict[str, Any] = {"api": api, "version": version, "application": application}
    if key_type is not None:
        who["key_type"] = key_type
    who["client"] = client
    return who
