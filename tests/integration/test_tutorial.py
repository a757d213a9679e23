"""The WSO2 "Create a WebSocket API" tutorial, through the gateway, with clients written by
others: websockets, aiohttp and picows."""

from __future__ import annotations

import asyncio

import aiohttp
import picows
import websockets
from websockets.asyncio.client import connect

from .conftest import Env


async def test_websockets_client_gets_the_echo_from_production(env: Env) -> None:
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("hello gateway")
        assert await asyncio.wait_for(ws.recv(), 5) == "[production] hello gateway"
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01binary"


async def test_default_version_is_reachable_without_the_version_segment(env: Env) -> None:
    async with connect(f"{env.base}/echowebsocket", additional_headers=env.auth()) as ws:
        await ws.send("v")
        assert await asyncio.wait_for(ws.recv(), 5) == "[production] v"


async def test_sandbox_token_routes_to_the_sandbox_backend(env: Env) -> None:
    async with connect(env.url, additional_headers=env.auth("SANDBOX")) as ws:
        await ws.send("which one?")
        assert await asyncio.wait_for(ws.recv(), 5) == "[sandbox] which one?"


async def test_token_in_query_parameter_for_browsers(env: Env) -> None:
    async with connect(f"{env.url}?access_token={env.tokens['PRODUCTION']}") as ws:
        await ws.send("from a browser")
        assert await asyncio.wait_for(ws.recv(), 5) == "[production] from a browser"


async def test_client_credentials_then_aiohttp_client(env: Env) -> None:
    consumer_key, consumer_secret = env.keys["PRODUCTION"]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{env.http}/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": aiohttp.encode_basic_auth(consumer_key, consumer_secret)},
        ) as response:
            assert response.status == 200
            body = await response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        async with session.ws_connect(env.url, headers=headers) as ws:
            await ws.send_str("aiohttp says hi")
            message = await ws.receive(timeout=5)
            assert message.data == "[production] aiohttp says hi"
            big = bytes(range(256)) * 4096  # 1 MiB, the default max_message_bytes
            await ws.send_bytes(big)
            message = await ws.receive(timeout=10)
            assert message.data == big


async def test_picows_client(env: Env) -> None:
    received: asyncio.Queue[tuple[picows.WSMsgType, bytes]] = asyncio.Queue()

    class Listener(picows.WSListener):
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            received.put_nowait((frame.msg_type, frame.get_payload_as_bytes()))

    transport, _ = await picows.ws_connect(
        Listener, env.url, extra_headers={"Authorization": f"Bearer {env.tokens['PRODUCTION']}"}
    )
    try:
        for size in (0, 1, 125, 126, 65535, 65536):
            payload = bytes(i % 251 for i in range(size))
            transport.send(picows.WSMsgType.BINARY, payload)
            msg_type, data = await asyncio.wait_for(received.get(), 5)
            assert (msg_type, data) == (picows.WSMsgType.BINARY, payload)
    finally:
        transport.send_close(picows.WSCloseCode.OK)
        await asyncio.wait_for(transport.wait_disconnected(), 5)


async def test_fragmented_message_and_ping_pass_through(env: Env) -> None:
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send(["frag", "ment", "ed"])
        assert await asyncio.wait_for(ws.recv(), 5) == "[production] fragmented"
        pong_waiter = await ws.ping(b"are you there")
        latency = await asyncio.wait_for(pong_waiter, 5)
        assert latency >= 0


async def test_client_close_code_comes_back_from_the_echo(env: Env) -> None:
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.close(4001, "client says bye")
    # The echo backend answers a close with the same code.
    assert ws.close_code == 4001


async def test_refusal_before_upgrade_does_not_upgrade(env: Env) -> None:
    try:
        async with connect(env.url):
            raise AssertionError("upgraded without a token")
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 401
