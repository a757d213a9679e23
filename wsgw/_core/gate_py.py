"""Pure-Python twin of gate.pyx: per-message admission against shared limits (the spec).

A ``Limit`` is one throttling key (subscription, application or API) in one process, shared
by every connection it covers. It holds two token buckets: messages and payload bytes. A
``Gate`` is the ordered list of limits of ONE connection; both relays of the connection
(client->backend and backend->client) ask the same gate, so both directions count against
the same limits.

Arithmetic is exact integers, as in bucket_py.py: a level counts 1 / (60 * 10**9) token, so a
refill of N tokens per minute is exactly ``elapsed_ns * N`` units. gate.pyx does the same in
128-bit C integers and must behave identically (tests/core runs both).

Limits (both twins): rates and burst in 0..2**62 with ``messages_per_minute + burst <= 2**62``;
token counts in 0..2**62; now_ns within a signed 64-bit integer; integer arguments only.
A level in debt saturates at -2**62 tokens; retry_after_ns at 2**63 - 1. The cumulative
``consumed_*`` counters are 64-bit in C (wrap after 2**64, far beyond any real run).
"""

from __future__ import annotations

import operator
import time

from .bucket_py import _NS_MAX, MAX_RETRY_NS, MAX_TOKENS, UNITS_PER_TOKEN, _clock, _tokens

ACTION_DROP = 1
ACTION_CLOSE = 2
ACTION_SHAPE = 3

# messages_available()/bytes_available() of an unlimited dimension.
UNLIMITED = 2**63 - 1
# LEASED mode has no clock-driven refill: a refused sender retries at the lease cadence.
LEASED_RETRY_NS = 50_000_000
# At most this many limits per gate (the design uses three: subscription, application, api).
MAX_LIMITS = 8

_LEVEL_FLOOR = -MAX_TOKENS * UNITS_PER_TOKEN
_LEVEL_CEIL = MAX_TOKENS * UNITS_PER_TOKEN
_U64 = 2**64
_ACTIONS = (ACTION_DROP, ACTION_CLOSE, ACTION_SHAPE)
_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1


def _length(payload_len: int) -> int:
    payload_len = operator.index(payload_len)
    if not 0 <= payload_len <= _NS_MAX:
        raise ValueError("payload_len must be in 0..2**63-1")
    return payload_len


class Limit:
    """Two token buckets (messages, payload bytes) for one throttling key; 0 = unlimited.

    Message capacity is ``messages_per_minute + burst`` (burst is ignored when messages are
    unlimited); byte capacity is ``bytes_per_minute``. Both start full.

    LOCAL mode (the default): the buckets refill continuously from the clock, exactly as
    TokenBucket; a clock that goes backwards is ignored.
    LEASED mode (cluster): no refill; tokens arrive only through ``grant()`` (the lease
    manager takes them from the shared Redis bucket) and go back through ``take_unused()``.
    """

    __slots__ = (
        "_mpm",
        "_bpm",
        "_burst",
        "_msg_full",
        "_byte_full",
        "_msg_level",
        "_byte_level",
        "_last",
        "_leased",
        "starved",
        "_consumed_messages",
        "_consumed_bytes",
    )

    def __init__(
        self,
        messages_per_minute: int = 0,
        bytes_per_minute: int = 0,
        burst: int = 0,
        now_ns: int | None = None,
    ) -> None:
        mpm = _tokens(messages_per_minute, "messages_per_minute")
        bpm = _tokens(bytes_per_minute, "bytes_per_minute")
        extra = _tokens(burst, "burst")
        if mpm + extra > MAX_TOKENS:
            raise ValueError("messages_per_minute + burst must be at most 2**62")
        self._mpm = mpm
        self._bpm = bpm
        self._burst = extra
        self._msg_full = (mpm + extra) * UNITS_PER_TOKEN if mpm else 0
        self._byte_full = bpm * UNITS_PER_TOKEN
        self._msg_level = self._msg_full
        self._byte_level = self._byte_full
        self._last = _clock(time.monotonic_ns() if now_ns is None else now_ns)
        self._leased = False
        # Set when an admission failed in LEASED mode; the lease manager clears it.
        self.starved = False
        self._consumed_messages = 0
        self._consumed_bytes = 0

    messages_per_minute = property(lambda self: self._mpm)
    bytes_per_minute = property(lambda self: self._bpm)
    burst = property(lambda self: self._burst)
    leased = property(lambda self: self._leased)
    consumed_messages = property(lambda self: self._consumed_messages)
    consumed_bytes = property(lambda self: self._consumed_bytes)

    @property
    def message_capacity(self) -> int:
        """messages_per_minute + burst; 0 when messages are unlimited."""
        return self._msg_full // UNITS_PER_TOKEN

    @property
    def byte_capacity(self) -> int:
        """bytes_per_minute; 0 when bytes are unlimited."""
        return self._bpm

    def __repr__(self) -> str:
        mode = "leased" if self._leased else "local"
        return (
            f"Limit(messages_per_minute={self._mpm}, bytes_per_minute={self._bpm}, "
            f"burst={self._burst}, {mode})"
        )

    # --- internal, shared with Gate ------------------------------------------------------

    def _refill(self, now_ns: int) -> None:
        if self._leased or now_ns <= self._last:
            return
        elapsed = now_ns - self._last
        self._last = now_ns
        if self._mpm:
            self._msg_level = min(self._msg_level + elapsed * self._mpm, self._msg_full)
        if self._bpm:
            self._byte_level = min(self._byte_level + elapsed * self._bpm, self._byte_full)

    def _passes(self, payload_len: int) -> bool:
        # A frame larger than the byte capacity passes once the bucket is full.
        if self._mpm and self._msg_level < UNITS_PER_TOKEN:
            return False
        return not (self._bpm and self._byte_level < min(payload_len, self._bpm) * UNITS_PER_TOKEN)

    def _take(self, payload_len: int) -> None:
        if self._mpm:
            self._msg_level = max(self._msg_level - UNITS_PER_TOKEN, _LEVEL_FLOOR)
        if self._bpm:
            need = min(payload_len, MAX_TOKENS) * UNITS_PER_TOKEN
            self._byte_level = max(self._byte_level - need, _LEVEL_FLOOR)
        self._consumed_messages = (self._consumed_messages + 1) % _U64
        self._consumed_bytes = (self._consumed_bytes + payload_len) % _U64

    def _retry_after(self, payload_len: int) -> int:
        if self._leased:
            return LEASED_RETRY_NS
        wait = 0
        if self._mpm:
            deficit = UNITS_PER_TOKEN - self._msg_level
            if deficit > 0:
                wait = -(-deficit // self._mpm)
        if self._bpm:
            deficit = min(payload_len, self._bpm) * UNITS_PER_TOKEN - self._byte_level
            if deficit > 0:
                wait = max(wait, -(-deficit // self._bpm))
        return min(wait, MAX_RETRY_NS)

    # --- public --------------------------------------------------------------------------

    def set_leased(self, leased: bool, now_ns: int | None = None) -> None:
        """Switch mode; switching to the current mode changes nothing.

        Entering LEASED empties both buckets (tokens now come only from grant()). Leaving
        LEASED (Redis down with failure=open) refills both to capacity: the documented
        fallback is a fresh local limit, per process.
        """
        now = _clock(time.monotonic_ns() if now_ns is None else now_ns)
        leased = bool(leased)
        if leased == self._leased:
            return
        self._leased = leased
        if leased:
            self._msg_level = 0
            self._byte_level = 0
        else:
            self._msg_level = self._msg_full
            self._byte_level = self._byte_full
            self._last = now

    def grant(self, messages: int, bytes: int) -> None:  # noqa: A002 - the design's name
        """Add tokens: pays back debt first (levels may be negative).

        LEASED: not capped at capacity (granted tokens already left the shared bucket;
        the lease manager bounds lease sizes), saturating at 2**62. LOCAL: capped at
        capacity, like TokenBucket.give_back. An unlimited dimension ignores its grant.
        """
        m = _tokens(messages, "messages") * UNITS_PER_TOKEN
        b = _tokens(bytes, "bytes") * UNITS_PER_TOKEN
        m_top = _LEVEL_CEIL if self._leased else self._msg_full
        b_top = _LEVEL_CEIL if self._leased else self._byte_full
        if self._mpm:
            self._msg_level = min(self._msg_level + m, m_top)
        if self._bpm:
            self._byte_level = min(self._byte_level + b, b_top)

    def take_unused(self) -> tuple[int, int]:
        """LEASED: remove and return the whole positive tokens of both levels (give-back).

        LOCAL (nothing was leased) and unlimited dimensions give 0.
        """
        if not self._leased:
            return (0, 0)
        m = max(self._msg_level, 0) // UNITS_PER_TOKEN
        b = max(self._byte_level, 0) // UNITS_PER_TOKEN
        self._msg_level -= m * UNITS_PER_TOKEN
        self._byte_level -= b * UNITS_PER_TOKEN
        return (m, b)

    def messages_available(self, now_ns: int) -> int:
        """Whole message tokens now (negative in debt); UNLIMITED when unlimited."""
        self._refill(_clock(now_ns))
        return self._msg_level // UNITS_PER_TOKEN if self._mpm else UNLIMITED

    def bytes_available(self, now_ns: int) -> int:
        """Whole byte tokens now (negative in debt); UNLIMITED when unlimited."""
        self._refill(_clock(now_ns))
        return self._byte_level // UNITS_PER_TOKEN if self._bpm else UNLIMITED


class Gate:
    """The limits of ONE connection, checked in order; the first one exhausted decides.

    ``limits`` is a sequence of ``(Limit, action, scope)``: action is ACTION_DROP,
    ACTION_CLOSE or ACTION_SHAPE; scope is the caller's integer label (e.g. 0 subscription,
    1 application, 2 api), handed back in ``last_scope``.
    """

    __slots__ = ("_limits", "_last_scope", "_retry_after_ns")

    def __init__(self, limits: list[tuple[Limit, int, int]]) -> None:
        entries: list[tuple[Limit, int, int]] = []
        for entry in limits:
            limit, action, scope = entry
            if not isinstance(limit, Limit):
                raise TypeError("a gate entry is (Limit, action, scope)")
            action = operator.index(action)
            scope = operator.index(scope)
            if action not in _ACTIONS:
                raise ValueError("action must be ACTION_DROP, ACTION_CLOSE or ACTION_SHAPE")
            if not _INT_MIN <= scope <= _INT_MAX:
                raise OverflowError("scope does not fit a C int")
            entries.append((limit, action, scope))
        if len(entries) > MAX_LIMITS:
            raise ValueError(f"a gate holds at most {MAX_LIMITS} limits")
        self._limits = tuple(entries)
        self._last_scope = 0
        self._retry_after_ns = 0

    limits = property(lambda self: self._limits)
    # Both describe the latest refused admission (unchanged by admitted ones).
    last_scope = property(lambda self: self._last_scope)
    retry_after_ns = property(lambda self: self._retry_after_ns)

    def __repr__(self) -> str:
        return f"Gate({list(self._limits)!r})"

    def admit(self, payload_len: int, now_ns: int) -> int:
        """The first frame of a data message: 0 (admitted, consumed from ALL limits) or the
        action of the first limit that refused (nothing consumed).

        A limit refuses when it lacks one message token, or lacks min(payload_len, byte
        capacity) byte tokens. Admitted bytes may take a level into debt. On refusal,
        ``last_scope`` and ``retry_after_ns`` describe the first refusing limit, and every
        refusing limit in LEASED mode is marked ``starved`` so the lease manager feeds it.
        """
        n = _length(payload_len)
        now = _clock(now_ns)
        refused = 0
        for limit, action, scope in self._limits:
            limit._refill(now)
            if limit._passes(n):
                continue
            if limit._leased:
                limit.starved = True
            if not refused:
                refused = action
                self._last_scope = scope
                self._retry_after_ns = limit._retry_after(n)
        if refused:
            return refused
        for limit, _action, _scope in self._limits:
            limit._take(n)
        return 0

    def force(self, payload_len: int, now_ns: int) -> None:
        """A continuation frame of an admitted message: consume 1 message and payload_len
        bytes from every limit, into debt if needed (a message is never cut)."""
        n = _length(payload_len)
        now = _clock(now_ns)
        for limit, _action, _scope in self._limits:
            limit._refill(now)
            limit._take(n)
