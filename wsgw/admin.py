"""The admin port (plain_http.ADMIN_PORT: health, metrics, stats, the open connections,
reload, drain), and its bearer token (`load_admin_token`). One request per connection.

The request must arrive, and its answer be read, within ADMIN_REQUEST_TIMEOUT_S of the
accept (on the deadlines wheel: no timer per connection). At most
gateway.max_admin_connections are open at once: at the cap, the oldest connection that has
not sent its request is closed to make room, so idle connections cannot lock a health check
out; when none can make room, the new connection gets 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator
from typing import Any

from wsgw.config.loader import display_path
from wsgw.errors import ConfigError, GatewayError, ServiceUnavailable
from wsgw.http import RequestReader, error_response
from wsgw.pipeline.accept import REQUEST_TIMEOUT_S
from wsgw.plain_http import ADMIN_PORT, AdminUnauthorized

log = logging.getLogger("wsgw")

# An admin connection has as long as a gateway-port one to send its request, and its answer
# must be read within the same time (from the accept): a scraper that stops reading is cut.
ADMIN_REQUEST_TIMEOUT_S = REQUEST_TIMEOUT_S
ADMIN_CLOSE_REASONS = ("timeout", "evicted", "over_cap")
MAX_ADMIN_TOKEN_BYTES = 4096


def load_admin_token(path: str | os.PathLike[str]) -> bytes:
    """The bearer token of gateway.admin_token_file: the file's content without surrounding
    whitespace. Refused (ConfigError naming the file) unless it is a regular file that only
    its owner may access (mode & 0o077 == 0), non-empty, and printable ASCII without spaces
    (what an Authorization header can carry). Never put the token in a message."""
    display = display_path(path)
    try:
        # O_NONBLOCK: a FIFO put there must not hang the start (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read the admin token: {exc.strerror}"]) from None
    try:
        _check_token_file(display, os.fstat(fd))  # what was opened: no race with a swap
        raw = os.read(fd, MAX_ADMIN_TOKEN_BYTES + 1)  # a regular file: all of it, up to that
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read the admin token: {exc.strerror}"]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_ADMIN_TOKEN_BYTES:
        raise ConfigError([f"{display}: the admin token is over {MAX_ADMIN_TOKEN_BYTES} bytes"])
    token = raw.strip()
    if not token:
        raise ConfigError([f"{display}: the admin token file is empty"])
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise ConfigError([f"{display}: the admin token must be printable ASCII, without spaces"])
    return token


def _check_token_file(display: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError([f"{display}: the admin token file is not a regular file"])
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            [
                f"{display}: the admin token file is open to group or others "
                f"(mode {mode:04o}): chmod 600 it"
            ]
        )


class AdminConnections:
    """The admin port's open connections (oldest first) and why the gateway closed some."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[AdminProtocol, None] = {}
        self.closed = dict.fromkeys(ADMIN_CLOSE_REASONS, 0)
        self.unauthorized = 0  # requests refused 401 (no admin token, or a wrong one)

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
        yield (
            "wsgw_admin_unauthorized_total",
            "counter",
            "Admin port requests refused for a missing or wrong admin token (401)",
            {},
            self.unauthorized,
        )


class AdminProtocol(asyncio.Protocol):
    def __init__(self, services: Any, connections: AdminConnections) -> None:
        self.services = services
        self.connections = connections
        self.reader: RequestReader | None = RequestReader()  # None once the request is in
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None  # the client's IP address (logged with its actions)
        self.deadline_slot = -1  # see deadlines.py

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else None
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

    def _unauthorized(self) -> None:
        """Counted, and logged (throttled) without what was presented."""
        self.connections.unauthorized += 1
        self.services.listener.refusals_log.warning(
            "admin port: refused a request from %s without the right admin token", self.peer
        )

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.reader is None:
            return  # answered (or refused): the rest is ignored
        try:
            request = self.reader.feed(data)
            if request is None:
                return
            response = ADMIN_PORT.answer(self.services, request, self.peer)
        except AdminUnauthorized as err:
            self._unauthorized()
            response = error_response(err)
        except GatewayError as err:
            response = error_response(err)
        except Exception:  # a bug behind a route: answered, not left to the deadline
            log.exception("admin port: request failed")
            response = error_response(GatewayError("internal error"))
        self.reader = None
        self.transport.write(response)
        self.transport.close()
