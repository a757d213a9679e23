"""The /stats JSON: the recorder's numbers regrouped per API and per application.

/metrics serves the same numbers as series for Prometheus; this is the view for a person
or a script without one. It is built on each request from the recorder's state
(wsgw/pipeline/recorder.py), never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wsgw.pipeline.recorder import DIRECTIONS, UNKNOWN, Recorder, by_direction

Entry = dict[str, Any]

# The per-direction fields of Counts and of Inflation, in their order (see by_direction).
TRAFFIC_FIELDS = ("messages", "bytes")
COMPRESSION_FIELDS = ("compressed_bytes", "inflate_input_bytes", "inflate_output_bytes")


def stats(recorder: Recorder) -> dict[str, Any]:
    """The same numbers as /metrics, per API ("name:version", or "-" for the unknown) and
    per application, JSON-able."""
    r = recorder
    apis: dict[str, Entry] = {}
    apps: dict[str, Entry] = {}

    def api_entry(api: str, version: str) -> Entry:
        name = UNKNOWN if api == UNKNOWN else f"{api}:{version}"
        entry = apis.get(name)
        if entry is None:
            entry = apis[name] = {
                "connections_active": 0,
                "connections": {},
                **_traffic_fields(),
                "message_limit_closes": {},
                "throttled": {},
                "close_codes": {},
                "backend_failures": {},
                "handshake_seconds": {"count": 0, "sum": 0.0},
                "connection_duration_seconds": {"count": 0, "sum": 0.0},
            }
        return entry

    def app_entry(app: str) -> Entry:
        entry = apps.get(app)
        if entry is None:
            entry = apps[app] = {"connections_active": 0, **_traffic_fields(), "throttled": {}}
        return entry

    for (api, version, app, _), n in r.active.items():
        api_entry(api, version)["connections_active"] += n
        app_entry(app)["connections_active"] += n
    for (api, version, outcome), n in r.connections.items():
        _bump(api_entry(api, version)["connections"], outcome, n)
    for totals, fields in ((r.traffic(), TRAFFIC_FIELDS), (r.compression(), COMPRESSION_FIELDS)):
        for (api, version, app), counts in totals.items():
            for entry in (api_entry(api, version), app_entry(app)):
                _add_per_direction(entry, fields, counts)
    for (api, version, direction, limit), n in r.message_limits.items():
        limits = api_entry(api, version)["message_limit_closes"].setdefault(direction, {})
        _bump(limits, limit, n)
    for (api, version, app, scope, action), n in r.throttled_counts.items():
        for entry in (api_entry(api, version), app_entry(app)):
            _bump(entry["throttled"].setdefault(scope, {}), action, n)
    for (api, version, code, by), n in r.close_codes.items():
        _bump(api_entry(api, version)["close_codes"].setdefault(code, {}), by, n)
    for (api, version, reason), n in r.backend_failures.items():
        _bump(api_entry(api, version)["backend_failures"], reason, n)
    for histograms, field_name in (
        (r.handshake, "handshake_seconds"),
        (r.duration, "connection_duration_seconds"),
    ):
        for (api, version), h in histograms.items():
            api_entry(api, version)[field_name] = {"count": h.count, "sum": h.sum}
    return {
        "connections_active": sum(r.active.values()),
        "apis": apis,
        "applications": apps,
        "events": {
            sink.name: {
                "written": sink.written,
                "buffered": len(sink.buffer),
                "dropped": sink.dropped,
                "failed": sink.failed,
            }
            for sink in r.sinks()
        },
    }


def _traffic_fields() -> Entry:
    """Each per-direction field of an entry, at 0 in both directions."""
    return {name: dict.fromkeys(DIRECTIONS, 0) for name in TRAFFIC_FIELDS + COMPRESSION_FIELDS}


def _add_per_direction(entry: Entry, fields: Sequence[str], counts: Sequence[int]) -> None:
    for direction, values in by_direction(counts):
        for name, n in zip(fields, values, strict=True):
            _bump(entry[name], direction, n)


def _bump(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n
