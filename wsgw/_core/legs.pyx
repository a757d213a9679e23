"""The relay legs' per-chunk path, compiled; twin of legs_py.py.

Every chunk a peer sends goes: transport → ``data_received`` → the direction's FrameRelay →
the other peer's transport, and nothing else unless the codec reports an event. Here that
path reads C fields and calls the codec through C; the Python subclasses (ClientLeg,
BackendLeg) handle what comes before the relay starts and every event, which are rare.
No asyncio here: the transports are whatever objects the subclasses were given.
"""

from wsgw._core.frames cimport FrameRelay


cdef class ClientLegCore:
    """State and per-chunk path of the client's connection (see relay.ClientLeg)."""

    def data_received(self, data):
        cdef FrameRelay relay = self.c2b
        cdef BackendLegCore backend
        cdef int event
        cdef object out
        if relay is None:
            self.data_before_relay(data)
            return
        self.activity += 1
        event = relay.process(data)
        out = relay.take_output()
        backend = self.backend
        if out is not None and backend is not None and not backend.close_sent:
            if backend.transport is not None:
                backend.transport.write(out)
        if event or relay.dropped_messages + self.b2c.dropped_messages != self.drops_seen:
            self.client_event(event)


cdef class BackendLegCore:
    """State and per-chunk path of the gateway's connection to the backend."""

    def data_received(self, data):
        cdef FrameRelay relay = self.relay
        cdef ClientLegCore client
        cdef int event
        cdef object out
        if relay is None:
            self.data_before_relay(data)
            return
        client = self.client
        client.activity += 1
        event = relay.process(data)
        out = relay.take_output()
        if out is not None and not client.client_close_sent and not client.client_gone:
            client.transport.write(out)
        if (event or client.notice_pending
                or relay.dropped_messages + client.c2b.dropped_messages != client.drops_seen):
            client.backend_event(event)
