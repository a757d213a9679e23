"""How big a permessage-deflate message is once inflated, without keeping it; twin of
inflate_py.py (the spec).

The relay never needs a compressed message's content, only its size (RFC 7692 §7.2.2:
a message is its frames' payloads plus 00 00 ff ff, raw DEFLATE). So a meter inflates into
one scratch buffer shared by the process and counts. Two modes:

- context takeover allowed: a message may copy from up to 32 KiB of earlier messages. The
  length a DEFLATE stream inflates to does not depend on what the window holds, only on
  its codes, so the window is preset with zeros instead of the real history, and no
  connection has to keep 32 KiB per direction between messages.
- self-contained (``*_no_context_takeover`` was negotiated): no window is preset, so a
  back-reference to before the message is an error; this is how the gateway checks that a
  peer honours what it agreed to, which dropping messages relies on.

A meter lives only while a message is in flight (acquire at its first frame, release at
its end) and is pooled: zlib's state and window (~44 KiB) are reused, not reallocated.
"""

from libc.stdint cimport uint64_t
from libc.string cimport memset, strcmp

cdef extern from "zlib.h":
    enum:
        Z_OK
        Z_STREAM_END
        Z_BUF_ERROR
        Z_MEM_ERROR
        Z_SYNC_FLUSH
    int inflateInit2(z_stream* strm, int window_bits)
    int inflate(z_stream* strm, int flush)
    int inflateReset(z_stream* strm)
    int inflateEnd(z_stream* strm)
    int inflateSetDictionary(z_stream* strm, const unsigned char* dictionary,
                             unsigned int length)

OK = METER_OK
TOO_BIG = METER_TOO_BIG
INVALID = METER_INVALID
REFERS_BACK = METER_REFERS_BACK
MAX_POOLED = 32      # idle meters kept per mode

cdef enum:
    _WINDOW = 32768
    _SCRATCH = 65536

cdef const unsigned char* _TAIL = b"\x00\x00\xff\xff"
cdef unsigned char _zeros[_WINDOW]
cdef unsigned char _scratch[_SCRATCH]   # inflated output goes here, and is forgotten
memset(_zeros, 0, _WINDOW)

cdef list _pools = [[], []]   # idle meters: [context takeover, self-contained]


cdef class InflateMeter:
    """Measures one message at a time: start(), feed() its payload, finish()."""

    def __cinit__(self, *, bint self_contained=False):
        self._ready = False
        self.self_contained = self_contained
        self.inflated = 0
        self.ended = False

    def __dealloc__(self):
        if self._ready:
            inflateEnd(&self._z)

    cdef int c_start(self) except -1:
        cdef int rc
        if self._ready:
            rc = inflateReset(&self._z)
        else:
            memset(&self._z, 0, sizeof(z_stream))
            rc = inflateInit2(&self._z, -15)
            self._ready = rc == Z_OK
        if rc == Z_OK and not self.self_contained:
            rc = inflateSetDictionary(&self._z, _zeros, _WINDOW)
        if rc == Z_MEM_ERROR:
            raise MemoryError()
        if rc != Z_OK:
            raise RuntimeError(f"zlib inflate set-up failed ({rc})")
        self.inflated = 0
        self.ended = False
        return 0

    cdef int c_feed(self, const unsigned char* data, Py_ssize_t n, uint64_t limit) except -1:
        cdef int rc
        cdef unsigned int chunk
        while n > 0 and not self.ended:
            chunk = <unsigned int>(n if n < 0x40000000 else 0x40000000)
            self._z.next_in = <unsigned char*>data
            self._z.avail_in = chunk
            while True:
                self._z.next_out = _scratch
                self._z.avail_out = _SCRATCH
                rc = inflate(&self._z, Z_SYNC_FLUSH)
                self.inflated += _SCRATCH - self._z.avail_out
                if limit and self.inflated > limit:
                    return METER_TOO_BIG
                if rc == Z_STREAM_END:
                    self.ended = True
                    return METER_OK
                if rc == Z_MEM_ERROR:
                    raise MemoryError()
                if rc != Z_OK and rc != Z_BUF_ERROR:
                    if (self._z.msg != NULL
                            and strcmp(self._z.msg, b"invalid distance too far back") == 0):
                        return METER_REFERS_BACK
                    return METER_INVALID
                # Done with this input once it is used up and the output did not fill.
                if self._z.avail_out != 0 and (self._z.avail_in == 0 or rc == Z_BUF_ERROR):
                    break
            data += chunk
            n -= chunk
        return METER_OK

    cdef int c_finish(self, uint64_t limit) except -1:
        return self.c_feed(_TAIL, 4, limit)

    # Python view, for tests and the pure twin's equivalence checks.
    def start(self):
        """Begin a new message."""
        self.c_start()

    def feed(self, data, limit=0):
        """Inflate (and forget) the next payload bytes of the message; a METER status."""
        cdef const unsigned char[::1] view = data
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        if view.shape[0] == 0:
            return METER_OK
        return self.c_feed(&view[0], view.shape[0], limit)

    def finish(self, limit=0):
        """The message ended: inflate its implied 00 00 ff ff tail; a METER status."""
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        return self.c_finish(limit)


cdef InflateMeter acquire_meter(bint self_contained):
    cdef list pool = <list>_pools[1 if self_contained else 0]
    cdef InflateMeter meter
    if pool:
        meter = <InflateMeter>pool.pop()
    else:
        meter = InflateMeter(self_contained=self_contained)
    meter.c_start()
    return meter


cdef void release_meter(InflateMeter meter):
    cdef list pool = <list>_pools[1 if meter.self_contained else 0]
    if len(pool) < MAX_POOLED:
        pool.append(meter)


def pooled():
    """Idle meters kept for reuse, per mode (tests)."""
    return len(_pools[0]), len(_pools[1])
