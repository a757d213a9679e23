"""The admin port: GET /health, /metrics, /stats (plain_http.ADMIN_PORT). One request per
connection.

The request must arrive, and its answer be read, within ADMIN_REQUEST_TIMEOUT_S of the
accept (on the deadlines wheel: no timer per connection). At most
gateway.max_admin_connections are open at once: at the cap, the oldest connection that has
not sent its request is closed to make room, so idle connections cannot lock a health check
out; when none can make room, the new connection gets 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from wsgw.errors import GatewayError, ServiceUnavailable
from wsgw.http import RequestReader, error_response
from wsgw.pipeline.accept import REQUEST_TIMEOUT_S
from wsgw.plain_http import ADMIN_PORT

log = logging.getLogger("wsgw")

# An admin connection has as long as a gateway-port one to send its request, and its answer
# must be read within the same time (from the accept): a scraper that stops reading is cut.
ADMIN_REQUEST_TIMEOUT_S = REQUEST_TIMEOUT_S
ADMIN_CLOSE_REASONS = ("timeout", "evicted", "over_cap")


class AdminConnections:
    """The admin port's open connections (oldest first) and why the gateway closed some."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[AdminProtocol, None] = {}
        self.closed = dict.fromkeys(ADMIN_CLOSE_REASONS, 0)

    def collect(self) -> Iterator[tuple[str, str, str, dict[str, str], float]]:
        yield (
            "wsgw_admin_connections",
            "gauge",
            "Admin port connections open now",
            {},
            len(self.open),
        )
        for reason, n in self.closed.items():
            yield (
                "wsgw_admin_connections_closed_total",
                "counter",
                "Admin connections the gateway closed: timeout (no request, or its answer not "
                "read, in time), evicted (the oldest without a request, to make room at "
                "gateway.max_admin_connections), over_cap (503: none could make room)",
                {"reason": reason},
                n,
            )


class AdminProtocol(asyncio.Protocol):
    def __init__(self, services: Any, connections: AdminConnections) -> None:
        self.services = services
        self.connections = connections
        self.reader: RequestReader | None = RequestReader()  # None once the request is in
        self.transport: asyncio.Transport | None = None
        self.deadline_slot = -1  # see deadlines.py

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        conns = self.connections
        open_now = len(conns.open)
        if open_now >= conns.limit and not self._make_room():
            conns.closed["over_cap"] += 1
            self.services.listener.refusals_log.warning(
                "admin port: %d connections open, all with a request: new ones get 503 "
                "(gateway.max_admin_connections)",
                open_now,
            )
            self.reader = None
            refusal = error_response(ServiceUnavailable("too many admin connections"))
            transport.write(refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        conns.open[self] = None
        self.services.deadlines.arm(self, ADMIN_REQUEST_TIMEOUT_S)

    def _make_room(self) -> bool:
        conns = self.connections
        for conn in conns.open:  # oldest first; at most the cap
            if conn.reader is not None:
                self.services.listener.refusals_log.warning(
                    "admin port: %d connections open (gateway.max_admin_connections): closing "
                    "the oldest that has not sent its request",
                    len(conns.open),
                )
                conn.close("evicted")
                return True
        return False

    def close(self, reason: str) -> None:
        """Drop the connection now (counted under `reason` unless empty)."""
        if reason:
            self.connections.closed[reason] += 1
        self.connections.open.pop(self, None)
        self.services.deadlines.disarm(self)
        if self.transport is not None:
            self.transport.abort()

    def deadline_reached(self) -> None:
        # No complete request in time, or an answer the client does not read.
        log.debug("admin connection timed out")
        self.close("timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.open.pop(self, None)
        self.services.deadlines.disarm(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.reader is None:
            return  # answered (or refused): the rest is ignored
        try:
            request = self.reader.feed(data)
            if request is None:
                return
            response = ADMIN_PORT.answer(self.services, request, None)
        except GatewayError as err:
            response = error_response(err)
        self.reader = None
        self.transport.write(response)
        self.transport.close()
