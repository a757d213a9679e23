"""Per-message admission against shared limits; twin of gate_py.py (the spec).

A Limit's state is a C struct inside the object; a Gate keeps pointers to its limits'
structs, so admit/force (cdef, nogil) are integer work only. The Python methods validate
their arguments and call the same C functions.
"""

import time

from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t, uint64_t

from wsgw._core.int128 cimport (
    WSGW_LEVEL_CEIL,
    WSGW_LEVEL_FLOOR,
    WSGW_MAX_TOKENS,
    WSGW_UNITS,
    as_int64,
    check_tokens,
    wsgw_floor_div,
    wsgw_i128,
)

ACTION_DROP = 1
ACTION_CLOSE = 2
ACTION_SHAPE = 3
UNLIMITED = 2**63 - 1
LEASED_RETRY_NS = 50_000_000
MAX_LIMITS = GATE_MAX_LIMITS


cdef enum:
    _ACTION_DROP = 1
    _ACTION_SHAPE = 3
    _LEASED_RETRY_NS = 50000000
    _INT64_MAX = 0x7FFFFFFFFFFFFFFF


# --- argument checks beyond int128.pxd's (ints only, like the pure twin) ---------------

cdef inline int64_t _length(object v) except? -1:
    cdef int64_t n = as_int64(v)
    if n < 0:
        raise ValueError("payload_len must be in 0..2**63-1")
    return n


# --- the per-limit C functions (see gate_py.Limit._refill etc.) --------------------------

cdef inline void _refill(LimitState* s, int64_t now) noexcept nogil:
    cdef wsgw_i128 elapsed, gain
    if s.leased or now <= s.last:
        return
    # elapsed < 2**64 and rate <= 2**62: the product fits 127 bits.
    elapsed = <wsgw_i128>(<uint64_t>now - <uint64_t>s.last)
    s.last = now
    if s.msg_rate:
        gain = elapsed * s.msg_rate
        if gain >= s.msg_full - s.msg_level:
            s.msg_level = s.msg_full
        else:
            s.msg_level += gain
    if s.byte_rate:
        gain = elapsed * s.byte_rate
        if gain >= s.byte_full - s.byte_level:
            s.byte_level = s.byte_full
        else:
            s.byte_level += gain


cdef inline bint _passes(LimitState* s, int64_t n) noexcept nogil:
    # A frame larger than the byte capacity passes once the bucket is full.
    if s.msg_rate and s.msg_level < WSGW_UNITS:
        return False
    if s.byte_rate:
        if n > s.byte_rate:
            n = s.byte_rate
        if s.byte_level < <wsgw_i128>n * WSGW_UNITS:
            return False
    return True


cdef inline void _take(LimitState* s, int64_t n) noexcept nogil:
    if s.msg_rate:
        s.msg_level -= WSGW_UNITS
        if s.msg_level < WSGW_LEVEL_FLOOR:
            s.msg_level = WSGW_LEVEL_FLOOR
    if s.byte_rate:
        s.byte_level -= <wsgw_i128>(n if n < WSGW_MAX_TOKENS else WSGW_MAX_TOKENS) \
            * WSGW_UNITS
        if s.byte_level < WSGW_LEVEL_FLOOR:
            s.byte_level = WSGW_LEVEL_FLOOR
    s.consumed_messages += 1
    s.consumed_bytes += <uint64_t>n


cdef inline int64_t _retry_after(LimitState* s, int64_t n) noexcept nogil:
    cdef wsgw_i128 deficit, wait = 0, w
    if s.leased:
        return _LEASED_RETRY_NS
    if s.msg_rate:
        deficit = WSGW_UNITS - s.msg_level
        if deficit > 0:
            wait = (deficit + s.msg_rate - 1) / s.msg_rate
    if s.byte_rate:
        if n > s.byte_rate:
            n = s.byte_rate
        deficit = <wsgw_i128>n * WSGW_UNITS - s.byte_level
        if deficit > 0:
            w = (deficit + s.byte_rate - 1) / s.byte_rate
            if w > wait:
                wait = w
    if wait > <wsgw_i128>_INT64_MAX:
        return _INT64_MAX
    return <int64_t>wait


cdef class Limit:
    """Two token buckets (messages, payload bytes) for one throttling key; 0 = unlimited.

    See gate_py.Limit for the exact semantics of LOCAL and LEASED mode and each method.
    """

    def __init__(self, messages_per_minute=0, bytes_per_minute=0, burst=0, now_ns=None):
        cdef int64_t mpm = check_tokens(messages_per_minute, "messages_per_minute")
        cdef int64_t bpm = check_tokens(bytes_per_minute, "bytes_per_minute")
        cdef int64_t extra = check_tokens(burst, "burst")
        if mpm + extra > WSGW_MAX_TOKENS:
            raise ValueError("messages_per_minute + burst must be at most 2**62")
        self.burst = extra
        self.s.msg_rate = mpm
        self.s.byte_rate = bpm
        self.s.msg_full = <wsgw_i128>(mpm + extra) * WSGW_UNITS if mpm else 0
        self.s.byte_full = <wsgw_i128>bpm * WSGW_UNITS
        self.s.msg_level = self.s.msg_full
        self.s.byte_level = self.s.byte_full
        self.s.last = as_int64(time.monotonic_ns() if now_ns is None else now_ns)
        self.s.leased = False
        self.s.starved = False
        self.s.consumed_messages = 0
        self.s.consumed_bytes = 0

    @property
    def messages_per_minute(self):
        return self.s.msg_rate

    @property
    def bytes_per_minute(self):
        return self.s.byte_rate

    @property
    def leased(self):
        return self.s.leased

    @property
    def consumed_messages(self):
        return self.s.consumed_messages

    @property
    def consumed_bytes(self):
        return self.s.consumed_bytes

    @property
    def message_capacity(self):
        """messages_per_minute + burst; 0 when messages are unlimited."""
        return <int64_t>(self.s.msg_full / WSGW_UNITS)

    @property
    def byte_capacity(self):
        """bytes_per_minute; 0 when bytes are unlimited."""
        return self.s.byte_rate

    @property
    def starved(self):
        """Set when an admission failed in LEASED mode; the lease manager clears it."""
        return self.s.starved

    @starved.setter
    def starved(self, value):
        self.s.starved = bool(value)

    def __repr__(self):
        return (
            f"Limit(messages_per_minute={self.s.msg_rate}, "
            f"bytes_per_minute={self.s.byte_rate}, burst={self.burst}, "
            f"{'leased' if self.s.leased else 'local'})"
        )

    def set_leased(self, leased, now_ns=None):
        """Switch mode (no change if already in it); see gate_py.Limit.set_leased."""
        cdef int64_t now = as_int64(time.monotonic_ns() if now_ns is None else now_ns)
        cdef bint want = bool(leased)
        if want == self.s.leased:
            return
        self.s.leased = want
        if want:
            self.s.msg_level = 0
            self.s.byte_level = 0
        else:
            self.s.msg_level = self.s.msg_full
            self.s.byte_level = self.s.byte_full
            self.s.last = now

    def grant(self, messages, bytes):
        """Add tokens, paying back debt first; see gate_py.Limit.grant."""
        cdef wsgw_i128 m = <wsgw_i128>check_tokens(messages, "messages") * WSGW_UNITS
        cdef wsgw_i128 b = <wsgw_i128>check_tokens(bytes, "bytes") * WSGW_UNITS
        cdef wsgw_i128 m_top = WSGW_LEVEL_CEIL if self.s.leased else self.s.msg_full
        cdef wsgw_i128 b_top = WSGW_LEVEL_CEIL if self.s.leased else self.s.byte_full
        if self.s.msg_rate:
            self.s.msg_level += m
            if self.s.msg_level > m_top:
                self.s.msg_level = m_top
        if self.s.byte_rate:
            self.s.byte_level += b
            if self.s.byte_level > b_top:
                self.s.byte_level = b_top

    def take_unused(self):
        """LEASED: remove and return the whole positive tokens of both levels."""
        cdef wsgw_i128 m = 0, b = 0
        if not self.s.leased:
            return (0, 0)
        if self.s.msg_level > 0:
            m = self.s.msg_level / WSGW_UNITS
        if self.s.byte_level > 0:
            b = self.s.byte_level / WSGW_UNITS
        self.s.msg_level -= m * WSGW_UNITS
        self.s.byte_level -= b * WSGW_UNITS
        return (<int64_t>m, <int64_t>b)

    def messages_available(self, now_ns):
        """Whole message tokens now (negative in debt); UNLIMITED when unlimited."""
        _refill(&self.s, as_int64(now_ns))
        if not self.s.msg_rate:
            return UNLIMITED
        return <int64_t>wsgw_floor_div(self.s.msg_level, WSGW_UNITS)

    def bytes_available(self, now_ns):
        """Whole byte tokens now (negative in debt); UNLIMITED when unlimited."""
        _refill(&self.s, as_int64(now_ns))
        if not self.s.byte_rate:
            return UNLIMITED
        return <int64_t>wsgw_floor_div(self.s.byte_level, WSGW_UNITS)


cdef class Gate:
    """The limits of ONE connection, checked in order; the first one exhausted decides.

    ``limits``: a sequence of ``(Limit, action, scope)``. See gate_py.Gate.
    """

    def __init__(self, limits):
        cdef list entries = []
        cdef Limit limit
        cdef int i
        for entry in limits:
            limit_obj, action, scope = entry
            if not isinstance(limit_obj, Limit):
                raise TypeError("a gate entry is (Limit, action, scope)")
            action = PyNumber_Index(action)
            scope = PyNumber_Index(scope)
            if action not in (ACTION_DROP, ACTION_CLOSE, ACTION_SHAPE):
                raise ValueError("action must be ACTION_DROP, ACTION_CLOSE or ACTION_SHAPE")
            if not -(2**31) <= scope <= 2**31 - 1:
                raise OverflowError("scope does not fit a C int")
            entries.append((limit_obj, action, scope))
        if len(entries) > GATE_MAX_LIMITS:
            raise ValueError(f"a gate holds at most {GATE_MAX_LIMITS} limits")
        self.limits = tuple(entries)
        self._count = len(entries)
        for i in range(self._count):
            limit = entries[i][0]
            self._states[i] = &limit.s
            self._actions[i] = entries[i][1]
            self._scopes[i] = entries[i][2]
        self.last_scope = 0
        self.retry_after_ns = 0

    def __repr__(self):
        return f"Gate({list(self.limits)!r})"

    cdef int c_admit(self, int64_t payload_len, int64_t now_ns) noexcept nogil:
        cdef int i, refused = 0
        cdef LimitState* s
        for i in range(self._count):
            s = self._states[i]
            _refill(s, now_ns)
            if _passes(s, payload_len):
                continue
            if s.leased:
                s.starved = True
            if not refused:
                refused = self._actions[i]
                self.last_scope = self._scopes[i]
                self.retry_after_ns = _retry_after(s, payload_len)
        if refused:
            return refused
        for i in range(self._count):
            _take(self._states[i], payload_len)
        return 0

    cdef void c_force(self, int64_t payload_len, int64_t now_ns) noexcept nogil:
        cdef int i
        cdef LimitState* s
        for i in range(self._count):
            s = self._states[i]
            _refill(s, now_ns)
            _take(s, payload_len)

    def admit(self, payload_len, now_ns):
        """The first frame of a data message: 0 or the refusing action (see gate_py)."""
        return self.c_admit(_length(payload_len), as_int64(now_ns))

    def force(self, payload_len, now_ns):
        """A continuation frame of an admitted message: consume, into debt if needed."""
        self.c_force(_length(payload_len), as_int64(now_ns))
