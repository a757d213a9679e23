"""How an open connection reacts to its limits: the drop notice, `close`, `shape`, and
letting go of limits once the connection is closing. Mixed into ClientLeg, whose state
(relays, legs, telemetry record, admission) it works on."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from wsgw import _core
from wsgw.errors import CloseCode, ConnectionEnded, RateLimitExceeded
from wsgw.pipeline.flow import OPEN, PAUSE_THROTTLE, Leg
from wsgw.pipeline.throttle import ACTION_NAMES

if TYPE_CHECKING:
    from wsgw.pipeline.telemetry import ConnectionRecord
    from wsgw.pipeline.throttle import Admission


class LimitEnforcement:
    # The ClientLeg state this works on.
    services: Any  # the bundle: telemetry and loop
    state: int
    c2b: _core.FrameRelay | None
    b2c: _core.FrameRelay | None
    backend: Leg | None  # the backend leg
    admission: Admission | None
    record: ConnectionRecord | None
    client_close_sent: bool
    client_gone: bool
    drops_seen: int  # dropped messages both ways, as last counted
    _notice_retry_ns: int  # when the latest dropping limit has tokens again
    _c2b_drops: int
    notice_pending: bool
    transport: asyncio.Transport | None
    paused: int

    if TYPE_CHECKING:

        def pause(self, reason: int) -> None: ...
        def resume(self, reason: int) -> None: ...
        def data_received(self, data: bytes) -> None: ...
        def end(self, why: ConnectionEnded, *, fail: bool = False) -> None: ...

    def _scope(self, index: int) -> str:
        assert self.admission is not None
        return self.admission.scope_labels[index]

    def _count_drops(self) -> None:
        """Messages dropped whole by `on_limit: drop`: count them, notify the client."""
        c2b, b2c = self.c2b, self.b2c
        assert c2b is not None and b2c is not None
        if c2b.dropped_messages + b2c.dropped_messages == self.drops_seen:
            return
        assert self.record is not None
        for relay, seen in ((c2b, self._c2b_drops), (b2c, self.drops_seen - self._c2b_drops)):
            if relay.dropped_messages != seen:
                delta = relay.dropped_messages - seen
                scope = self._scope(relay.drop_scope)
                self.services.telemetry.throttled(self.record, scope, "drop", delta)
                self._notice_retry_ns = relay.retry_after_ns
        self._c2b_drops = c2b.dropped_messages
        self.drops_seen = c2b.dropped_messages + b2c.dropped_messages
        self.notice_pending = True

    def _send_notice(self) -> None:
        """The drop notice is a whole text message: it may only go to the client between
        two messages of the backend's, never inside a fragmented one."""
        b2c = self.b2c
        if self.client_close_sent or self.client_gone or b2c is None or b2c.in_message:
            return
        self.notice_pending = False
        retry_after_s = round(self._notice_retry_ns / 1e9, 3)
        notice = orjson.dumps(
            {
                "code": CloseCode.THROTTLED_OUT,
                "message": "Websocket frame throttled out",
                "retry_after_s": retry_after_s,
            }
        )
        assert self.transport is not None
        self.transport.write(_core.build_frame(_core.OP_TEXT, notice))

    def _throttled(self, relay: _core.FrameRelay, from_client: bool) -> None:
        """`on_limit: close` or `shape` stopped a direction before a message."""
        assert self.record is not None
        if self.state != OPEN:
            return
        scope = self._scope(relay.throttle_scope)
        action = ACTION_NAMES[relay.throttle_action]
        self.services.telemetry.throttled(self.record, scope, action)
        if relay.throttle_action == _core.ACTION_CLOSE:
            self.end(RateLimitExceeded(f"rate limit exceeded ({scope})"))
            return
        leg: Leg | None = self if from_client else self.backend
        if leg is not None:
            leg.pause(PAUSE_THROTTLE)
        delay = max(relay.retry_after_ns, 1_000_000) / 1e9
        self.services.loop.call_later(delay, self._unshape, from_client)

    def _unshape(self, from_client: bool) -> None:
        """Tokens should be back: retry the held message; read again if it passed."""
        if self.state != OPEN:
            return
        leg: Leg | None = self if from_client else self.backend
        if leg is None:
            return
        # Resume first: if the held message is refused again, _throttled pauses anew
        # before the loop gets a chance to read.
        leg.resume(PAUSE_THROTTLE)
        leg.data_received(b"")

    def _ungate(self) -> None:
        """Closing: limits no longer apply. A message held by `shape` or `close` is let go,
        so that the close frame behind it can be read; where it goes, the closing state
        decides (nowhere, if the other side already got a close)."""
        legs: tuple[tuple[_core.FrameRelay | None, Leg | None], ...] = (
            (self.c2b, self),
            (self.b2c, self.backend),
        )
        for relay, leg in legs:
            if relay is None or relay.gate is None:
                continue
            relay.set_gate(None)
            if leg is not None and leg.paused & PAUSE_THROTTLE:
                leg.resume(PAUSE_THROTTLE)
                self.services.loop.call_soon(leg.data_received, b"")
