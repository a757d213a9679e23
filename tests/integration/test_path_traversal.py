"""Dot segments and encoded separators never take a request out of its endpoint's base path.

The backend's endpoint is ws://127.0.0.1:PORT/private/api. Each request target is sent on
a raw socket, as written (a client library would resolve or re-encode some of them), and
either is refused before any backend is contacted, or reaches the backend under
/private/api with no dot segment left in any spelling."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import pytest

from .backends import TIMEOUT, RawClient, RecordingBackend, read_head
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")

BASE = "/private/api"
API = "/echowebsocket/1.0"


async def gateway_to_base(
    make_gateway: GatewayFactory, peers: Peers
) -> tuple[Env, RecordingBackend]:
    backend = await peers.recording(BASE)
    env = await make_gateway(production=backend.url, sandbox=backend.url)
    return env, backend


async def send(env: Env, target: str) -> int:
    client = await RawClient.connect(env.gateway.address, target, env.auth())
    client.close()
    return client.status


def assert_under_base(seen_path: str) -> None:
    """Under the base path, and no dot segment however the backend decodes it (once)."""
    path = seen_path.partition("?")[0]
    assert path == BASE or path.startswith(BASE + "/"), seen_path
    for spelling in (path, unquote(path), path.replace("\\", "/")):
        for segment in spelling.replace("\\", "/").split("/"):
            assert segment.split(";")[0] not in (".", ".."), seen_path
    assert "%2f" not in path.lower() and "%5c" not in path.lower(), seen_path


# (request target, forwarded path): the target is normalised (RFC 3986 §6.2.2.2 and
# §5.2.4) and routed as normalised; its suffix under the API goes under the base path.
FORWARDED = [
    (f"{API}/a/../x", f"{BASE}/x"),
    (f"{API}/a/b/../../x", f"{BASE}/x"),
    (f"{API}/../x", f"{BASE}/x"),  # /echowebsocket/x: the default version
    (f"{API}/./x/.", f"{BASE}/x/"),
    (f"{API}/a/..", f"{BASE}/"),
    (f"{API}/a/%2e%2e/x", f"{BASE}/x"),
    (f"{API}/a/%2E%2E/x", f"{BASE}/x"),
    (f"{API}/a/%2e%2E/x", f"{BASE}/x"),
    (f"{API}/a/.%2e/x", f"{BASE}/x"),
    (f"{API}/a/%2e./x", f"{BASE}/x"),
    (f"{API}/a/.%2E/x", f"{BASE}/x"),
    (f"{API}/a/%2E./x", f"{BASE}/x"),
    (f"{API}/%2e/x/%2E", f"{BASE}/x/"),
    (f"{API}/../../echowebsocket/1.0/x", f"{BASE}/x"),
    ("/echowebsocket/./1.0/x", f"{BASE}/x"),
    ("/../../echowebsocket/1.0/x", f"{BASE}/x"),  # nothing above the root (§5.2.4)
    # Encoded unreserved characters are decoded once; %25 is not, so a double-encoded
    # dot stays literal: it names a segment "%2e%2e", not "..".
    (f"{API}/%252e%252e/%252E%252E/x", f"{BASE}/%252e%252e/%252E%252E/x"),
    ("/%65chowebsocket/1%2E0/%41%7e", f"{BASE}/A~"),
    (f"{API}/.well-known/...", f"{BASE}/.well-known/..."),
    # Absolute-form (RFC 9112 §3.2.2: a server MUST accept it) is routed by its path.
    (f"http://127.0.0.1{API}/a/../x", f"{BASE}/x"),
    (f"http://127.0.0.1{API}/%2e%2e/1.0/x", f"{BASE}/x"),
    # The query is not the path: forwarded as it is.
    (f"{API}/a/../x?p=../..&q=%2e%2e%2f", f"{BASE}/x?p=../..&q=%2e%2e%2f"),
]


@pytest.mark.parametrize(("target", "forwarded"), FORWARDED)
async def test_dot_segments_resolve_under_the_base_path(
    make_gateway: GatewayFactory, peers: Peers, target: str, forwarded: str
) -> None:
    env, backend = await gateway_to_base(make_gateway, peers)
    assert await send(env, target) == 101
    seen = await backend.next()
    assert seen.path == forwarded
    assert_under_base(seen.path)


# Refused before routing: 400 bad_request.
BAD = [
    f"{API}/..%2f..%2fx",
    f"{API}/..%2F..%2Fx",
    f"{API}/%2e%2e%2f%2e%2e%2fx",
    f"{API}/x%2fy",
    f"{API}/..%5c..%5cx",
    f"{API}/..%5C..%5Cx",
    f"{API}/..\\..\\x",
    f"{API}/x\\y",
    f"{API}/x%00",
    f"{API}/..%00/x",
    f"{API}/..;/..;/x",
    f"{API}/.;x/y",
    f"{API}/%2e%2e;jsessionid=1/x",
    f"{API}/..%3b/x",
    f"{API}/x%zz",
    f"{API}/x%2",
    f"{API}/x%",
    "*",
]


@pytest.mark.parametrize("target", BAD)
async def test_encoded_separators_and_hidden_dots_are_400(
    make_gateway: GatewayFactory, peers: Peers, target: str
) -> None:
    env, backend = await gateway_to_base(make_gateway, peers)
    assert await send(env, target) == 400
    with pytest.raises(TimeoutError):
        await backend.next(timeout=0.2)


# Resolved to a path that is no API: 404, and no backend is contacted.
NOT_FOUND = [
    f"{API}/../../x",
    f"{API}/%2e%2e/%2e%2e/x",
    f"{API}/%2E%2E/%2E%2E/private/api/x",
    f"{API}/.%2e/%2e./x",
    f"{API}/a/../../../../../x",
    f"http://127.0.0.1{API}/../../x",
    "/echowebsocketX/1.0",
    "/echowebsocket.1.0/x",
    "/echo/websocket/1.0",
]


@pytest.mark.parametrize("target", NOT_FOUND)
async def test_climbing_out_of_every_api_is_404(
    make_gateway: GatewayFactory, peers: Peers, target: str
) -> None:
    env, backend = await gateway_to_base(make_gateway, peers)
    assert await send(env, target) == 404
    with pytest.raises(TimeoutError):
        await backend.next(timeout=0.2)


@pytest.mark.parametrize(
    ("target", "status"),
    [(f"{API}/..%2fx", 400), ("*", 400), (f"{API}/../../x", 404), (f"{API}/a/../x", 426)],
)
async def test_plain_requests_get_the_same_answer(
    make_gateway: GatewayFactory, peers: Peers, target: str, status: int
) -> None:
    """A plain GET (no upgrade) to an API path is refused by the same path rules."""
    env, _ = await gateway_to_base(make_gateway, peers)
    host, _, port = env.gateway.address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1"))
    start, _ = await read_head(reader)
    writer.close()
    assert int(start.split()[1]) == status
