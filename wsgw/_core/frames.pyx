"""The sans-I/O WebSocket frame relay codec (RFC 6455 §5); twin of frames_py.py (the spec).

Per frame, everything is C: the header is parsed in place, checked against C-level state,
and the payload streamed through (re-masked for the backend with one XOR of
``client_key ^ relay_key``). One process() call allocates at most one output object, and
in the backend-to-client direction an input that passes through whole is handed back as is.
With a Gate set, admission is a cdef call on C integers (see gate.pxd).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from wsgw._core.gate cimport Gate
from wsgw._core.inflate cimport (
    METER_OK,
    METER_REFERS_BACK,
    METER_TOO_BIG,
    InflateMeter,
    acquire_meter,
    release_meter,
)
from wsgw._core.mask cimport fresh_key, xor_mask

from wsgw._core.mask import random_key

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

NEED_DATA = 0
CLOSE = 1
ERROR = 2
THROTTLED = 3

cdef enum:
    _NEED_DATA = 0
    _CLOSE = 1
    _ERROR = 2
    _THROTTLED = 3
    _S_HEADER = 0     # expecting (the rest of) a frame header
    _S_PAYLOAD = 1    # streaming a data frame's payload
    _S_CONTROL = 2    # collecting a control frame's payload
    _S_SKIP = 3       # consuming the payload of a dropped data frame
    _V_FORWARD = 0    # _admit verdicts
    _V_DROP = 1
    _V_THROTTLE = 2
    _ACTION_DROP = 1  # gate.ACTION_DROP

# Protocol errors found at header time: _check returns an index into _ERRORS, so the
# per-frame path handles no Python object; the message is looked up only on failure.
cdef enum:
    _E_NOT_MASKED = 1
    _E_MASKED
    _E_RSV23
    _E_OPCODE
    _E_LENGTH
    _E_CONTROL_LONG
    _E_CONTROL_FRAGMENTED
    _E_CONTROL_RSV1
    _E_CLOSE_ONE_BYTE
    _E_CONTINUATION
    _E_CONTINUATION_RSV1
    _E_NEW_MESSAGE
    _E_RSV1
    _E_TOO_BIG
    _E_INFLATED_TOO_BIG
    _E_INFLATE
    _E_REFERS_BACK
    _E_CONTROL_RATE

_ERRORS = (
    None,
    (1002, "frame not masked"),
    (1002, "frame masked"),
    (1002, "reserved bit RSV2 or RSV3 set"),
    (1002, "reserved opcode"),
    (1002, "payload length has the most significant bit set"),
    (1002, "control frame payload too long"),
    (1002, "fragmented control frame"),
    (1002, "RSV1 set on a control frame"),
    (1002, "close frame payload of 1 byte"),
    (1002, "continuation frame without a message"),
    (1002, "RSV1 set on a continuation frame"),
    (1002, "new message inside a fragmented message"),
    (1002, "RSV1 set without an extension"),
    (1009, "message too big"),
    (1009, "message too big once inflated"),
    (1007, "invalid compressed data"),
    (1002, "compressed message refers to an earlier message (no context takeover agreed)"),
    (1008, "too many control frames"),
)

cdef enum:
    _SECOND_NS = 1000000000
    _MAX_CONTROL_RATE = 1000000
    _PLAIN_SLICE = 16384   # client direction: payload unmasked for the meter in slices
    _MAX_EXPANSION = 1032  # DEFLATE's largest output per input byte
    _WINDOW = 32768        # how far back a compressed message may refer

_UNSENDABLE_CODES = frozenset((1005, 1006, 1015))
_MAX_CLOSE_REASON = 123

cdef extern from "Python.h":
    # Own declarations: a raw new reference we manage, so _PyBytes_Resize can grow it.
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n) except NULL
    int _PyBytes_Resize(PyObject** pv, Py_ssize_t n)
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* o)


cdef inline int64_t _monotonic_ns() noexcept nogil:
    # The clock of time.monotonic_ns() on POSIX, read without the GIL or a Python call.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef Py_ssize_t parse_head(const unsigned char* p, Py_ssize_t n, FrameHead* h) noexcept nogil:
    cdef Py_ssize_t hl = 2
    cdef uint64_t length
    cdef unsigned char b1
    if n < 2:
        return 0
    b1 = p[1]
    length = b1 & 0x7F
    if length == 126:
        hl = 4
    elif length == 127:
        hl = 10
    if b1 & 0x80:
        hl += 4
    if n < hl:
        return 0
    if length == 126:
        length = (<uint64_t>p[2] << 8) | p[3]
    elif length == 127:
        length = ((<uint64_t>p[2] << 56) | (<uint64_t>p[3] << 48) | (<uint64_t>p[4] << 40)
                  | (<uint64_t>p[5] << 32) | (<uint64_t>p[6] << 24) | (<uint64_t>p[7] << 16)
                  | (<uint64_t>p[8] << 8) | <uint64_t>p[9])
    h.fin = (p[0] & 0x80) != 0
    h.rsv1 = (p[0] & 0x40) != 0
    h.rsv2 = (p[0] & 0x20) != 0
    h.rsv3 = (p[0] & 0x10) != 0
    h.opcode = p[0] & 0x0F
    h.masked = (b1 & 0x80) != 0
    h.key = 0
    if h.masked:
        memcpy(&h.key, p + hl - 4, 4)
    h.length = length
    h.header_length = hl
    return hl


cdef class FrameHeader:
    """A parsed frame header (see parse_header)."""

    def __repr__(self):
        return (
            f"FrameHeader(fin={self.fin}, rsv1={self.rsv1}, rsv2={self.rsv2}, "
            f"rsv3={self.rsv3}, opcode={self.opcode}, masked={self.masked}, "
            f"mask_key={self.mask_key!r}, payload_length={self.payload_length}, "
            f"header_length={self.header_length})"
        )


def parse_header(buf, Py_ssize_t offset=0):
    """Parse the frame header at ``buf[offset:]``; None when more bytes are needed.

    Parsing only: no protocol policy is checked (reserved bits, opcodes, lengths).
    """
    cdef Py_buffer view
    cdef FrameHead h
    cdef FrameHeader out
    cdef Py_ssize_t hl
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or offset > view.len:
            raise ValueError("offset out of range")
        hl = parse_head(<const unsigned char*>view.buf + offset, view.len - offset, &h)
    finally:
        PyBuffer_Release(&view)
    if hl == 0:
        return None
    out = FrameHeader.__new__(FrameHeader)
    out.fin = h.fin
    out.rsv1 = h.rsv1
    out.rsv2 = h.rsv2
    out.rsv3 = h.rsv3
    out.opcode = h.opcode
    out.masked = h.masked
    out.mask_key = PyBytes_FromStringAndSize(<char*>&h.key, 4) if h.masked else None
    out.payload_length = h.length
    out.header_length = hl
    return out


def build_frame(int opcode, payload, *, bint fin=True, bint rsv1=False, bint mask=False):
    """One frame with the shortest length encoding; ``mask=True`` uses a fresh random key.

    No policy is checked (a 200-byte ping is built as asked), so tests can build bad frames.
    """
    cdef Py_buffer view
    cdef unsigned char head[MAX_HEADER]
    cdef Py_ssize_t hl, n, i
    cdef uint32_t key = 0
    cdef bytes out
    cdef unsigned char* o
    cdef unsigned char mask_bit = 0x80 if mask else 0
    if not 0 <= opcode <= 15:
        raise ValueError("opcode must be in 0..15")
    if mask:
        memcpy(&key, PyBytes_AS_STRING(random_key()), 4)
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        head[0] = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        if n < 126:
            head[1] = mask_bit | <unsigned char>n
            hl = 2
        elif n < 65536:
            head[1] = mask_bit | 126
            head[2] = <unsigned char>(n >> 8)
            head[3] = <unsigned char>n
            hl = 4
        else:
            head[1] = mask_bit | 127
            for i in range(8):
                head[2 + i] = <unsigned char>((<uint64_t>n) >> (56 - 8 * i))
            hl = 10
        if mask:
            memcpy(head + hl, &key, 4)
            hl += 4
        out = PyBytes_FromStringAndSize(NULL, hl + n)
        o = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(o, head, hl)
        if mask:
            xor_mask(o + hl, <const unsigned char*>view.buf, n, key, 0)
        else:
            memcpy(o + hl, view.buf, n)
        return out
    finally:
        PyBuffer_Release(&view)


def build_close_payload(int code, reason=b""):
    """The payload of a close frame: 2-byte code + reason of at most 123 bytes.

    1005, 1006 and 1015 must never be sent, so they give an empty payload (a close frame
    without a code). A str reason is cut at a UTF-8 character boundary.
    """
    cdef Py_ssize_t cut
    if not 0 <= code <= 0xFFFF:
        raise ValueError("close code must be in 0..65535")
    if code in _UNSENDABLE_CODES:
        return b""
    if isinstance(reason, str):
        raw = reason.encode("utf-8")
        cut = min(len(raw), _MAX_CLOSE_REASON)
        if cut < len(raw):
            while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # continuation byte
                cut -= 1
    else:
        raw = bytes(reason)
        cut = min(len(raw), _MAX_CLOSE_REASON)
    return code.to_bytes(2, "big") + raw[:cut]


cdef class FrameRelay:
    """Validates and forwards the frames of one direction of a WebSocket connection.

    ``process(data)`` consumes bytes and returns NEED_DATA, CLOSE (a close frame went
    through; it is the last thing in the output) or ERROR (``error_code``/``error_reason``
    say why; the output holds what came before the offending frame). ``take_output()``
    hands over everything produced since the last call as one bytes object.
    With a gate (set_gate), process() may also return THROTTLED; see frames_py.FrameRelay.
    """

    def __cinit__(self):
        self._out = NULL

    def __init__(self, *, bint from_client, bint allow_rsv1=False, max_message_bytes=0,
                 bint self_contained=False, max_control_per_second=0):
        if max_message_bytes < 0:
            raise ValueError("max_message_bytes must be >= 0 (0 = no limit)")
        if not 0 <= max_control_per_second <= _MAX_CONTROL_RATE:
            raise ValueError("max_control_per_second must be in 0..1000000 (0 = no limit)")
        self.from_client = from_client
        self.allow_rsv1 = allow_rsv1
        self.max_message_bytes = max_message_bytes
        self.self_contained = self_contained
        self.max_control_per_second = max_control_per_second
        self._ctl_level = max_control_per_second * _SECOND_NS
        self._ctl_last = 0
        self._meter = None
        self._ckey = 0
        self._final = False
        self._compressed = False
        self._verify_left = 0
        self.compressed_messages = 0
        self.compressed_bytes = 0
        self.metered_bytes = 0
        self.inflated_bytes = 0
        self._state = _S_HEADER
        self._hlen = 0
        self._remaining = 0
        self._xkey = 0
        self._phase = 0
        self._fragmented = False
        self._message_bytes = 0
        Py_XDECREF(self._out)
        self._out = NULL
        self._out_len = 0
        self._out_shared = False
        self.close_code = 0
        self.close_reason = b""
        self.error_code = 0
        self.error_reason = ""
        self.data_frames = 0
        self.data_bytes = 0
        self.control_frames = 0
        self.closed = False
        self.gate = None
        self._dropping = False
        self._pending = None
        self.throttle_action = 0
        self.throttle_scope = 0
        self.retry_after_ns = 0
        self.dropped_messages = 0
        self.dropped_frames = 0
        self.drop_scope = 0

    @property
    def in_frame(self):
        """The output so far ends inside a data frame's payload: no other frame fits now."""
        return self._state == _S_PAYLOAD

    @property
    def in_message(self):
        """The output so far ends inside a data message (a frame, or between fragments):
        only control frames may be inserted now."""
        return self._state == _S_PAYLOAD or (self._fragmented and not self._dropping)

    def set_gate(self, Gate gate):
        """Admit data messages through ``gate`` from the next frame on (None: no throttling).

        Both relays of a connection share one gate, so both directions count together.
        """
        self.gate = gate

    def __dealloc__(self):
        Py_XDECREF(self._out)
        self._out = NULL

    cpdef object take_output(self):
        cdef object out
        if self._out == NULL:
            return None
        out = <object>self._out  # a new reference for the caller; ours is dropped below
        Py_DECREF(out)
        self._out = NULL
        self._out_len = 0
        self._out_shared = False
        return out

    cpdef int process(self, object data) except -1:
        cdef Py_buffer view
        cdef int result
        if self.closed:
            return _NEED_DATA
        if self._pending is not None:  # input kept by THROTTLED comes first
            data, self._pending = self._pending + data, None
        if type(data) is bytes:
            return self._run(<const unsigned char*>PyBytes_AS_STRING(data), len(<bytes>data),
                             data)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            result = self._run(<const unsigned char*>view.buf, view.len, None)
        finally:
            PyBuffer_Release(&view)
        return result

    cdef unsigned char* _reserve(self, Py_ssize_t extra) except NULL:
        """Grow the pending output by ``extra`` bytes; returns where they start."""
        cdef PyObject* fresh
        if self._out == NULL:
            self._out = _new_bytes(NULL, extra)
        elif self._out_shared:
            fresh = _new_bytes(NULL, self._out_len + extra)
            memcpy(_bytes_data(fresh), _bytes_data(self._out), self._out_len)
            Py_DECREF(<object>self._out)
            self._out = fresh
            self._out_shared = False
        elif _PyBytes_Resize(&self._out, self._out_len + extra) < 0:
            self._out_len = 0  # _PyBytes_Resize freed the object and set _out to NULL
            return NULL
        return <unsigned char*>_bytes_data(self._out) + self._out_len

    cdef int _fit_output(self) except -1:
        """Trim the pending output to the bytes actually written."""
        if self._out_len == 0:
            Py_XDECREF(self._out)
            self._out = NULL
        elif _PyBytes_Resize(&self._out, self._out_len) < 0:
            self._out_len = 0
            return -1
        return 0

    cdef int _check(self, FrameHead* h) noexcept nogil:
        """Protocol checks at header time; changes nothing (_run accepts the frame).

        Returns 0, or an index into _ERRORS.
        """
        cdef int op = h.opcode
        cdef uint64_t so_far
        if self.from_client and not h.masked:
            return _E_NOT_MASKED
        if not self.from_client and h.masked:
            return _E_MASKED
        if h.rsv2 or h.rsv3:
            return _E_RSV23
        if (3 <= op <= 7) or op >= 11:
            return _E_OPCODE
        if h.length >> 63:
            return _E_LENGTH
        if op >= 8:
            if h.length > MAX_CONTROL_PAYLOAD:
                return _E_CONTROL_LONG
            if not h.fin:
                return _E_CONTROL_FRAGMENTED
            if h.rsv1:
                return _E_CONTROL_RSV1
            if op == 8 and h.length == 1:
                return _E_CLOSE_ONE_BYTE
            return 0
        if op == 0:
            if not self._fragmented:
                return _E_CONTINUATION
            if h.rsv1:
                return _E_CONTINUATION_RSV1
        else:
            if self._fragmented:
                return _E_NEW_MESSAGE
            if h.rsv1 and not self.allow_rsv1:
                return _E_RSV1
        if self.max_message_bytes:
            so_far = self._message_bytes if op == 0 else 0
            if so_far + h.length > self.max_message_bytes:
                return _E_TOO_BIG
        return 0

    cdef int _admit(self, FrameHead* h, int64_t* now, bint* have_now) noexcept nogil:
        """The gate's verdict on a data frame that passed _check: _V_FORWARD, _V_DROP or
        _V_THROTTLE. The clock is read once per process() call, on first need."""
        cdef int action
        if h.opcode == 0:
            if self._dropping:  # the rest of a dropped message
                return _V_DROP
            if self.gate is not None:
                if not have_now[0]:
                    now[0] = _monotonic_ns()
                    have_now[0] = True
                self.gate.c_force(<int64_t>h.length, now[0])
            return _V_FORWARD
        if self.gate is None:
            return _V_FORWARD
        if not have_now[0]:
            now[0] = _monotonic_ns()
            have_now[0] = True
        action = self.gate.c_admit(<int64_t>h.length, now[0])
        if action == 0:
            return _V_FORWARD
        self.retry_after_ns = self.gate.retry_after_ns
        if action == _ACTION_DROP:
            self.drop_scope = self.gate.last_scope
            self.dropped_messages += 1
            return _V_DROP
        self.throttle_action = action
        self.throttle_scope = self.gate.last_scope
        return _V_THROTTLE

    cdef int _fail(self, int err) except -1:
        self.error_code, self.error_reason = _ERRORS[err]
        return 0

    cdef int _start_compressed(self, FrameHead* h) except -1:
        """The first frame of a compressed message: inflate it only where that can matter.

        - Size: DEFLATE inflates at most 1032 bytes per byte (a 1-bit length 258 and a 1-bit
          distance in 2 bits), so a one-frame message of n payload bytes (+ the 4-byte tail)
          with (n + 4) * 1032 <= max_message_bytes cannot exceed it.
        - Self-containment: only a message that starts within the 32 KiB window after a
          dropped one can refer into what the receiver never saw; those are checked.
        """
        cdef bint verify = self.self_contained and self._verify_left > 0
        cdef uint64_t limit = self.max_message_bytes
        self.compressed_messages += 1
        self._compressed = True
        if verify or (limit and not (h.fin and h.length + 4 <= limit // _MAX_EXPANSION)):
            self._meter = acquire_meter(verify)
        return 0

    cdef int _meter_payload(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t phase,
                            bint last) except -1:
        """Measure n payload bytes of the compressed message in flight (unmasked first in
        the client direction); with ``last`` the message ends here. Returns 0 or an index
        into _ERRORS. The meter goes back to its pool when the message ends or fails."""
        cdef unsigned char plain[_PLAIN_SLICE]
        cdef InflateMeter meter = self._meter
        cdef uint64_t before = meter.inflated
        cdef Py_ssize_t i = 0, k
        cdef int status = METER_OK
        if self.from_client:
            while i < n and status == METER_OK:
                k = n - i if n - i < _PLAIN_SLICE else _PLAIN_SLICE
                xor_mask(plain, p + i, k, self._ckey, (phase + i) & 3)
                status = meter.c_feed(plain, k, self.max_message_bytes)
                i += k
        elif n:
            status = meter.c_feed(p, n, self.max_message_bytes)
        if status == METER_OK and last:
            status = meter.c_finish(self.max_message_bytes)
        self.inflated_bytes += meter.inflated - before
        if last and meter.self_contained:
            self._verify_left -= min(self._verify_left, meter.inflated)
        if last or status != METER_OK:
            self._meter = None
            release_meter(meter)
        if status == METER_OK:
            return 0
        if status == METER_TOO_BIG:
            return _E_INFLATED_TOO_BIG
        if status == METER_REFERS_BACK:
            return _E_REFERS_BACK
        return _E_INFLATE

    cdef bint _control_allowed(self, int64_t now) noexcept nogil:
        """Take a token for a ping or pong: the bucket holds one second's worth."""
        cdef int64_t rate = self.max_control_per_second
        cdef int64_t elapsed
        if now > self._ctl_last:
            elapsed = now - self._ctl_last
            if elapsed > _SECOND_NS:
                elapsed = _SECOND_NS
            self._ctl_level += elapsed * rate
            if self._ctl_level > rate * _SECOND_NS:
                self._ctl_level = rate * _SECOND_NS
            self._ctl_last = now
        if self._ctl_level < _SECOND_NS:
            return False
        self._ctl_level -= _SECOND_NS
        return True

    cdef Py_ssize_t _emit_control(self, const unsigned char* frame, FrameHead* h,
                                  unsigned char* dst) except -1:
        """Forward a complete control frame to dst (client direction; NULL otherwise).

        Returns the bytes written. A close frame sets close_code, close_reason and closed.
        """
        cdef Py_ssize_t hl = h.header_length
        cdef Py_ssize_t n = <Py_ssize_t>h.length
        cdef const unsigned char* payload = frame + hl
        cdef unsigned char plain[MAX_CONTROL_PAYLOAD]
        cdef uint32_t key
        cdef Py_ssize_t written = 0
        if self.from_client:
            key = fresh_key(h.key)
            memcpy(dst, frame, hl - 4)
            memcpy(dst + hl - 4, &key, 4)
            xor_mask(dst + hl, payload, n, h.key ^ key, 0)
            written = hl + n
        self.control_frames += 1
        if h.opcode != 8:
            return written
        if self.from_client:
            xor_mask(plain, payload, n, h.key, 0)
            payload = plain
        if n >= 2:
            self.close_code = (payload[0] << 8) | payload[1]
            self.close_reason = PyBytes_FromStringAndSize(<const char*>payload + 2, n - 2)
        else:
            self.close_code = 1005
            self.close_reason = b""
        self.closed = True
        return written

    cdef int _run(self, const unsigned char* p, Py_ssize_t n, object whole) except -1:
        cdef bint client = self.from_client
        cdef int result = _NEED_DATA
        cdef int state = self._state
        cdef Py_ssize_t pos = 0, avail, take, hl, before = 0, frame_start = 0, head_pos
        cdef Py_ssize_t old_hlen = self._hlen
        cdef Py_ssize_t pre_len = 0    # server direction: retained bytes still to go out
        cdef Py_ssize_t seg = 0        # server direction: data[seg:end] goes out verbatim
        cdef Py_ssize_t end = 0
        cdef Py_ssize_t w = 0          # client direction: bytes written at o
        cdef bint emitted = False
        cdef bint from_hbuf
        cdef unsigned char* o = NULL
        cdef unsigned char pre[MAX_RETAINED]
        cdef const unsigned char* frame
        cdef FrameHead h
        cdef uint32_t key
        cdef int err
        cdef int verdict
        cdef int64_t now = 0
        cdef bint have_now = False

        # Server direction: this call's output is the retained bytes (once their frame
        # completes) followed by data[seg:end], verbatim. Nothing is copied until the end,
        # unless a dropped frame cuts the verbatim run in two (then what came before it is
        # copied out at once).
        if old_hlen and not client:
            memcpy(pre, self._hbuf, old_hlen)
            pre_len = old_hlen
        while True:
            if state == _S_PAYLOAD:
                avail = n - pos
                if avail == 0:
                    break
                take = avail if <uint64_t>avail < self._remaining else <Py_ssize_t>self._remaining
                if self._meter is not None:
                    err = self._meter_payload(p + pos, take, self._phase,
                                              self._final and <uint64_t>take == self._remaining)
                    if err:
                        self._fail(err)
                        result = _ERROR  # inside the frame: in_frame stays true
                        break
                if client:
                    if o == NULL:
                        o = self._reserve(old_hlen + n)
                    xor_mask(o + w, p + pos, take, self._xkey, self._phase)
                    w += take
                    self._phase = (self._phase + take) & 3
                pos += take
                self._remaining -= take
                end = pos
                emitted = True
                if self._remaining == 0:
                    state = _S_HEADER
                continue

            if state == _S_CONTROL:
                take = <Py_ssize_t>self._ctl.header_length + <Py_ssize_t>self._ctl.length
                take -= self._hlen
                if take > n - pos:
                    take = n - pos
                memcpy(self._hbuf + self._hlen, p + pos, take)
                self._hlen += take
                pos += take
                if self._hlen < self._ctl.header_length + <Py_ssize_t>self._ctl.length:
                    break
                self._hlen = 0
                state = _S_HEADER
                if client and o == NULL:
                    o = self._reserve(old_hlen + n)
                w += self._emit_control(self._hbuf, &self._ctl, o + w if client else NULL)
                end = pos
                emitted = True
                if self._ctl.opcode == 8:
                    result = _CLOSE
                    break
                continue

            if state == _S_SKIP:
                avail = n - pos
                if avail == 0:
                    break
                take = avail if <uint64_t>avail < self._remaining else <Py_ssize_t>self._remaining
                pos += take
                self._remaining -= take
                seg = end = pos
                if self._remaining == 0:
                    state = _S_HEADER
                continue

            # _S_HEADER
            avail = n - pos
            head_pos = pos
            if self._hlen == 0:
                if avail == 0:
                    break
                hl = parse_head(p + pos, avail, &h)
                if hl == 0:
                    memcpy(self._hbuf, p + pos, avail)
                    self._hlen = avail
                    pos = n
                    break
                frame = p + pos
                frame_start = pos
                pos += hl
                from_hbuf = False
            else:
                before = self._hlen
                take = MAX_HEADER - before
                if take > avail:
                    take = avail
                memcpy(self._hbuf + before, p + pos, take)
                hl = parse_head(self._hbuf, before + take, &h)
                if hl == 0:
                    self._hlen = before + take
                    pos += take
                    break
                self._hlen = hl  # what was copied past the header belongs to the payload
                pos += hl - before
                frame = self._hbuf
                from_hbuf = True
            err = self._check(&h)
            if err:
                self._fail(err)
                self._hlen = 0
                result = _ERROR
                break

            if h.opcode >= 8:
                if self.max_control_per_second and h.opcode != 8:
                    if not have_now:
                        now = _monotonic_ns()
                        have_now = True
                    if not self._control_allowed(now):
                        self._fail(_E_CONTROL_RATE)
                        self._hlen = 0
                        result = _ERROR
                        break
                if not from_hbuf and <uint64_t>(n - pos) >= h.length:
                    pos += <Py_ssize_t>h.length
                    if client and o == NULL:
                        o = self._reserve(old_hlen + n)
                    w += self._emit_control(frame, &h, o + w if client else NULL)
                    end = pos
                    emitted = True
                    if h.opcode == 8:
                        result = _CLOSE
                        break
                else:
                    if not from_hbuf:
                        memcpy(self._hbuf, frame, hl)
                        self._hlen = hl
                    self._ctl = h
                    state = _S_CONTROL
                continue

            # Data frame. Without a gate (and no message being dropped) this is one check.
            verdict = _V_FORWARD
            if self.gate is not None or self._dropping:
                verdict = self._admit(&h, &now, &have_now)
                if verdict == _V_THROTTLE:
                    # Stop before this frame: nothing of it is consumed or output. A header
                    # begun in an earlier call stays retained; the rest of the input is kept.
                    self._hlen = before if from_hbuf else 0
                    if head_pos < n:
                        if whole is not None and head_pos == 0:
                            self._pending = whole
                        else:
                            self._pending = PyBytes_FromStringAndSize(
                                <const char*>p + head_pos, n - head_pos)
                    result = _THROTTLED
                    break
            if self.max_message_bytes:
                self._message_bytes = (self._message_bytes if h.opcode == 0 else 0) + h.length
            self._fragmented = not h.fin
            self._hlen = 0
            self._remaining = h.length
            if verdict == _V_DROP:
                if h.rsv1 and h.opcode != 0 and self.self_contained:
                    self._verify_left = _WINDOW  # what follows may refer into it
                self._dropping = not h.fin
                self.dropped_frames += 1
                if not client:
                    # What came before this frame goes out now; the frame never does.
                    if not from_hbuf and (pre_len or frame_start > seg):
                        o = self._reserve(pre_len + frame_start - seg)
                        memcpy(o, pre, pre_len)
                        memcpy(o + pre_len, p + seg, frame_start - seg)
                        self._out_len += pre_len + frame_start - seg
                        o = NULL
                    pre_len = 0
                    seg = end = pos
                if self._remaining:
                    state = _S_SKIP
                continue
            # permessage-deflate: a message that needs it is inflated as it streams through.
            if h.opcode != 0:
                self._compressed = False
                if h.rsv1:
                    self._start_compressed(&h)
            if self._compressed:
                self.compressed_bytes += h.length
            if self._meter is not None:
                self.metered_bytes += h.length
                self._final = h.fin
                if h.length == 0 and h.fin:  # the payload path will not see this frame
                    err = self._meter_payload(p, 0, 0, True)
                    if err:
                        self._fail(err)
                        self._fragmented = False
                        result = _ERROR
                        break
            self.data_frames += 1
            self.data_bytes += h.length

            # Forward the header now, then stream the payload.
            if client:
                if o == NULL:
                    o = self._reserve(old_hlen + n)
                key = fresh_key(h.key)
                memcpy(o + w, frame, hl - 4)
                memcpy(o + w + hl - 4, &key, 4)
                w += hl
                self._ckey = h.key
                self._xkey = h.key ^ key
                self._phase = 0
            end = pos
            emitted = True
            if self._remaining:
                state = _S_PAYLOAD

        self._state = state
        if result == _CLOSE or result == _ERROR:
            self.closed = True
            if state != _S_PAYLOAD:
                self._state = _S_HEADER
        if client:
            if o != NULL:
                self._out_len += w
                self._fit_output()
        elif emitted:
            if (self._out == NULL and pre_len == 0 and seg == 0 and end == n
                    and whole is not None):
                Py_INCREF(whole)
                self._out = <PyObject*>whole
                self._out_len = n
                self._out_shared = True
            else:
                if pre_len == 0 and end == seg:
                    return result
                o = self._reserve(pre_len + end - seg)
                memcpy(o, pre, pre_len)
                memcpy(o + pre_len, p + seg, end - seg)
                self._out_len += pre_len + end - seg
        return result
