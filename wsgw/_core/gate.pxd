# The admission gate's C contract, cimported by frames.pyx. Levels are exact 128-bit counts
# of 1/(60 * 10**9) tokens, as in bucket.pxd (see gate_py.py, the spec).
from libc.stdint cimport int64_t, uint64_t

from wsgw._core.int128 cimport wsgw_i128

cdef enum:
    GATE_MAX_LIMITS = 8


# One limit's state, inline in its Limit object so a Gate can point at it: the per-frame
# path then touches no Python object.
cdef struct LimitState:
    int64_t msg_rate            # messages_per_minute; 0 = unlimited
    int64_t byte_rate           # bytes_per_minute (also the byte capacity); 0 = unlimited
    wsgw_i128 msg_full
    wsgw_i128 byte_full
    wsgw_i128 msg_level    # negative in debt
    wsgw_i128 byte_level
    int64_t last                # latest monotonic ns seen (LOCAL mode)
    bint leased
    bint starved
    uint64_t consumed_messages
    uint64_t consumed_bytes


cdef class Limit:
    cdef LimitState s
    cdef readonly int64_t burst


cdef class Gate:
    cdef LimitState* _states[GATE_MAX_LIMITS]
    cdef int _actions[GATE_MAX_LIMITS]
    cdef int _scopes[GATE_MAX_LIMITS]
    cdef int _count
    cdef readonly tuple limits        # keeps the Limit objects (and so _states) alive
    cdef readonly int last_scope
    cdef readonly int64_t retry_after_ns

    # payload_len in 0..2**63-1. c_admit returns 0 (admitted) or the refusing action.
    cdef int c_admit(self, int64_t payload_len, int64_t now_ns) noexcept nogil
    cdef void c_force(self, int64_t payload_len, int64_t now_ns) noexcept nogil
