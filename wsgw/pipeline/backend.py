"""The backend leg: the gateway's WebSocket client connection to a backend.

It reads the backend's answer to the upgrade, then relays the backend's frames through its
FrameRelay to the client. Every decision is its ClientLeg's, to which it reports.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from wsgw import _core
from wsgw.errors import BadGateway, GatewayError
from wsgw.http import Response, ResponseReader
from wsgw.pipeline.flow import EARLY_BYTES_MAX, PAUSE_BACKPRESSURE, PAUSE_HANDSHAKE, mid_frame

if TYPE_CHECKING:
    from wsgw.pipeline.relay import ClientLeg


class BackendLeg(_core.BackendLegCore, asyncio.Protocol):
    """The gateway's connection to a backend; it reports everything to its ClientLeg."""

    client: ClientLeg

    def __init__(self, client: ClientLeg) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[Response] = client.gw.loop.create_future()
        self.reader: ResponseReader | None = ResponseReader()
        self.relay: _core.FrameRelay | None = None
        self.alive = False
        self.paused = 0
        # Frames the backend sends right after its 101, before the client leg relays.
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
                if not self.handshake.done():
                    self.handshake.set_result(response)
            return
        self._hold_early(data)

    def _hold_early(self, data: bytes) -> None:
        """Held, not paused: the client leg is usually ready within the same loop turn, and
        pausing and resuming would cost two system calls per connection. Bounded."""
        self._early += data
        if len(self._early) > EARLY_BYTES_MAX:
            self.pause(PAUSE_HANDSHAKE)

    def start_relay(self) -> None:
        self.relay = self.client.b2c
        early, self._early = self._early, bytearray()
        if early:
            self.data_received(bytes(early))
        self.resume(PAUSE_HANDSHAKE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail_handshake(BadGateway("backend closed the connection during the handshake"))
        self.client.backend_lost()

    def pause_writing(self) -> None:
        self.client.pause(PAUSE_BACKPRESSURE)

    def resume_writing(self) -> None:
        self.client.resume(PAUSE_BACKPRESSURE)

    def pause(self, reason: int) -> None:
        if not self.paused and self.alive and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.alive and self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.alive and self.transport is not None:
            self.transport.write(data)

    def fail(self, code: int, reason: str) -> None:
        """The backend broke the protocol: send our close and drop it (RFC 6455 §7.1.7)."""
        client = self.client
        if not client.backend_close_sent:
            if not mid_frame(client.c2b):
                payload = _core.build_close_payload(code, reason)
                self.write(_core.build_frame(_core.OP_CLOSE, payload, mask=True))
            client.backend_close_sent = True
        client.backend_close_received = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and self.alive:
            self.transport.abort()

    def _fail_handshake(self, err: GatewayError) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(err)
            self.handshake.exception()  # mark retrieved: the awaiting task may be gone
