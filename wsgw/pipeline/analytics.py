"""What happened on each connection: counters for the admin port and one access-log line
per connection end. Per-frame counts live in the codec (FrameRelay counters) and are read
here once, when the connection ends: nothing is counted twice on the hot path."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgw.pipeline.relay import ClientLeg

access_log = logging.getLogger("wsgw.access")


class Stats:
    def __init__(self) -> None:
        self.active = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (api, outcome)
        self.close_codes: Counter[tuple[str, int, str]] = Counter()  # (api, code, by)

    def refused(self, api_label: str, status: int) -> None:
        self.outcomes[(api_label, str(status))] += 1

    def upgraded(self, conn: ClientLeg) -> None:
        self.active += 1
        self.outcomes[(conn.api_label, "upgraded")] += 1

    def ended(self, conn: ClientLeg) -> None:
        self.active -= 1
        code = conn.close_code if conn.close_code is not None else 1006
        self.close_codes[(conn.api_label, code, conn.closed_by)] += 1
        grant = conn.grant
        c2b, b2c = conn.c2b, conn.b2c
        access_log.info(
            "%s %s app=%s key_type=%s duration=%.3fs in=%d/%dB out=%d/%dB close=%d by=%s",
            conn.peer,
            conn.api_label,
            grant.application if grant else "-",
            grant.key_type if grant else "-",
            time.monotonic() - conn.started,
            c2b.data_frames if c2b else 0,
            c2b.data_bytes if c2b else 0,
            b2c.data_frames if b2c else 0,
            b2c.data_bytes if b2c else 0,
            code,
            conn.closed_by,
        )
