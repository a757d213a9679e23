"""permessage-deflate through the gateway with the peers' defaults: websockets client and
server (context takeover, `client_max_window_bits` offered, as browsers do) and aiohttp.

The messages share text at shifting offsets, so with context takeover each compressed
message refers back into the ones before it: a receiver that missed a dropped message would
inflate the next one into different bytes, or fail. Every delivered message is compared byte
for byte with what was sent.
"""

from __future__ import annotations

import asyncio
import random
import string
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import PerMessageDeflate

from .backends import RecordingBackend, read_head, ws_accept
from .conftest import Env, GatewayFactory, Peers
from .test_throttling import _set_application_tier, sample, scrape, with_tier

RECV_S = 5.0
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"  # Chromium's and Firefox's
RATE = 120  # messages per minute: a full bucket of 120, then two a second
API = {"api": "EchoWebSocket", "version": "1.0"}
APP = {**API, "application": "DefaultApplication"}


def shifting_messages(n: int, seed: int) -> list[str]:
    """n distinct messages made of one text rotated by a growing offset, plus a few words
    of their own: each shares long runs with the ones before it, never at the same place."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(300)]
    text = " ".join(rng.choices(words, k=400))
    out = []
    for i in range(n):
        cut = (i * 97) % len(text)
        own = " ".join(rng.choices(words, k=5))
        out.append(f"{i}:{text[cut:]}{text[:cut]} {own}")
    return out


def is_subsequence(got: list, sent: list) -> bool:
    it = iter(sent)
    return all(any(g == s for s in it) for g in got)


def deflate_of(ws: ClientConnection) -> PerMessageDeflate:
    extensions = ws.protocol.extensions
    assert [type(e) for e in extensions] == [PerMessageDeflate]
    return extensions[0]  # type: ignore[return-value]


async def gateway_for(
    make_gateway: GatewayFactory,
    peers: Peers,
    tier: dict,
    scope: str = "subscription",
) -> tuple[Env, RecordingBackend]:
    """A gateway in front of a websockets echo server with its default compression, the
    tier applied at `scope` (subscription, application or api)."""
    backend = await peers.recording(compression="deflate")

    edit = with_tier("Tiny", tier, **({"throttle": "Tiny"} if scope == "api" else {}))
    subscribe_tier = "Tiny" if scope == "subscription" else "Unlimited"
    env = await make_gateway(
        edit=edit, subscribe_to=("EchoWebSocket", "1.0", subscribe_tier), production=backend.url
    )
    if scope == "application":
        _set_application_tier(Path(env.gateway.config.gateway.subscriptions_file), "Tiny")
        assert env.gateway.reload("test")["result"] == "ok"
    return env, backend


async def receive_all(ws: ClientConnection, quiet_s: float = 0.6) -> tuple[list, int]:
    """Messages until `quiet_s` passes without one: (echoes, drop notices)."""
    echoes, notices = [], 0
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), quiet_s)
        except (TimeoutError, websockets.ConnectionClosed):
            return echoes, notices
        if isinstance(message, str) and message.startswith('{"code":4008'):
            notices += 1
        else:
            echoes.append(message)


async def test_client_messages_after_a_drop_arrive_intact(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_for(
        make_gateway, peers, {"messages_per_minute": RATE, "count": "client"}
    )
    sent = shifting_messages(RATE + 21, seed=1)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        # The gateway told the client to compress each message alone; the backend kept
        # its context takeover (its messages are never dropped here).
        assert deflate_of(ws).local_no_context_takeover
        assert not deflate_of(ws).remote_no_context_takeover
        for message in sent[:-1]:
            await ws.send(message)
        echoes, notices = await receive_all(ws)
        assert RATE <= len(echoes) <= RATE + 3 and notices >= 1
        await asyncio.sleep(0.6)  # a token is back
        await ws.send(sent[-1])
        echoes += (await receive_all(ws))[0]
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1000  # no 1002/1007: every message inflated
    assert seen.messages[-1] == sent[-1]
    assert is_subsequence(seen.messages, sent) and len(seen.messages) == len(echoes)
    assert echoes == seen.messages
    samples = await scrape(env)
    dropped = sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="drop")
    assert dropped == len(sent) - len(seen.messages)


async def test_backend_messages_after_a_drop_arrive_intact(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    tier = {"messages_per_minute": RATE, "count": "backend", "backend_on_limit": "drop"}
    env, backend = await gateway_for(make_gateway, peers, tier)
    sent = shifting_messages(RATE + 21, seed=2)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for message in sent[:-1]:
            await ws.send(message)
        echoes, notices = await receive_all(ws)
        assert RATE <= len(echoes) <= RATE + 3 and notices >= 1
        await asyncio.sleep(0.6)
        await ws.send(sent[-1])
        later, _ = await receive_all(ws)
        assert later == [sent[-1]]
        # The client kept its context takeover; the backend was asked to give up its own.
        assert not deflate_of(ws).local_no_context_takeover
        assert deflate_of(ws).remote_no_context_takeover
    seen = await backend.next()
    asked = BROWSER_OFFER + "; server_no_context_takeover"
    assert seen.headers["Sec-WebSocket-Extensions"] == asked
    server_side = seen.connection.protocol.extensions[0]
    assert server_side.local_no_context_takeover  # type: ignore[attr-defined]
    assert seen.messages == sent  # nothing is dropped towards the backend
    assert is_subsequence(echoes + later, sent)


async def test_nothing_to_drop_keeps_the_negotiated_context_takeover(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    tier = {"messages_per_minute": RATE, "on_limit": "shape"}
    env, backend = await gateway_for(make_gateway, peers, tier)
    sent = shifting_messages(20, seed=3)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        ext = deflate_of(ws)
        assert not ext.local_no_context_takeover and not ext.remote_no_context_takeover
        for message in sent:
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), RECV_S) == message
    seen = await backend.next()
    # The browsers' offer (websockets offers the same), forwarded as it came.
    assert seen.headers["Sec-WebSocket-Extensions"] == BROWSER_OFFER


@pytest.mark.parametrize("scope", ["subscription", "application", "api"])
@pytest.mark.parametrize("direction", ["client", "backend"])
@pytest.mark.parametrize("action", ["drop", "close", "shape"])
async def test_every_action_scope_and_direction_delivers_exact_messages(
    make_gateway: GatewayFactory, peers: Peers, action: str, direction: str, scope: str
) -> None:
    field = "on_limit" if direction == "client" else "backend_on_limit"
    tier = {"messages_per_minute": RATE, "count": direction, field: action}
    env, backend = await gateway_for(make_gateway, peers, tier, scope)
    sent = shifting_messages(RATE + 3, seed=len(action) * 100 + len(direction) * 10 + len(scope))
    async with connect(env.url, additional_headers=env.auth()) as ws:
        if action == "close":  # in lockstep, so that what got through is exact
            echoes: list = []
            with pytest.raises(websockets.ConnectionClosed):
                for message in sent:
                    await ws.send(message)
                    echoes.append(await asyncio.wait_for(ws.recv(), RECV_S))
            assert ws.close_code == 1008 and f"({scope})" in ws.close_reason
            assert echoes == sent[: len(echoes)] and RATE <= len(echoes) <= RATE + 1
            return
        for message in sent:
            await ws.send(message)
        echoes, notices = await receive_all(ws, quiet_s=2.5 if action == "shape" else 0.6)
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.close_code == 1000  # no 1002/1007: every message inflated
    assert is_subsequence(echoes, sent) and is_subsequence(seen.messages, sent)
    if action == "shape":  # lossless: everything, in order, after a wait
        assert echoes == seen.messages == sent and notices == 0
    else:
        assert 0 < len(sent) - len(echoes) <= 3 and notices >= 1


async def test_aiohttp_client_after_drops(make_gateway: GatewayFactory, peers: Peers) -> None:
    env, backend = await gateway_for(
        make_gateway, peers, {"messages_per_minute": RATE, "count": "client"}
    )
    sent = shifting_messages(RATE + 11, seed=4)
    async with (
        aiohttp.ClientSession() as session,
        # aiohttp's client does not compress unless asked (its server does by default).
        session.ws_connect(env.url, headers=env.auth(), compress=15) as ws,
    ):
        assert ws.compress  # negotiated (window bits: the backend chose 12)
        for message in sent[:-1]:
            await ws.send_str(message)
        await asyncio.sleep(1.2)
        await ws.send_str(sent[-1])
        got = []
        while True:
            try:
                msg = await ws.receive(timeout=0.8)
            except TimeoutError:
                break
            if not msg.data.startswith('{"code":4008'):
                got.append(msg.data)
        assert got[-1] == sent[-1]
        # aiohttp honours the client_no_context_takeover the gateway added to the answer.
        assert ws.client_notakeover
    seen = await backend.next()
    assert seen.messages == got and is_subsequence(got, sent)


async def test_backend_ignoring_server_no_context_takeover_gets_502(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    offers: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        offers.append(headers.get("sec-websocket-extensions", ""))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + ws_accept(headers["sec-websocket-key"]).encode()
            + b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    raw = await peers.raw(lambda backend: handler)
    tier = {"messages_per_minute": RATE, "count": "backend", "backend_on_limit": "drop"}
    env = await make_gateway(
        edit=with_tier("Tiny", tier),
        subscribe_to=("EchoWebSocket", "1.0", "Tiny"),
        production=raw.url,
    )
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(env.url, additional_headers=env.auth()):
            pass
    assert refused.value.response.status_code == 502
    assert "server_no_context_takeover" in orjson.loads(refused.value.response.body)["message"]
    assert offers and "server_no_context_takeover" in offers[0]


async def test_an_api_drop_policy_also_makes_client_messages_self_contained(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, _ = await gateway_for(make_gateway, peers, {"messages_per_minute": RATE}, scope="api")
    async with connect(env.url, additional_headers=env.auth()) as ws:
        assert deflate_of(ws).local_no_context_takeover
        # count: both and backend_on_limit: shape by default: the backend keeps its own.
        assert not deflate_of(ws).remote_no_context_takeover


async def test_work_is_not_lost_when_the_client_bursts(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    # One budget both ways (count: both): the client's burst spends what its replies need.
    # The backend's replies are shaped (held, the backend pushed back), not dropped.
    env, backend = await gateway_for(make_gateway, peers, {"messages_per_minute": 600})
    sent = shifting_messages(320, seed=6)  # 320 in, then 280 replies in budget, 40 held
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for message in sent:
            await ws.send(message)
        echoes, notices = await receive_all(ws, quiet_s=3.0)
    assert echoes == sent and notices == 0
    samples = await scrape(env)
    assert sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="shape")
    assert not sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="drop")


async def test_ping_flood_is_closed_with_1008(make_gateway: GatewayFactory, peers: Peers) -> None:
    env, _ = await gateway_for(make_gateway, peers, {})
    async with connect(env.url, additional_headers=env.auth()) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            for i in range(150):  # the default allows 100 a second
                await ws.ping(str(i))
            await asyncio.wait_for(ws.recv(), RECV_S)
    assert ws.close_code == 1008 and ws.close_reason == "too many control frames"
    samples = await scrape(env)
    closes = sample(
        samples,
        "wsgw_message_limit_closes_total",
        **API,
        direction="client_to_backend",
        limit="control_rate",
    )
    assert closes == 1


async def test_pings_at_the_rate_pass(make_gateway: GatewayFactory, peers: Peers) -> None:
    def edit(raw: dict) -> None:
        raw["gateway"]["max_pings_per_second"] = 20

    backend = await peers.recording(compression="deflate")
    env = await make_gateway(edit=edit, production=backend.url)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for _ in range(3):  # 20 a second, three times, each answered
            pongs = [await ws.ping() for _ in range(20)]
            await asyncio.wait_for(asyncio.gather(*pongs), RECV_S)
            await asyncio.sleep(1.05)
        await ws.send("still open")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "still open"


@pytest.mark.parametrize("limits", ["small", "default"])
async def test_compressed_and_inflated_bytes_are_counted(
    make_gateway: GatewayFactory, peers: Peers, limits: str
) -> None:
    """Messages of ~2.5 KB, ~1 KB deflated: under 4 KiB limits each could inflate past the
    limit (1 KB x 1032), so the gateway inflates all of them; under the 16 MiB default for
    the backend's messages, none (they cannot reach it). (Under the client's 1 MiB default,
    ~1 KB is too close to 1,048,576 / 1032 to say.)"""
    backend = await peers.recording(compression="deflate")

    def edit(raw: dict) -> None:
        if limits == "small":
            raw["gateway"]["max_message_bytes"] = 4096
            raw["gateway"]["max_backend_message_bytes"] = 4096

    env = await make_gateway(edit=edit, production=backend.url)
    sent = shifting_messages(30, seed=7)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for message in sent:
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), RECV_S) == message
        samples = await scrape(env)  # a live connection's counts are read at the scrape
    size = sum(len(m.encode()) for m in sent)
    for direction in ("client_to_backend", "backend_to_client"):
        labels = {**APP, "direction": direction}
        compressed = sample(samples, "wsgw_compressed_bytes_total", **labels)
        inflate_in = sample(samples, "wsgw_inflate_input_bytes_total", **labels)
        inflate_out = sample(samples, "wsgw_inflate_output_bytes_total", **labels)
        wire = sample(samples, "wsgw_bytes_total", **labels)
        assert 0 < compressed == wire < size / 2  # bytes_per_minute counts the wire bytes
        if limits == "small":
            assert (inflate_in, inflate_out) == (compressed, size)  # measured, never kept
        elif direction == "backend_to_client":
            assert (inflate_in, inflate_out) == (0, 0)
