# The token bucket's C contract. The level is an exact 128-bit count of 1/(60 * 10**9)
# tokens (see bucket_py.py, the spec); gcc and clang provide __int128 on 64-bit targets.
from libc.stdint cimport int64_t

from wsgw._core.int128 cimport wsgw_i128


cdef class TokenBucket:
    cdef readonly int64_t rate_per_minute
    cdef readonly int64_t burst
    cdef readonly int64_t capacity
    cdef wsgw_i128 _full       # capacity, scaled
    cdef wsgw_i128 _level      # tokens now, scaled; negative in debt
    cdef int64_t _last         # latest monotonic ns seen

    # C-level twins of the Python methods, for Cython callers. n must be in 0..2**62.
    cdef void _refill(self, int64_t now_ns) noexcept nogil
    cdef bint c_consume(self, int64_t n, int64_t now_ns) noexcept nogil
    cdef void c_force_consume(self, int64_t n, int64_t now_ns) noexcept nogil
    cdef void c_give_back(self, int64_t n, int64_t now_ns) noexcept nogil
    cdef int64_t c_available(self, int64_t now_ns) noexcept nogil
    cdef int64_t c_retry_after_ns(self, int64_t n, int64_t now_ns) noexcept nogil
