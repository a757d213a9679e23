"""Pure-Python twin of inflate.pyx: how big a permessage-deflate message is once inflated,
without keeping it. This module is the specification (see inflate.pyx for the why).

A meter inflates one message at a time (start, feed its payload, finish) and counts the
output, which it discards in slices of at most 64 KiB. With ``self_contained=False`` the
window is preset with 32 KiB of zeros, standing in for the earlier messages that context
takeover lets a message copy from: the inflated length does not depend on what the window
holds. With ``self_contained=True`` a reference to before the message is an error.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

OK = 0
TOO_BIG = 1  # the message inflates to more than the limit
INVALID = 2  # not valid DEFLATE data
REFERS_BACK = 3  # self-contained mode: a back-reference before the message
MAX_POOLED = 32

_WINDOW = 32768
_SCRATCH = 65536
_TAIL = b"\x00\x00\xff\xff"
_ZEROS = bytes(_WINDOW)


class InflateMeter:
    """Measures one message at a time: start(), feed() its payload, finish()."""

    __slots__ = ("_z", "_self_contained", "_inflated", "_ended")

    def __init__(self, *, self_contained: bool = False) -> None:
        self._self_contained = bool(self_contained)
        self._z: zlib._Decompress | None = None
        self._inflated = 0
        self._ended = False

    self_contained = property(lambda self: self._self_contained)
    inflated = property(lambda self: self._inflated)
    ended = property(lambda self: self._ended)

    def start(self) -> None:
        """Begin a new message."""
        if self._self_contained:
            self._z = zlib.decompressobj(-15)
        else:
            self._z = zlib.decompressobj(-15, zdict=_ZEROS)
        self._inflated = 0
        self._ended = False

    def feed(self, data: bytes | bytearray | memoryview, limit: int = 0) -> int:
        """Inflate (and forget) the next payload bytes of the message; a status."""
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        z = self._z
        assert z is not None, "start() first"
        pending = bytes(data)
        if not pending:
            return OK
        while not self._ended:
            status, produced = self._inflate(z, pending, limit)
            if status != OK:
                return status
            if z.eof:
                self._ended = True
            pending = z.unconsumed_tail
            # Done once the input is used up and the output did not fill (else zlib may
            # hold more output for the same input: ask again with no new input).
            if not pending and produced < _SCRATCH:
                break
        return OK

    def _inflate(self, z: zlib._Decompress, data: bytes, limit: int) -> tuple[int, int]:
        """One inflate call of at most _SCRATCH bytes of output: (status, bytes written)."""
        before = z.copy() if limit else None
        try:
            out = z.decompress(data, _SCRATCH)
        except zlib.error as exc:
            # zlib's C inflate counts what it wrote before the error (inflate.pyx checks the
            # limit first); decompress() drops it: find out from the copy.
            written = _written_before_error(before, data) if before is not None else 0
            self._inflated += written
            if limit and self._inflated > limit:
                return TOO_BIG, written
            return (REFERS_BACK if "too far back" in str(exc) else INVALID), written
        self._inflated += len(out)
        if limit and self._inflated > limit:
            return TOO_BIG, len(out)
        return OK, len(out)

    def finish(self, limit: int = 0) -> int:
        """The message ended: inflate its implied 00 00 ff ff tail; a status."""
        return self.feed(_TAIL, limit)


def _written_before_error(z: zlib._Decompress, data: bytes) -> int:
    """How many bytes one inflate call (at most _SCRATCH of output) writes of ``data``'s
    output before the error ``data`` holds, as zlib's C inflate counts them.

    decompress() drops what it wrote when it raises, so this asks copies of ``z``: the most
    output it gives without raising, when the output is bounded (it stops before the next
    symbol) and when the input is (it stops before the byte that holds the error; zlib also
    parses a block header with the output full, which the first way misses). Binary searches,
    only ever on an error's path. One case stays out of reach: symbols that end in the same
    byte as a bad code that follows a full output; there this can count up to that byte's
    symbols fewer than inflate.pyx (the status is the same unless that straddles the limit).
    """

    def largest(hi: int, gives: Callable[[int], int | None]) -> int:
        lo, best = 0, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            got = gives(mid)
            if got is None:
                hi = mid - 1
            else:
                best, lo = max(best, got), mid + 1
        return best

    def bounded_output(n: int) -> int | None:
        try:
            return n if len(z.copy().decompress(data, n)) == n else None
        except zlib.error:
            return None

    def bounded_input(k: int) -> int | None:
        try:
            return len(z.copy().decompress(data[:k], _SCRATCH))
        except zlib.error:
            return None

    return max(largest(_SCRATCH - 1, bounded_output), largest(len(data), bounded_input))


def acquire_meter(self_contained: bool) -> InflateMeter:
    meter = InflateMeter(self_contained=self_contained)
    meter.start()
    return meter


def release_meter(meter: InflateMeter) -> None:
    """The twin keeps no pool: a meter's state is gone with the message."""


def pooled() -> tuple[int, int]:
    return 0, 0
