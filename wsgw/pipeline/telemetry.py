"""Telemetry: what the gateway records about its connections, and the two ways it is read.

The facade the rest of the gateway uses. The recording is the Recorder's
(wsgw/pipeline/recorder.py, which also emits the analytics events); Telemetry adds the
readers, /metrics (wsgw/pipeline/metrics.py) and /stats (wsgw/pipeline/stats.py), which
import the recorder and never this module, so that the imports point one way.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from wsgw.pipeline import stats as stats_json
from wsgw.pipeline.metrics import CONTENT_TYPE, MetricsExporter
from wsgw.pipeline.recorder import ConnectionRecord, Recorder, read_counters

__all__ = ["CONTENT_TYPE", "ConnectionRecord", "Telemetry", "read_counters"]


class Telemetry(Recorder):
    """The Recorder (same constructor, same recording calls) plus its two readers."""

    @cached_property
    def _exporter(self) -> MetricsExporter:
        # Its registry is built at the first scrape: a gateway nobody scrapes builds none.
        return MetricsExporter(self)

    def metrics_text(self) -> bytes:
        """The /metrics body, in CONTENT_TYPE."""
        return self._exporter.render()

    def stats(self) -> dict[str, Any]:
        """The same numbers as /metrics, per API and per application, JSON-able."""
        return stats_json.stats(self)
