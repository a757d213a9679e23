"""What the backend sees of the client's upgrade request, and what the client sees of the
backend's answer: path, query, headers, subprotocol, permessage-deflate end to end."""

from __future__ import annotations

import asyncio
import os

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import PerMessageDeflate

from .backends import TIMEOUT, RecordingBackend
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")


async def gateway_to(
    make_gateway: GatewayFactory, peers: Peers, path: str = "", **serve_kwargs: object
) -> tuple[Env, RecordingBackend]:
    backend = await peers.recording(path, **serve_kwargs)
    env = await make_gateway(production=backend.url, sandbox=backend.url)
    return env, backend


async def round_trip(ws, message: str | bytes) -> None:  # noqa: ANN001
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


async def test_path_suffix_and_query_reach_the_backend(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers)
    async with connect(
        f"{env.url}/rooms/7?x=1", additional_headers=env.auth(), compression=None, proxy=None
    ) as ws:
        await round_trip(ws, "hi")
    assert (await backend.next()).path == "/rooms/7?x=1"


async def test_no_suffix_reaches_the_backend_root(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers)
    async with connect(env.url, additional_headers=env.auth(), compression=None, proxy=None):
        pass
    assert (await backend.next()).path == "/"


async def test_endpoint_base_path_is_prepended(make_gateway: GatewayFactory, peers: Peers) -> None:
    env, backend = await gateway_to(make_gateway, peers, "/base/v2")
    async with connect(
        f"{env.url}/rooms/7?x=1", additional_headers=env.auth(), compression=None, proxy=None
    ):
        pass
    assert (await backend.next()).path == "/base/v2/rooms/7?x=1"
    # The default version (no version segment) goes to the same place.
    async with connect(
        f"{env.base}/echowebsocket/rooms/8", additional_headers=env.auth(), proxy=None
    ):
        pass
    assert (await backend.next()).path == "/base/v2/rooms/8"


async def test_access_token_query_parameter_is_removed(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers)
    token = env.tokens["PRODUCTION"]
    for query, forwarded in [
        (f"a=1&access_token={token}&b=2", "/?a=1&b=2"),
        (f"access_token={token}", "/"),
        (f"access_token={token}&my_access_token=keep", "/?my_access_token=keep"),
    ]:
        async with connect(f"{env.url}?{query}", compression=None, proxy=None):
            pass
        seen = await backend.next()
        assert seen.path == forwarded
        assert token not in str(seen.headers)


async def test_headers_forwarded_and_authorization_never(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers, subprotocols=["chat"])
    async with connect(
        env.url,
        origin="https://app.example",  # type: ignore[arg-type]
        user_agent_header="wsgw-tests/1.0",
        subprotocols=["chat"],  # type: ignore[list-item]
        additional_headers={**env.auth(), "X-Forwarded-For": "203.0.113.9, 10.0.0.1"},
        compression=None,
        proxy=None,
    ):
        pass
    headers = (await backend.next()).headers
    assert headers["Origin"] == "https://app.example"
    assert headers["User-Agent"] == "wsgw-tests/1.0"
    assert headers["Sec-WebSocket-Protocol"] == "chat"
    assert headers["X-Forwarded-For"] == "203.0.113.9, 10.0.0.1, 127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert "Authorization" not in headers
    assert env.tokens["PRODUCTION"] not in str(headers)


async def test_x_forwarded_for_is_set_when_absent(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers)
    async with connect(env.url, additional_headers=env.auth(), compression=None, proxy=None):
        pass
    headers = (await backend.next()).headers
    assert headers.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert "Origin" not in headers


async def test_backend_chosen_subprotocol_reaches_the_client(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers, subprotocols=["chat.v2"])
    async with connect(
        env.url,
        subprotocols=["chat.v1", "chat.v2"],  # type: ignore[list-item]
        additional_headers=env.auth(),
        compression=None,
        proxy=None,
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        await round_trip(ws, "in chat.v2")
    seen = await backend.next()
    assert seen.headers["Sec-WebSocket-Protocol"] == "chat.v1, chat.v2"
    assert seen.subprotocol == "chat.v2"


async def test_backend_choosing_no_subprotocol_gives_the_client_none(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers)
    async with connect(
        env.url,
        subprotocols=["chat.v1"],  # type: ignore[list-item]
        additional_headers=env.auth(),
        compression=None,
        proxy=None,
    ) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        await round_trip(ws, "no subprotocol")
    assert (await backend.next()).subprotocol is None


async def test_permessage_deflate_end_to_end(make_gateway: GatewayFactory, peers: Peers) -> None:
    env, backend = await gateway_to(make_gateway, peers, compression="deflate")
    async with connect(
        env.url, additional_headers=env.auth(), compression="deflate", proxy=None
    ) as ws:
        assert [type(e) for e in ws.protocol.extensions] == [PerMessageDeflate]
        text = "compress me " * 1000
        await round_trip(ws, text)
        await round_trip(ws, os.urandom(70_000))  # incompressible, 64-bit length
        await round_trip(ws, b"\x00" * 200_000)
        # Fragmented: RSV1 on the first frame only, continuation frames without it; a
        # ping and its pong cross the gateway between two fragments.
        pongs = []

        async def fragments():  # noqa: ANN202
            yield "frag" * 100
            pongs.append(await ws.ping(b"mid-message"))
            yield "ment" * 100
            yield "ed" * 100

        await ws.send(fragments())
        expected = "frag" * 100 + "ment" * 100 + "ed" * 100
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == expected
        await asyncio.wait_for(pongs[0], TIMEOUT)
    seen = await backend.next()
    await seen.wait_ended()
    assert seen.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert [type(e) for e in seen.connection.protocol.extensions] == [PerMessageDeflate]
    assert len(seen.messages) == 4


async def test_without_deflate_offered_the_backend_sees_no_extension(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers, compression="deflate")
    async with connect(env.url, additional_headers=env.auth(), compression=None, proxy=None) as ws:
        assert ws.protocol.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await round_trip(ws, "plain " * 100)
    seen = await backend.next()
    assert "Sec-WebSocket-Extensions" not in seen.headers
    assert seen.connection.protocol.extensions == []


async def test_deflate_offered_but_declined_by_the_backend(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await gateway_to(make_gateway, peers, compression=None)
    async with connect(
        env.url, additional_headers=env.auth(), compression="deflate", proxy=None
    ) as ws:
        assert ws.protocol.extensions == []
        await round_trip(ws, "uncompressed " * 100)
    assert (
        (await backend.next()).headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    )
