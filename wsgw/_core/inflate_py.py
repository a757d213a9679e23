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
        while pending and not self._ended:
            try:
                out = z.decompress(pending, _SCRATCH)
            except zlib.error as exc:
                return REFERS_BACK if "too far back" in str(exc) else INVALID
            self._inflated += len(out)
            if limit and self._inflated > limit:
                return TOO_BIG
            if z.eof:
                self._ended = True
                break
            pending = z.unconsumed_tail
            if not pending and len(out) == _SCRATCH:
                # The output filled up: zlib may hold more for the same input.
                while True:
                    out = z.decompress(b"", _SCRATCH)
                    self._inflated += len(out)
                    if limit and self._inflated > limit:
                        return TOO_BIG
                    if len(out) < _SCRATCH:
                        break
        return OK

    def finish(self, limit: int = 0) -> int:
        """The message ended: inflate its implied 00 00 ff ff tail; a status."""
        return self.feed(_TAIL, limit)


def acquire_meter(self_contained: bool) -> InflateMeter:
    meter = InflateMeter(self_contained=self_contained)
    meter.start()
    return meter


def release_meter(meter: InflateMeter) -> None:
    """The twin keeps no pool: a meter's state is gone with the message."""


def pooled() -> tuple[int, int]:
    return 0, 0
