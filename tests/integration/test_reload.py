"""Reloading a running gateway: each trigger (the file watcher, SIGHUP on a real `wsgw
serve`, POST /reload at the admin port), a bad pair of files kept out while the running
config serves on, restart-only settings, the issue's Silver sequence on a real process, an
API published and an endpoint re-pointed without a restart, and the signing key rotated
under a running process.

Every delivered message is compared byte for byte with what was sent, with content that
varies in length, kind (text and binary) and bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import re
import signal
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsgw.config import load_config
from wsgw.errors import InvalidToken
from wsgw.oauth.keys import load_signing_key
from wsgw.oauth.tokens import TokenVerifier
from wsgw.portal import subscribe
from wsgw.tools.echo import start_echo_server

from . import test_serve_process
from .backends import free_port
from .conftest import Env, GatewayFactory, Peers
from .test_serve_process import Deployment

deployment = test_serve_process.deployment  # the fixture: a real `wsgw serve` set up by the CLI

RECV_S = 5.0
APPLY_S = 1.0  # what "applies within about a second" is held to


# ------------------------------------------------------------------ the files


def config_path(directory: Path) -> Path:
    return directory / "wsgw.yaml"


def read_config(directory: Path) -> dict:
    return yaml.safe_load(config_path(directory).read_text())


def write_config(directory: Path, raw: dict) -> None:
    """Replace wsgw.yaml atomically, as editors and config management do (a reader never
    sees half a file)."""
    path = config_path(directory)
    tmp = path.with_name(".wsgw.yaml.tmp")
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.replace(tmp, path)


def edit_config(directory: Path, change: Callable[[dict], None]) -> None:
    raw = read_config(directory)
    change(raw)
    write_config(directory, raw)


def subscriptions_path(env: Env) -> Path:
    return Path(env.gateway.config.gateway.subscriptions_file)


def edit_subscriptions(env: Env, change: Callable[[dict], None]) -> None:
    path = subscriptions_path(env)
    raw = yaml.safe_load(path.read_text())
    change(raw)
    tmp = path.with_name(".subscriptions.yaml.tmp")
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.replace(tmp, path)


def application_of(raw: dict, name: str) -> dict:
    return next(app for app in raw["applications"] if app["name"] == name)


def api_of(raw: dict, name: str) -> dict:
    return next(api for api in raw["apis"] if api["name"] == name)


# ------------------------------------------------------------------ the traffic


def varied_messages(n: int, seed: int) -> list[str | bytes]:
    """Text and binary messages of varied lengths and content (with shared runs, so a
    compressor's back-references matter), none alike."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_letters, k=rng.randint(2, 11))) for _ in range(80)]
    out: list[str | bytes] = []
    for i in range(n):
        if i % 3 == 2:
            out.append(bytes([i % 256]) + rng.randbytes(rng.choice((1, 17, 125, 126, 3000))))
        else:
            text = " ".join(rng.choices(words, k=rng.randint(1, 60)))
            out.append(f"{i}·{text}·é✓")
    return out


async def exchange(ws: ClientConnection, messages: list[str | bytes], prefix: str = "") -> None:
    """Send each message and expect its echo, byte for byte (`prefix` before texts)."""
    for message in messages:
        await ws.send(message)
        echo = await asyncio.wait_for(ws.recv(), RECV_S)
        expected = prefix + message if isinstance(message, str) else message
        assert echo == expected


async def ws_connect(url: str, token: str | None = None, **kwargs: Any) -> ClientConnection:
    """A websockets client with its defaults (compression offered)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return await connect(url, additional_headers=headers, proxy=None, close_timeout=2, **kwargs)


async def handshake_status(url: str, token: str | None = None) -> int:
    """101, or the status the gateway refused the upgrade with."""
    try:
        ws = await ws_connect(url, token)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.05
) -> float:
    """Poll `check` until it holds; the seconds it took. Fails past `timeout_s`."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s"
        await asyncio.sleep(interval_s)


async def expect_close(ws: ClientConnection, timeout_s: float = RECV_S) -> None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()


# ------------------------------------------------------------------ the admin port


async def admin_get(address: str, path: str) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(5)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://{address}{path}", timeout=timeout) as r,
    ):
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def health(address: str) -> dict:
    status, body = await admin_get(address, "/health")
    assert status == 200
    return body


async def metric_samples(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await admin_get(address, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


async def client_credentials(http: str, key: str, secret: str) -> tuple[int, dict]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{http}/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth(key, secret)},
            timeout=aiohttp.ClientTimeout(5),
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


# ------------------------------------------------------------------ a real process


@dataclass
class Served:
    """A running `wsgw serve` whose output is read all along (a full pipe would stall it)."""

    deployment: Deployment
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def errors(self) -> list[str]:
        return [line for line in self.lines if " ERROR " in line or "Traceback" in line]

    def worker_pids(self) -> list[int]:
        """With --workers: the pids the supervisor logged."""
        found = re.search(r"started \d+ workers: ([\d ]+)", self.stderr)
        return [int(p) for p in found.group(1).split()] if found else []

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in self.readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)


async def serve(dep: Deployment, *extra: str) -> Served:
    process = await dep.serve(*extra)
    served = Served(dep, process)

    async def read(stream: asyncio.StreamReader | None, keep: bool) -> None:
        assert stream is not None
        while line := await stream.readline():
            if keep:
                served.lines.append(line.decode(errors="replace"))

    served.readers = [
        asyncio.create_task(read(process.stderr, True)),
        asyncio.create_task(read(process.stdout, False)),
    ]
    return served


@pytest.fixture
async def served(deployment: Deployment) -> AsyncIterator[Callable[[], Awaitable[Served]]]:
    running: list[Served] = []

    async def start() -> Served:
        s = await serve(deployment)
        running.append(s)
        return s

    yield start
    for s in running:
        await s.stop()


def parse_keys(output: str) -> tuple[str, str]:
    found = dict(re.findall(r"^(consumer_key|consumer_secret): (\S+)$", output, re.M))
    return found["consumer_key"], found["consumer_secret"]


# =================================================================== triggers


async def test_the_watcher_applies_an_edit_of_wsgw_yaml_within_a_second(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env = await make_gateway()
    fresh = peers.adopt(await start_echo_server("127.0.0.1", 0, prefix="[fresh] "))
    fresh_url = f"ws://127.0.0.1:{fresh.sockets[0].getsockname()[1]}"
    generation = env.gateway.state.config_generation
    assert await handshake_status(f"{env.base}/fresh") == 404

    def add_api(raw: dict) -> None:
        raw["apis"].append(
            {
                "name": "Fresh",
                "context": "/fresh",
                "version": "1.0",
                "default_version": True,
                "auth": "none",
                "endpoints": {"production": fresh_url},
            }
        )

    # Edited in place (same inode: only the size and mtime tell), and nothing else: no
    # call, no signal.
    raw = read_config(env.directory)
    add_api(raw)
    config_path(env.directory).write_text(yaml.safe_dump(raw, sort_keys=False))
    took = await eventually(
        lambda: _status_is(handshake_status(f"{env.base}/fresh"), 101), timeout_s=3.0
    )
    print(f"\nwatcher: wsgw.yaml edit applied after {took * 1000:.0f} ms")
    assert took < APPLY_S
    assert env.gateway.state.config_generation == generation + 1
    async with await ws_connect(f"{env.base}/fresh") as ws:
        await exchange(ws, varied_messages(12, seed=1), prefix="[fresh] ")
    # The APIs that were there serve on.
    async with await ws_connect(env.url, env.tokens["PRODUCTION"]) as ws:
        await exchange(ws, varied_messages(6, seed=2), prefix="[production] ")


async def _status_is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


async def test_sighup_reloads_a_real_wsgw_serve(
    deployment: Deployment,
    served: Callable[[], Awaitable[Served]],
    peers: Peers,
) -> None:
    # Without the watcher, only the signal can apply the edit.
    edit_config(deployment.directory, lambda raw: raw["gateway"].update(watch_files=False))
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    process = await served()
    fresh = peers.adopt(await start_echo_server("127.0.0.1", 0, prefix="[hup] "))
    fresh_url = f"ws://127.0.0.1:{fresh.sockets[0].getsockname()[1]}"
    base = f"ws://127.0.0.1:{deployment.port}"
    token = await deployment.token()
    async with await ws_connect(deployment.url, token) as open_ws:
        await exchange(open_ws, varied_messages(5, seed=3), prefix="[production] ")

        def add_api(raw: dict) -> None:
            raw["apis"].append(
                {
                    "name": "Hup",
                    "context": "/hup",
                    "version": "1.0",
                    "auth": "none",
                    "endpoints": {"production": fresh_url},
                }
            )

        edit_config(deployment.directory, add_api)
        await asyncio.sleep(0.6)  # more than two watch intervals: nothing watches
        assert await handshake_status(f"{base}/hup/1.0") == 404
        process.process.send_signal(signal.SIGHUP)
        signalled = time.monotonic()
        took = await eventually(
            lambda: _status_is(handshake_status(f"{base}/hup/1.0"), 101), timeout_s=3.0
        )
        print(f"\nSIGHUP: applied after {took * 1000:.0f} ms")
        assert time.monotonic() - signalled < APPLY_S
        async with await ws_connect(f"{base}/hup/1.0") as ws:
            await exchange(ws, varied_messages(9, seed=4), prefix="[hup] ")
        # The connection open across the reload is untouched.
        await exchange(open_ws, varied_messages(5, seed=5), prefix="[production] ")
    body = await health(f"127.0.0.1:{deployment.admin_port}")
    assert body["config"]["generation"] == 2
    assert body["config"]["last_reload"] == "ok"
    assert process.process.returncode is None
    assert "SIGHUP: reloaded" in process.stderr
    assert process.errors() == []


async def post_reload(admin_address: str) -> tuple[int, dict]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://{admin_address}/reload", timeout=aiohttp.ClientTimeout(5)) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_post_reload_at_the_admin_port(make_gateway: GatewayFactory) -> None:
    # Without the watcher, only the request can apply the edit.
    env = await make_gateway(edit=lambda raw: raw["gateway"].update(watch_files=False))
    token = env.tokens["PRODUCTION"]
    async with await ws_connect(env.url, token) as ws:
        edit_config(
            env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status="BLOCKED")
        )
        await asyncio.sleep(0.6)
        assert await handshake_status(env.url, token) == 101  # not applied yet
        status, body = await post_reload(env.gateway.admin_address)
        assert status == 200, body
        assert body == {
            "result": "ok",
            "generation": 2,
            "restart_needed": [],
            "connections_ended": 1,
        }
        await expect_close(ws)
        assert (ws.close_code, ws.close_reason) == (4501, "API BLOCKED")
    assert await handshake_status(env.url, token) == 403

    # A file that does not validate: 422 with the problems, nothing changed.
    config_path(env.directory).write_text("apis: [\n")
    status, body = await post_reload(env.gateway.admin_address)
    assert status == 422, body
    assert body["result"] == "failed"
    assert len(body["errors"]) == 1 and "YAML syntax error" in body["errors"][0]
    assert body["errors"][0].startswith(f"{config_path(env.directory)}:")
    assert env.gateway.config.api("EchoWebSocket", "1.0").status == "BLOCKED"
    assert env.gateway.state.config_generation == 2


# ============================================================ a bad pair of files


async def test_a_bad_pair_keeps_the_running_config_until_fixed(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsgw")
    # Reloads by call only, so that each one is counted once.
    env = await make_gateway(edit=lambda raw: raw["gateway"].update(watch_files=False))
    admin = env.gateway.admin_address
    path = config_path(env.directory)
    good = path.read_text()
    before = await metric_samples(admin)
    started_at = metric(before, "wsgw_config_last_reload_success_timestamp_seconds")
    assert started_at is not None and started_at > 0
    assert metric(before, "wsgw_config_reload_total", result="failed") == 0

    async with await ws_connect(env.url, env.tokens["PRODUCTION"]) as ws:
        await exchange(ws, varied_messages(4, seed=6), prefix="[production] ")

        # 1. Not YAML at all.
        lines = good.splitlines(keepends=True)
        broken_at = next(i for i, line in enumerate(lines) if line.startswith("tiers:"))
        lines.insert(broken_at + 1, "  Gold: {messages_per_minute: [5000\n")
        path.write_text("".join(lines))
        result = env.gateway.reload("test")
        assert result["result"] == "failed"
        assert len(result["errors"]) == 1
        error = result["errors"][0]
        assert error.startswith(f"{path}:"), error
        assert "YAML syntax error" in error
        line = int(error.split(":")[1])
        assert broken_at + 1 <= line <= broken_at + 3, error  # where the parser gave up

        # 2. YAML, but an API offers a tier nobody defined.
        raw = yaml.safe_load(good)
        raw["apis"][0]["tiers"].append("Platinum")
        text = yaml.safe_dump(raw, sort_keys=False)
        path.write_text(text)
        platinum_line = text.splitlines().index("  - Platinum") + 1
        result = env.gateway.reload("test")
        assert result["result"] == "failed"
        assert result["errors"] == [
            f"{path}:{platinum_line}: tier 'Platinum' is not defined in tiers (defined: Gold, "
            "Silver, Unlimited) - at $.apis[0].tiers[2]"
        ]

        # The running config serves on: the open connection and new ones.
        await exchange(ws, varied_messages(4, seed=7), prefix="[production] ")
        async with await ws_connect(env.url, env.tokens["PRODUCTION"]) as second:
            await exchange(second, varied_messages(4, seed=8), prefix="[production] ")
        assert env.gateway.config.api("EchoWebSocket", "1.0").tiers == ["Gold", "Unlimited"]

        body = await health(admin)
        assert body["config"]["last_reload"] == "failed"
        assert body["config"]["errors"] == result["errors"]
        assert body["config"]["generation"] == 1
        samples = await metric_samples(admin)
        assert metric(samples, "wsgw_config_reload_total", result="failed") == 2
        assert metric(samples, "wsgw_config_reload_total", result="ok") == 0
        assert metric(samples, "wsgw_config_last_reload_success_timestamp_seconds") == started_at
        failures = [r for r in caplog.records if "not reloaded" in r.getMessage()]
        assert [r.levelno for r in failures] == [logging.ERROR, logging.ERROR]

        # 3. Fixed: the next reload takes it.
        await asyncio.sleep(0.01)  # the timestamp must be able to move
        raw = yaml.safe_load(good)
        raw["tiers"]["Platinum"] = {"messages_per_minute": 9000}
        raw["apis"][0]["tiers"].append("Platinum")
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        result = env.gateway.reload("test")
        assert result["result"] == "ok", result
        assert result["connections_ended"] == 0
        await exchange(ws, varied_messages(4, seed=9), prefix="[production] ")

    body = await health(admin)
    assert body["config"]["last_reload"] == "ok"
    assert body["config"]["errors"] == []
    assert body["config"]["generation"] == 2
    samples = await metric_samples(admin)
    assert metric(samples, "wsgw_config_reload_total", result="ok") == 1
    assert metric(samples, "wsgw_config_reload_total", result="failed") == 2
    moved = metric(samples, "wsgw_config_last_reload_success_timestamp_seconds")
    assert moved is not None and moved > started_at
    assert env.gateway.config.api("EchoWebSocket", "1.0").tiers[-1] == "Platinum"


async def test_a_backend_ca_file_that_does_not_load_fails_the_reload_cleanly(
    make_gateway: GatewayFactory,
) -> None:
    """The CA file exists (so the file check passes) but holds no certificate: the reload
    must fail like any bad file (result failed, the file named, the running config kept),
    and the watcher must go on watching: a later good edit still applies by itself."""
    env = await make_gateway()
    token = env.tokens["PRODUCTION"]
    (env.directory / "ca.pem").write_text("this is not a certificate\n")
    edit_config(env.directory, lambda raw: raw["gateway"].update(backend_tls={"ca_file": "ca.pem"}))
    try:
        result = env.gateway.reload("test")
    except Exception as exc:  # noqa: BLE001 - what is wrong is that it raises at all
        pytest.fail(f"reload raised {type(exc).__name__}: {exc}")
    assert result["result"] == "failed"
    assert any(str(env.directory / "ca.pem") in e for e in result["errors"]), result
    assert env.gateway.config.gateway.backend_tls.ca_file is None  # the running config
    assert env.gateway.state.last_reload_ok is False
    async with await ws_connect(env.url, token) as ws:
        await exchange(ws, varied_messages(4, seed=30), prefix="[production] ")
    # Fixed on disk, nothing called: the watcher is still there to take it.
    edit_config(env.directory, lambda raw: raw["gateway"].update(backend_tls={"verify": True}))
    edit_config(env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status="BLOCKED"))
    await eventually(lambda: _status_is(handshake_status(env.url, token), 403), timeout_s=2.0)
    assert env.gateway.state.last_reload_ok is True


async def test_the_watcher_survives_a_reload_that_raises(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever one reload does (here: a bug that raises), the watcher goes on: the next
    change on disk is still applied, and revocations are still read."""
    env = await make_gateway()
    gateway = env.gateway
    token = env.tokens["PRODUCTION"]
    real_reload = gateway.reload
    calls: list[str] = []

    def reload_that_fails_once(trigger: str) -> dict:
        calls.append(trigger)
        if len(calls) == 1:
            raise RuntimeError("a bug in one reload")
        return real_reload(trigger)

    monkeypatch.setattr(gateway, "reload", reload_that_fails_once)
    edit_config(env.directory, lambda raw: raw["tiers"]["Gold"].update(burst=1))
    await eventually(lambda: _true_when(bool(calls)), timeout_s=2.0)
    await asyncio.sleep(0.1)
    edit_config(env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status="BLOCKED"))
    await eventually(lambda: _status_is(handshake_status(env.url, token), 403), timeout_s=2.0)
    assert len(calls) == 2


async def _true_when(value: bool) -> bool:
    return value


# ============================================================ restart-only settings


@pytest.mark.parametrize("setting", ["listen", "admin_listen"])
async def test_a_restart_only_setting_is_kept_and_reported(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, setting: str
) -> None:
    caplog.set_level(logging.INFO, logger="wsgw")
    env = await make_gateway(edit=lambda raw: raw["gateway"].update(watch_files=False))
    addresses = (env.gateway.address, env.gateway.admin_address)
    new_port = free_port()
    edit_config(
        env.directory, lambda raw: raw["gateway"].update({setting: f"127.0.0.1:{new_port}"})
    )
    result = env.gateway.reload("test")
    name = f"gateway.{setting}"
    assert result["result"] == "ok"
    assert result["restart_needed"] == [name]
    assert env.gateway.state.restart_needed == [name]
    assert getattr(env.gateway.config.gateway, setting) == "127.0.0.1:0"  # the running value
    # The old ports serve; nothing listens on the new one.
    assert (env.gateway.address, env.gateway.admin_address) == addresses
    async with await ws_connect(env.url, env.tokens["PRODUCTION"]) as ws:
        await exchange(ws, varied_messages(6, seed=10), prefix="[production] ")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", new_port)
    body = await health(env.gateway.admin_address)
    assert body["config"]["restart_needed"] == [name]
    assert body["config"]["last_reload"] == "ok"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "restart is needed" in r.getMessage()
    ]
    assert warnings == [f"test: {name} changed: a restart is needed to apply it"]
    # What else the reload carried did apply.
    edit_config(env.directory, lambda raw: api_of(raw, "EchoWebSocket").update(status="BLOCKED"))
    result = env.gateway.reload("test")
    assert result["restart_needed"] == [name]  # still pending
    assert await handshake_status(env.url, env.tokens["PRODUCTION"]) == 403


# ============================================================ the Silver sequence


async def test_the_silver_sequence_of_the_issue_on_a_real_process(
    deployment: Deployment,
    served: Callable[[], Awaitable[Served]],
) -> None:
    """The API offers only Gold; the operator adds Silver to wsgw.yaml, then a developer
    creates an application, its keys and a Silver subscription with the CLI, while the
    gateway runs. Nothing else: the gateway must take it all on its own."""

    def gold_only(raw: dict) -> None:
        del raw["tiers"]["Silver"]
        raw["apis"][0]["tiers"] = ["Gold"]

    edit_config(deployment.directory, gold_only)
    process = await served()
    http = f"http://127.0.0.1:{deployment.port}"

    def add_silver(raw: dict) -> None:
        raw["tiers"]["Silver"] = {"messages_per_minute": 2000}
        raw["apis"][0]["tiers"] = ["Gold", "Silver"]

    edit_config(deployment.directory, add_silver)
    await deployment.cli("app", "create", "NewApp")
    key, secret = parse_keys(await deployment.cli("keys", "generate", "NewApp"))
    out = await deployment.cli("subscribe", "NewApp", "EchoWebSocket:1.0", "--tier", "Silver")
    assert "at tier Silver" in out
    done = time.monotonic()

    tokens: list[str] = []

    async def token_works() -> bool:
        status, body = await client_credentials(http, key, secret)
        if status != 200:
            assert status == 401, body  # not yet known, nothing worse
            return False
        tokens.append(body["access_token"])
        return await handshake_status(deployment.url, body["access_token"]) == 101

    # Polled gently: each 401 counts as a failed client authentication (5 per client id
    # per minute are allowed before 429).
    took = await eventually(token_works, timeout_s=3.0, interval_s=0.25)
    print(f"\nSilver sequence: NewApp served {took * 1000:.0f} ms after the last CLI call")
    assert time.monotonic() - done < 2.0
    async with await ws_connect(deployment.url, tokens[-1]) as ws:
        await exchange(ws, varied_messages(10, seed=11), prefix="[production] ")
    body = await health(f"127.0.0.1:{deployment.admin_port}")
    assert body["config"]["last_reload"] == "ok"
    assert body["config"]["errors"] == []
    assert [line for line in process.lines if "Silver" in line and "ERROR" in line] == []
    assert process.errors() == []


# ============================================================ APIs and endpoints


async def test_an_api_published_by_editing_wsgw_yaml_serves_without_a_restart(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    env = await make_gateway()
    news = peers.adopt(await start_echo_server("127.0.0.1", 0, prefix="[news] "))
    news_url = f"ws://127.0.0.1:{news.sockets[0].getsockname()[1]}"
    address = env.gateway.address
    token = env.tokens["PRODUCTION"]
    async with await ws_connect(env.url, token) as open_ws:
        await exchange(open_ws, varied_messages(3, seed=12), prefix="[production] ")

        def publish(raw: dict) -> None:
            raw["apis"].append(
                {
                    "name": "News",
                    "context": "/news",
                    "version": "2.0",
                    "default_version": True,
                    "endpoints": {"production": news_url},
                    "tiers": ["Silver"],
                }
            )

        edit_config(env.directory, publish)
        assert env.gateway.reload("test")["result"] == "ok"
        # Published, not subscribed yet: the subscription check answers, not a 404.
        assert await handshake_status(f"{env.base}/news", token) == 403
        subscribe(
            load_config(config_path(env.directory)), "DefaultApplication", "News", "2.0", "Silver"
        )
        assert env.gateway.reload("test")["result"] == "ok"
        for url in (f"{env.base}/news", f"{env.base}/news/2.0"):
            async with await ws_connect(url, token) as ws:
                await exchange(ws, varied_messages(8, seed=13), prefix="[news] ")
        await exchange(open_ws, varied_messages(3, seed=14), prefix="[production] ")
    assert env.gateway.address == address


async def test_a_changed_endpoint_applies_to_new_connections_only(
    make_gateway: GatewayFactory, peers: Peers
) -> None:
    old = peers.adopt(await start_echo_server("127.0.0.1", 0, prefix="[old] "))
    new = peers.adopt(await start_echo_server("127.0.0.1", 0, prefix="[new] "))
    old_url = f"ws://127.0.0.1:{old.sockets[0].getsockname()[1]}"
    new_url = f"ws://127.0.0.1:{new.sockets[0].getsockname()[1]}"
    env = await make_gateway(production=old_url)
    token = env.tokens["PRODUCTION"]
    async with await ws_connect(env.url, token) as before:
        await exchange(before, varied_messages(5, seed=15), prefix="[old] ")
        edit_config(
            env.directory, lambda raw: raw["apis"][0]["endpoints"].update(production=new_url)
        )
        result = env.gateway.reload("test")
        assert result["result"] == "ok" and result["connections_ended"] == 0
        async with await ws_connect(env.url, token) as after:
            await exchange(after, varied_messages(7, seed=16), prefix="[new] ")
            # The open connection stays on the backend it was opened to.
            await exchange(before, varied_messages(7, seed=17), prefix="[old] ")
            await exchange(after, varied_messages(3, seed=18), prefix="[new] ")


# ============================================================ the signing key


async def test_signing_key_rotation_on_a_real_process(
    deployment: Deployment,
    served: Callable[[], Awaitable[Served]],
) -> None:
    """`wsgw keys init --force` while the gateway runs: it signs and verifies with the new
    key within about a second. Tokens signed by the old key are refused at new handshakes
    (401: there is no overlap window), while connections opened with them keep going: a
    token is checked at the handshake, and a rotation is not a revocation."""
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    key, secret = parse_keys(await deployment.cli("keys", "generate", "DefaultApplication"))
    process = await served()
    http = f"http://127.0.0.1:{deployment.port}"
    key_file = deployment.directory / "keys" / "signing.pem"
    old_key = load_signing_key(key_file)
    status, body = await client_credentials(http, key, secret)
    assert status == 200
    old_token = body["access_token"]
    TokenVerifier(old_key, "wsgw").verify(old_token)

    async with await ws_connect(deployment.url, old_token) as open_ws:
        await exchange(open_ws, varied_messages(6, seed=19), prefix="[production] ")
        await deployment.cli("keys", "init", "--force")
        rotated = time.monotonic()
        new_key = load_signing_key(key_file)
        assert new_key.public_key != old_key.public_key
        new_token = (await deployment.token()).strip()  # the CLI signs with the file's key
        TokenVerifier(new_key, "wsgw").verify(new_token)

        took = await eventually(
            lambda: _status_is(handshake_status(deployment.url, new_token), 101), timeout_s=3.0
        )
        print(
            f"\nkey rotation: new key honoured {(time.monotonic() - rotated) * 1000:.0f} ms "
            f"after `keys init --force` returned ({took * 1000:.0f} ms after the new token)"
        )
        assert time.monotonic() - rotated < APPLY_S + 1.0  # includes the `wsgw token` run
        # The token endpoint signs with the new key.
        status, body = await client_credentials(http, key, secret)
        assert status == 200
        issued = body["access_token"]
        TokenVerifier(new_key, "wsgw").verify(issued)
        with pytest.raises(InvalidToken):
            TokenVerifier(old_key, "wsgw").verify(issued)
        async with await ws_connect(deployment.url, issued) as ws:
            await exchange(ws, varied_messages(6, seed=20), prefix="[production] ")
        # Tokens of the old key: refused at a new handshake ...
        assert await handshake_status(deployment.url, old_token) == 401
        # ... but the connection opened with one keeps going, both ways.
        await exchange(open_ws, varied_messages(12, seed=21), prefix="[production] ")
    body = await health(f"127.0.0.1:{deployment.admin_port}")
    assert body["config"]["last_reload"] == "ok"
    assert process.errors() == []
