"""File descriptors: the soft limit raised at start, a reserve the gateway port never takes,
and exhaustion made visible (a 503, a metric, and a log line with a summary per interval).

Every connection is a descriptor, two once upgraded (its backend's). The soft RLIMIT_NOFILE
is often 1,024 (systemd's default, kept low for programs that use select()) while the hard
one is far higher; the gateway uses no select(), so it raises the soft limit to the hard one.

At the limit, libuv (uvloop's core) accepts each pending connection with a spare descriptor
it keeps for that and closes it at once (its "EMFILE trick"): silently, on every listener,
the admin port included, and nothing reaches Python. So the gateway acts before: the kernel
hands out the lowest free descriptor, so a gateway-port client that lands on one of the top
`reserve` descriptors means fewer than `reserve` are left; that client gets a 503 and is
closed at once. Clients of the gateway port therefore never hold one of those, which stay
for the admin port (its connections are capped), the backend sockets of handshakes in
flight, and files (the subscriptions reload, the events file).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Iterator

from wsgw.logs import Throttled

log = logging.getLogger("wsgw")

# Descriptors kept on top of the admin port's connections: backend sockets of handshakes in
# flight, Redis, the events file, the subscriptions file being reloaded.
FD_MARGIN = 32
EXHAUSTED_LOG_INTERVAL_S = 10.0
# Counting open descriptors lists /proc/self/fd: ~2 us each (40 ms at 19,000), on the loop.
# A scrape reuses a count younger than this, so scraping in a loop cannot stall the relay.
OPEN_FDS_MAX_AGE_S = 1.0
NR_OPEN_FALLBACK = 1 << 20  # Linux's default /proc/sys/fs/nr_open

Sample = tuple[str, str, str, dict[str, str], float]


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; never lower it. (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as err:
        log.warning("file descriptors: soft limit %d not raised to %d: %s", soft, target, err)
        return soft, soft
    log.info("file descriptors: soft limit raised from %d to %d", soft, target)
    return soft, target


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return NR_OPEN_FALLBACK


def open_fds() -> int | None:
    """Descriptors open in this process now (a directory listing: at scrape time only)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return None


class FdBudget:
    """The descriptor limit, the reserve on top of it, and how often the reserve was hit."""

    def __init__(self, admin_connections: int) -> None:
        self._admin_connections = admin_connections
        self.exhausted_total = 0
        self._open_fds: int | None = None
        self._open_fds_at = -OPEN_FDS_MAX_AGE_S
        # Its own window: a flood is one line, then one summary per interval with the count.
        self._log = Throttled(log, EXHAUSTED_LOG_INTERVAL_S)
        self.refresh()

    def refresh(self) -> None:
        """Read the limit again (after raise_nofile_limit)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.limit = NR_OPEN_FALLBACK if soft == resource.RLIM_INFINITY else soft
        # A quarter of the table at most: a small limit must still leave room for clients.
        self.reserve = min(self._admin_connections + FD_MARGIN, self.limit // 4)
        self.threshold = self.limit - self.reserve

    def short(self, transport: asyncio.BaseTransport) -> bool:
        """True when this new connection took one of the reserved descriptors: it must be
        refused (fewer than `reserve` are left). One comparison per accepted connection."""
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        fd = sock.fileno()
        if fd < self.threshold:
            return False
        self.exhausted_total += 1
        self._log.warning(
            "file descriptors exhausted: %d of %d in use (the last %d are kept for the admin "
            "port and backends): new clients get 503 until some close",
            fd + 1,
            self.limit,
            self.reserve,
        )
        return True

    def close(self) -> None:
        self._log.flush()

    def collect(self) -> Iterator[Sample]:
        yield (
            "wsgw_fd_exhausted_total",
            "counter",
            "Gateway-port connections refused (503) because file descriptors ran short",
            {},
            self.exhausted_total,
        )
        now = time.monotonic()
        if now - self._open_fds_at >= OPEN_FDS_MAX_AGE_S:
            self._open_fds, self._open_fds_at = open_fds(), now
        n = self._open_fds
        if n is not None:
            yield ("wsgw_open_fds", "gauge", "File descriptors open in this process", {}, n)
        yield (
            "wsgw_max_fds",
            "gauge",
            "The soft RLIMIT_NOFILE: file descriptors this process may open",
            {},
            self.limit,
        )
