"""A limit on failed client authentications at the token endpoint (brute force of secrets).

Two limits, each "at most N failures in any window of W seconds": per client address and
per client id (consumer key). A request whose address or client id is at its limit is
answered 429 before its secret is looked at, so the answer is the same for a right and a
wrong secret (no oracle) and costs no hashing. Only failed secret checks count: wrong
secret or unknown client id. Successes neither count nor clear anything (an attacker with
one key of their own could otherwise reset their address's count).

Unknown client ids are tracked exactly like known ones: a limit that only known ids could
reach would tell which ids exist. IPv6 addresses count per /64 (one host's usual share).

Memory is bounded. Each limit keeps, per key, the times of its failures still inside the
window (at most N floats), in a map ordered by last failure: keys whose failures have all
aged out are pruned from its head as new failures arrive, and past ``max_tracked`` keys the
least recently failed key is evicted (counted in ``wsgw_token_guard_evicted_total``).
Eviction forgets failures that may still be in their window; the two limits cover each
other there: flushing the client-id map takes ``max_tracked`` failures, which the
per-address limit spreads over ``max_tracked / per_address`` addresses for each window.
A client id longer than any valid consumer key is tracked by a digest of it, so a key
costs at most ~1 kB: ~12 MB for two full maps of 10,000 keys.

State is per process: with ``--workers N`` a client may get up to N times the limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from wsgw.addresses import address_key
from wsgw.config.models import MAX_CONSUMER_KEY_CHARS, TokenFailures
from wsgw.logs import Throttled

log = logging.getLogger("wsgw.oauth")

# Per call, how many aged-out keys a new failure prunes from the head of a map: constant
# work per request, and more than the one key a failure can add.
PRUNE_PER_CALL = 64
LOG_INTERVAL_S = 60.0


class SlidingLimit:
    """At most ``limit`` events per key in any ``window_s``; at most ``max_tracked`` keys."""

    __slots__ = ("name", "limit", "window_s", "max_tracked", "keys", "evicted")

    def __init__(self, name: str, limit: int, window_s: float, max_tracked: int) -> None:
        if limit < 1 or window_s <= 0 or max_tracked < 1:
            raise ValueError("limit and max_tracked must be >= 1, window_s > 0")
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self.max_tracked = max_tracked
        # key -> failure times, oldest first, all within the window when last touched.
        self.keys: OrderedDict[str, list[float]] = OrderedDict()
        self.evicted = 0

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may fail again: 0.0 when it is under its limit."""
        times = self.keys.get(key)
        if times is None or len(times) < self.limit:
            return 0.0
        # The list never holds more than `limit` times: when full, the oldest one decides.
        return max(0.0, times[0] + self.window_s - now)

    def record(self, key: str, now: float) -> bool:
        """Count one failure; True when it brings ``key`` to its limit (blocked from now)."""
        self._prune(now)
        times = self.keys.pop(key, None)
        if times is None:
            times = []
        horizon = now - self.window_s
        drop = 0
        while drop < len(times) and times[drop] <= horizon:  # bounded: len <= limit
            drop += 1
        if drop:
            del times[:drop]
        times.append(now)
        if len(times) > self.limit:  # only if record() is called past wait(): keep N
            del times[0]
        self.keys[key] = times  # (re)inserted last: the map is ordered by last failure
        while len(self.keys) > self.max_tracked:  # at most one: one key was added
            self.keys.popitem(last=False)
            self.evicted += 1
        return len(times) == self.limit

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        keys = self.keys
        for _ in range(PRUNE_PER_CALL):
            if not keys:
                return
            oldest = next(iter(keys.values()))
            if oldest[-1] > horizon:
                return  # the head failed last the longest ago: the rest is newer still
            keys.popitem(last=False)


class TokenGuard:
    """The token endpoint's two limits. ``per_address`` or ``per_client_id`` 0: no limit."""

    def __init__(
        self,
        *,
        per_address: int = 10,
        per_client_id: int = 5,
        window_s: float = 60.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.by_address = (
            SlidingLimit("address", per_address, window_s, max_tracked) if per_address else None
        )
        self.by_client = (
            SlidingLimit("client_id", per_client_id, window_s, max_tracked)
            if per_client_id
            else None
        )
        self._log = Throttled(log, LOG_INTERVAL_S, clock=clock)

    @classmethod
    def from_config(
        cls, config: TokenFailures, clock: Callable[[], float] = time.monotonic
    ) -> TokenGuard:
        """From the ``security.token_failures`` section."""
        return cls(
            per_address=config.per_address,
            per_client_id=config.per_client_id,
            window_s=config.window_s,
            max_tracked=config.max_tracked,
            clock=clock,
        )

    def retry_after(self, address: str | None, client_id: str) -> int:
        """0 if this request may try its secret, else whole seconds (>= 1) to wait: the
        Retry-After value. ``address`` None or not an IP address: only the client id is limited."""
        now = self.clock()
        wait = 0.0
        key = address_key(address)
        if self.by_address is not None and key is not None:
            wait = self.by_address.wait(key, now)
        if self.by_client is not None:
            wait = max(wait, self.by_client.wait(client_key(client_id), now))
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, address: str | None, client_id: str, *, known: bool) -> None:
        """A failed secret check; ``known``: the client id exists (only then is it logged:
        an unknown "id" may be a secret typed in the wrong field)."""
        now = self.clock()
        key = address_key(address)
        by_address = self.by_address
        if by_address is not None and key is not None and by_address.record(key, now):
            self._log.warning(
                "token endpoint: %d failed client authentications from %s within %g s: "
                "its token requests are refused (429) until they age out",
                by_address.limit,
                key,
                self.window_s,
            )
        if self.by_client is not None and self.by_client.record(client_key(client_id), now):
            self._log.warning(
                "token endpoint: %d failed client authentications for %s within %g s: "
                "its token requests are refused (429) until they age out",
                self.by_client.limit,
                f"client id {client_id}" if known else "an unknown client id",
                self.window_s,
            )

    def collect(self) -> Iterator[tuple[str, str, str, dict[str, str], float]]:
        """For Telemetry.add_collector: keys tracked and evicted, per limit."""
        for limit in (self.by_address, self.by_client):
            if limit is None:
                continue
            labels = {"limit": limit.name}
            yield (
                "wsgw_token_guard_tracked",
                "gauge",
                "Keys (addresses, client ids) with failed token requests still remembered",
                labels,
                len(limit.keys),
            )
            yield (
                "wsgw_token_guard_evicted_total",
                "counter",
                "Keys forgotten before their failures aged out (more keys than max_tracked)",
                labels,
                limit.evicted,
            )


def client_key(client_id: str) -> str:
    """The id itself, or for an id longer than any consumer key, a digest of it."""
    if len(client_id) <= MAX_CONSUMER_KEY_CHARS:
        return client_id
    digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"\x00sha256:{digest}"
