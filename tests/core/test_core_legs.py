"""ClientLegCore / BackendLegCore: the relay's per-chunk path, compiled and twin.

Each leg is driven here as its transport drives it (data_received with a chunk) and the
other leg's transport is a recording wire. What a leg must do: hand bytes to its Python
subclass before the relay starts, forward the codec's output afterwards (re-masked one
way, verbatim the other), stop forwarding once a close went out in that direction, and
report every codec event, drop-count change or pending notice, and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .core_support import Impl, client_frame, frame, unmasked


class Wire:
    """The other leg's transport, as far as the per-chunk path uses it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.written)


def make_pair(impl: Impl, *, relay: bool = True) -> tuple[Any, Any, list[tuple[str, Any]]]:
    """A client leg and a backend leg wired to recording transports; the log records
    every call the per-chunk path made into the Python side."""
    log: list[tuple[str, Any]] = []

    class Client(impl.legs.ClientLegCore):  # type: ignore[name-defined,misc]
        def data_before_relay(self, data: bytes) -> None:
            log.append(("client before relay", bytes(data)))

        def client_event(self, event: int) -> None:
            log.append(("client event", event))

        def backend_event(self, event: int) -> None:
            log.append(("backend event", event))

    class Backend(impl.legs.BackendLegCore):  # type: ignore[name-defined,misc]
        def data_before_relay(self, data: bytes) -> None:
            log.append(("backend before relay", bytes(data)))

    client, backend = Client(), Backend()
    client.transport, backend.transport = Wire(), Wire()
    client.backend, backend.client = backend, client
    if relay:
        client.c2b = impl.frames.FrameRelay(from_client=True)
        client.b2c = impl.frames.FrameRelay(from_client=False)
        backend.relay = client.b2c
    return client, backend, log


def test_bytes_before_the_relay_go_to_the_subclass(impl: Impl) -> None:
    client, backend, log = make_pair(impl, relay=False)
    client.data_received(b"GET / HTTP/1.1\r\n")
    backend.data_received(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert log == [
        ("client before relay", b"GET / HTTP/1.1\r\n"),
        ("backend before relay", b"HTTP/1.1 101 Switching Protocols\r\n"),
    ]
    assert client.activity == 0
    assert backend.transport.written == client.transport.written == []


def test_client_frames_reach_the_backend_remasked(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    wire = client_frame(1, b"hello") + client_frame(2, b"\x00\x01\x02")
    client.data_received(wire[:4])
    client.data_received(wire[4:])
    out = backend.transport.data
    assert unmasked(out) == unmasked(wire)
    assert out[2:6] != wire[2:6]  # a key of the gateway's own
    assert client.activity == 2
    assert log == []  # no event, no drop: nothing for the Python side


def test_backend_frames_reach_the_client_verbatim(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    wire = frame(1, b"from the backend") + frame(2, b"x" * 300)
    backend.data_received(wire)
    assert client.transport.data == wire
    assert client.activity == 1
    assert log == []


def test_nothing_is_forwarded_after_a_close_went_out(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    backend.close_sent = True
    client.data_received(client_frame(1, b"late"))
    assert backend.transport.written == []
    client.client_close_sent = True
    backend.data_received(frame(1, b"late too"))
    assert client.transport.written == []
    client.client_close_sent, client.client_gone = False, True
    backend.data_received(frame(1, b"and this"))
    assert client.transport.written == []
    assert log == []


def test_close_frames_are_reported_to_the_client_leg(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    close = impl.frames.build_close_payload(1000, "bye")
    client.data_received(client_frame(8, close))
    backend.data_received(frame(8, close))
    assert log == [("client event", impl.frames.CLOSE), ("backend event", impl.frames.CLOSE)]
    assert unmasked(backend.transport.data) == [(bytes([0x88, 0x80 | len(close)]), close)]
    assert client.transport.data == frame(8, close)


def test_protocol_errors_are_reported(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    client.data_received(frame(1, b"unmasked from a client"))
    assert log == [("client event", impl.frames.ERROR)]
    assert client.c2b.error_code == 1002


@pytest.mark.parametrize("from_client", [True, False])
def test_a_drop_count_change_is_reported_once(impl: Impl, from_client: bool) -> None:
    client, backend, log = make_pair(impl)
    # 1 message a minute, the clock set ahead so that nothing refills during the test
    limit = impl.gate.Limit(1, now_ns=time.monotonic_ns() + 60 * 10**9)
    gate = impl.gate.Gate([(limit, impl.gate.ACTION_DROP, 0)])
    client.c2b.set_gate(gate)
    client.b2c.set_gate(gate)
    leg, one = (client, client_frame(1, b"m")) if from_client else (backend, frame(1, b"m"))
    event = "client event" if from_client else "backend event"
    leg.data_received(one)  # admitted
    assert log == []
    leg.data_received(one)  # dropped: reported, the subclass counts it
    assert log == [(event, impl.frames.NEED_DATA)]
    client.drops_seen = 1
    leg.data_received(one)  # dropped again: a new change
    assert log == [(event, impl.frames.NEED_DATA)] * 2


def test_a_pending_notice_is_retried_on_backend_traffic(impl: Impl) -> None:
    client, backend, log = make_pair(impl)
    client.notice_pending = True
    backend.data_received(frame(1, b"a message boundary"))
    assert log == [("backend event", impl.frames.NEED_DATA)]
    client.data_received(client_frame(1, b"client traffic does not retry it"))
    assert log == [("backend event", impl.frames.NEED_DATA)]
