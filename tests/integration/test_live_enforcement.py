"""Every row of the reload table, on open connections of a real gateway: what a reload
(or the token's clock) does to a connection that is already relaying.

Each row is measured: the close must reach the websockets client within a second of the
reload call (the delay is printed; run with -s to see it), with the row's close code AND
reason, and the backend must get the same close. In every row, connections of the
applications and APIs the change does not touch keep relaying, byte for byte.

The cast, on one gateway:
  A  DefaultApplication, production key → EchoWebSocket 1.0 (recording backend `echo`)
  B  OtherApp, production key           → EchoWebSocket 1.0 (recording backend `echo`)
  S  DefaultApplication, sandbox key    → EchoWebSocket 1.0 (the sandbox echo, "[sandbox] ")
  C  DefaultApplication, production key → Other 1.0         (recording backend `other`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from wsgw.oauth.revocation import revoke_application
from wsgw.portal import create_app, generate_keys, subscribe

from .backends import (
    RawBackend,
    RecordingBackend,
    Seen,
    switching_protocols,
)
from .conftest import Env, GatewayFactory, Peers
from .test_compression import deflate_of, is_subsequence, shifting_messages
from .test_reload import (
    admin_get,
    api_of,
    application_of,
    edit_config,
    edit_subscriptions,
    exchange,
    handshake_status,
    varied_messages,
    ws_connect,
)

pytestmark = pytest.mark.usefixtures("no_tracebacks")

RECV_S = 5.0
CLOSE_WITHIN_S = 1.0
DELAYS: dict[str, float] = {}  # row → seconds from the reload call to the client's close


@pytest.fixture(scope="module", autouse=True)
def _delay_table() -> Iterator[None]:
    """The measured delays of this module's rows, as a table at its end (run with -s)."""
    yield
    if DELAYS:
        width = max(map(len, DELAYS))
        print("\n" + "\n".join(f"{k:<{width}}  {v * 1000:7.1f} ms" for k, v in DELAYS.items()))


# ------------------------------------------------------------------ the cast


@dataclass
class Conn:
    name: str
    ws: ClientConnection
    prefix: str  # before echoed texts
    seen: Seen | None  # the backend's view of this connection (recording backends)


@dataclass
class World:
    env: Env
    echo: RecordingBackend
    other: RecordingBackend
    conns: dict[str, Conn] = field(default_factory=dict)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def config(self) -> Any:
        return self.env.gateway.config

    def token(self, application: str = "DefaultApplication", key_type: str = "PRODUCTION") -> str:
        return self.env.token(application, key_type)

    async def open(
        self,
        name: str,
        path: str,
        token: str | None,
        backend: RecordingBackend | None,
        prefix: str = "",
        **kwargs: Any,
    ) -> Conn:
        ws = await ws_connect(f"{self.env.base}{path}", token, **kwargs)
        self.stack.push_async_callback(ws.close)
        seen = await backend.next() if backend is not None else None
        conn = Conn(name, ws, prefix, seen)
        await exchange(ws, varied_messages(6, seed=sum(map(ord, name))), prefix)
        self.conns[name] = conn
        return conn

    async def open_cast(self, names: str = "ABSC") -> None:
        """Open the cast's connections, each with an opening exchange of 6 messages (12
        tokens of a `count: both` tier). S shares A's subscription, so its bucket too."""
        if "A" in names:
            await self.open("A", "/echowebsocket/1.0", self.token(), self.echo)
        if "B" in names:
            await self.open("B", "/echowebsocket/1.0", self.token("OtherApp"), self.echo)
        if "S" in names:
            await self.open(
                "S", "/echowebsocket/1.0", self.token(key_type="SANDBOX"), None, "[sandbox] "
            )
        if "C" in names:
            await self.open("C", "/other/1.0", self.token(), self.other)


@pytest.fixture
async def world_factory(
    make_gateway: GatewayFactory, peers: Peers
) -> AsyncIterator[Callable[..., Any]]:
    worlds: list[World] = []

    async def build(
        edit: Callable[[dict], None] | None = None,
        tiers: tuple[str, str, str] = ("Gold", "Gold", "Gold"),
        echo_compression: str | None = None,
    ) -> World:
        """`tiers`: of A's subscription (DefaultApplication → EchoWebSocket), of C's
        (DefaultApplication → Other) and of B's (OtherApp → EchoWebSocket)."""
        echo = await peers.recording(compression=echo_compression)
        other = await peers.recording()

        def full_edit(raw: dict) -> None:
            raw["apis"].append(
                {
                    "name": "Other",
                    "context": "/other",
                    "version": "1.0",
                    "endpoints": {"production": other.url},
                    "tiers": ["Gold", "Unlimited"],
                }
            )
            if edit is not None:
                edit(raw)

        env = await make_gateway(
            edit=full_edit,
            subscribe_to=("EchoWebSocket", "1.0", tiers[0]),
            production=echo.url,
        )
        config = env.gateway.config
        subscribe(config, "DefaultApplication", "Other", "1.0", tiers[1])
        create_app(config, "OtherApp")
        generate_keys(config, "OtherApp", "production")
        subscribe(config, "OtherApp", "EchoWebSocket", "1.0", tiers[2])
        assert env.gateway.reload("setup")["result"] == "ok"
        world = World(env, echo, other)
        worlds.append(world)
        return world

    yield build
    for world in worlds:
        await world.stack.aclose()


def with_tiers(**tiers: dict) -> Callable[[dict], None]:
    """Config edit: define (or redefine) tiers and offer them on both APIs."""

    def edit(raw: dict) -> None:
        for name, tier in tiers.items():
            raw["tiers"][name] = tier
            for api in raw["apis"]:
                if name not in api["tiers"]:
                    api["tiers"].append(name)

    return edit


# ------------------------------------------------------------------ measuring


async def closed(ws: ClientConnection, timeout_s: float = 3.0) -> None:
    """Read until the gateway's close ends the connection (bounded)."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()


async def expect_ended(row: str, conn: Conn, since: float, code: int, reason: str) -> float:
    """`conn` is closed with `code` and `reason` within CLOSE_WITHIN_S of `since` (a
    monotonic time), at the client and at the backend; returns the delay."""
    await closed(conn.ws)
    delay = time.monotonic() - since
    key = f"{row} [{conn.name}]"
    DELAYS[key] = delay
    print(f"\nDELAY {key}: {delay * 1000:.1f} ms → {conn.ws.close_code} {conn.ws.close_reason!r}")
    assert conn.ws.close_code == code, (conn.name, conn.ws.close_code, conn.ws.close_reason)
    assert conn.ws.close_reason == reason
    assert delay < CLOSE_WITHIN_S, f"{key}: closed after {delay:.3f}s"
    if conn.seen is not None:
        await conn.seen.wait_ended(3.0)
        assert (conn.seen.close_code, conn.seen.close_reason) == (code, reason)
    return delay


async def still_relaying(conn: Conn, seed: int) -> None:
    await exchange(conn.ws, varied_messages(9, seed=seed), conn.prefix)
    assert conn.seen is None or not conn.seen.ended.is_set()


def reload_now(world: World) -> tuple[float, dict]:
    started = time.monotonic()
    result = world.env.gateway.reload("test")
    assert result["result"] == "ok", result
    return started, result


# ============================================================ access rows


@dataclass(frozen=True)
class Row:
    name: str
    change: Callable[[World], None]
    victims: frozenset[str]
    code: int | None
    reason: str | None
    refused: dict[str, int]  # a new handshake of these afterwards: its status


def _api_status(status: str) -> Callable[[World], None]:
    def change(world: World) -> None:
        edit_config(
            world.env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status=status)
        )

    return change


def _remove_echo_api(world: World) -> None:
    """The API and the subscriptions naming it go in the same reload: the pair must
    validate together (a subscription to an API that is not defined is refused)."""
    edit_config(
        world.env.directory,
        lambda raw: raw.update(apis=[a for a in raw["apis"] if a["name"] != "EchoWebSocket"]),
    )

    def drop(raw: dict) -> None:
        for app in raw["applications"]:
            app["subscriptions"] = [s for s in app["subscriptions"] if s["api"] != "EchoWebSocket"]

    edit_subscriptions(world.env, drop)


def _echo_subscription(change: Callable[[dict, list], None]) -> Callable[[World], None]:
    def edit(world: World) -> None:
        def apply(raw: dict) -> None:
            subs = application_of(raw, "DefaultApplication")["subscriptions"]
            change(next(s for s in subs if s["api"] == "EchoWebSocket"), subs)

        edit_subscriptions(world.env, apply)

    return edit


def _remove_default_application(world: World) -> None:
    edit_subscriptions(
        world.env,
        lambda raw: raw.update(
            applications=[a for a in raw["applications"] if a["name"] != "DefaultApplication"]
        ),
    )


def _regenerate_production_key(world: World) -> None:
    generate_keys(world.config, "DefaultApplication", "production")


ALL_ECHO = frozenset({"A", "B", "S"})
ROWS = [
    Row("API BLOCKED", _api_status("BLOCKED"), ALL_ECHO, 4501, "API BLOCKED", {"A": 403, "C": 101}),
    Row("API CREATED", _api_status("CREATED"), ALL_ECHO, 4501, "API CREATED", {"A": 403}),
    Row("API RETIRED", _api_status("RETIRED"), ALL_ECHO, 4304, "API retired", {"A": 403}),
    Row("API DEPRECATED", _api_status("DEPRECATED"), frozenset(), None, None, {"A": 101}),
    Row("API removed", _remove_echo_api, ALL_ECHO, 4305, "API removed", {"A": 404, "C": 101}),
    Row(
        "subscription BLOCKED",
        _echo_subscription(lambda sub, subs: sub.update(status="BLOCKED")),
        frozenset({"A", "S"}),
        4301,
        "subscription BLOCKED",
        {"A": 403, "B": 101},
    ),
    Row(
        "subscription removed",
        _echo_subscription(lambda sub, subs: subs.remove(sub)),
        frozenset({"A", "S"}),
        4302,
        "subscription removed",
        {"A": 403, "B": 101},
    ),
    Row(
        "application removed",
        _remove_default_application,
        frozenset({"A", "S", "C"}),
        4303,
        "application removed",
        {"A": 401, "B": 101},
    ),
    Row(
        "consumer key regenerated",
        _regenerate_production_key,
        frozenset({"A", "C"}),
        4103,
        "consumer key regenerated",
        {"A": 401, "S": 101},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_access_row(world_factory: Callable[..., Any], row: Row) -> None:
    world = await world_factory()
    await world.open_cast()
    tokens = {  # issued before the change: what a client holding one retries with
        "A": world.token(),
        "B": world.token("OtherApp"),
        "S": world.token(key_type="SANDBOX"),
        "C": world.token(),
    }
    paths = {"A": "/echowebsocket/1.0", "B": "/echowebsocket/1.0", "S": "/echowebsocket/1.0"}
    paths["C"] = "/other/1.0"
    row.change(world)
    since, result = reload_now(world)
    assert result["connections_ended"] == len(row.victims)
    for name in sorted(row.victims):
        await expect_ended(row.name, world.conns[name], since, row.code, row.reason)  # type: ignore[arg-type]
    for seed, name in enumerate(sorted(set(world.conns) - row.victims)):
        await still_relaying(world.conns[name], seed=100 + seed)
    for name, status in row.refused.items():
        assert await handshake_status(f"{world.env.base}{paths[name]}", tokens[name]) == status


async def test_removing_an_api_that_subscriptions_still_name_is_refused_whole(
    world_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """wsgw.yaml alone loses the API while subscriptions.yaml still names it: the pair does
    not validate, so nothing changes and every connection goes on."""
    world = await world_factory()
    await world.open_cast()
    edit_config(
        world.env.directory,
        lambda raw: raw.update(apis=[a for a in raw["apis"] if a["name"] != "EchoWebSocket"]),
    )
    result = world.env.gateway.reload("test")
    assert result["result"] == "failed"
    assert any("API EchoWebSocket:1.0 is not defined" in e for e in result["errors"])
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1 and "not reloaded" in refused[0].getMessage()
    caplog.clear()  # the one ERROR this test expects (no_tracebacks checks the rest)
    for seed, conn in enumerate(world.conns.values()):
        await still_relaying(conn, seed=200 + seed)


def _block_echo(world: World) -> None:
    edit_config(
        world.env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status="BLOCKED")
    )
    assert world.env.gateway.reload("test")["result"] == "ok"


def _revoke_default(world: World) -> None:
    world.env.gateway.revoke([revoke_application("DefaultApplication", time.time(), 3600)])


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [(_block_echo, 403, "API BLOCKED"), (_revoke_default, 401, "access token revoked")],
    ids=["reload", "revocation"],
)
async def test_a_change_during_the_backend_handshake_refuses_the_upgrade(
    world_factory: Callable[..., Any],
    peers: Peers,
    change: Callable[[World], None],
    status: int,
    reason: str,
) -> None:
    """The handshake was judged by the bundle of its request; what changed while the
    backend was answering refuses it before the 101, as the handshake would have: no frame
    flows under access that ended, and the backend's connection is dropped."""
    backend_saw: list[bytes] = []
    answer = asyncio.Event()

    def make_handler(backend: RawBackend) -> Any:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = await backend.handshake(reader)
            await answer.wait()
            writer.write(switching_protocols(key))
            with contextlib.suppress(ConnectionError):
                backend_saw.append(await asyncio.wait_for(reader.read(), RECV_S))
            writer.close()

        return handler

    slow = await peers.raw(make_handler)
    world = await world_factory(
        edit=lambda raw: api_of(raw, "EchoWebSocket")["endpoints"].update(production=slow.url)
    )
    token = world.token()
    connecting = asyncio.create_task(ws_connect(world.env.url, token))
    for _ in range(200):
        if slow.requests:
            break
        await asyncio.sleep(0.01)
    assert slow.requests, "the backend never got the upgrade"
    change(world)
    answer.set()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await asyncio.wait_for(connecting, RECV_S)
    assert refused.value.response.status_code == status
    assert orjson.loads(refused.value.response.body)["message"] == reason
    for _ in range(100):  # the backend's connection ends without a frame from the client
        if backend_saw:
            break
        await asyncio.sleep(0.02)
    assert backend_saw == [b""]


async def test_a_subscription_moved_to_another_tier_applies_in_place(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(
        edit=with_tiers(Tiny={"messages_per_minute": 12, "on_limit": "drop"}),
        tiers=("Tiny", "Gold", "Gold"),
    )
    await world.open_cast("ABC")  # A's opening exchange spent Tiny's 12 tokens
    a = world.conns["A"]
    await a.ws.send("dropped")
    assert orjson.loads(await asyncio.wait_for(a.ws.recv(), RECV_S))["code"] == 4008
    listed = await admin_connections(world, "DefaultApplication")
    assert {c["tier"] for c in listed if c["api"] == "EchoWebSocket"} == {"Tiny"}
    subscribe(world.config, "DefaultApplication", "EchoWebSocket", "1.0", "Gold")
    since, result = reload_now(world)
    assert result["connections_ended"] == 0
    await send_and_expect(a, varied_messages(40, seed=17))  # Gold's 5000
    print(f"\nsubscription moved Tiny → Gold: 40 messages through {time.monotonic() - since:.3f}s")
    listed = await admin_connections(world, "DefaultApplication")
    assert {c["tier"] for c in listed if c["api"] == "EchoWebSocket"} == {"Gold"}
    for seed, name in enumerate("BC"):
        await still_relaying(world.conns[name], seed=319 + seed)


async def admin_connections(world: World, application: str) -> list[dict]:
    status, body = await admin_get(
        world.env.gateway.admin_address, f"/connections?application={application}"
    )
    assert status == 200, body
    return body["connections"]


# ============================================================ tier limits


async def send_and_expect(conn: Conn, messages: list[str | bytes]) -> None:
    await exchange(conn.ws, messages, conn.prefix)


async def test_a_lowered_limit_with_on_limit_close_closes_1008(
    world_factory: Callable[..., Any],
) -> None:
    # A at Gold; C and B at Unlimited: a Gold edit does not concern them. (S would share
    # A's subscription, and so its limit: it is not in this cast.)
    world = await world_factory(tiers=("Gold", "Unlimited", "Unlimited"))
    await world.open_cast("ABC")
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(Gold={"messages_per_minute": 2, "on_limit": "close"}),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 0  # the limit ends it, not the reload
    a = world.conns["A"]
    await send_and_expect(a, ["one: the new limit's first token, and its echo the second"])
    await a.ws.send("two: no token left")
    await expect_ended(
        "Gold lowered, on_limit close", a, since, 1008, "rate limit exceeded (subscription)"
    )
    assert a.seen is not None and "two: no token left" not in a.seen.messages
    for seed, name in enumerate("BC"):
        conn = world.conns[name]
        await exchange(conn.ws, varied_messages(30, seed=300 + seed), conn.prefix)


CLOSE_AT_2 = {"messages_per_minute": 2, "on_limit": "close"}


def _limit_unlimited(world: World) -> None:
    edit_config(world.env.directory, lambda raw: raw["tiers"].update(Unlimited=CLOSE_AT_2))


def _application_tier(world: World) -> None:
    edit_config(world.env.directory, lambda raw: raw["tiers"].update(AppClose=CLOSE_AT_2))
    edit_subscriptions(
        world.env, lambda raw: application_of(raw, "DefaultApplication").update(tier="AppClose")
    )


def _api_throttle(world: World) -> None:
    def edit(raw: dict) -> None:
        raw["tiers"]["ApiClose"] = CLOSE_AT_2
        api_of(raw, "EchoWebSocket")["throttle"] = "ApiClose"

    edit_config(world.env.directory, edit)


@pytest.mark.parametrize(
    ("change", "scope", "bystanders"),
    [
        (_limit_unlimited, "subscription", "BC"),
        (_application_tier, "application", "B"),
        (_api_throttle, "api", "C"),
    ],
    ids=["subscription tier", "application tier", "API policy"],
)
async def test_a_limit_appears_where_there_was_none(
    world_factory: Callable[..., Any], change: Callable[[World], None], scope: str, bystanders: str
) -> None:
    """A connection opened without any limit at a scope gets one from a reload."""
    world = await world_factory(tiers=("Unlimited", "Gold", "Gold"))
    await world.open_cast("ABC")
    change(world)
    since, result = reload_now(world)
    assert result["connections_ended"] == 0
    a = world.conns["A"]
    await send_and_expect(a, ["the only message the new limit lets through, with its echo"])
    await a.ws.send("over")
    reason = f"rate limit exceeded ({scope})"
    await expect_ended(f"a new {scope} limit, on_limit close", a, since, 1008, reason)
    for seed, name in enumerate(bystanders):
        await still_relaying(world.conns[name], seed=305 + seed)


async def test_on_limit_changed_from_drop_to_close(world_factory: Callable[..., Any]) -> None:
    world = await world_factory(
        edit=with_tiers(Tiny={"messages_per_minute": 12, "on_limit": "drop"}),
        tiers=("Tiny", "Gold", "Gold"),
    )
    await world.open_cast("ABC")
    a = world.conns["A"]
    # A's opening exchange spent its 12 tokens: the next message is dropped.
    await a.ws.send("dropped")
    notice = orjson.loads(await asyncio.wait_for(a.ws.recv(), RECV_S))
    assert notice["code"] == 4008
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(Tiny={"messages_per_minute": 12, "on_limit": "close"}),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 0
    # Only the action changed: the bucket keeps its state (still empty), and the next
    # message meets the new action.
    await a.ws.send("closes")
    await expect_ended(
        "on_limit drop → close", a, since, 1008, "rate limit exceeded (subscription)"
    )
    assert a.seen is not None
    assert "dropped" not in a.seen.messages and "closes" not in a.seen.messages
    for seed, name in enumerate("BC"):
        await still_relaying(world.conns[name], seed=310 + seed)


async def test_a_raised_limit_lets_the_next_messages_through_at_once(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(
        edit=with_tiers(Tiny={"messages_per_minute": 12, "on_limit": "drop"}),
        tiers=("Tiny", "Gold", "Gold"),
    )
    await world.open_cast("ABC")
    a = world.conns["A"]
    await a.ws.send("dropped: the opening exchange spent the 12 tokens")
    assert orjson.loads(await asyncio.wait_for(a.ws.recv(), RECV_S))["code"] == 4008
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(Tiny={"messages_per_minute": 6000, "on_limit": "drop"}),
    )
    since, _ = reload_now(world)
    messages = varied_messages(60, seed=8)
    await send_and_expect(a, messages)
    took = time.monotonic() - since
    DELAYS["Tiny raised: 60 messages and echoes through"] = took
    print(f"\nDELAY Tiny raised: 60 messages and echoes through in {took * 1000:.0f} ms")
    assert took < CLOSE_WITHIN_S
    assert a.seen is not None and a.seen.messages[-60:] == messages
    for seed, name in enumerate("BC"):
        await still_relaying(world.conns[name], seed=315 + seed)


async def test_a_raised_limit_releases_a_message_held_by_shape(
    world_factory: Callable[..., Any],
) -> None:
    """A message held by `shape` waits for the old limit's refill (here 5 s); a reload
    that raises the limit must let it go at once, not when the old refill was due."""
    world = await world_factory(
        edit=with_tiers(Tiny={"messages_per_minute": 12, "on_limit": "shape", "count": "client"}),
        tiers=("Tiny", "Gold", "Gold"),
    )
    await world.open_cast("ABC")  # A's opening exchange: 6 of its 12 client tokens
    a = world.conns["A"]
    assert a.seen is not None
    held = varied_messages(7, seed=9)
    for message in held:  # the 7th is held: the next token is 5 s away
        await a.ws.send(message)
    for message in held[:6]:
        assert await asyncio.wait_for(a.ws.recv(), RECV_S) == message
    await asyncio.sleep(0.3)
    assert held[6] not in a.seen.messages  # held at the gateway
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(Tiny={"messages_per_minute": 6000, "on_limit": "shape"}),
    )
    since, _ = reload_now(world)
    assert await asyncio.wait_for(a.ws.recv(), 6.0) == held[6]
    took = time.monotonic() - since
    DELAYS["shape: held message released by a raised limit"] = took
    print(f"\nDELAY shape release: {took * 1000:.0f} ms")
    assert took < CLOSE_WITHIN_S, f"the held message waited {took:.2f}s for the old limit"
    await still_relaying(a, seed=318)


async def test_a_limit_changed_to_shape_slows_the_connection_down(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(tiers=("Gold", "Unlimited", "Unlimited"))
    await world.open_cast("ABC")
    a = world.conns["A"]
    messages = varied_messages(64, seed=10)
    started = time.monotonic()
    await send_and_expect(a, messages)  # Gold: 5000 a minute, no wait
    baseline = time.monotonic() - started
    # 120 a minute for the client's messages: 120 now, then 2 a second.
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(
            Gold={"messages_per_minute": 120, "count": "client", "on_limit": "shape"}
        ),
    )
    reload_now(world)
    messages = varied_messages(124, seed=11)
    started = time.monotonic()
    for message in messages:
        await a.ws.send(message)
    received = [await asyncio.wait_for(a.ws.recv(), RECV_S) for _ in messages]
    shaped = time.monotonic() - started
    print(f"\nshape: 64 messages in {baseline * 1000:.0f} ms before, 124 in {shaped * 1000:.0f} ms")
    assert received == messages  # lossless, in order
    assert baseline < 0.5
    assert 1.4 <= shaped < 4.0  # the last 4 waited for the refill (0.5 s each)
    await still_relaying(world.conns["B"], seed=320)


async def test_a_duration_cap_added_by_a_reload_counts_from_each_connections_start(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(tiers=("Gold", "Unlimited", "Unlimited"))
    await world.open_cast("ABC")
    await asyncio.sleep(1.0)  # A has been open for more than the cap below
    young = await world.open("Y", "/echowebsocket/1.0", world.token(), world.echo)
    young_at = time.monotonic()
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"]["Gold"].update(max_connection_duration_s=0.8),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 1  # A, at once
    reason = "maximum connection duration reached"
    await expect_ended(
        "duration cap added, connection older than it", world.conns["A"], since, 1000, reason
    )
    await still_relaying(young, seed=325)
    await closed(young.ws)
    lived = time.monotonic() - young_at
    print(f"\nduration cap: the young connection lived {lived * 1000:.0f} ms more (cap 800 ms)")
    assert (young.ws.close_code, young.ws.close_reason) == (1000, reason)
    assert lived < 0.8 + 0.3
    for seed, name in enumerate("BC"):
        await still_relaying(world.conns[name], seed=326 + seed)


# ------------------------------------------------------------ compression and drop


@pytest.mark.parametrize(
    "dropping",
    [
        {"count": "client", "on_limit": "drop"},
        {"count": "backend", "on_limit": "shape", "backend_on_limit": "drop"},
    ],
    ids=["client direction", "backend direction"],
)
async def test_a_new_drop_limit_on_a_compressed_connection_closes_1012(
    world_factory: Callable[..., Any], dropping: dict
) -> None:
    """A connection negotiated with context takeover on a direction (no limit could drop
    there at its handshake) cannot take a dropping limit while open: a dropped message
    would corrupt every later one of that direction. It gets 1012 (reconnect), and its
    reconnection negotiates that direction self-contained. The same reload applies the
    drop in place on an uncompressed connection of the same subscription.

    compression=None is on purpose for the second connection: this row is specifically
    about connections that did not negotiate permessage-deflate."""
    flex = {"messages_per_minute": 5000, "on_limit": "shape"}  # drops nothing
    world = await world_factory(
        edit=with_tiers(Flex=flex), tiers=("Flex", "Gold", "Gold"), echo_compression="deflate"
    )
    env = world.env
    compressed = await world.open("A", "/echowebsocket/1.0", world.token(), world.echo)
    deflate = deflate_of(compressed.ws)
    assert not deflate.local_no_context_takeover and not deflate.remote_no_context_takeover
    plain = await world.open("P", "/echowebsocket/1.0", world.token(), world.echo, compression=None)
    assert plain.ws.protocol.extensions == []
    await exchange(compressed.ws, shifting_messages(20, seed=12))
    bystander = await world.open("B", "/echowebsocket/1.0", world.token("OtherApp"), world.echo)

    edit_config(
        env.directory,
        lambda raw: raw["tiers"].update(Flex={"messages_per_minute": 8, **dropping}),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 1
    await expect_ended(
        f"new drop limit, compressed ({dropping['count']} direction)",
        compressed,
        since,
        1012,
        "limits changed: reconnect to apply them",
    )
    # The uncompressed one took the limit in place: 8 tokens, then drops.
    await exchange(plain.ws, varied_messages(8, seed=13))
    await plain.ws.send("over the limit")
    notice = orjson.loads(await asyncio.wait_for(plain.ws.recv(), RECV_S))
    assert notice["code"] == 4008
    assert plain.seen is not None
    await asyncio.sleep(0.1)
    # The client's message was dropped before the backend, or the backend's echo after it.
    assert ("over the limit" in plain.seen.messages) == (dropping["count"] == "backend")
    await asyncio.wait_for(await plain.ws.ping(), RECV_S)
    await still_relaying(bystander, seed=330)

    # Raised again: the uncompressed one goes on; a reconnection negotiates for drops.
    edit_config(
        env.directory,
        lambda raw: raw["tiers"].update(Flex={"messages_per_minute": 6000, **dropping}),
    )
    reload_now(world)
    await exchange(plain.ws, varied_messages(10, seed=14))
    again = await world.open("A2", "/echowebsocket/1.0", world.token(), world.echo)
    deflate = deflate_of(again.ws)
    if dropping["count"] == "client":
        assert deflate.local_no_context_takeover  # the client compresses each message alone
    else:
        assert deflate.remote_no_context_takeover  # so does the backend
    messages = shifting_messages(40, seed=15)
    await exchange(again.ws, messages)
    assert again.seen is not None and again.seen.messages[-40:] == messages


async def test_a_lowered_drop_limit_on_a_self_contained_compressed_direction_applies_in_place(
    world_factory: Callable[..., Any],
) -> None:
    """Gold drops client messages, so its connections negotiated that direction
    self-contained: a lower Gold applies to an open compressed connection, and the
    messages after the drops inflate to what was sent."""
    world = await world_factory(echo_compression="deflate")
    a = await world.open("A", "/echowebsocket/1.0", world.token(), world.echo)
    assert deflate_of(a.ws).local_no_context_takeover
    rate = 60
    edit_config(
        world.env.directory,
        lambda raw: raw["tiers"].update(
            Gold={"messages_per_minute": rate, "count": "client", "on_limit": "drop"}
        ),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 0
    sent = shifting_messages(rate + 15, seed=16)
    for message in sent[:-1]:
        await a.ws.send(message)
    echoes, notices = [], 0
    while True:
        try:
            message = await asyncio.wait_for(a.ws.recv(), 0.6)
        except TimeoutError:
            break
        if isinstance(message, str) and message.startswith('{"code":4008'):
            notices += 1
        else:
            echoes.append(message)
    assert rate <= len(echoes) <= rate + 3 and notices >= 1
    await asyncio.sleep(1.1)  # a token back
    await a.ws.send(sent[-1])
    assert await asyncio.wait_for(a.ws.recv(), RECV_S) == sent[-1]
    echoes.append(sent[-1])
    assert a.seen is not None
    assert a.seen.messages[-len(echoes) :] == echoes
    assert is_subsequence(echoes, sent)


# ============================================================ the token's clock


def exp_of(token: str) -> int:
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def short_tokens(on_token_expiry: str) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        raw["security"]["token_ttl_s"] = 2
        api_of(raw, "EchoWebSocket")["on_token_expiry"] = on_token_expiry

    return edit


async def relay_until_closed(conn: Conn, until: float) -> None:
    """Exchange messages until the connection is closed (bounded by `until`, wall clock)."""
    i = 0
    with pytest.raises(ConnectionClosed):
        while time.time() < until:
            message = f"tick {i} " + "x" * (i % 50)
            await conn.ws.send(message)
            assert await asyncio.wait_for(conn.ws.recv(), RECV_S) == message
            i += 1
            await asyncio.sleep(0.05)
        raise AssertionError("still open")


async def test_on_token_expiry_close_ends_the_connection_at_exp(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(edit=short_tokens("close"))
    token = world.token()
    exp = exp_of(token)
    a = await world.open("A", "/echowebsocket/1.0", token, world.echo)
    c = await world.open("C", "/other/1.0", token, world.other)  # Other keeps (the default)
    await relay_until_closed(a, until=exp + 3)
    after_exp = time.time() - exp
    DELAYS["token expiry (close), after exp"] = after_exp
    print(f"\nDELAY token expiry: closed {after_exp * 1000:.0f} ms after exp")
    assert a.ws.close_code == 4101 and a.ws.close_reason == "access token expired"
    assert -0.05 <= after_exp < 1.0
    assert a.seen is not None
    await a.seen.wait_ended(3.0)
    assert (a.seen.close_code, a.seen.close_reason) == (4101, "access token expired")
    # on_token_expiry: keep (Other's): the connection outlives its token.
    while time.time() < exp + 1.0:
        await asyncio.sleep(0.1)
    await still_relaying(c, seed=340)
    assert await handshake_status(f"{world.env.base}/other/1.0", token) == 401  # expired


async def test_a_reload_switching_keep_to_close_ends_connections_whose_token_expired(
    world_factory: Callable[..., Any],
) -> None:
    world = await world_factory(edit=short_tokens("keep"))
    token = world.token()
    exp = exp_of(token)
    a = await world.open("A", "/echowebsocket/1.0", token, world.echo)
    c = await world.open("C", "/other/1.0", token, world.other)
    while time.time() < exp + 0.3:
        await asyncio.sleep(0.05)
    await still_relaying(a, seed=350)  # keep: past its exp, still relaying
    # A connection whose token is still good when the reload comes: closed at its exp.
    while int(time.time()) < exp:
        await asyncio.sleep(0.05)
    later_token = world.token()
    later = await world.open("L", "/echowebsocket/1.0", later_token, world.echo)

    edit_config(
        world.env.directory,
        lambda raw: api_of(raw, "EchoWebSocket").update(on_token_expiry="close"),
    )
    since, result = reload_now(world)
    assert result["connections_ended"] == 1
    await expect_ended("keep → close, token expired", a, since, 4101, "access token expired")
    await still_relaying(later, seed=351)
    await relay_until_closed(later, until=exp_of(later_token) + 3)
    late = time.time() - exp_of(later_token)
    print(f"\nDELAY keep → close, token valid at the reload: closed {late * 1000:.0f} ms after exp")
    assert later.ws.close_code == 4101 and -0.05 <= late < 1.0
    await still_relaying(c, seed=352)


# ============================================================ auth: none → oauth2


async def test_an_auth_none_api_going_oauth2_closes_its_anonymous_connections(
    world_factory: Callable[..., Any], peers: Peers
) -> None:
    public = await peers.recording()

    def add_public(raw: dict) -> None:
        raw["apis"].append(
            {
                "name": "Public",
                "context": "/public",
                "version": "1.0",
                "auth": "none",
                "endpoints": {"production": public.url},
            }
        )

    world = await world_factory(edit=add_public)
    anonymous = await world.open("P", "/public/1.0", None, public)
    await world.open_cast()
    edit_config(world.env.directory, lambda raw: api_of(raw, "Public").update(auth="oauth2"))
    since, result = reload_now(world)
    assert result["connections_ended"] == 1
    await expect_ended(
        "auth none → oauth2", anonymous, since, 4102, "API requires an access token now"
    )
    for seed, name in enumerate("ABSC"):
        await still_relaying(world.conns[name], seed=360 + seed)
    assert await handshake_status(f"{world.env.base}/public/1.0") == 401
