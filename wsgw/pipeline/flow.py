"""What both legs of a relayed connection share: why reading is paused, and when no
frame of the gateway's own may be inserted into a direction."""

from __future__ import annotations

from typing import Any, Protocol

from wsgw import _core

# The states of a client connection.
HTTP, CONNECTING, OPEN, CLOSING, CLOSED = range(5)

# Bytes a peer may send before the relay runs (a client after its upgrade request, a
# backend right after its 101): held and relayed in order. Past this, reading pauses.
EARLY_BYTES_MAX = 64 * 1024

# Reasons a leg's reading is paused (a bit mask); reading resumes when none is left.
PAUSE_HANDSHAKE = 1
PAUSE_BACKPRESSURE = 2
PAUSE_THROTTLE = 4  # on_limit: shape — the sender waits for tokens, TCP pushes back


class ReadPauses:
    """Reading paused for reasons (a bit mask): stopped at the first, resumed when none is
    left. A leg says whether its transport can still be told (`can_read`)."""

    paused: int
    transport: Any

    def can_read(self) -> bool:
        raise NotImplementedError

    def pause(self, reason: int) -> None:
        if not self.paused and self.can_read():
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.can_read():
            self.transport.resume_reading()


class ClientSide(ReadPauses):
    """What both phases of the client's connection (the HTTP leg, then the relay leg) do
    with the client's transport."""

    client_gone: bool

    def can_read(self) -> bool:
        return self.transport is not None and not self.client_gone

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Leg(Protocol):
    """Either side of a relayed connection, as flow control sees it."""

    paused: int

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def data_received(self, data: bytes) -> None: ...


class RelayOwner(Leg, Protocol):
    """The client's relay leg, as its backend leg reports to it."""

    c2b: _core.FrameRelay
    b2c: _core.FrameRelay

    def backend_lost(self, had_close: bool) -> None: ...


def mid_frame(relay: _core.FrameRelay | None) -> bool:
    """True when what was relayed in this direction ends inside a data frame: a close
    frame of the gateway's own written now would be taken as the rest of that frame's
    payload (a corrupted message delivered as valid). Then only TCP can end the leg."""
    return relay is not None and relay.in_frame
