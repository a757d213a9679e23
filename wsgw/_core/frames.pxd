# The frame codec's C contract: the relay state lives in C fields, not Python objects.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t

from wsgw._core.gate cimport Gate
from wsgw._core.inflate cimport InflateMeter

cdef enum:
    MAX_HEADER = 14
    MAX_CONTROL_PAYLOAD = 125
    MAX_RETAINED = 139   # MAX_HEADER + MAX_CONTROL_PAYLOAD


# One parsed frame header (RFC 6455 §5.2), no policy checked.
cdef struct FrameHead:
    bint fin
    bint rsv1
    bint rsv2
    bint rsv3
    bint masked
    int opcode
    uint32_t key              # the 4 mask bytes in wire order (memcpy), 0 when unmasked
    uint64_t length           # payload length as sent (may have bit 63 set)
    Py_ssize_t header_length


# Parses the header at p[0:n] into h; returns its length, or 0 when more bytes are needed.
cdef Py_ssize_t parse_head(const unsigned char* p, Py_ssize_t n, FrameHead* h) noexcept nogil


cdef class FrameHeader:
    cdef readonly bint fin
    cdef readonly bint rsv1
    cdef readonly bint rsv2
    cdef readonly bint rsv3
    cdef readonly int opcode
    cdef readonly bint masked
    cdef readonly object mask_key
    cdef readonly object payload_length
    cdef readonly Py_ssize_t header_length


cdef class FrameRelay:
    cdef readonly bint from_client
    cdef readonly bint allow_rsv1
    cdef readonly uint64_t max_message_bytes
    cdef readonly bint self_contained          # compressed messages may not refer back
    cdef readonly int64_t max_control_per_second   # pings + pongs; 0 = no limit

    cdef int _state
    cdef unsigned char _hbuf[MAX_RETAINED + 1]   # partial header, or control frame so far
    cdef Py_ssize_t _hlen
    cdef FrameHead _ctl                # header of the control frame being collected
    cdef uint64_t _remaining           # payload bytes of the current data frame to come
    cdef uint32_t _xkey                # client key ^ relay key of the frame being streamed
    cdef Py_ssize_t _phase             # payload offset mod 4 of the next streamed byte
    cdef bint _fragmented
    cdef uint64_t _message_bytes

    # permessage-deflate: a compressed message that needs it is inflated as it streams.
    cdef InflateMeter _meter           # None unless the message in flight is measured
    cdef uint32_t _ckey                # client direction: the peer's key of the frame
    cdef bint _final                   # the frame being streamed ends its message
    cdef bint _compressed              # the message in flight is compressed
    cdef uint64_t _verify_left         # inflated bytes after a drop still to be checked
    cdef readonly uint64_t compressed_messages
    cdef readonly uint64_t compressed_bytes    # their payload bytes as sent
    cdef readonly uint64_t metered_bytes       # the payload bytes the meter inflated
    cdef readonly uint64_t inflated_bytes      # and what they inflated to

    # Control frames (ping, pong): a bucket of one second's worth, in ns x tokens.
    cdef int64_t _ctl_level
    cdef int64_t _ctl_last

    # Pending output: an owned bytes object of exactly _out_len bytes (refcount 1, so it
    # can be grown in place), or the caller's own input passed through (_out_shared).
    cdef PyObject* _out
    cdef Py_ssize_t _out_len
    cdef bint _out_shared

    cdef readonly int close_code
    cdef readonly bytes close_reason
    cdef readonly int error_code
    cdef readonly str error_reason
    cdef readonly uint64_t data_frames
    cdef readonly uint64_t data_bytes
    cdef readonly uint64_t control_frames
    cdef readonly bint closed

    # Throttling (set_gate): None costs one pointer check per data frame.
    cdef readonly Gate gate
    cdef bint _dropping                # the current message was refused with ACTION_DROP
    cdef object _pending               # bytes kept unconsumed after THROTTLED, else None
    cdef readonly int throttle_action
    cdef readonly int throttle_scope
    cdef readonly int64_t retry_after_ns
    cdef readonly uint64_t dropped_messages
    cdef readonly uint64_t dropped_frames
    cdef readonly int drop_scope

    # The per-chunk calls, C-callable for the relay legs (legs.pyx) and Python-visible.
    cpdef int process(self, object data) except -1
    cpdef object take_output(self)

    cdef int _run(self, const unsigned char* p, Py_ssize_t n, object whole) except -1
    cdef int _check(self, FrameHead* h) noexcept nogil
    cdef int _admit(self, FrameHead* h, int64_t* now, bint* have_now) noexcept nogil
    cdef int _fail(self, int err) except -1
    cdef int _start_compressed(self, FrameHead* h) except -1
    cdef int _meter_payload(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t phase,
                            bint last) except -1
    cdef bint _control_allowed(self, int64_t now) noexcept nogil
    cdef Py_ssize_t _emit_control(self, const unsigned char* frame, FrameHead* h,
                                  unsigned char* dst) except -1
    cdef unsigned char* _reserve(self, Py_ssize_t extra) except NULL
    cdef int _fit_output(self) except -1
