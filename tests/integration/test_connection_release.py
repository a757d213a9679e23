"""An ended connection's objects are freed by reference counting alone, not left in reference
cycles for a full collection: `wsgw serve` makes those rare (gc.freeze and high thresholds),
so under a steady connection rate cycles would hold memory for minutes (bench/soak.py saw
the gateway's RSS climb ~13 MiB before a full collection came)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import websockets
from websockets.asyncio.client import connect

from wsgw.pipeline.accept import HttpLeg
from wsgw.pipeline.relay import ClientLeg

from .conftest import Env

RECV_S = 5.0


@pytest.fixture
def no_collector() -> object:
    gc.collect()
    gc.disable()
    yield
    gc.enable()


async def test_ended_connections_leave_no_cycles(env: Env, no_collector: object) -> None:
    legs: list[weakref.ref] = []  # every accepted connection's HTTP leg
    relayed: list[weakref.ref] = []  # the relay legs of the upgraded ones
    original = HttpLeg.connection_made
    original_init = ClientLeg.__init__

    def track(self: HttpLeg, transport: asyncio.BaseTransport) -> None:
        legs.append(weakref.ref(self))
        original(self, transport)

    def track_relay(self: ClientLeg, *args: object) -> None:
        relayed.append(weakref.ref(self))
        original_init(self, *args)  # type: ignore[arg-type]

    HttpLeg.connection_made = track  # type: ignore[method-assign]
    ClientLeg.__init__ = track_relay  # type: ignore[method-assign]
    try:
        for i in range(10):  # a clean close, from each side
            async with connect(env.url, additional_headers=env.auth()) as ws:
                await ws.send(f"hello {i}")
                assert await asyncio.wait_for(ws.recv(), RECV_S) == f"[production] hello {i}"
                if i % 2:
                    await ws.send("!close 1000 bye")  # the echo backend closes
        for _ in range(5):  # the client vanishes without a close frame
            ws = await connect(env.url, additional_headers=env.auth())
            ws.transport.abort()
        for _ in range(5):  # refused before the upgrade
            with pytest.raises(websockets.InvalidStatus):
                await connect(env.url)
        await asyncio.sleep(0.5)  # every leg ends
    finally:
        HttpLeg.connection_made = original  # type: ignore[method-assign]
        ClientLeg.__init__ = original_init  # type: ignore[method-assign]
    assert (len(legs), len(relayed)) == (20, 15)
    alive = [ref() for ref in legs + relayed if ref() is not None]
    assert alive == [], f"{len(alive)} of 35 legs only a full collection would free"
