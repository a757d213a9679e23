"""The backend leg: the gateway's WebSocket client connection to a backend.

During the handshake it reads the backend's answer to the upgrade for the HTTP leg (its
`answer` future). Once the relay starts it relays the backend's frames through its
FrameRelay to the client, and reports every event to the client's relay leg, which
decides. It owns the close state of the backend's side and sends its close frames.
"""

from __future__ import annotations

import asyncio

from wsgw import _core
from wsgw.errors import BadGateway, GatewayError
from wsgw.http import Response, ResponseReader
from wsgw.pipeline.flow import (
    EARLY_BYTES_MAX,
    PAUSE_BACKPRESSURE,
    PAUSE_HANDSHAKE,
    ReadPauses,
    RelayOwner,
    mid_frame,
)


class BackendLeg(_core.BackendLegCore, ReadPauses, asyncio.Protocol):
    """The gateway's connection to a backend."""

    # The client's relay leg, from start_relay on (the base class types it as its core).
    client: RelayOwner | None  # type: ignore[assignment]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.client = None
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[Response] = loop.create_future()  # to the upgrade
        self.reader: ResponseReader | None = ResponseReader()
        self.relay: _core.FrameRelay | None = None
        self.alive = False
        self.paused = 0
        # Frames the backend sends right after its 101, before the relay starts.
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True

    # data_received is BackendLegCore's: the relay's per-chunk path, compiled.
    def data_before_relay(self, data: bytes) -> None:
        if self.reader is not None:
            try:
                response = self.reader.feed(data)
            except GatewayError:
                self._fail_handshake(BadGateway("backend sent a malformed HTTP response"))
                return
            if response is not None:
                self.reader = None
                self._hold_early(response.trailing)
                if not self.answer.done():
                    self.answer.set_result(response)
            return
        self._hold_early(data)

    def _hold_early(self, data: bytes) -> None:
        """Held, not paused: the relay usually starts within the same loop turn, and
        pausing and resuming would cost two system calls per connection. Bounded."""
        self._early += data
        if len(self._early) > EARLY_BYTES_MAX:
            self.pause(PAUSE_HANDSHAKE)

    def start_relay(self, client: RelayOwner) -> None:
        self.client = client
        self.relay = client.b2c
        early, self._early = self._early, bytearray()
        if early:
            self.data_received(bytes(early))
        self.resume(PAUSE_HANDSHAKE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail_handshake(BadGateway("backend closed the connection during the handshake"))
        had_close = self.close_received
        self.close_sent = self.close_received = True  # nothing more goes either way
        if self.client is not None:
            self.client.backend_lost(had_close)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause(PAUSE_BACKPRESSURE)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume(PAUSE_BACKPRESSURE)

    def can_read(self) -> bool:
        return self.alive and self.transport is not None

    # ---------------------------------------------------------------- closing
    def close_forwarded(self) -> None:
        """The client's close frame went to the backend through the relay."""
        self.close_sent = self.alive

    def send_close(self, code: int, reason: str) -> None:
        """A close frame of the gateway's own to the backend, unless one went already."""
        if not self.alive or self.close_sent or self.transport is None:
            return
        assert self.client is not None
        if mid_frame(self.client.c2b):
            # No frame of ours fits now: end TCP, the backend sees 1006.
            self.close_received = True
            self.transport.close()
        else:
            payload = _core.build_close_payload(code, reason)
            self.transport.write(_core.build_frame(_core.OP_CLOSE, payload, mask=True))
        self.close_sent = True

    def fail(self, code: int, reason: str) -> None:
        """The backend broke the protocol: send our close and drop it (RFC 6455 §7.1.7)."""
        self.send_close(code, reason)
        self.close_sent = self.close_received = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and self.alive:
            self.transport.abort()

    def _fail_handshake(self, err: GatewayError) -> None:
        if not self.answer.done():
            self.answer.set_exception(err)
            self.answer.exception()  # mark retrieved: the awaiting task may be gone
