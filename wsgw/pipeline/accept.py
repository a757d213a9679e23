"""The HTTP leg: a gateway-port connection from its accept to its 101 (or its answer).

It reads one request. A plain request gets one answer (plain_http.py through the bundle)
and the connection closes. An upgrade runs the handshake stages (stages.py); a refusal is
answered here, in one place; on success the leg writes the 101 and hands the transport to
the relay leg (`transport.set_protocol`, as uvicorn does) with the bytes the client sent
early. Its one deadline bounds the request, then the backend's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from wsgw import logs
from wsgw.errors import BadGateway, GatewayError, GatewayTimeout, ServiceUnavailable
from wsgw.http import Request, RequestReader, Response, error_response
from wsgw.pipeline import live
from wsgw.pipeline.backend import BackendLeg
from wsgw.pipeline.flow import (
    CLOSED,
    CONNECTING,
    EARLY_BYTES_MAX,
    HTTP,
    PAUSE_HANDSHAKE,
    ClientSide,
)
from wsgw.pipeline.relay import ClientLeg
from wsgw.pipeline.route import Backend
from wsgw.pipeline.stages import Handshake, run_stages

log = logging.getLogger("wsgw.accept")

REQUEST_TIMEOUT_S = 10.0


class HttpLeg(ClientSide, asyncio.Protocol):
    def __init__(self, current: Callable[[], Any], secure: bool) -> None:
        # The bundle current now; taken again when the request is complete, so that a
        # reload in between applies to it (the relay leg then keeps what it was given).
        self._current = current
        self.services = current()
        self.secure = secure
        self.state = HTTP
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader: RequestReader | None = RequestReader()  # None once the request is in
        self.backend: BackendLeg | None = None
        self.hs: Handshake | None = None  # the stages' context, once they run
        self.paused = 0
        self.client_gone = False
        self.deadline_slot = -1  # see deadlines.py; what a deadline means depends on state
        self._request_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._timed_out = False
        self._early = bytearray()  # frames sent before our 101 (see _hold_early)

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        services = self.services
        # Refused at once when descriptors run short or this address has too many pending.
        if not services.listener.admit(transport, self, self.peer):
            self.state = CLOSED
            return
        services.connections.add(self)
        services.deadlines.arm(self, REQUEST_TIMEOUT_S)

    def data_received(self, data: bytes) -> None:
        if self.state == HTTP:
            self._http_data(data)
        elif self.state == CONNECTING:
            self._hold_early(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._drop_backend()
        self._end()

    def deadline_reached(self) -> None:
        if self.state == HTTP:
            logs.throttled(log).info("request from %s timed out", self.peer)
            self._close_transport()
        elif self.state == CONNECTING:
            task = self._task
            if task is not None and not task.done():
                self._timed_out = True
                task.cancel()

    def shutdown(self, reason: str = "gateway shutting down") -> None:
        if self.state == CONNECTING:
            # Waiting for the backend would hold shutdown for up to the handshake timeout.
            if self._task is not None:
                self._task.cancel()
            self._drop_backend()
            self._refuse(ServiceUnavailable(reason), self.hs)
        elif self.state == HTTP:
            self._close_transport()

    def abort(self) -> None:
        if self.transport is not None and not self.client_gone:
            self.transport.abort()
        self._drop_backend()

    # -------------------------------------------------------------------- HTTP
    def _http_data(self, data: bytes) -> None:
        """One request per connection. The reader returns the first one only; what
        followed it is WebSocket data after an upgrade request (held, relayed after the
        101), and after any other request is never read: it is answered, then closed."""
        reader = self.reader
        if reader is None:
            return  # answered or refused already, closing: nothing more is read
        try:
            request = reader.feed(data)
        except GatewayError as err:
            self.reader = None
            self._refuse(err)
            return
        if request is None:
            return
        self.reader = None
        self.services = self._current()
        if request.is_upgrade:
            self.state = CONNECTING
            self.services.deadlines.disarm(self)  # the backend handshake has its own
            self._request_at = time.monotonic()
            self._hold_early(request.trailing)
            self._task = self.services.loop.create_task(self._upgrade(request))
            return
        try:  # request.trailing is dropped with the connection
            response = self.services.answer_plain(request, self.peer)
        except GatewayError as err:
            self._refuse(err)
            return
        assert self.transport is not None
        self.transport.write(response)
        self._close_transport()

    def _hold_early(self, data: bytes) -> None:
        """No frame is relayed before the backend is ready, but the client leg keeps
        reading (bounded): a client that vanishes meanwhile is noticed at once, and its
        backend connection dropped, instead of after the backend handshake timeout."""
        self._early += data
        if len(self._early) > EARLY_BYTES_MAX:
            self.pause(PAUSE_HANDSHAKE)

    # --------------------------------------------------------------- handshake
    async def _upgrade(self, request: Request) -> None:
        hs = self.hs = Handshake(self.services, request, self.peer, self.secure, self._open_backend)
        try:
            err = await run_stages(hs)
        except asyncio.CancelledError:
            if not self._timed_out:  # the client went away (or shutdown): nobody to answer
                self._drop_backend()
                raise
            hs.failure = "timeout"
            err = GatewayTimeout("backend handshake timed out")
        if err is None:
            err = self._changed_meanwhile(hs)
        if err is not None:
            self._drop_backend()
            self._refuse(err, hs)
        else:
            self._hand_over(hs)

    async def _open_backend(self, backend: Backend, upgrade: bytes) -> Response:
        """The connect stage's I/O: TCP (and TLS) to the backend, the upgrade, its answer."""
        services = self.services
        services.deadlines.arm(self, services.settings.backend_handshake_timeout_s)
        leg = self.backend = BackendLeg(services.loop)
        try:
            await services.loop.create_connection(
                lambda: leg,
                backend.host,
                backend.port,
                ssl=services.backend_tls if backend.secure else None,
                server_hostname=backend.host if backend.secure else None,
            )
        except OSError:
            raise BadGateway("backend refused the connection") from None
        assert leg.transport is not None
        leg.transport.write(upgrade)
        return await leg.answer

    def _refuse(self, err: GatewayError, hs: Handshake | None = None) -> None:
        """Every refusal of this connection: counted, answered, closed. `hs`: how far the
        handshake got (the stages' context), None before it started."""
        services = self.services
        api = hs.api if hs is not None else None
        if isinstance(err, BadGateway | GatewayTimeout) and api is not None:
            assert hs is not None
            services.telemetry.backend_failure(api.name, api.version, hs.failure)
        services.telemetry.refused(
            api.name if api else "-",
            api.version if api else "-",
            err.http_status,
            client=self.peer,
            application=hs.grant.application if hs is not None and hs.grant else None,
            reason=err.error,
        )
        if self.transport is not None and not self.client_gone:
            self.transport.write(error_response(err))
        self._close_transport()
        self._release_admission()

    def _hand_over(self, hs: Handshake) -> None:
        """The 101: the relay leg takes the transport, the backend leg and the early bytes."""
        transport, backend = self.transport, self.backend
        assert transport is not None and backend is not None
        services = self.services
        leg = ClientLeg(services, hs, transport, backend, self._request_at, self.paused)
        services.deadlines.disarm(self)
        services.listener.pending.leave(self)  # upgraded: no longer pending
        services.connections.discard(self)
        early, self._early = self._early, bytearray()
        self.state = CLOSED
        self.transport = self.backend = self.hs = None
        self._task = None
        transport.set_protocol(leg)
        leg.start(bytes(early))
        current = self._current()
        if current is not services:  # a reload's new limits (its refusals came before)
            leg.recheck(current)

    def _changed_meanwhile(self, hs: Handshake) -> GatewayError | None:
        """A reload or a revocation while the backend answered refuses the upgrade as the
        handshake would have, before the 101: no frame flows for a withdrawn access."""
        current = self._current()
        if current is self.services and not current.revocations:
            return None
        assert hs.api is not None
        return live.refusal(live.judge(current, hs.api.name, hs.api.version, hs.claims))

    # ---------------------------------------------------------------- helpers
    def _drop_backend(self) -> None:
        if self.backend is not None:
            self.backend.abort()

    def _end(self) -> None:
        """The client's TCP connection ended before (or without) an upgrade."""
        if self.state == CLOSED:
            return
        services = self.services
        self.state = CLOSED
        services.listener.pending.leave(self)
        services.deadlines.disarm(self)
        services.connections.discard(self)
        self._release_admission()
        self.transport = self.backend = self.hs = None
        self._task = None

    def _release_admission(self) -> None:
        """Refused or gone before the 101: the connection slots it took go back."""
        hs = self.hs
        if hs is not None and hs.admission is not None:
            admission, hs.admission = hs.admission, None
            admission.give_back(self.services.spawn)
