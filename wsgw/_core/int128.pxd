# Exact 128-bit token arithmetic (wsgw_int128.h) and its argument checks, shared by bucket
# and gate.
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t

cdef extern from "wsgw_int128.h":
    # Cython only passes these values around; the arithmetic is the C compiler's.
    ctypedef long long wsgw_i128
    wsgw_i128 WSGW_UNITS
    int64_t WSGW_MAX_TOKENS
    wsgw_i128 WSGW_LEVEL_FLOOR
    wsgw_i128 WSGW_LEVEL_CEIL
    wsgw_i128 wsgw_floor_div(wsgw_i128 a, wsgw_i128 b) noexcept nogil


# Argument checks: ints only, like the pure twins (a C conversion would truncate floats).
cdef inline int64_t as_int64(object v) except? -1:
    return PyNumber_Index(v)


cdef inline int64_t check_tokens(object v, str what) except? -1:
    cdef int64_t n = as_int64(v)
    if n < 0 or n > WSGW_MAX_TOKENS:
        raise ValueError(f"{what} must be in 0..2**62")
    return n
