"""The relay legs' per-chunk path: the pure-Python twin of legs.pyx (the spec).

Every chunk a peer sends goes: transport → ``data_received`` → the direction's FrameRelay →
the other peer's transport, and nothing else unless the codec reports an event. The
subclasses (relay.ClientLeg, backend.BackendLeg) handle what comes before the relay starts
(``data_before_relay``) and every event (``client_event``, ``backend_event``).
"""

from __future__ import annotations

from typing import Any

from wsgw._core.frames_py import FrameRelay


class ClientLegCore:
    """State and per-chunk path of the client's connection (see relay.ClientLeg)."""

    transport: Any = None  # the client's
    backend: BackendLegCore | None = None
    c2b: FrameRelay | None = None  # both set when the relay starts
    b2c: FrameRelay | None = None
    client_close_sent = False  # close state towards the client (its own)
    client_close_received = False
    client_gone = False
    notice_pending = False  # a drop notice waits for a message boundary
    drops_seen = 0  # dropped messages both ways, as last handled
    activity = 0  # chunks either way; the idle check samples it

    def data_received(self, data: bytes) -> None:
        relay = self.c2b
        if relay is None:
            self.data_before_relay(data)
            return
        self.activity += 1
        event = relay.process(data)
        out = relay.take_output()
        backend = self.backend
        if (
            out is not None
            and backend is not None
            and not backend.close_sent
            and backend.transport is not None
        ):
            backend.transport.write(out)
        assert self.b2c is not None
        if event or relay.dropped_messages + self.b2c.dropped_messages != self.drops_seen:
            self.client_event(event)

    def data_before_relay(self, data: bytes) -> None:
        raise NotImplementedError

    def client_event(self, event: int) -> None:
        raise NotImplementedError

    def backend_event(self, event: int) -> None:
        raise NotImplementedError


class BackendLegCore:
    """State and per-chunk path of the gateway's connection to the backend."""

    transport: Any = None  # the backend's
    client: ClientLegCore | None = None  # set with the relay
    relay: FrameRelay | None = None  # the client leg's b2c, once the relay starts
    close_sent = False  # close state towards the backend (its own)
    close_received = False

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None:
            self.data_before_relay(data)
            return
        client = self.client
        assert client is not None  # set with the relay
        client.activity += 1
        event = relay.process(data)
        out = relay.take_output()
        if out is not None and not client.client_close_sent and not client.client_gone:
            client.transport.write(out)
        assert client.c2b is not None
        if (
            event
            or client.notice_pending
            or relay.dropped_messages + client.c2b.dropped_messages != client.drops_seen
        ):
            client.backend_event(event)

    def data_before_relay(self, data: bytes) -> None:
        raise NotImplementedError
