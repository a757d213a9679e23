"""The relay: one asyncio protocol per leg, frames flowing through the compiled codec.

ClientLeg serves the gateway port. It reads one HTTP request; an upgrade runs the handshake
pipeline (route → auth → subscription → throttle → backend connect), every other request
gets one answer (token endpoint, health, refusals) and the connection closes. After the upgrade,
bytes from each peer go through a FrameRelay (validate, re-mask towards the backend,
count) and out to the other peer. That per-chunk path is compiled (the legs' base classes,
wsgw/_core/legs.pyx); this module handles the handshake and the codec's rare events (close
frames, protocol errors, limits), and each connection's one deadline (deadlines.py).

Close handshake: each leg tracks whether a close frame was sent to and received from its
peer. A peer's close frame is forwarded to the other peer, whose close reply is forwarded
back. When a leg has both, the gateway closes the client's TCP connection (it is the
server there) and waits, bounded, for the backend to close its own (it is the client there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from wsgw import _core, logs
from wsgw.config.models import Api
from wsgw.errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    MethodNotAllowed,
    ServiceUnavailable,
    TooManyRequests,
    UpgradeRequired,
)
from wsgw.http import (
    Request,
    RequestReader,
    Response,
    error_response,
    json_response,
    render_response,
)
from wsgw.pipeline import handshake
from wsgw.pipeline.auth import extract_token, strip_token
from wsgw.pipeline.backend import BackendLeg
from wsgw.pipeline.enforce import LimitEnforcement
from wsgw.pipeline.flow import (
    CLOSED,
    CLOSING,
    CONNECTING,
    EARLY_BYTES_MAX,
    HTTP,
    OPEN,
    PAUSE_BACKPRESSURE,
    PAUSE_HANDSHAKE,
    mid_frame,
)
from wsgw.pipeline.subscription import Grant
from wsgw.pipeline.telemetry import ConnectionRecord
from wsgw.pipeline.throttle import Admission

if TYPE_CHECKING:
    from wsgw.app import Gateway

log = logging.getLogger("wsgw.relay")

# Close codes the gateway itself sends.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
BAD_GATEWAY = 1014
THROTTLED_OUT = 4008  # the code of the drop notice text frame (WSO2's)

REQUEST_TIMEOUT_S = 10.0


class ClientLeg(_core.ClientLegCore, LimitEnforcement, asyncio.Protocol):
    def __init__(self, gateway: Gateway, secure: bool) -> None:
        self.gw = gateway
        self.secure = secure
        self.state = HTTP
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader: RequestReader | None = RequestReader()
        self.backend: BackendLeg | None = None
        self.c2b: _core.FrameRelay | None = None
        self.b2c: _core.FrameRelay | None = None
        self.paused = 0
        self.grant: Grant | None = None
        self.api: Api | None = None
        self.record: ConnectionRecord | None = None
        self.admission: Admission | None = None
        self._request_at = 0.0
        self._c2b_drops = 0
        self._notice_retry_ns = 0
        self.started = time.monotonic()
        self._seen_activity = -1
        self._active_at = 0.0  # loop time of the last idle check that saw activity
        self.deadline_slot = -1  # see deadlines.py; what a deadline means depends on state
        self._handshake_timed_out = False
        self._handshake_task: asyncio.Task[None] | None = None
        self._early = bytearray()  # frames sent before our 101 (see _hold_early)
        self.close_code: int | None = None
        self.closed_by = "-"
        self._client_failed = False  # the gateway failed the client (RFC 6455 §7.1.7)
        self._duration_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        # Refused at once when descriptors run short or this address has too many pending.
        if not self.gw.admit_client(self, transport):
            self.state = CLOSED
            return
        self.gw.connections.add(self)
        self.gw.deadlines.arm(self, REQUEST_TIMEOUT_S)

    # data_received is ClientLegCore's: the relay's per-chunk path, compiled.
    def data_before_relay(self, data: bytes) -> None:
        if self.state == HTTP:
            self._http_data(data)
        elif self.state == CONNECTING:
            self._hold_early(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # The deadline stays: in CLOSING it also bounds the wait for the backend's TCP close.
        self.client_gone = True
        self.gw.pending.leave(self)  # if it never upgraded
        # Nothing will drain the backend's writes into the client any more; a backend leg
        # left paused would never read the backend's close reply.
        if self.backend is not None:
            self.backend.resume(PAUSE_BACKPRESSURE)
        if self._handshake_task is not None and not self._handshake_task.done():
            self._handshake_task.cancel()
        if self.state == OPEN or self.state == CLOSING:
            if not self.client_close_received:
                self._record_close(1006, "client")
                self._close_backend(GOING_AWAY, "client went away")
        else:
            self._drop_backend()
        self._finish()

    def pause_writing(self) -> None:
        # The client reads slower than the backend writes: stop reading the backend.
        if self.backend is not None:
            self.backend.pause(PAUSE_BACKPRESSURE)

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.resume(PAUSE_BACKPRESSURE)

    # ------------------------------------------------------------ flow control
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.client_gone:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.client_gone:
            self.transport.resume_reading()

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
        if request.is_upgrade:
            self.state = CONNECTING
            self.gw.deadlines.disarm(self)  # the backend handshake has its own, below
            self._request_at = time.monotonic()
            self._hold_early(request.trailing)
            self._handshake_task = self.gw.loop.create_task(self._upgrade(request))
        else:
            self._answer_plain(request)  # request.trailing is dropped with the connection

    def _hold_early(self, data: bytes) -> None:
        """No frame is relayed before the backend is ready, but the client leg keeps
        reading (bounded): a client that vanishes meanwhile is noticed at once, and its
        backend connection dropped, instead of after the backend handshake timeout."""
        self._early += data
        if len(self._early) > EARLY_BYTES_MAX:
            self.pause(PAUSE_HANDSHAKE)

    def _answer_plain(self, request: Request) -> None:
        """Non-upgrade requests: token endpoint, health check, refusals. One per connection."""
        assert self.transport is not None
        if request.path == "/oauth2/token":
            status, headers, body = self.gw.token_endpoint(request, self.peer)
            self.transport.write(render_response(status, headers, body))
        elif request.path == "/health":
            if request.method != "GET":
                self._refuse(MethodNotAllowed("use GET"))
                return
            self.transport.write(json_response(200, {"status": "ok"}))
        else:
            try:
                self.gw.routes.match(request.path)
            except GatewayError as err:  # NotFound, or BadRequest for the path itself
                self._refuse(err)
                return
            self._refuse(UpgradeRequired("this is a WebSocket API: send an upgrade"))
            return
        self._close_transport()

    def _refuse(self, err: GatewayError) -> None:
        api = self.api
        self.gw.telemetry.refused(
            api.name if api else "-",
            api.version if api else "-",
            err.http_status,
            client=self.peer,
            application=self.grant.application if self.grant else None,
            reason=err.error,
        )
        if self.transport is not None and not self.client_gone:
            self.transport.write(error_response(err))
        self._close_transport()
        self._release_admission()

    def _release_admission(self) -> None:
        admission, self.admission = self.admission, None
        if admission is not None and admission.holds_slots:
            self.gw.spawn(admission.release())

    def deadline_reached(self) -> None:
        """The one deadline of this connection's current phase (see deadlines.py)."""
        state = self.state
        if state == HTTP:
            logs.throttled(log).info("request from %s timed out", self.peer)
            self._close_transport()
        elif state == CONNECTING:
            task = self._handshake_task
            if task is not None and not task.done():
                self._handshake_timed_out = True
                task.cancel()
        elif state == OPEN:
            self._idle_check()
        elif state == CLOSING:
            log.debug("close handshake with %s timed out", self.peer)
            self.abort()

    # --------------------------------------------------------------- handshake
    async def _upgrade(self, request: Request) -> None:
        gw = self.gw
        timeout = gw.config.gateway.backend_handshake_timeout_s
        failure = "refused"  # what a BadGateway from here on means, for the metric
        try:
            route, suffix = gw.routes.match(request.path)
            api = self.api = route.api
            offer = handshake.check_client_upgrade(request)
            if api.auth == "oauth2":
                token, query = extract_token(request.headers, request.query)
                claims = gw.verifier.verify(token)
                grant = gw.registry.authorize(claims, api)
            else:
                query = strip_token(request.query)
                grant = gw.registry.anonymous(api)
            self.grant = grant
            backend = route.backend_for(grant.key_type)
            try:
                self.admission = await gw.throttle.admit(grant, api, gw.api_tier(api))
            except TooManyRequests as err:
                gw.telemetry.throttled_handshake(
                    api.name, api.version, grant.application, err.scope, client=self.peer
                )
                raise
            self_contained = self.admission.self_contained
            upgrade, key = handshake.backend_upgrade_request(
                backend,
                backend.target(suffix, query),
                offer,
                request,
                self.peer,
                self.secure,
                self_contained,
            )
            gw.deadlines.arm(self, timeout)
            response = await self._connect_backend(backend, upgrade)
            failure = "bad_handshake"
            answer = handshake.check_backend_answer(response, key, offer, self_contained)
        except GatewayError as err:
            self._drop_backend()
            if isinstance(err, BadGateway) and self.api is not None:
                gw.telemetry.backend_failure(self.api.name, self.api.version, failure)
            self._refuse(err)
            return
        except asyncio.CancelledError:
            self._drop_backend()
            if not self._handshake_timed_out:
                raise
            gw.telemetry.backend_failure(api.name, api.version, "timeout")
            self._refuse(GatewayTimeout("backend handshake timed out"))
            return
        self._open(request, offer, answer, response)

    async def _connect_backend(self, backend, upgrade: bytes) -> Response:  # noqa: ANN001
        gw = self.gw
        leg = BackendLeg(self)
        self.backend = leg
        try:
            await gw.loop.create_connection(
                lambda: leg,
                backend.host,
                backend.port,
                ssl=gw.backend_ssl if backend.secure else None,
                server_hostname=backend.host if backend.secure else None,
            )
        except OSError:
            raise BadGateway("backend refused the connection") from None
        assert leg.transport is not None
        leg.transport.write(upgrade)
        return await leg.handshake

    def _open(
        self,
        request: Request,
        offer: handshake.ClientOffer,
        answer: handshake.BackendAnswer,
        response: Response,
    ) -> None:
        assert self.transport is not None and self.backend is not None
        if self.client_gone:
            self._drop_backend()
            return
        config = self.gw.config.gateway
        self.state = OPEN
        self.gw.pending.leave(self)  # upgraded: no longer pending
        self.started = time.monotonic()
        self.transport.write(handshake.client_switching_protocols(offer, answer))
        # b2c first: a set c2b is what sends chunks down the relay path, which reads both.
        compressed = answer.permessage_deflate
        self.b2c = _core.FrameRelay(
            from_client=False,
            allow_rsv1=compressed,
            max_message_bytes=config.max_backend_message_bytes,
            self_contained=answer.self_contained.backend,
        )
        self.c2b = _core.FrameRelay(
            from_client=True,
            allow_rsv1=compressed,
            max_message_bytes=config.max_message_bytes,
            self_contained=answer.self_contained.client,
            max_control_per_second=config.max_pings_per_second,
        )
        self._start_accounting()
        self._seen_activity = self.activity
        self._active_at = self.gw.loop.time()
        self.gw.deadlines.arm(self, config.idle_timeout_s / 2)
        self.backend.start_relay()
        early, self._early = self._early, bytearray()
        if early:
            self.data_received(bytes(early))
        self.resume(PAUSE_HANDSHAKE)

    def _start_accounting(self) -> None:
        """Telemetry record, the throttle gate on both directions, the duration cap."""
        assert self.api is not None and self.grant is not None
        c2b, b2c = self.c2b, self.b2c
        assert c2b is not None and b2c is not None
        self.record = ConnectionRecord(
            api=self.api.name,
            version=self.api.version,
            application=self.grant.application,
            key_type=self.grant.key_type,
            client=self.peer,
            started_wall=time.time(),
            started_mono=time.monotonic(),
            handshake_seconds=time.monotonic() - self._request_at,
            counters=lambda: (c2b.data_frames, c2b.data_bytes, b2c.data_frames, b2c.data_bytes),
            compression=lambda: (
                c2b.compressed_bytes,
                c2b.metered_bytes,
                c2b.inflated_bytes,
                b2c.compressed_bytes,
                b2c.metered_bytes,
                b2c.inflated_bytes,
            ),
        )
        self.gw.telemetry.opened(self.record)
        admission = self.admission
        if admission is not None:
            c2b.set_gate(admission.client_gate)
            b2c.set_gate(admission.backend_gate)
        if admission is not None and admission.max_duration_s is not None:
            self._duration_timer = self.gw.loop.call_later(
                admission.max_duration_s, self._duration_reached
            )

    def _duration_reached(self) -> None:
        if self.state == OPEN:
            reason = "maximum connection duration reached"
            self._record_close(NORMAL_CLOSURE, "gateway")
            self._close_client(NORMAL_CLOSURE, reason)
            self._close_backend(NORMAL_CLOSURE, reason)
            self._check_done()

    # ------------------------------------------------------------ frame events
    def client_event(self, event: int) -> None:
        relay = self.c2b
        assert relay is not None
        self._count_drops()
        if self.notice_pending:
            self._send_notice()
        if event == _core.THROTTLED:
            self._throttled(relay, True)
        elif event == _core.CLOSE:
            self.client_close_received = True
            if not self.backend_close_sent:
                self._record_close(relay.close_code, "client")
                self.backend_close_sent = self.backend is not None and self.backend.alive
                self._begin_closing()
        elif event == _core.ERROR:
            assert self.record is not None
            self.gw.telemetry.message_refused(self.record, True, relay.error_reason)
            self._record_close(relay.error_code, "gateway")
            self._close_client(relay.error_code, relay.error_reason, fail=True)
            self._close_backend(relay.error_code, relay.error_reason)
        self._check_done()

    def backend_event(self, event: int) -> None:
        relay = self.b2c
        assert relay is not None
        self._count_drops()
        if self.notice_pending:
            self._send_notice()
        if event == _core.THROTTLED:
            self._throttled(relay, False)
        elif event == _core.CLOSE:
            self.backend_close_received = True
            if not self.client_close_sent:
                self._record_close(relay.close_code, "backend")
                self.client_close_sent = not self.client_gone
                self._begin_closing()
        elif event == _core.ERROR:
            assert self.record is not None
            self.gw.telemetry.message_refused(self.record, False, relay.error_reason)
            if self.api is not None:
                self.gw.telemetry.backend_failure(self.api.name, self.api.version, "protocol_error")
            self._record_close(BAD_GATEWAY, "gateway")
            assert self.backend is not None
            self.backend.fail(relay.error_code, relay.error_reason)
            too_big = relay.error_code == MESSAGE_TOO_BIG
            self._close_client(
                BAD_GATEWAY, "backend message too big" if too_big else "backend protocol error"
            )
        self._check_done()

    def backend_lost(self) -> None:
        """The backend's TCP connection ended."""
        if self.state == OPEN or self.state == CLOSING:
            if not self.backend_close_received:
                if self.api is not None:
                    self.gw.telemetry.backend_failure(self.api.name, self.api.version, "vanished")
                self._record_close(BAD_GATEWAY, "gateway")
                self._close_client(BAD_GATEWAY, "backend closed without a close frame")
            self.backend_close_received = self.backend_close_sent = True
        # Nothing will drain the client's writes into the backend any more.
        self.resume(PAUSE_BACKPRESSURE)
        self._check_done()
        self._finish()

    # ---------------------------------------------------------------- closing
    def _record_close(self, code: int, by: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.closed_by = by

    def _begin_closing(self) -> None:
        if self.state == OPEN:
            self.state = CLOSING
            # Bounds the close handshake and then the backend's TCP close (deadline_reached).
            self.gw.deadlines.arm(self, self.gw.config.gateway.close_timeout_s)
            self._ungate()

    def _close_client(self, code: int, reason: str, *, fail: bool = False) -> None:
        """Send the client a close frame of the gateway's own. `fail`: the client broke the
        protocol, so its reply is not awaited (RFC 6455 §7.1.7)."""
        if not self.client_close_sent and not self.client_gone and self.transport is not None:
            if mid_frame(self.b2c):
                # No frame of ours fits now: end TCP, the client sees 1006.
                self.client_close_received = True
                self._close_transport()
            else:
                payload = _core.build_close_payload(code, reason)
                self.transport.write(_core.build_frame(_core.OP_CLOSE, payload))
            self.client_close_sent = True
        if fail:
            self.client_close_received = True
            self._client_failed = True
        self._begin_closing()

    def _close_backend(self, code: int, reason: str) -> None:
        backend = self.backend
        if backend is not None and backend.alive and not self.backend_close_sent:
            if mid_frame(self.c2b):
                # No frame of ours fits now: end TCP, the backend sees 1006.
                self.backend_close_received = True
                if backend.transport is not None:
                    backend.transport.close()
            else:
                payload = _core.build_close_payload(code, reason)
                backend.write(_core.build_frame(_core.OP_CLOSE, payload, mask=True))
            self.backend_close_sent = True
        self._begin_closing()

    def _check_done(self) -> None:
        if self.client_close_sent and self.client_close_received:
            transport = self.transport
            if self._client_failed and transport is not None and transport.can_write_eof():
                # The client may still be sending what was refused: closing now would answer
                # it with a reset, which can destroy our close frame before the client reads
                # it. Half-close instead; the client ends TCP, or the closing deadline does.
                if not transport.is_closing():
                    transport.write_eof()
            else:
                self._close_transport()
        # With both close frames through, the backend (the server) closes TCP first (RFC 6455
        # §7.1.1), sparing the gateway a TIME_WAIT; the closing deadline bounds the wait.

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self, reason: str = "gateway shutting down") -> None:
        """Close with 1001 on both sides (SIGTERM)."""
        if self.state in (OPEN, CLOSING):
            self._record_close(GOING_AWAY, "gateway")
            self._close_client(GOING_AWAY, reason)
            self._close_backend(GOING_AWAY, reason)
            self._check_done()
        elif self.state == CONNECTING:
            # Waiting for the backend would hold shutdown for up to the handshake timeout.
            if self._handshake_task is not None:
                self._handshake_task.cancel()
            self._drop_backend()
            self._refuse(ServiceUnavailable(reason))
        elif self.state == HTTP:
            self._close_transport()

    def abort(self) -> None:
        if self.transport is not None and not self.client_gone:
            self.transport.abort()
        self._drop_backend()

    def _idle_check(self) -> None:
        """Traffic is a counter bump per chunk (no clock on the hot path), sampled here.
        A change since the previous check means traffic at some moment up to now, so the
        silence is measured from the last check that saw one: a connection is closed after
        between 1 and 1.5 idle timeouts of silence (plus up to one deadline tick), never
        before a full one."""
        idle_timeout = self.gw.config.gateway.idle_timeout_s
        now = self.gw.loop.time()
        if self.activity != self._seen_activity:
            self._seen_activity = self.activity
            self._active_at = now
        elif now - self._active_at >= idle_timeout:
            self._record_close(GOING_AWAY, "gateway")
            self._close_client(GOING_AWAY, "idle timeout")
            self._close_backend(GOING_AWAY, "idle timeout")
            return
        self.gw.deadlines.arm(self, idle_timeout / 2)

    def _drop_backend(self) -> None:
        if self.backend is not None:
            self.backend.abort()

    def _finish(self) -> None:
        """Called when a transport ends; forgets the connection once both have."""
        if not self.client_gone:
            return
        backend = self.backend
        if backend is not None and backend.alive:
            return
        if self.state != CLOSED:
            if self.record is not None:
                self.record.close_code = self.close_code if self.close_code is not None else 1006
                self.record.closed_by = self.closed_by
                self.gw.telemetry.closed(self.record)
            self._release_admission()
            self.state = CLOSED
            self.gw.deadlines.disarm(self)
            self.gw.connections.discard(self)
            self._release()

    def _release(self) -> None:
        """Both transports are gone: drop the references that tie this connection's objects
        into cycles (the legs and each other, the legs and their transports, the handshake
        task), so that reference counting frees them now; `serve` makes full collections
        rare. What may still run (a pending call_soon or timer) checks the state first."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.transport = None
        self.transport = None
        self._handshake_task = None
        if self._duration_timer is not None:  # it would hold the connection until it fires
            self._duration_timer.cancel()
            self._duration_timer = None
