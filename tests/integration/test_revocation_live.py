"""Revocation on live gateways: `python -m wsgw revoke` (--jti, --app, --consumer-key)
against a running in-process gateway that watches the revocations file, the list across a
restart, entries that live only until their tokens expire, and three gateways on one Redis
where a revocation or a bulk close made on one reaches the connections of the others.

(POST /oauth2/revoke itself, RFC 7009, is tested in tests/oauth/test_revoke_endpoint.py;
here it is only the way a revocation enters gateway A of the cluster.)
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
import jwt
import pytest
import yaml

import wsgw.app
from tests import redis_support
from tests.redis_support import PrivateRedis
from wsgw.app import Gateway
from wsgw.config import load_config
from wsgw.oauth.revocation import load_revocations, revoke_token
from wsgw.oauth.tokens import TokenVerifier
from wsgw.reload import signing_key

from . import test_live_enforcement
from .test_live_enforcement import World, closed
from .test_reload import exchange, handshake_status, read_config, varied_messages, ws_connect
from .test_serve_process import wsgw as run_wsgw

pytestmark = pytest.mark.usefixtures("no_tracebacks")

# Fixtures of other modules, used here too.
world_factory = test_live_enforcement.world_factory
private_redis = redis_support.private_redis

CLOSE_WITHIN_S = 1.0
ECHO = "/echowebsocket/1.0"


def jti_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


async def wsgw_cli(directory: Path, *argv: str) -> tuple[float, str]:
    """`python -m wsgw ARGV -c wsgw.yaml` in `directory`; must succeed. Returns the
    monotonic time it exited and its output."""
    status, out, err = await run_wsgw(*argv, "-c", str(directory / "wsgw.yaml"), cwd=directory)
    exited = time.monotonic()
    assert status == 0, err
    return exited, out


def watch_close(conn: Any) -> asyncio.Task[float]:
    """Read `conn` in the background until it is closed: the wall-clock time it was."""

    async def wait() -> float:
        await closed(conn.ws, timeout_s=10.0)
        return time.time()

    return asyncio.create_task(wait())


async def expect_revoked(
    conn: Any, closing: asyncio.Task[float], since: float, label: str
) -> float:
    """Closed with 4102 at the client and at the backend within CLOSE_WITHIN_S of `since`
    (wall clock); the delay."""
    delay = await asyncio.wait_for(closing, 10.0) - since
    print(f"\nDELAY {label} [{conn.name}]: {delay * 1000:.0f} ms")
    assert (conn.ws.close_code, conn.ws.close_reason) == (4102, "access token revoked")
    if conn.seen is not None:
        await conn.seen.wait_ended(3.0)
        assert (conn.seen.close_code, conn.seen.close_reason) == (4102, "access token revoked")
    assert 0 <= delay < CLOSE_WITHIN_S, f"{label} [{conn.name}]: {delay:.3f}s"
    return delay


def written_at(world: World) -> float:
    """When the revocations file was last written (wall clock)."""
    return os.stat(world.env.gateway.config.security.revocations_file).st_mtime


async def still_relaying(conn: Any, seed: int) -> None:
    await exchange(conn.ws, varied_messages(7, seed=seed), conn.prefix)


# ============================================================ `wsgw revoke` live


async def test_cli_revoke_jti_closes_that_token_only(world_factory: Callable[..., Any]) -> None:
    world: World = await world_factory()
    await world.open_cast()
    victim_token = world.token()
    victim = await world.open("V", ECHO, victim_token, world.echo)
    closing = watch_close(victim)
    _, out = await wsgw_cli(world.env.directory, "revoke", "--jti", jti_of(victim_token))
    exited = time.time()
    assert "revoked token" in out
    await expect_revoked(victim, closing, written_at(world), "CLI revoke --jti, after the write")
    assert closing.result() - exited < CLOSE_WITHIN_S
    # Every other token of the same application and key goes on.
    for seed, name in enumerate("ABSC"):
        await still_relaying(world.conns[name], seed=10 + seed)
    assert await handshake_status(f"{world.env.base}{ECHO}", victim_token) == 401
    assert await handshake_status(f"{world.env.base}{ECHO}", world.token()) == 101


async def test_cli_revoke_app_closes_every_connection_of_the_application(
    world_factory: Callable[..., Any],
) -> None:
    world: World = await world_factory()
    await world.open_cast()
    before = {"production": world.token(), "sandbox": world.token(key_type="SANDBOX")}
    closing = {name: watch_close(world.conns[name]) for name in "ASC"}
    _, out = await wsgw_cli(world.env.directory, "revoke", "--app", "DefaultApplication")
    assert "tokens of application 'DefaultApplication'" in out
    for name in "ASC":  # the file is written before the command waits out its second
        label = "CLI revoke --app, after the write"
        await expect_revoked(world.conns[name], closing[name], written_at(world), label)
    await still_relaying(world.conns["B"], seed=20)
    for token in before.values():
        assert await handshake_status(f"{world.env.base}{ECHO}", token) == 401
    # A token issued after the command returned is not revoked.
    assert await handshake_status(f"{world.env.base}{ECHO}", world.token()) == 101


async def test_cli_revoke_consumer_key_closes_that_key_only(
    world_factory: Callable[..., Any],
) -> None:
    world: World = await world_factory()
    await world.open_cast()
    consumer_key = world.env.keys["PRODUCTION"][0]
    closing = {name: watch_close(world.conns[name]) for name in "AC"}
    await wsgw_cli(world.env.directory, "revoke", "--consumer-key", consumer_key)
    for name in "AC":  # DefaultApplication's production key
        label = "CLI revoke --consumer-key, after the write"
        await expect_revoked(world.conns[name], closing[name], written_at(world), label)
    for seed, name in enumerate("BS"):  # another application; the same one's sandbox key
        await still_relaying(world.conns[name], seed=30 + seed)
    assert await handshake_status(f"{world.env.base}{ECHO}", world.token()) == 101


# ============================================================ the list over time


async def test_the_revocation_list_survives_a_restart(world_factory: Callable[..., Any]) -> None:
    world: World = await world_factory()
    revoked, kept = world.token(), world.token()
    victim = await world.open("V", ECHO, revoked, world.echo)
    closing = watch_close(victim)
    await wsgw_cli(world.env.directory, "revoke", "--jti", jti_of(revoked))
    await expect_revoked(victim, closing, written_at(world), "CLI revoke --jti, before a restart")
    await world.stack.aclose()
    await world.env.gateway.stop(grace_s=1.0)

    path = world.env.directory / "wsgw.yaml"
    restarted = Gateway(load_config(path), config_path=path)
    await restarted.start()
    try:
        base = f"ws://{restarted.address}"
        assert len(restarted.revocations) == 1
        assert await handshake_status(f"{base}{ECHO}", revoked) == 401
        async with await ws_connect(f"{base}{ECHO}", kept) as ws:
            await exchange(ws, varied_messages(8, seed=40))
    finally:
        await restarted.stop(grace_s=1.0)


async def test_an_entry_lives_only_until_its_tokens_expire(
    world_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wsgw.app, "PRUNE_INTERVAL_S", 0.2)  # read by the watcher's loop
    world: World = await world_factory(edit=lambda raw: raw["security"].update(token_ttl_s=2))
    gateway = world.env.gateway
    token = world.token()
    claims = TokenVerifier(signing_key(gateway.config), "wsgw").verify(token)
    victim = await world.open("V", ECHO, token, world.echo)
    closing = watch_close(victim)
    since = time.time()
    gateway.revoke([revoke_token(claims)])
    await expect_revoked(victim, closing, since, "Gateway.revoke")
    revocations_file = gateway.config.security.revocations_file
    for _ in range(100):  # written in the background
        if load_revocations(revocations_file):
            break
        await asyncio.sleep(0.02)
    assert [e.value for e in load_revocations(revocations_file)] == [claims.jti]
    assert len(gateway.revocations) == 1

    while time.time() <= claims.expires_at + 0.5:  # past exp, and a prune pass
        await asyncio.sleep(0.05)
    assert len(gateway.revocations) == 0  # pruned in memory
    # The file keeps it until its next write, which prunes it; a gateway that starts
    # meanwhile prunes it as it reads it.
    path = world.env.directory / "wsgw.yaml"
    fresh = Gateway(load_config(path), config_path=path)
    assert len(fresh.revocations) == 0
    await wsgw_cli(world.env.directory, "revoke", "--jti", "another-one")
    assert [e.value for e in load_revocations(revocations_file)] == ["another-one"]


# ============================================================ a cluster on one Redis


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


async def wait_healthy(gateways: list[Gateway], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(g.events is not None and g.events.healthy for g in gateways):
        assert time.monotonic() < deadline, "cluster events not connected"
        await asyncio.sleep(0.02)


@pytest.fixture
async def cluster(
    world_factory: Callable[..., Any],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> AsyncIterator[tuple[World, list[Gateway]]]:
    """Gateway A (the world's) and B and C: one private Redis, the same subscriptions and
    signing key, each its own revocations file (so that only Redis carries an event)."""
    world: World = await world_factory(
        edit=lambda raw: raw["gateway"].update(redis_url=private_redis.url)
    )
    raw = read_config(world.env.directory)
    others = []
    for name in ("b", "c"):
        directory = tmp_path / name
        directory.mkdir()
        mine = dict(raw)
        mine["gateway"] = {
            **raw["gateway"],
            "subscriptions_file": str(world.env.directory / "subscriptions.yaml"),
        }
        mine["security"] = {
            **raw["security"],
            "signing_key_file": str(world.env.directory / "keys" / "signing.pem"),
            "revocations_file": "revocations.json",  # in its own directory
        }
        path = directory / "wsgw.yaml"
        path.write_text(yaml.safe_dump(mine, sort_keys=False))
        gateway = Gateway(load_config(path), config_path=path)
        await gateway.start()
        others.append(gateway)
    try:
        await wait_healthy([world.env.gateway, *others])
        yield world, others
    finally:
        await world.stack.aclose()
        for gateway in others:
            await gateway.stop(grace_s=1.0)


class Remote:
    """A connection through another gateway of the cluster (same shape as Conn)."""

    def __init__(self, name: str, ws: Any, seen: Any) -> None:
        self.name, self.ws, self.seen, self.prefix = name, ws, seen, ""


async def open_on(world: World, gateway: Gateway, name: str, token: str) -> Remote:
    ws = await ws_connect(f"ws://{gateway.address}{ECHO}", token)
    world.stack.push_async_callback(ws.close)
    seen = await world.echo.next()
    remote = Remote(name, ws, seen)
    await exchange(ws, varied_messages(5, seed=len(name)))
    return remote


async def test_a_revocation_on_gateway_a_closes_the_connections_on_b_and_c(
    cluster: tuple[World, list[Gateway]],
) -> None:
    world, (b, c) = cluster
    env = world.env
    victim_token, kept_token = world.token(), world.token()
    victims = [
        await open_on(world, g, f"{n} victim", victim_token) for n, g in (("B", b), ("C", c))
    ]
    kept = [await open_on(world, g, f"{n} kept", kept_token) for n, g in (("B", b), ("C", c))]
    others = [
        await open_on(world, g, f"{n} OtherApp", world.token("OtherApp"))
        for n, g in (("B", b), ("C", c))
    ]
    key, secret = env.keys["PRODUCTION"]
    closing = [watch_close(conn) for conn in victims]
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.time()
        async with session.post(
            f"{env.http}/oauth2/revoke",
            data={"token": victim_token},
            headers={"Authorization": basic(key, secret)},
            timeout=aiohttp.ClientTimeout(5),
        ) as response:
            assert response.status == 200
    for conn, task in zip(victims, closing, strict=True):
        await expect_revoked(conn, task, started, "POST /oauth2/revoke on A, closed on")
    for seed, conn in enumerate(kept + others):
        await still_relaying(conn, seed=50 + seed)
    for gateway in (env.gateway, b, c):
        base = f"ws://{gateway.address}"
        assert await handshake_status(f"{base}{ECHO}", victim_token) == 401
        assert await handshake_status(f"{base}{ECHO}", kept_token) == 101
    # Only Redis told B and C: their own revocations files have nothing.
    for gateway in (b, c):
        assert load_revocations(gateway.config.security.revocations_file) == []
        assert len(gateway.revocations) == 1


async def test_the_cli_revoke_reaches_every_gateway_of_the_cluster_through_redis(
    cluster: tuple[World, list[Gateway]],
) -> None:
    """`wsgw revoke` against A's config writes A's file and publishes to Redis: B and C,
    which read other files, close at once all the same."""
    world, (b, c) = cluster
    victim_token = world.token()
    victims = [
        await open_on(world, g, f"{n} victim", victim_token) for n, g in (("B", b), ("C", c))
    ]
    kept = [await open_on(world, g, f"{n} kept", world.token()) for n, g in (("B", b), ("C", c))]
    closing = [watch_close(conn) for conn in victims]
    await wsgw_cli(world.env.directory, "revoke", "--jti", jti_of(victim_token))
    for conn, task in zip(victims, closing, strict=True):
        await expect_revoked(conn, task, written_at(world), "CLI revoke on A's files, closed on")
    for seed, conn in enumerate(kept):
        await still_relaying(conn, seed=70 + seed)
    for gateway in (b, c):
        assert load_revocations(gateway.config.security.revocations_file) == []


async def test_a_bulk_close_on_gateway_a_closes_the_matches_on_b_and_c(
    cluster: tuple[World, list[Gateway]],
) -> None:
    world, (b, c) = cluster
    await world.open_cast("AB")
    targets = [
        await open_on(world, g, f"{n} OtherApp", world.token("OtherApp"))
        for n, g in (("B", b), ("C", c))
    ]
    bystanders = [
        await open_on(world, g, f"{n} Default", world.token()) for n, g in (("B", b), ("C", c))
    ]
    started = time.monotonic()
    closed_here = world.env.gateway.close_connections(
        {"application": "OtherApp"}, 4000, "maintenance window"
    )
    assert closed_here == 1  # B of the cast, on A
    for conn in [world.conns["B"], *targets]:
        await closed(conn.ws)
        delay = time.monotonic() - started
        print(f"\nDELAY bulk close on A, closed on [{conn.name}]: {delay * 1000:.0f} ms")
        assert (conn.ws.close_code, conn.ws.close_reason) == (4000, "maintenance window")
        assert conn.seen is not None
        await conn.seen.wait_ended(3.0)
        assert (conn.seen.close_code, conn.seen.close_reason) == (4000, "maintenance window")
        assert delay < CLOSE_WITHIN_S
    for seed, conn in enumerate([world.conns["A"], *bystanders]):
        await still_relaying(conn, seed=60 + seed)
    # A close is not a revocation: OtherApp may come back at once.
    for gateway in (world.env.gateway, b, c):
        url = f"ws://{gateway.address}{ECHO}"
        assert await handshake_status(url, world.token("OtherApp")) == 101
