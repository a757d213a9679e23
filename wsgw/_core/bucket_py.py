"""Pure-Python twin of bucket.pyx: an exact integer token bucket on a monotonic ns clock.

The level is kept in units of 1 / (60 * 10**9) token, so a refill of ``rate_per_minute``
tokens per minute is exactly ``elapsed_ns * rate_per_minute`` units: no float, no rounding,
no drift however the calls are spaced (refilling in many steps gives the same level as in
one). This module is the specification; bucket.pyx does the same in 128-bit C integers.

Limits (both twins): rate_per_minute >= 1, burst >= 0, capacity <= MAX_TOKENS (2**62),
0 <= n <= MAX_TOKENS, now_ns within a signed 64-bit integer; arguments must be integers
(TypeError otherwise, never silent truncation). Debt saturates at -MAX_TOKENS tokens and
retry_after_ns at 2**63 - 1, so every value fits 64 bits in C.
"""

from __future__ import annotations

import operator
import time

UNITS_PER_TOKEN = 60 * 1_000_000_000  # ns per minute: one token, scaled
MAX_TOKENS = 2**62
MAX_RETRY_NS = 2**63 - 1
_LEVEL_FLOOR = -MAX_TOKENS * UNITS_PER_TOKEN
_NS_MIN = -(2**63)
_NS_MAX = 2**63 - 1


def _tokens(n: int, what: str) -> int:
    n = operator.index(n)
    if not 0 <= n <= MAX_TOKENS:
        raise ValueError(f"{what} must be in 0..2**62")
    return n


def _clock(now_ns: int) -> int:
    now_ns = operator.index(now_ns)
    if not _NS_MIN <= now_ns <= _NS_MAX:
        raise OverflowError("now_ns does not fit a signed 64-bit integer")
    return now_ns


class TokenBucket:
    """``capacity = rate_per_minute + burst`` tokens, starts full, refills continuously.

    Times are ``time.monotonic_ns()`` values passed in by the caller. A clock that goes
    backwards is ignored (no refill until it passes the latest time seen).
    """

    __slots__ = ("_rate", "_burst", "_capacity", "_full", "_level", "_last")

    def __init__(self, rate_per_minute: int, burst: int = 0, now_ns: int | None = None) -> None:
        rate_per_minute = operator.index(rate_per_minute)
        burst = operator.index(burst)
        if not 1 <= rate_per_minute <= MAX_TOKENS:
            raise ValueError("rate_per_minute must be in 1..2**62")
        _tokens(burst, "burst")
        if rate_per_minute + burst > MAX_TOKENS:
            raise ValueError("capacity (rate_per_minute + burst) must be at most 2**62")
        self._rate = rate_per_minute
        self._burst = burst
        self._capacity = rate_per_minute + burst
        self._full = self._capacity * UNITS_PER_TOKEN
        self._level = self._full
        self._last = _clock(time.monotonic_ns() if now_ns is None else now_ns)

    rate_per_minute = property(lambda self: self._rate)
    burst = property(lambda self: self._burst)
    capacity = property(lambda self: self._capacity)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate_per_minute={self._rate}, burst={self._burst}, "
            f"level={self._level / UNITS_PER_TOKEN:.3f})"
        )

    def _refill(self, now_ns: int) -> None:
        now_ns = _clock(now_ns)
        if now_ns <= self._last:
            return
        gain = (now_ns - self._last) * self._rate
        self._last = now_ns
        self._level = min(self._level + gain, self._full)

    def consume(self, n: int, now_ns: int) -> bool:
        """Take ``n`` tokens if the bucket holds them; otherwise take nothing."""
        need = _tokens(n, "n") * UNITS_PER_TOKEN
        self._refill(now_ns)
        if self._level < need:
            return False
        self._level -= need
        return True

    def force_consume(self, n: int, now_ns: int) -> None:
        """Take ``n`` tokens even into debt (the level may go negative)."""
        need = _tokens(n, "n") * UNITS_PER_TOKEN
        self._refill(now_ns)
        self._level = max(self._level - need, _LEVEL_FLOOR)

    def give_back(self, n: int, now_ns: int) -> None:
        """Return ``n`` tokens (an unused lease), never above capacity."""
        back = _tokens(n, "n") * UNITS_PER_TOKEN
        self._refill(now_ns)
        self._level = min(self._level + back, self._full)

    def available(self, now_ns: int) -> int:
        """Whole tokens now, rounded down (negative in debt): consume(n) succeeds iff n <= it."""
        self._refill(now_ns)
        return self._level // UNITS_PER_TOKEN

    def retry_after_ns(self, n: int, now_ns: int) -> int:
        """Nanoseconds until ``n`` tokens are available; 0 if they are now.

        A bucket never holds more than its capacity, so for ``n > capacity`` this is the
        time until the bucket is full. Rounded up; at most 2**63 - 1.
        """
        target = min(_tokens(n, "n"), self._capacity) * UNITS_PER_TOKEN
        self._refill(now_ns)
        deficit = target - self._level
        if deficit <= 0:
            return 0
        return min(-(-deficit // self._rate), MAX_RETRY_NS)
