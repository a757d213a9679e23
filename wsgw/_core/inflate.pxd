# The inflate meter's C contract, cimported by frames.pyx (see inflate_py.py, the spec).
from libc.stdint cimport uint64_t


cdef extern from "zlib.h":
    ctypedef struct z_stream:
        unsigned char* next_in
        unsigned int avail_in
        unsigned char* next_out
        unsigned int avail_out
        const char* msg


cdef enum:
    METER_OK = 0
    METER_TOO_BIG = 1        # the message inflates to more than the limit
    METER_INVALID = 2        # not valid DEFLATE data
    METER_REFERS_BACK = 3    # self-contained mode: a back-reference before the message


cdef class InflateMeter:
    cdef z_stream _z
    cdef bint _ready                  # inflateInit2 done (then inflateEnd in dealloc)
    cdef readonly bint self_contained
    cdef readonly uint64_t inflated   # bytes the current message inflated to so far
    cdef readonly bint ended          # the DEFLATE stream ended (BFINAL): the rest is ignored

    cdef int c_start(self) except -1
    # limit 0: no limit. Returns a METER_* status; stops inflating at the first problem.
    cdef int c_feed(self, const unsigned char* data, Py_ssize_t n, uint64_t limit) except -1
    cdef int c_finish(self, uint64_t limit) except -1


# A started meter from the pool (or a new one); give it back with release_meter.
cdef InflateMeter acquire_meter(bint self_contained)
cdef void release_meter(InflateMeter meter)
