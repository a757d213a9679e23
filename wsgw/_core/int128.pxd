# Exact 128-bit token arithmetic (wsgw_int128.h), shared by bucket and gate.
from libc.stdint cimport int64_t

cdef extern from "wsgw_int128.h":
    # Cython only passes these values around; the arithmetic is the C compiler's.
    ctypedef long long wsgw_i128
    wsgw_i128 WSGW_UNITS
    int64_t WSGW_MAX_TOKENS
    wsgw_i128 WSGW_LEVEL_FLOOR
    wsgw_i128 WSGW_LEVEL_CEIL
    wsgw_i128 wsgw_floor_div(wsgw_i128 a, wsgw_i128 b) noexcept nogil
