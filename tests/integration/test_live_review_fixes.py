"""Fixes from the review of the live operations, each on a real gateway with websockets
clients as they come (their defaults):

  a. reloads never push a connection's idle check back;
  b. a subscriptions file truncated in place is not applied (it would end everyone);
  c. a gateway built from a stale config object reads what is on disk (a worker the
     supervisor restarts gets the files, not the supervisor's copy);
  d. a burst of revocations costs one write of the file, not one per revocation, and an
     already-expired entry is not added;
  e. a tier edit that changes only an action keeps the bucket (and its spent tokens);
  f. a worker drained by POST /drain is not restarted (`wsgw serve --workers 2` + Redis);
  g. a reload that `--workers 2` could not enforce (limits without Redis) is refused;
  h. `wsgw revoke` reaches a gateway that does not watch its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import orjson
import pytest
import yaml
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.redis_support import REDIS_URL, delete_prefix, require_redis
from wsgw import app as wsgw_app
from wsgw.app import Gateway
from wsgw.config import load_config
from wsgw.config.loader import display_path
from wsgw.oauth.revocation import Revocation, load_revocations

from .backends import free_port
from .conftest import Env, GatewayFactory
from .test_drain import http
from .test_reload import (
    Served,
    api_of,
    config_path,
    edit_config,
    eventually,
    exchange,
    handshake_status,
    health,
    serve,
    subscriptions_path,
    varied_messages,
    ws_connect,
)
from .test_serve_process import Deployment, deployment  # noqa: F401 (fixture)
from .test_serve_process import wsgw as run_wsgw

pytestmark = pytest.mark.timeout(45)

RECV_S = 5.0
PREFIX = "[production] "


async def closed_within(ws: ClientConnection, timeout_s: float) -> float:
    """Seconds until the gateway's close reaches `ws`; fails if any message arrives first
    or if nothing closes it within `timeout_s`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            message = await ws.recv()
    except ConnectionClosed:
        return time.monotonic() - started
    except TimeoutError:
        pytest.fail(f"still open after {timeout_s}s")
    pytest.fail(f"a message instead of the close: {message!r}")


async def _true(value: bool) -> bool:
    return value


# ============================================================ a. the idle check


async def test_reloads_every_0_3s_do_not_push_the_idle_check_back(
    make_gateway: GatewayFactory,
) -> None:
    idle_s = 1.0
    env = await make_gateway(edit=lambda raw: raw["gateway"].update(idle_timeout_s=idle_s))
    results: list[str] = []

    async def reload_forever() -> None:
        while True:
            await asyncio.sleep(0.3)
            results.append(env.gateway.reload("t")["result"])

    ws = await ws_connect(env.url, env.tokens["PRODUCTION"])
    opened = time.monotonic()
    reloads = asyncio.create_task(reload_forever())
    try:
        await closed_within(ws, 4 * idle_s)  # silent all along
    finally:
        reloads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloads
        await ws.close()
    took = time.monotonic() - opened
    print(f"\nidle close under reloads every 0.3s: {took * 1000:.0f} ms, {len(results)} reloads")
    assert (ws.close_code, ws.close_reason) == (1001, "idle timeout")
    # Between 1 and 1.5 idle timeouts of silence, plus a deadline tick and the handshake.
    assert 0.9 * idle_s <= took <= 1.5 * idle_s + 0.3, took
    assert len(results) >= 3 and set(results) == {"ok"}, results


# ============================================================ b. an empty file


async def test_a_subscriptions_file_truncated_in_place_is_not_applied(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway()  # the watcher on: nothing else triggers the reloads
    admin = env.gateway.admin_address
    token = env.tokens["PRODUCTION"]
    subscriptions = subscriptions_path(env)
    good = subscriptions.read_text()
    async with await ws_connect(env.url, token) as ws:
        await exchange(ws, varied_messages(5, seed=1), PREFIX)
        subscriptions.write_text("")  # in place: same inode, size 0
        await asyncio.sleep(1.0)  # four watch intervals: seen, settled, reloaded
        await exchange(ws, varied_messages(8, seed=2), PREFIX)
        body = await health(admin)
        assert body["config"]["last_reload"] == "failed", body
        assert body["config"]["errors"] == [
            f"{display_path(subscriptions)}: empty file: not loaded"
        ]
        assert body["config"]["generation"] == 1
        # New connections are judged by the running subscriptions too.
        assert await handshake_status(env.url, token) == 101

        subscriptions.write_text(good)  # restored: the next reload takes it

        async def reloaded() -> bool:
            return (await health(admin))["config"]["last_reload"] == "ok"

        await eventually(reloaded, timeout_s=2.0)
        body = await health(admin)
        assert body["config"]["errors"] == [] and body["config"]["generation"] == 2
        await exchange(ws, varied_messages(5, seed=3), PREFIX)
    assert await handshake_status(env.url, token) == 101


# ============================================================ c. a stale config object


async def test_a_gateway_built_from_a_stale_config_reads_the_files_on_disk(
    make_gateway: GatewayFactory,
) -> None:
    """What `wsgw serve --workers N` does when it restarts a worker: the config object is
    the supervisor's, loaded at start; the files may have been edited since."""
    env = await make_gateway(edit=lambda raw: raw["gateway"].update(watch_files=False))
    token = env.tokens["PRODUCTION"]
    path = config_path(env.directory)
    stale = load_config(path)
    moved_to = free_port()

    def edit(raw: dict) -> None:
        api_of(raw, "EchoWebSocket")["status"] = "BLOCKED"
        raw["gateway"]["listen"] = f"127.0.0.1:{moved_to}"  # restart-only

    edit_config(env.directory, edit)
    assert stale.api("EchoWebSocket", "1.0").status == "PUBLISHED"
    respawned = Gateway(stale, config_path=path)
    await respawned.start()
    try:
        assert respawned.config.api("EchoWebSocket", "1.0").status == "BLOCKED"
        # The listeners stay those of the config given (the supervisor's).
        assert respawned.config.gateway.listen == "127.0.0.1:0"
        assert not respawned.address.endswith(f":{moved_to}")
        url = f"ws://{respawned.address}/echowebsocket/1.0"
        assert await handshake_status(url, token) == 403
        # The gateway that was not reloaded still serves the API: the files made the
        # difference, not the token.
        assert await handshake_status(env.url, token) == 101
    finally:
        await respawned.stop(grace_s=1.0)


# ============================================================ d. revocation spam


async def test_revocation_spam_coalesces_into_one_write(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await make_gateway()
    gateway = env.gateway
    path = gateway.config.security.revocations_file
    writes: list[int] = []
    real_record = wsgw_app.record_revocations

    def counting_record(where: str, entries: list[Revocation], now: float) -> list[Revocation]:
        writes.append(len(entries))
        return real_record(where, entries, now)

    monkeypatch.setattr(wsgw_app, "record_revocations", counting_record)
    token = env.tokens["PRODUCTION"]
    victim_jti = gateway.services.verifier.verify(token).jti
    ws = await ws_connect(env.url, token)
    await exchange(ws, varied_messages(3, seed=4), PREFIX)

    now = int(time.time())
    entries = [Revocation("jti", victim_jti, now + 3600)] + [
        Revocation("jti", f"spam-{i:02d}-{uuid.uuid4().hex[:8]}", now + 3600) for i in range(49)
    ]
    expired = Revocation("jti", "expired-already", now - 60)
    started = time.monotonic()
    for i, entry in enumerate(entries):
        gateway.revoke([entry, expired] if i == 25 else [entry])
    spent = time.monotonic() - started
    # In force at once, before any write: the victim's connection ends (4102).
    in_memory = {e.value for e in gateway.revocations.entries()}
    assert {e.value for e in entries} <= in_memory
    assert "expired-already" not in in_memory
    assert await closed_within(ws, 1.0) < 1.0
    assert (ws.close_code, ws.close_reason) == (4102, "access token revoked")
    assert writes == []  # not yet: the write waits out PERSIST_INTERVAL_S

    def on_disk() -> set[str]:
        return {e.value for e in load_revocations(path)}

    took = await eventually(
        lambda: _true({e.value for e in entries} <= on_disk()), timeout_s=3.0, interval_s=0.05
    )
    took += spent
    await asyncio.sleep(0.5)  # a second write, if any, would have come by now
    print(f"\n50 revocations: {len(writes)} write(s) {writes}, all on disk after {took:.2f}s")
    assert 1 <= len(writes) <= 2, writes
    assert sum(writes) == 50
    assert took <= 1.5, took
    assert "expired-already" not in on_disk()
    # An expired entry alone schedules nothing.
    gateway.revoke([Revocation("jti", "expired-too", now - 1)])
    await asyncio.sleep(wsgw_app.PERSIST_INTERVAL_S + 0.3)
    assert len(writes) <= 2 and sum(writes) == 50
    assert "expired-too" not in {e.value for e in gateway.revocations.entries()}


# ============================================================ e. an action-only tier edit


def tiny(on_limit: str) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        raw["tiers"]["Tiny"] = {"messages_per_minute": 12, "on_limit": on_limit}
        if "Tiny" not in raw["apis"][0]["tiers"]:
            raw["apis"][0]["tiers"].append("Tiny")

    return edit


async def test_an_action_only_tier_edit_keeps_the_spent_bucket(
    make_gateway: GatewayFactory,
) -> None:
    def setup(raw: dict) -> None:
        tiny("drop")(raw)
        raw["gateway"]["watch_files"] = False  # one reload, by call

    env = await make_gateway(edit=setup, subscribe_to=("EchoWebSocket", "1.0", "Tiny"))
    async with await ws_connect(env.url, env.tokens["PRODUCTION"]) as ws:
        # 6 messages and their echoes: Tiny's 12 tokens (count: both), spent in ms (one
        # token comes back every 5 s).
        await exchange(ws, varied_messages(6, seed=5), PREFIX)
        await ws.send("dropped: no token left")
        notice = orjson.loads(await asyncio.wait_for(ws.recv(), RECV_S))
        assert notice["code"] == 4008, notice
        edit_config(env.directory, tiny("close"))  # the same rate, another action
        result = env.gateway.reload("t")
        assert result["result"] == "ok" and result["connections_ended"] == 0, result
        assert env.gateway.config.tiers["Tiny"].on_limit == "close"
        await ws.send("closes: still no token")
        took = await closed_within(ws, 2.0)
    print(f"\naction-only edit: closed {took * 1000:.0f} ms after the next message")
    assert (ws.close_code, ws.close_reason) == (1008, "rate limit exceeded (subscription)")


# ============================================================ real `wsgw serve --workers 2`


def two_free_ports() -> int:
    """A port p with p and p + 1 free (worker i serves the admin API on admin port + i)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


async def answers(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@pytest.fixture
async def workers(deployment: Deployment) -> AsyncIterator[Callable[[], Awaitable[Served]]]:  # noqa: F811
    running: list[Served] = []

    async def start() -> Served:
        served = await serve(deployment, "--workers", "2")
        running.append(served)
        await eventually(lambda: answers(deployment.admin_port + 1), timeout_s=10.0)
        await eventually(lambda: _true(len(served.worker_pids()) == 2), timeout_s=5.0)
        return served

    yield start
    for served in running:
        pids = served.worker_pids()
        await served.stop()  # SIGINT: passed on to every worker
        for pid in pids:  # a worker its killed supervisor left behind
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)


def update_gateway(dep: Deployment, **settings: object) -> None:  # noqa: F811
    raw = yaml.safe_load(dep.config.read_text())
    raw["gateway"].update(settings)
    if "admin_listen" in settings:
        dep.admin_port = int(str(settings["admin_listen"]).rsplit(":", 1)[1])
    dep.config.write_text(yaml.safe_dump(raw, sort_keys=False))


async def echo_once(dep: Deployment, token: str, text: str) -> None:  # noqa: F811
    async with await ws_connect(dep.url, token) as ws:
        await exchange(ws, [text], PREFIX)


@pytest.fixture
def private_prefix() -> Iterator[str]:
    require_redis(REDIS_URL)
    prefix = f"wsgwt{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(REDIS_URL, f"{prefix}:")


async def test_a_worker_drained_by_post_drain_is_not_restarted(
    deployment: Deployment,  # noqa: F811
    workers: Callable[[], Awaitable[Served]],
    private_prefix: str,
) -> None:
    update_gateway(
        deployment,
        redis_url=REDIS_URL,
        redis_prefix=private_prefix,
        admin_listen=f"127.0.0.1:{two_free_ports()}",
        drain_s=1,
        drain_close_window_s=0.5,
    )
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    token = await deployment.token()
    served = await workers()
    first, second = deployment.admin_port, deployment.admin_port + 1
    assert (await http(first, "GET", "/health"))[0] == 200
    assert (await http(second, "GET", "/health"))[0] == 200
    await echo_once(deployment, token, "before the drain")

    status, _, body = await http(first, "POST", "/drain")
    assert status == 202, body
    drained = time.monotonic()
    await eventually(lambda: _true_async_not(answers(first)), timeout_s=5.0, interval_s=0.1)
    gone = time.monotonic() - drained
    # Restarted, it would be back within its backoff (0.5 s): it stays down.
    watch_until = time.monotonic() + 3.0
    while time.monotonic() < watch_until:
        assert not await answers(first), "worker 0 was restarted"
        await asyncio.sleep(0.1)
    print(f"\nworker 0 gone {gone * 1000:.0f} ms after POST /drain; down 3 s since")
    assert served.process.returncode is None
    assert (await http(second, "GET", "/health"))[0] == 200
    for i in range(4):  # only worker 1 listens on the port now
        await echo_once(deployment, token, f"after the drain {i}")
    # The supervisor reaped it and said why it let it go.
    worker_0 = served.worker_pids()[0]
    assert f"worker 0 (pid {worker_0}) stopped" in served.stderr
    assert not os.path.exists(f"/proc/{worker_0}")
    assert "restarting" not in served.stderr

    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.process.wait(), 10.0) == 0
    assert "Traceback" not in served.stderr


async def _true_async_not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_a_reload_that_two_workers_could_not_enforce_is_refused(
    deployment: Deployment,  # noqa: F811
    workers: Callable[[], Awaitable[Served]],
) -> None:
    raw = yaml.safe_load(deployment.config.read_text())
    raw["tiers"] = {"Gold": {}, "Silver": {}, "Unlimited": {}}  # no limits: no Redis needed
    raw["gateway"].update(admin_listen=f"127.0.0.1:{two_free_ports()}", drain_s=1)
    deployment.admin_port = int(raw["gateway"]["admin_listen"].rsplit(":", 1)[1])
    deployment.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    token = await deployment.token()
    served = await workers()
    first, second = deployment.admin_port, deployment.admin_port + 1
    async with await ws_connect(deployment.url, token) as ws:
        await exchange(ws, varied_messages(4, seed=6), PREFIX)
        edit_config(
            deployment.directory, lambda raw: raw["tiers"]["Gold"].update(messages_per_minute=60)
        )
        edited = time.monotonic()

        async def refused(port: int) -> bool:
            return (await health(f"127.0.0.1:{port}"))["config"]["last_reload"] == "failed"

        await eventually(lambda: refused(first), timeout_s=1.5)
        print(f"\nrefused by worker 0 {(time.monotonic() - edited) * 1000:.0f} ms after the edit")
        await eventually(lambda: refused(second), timeout_s=1.0)
        for port in (first, second):
            body = (await health(f"127.0.0.1:{port}"))["config"]
            assert body["generation"] == 1, body
            assert len(body["errors"]) == 1, body
            error = body["errors"][0]
            assert "gateway.redis_url" in error and "wsgw.yaml" in error, error
        # The running config serves on: the open connection, and new ones.
        await exchange(ws, varied_messages(8, seed=7), PREFIX)
        for i in range(4):
            await echo_once(deployment, token, f"after the refused reload {i}")
    assert served.process.returncode is None
    assert "Traceback" not in served.stderr


# ============================================================ h. watch_files: false


async def test_the_revoke_command_reaches_a_gateway_that_does_not_watch_files(
    make_gateway: GatewayFactory,
) -> None:
    env: Env = await make_gateway(edit=lambda raw: raw["gateway"].update(watch_files=False))
    token = env.tokens["PRODUCTION"]
    jti = env.gateway.services.verifier.verify(token).jti
    async with await ws_connect(env.url, token) as ws:
        await exchange(ws, varied_messages(4, seed=8), PREFIX)
        status, out, err = await run_wsgw(
            "revoke", "--jti", jti, "-c", str(config_path(env.directory)), cwd=env.directory
        )
        assert status == 0, err
        assert "revoked" in out
        took = await closed_within(ws, 3.0)
    print(f"\n`wsgw revoke` → 4102 after {took * 1000:.0f} ms (watch_files: false)")
    assert (ws.close_code, ws.close_reason) == (4102, "access token revoked")
    assert took < 1.5, took
    assert await handshake_status(env.url, token) == 401
