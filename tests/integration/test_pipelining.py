"""One request per parse, on real sockets: what follows a request in the same segment is
never read as part of it. After a plain request the gateway answers that one and closes;
after an upgrade request the rest is WebSocket data, relayed after the 101."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from .backends import (
    OP_CLOSE,
    OP_TEXT,
    TIMEOUT,
    RawBackend,
    RawClient,
    close_payload,
    encode_frame,
    read_frame,
    switching_protocols,
    upgrade_request,
)
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")


async def answers(env: Env, data: bytes) -> list[tuple[int, dict, bytes]]:
    """Write `data` in one write; every response read until the gateway closes (status,
    headers, body), bounded."""
    host, _, port = env.gateway.address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
    out = []
    try:
        writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            for _ in range(4):  # more than one answer is the failure
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    assert exc.partial == b"", exc.partial  # nothing but whole answers
                    break
                start, *lines = head.decode("latin-1").split("\r\n")
                fields = [ln.partition(":") for ln in lines if ln]
                headers = {k.lower(): v.strip() for k, _, v in fields}
                body = await reader.readexactly(int(headers["content-length"]))
                out.append((int(start.split()[1]), headers, body))
    finally:
        writer.close()
    return out


async def untouched_backend(make_gateway: GatewayFactory, peers: Peers) -> tuple[Env, RawBackend]:
    """A gateway whose backends record connections and answer nothing."""

    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backend.handshake(reader)

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url, sandbox=backend.url)
    return env, backend


def health(query: str = "", version: str = "1.1") -> bytes:
    return f"GET /health{query} HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n".encode()


# ------------------------------------------------------------------------- the desync


async def test_health_with_a_token_then_a_tokenless_upgrade_is_one_health_check(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env, backend = await untouched_backend(make_gateway, peers)
    token = env.tokens["PRODUCTION"]
    data = health(f"?access_token={token}") + upgrade_request("/echowebsocket/1.0")
    got = await answers(env, data)
    assert [(status, orjson.loads(body)) for status, _, body in got] == [(200, {"status": "ok"})]
    await asyncio.sleep(0.1)
    assert backend.writers == []  # the backend never saw a connection


async def test_a_plain_get_with_a_token_never_lends_it_to_the_next_request(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    """Merged, these two made one authenticated upgrade to /echowebsocket/1.0."""
    env, backend = await untouched_backend(make_gateway, peers)
    first = (
        f"GET /echowebsocket HTTP/1.1\r\nAuthorization: Bearer {env.tokens['PRODUCTION']}\r\n\r\n"
    ).encode()  # no Host: the upgrade's one would have been the only one
    got = await answers(env, first + upgrade_request("/1.0"))
    assert len(got) == 1
    status, _, body = got[0]
    assert status != 101
    assert set(orjson.loads(body)) == {"error", "message"}
    await asyncio.sleep(0.1)
    assert backend.writers == []


async def test_pipelined_health_checks_get_one_answer(env: Env) -> None:
    got = await answers(env, health() + health())
    assert [(status, orjson.loads(body)) for status, _, body in got] == [(200, {"status": "ok"})]
    assert got[0][1]["connection"] == "close"


# ----------------------------------------------------- after an upgrade: WebSocket data


async def test_a_frame_in_the_upgrade_segment_reaches_the_backend(env: Env) -> None:
    frame = encode_frame(OP_TEXT, b"right behind the upgrade")
    client = await RawClient.connect(
        env.gateway.address, "/echowebsocket/1.0", env.auth(), early=frame
    )
    try:
        assert client.status == 101
        echo = await client.frame()
        assert (echo.opcode, echo.payload) == (OP_TEXT, b"[production] right behind the upgrade")
        client.send(encode_frame(OP_CLOSE, close_payload(1000)))
        assert (await client.frame()).close_code == 1000
    finally:
        client.close()


async def test_a_request_in_the_upgrade_segment_is_websocket_data(env: Env) -> None:
    """Not a second request: bytes that are no valid frame fail the connection (1002)."""
    client = await RawClient.connect(
        env.gateway.address, "/echowebsocket/1.0", env.auth(), early=health()
    )
    try:
        assert client.status == 101
        assert (await client.frame()).close_code == 1002
    finally:
        client.close()


async def test_a_frame_in_the_101_segment_reaches_the_client(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    def make_handler(backend: RawBackend):  # noqa: ANN202
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            writer.write(
                switching_protocols(key) + encode_frame(OP_TEXT, b"hello first", mask=False)
            )
            frame = await read_frame(reader)
            writer.write(encode_frame(frame.opcode, frame.payload, mask=False))

        return handler

    backend = await peers.raw(make_handler)
    env = await make_gateway(production=backend.url, sandbox=backend.url)
    client = await RawClient.connect(env.gateway.address, "/echowebsocket/1.0", env.auth())
    try:
        assert client.status == 101
        first = await client.frame()
        assert (first.opcode, first.payload) == (OP_TEXT, b"hello first")
    finally:
        client.close()


# ------------------------------------------------------------------ small HTTP items


async def test_oversized_token_body_is_413(env: Env) -> None:
    body = b"grant_type=client_credentials&pad=" + b"x" * 70_000
    request = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    got = await answers(env, request)
    assert [(status, orjson.loads(b)["error"]) for status, _, b in got] == [
        (413, "payload_too_large")
    ]


async def test_announced_oversized_token_body_is_413_at_once(env: Env) -> None:
    request = b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 70000\r\n\r\n"
    got = await answers(env, request)  # no body sent: the answer comes before the timeout
    assert [(status, orjson.loads(b)["error"]) for status, _, b in got] == [
        (413, "payload_too_large")
    ]


async def test_http_1_0_health_check_is_200(env: Env) -> None:
    got = await answers(env, health(version="1.0"))
    assert [(status, orjson.loads(body)) for status, _, body in got] == [(200, {"status": "ok"})]


async def test_http_1_0_token_request_works(env: Env) -> None:
    consumer_key, consumer_secret = env.keys["PRODUCTION"]
    basic = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
    body = b"grant_type=client_credentials"
    request = (
        f"POST /oauth2/token HTTP/1.0\r\nAuthorization: Basic {basic}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    got = await answers(env, request)
    assert len(got) == 1
    status, _, answer = got[0]
    assert status == 200
    assert orjson.loads(answer)["token_type"] == "Bearer"


@pytest.mark.parametrize(
    "extra",
    [b"Transfer-Encoding: chunked\r\n", b"Content-Length: 2\r\n"],
    ids=["chunked", "content-length"],
)
async def test_an_upgrade_with_a_body_is_400(
    make_gateway: GatewayFactory, peers: Peers, extra: bytes
) -> None:
    env, backend = await untouched_backend(make_gateway, peers)
    request = upgrade_request("/echowebsocket/1.0", env.auth())
    got = await answers(env, request[:-2] + extra + b"\r\n" + b"2\r\nhi\r\n0\r\n\r\n")
    assert [(status, orjson.loads(b)["error"]) for status, _, b in got] == [(400, "bad_request")]
    assert backend.writers == []
