"""The relay leg: a client connection after its 101, frames flowing through the codec.

The HTTP leg (accept.py) hands the transport over with everything the handshake
established. From then on, bytes from each peer go through a FrameRelay (validate, re-mask
towards the backend, count) and out to the other peer. That per-chunk path is compiled (the
legs' base classes, wsgw/_core/legs.pyx); this module handles the codec's rare events
(close frames, protocol errors, limits) and the connection's one deadline (deadlines.py).

Close handshake: each leg owns the close state of its peer (a close frame sent to it,
received from it) and sends its own close frames (`send_close`: never inside a frame).
A peer's close frame is forwarded to the other peer, whose close reply is forwarded back.
When the client's side has both, the gateway closes the client's TCP connection (it is
the server there) and waits, bounded, for the backend to close its own (it is the client
there). Every close the gateway itself decides goes through `end`, with the error that
says why: its close code and message are what both peers get (a peer that went away
without a close frame leaves the other one a PeerGone).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from wsgw import _core
from wsgw.errors import (
    AccessEnded,
    BackendFailed,
    CloseCode,
    ClosedByOperator,
    ConnectionEnded,
    DurationReached,
    IdleTimeout,
    PeerGone,
    ProtocolViolation,
    ShuttingDown,
)
from wsgw.pipeline import handshake, live
from wsgw.pipeline.backend import BackendLeg
from wsgw.pipeline.enforce import LimitEnforcement
from wsgw.pipeline.flow import (
    CLOSED,
    CLOSING,
    OPEN,
    PAUSE_BACKPRESSURE,
    PAUSE_HANDSHAKE,
    PAUSE_THROTTLE,
    ClientSide,
    mid_frame,
)
from wsgw.pipeline.stages import Handshake
from wsgw.pipeline.telemetry import ConnectionRecord

log = logging.getLogger("wsgw.relay")

_ids = itertools.count(1)  # connection ids, per process (each worker has its admin port)


class ClientLeg(_core.ClientLegCore, LimitEnforcement, ClientSide, asyncio.Protocol):
    # Set from the start: the relay leg exists only once the handshake is through.
    c2b: _core.FrameRelay
    b2c: _core.FrameRelay
    backend: BackendLeg | None
    record: ConnectionRecord

    def __init__(
        self,
        services: Any,
        hs: Handshake,
        transport: asyncio.Transport,
        backend: BackendLeg,
        request_at: float,
        paused: int,
    ) -> None:
        assert hs.route is not None and hs.grant is not None and hs.answer is not None
        assert hs.offer is not None
        self.services = services
        self.state = OPEN
        self.transport = transport
        self.backend = backend
        self.id = next(_ids)
        self.peer = hs.peer
        self.api = hs.route.api
        self.api_tier = hs.route.api_tier
        self.claims = hs.claims
        self.grant = hs.grant
        self.admission = hs.admission
        self.compressed = hs.answer.permessage_deflate
        self.paused = paused
        self._switching = handshake.client_switching_protocols(hs.offer, hs.answer)
        self._c2b_drops = 0
        self._notice_retry_ns = 0
        self._seen_activity = 0
        self._active_at = services.loop.time()  # of the last idle check that saw activity
        self._next_idle_at = self._active_at + services.settings.idle_timeout_s / 2
        self.deadline_slot = -1  # see deadlines.py; what a deadline means depends on state
        self.close_code: int | None = None
        self.closed_by = "-"
        self._client_failed = False  # the gateway failed the client (RFC 6455 §7.1.7)
        # Loop times when the connection must end, if ever (the tier's duration cap, the
        # token's exp under `on_token_expiry: close`): checked on the one deadline.
        self._duration_ends_at: float | None = None
        self._expires_at: float | None = None
        settings = services.settings
        # b2c first: a set c2b is what sends chunks down the relay path, which reads both.
        compressed = hs.answer.permessage_deflate
        self.b2c = _core.FrameRelay(
            from_client=False,
            allow_rsv1=compressed,
            max_message_bytes=settings.max_backend_message_bytes,
            self_contained=hs.answer.self_contained.backend,
        )
        self.c2b = _core.FrameRelay(
            from_client=True,
            allow_rsv1=compressed,
            max_message_bytes=settings.max_message_bytes,
            self_contained=hs.answer.self_contained.client,
            max_control_per_second=settings.max_pings_per_second,
        )
        self.record = self._new_record(request_at)

    def start(self, early: bytes) -> None:
        """Now the connection's: counted, gated, answered 101; then what each peer sent
        early is relayed, then both are read."""
        assert self.transport is not None and self.backend is not None
        self.services.connections.add(self)
        self.services.relayed[self.id] = self
        self._start_accounting()
        self.transport.write(self._switching)
        self._set_expiry(self.api)
        self._arm_open_deadline()
        self.backend.start_relay(self)
        if early:
            self.data_received(early)
        self.resume(PAUSE_HANDSHAKE)

    # ---------------------------------------------------------------- asyncio
    # data_received is ClientLegCore's: the relay's per-chunk path, compiled.
    def connection_lost(self, exc: Exception | None) -> None:
        # The deadline stays: in CLOSING it also bounds the wait for the backend's TCP close.
        self.client_gone = True
        backend = self.backend
        # Nothing will drain the backend's writes into the client any more; a backend leg
        # left paused would never read the backend's close reply.
        if backend is not None:
            backend.resume(PAUSE_BACKPRESSURE)
        if self.state == OPEN or self.state == CLOSING:
            if not self.client_close_received:
                self._record_close(CloseCode.ABNORMAL_CLOSURE, "client")
                if backend is not None:
                    gone = PeerGone("client went away")
                    backend.send_close(gone.close_code, gone.message)
                self._begin_closing()
        elif backend is not None:
            backend.abort()
        self._finish()

    def pause_writing(self) -> None:
        # The client reads slower than the backend writes: stop reading the backend.
        if self.backend is not None:
            self.backend.pause(PAUSE_BACKPRESSURE)

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.resume(PAUSE_BACKPRESSURE)

    # ------------------------------------------------------------ flow control
    # -------------------------------------------------------------- accounting
    def _new_record(self, request_at: float) -> ConnectionRecord:
        c2b, b2c = self.c2b, self.b2c
        now = time.monotonic()
        return ConnectionRecord(
            api=self.api.name,
            version=self.api.version,
            application=self.grant.application,
            key_type=self.grant.key_type,
            client=self.peer,
            started_wall=time.time(),
            started_mono=now,
            handshake_seconds=now - request_at,
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

    def _start_accounting(self) -> None:
        """Telemetry, the throttle gate on both directions, the duration cap."""
        services = self.services
        services.telemetry.opened(self.record)
        admission = self.admission
        if admission is not None:
            self.c2b.set_gate(admission.client_gate)
            self.b2c.set_gate(admission.backend_gate)
            self._set_duration(admission.max_duration_s)

    def _set_duration(self, max_duration_s: float | None) -> None:
        """The tier's duration cap, counted from the connection's start."""
        if max_duration_s is None:
            self._duration_ends_at = None
        else:
            elapsed = time.monotonic() - self.record.started_mono
            self._duration_ends_at = self.services.loop.time() + max_duration_s - elapsed

    def _set_expiry(self, api: Any) -> None:
        """`on_token_expiry: close`: the token's exp (wall clock) as a loop time."""
        claims = self.claims
        if claims is None or api.on_token_expiry != "close":
            self._expires_at = None
        else:
            self._expires_at = self.services.loop.time() + (claims.expires_at - time.time())

    # ------------------------------------------------------------ live checks
    def recheck(self, services: Any) -> bool:
        """Judge the open connection again by `services` (a reload's new bundle): end it
        if its access ended, else apply its API's and tiers' current limits. True if
        ended. The connection keeps its own bundle for everything else (endpoints,
        timeouts): those apply to new connections."""
        if self.state != OPEN:
            return False
        verdict = live.judge(services, self.api.name, self.api.version, self.claims)
        if isinstance(verdict, ConnectionEnded):
            return self._ended_by(verdict)
        route, grant = verdict.route, verdict.grant
        before = (self.grant.subscription_tier, self.grant.application_tier, self.api_tier)
        if before != (grant.subscription_tier, grant.application_tier, route.api_tier):
            policy = services.throttle.repolicy(grant, route.api, route.api_tier)
            agreed = (self.c2b.self_contained, self.b2c.self_contained)
            unsafe = live.unsafe_drop(policy, self.compressed, agreed)
            if unsafe is not None:
                return self._ended_by(unsafe)
            if policy.new_limits and services.throttle.cluster is not None:
                # A shared limit starts with no tokens until its lease: applied once primed,
                # as a handshake waits for it, so its connections are not starved meanwhile.
                services.spawn(self._apply_when_primed(services, policy))
            else:
                self._apply_policy(services, policy)
        self.grant, self.api, self.api_tier = grant, route.api, route.api_tier
        self._set_expiry(route.api)
        if self.state != OPEN:  # ended by the new policy's duration cap
            return True
        return self._check_ends() or self._arm_open_deadline()

    def _apply_policy(self, services: Any, policy: Any) -> None:
        self.c2b.set_gate(policy.client_gate)
        self.b2c.set_gate(policy.backend_gate)
        # A message held by `shape` is retried under the new limits now, not when the old
        # ones would have had tokens again.
        for from_client, leg in ((True, self), (False, self.backend)):
            if leg is not None and leg.paused & PAUSE_THROTTLE:
                services.loop.call_soon(self._unshape, from_client)
        if self.admission is not None:
            self.admission.client_gate = policy.client_gate
            self.admission.backend_gate = policy.backend_gate
        self._set_duration(policy.max_duration_s)
        if not self._check_ends():
            self._arm_open_deadline()

    async def _apply_when_primed(self, services: Any, policy: Any) -> None:
        await services.throttle.prime(policy.new_limits)
        if self.state == OPEN:
            self._apply_policy(services, policy)

    def revoke_check(self, services: Any) -> bool:
        """Only the revocation list (a new revocation): True if the connection ended."""
        if self.state != OPEN:
            return False
        ended = live.revoked(services, self.claims)
        return ended is not None and self._ended_by(ended)

    def close_by_operator(self, code: int, reason: str) -> bool:
        if self.state != OPEN:
            return False
        return self._ended_by(ClosedByOperator(reason, code))

    def _ended_by(self, why: ConnectionEnded) -> bool:
        self.end(why)
        self._check_done()
        return True

    def snapshot(self) -> dict[str, Any]:
        """What the admin port lists: never a token."""
        record = self.record
        c2b, b2c = self.c2b, self.b2c
        grant = self.grant
        return {
            "id": self.id,
            "api": self.api.name,
            "version": self.api.version,
            "application": grant.application,
            "key_type": grant.key_type,
            "tier": grant.tier_name,
            "client": self.peer,
            "started": record.started_wall,
            "messages_in": c2b.data_frames,
            "bytes_in": c2b.data_bytes,
            "messages_out": b2c.data_frames,
            "bytes_out": b2c.data_bytes,
            "compressed": self.compressed,
            "token_expires": self.claims.expires_at if self.claims is not None else None,
        }

    # ------------------------------------------------------------ frame events
    def client_event(self, event: int) -> None:
        relay = self.c2b
        self._count_drops()
        if self.notice_pending:
            self._send_notice()
        if event == _core.THROTTLED:
            self._throttled(relay, True)
        elif event == _core.CLOSE:
            self.client_close_received = True
            backend = self.backend
            if backend is not None and not backend.close_sent:
                self._record_close(relay.close_code, "client")
                backend.close_forwarded()
                self._begin_closing()
        elif event == _core.ERROR:
            self.services.telemetry.message_refused(self.record, True, relay.error_reason)
            self.end(ProtocolViolation(relay.error_reason, relay.error_code), fail=True)
        self._check_done()

    def backend_event(self, event: int) -> None:
        relay = self.b2c
        self._count_drops()
        if self.notice_pending:
            self._send_notice()
        if event == _core.THROTTLED:
            self._throttled(relay, False)
        elif event == _core.CLOSE:
            assert self.backend is not None
            self.backend.close_received = True
            if not self.client_close_sent:
                self._record_close(relay.close_code, "backend")
                self.client_close_sent = not self.client_gone  # the relay forwarded it
                self._begin_closing()
        elif event == _core.ERROR:
            telemetry = self.services.telemetry
            telemetry.message_refused(self.record, False, relay.error_reason)
            telemetry.backend_failure(self.api.name, self.api.version, "protocol_error")
            assert self.backend is not None
            self.backend.fail(relay.error_code, relay.error_reason)
            too_big = relay.error_code == CloseCode.MESSAGE_TOO_BIG
            reason = "backend message too big" if too_big else "backend protocol error"
            self.end(BackendFailed(reason))
        self._check_done()

    def backend_lost(self, had_close: bool) -> None:
        """The backend's TCP connection ended (`had_close`: after its close frame)."""
        if (self.state == OPEN or self.state == CLOSING) and not had_close:
            self.services.telemetry.backend_failure(self.api.name, self.api.version, "vanished")
            self.end(BackendFailed("backend closed without a close frame"))
        # Nothing will drain the client's writes into the backend any more.
        self.resume(PAUSE_BACKPRESSURE)
        self._check_done()
        self._finish()

    # ---------------------------------------------------------------- closing
    def end(self, why: ConnectionEnded, *, fail: bool = False) -> None:
        """The gateway closes the connection: both peers get why.close_code and its message
        (a peer already closed or gone gets nothing). `fail`: the client broke the
        protocol, so its close reply is not awaited (RFC 6455 §7.1.7)."""
        code, reason = why.close_code, why.message
        self._record_close(code, "gateway")
        self.send_close(code, reason)
        if fail:
            self.client_close_received = True
            self._client_failed = True
        if self.backend is not None and not isinstance(why, BackendFailed):
            self.backend.send_close(code, reason)  # a failed backend was sent its own
        self._begin_closing()

    def send_close(self, code: int, reason: str) -> None:
        """A close frame of the gateway's own to the client, unless one went already."""
        if self.client_close_sent or self.client_gone or self.transport is None:
            return
        if mid_frame(self.b2c):
            # No frame of ours fits now: end TCP, the client sees 1006.
            self.client_close_received = True
            self._close_transport()
        else:
            payload = _core.build_close_payload(code, reason)
            self.transport.write(_core.build_frame(_core.OP_CLOSE, payload))
        self.client_close_sent = True

    def _record_close(self, code: int, by: str) -> None:
        if self.close_code is None:
            self.close_code = int(code)
            self.closed_by = by

    def _begin_closing(self) -> None:
        if self.state == OPEN:
            self.state = CLOSING
            # Bounds the close handshake and then the backend's TCP close (deadline_reached).
            self.services.deadlines.arm(self, self.services.settings.close_timeout_s)
            self._ungate()

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

    def shutdown(self, reason: str = "gateway shutting down") -> None:
        """Close with 1001 on both sides (SIGTERM)."""
        if self.state == OPEN or self.state == CLOSING:
            self.end(ShuttingDown(reason))
            self._check_done()

    def abort(self) -> None:
        if self.transport is not None and not self.client_gone:
            self.transport.abort()
        if self.backend is not None:
            self.backend.abort()

    # --------------------------------------------------------------- deadline
    def deadline_reached(self) -> None:
        """OPEN: the end of the token or of the duration cap, else the idle check;
        CLOSING: the close handshake took too long."""
        if self.state == OPEN:
            if not self._check_ends():
                if self.services.loop.time() >= self._next_idle_at:
                    self._idle_check()
                else:  # woken for an end that a reload moved: the idle check stays due
                    self._arm_open_deadline()
        elif self.state == CLOSING:
            log.debug("close handshake with %s timed out", self.peer)
            self.abort()

    def _idle_check(self) -> None:
        """Traffic is a counter bump per chunk (no clock on the hot path), sampled here.
        A change since the previous check means traffic at some moment up to now, so the
        silence is measured from the last check that saw one: a connection is closed after
        between 1 and 1.5 idle timeouts of silence (plus up to one deadline tick), never
        before a full one."""
        services = self.services
        idle_timeout = services.settings.idle_timeout_s
        now = services.loop.time()
        if self.activity != self._seen_activity:
            self._seen_activity = self.activity
            self._active_at = now
        elif now - self._active_at >= idle_timeout:
            self.end(IdleTimeout("idle timeout"))
            return
        self._next_idle_at = now + idle_timeout / 2
        self._arm_open_deadline()

    def _check_ends(self) -> bool:
        """End the connection if its token expired (`close`) or its duration is up."""
        if self.state != OPEN:
            return False
        now = self.services.loop.time()
        if self._expires_at is not None and now >= self._expires_at:
            return self._ended_by(AccessEnded(live.TOKEN_EXPIRED, CloseCode.TOKEN_EXPIRED))
        if self._duration_ends_at is not None and now >= self._duration_ends_at:
            return self._ended_by(DurationReached("maximum connection duration reached"))
        return False

    def _arm_open_deadline(self) -> bool:
        """The next idle check, or the token's or the duration's end if sooner (a reload
        that re-arms never pushes the idle check back). False."""
        at = self._next_idle_at
        for end in (self._expires_at, self._duration_ends_at):
            if end is not None and end < at:
                at = end
        services = self.services
        services.deadlines.arm(self, max(at - services.loop.time(), 0.0))
        return False

    # ------------------------------------------------------------------- end
    def _finish(self) -> None:
        """Called when a transport ends; forgets the connection once both have."""
        if not self.client_gone:
            return
        backend = self.backend
        if backend is not None and backend.alive:
            return
        if self.state == CLOSED:
            return
        services = self.services
        record = self.record
        code = self.close_code
        record.close_code = code if code is not None else int(CloseCode.ABNORMAL_CLOSURE)
        record.closed_by = self.closed_by
        services.telemetry.closed(record)
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.give_back(services.spawn)
        self.state = CLOSED
        services.deadlines.disarm(self)
        services.connections.discard(self)
        services.relayed.pop(self.id, None)
        self._release()

    def _release(self) -> None:
        """Both transports are gone: drop the references that tie this connection's objects
        into cycles (the legs and each other, the legs and their transports), so that
        reference counting frees them now; `serve` makes full collections rare. What may
        still run (a pending call_soon or timer) checks the state first."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.transport = None
            backend.relay = None  # the compiled path reads its client only with a relay
            backend.client = None
        self.transport = None
