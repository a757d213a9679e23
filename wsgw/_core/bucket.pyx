"""An exact integer token bucket on a monotonic ns clock; twin of bucket_py.py (the spec).

The level counts 1/(60 * 10**9) tokens in a 128-bit integer, so a refill is exactly
``elapsed_ns * rate_per_minute`` units: no float, no rounding, no drift.
"""

import time

from libc.stdint cimport int64_t, uint64_t

from wsgw._core.int128 cimport (
    WSGW_LEVEL_FLOOR,
    WSGW_MAX_TOKENS,
    WSGW_UNITS,
    as_int64,
    check_tokens,
    wsgw_floor_div,
    wsgw_i128,
)

UNITS_PER_TOKEN = 60 * 1_000_000_000
MAX_TOKENS = 2**62
MAX_RETRY_NS = 2**63 - 1



cdef class TokenBucket:
    """``capacity = rate_per_minute + burst`` tokens, starts full, refills continuously.

    Times are ``time.monotonic_ns()`` values passed in by the caller. A clock that goes
    backwards is ignored (no refill until it passes the latest time seen). See bucket_py.py
    for limits and the exact semantics of each method.
    """

    def __init__(self, rate_per_minute, burst=0, now_ns=None):
        cdef int64_t rate = as_int64(rate_per_minute)
        cdef int64_t extra
        if rate < 1 or rate > WSGW_MAX_TOKENS:
            raise ValueError("rate_per_minute must be in 1..2**62")
        extra = check_tokens(burst, "burst")
        if rate + extra > WSGW_MAX_TOKENS:
            raise ValueError("capacity (rate_per_minute + burst) must be at most 2**62")
        self.rate_per_minute = rate
        self.burst = extra
        self.capacity = rate + extra
        self._full = <wsgw_i128>self.capacity * WSGW_UNITS
        self._level = self._full
        self._last = as_int64(time.monotonic_ns() if now_ns is None else now_ns)

    def __repr__(self):
        return (
            f"TokenBucket(rate_per_minute={self.rate_per_minute}, burst={self.burst}, "
            f"level={<double>self._level / <double>WSGW_UNITS:.3f})"
        )

    cdef void _refill(self, int64_t now_ns) noexcept nogil:
        cdef wsgw_i128 gain
        if now_ns <= self._last:
            return
        # elapsed < 2**64 and rate <= 2**62: the product fits 127 bits.
        gain = <wsgw_i128>(<uint64_t>now_ns - <uint64_t>self._last) * self.rate_per_minute
        self._last = now_ns
        if gain >= self._full - self._level:
            self._level = self._full
        else:
            self._level += gain

    cdef bint c_consume(self, int64_t n, int64_t now_ns) noexcept nogil:
        cdef wsgw_i128 need = <wsgw_i128>n * WSGW_UNITS
        self._refill(now_ns)
        if self._level < need:
            return False
        self._level -= need
        return True

    cdef void c_force_consume(self, int64_t n, int64_t now_ns) noexcept nogil:
        self._refill(now_ns)
        self._level -= <wsgw_i128>n * WSGW_UNITS
        if self._level < WSGW_LEVEL_FLOOR:
            self._level = WSGW_LEVEL_FLOOR

    cdef void c_give_back(self, int64_t n, int64_t now_ns) noexcept nogil:
        self._refill(now_ns)
        self._level += <wsgw_i128>n * WSGW_UNITS
        if self._level > self._full:
            self._level = self._full

    cdef int64_t c_available(self, int64_t now_ns) noexcept nogil:
        self._refill(now_ns)
        return <int64_t>wsgw_floor_div(self._level, WSGW_UNITS)

    cdef int64_t c_retry_after_ns(self, int64_t n, int64_t now_ns) noexcept nogil:
        cdef wsgw_i128 deficit, wait
        self._refill(now_ns)
        if n > self.capacity:
            n = self.capacity
        deficit = <wsgw_i128>n * WSGW_UNITS - self._level
        if deficit <= 0:
            return 0
        wait = (deficit + self.rate_per_minute - 1) / self.rate_per_minute
        if wait > <wsgw_i128>0x7FFFFFFFFFFFFFFF:
            return 0x7FFFFFFFFFFFFFFF
        return <int64_t>wait

    def consume(self, n, now_ns) -> bool:
        """Take ``n`` tokens if the bucket holds them; otherwise take nothing."""
        cdef int64_t count = check_tokens(n, "n")
        return self.c_consume(count, as_int64(now_ns))

    def force_consume(self, n, now_ns) -> None:
        """Take ``n`` tokens even into debt (the level may go negative)."""
        cdef int64_t count = check_tokens(n, "n")
        self.c_force_consume(count, as_int64(now_ns))

    def give_back(self, n, now_ns) -> None:
        """Return ``n`` tokens (an unused lease), never above capacity."""
        cdef int64_t count = check_tokens(n, "n")
        self.c_give_back(count, as_int64(now_ns))

    def available(self, now_ns) -> int:
        """Whole tokens now, rounded down (negative in debt): consume(n) succeeds iff n <= it."""
        return self.c_available(as_int64(now_ns))

    def retry_after_ns(self, n, now_ns) -> int:
        """Nanoseconds until ``n`` tokens are available; 0 if they are now.

        A bucket never holds more than its capacity, so for ``n > capacity`` this is the
        time until the bucket is full. Rounded up; at most 2**63 - 1.
        """
        cdef int64_t count = check_tokens(n, "n")
        return self.c_retry_after_ns(count, as_int64(now_ns))
