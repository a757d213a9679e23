"""Gateway-port connections that have not upgraded yet, counted per client address.

A connection is pending from its accept until its 101: while its request arrives (HTTP) and
while the backend answers (CONNECTING). It holds a descriptor, two while the backend
answers, and serves nobody yet. One address may have `gateway.max_pending_per_address` of
them at once; past that a new connection from it is refused at accept (429, then closed).
Upgraded connections do not count (tiers cap them: `max_connections`). An address is what
the token endpoint's failure limit counts (wsgw/oauth/guard.py): IPv4 as is, IPv6 per /64.
Only addresses with pending connections are remembered: memory follows those connections.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from wsgw.addresses import address_key

Sample = tuple[str, str, str, dict[str, str], float]


class PendingConnections:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit (still counted)
        self.by_address: dict[str, int] = {}
        self._held: dict[Hashable, str] = {}  # connection → its address, while pending
        self.refused_total = 0

    def __len__(self) -> int:
        return len(self._held)

    def enter(self, conn: Hashable, peer: str) -> bool:
        """A new connection from IP address `peer`: False (and counted) when it is one too
        many. A connection without an IP address ("?") is not limited."""
        address = address_key(peer)
        if address is None:
            return True
        n = self.by_address.get(address, 0)
        if self.limit and n >= self.limit:
            self.refused_total += 1
            return False
        self.by_address[address] = n + 1
        self._held[conn] = address
        return True

    def leave(self, conn: Hashable) -> None:
        """The connection upgraded or ended; a no-op when it is not pending (any more)."""
        address = self._held.pop(conn, None)
        if address is None:
            return
        n = self.by_address[address] - 1
        if n:
            self.by_address[address] = n
        else:
            del self.by_address[address]

    def collect(self) -> Iterator[Sample]:
        yield (
            "wsgw_pending_refused_total",
            "counter",
            "Gateway-port connections refused at accept (429): their address already had "
            "gateway.max_pending_per_address connections not upgraded yet",
            {},
            self.refused_total,
        )
        yield (
            "wsgw_connections_pending",
            "gauge",
            "Gateway-port connections not upgraded yet (request or backend handshake)",
            {},
            len(self._held),
        )
