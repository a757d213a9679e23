"""Every refusal of the handshake: the status, a JSON body {"error", "message"}, no upgrade,
no stack trace. Clients: websockets (it shows the refused response), aiohttp for plain
HTTP, a raw socket where the request itself must be broken."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
import yaml
from websockets.asyncio.client import connect

from wsgw.cli import main as wsgw_main
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.tokens import TokenIssuer

from .backends import (
    TIMEOUT,
    RawClient,
    free_port,
    switching_protocols,
    upgrade_request,
    ws_accept,
)
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")

INVALID_TOKEN = 'Bearer error="invalid_token"'


async def refused(
    url: str, headers: dict[str, str] | None = None, **kwargs: object
) -> tuple[int, dict, dict]:
    """Try to upgrade; return (status, headers, JSON body) of the refusal."""
    try:
        async with connect(
            url, additional_headers=headers, open_timeout=TIMEOUT, proxy=None, **kwargs
        ):
            pass
    except websockets.InvalidStatus as exc:
        response = exc.response
        assert response.status_code != 101
        assert b"Traceback" not in response.body
        body = orjson.loads(response.body)
        assert set(body) == {"error", "message"}, body
        assert isinstance(body["message"], str) and body["message"]
        return response.status_code, dict(response.headers.raw_items()), body
    raise AssertionError(f"{url} was upgraded")


def edit_subscriptions(env: Env, change: Callable[[dict], None]) -> None:
    path = Path(env.gateway.config.gateway.subscriptions_file)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert env.gateway.reload("test")["result"] == "ok"


# ------------------------------------------------------------------------------ 404


async def test_unknown_api_is_404(env: Env) -> None:
    status, _, body = await refused(f"{env.base}/nosuchapi/1.0", env.auth())
    assert (status, body["error"]) == (404, "not_found")


async def test_unknown_version_is_404(make_gateway: GatewayFactory) -> None:
    def no_default(config: dict) -> None:
        config["apis"][0]["default_version"] = False

    env = await make_gateway(edit=no_default)
    status, _, body = await refused(f"{env.base}/echowebsocket/2.0", env.auth())
    assert (status, body["error"]) == (404, "not_found")


# ------------------------------------------------------------------------------ 401


async def _assert_invalid_token(env: Env, headers: dict[str, str] | None) -> dict:
    status, response_headers, body = await refused(env.url, headers)
    assert status == 401
    assert response_headers.get("WWW-Authenticate") == INVALID_TOKEN
    assert body["error"] == "invalid_token"
    return body


async def test_missing_token_is_401(env: Env) -> None:
    await _assert_invalid_token(env, None)


async def test_malformed_token_is_401(env: Env) -> None:
    await _assert_invalid_token(env, {"Authorization": "Bearer not.a.jwt"})
    await _assert_invalid_token(env, {"Authorization": "Bearer"})


async def test_expired_token_is_401(env: Env) -> None:
    key = load_signing_key(env.gateway.config.security.signing_key_file)
    issuer = TokenIssuer(key, env.gateway.config.security.issuer, 1, clock=lambda: time.time() - 60)
    consumer_key = env.gateway.registry._consumer_keys[("DefaultApplication", "PRODUCTION")]
    token, _ = issuer.issue("DefaultApplication", "PRODUCTION", consumer_key)
    body = await _assert_invalid_token(env, {"Authorization": f"Bearer {token}"})
    assert "expired" in body["message"]


async def test_token_signed_by_another_key_is_401(env: Env, tmp_path: Path) -> None:
    generate_signing_key(tmp_path / "other.pem")
    other = TokenIssuer(load_signing_key(tmp_path / "other.pem"), "wsgw", 3600)
    consumer_key = env.gateway.registry._consumer_keys[("DefaultApplication", "PRODUCTION")]
    token, _ = other.issue("DefaultApplication", "PRODUCTION", consumer_key)
    await _assert_invalid_token(env, {"Authorization": f"Bearer {token}"})


async def test_token_in_query_is_checked_too(env: Env) -> None:
    status, response_headers, _ = await refused(f"{env.url}?access_token=garbage")
    assert status == 401
    assert response_headers.get("WWW-Authenticate") == INVALID_TOKEN


async def test_regenerated_keys_revoke_the_old_token(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = str(env.directory / "wsgw.yaml")
    old = env.auth()
    async with connect(env.url, additional_headers=old, proxy=None) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] before"
    argv = ["keys", "generate", "-c", config_file, "DefaultApplication", "--key-type", "production"]
    assert wsgw_main(argv) == 0
    assert "consumer_secret" in capsys.readouterr().out
    assert env.gateway.reload("test")["result"] == "ok"
    body = await _assert_invalid_token(env, old)
    assert "revoked" in body["message"]
    # A token for the new key works.
    async with connect(
        env.url, additional_headers={"Authorization": f"Bearer {env.token()}"}, proxy=None
    ) as ws:
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] after"


# ------------------------------------------------------------------------------ 403


async def test_not_subscribed_is_403(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(subscribe_to=None)
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (403, "forbidden")
    assert "not subscribed" in body["message"]


async def test_blocked_subscription_is_403(env: Env) -> None:
    def block(data: dict) -> None:
        data["applications"][0]["subscriptions"][0]["status"] = "BLOCKED"

    edit_subscriptions(env, block)
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (403, "forbidden")
    assert "BLOCKED" in body["message"]


def _subscribe_by_hand(env: Env) -> None:
    """The portal refuses subscriptions to an unpublished API; the file may still hold one
    made while it was published."""

    def add(data: dict) -> None:
        data["applications"][0]["subscriptions"] = [
            {"api": "EchoWebSocket", "version": "1.0", "tier": "Gold", "status": "ACTIVE"}
        ]

    edit_subscriptions(env, add)


@pytest.mark.parametrize("status", ["CREATED", "BLOCKED", "RETIRED"])
async def test_api_not_published_is_403(make_gateway: GatewayFactory, status: str) -> None:
    def set_status(config: dict) -> None:
        config["apis"][0]["status"] = status

    env = await make_gateway(edit=set_status, subscribe_to=None)
    _subscribe_by_hand(env)
    code, _, body = await refused(env.url, env.auth())
    assert (code, body["error"]) == (403, "forbidden")
    assert status in body["message"]


async def test_deprecated_api_still_serves(make_gateway: GatewayFactory) -> None:
    def deprecate(config: dict) -> None:
        config["apis"][0]["status"] = "DEPRECATED"

    env = await make_gateway(edit=deprecate, subscribe_to=None)
    _subscribe_by_hand(env)
    async with connect(env.url, additional_headers=env.auth(), proxy=None) as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] still here"


async def test_sandbox_token_without_sandbox_endpoint_is_403(
    make_gateway: GatewayFactory,
) -> None:
    def production_only(config: dict) -> None:
        del config["apis"][0]["endpoints"]["sandbox"]

    env = await make_gateway(edit=production_only)
    status, _, body = await refused(env.url, env.auth("SANDBOX"))
    assert (status, body["error"]) == (403, "forbidden")
    assert "sandbox" in body["message"]


# ------------------------------------------------------------------------- 502, 504


async def test_backend_port_closed_is_502(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(production=f"ws://127.0.0.1:{free_port()}")
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (502, "bad_gateway")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nnope!\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until EOF",
        b"this is not HTTP at all\r\n\r\n",
    ],
    ids=["403", "200", "200-until-eof", "garbage"],
)
async def test_backend_refusing_the_upgrade_is_502(
    make_gateway: GatewayFactory, peers: Peers, answer: bytes
) -> None:
    def make_handler(backend):  # noqa: ANN001, ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)
            writer.write(answer)
            await writer.drain()
            writer.close()

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (502, "bad_gateway")


async def test_backend_wrong_accept_is_502(make_gateway: GatewayFactory, peers: Peers) -> None:
    def make_handler(backend):  # noqa: ANN001, ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)
            writer.write(switching_protocols("not-the-key-we-were-sent"))
            await asyncio.sleep(TIMEOUT)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (502, "bad_gateway")


@pytest.mark.parametrize(
    "answer",
    [
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {accept}\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Accept: {accept}\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: not-offered\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-unknown\r\n\r\n",
    ],
    ids=[
        "no-upgrade",
        "no-connection",
        "subprotocol-not-offered",
        "deflate-not-offered",
        "unknown-extension",
    ],
)
async def test_backend_invalid_101_is_502(
    make_gateway: GatewayFactory, peers: Peers, answer: str
) -> None:
    def make_handler(backend):  # noqa: ANN001, ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            writer.write(answer.format(accept=ws_accept(key)).encode())
            await asyncio.sleep(TIMEOUT)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url)
    # No subprotocol and no extension offered: the client is not upgraded.
    status, _, body = await refused(env.url, env.auth(), compression=None)
    assert (status, body["error"]) == (502, "bad_gateway")


async def test_backend_handshake_timeout_is_504(make_gateway: GatewayFactory, peers: Peers) -> None:
    def make_handler(backend):  # noqa: ANN001, ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)
            await asyncio.sleep(TIMEOUT)  # accepted TCP, never answers the upgrade

        return handler

    def short_timeout(config: dict) -> None:
        config["gateway"]["backend_handshake_timeout_s"] = 0.5

    backend = await peers.raw(make_handler)
    env = await make_gateway(edit=short_timeout, production=backend.url)
    started = time.monotonic()
    status, _, body = await refused(env.url, env.auth())
    assert (status, body["error"]) == (504, "gateway_timeout")
    assert 0.4 < time.monotonic() - started < 3.0
    assert len(backend.requests) == 1


# ------------------------------------------------------------------ plain HTTP, 400


async def test_plain_get_on_an_api_path_is_426(env: Env) -> None:
    url = env.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as session, session.get(url, headers=env.auth()) as r:
        assert r.status == 426
        assert r.headers["Upgrade"] == "websocket"
        body = await r.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "upgrade_required"


@pytest.mark.parametrize("key", ["abc", "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "!!!!"])
async def test_bad_websocket_key_is_400(env: Env, key: str) -> None:
    client = await RawClient.connect(
        env.gateway.address,
        "/echowebsocket/1.0",
        {**env.auth(), "Sec-WebSocket-Key": key},
    )
    try:
        assert client.status == 400
        assert "upgrade" not in client.headers.get("connection", "").lower()
        n = int(client.headers["content-length"])
        body = orjson.loads(await asyncio.wait_for(client.reader.readexactly(n), TIMEOUT))
        assert body["error"] == "bad_request"
        assert await client.eof()
    finally:
        client.close()


async def test_gateway_health(env: Env) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{env.http}/health") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"


async def test_admin_health_and_stats(env: Env) -> None:
    async with connect(env.url, additional_headers=env.auth(), proxy=None) as ws:
        await ws.send("count me")
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    await refused(f"{env.base}/nosuchapi/1.0")
    admin = f"http://{env.gateway.admin_address}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/health") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        async with session.get(f"{admin}/stats") as r:
            assert r.status == 200
            stats = await r.json()
        async with session.get(f"{admin}/nothing-here") as r:
            assert r.status == 404
    assert stats["apis"]["EchoWebSocket:1.0"]["connections"]["upgraded"] == 1
    assert stats["apis"]["EchoWebSocket:1.0"]["messages"]["client_to_backend"] == 1
    assert stats["apis"]["-"]["connections"]["404"] == 1
    assert stats["applications"]["DefaultApplication"]["messages"]["backend_to_client"] == 1


# ----------------------------------------------------------- malformed requests, 400+


async def test_token_in_header_and_query_is_400(env: Env) -> None:
    status, _, body = await refused(
        f"{env.url}?access_token={env.tokens['PRODUCTION']}", env.auth()
    )
    assert (status, body["error"]) == (400, "bad_request")


async def test_basic_authorization_is_401(env: Env) -> None:
    await _assert_invalid_token(env, {"Authorization": "Basic dXNlcjpwYXNz"})


async def raw_answer(env: Env, request: bytes) -> tuple[int, dict]:
    """Send `request` as is; the status and JSON body of the answer, then EOF."""
    host, _, port = env.gateway.address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        start, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # then closed
        return int(start.split()[1]), orjson.loads(body)
    finally:
        writer.close()


async def test_http_1_0_upgrade_is_400(env: Env) -> None:
    request = upgrade_request("/echowebsocket/1.0", env.auth()).replace(b"HTTP/1.1", b"HTTP/1.0")
    status, body = await raw_answer(env, request)
    assert (status, body["error"]) == (400, "bad_request")


async def test_oversized_request_head_is_431(env: Env) -> None:
    """16 KiB of head at most, whether it arrives in one read or in many."""
    request = upgrade_request("/echowebsocket/1.0", {**env.auth(), "X-Big": "x" * 20_000})
    status, body = await raw_answer(env, request)  # one write: most likely one read
    assert status == 431
    assert set(body) == {"error", "message"}
    client = await RawClient.connect(
        env.gateway.address, "/echowebsocket/1.0", {**env.auth(), "X-Big": "x" * 15_000}
    )
    client.close()
    assert client.status == 101  # a large head under the limit is fine


async def test_garbage_request_is_400(env: Env) -> None:
    status, body = await raw_answer(env, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    assert (status, body["error"]) == (400, "bad_request")


async def test_post_to_health_is_405(env: Env) -> None:
    status, body = await raw_answer(
        env, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert status == 405


async def test_request_that_never_completes_is_dropped(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that opens a connection and trickles (or sends nothing) does not hold it."""
    monkeypatch.setattr("wsgw.pipeline.accept.REQUEST_TIMEOUT_S", 0.3)
    host, _, port = env.gateway.address.rpartition(":")
    for partial in (b"", b"GET /echowebsocket/1.0 HTTP/1.1\r\nHost: x\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(partial)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert time.monotonic() - started < 2.0
        writer.close()
    assert not env.gateway.connections
