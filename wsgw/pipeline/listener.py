"""What a gateway-port connection must pass at accept, before it costs anything more: a
descriptor reserve (fdlimits.py) and the per-address cap on connections not upgraded yet
(pending.py). A refused connection gets its answer and is closed at once."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from wsgw.errors import GatewayError, ServiceUnavailable, TooManyRequests
from wsgw.fdlimits import FdBudget
from wsgw.http import error_response
from wsgw.logs import Throttled
from wsgw.pipeline.pending import PendingConnections


class ListenerLimits:
    def __init__(self, fds: FdBudget, pending: PendingConnections, refusals_log: Throttled) -> None:
        self.fds = fds
        self.pending = pending
        self.refusals_log = refusals_log  # one warning per interval, however many refusals

    def admit(self, transport: asyncio.BaseTransport, conn: Hashable, peer: str) -> bool:
        """False (the client answered and the connection closed) when file descriptors run
        short, or when `peer` already has gateway.max_pending_per_address connections not
        upgraded; True, and `conn` counted as pending, otherwise."""
        err: GatewayError
        if self.fds.short(transport):
            err = ServiceUnavailable("the gateway is at capacity: retry later")
        elif not self.pending.enter(conn, peer):
            limit = self.pending.limit
            self.refusals_log.warning(
                "connections from %s refused: %d not upgraded yet "
                "(gateway.max_pending_per_address)",
                peer,
                limit,
            )
            err = TooManyRequests(f"more than {limit} connections not upgraded from your address")
        else:
            return True
        transport.write(error_response(err))  # type: ignore[attr-defined]
        transport.close()
        return False
