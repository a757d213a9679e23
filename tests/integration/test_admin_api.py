"""The admin API against real gateways, over real HTTP (aiohttp) and real WebSocket clients
(websockets, with its defaults): listing and closing connections, reload, drain, the admin
token; and POST /oauth2/revoke on the gateway port, end to end.

Every admin request carries the admin token (configured by gateway.admin_token_file). The
tests that need it enforced skip while the runtime bundle has no `admin_token` field; the
router tests (tests/pipeline/test_plain_router.py) cover the token either way.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yarl
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsgw.admin import load_admin_token
from wsgw.errors import ConfigError
from wsgw.portal import create_app, generate_keys, subscribe

from .backends import TIMEOUT, RecordingBackend, Seen
from .conftest import Env, GatewayFactory, Peers

pytestmark = pytest.mark.usefixtures("no_tracebacks")

ADMIN_TOKEN = "wsgw-admin-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
OTHER_API = ("OtherWebSocket", "/otherwebsocket", "1.0")


# ------------------------------------------------------------------- set-up
def admin_token_file(directory: Path, text: str = ADMIN_TOKEN + "\n", mode: int = 0o600) -> Path:
    path = directory / "admin.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def with_admin_token(directory: Path, more: Callable[[dict], None] | None = None) -> Callable:
    def edit(raw: dict) -> None:
        raw["gateway"]["admin_token_file"] = str(admin_token_file(directory))
        if more is not None:
            more(raw)

    return edit


def assert_admin_token_loaded(env: Env) -> None:
    """The gateway read gateway.admin_token_file at start (the bundle carries it)."""
    assert env.gateway.services.admin_token == ADMIN_TOKEN.encode()


async def admin_gateway(
    make_gateway: GatewayFactory,
    tmp_path: Path,
    more: Callable[[dict], None] | None = None,
    **kwargs: Any,
) -> Env:
    env = await make_gateway(edit=with_admin_token(tmp_path, more), **kwargs)
    assert_admin_token_loaded(env)
    return env


class Admin:
    """The admin port of one gateway, called with the token (or `token=`)."""

    def __init__(self, session: aiohttp.ClientSession, env: Env) -> None:
        self.session = session
        self.base = f"http://{env.gateway.admin_address}"

    async def call(
        self, method: str, target: str, *, token: str | None = ADMIN_TOKEN
    ) -> tuple[int, dict[str, str], Any, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = yarl.URL(self.base + target, encoded=True)  # sent exactly as written
        async with self.session.request(method, url, headers=headers) as response:
            raw = await response.read()
            json = response.content_type == "application/json"
            body = orjson.loads(raw) if json else None
            return response.status, dict(response.headers), body, raw

    async def connections(self, query: str = "") -> dict[str, Any]:
        status, _, body, _ = await self.call("GET", "/connections" + query)
        assert status == 200, body
        return body


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def open_client(url: str, token: str) -> ClientConnection:
    client = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    await client.send("hello")
    assert (await asyncio.wait_for(client.recv(), TIMEOUT)).endswith("hello")
    return client


async def closed_with(client: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), TIMEOUT)
    assert client.close_code is not None
    return client.close_code, client.close_reason


async def still_open(*clients: ClientConnection) -> None:
    for client in clients:
        await client.send("still there?")
        assert (await asyncio.wait_for(client.recv(), TIMEOUT)).endswith("still there?")


def add_other_api(raw: dict) -> None:
    name, context, version = OTHER_API
    first = raw["apis"][0]
    raw["apis"].append({**first, "name": name, "context": context, "version": version})


class Fleet:
    """Four connections: DefaultApplication's production and sandbox keys and OtherApp's
    production key on EchoWebSocket, and DefaultApplication on OtherWebSocket."""

    def __init__(self, env: Env, clients: dict[str, ClientConnection], tokens: list[str]) -> None:
        self.env = env
        self.clients = clients
        self.tokens = tokens

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def fleet_of(env: Env) -> Fleet:
    config = env.gateway.config
    create_app(config, "OtherApp")
    generate_keys(config, "OtherApp", "production")
    subscribe(config, "OtherApp", "EchoWebSocket", "1.0", "Gold")
    subscribe(config, "DefaultApplication", OTHER_API[0], OTHER_API[2], "Gold")
    assert env.gateway.reload("test")["result"] == "ok"
    other = env.token("OtherApp", "PRODUCTION")
    clients = {
        "prod": await open_client(env.url, env.tokens["PRODUCTION"]),
        "sandbox": await open_client(env.url, env.tokens["SANDBOX"]),
        "other_app": await open_client(env.url, other),
        "other_api": await open_client(
            f"{env.base}{OTHER_API[1]}/{OTHER_API[2]}", env.tokens["PRODUCTION"]
        ),
    }
    return Fleet(env, clients, [env.tokens["PRODUCTION"], env.tokens["SANDBOX"], other])


@pytest.fixture
async def fleet(make_gateway: GatewayFactory, tmp_path: Path) -> AsyncIterator[Fleet]:
    env = await admin_gateway(make_gateway, tmp_path, add_other_api)
    crew = await fleet_of(env)
    yield crew
    await crew.close()


def kinds(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((s["api"], s["application"], s["key_type"]) for s in body["connections"])


DEFAULT = ("EchoWebSocket", "DefaultApplication", "PRODUCTION")
SANDBOX = ("EchoWebSocket", "DefaultApplication", "SANDBOX")
OTHER_APP = ("EchoWebSocket", "OtherApp", "PRODUCTION")
ON_OTHER_API = ("OtherWebSocket", "DefaultApplication", "PRODUCTION")


# ---------------------------------------------------------- GET /connections
async def test_lists_the_open_connections_with_each_filter(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    admin = Admin(session, fleet.env)
    everything = await admin.connections()
    assert everything["count"] == 4
    assert kinds(everything) == sorted([DEFAULT, SANDBOX, OTHER_APP, ON_OTHER_API])
    ids = [s["id"] for s in everything["connections"]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    one = everything["connections"][0]
    assert set(one) == {
        "id",
        "api",
        "version",
        "application",
        "key_type",
        "tier",
        "client",
        "started",
        "messages_in",
        "bytes_in",
        "messages_out",
        "bytes_out",
        "compressed",
        "token_expires",
    }
    assert one["client"] == "127.0.0.1" and one["messages_in"] >= 1 and one["tier"] == "Gold"
    for query, expected in [
        ("?api=OtherWebSocket", [ON_OTHER_API]),
        ("?api=EchoWebSocket&version=1.0", sorted([DEFAULT, SANDBOX, OTHER_APP])),
        ("?version=1.0", sorted([DEFAULT, SANDBOX, OTHER_APP, ON_OTHER_API])),
        ("?application=OtherApp", [OTHER_APP]),
        ("?key_type=SANDBOX", [SANDBOX]),
        ("?application=DefaultApplication&key_type=PRODUCTION", sorted([DEFAULT, ON_OTHER_API])),
        ("?application=Nobody", []),
    ]:
        assert kinds(await admin.connections(query)) == expected, query
    limited = await admin.connections("?limit=1")
    assert len(limited["connections"]) == 1 and limited["count"] == 4


async def test_no_token_in_the_listing(fleet: Fleet, session: aiohttp.ClientSession) -> None:
    status, headers, _, raw = await Admin(session, fleet.env).call("GET", "/connections")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    for token in fleet.tokens:
        signature = token.rsplit(".", 1)[-1]
        assert token.encode() not in raw and signature.encode() not in raw


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?tier=Gold", "unknown query parameter 'tier'"),
        ("?api=a&api=b", "query parameter 'api' given more than once"),
        ("?api=%00", "control character in query parameter 'api'"),
        ("?limit=10001", "limit must be at most 10000"),
        ("?limit=x", "limit must be a decimal number"),
        ("?api", "malformed query string"),
    ],
)
async def test_list_refusals(
    fleet: Fleet, session: aiohttp.ClientSession, query: str, message: str
) -> None:
    status, _, body, _ = await Admin(session, fleet.env).call("GET", "/connections" + query)
    assert status == 400 and body["message"].startswith(message)


# -------------------------------------------------------- DELETE /connections/<id>
async def recorded_gateway(
    make_gateway: GatewayFactory, peers: Peers, tmp_path: Path
) -> tuple[Env, RecordingBackend]:
    backend = await peers.recording()
    return await admin_gateway(make_gateway, tmp_path, production=backend.url), backend


async def connected(env: Env, backend: RecordingBackend) -> tuple[ClientConnection, Seen]:
    client = await open_client(env.url, env.tokens["PRODUCTION"])
    return client, await backend.next()


async def only_id(admin: Admin) -> int:
    listing = await admin.connections()
    assert listing["count"] == 1
    return int(listing["connections"][0]["id"])


async def test_delete_one_closes_both_sides_with_4000(
    make_gateway: GatewayFactory, peers: Peers, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env, backend = await recorded_gateway(make_gateway, peers, tmp_path)
    client, seen = await connected(env, backend)
    admin = Admin(session, env)
    conn_id = await only_id(admin)
    status, headers, body, _ = await admin.call("DELETE", f"/connections/{conn_id}")
    assert (status, body) == (200, {"closed": 1})
    assert await closed_with(client) == (4000, "closed by operator")
    await seen.wait_ended()
    assert (seen.close_code, seen.close_reason) == (4000, "closed by operator")
    status, _, body, _ = await admin.call("DELETE", f"/connections/{conn_id}")
    assert (status, body["error"]) == (404, "not_found")
    assert await admin.connections() == {"connections": [], "count": 0}


async def test_delete_one_with_a_code_and_reason(
    make_gateway: GatewayFactory, peers: Peers, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env, backend = await recorded_gateway(make_gateway, peers, tmp_path)
    client, seen = await connected(env, backend)
    other, _ = await connected(env, backend)
    admin = Admin(session, env)
    listing = await admin.connections()
    conn_id = min(s["id"] for s in listing["connections"])  # `client`: opened first
    target = f"/connections/{conn_id}?code=4321&reason=maintenance%3A+back+in+5+min+%E2%80%94+ok"
    status, _, body, _ = await admin.call("DELETE", target)
    assert (status, body) == (200, {"closed": 1})
    assert await closed_with(client) == (4321, "maintenance: back in 5 min — ok")
    await seen.wait_ended()
    assert (seen.close_code, seen.close_reason) == (4321, "maintenance: back in 5 min — ok")
    await still_open(other)
    await other.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/connections/abc", "a connection id is decimal digits"),
        ("/connections/%31", "a connection id is decimal digits"),
        ("/connections/../health", "a connection id is decimal digits"),
        ("/connections/%2e%2e/health", "a connection id is decimal digits"),
        ("/connections/1?code=1006", "close code must be"),
        ("/connections/1?code=5000", "close code must be"),
        ("/connections/1?reason=" + "x" * 124, "close reason must be at most 123 UTF-8 bytes"),
        ("/connections?reason=bye", "give a filter"),
        ("/connections", "give a filter"),
        ("/connections?all=yes", "all must be true or false"),
        ("/connections?all=true&code=2000", "close code must be"),
        ("/connections?application=OtherApp&reason=" + "%C3%A9" * 62, "close reason must be"),
    ],
)
async def test_close_refusals_close_nothing(
    fleet: Fleet, session: aiohttp.ClientSession, target: str, message: str
) -> None:
    admin = Admin(session, fleet.env)
    status, _, body, _ = await admin.call("DELETE", target)
    assert status == 400 and body["message"].startswith(message), body
    await still_open(*fleet.clients.values())
    assert (await admin.connections())["count"] == 4


async def test_path_tricks_are_not_ids_nor_other_routes(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    """The raw request line, as an attacker writes it (no client normalises it here)."""
    address = fleet.env.gateway.admin_address
    for target in ("/connections/../health", "/connections/%2e%2e/drain", "/connections/%31"):
        raw = await raw_exchange(address, f"DELETE {target} HTTP/1.1\r\nHost: x\r\n{auth()}\r\n")
        assert raw.startswith(b"HTTP/1.1 400 "), raw
    raw = await raw_exchange(address, f"POST /connections/../drain HTTP/1.1\r\n{auth()}\r\n")
    assert raw.startswith(b"HTTP/1.1 405 ")
    assert not fleet.env.gateway.state.draining
    await still_open(*fleet.clients.values())


# ---------------------------------------------------------- DELETE /connections
async def test_bulk_close_by_application_then_api_then_all(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    admin = Admin(session, fleet.env)
    clients = fleet.clients
    status, _, body, _ = await admin.call("DELETE", "/connections?application=OtherApp")
    assert (status, body) == (200, {"closed": 1})
    assert await closed_with(clients["other_app"]) == (4000, "closed by operator")
    await still_open(clients["prod"], clients["sandbox"], clients["other_api"])

    target = "/connections?api=OtherWebSocket&version=1.0&code=1001&reason=moving"
    status, _, body, _ = await admin.call("DELETE", target)
    assert (status, body) == (200, {"closed": 1})
    assert await closed_with(clients["other_api"]) == (1001, "moving")
    await still_open(clients["prod"], clients["sandbox"])

    status, _, body, _ = await admin.call("DELETE", "/connections?application=Nobody")
    assert (status, body) == (200, {"closed": 0})
    status, _, body, _ = await admin.call("DELETE", "/connections?all=true")
    assert (status, body) == (200, {"closed": 2})
    for name in ("prod", "sandbox"):
        assert await closed_with(clients[name]) == (4000, "closed by operator")
    assert (await admin.connections())["count"] == 0


# ------------------------------------------------------------------ POST /reload
def expected_errors(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Take the ERROR lines holding `text` out of what no_tracebacks checks (there must be
    one at least); any other stays."""
    expected = [r for r in caplog.records if r.levelname == "ERROR" and text in r.getMessage()]
    assert expected
    caplog.records[:] = [r for r in caplog.records if r not in expected]


async def test_reload_ok_then_failed_keeps_the_running_config(
    make_gateway: GatewayFactory,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await admin_gateway(make_gateway, tmp_path)
    admin = Admin(session, env)
    client = await open_client(env.url, env.tokens["PRODUCTION"])
    generation = env.gateway.state.config_generation
    status, _, body, _ = await admin.call("POST", "/reload")
    assert status == 200 and body["result"] == "ok"
    assert body["generation"] > generation and body["connections_ended"] == 0

    subscriptions = Path(env.gateway.config.gateway.subscriptions_file)
    good = subscriptions.read_bytes()
    subscriptions.write_text("applications:\n  - name: [broken\n")
    status, _, body, raw = await admin.call("POST", "/reload")
    assert status == 422 and body["result"] == "failed"
    assert body["errors"] and all("subscriptions.yaml" in e for e in body["errors"])
    assert b"consumer_secret" not in raw
    await still_open(client)  # nothing changed
    await still_open(await open_client(env.url, env.tokens["PRODUCTION"]))
    status, _, health, _ = await admin.call("GET", "/health")
    assert status == 200 and health["config"]["last_reload"] == "failed"

    subscriptions.write_bytes(good)
    status, _, body, _ = await admin.call("POST", "/reload")
    assert status == 200 and body["result"] == "ok"
    await client.close()
    expected_errors(caplog, "not reloaded, keeping the running config")


# ------------------------------------------------------------------- POST /drain
def quick_drain(raw: dict) -> None:
    raw["gateway"]["drain_s"] = 1
    raw["gateway"]["drain_close_window_s"] = 0


async def test_drain_is_202_then_health_503_and_upgrades_refused(
    make_gateway: GatewayFactory, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env = await admin_gateway(make_gateway, tmp_path, quick_drain)
    admin = Admin(session, env)
    client = await open_client(env.url, env.tokens["PRODUCTION"])  # keeps the drain going
    status, _, body, _ = await admin.call("POST", "/drain")
    assert (status, body) == (202, {"status": "draining", "connections": 1})
    status, _, health, _ = await admin.call("GET", "/health", token=None)
    assert (status, health["status"]) == (503, "draining")
    async with session.get(f"{env.http}/health") as response:
        assert response.status == 503
    with pytest.raises(InvalidStatus) as refused:
        await connect(env.url, additional_headers=env.auth())
    assert refused.value.response.status_code == 503
    await still_open(client)  # drain_s: open connections keep working
    code, _ = await closed_with(client)
    assert code == 1001
    await asyncio.wait_for(env.gateway.finished.wait(), TIMEOUT)


# ------------------------------------------------------------------ the token
async def test_admin_token_is_required_except_for_health(
    make_gateway: GatewayFactory, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env = await admin_gateway(make_gateway, tmp_path)
    admin = Admin(session, env)
    status, _, body, _ = await admin.call("GET", "/health", token=None)
    assert (status, body["status"]) == (200, "ok")
    for method, target in [
        ("GET", "/metrics"),
        ("GET", "/stats"),
        ("GET", "/connections"),
        ("DELETE", "/connections?all=true"),
        ("DELETE", "/connections/1"),
        ("POST", "/reload"),
        ("POST", "/drain"),
        ("GET", "/nowhere"),
    ]:
        status, headers, body, _ = await admin.call(method, target, token=None)
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="wsgw-admin"'
        status, headers, body, raw = await admin.call(method, target, token="wrong-token")
        assert status == 401 and b"wrong-token" not in raw
        assert headers["WWW-Authenticate"] == 'Bearer realm="wsgw-admin", error="invalid_token"'
    assert not env.gateway.state.draining
    status, _, _, raw = await admin.call("GET", "/metrics")
    assert status == 200 and ADMIN_TOKEN.encode() not in raw
    assert b"wsgw_admin_unauthorized_total 16" in raw


async def test_the_admin_token_is_never_logged(
    make_gateway: GatewayFactory,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await admin_gateway(make_gateway, tmp_path)
    admin = Admin(session, env)
    await admin.call("GET", "/stats", token="presented-wrong-token")
    await admin.call("DELETE", "/connections?all=true")
    await admin.call("POST", "/reload")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ADMIN_TOKEN not in text and "presented-wrong-token" not in text


def auth() -> str:
    return f"Authorization: Bearer {ADMIN_TOKEN}\r\n"


async def raw_exchange(address: str, request: str) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request.encode("latin-1"))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), TIMEOUT)  # the gateway closes after one
    writer.close()
    return raw


async def test_a_pipelined_request_is_never_acted_on(fleet: Fleet) -> None:
    first = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    second = f"DELETE /connections?all=true HTTP/1.1\r\nHost: x\r\n{auth()}\r\n"
    raw = await raw_exchange(fleet.env.gateway.admin_address, first + second + second)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1") == 1
    await still_open(*fleet.clients.values())


# ------------------------------------------------------- POST /oauth2/revoke
async def client_token(session: aiohttp.ClientSession, env: Env, basic: str) -> str:
    form = {"grant_type": "client_credentials"}
    headers = {"Authorization": basic}
    async with session.post(f"{env.http}/oauth2/token", data=form, headers=headers) as response:
        assert response.status == 200
        return str(orjson.loads(await response.read())["access_token"])


async def test_revoke_closes_the_open_connection_within_a_second(
    make_gateway: GatewayFactory, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env = await admin_gateway(make_gateway, tmp_path)
    client_id, secret = env.keys["PRODUCTION"]
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    token = await client_token(session, env, basic)
    client = await open_client(env.url, token)
    bystander = await open_client(env.url, await client_token(session, env, basic))

    started = time.monotonic()
    form = {"token": token, "token_type_hint": "access_token"}
    async with session.post(
        f"{env.http}/oauth2/revoke", data=form, headers={"Authorization": basic}
    ) as response:
        assert (response.status, await response.read()) == (200, b"")
        assert response.headers["Cache-Control"] == "no-store"
    code, _ = await closed_with(client)
    elapsed = time.monotonic() - started
    assert code == 4102 and elapsed < 1.0, elapsed
    with pytest.raises(InvalidStatus) as refused:
        await connect(env.url, additional_headers={"Authorization": f"Bearer {token}"})
    assert refused.value.response.status_code == 401
    await still_open(bystander)  # another token of the same client
    await bystander.close()


# ----------------------------------------------------------- the token file
def test_load_admin_token_strips_the_file(tmp_path: Path) -> None:
    path = admin_token_file(tmp_path, f"\n  {ADMIN_TOKEN}\t\r\n")
    assert load_admin_token(path) == ADMIN_TOKEN.encode()
    path.chmod(0o400)
    assert load_admin_token(str(path)) == ADMIN_TOKEN.encode()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601, 0o610, 0o666])
def test_load_admin_token_refuses_a_file_open_to_others(tmp_path: Path, mode: int) -> None:
    path = admin_token_file(tmp_path, mode=mode)
    with pytest.raises(ConfigError) as refused:
        load_admin_token(path)
    message = str(refused.value)
    assert str(path) in message or "admin.token" in message
    assert f"{mode:04o}" in message and "chmod 600" in message
    assert ADMIN_TOKEN not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the admin token file is empty"),
        (" \n\t\n", "the admin token file is empty"),
        ("two words", "the admin token must be printable ASCII, without spaces"),
        ("tök", "the admin token must be printable ASCII, without spaces"),
        ("a\x00b", "the admin token must be printable ASCII, without spaces"),
        ("x" * 5000, "the admin token is over 4096 bytes"),
    ],
)
def test_load_admin_token_refuses_what_is_no_token(tmp_path: Path, text: str, message: str) -> None:
    path = admin_token_file(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_admin_token(path)
    assert str(refused.value).endswith(message) and "admin.token" in str(refused.value)


def test_load_admin_token_refuses_a_missing_file_a_directory_and_a_fifo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin.token: cannot read the admin token"):
        load_admin_token(tmp_path / "admin.token")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file|cannot read"):
        load_admin_token(directory)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="fifo: the admin token file is not a regular file"):
        load_admin_token(fifo)  # at once: no writer is waited for


def test_admin_listen_off_loopback_needs_the_token_file() -> None:
    """The config side of it (models.py): checked at load, before any port opens."""
    import msgspec

    from wsgw.config.models import Gateway

    with pytest.raises(msgspec.ValidationError, match="admin_token_file"):
        msgspec.convert({"admin_listen": "0.0.0.0:9901"}, Gateway)
    assert msgspec.convert(
        {"admin_listen": "0.0.0.0:9901", "admin_token_file": "t"}, Gateway
    ).admin_token_file


async def test_a_failing_operation_is_answered_500(
    make_gateway: GatewayFactory,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = await admin_gateway(make_gateway, tmp_path)

    def broken(trigger: str) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(env.gateway, "reload", broken)
    status, _, body, raw = await Admin(session, env).call("POST", "/reload")
    assert (status, body) == (500, {"error": "server_error", "message": "internal error"})
    assert b"a bug" not in raw
    expected_errors(caplog, "admin port: request failed")
