"""A real gateway on loopback, in the test's uvloop event loop, with real echo backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
import yaml

from wsgw.app import Gateway
from wsgw.config import load_config
from wsgw.oauth.keys import generate_signing_key
from wsgw.portal import create_app, generate_keys, subscribe
from wsgw.tools.echo import start_echo_server

from .backends import RawBackend, RawHandler, RecordingBackend


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """The gateway runs on uvloop in production, so its tests do too."""
    return {"uvloop": uvloop.new_event_loop}


def base_config(production: str | None, sandbox: str | None) -> dict:
    return {
        "gateway": {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "subscriptions_file": "subscriptions.yaml",
            "max_message_bytes": 1048576,
            "backend_handshake_timeout_s": 2,
            "close_timeout_s": 2,
        },
        "security": {"signing_key_file": "keys/signing.pem", "token_ttl_s": 3600},
        "tiers": {
            "Gold": {"messages_per_minute": 5000},
            "Silver": {"messages_per_minute": 2000},
            "Unlimited": {},
        },
        "apis": [
            {
                "name": "EchoWebSocket",
                "context": "/echowebsocket",
                "version": "1.0",
                "default_version": True,
                "endpoints": {"production": production, "sandbox": sandbox},
                "tiers": ["Gold", "Unlimited"],
                "status": "PUBLISHED",
            }
        ],
    }


@dataclass
class Env:
    """A running gateway and what a client needs to call it."""

    directory: Path
    gateway: Gateway
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"ws://{self.gateway.address}"

    @property
    def url(self) -> str:
        return f"{self.base}/echowebsocket/1.0"

    @property
    def http(self) -> str:
        return f"http://{self.gateway.address}"

    def auth(self, key_type: str = "PRODUCTION") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[key_type]}"}

    def token(self, application: str = "DefaultApplication", key_type: str = "PRODUCTION") -> str:
        consumer_key = self.gateway.registry._consumer_keys[(application, key_type)]
        return self.gateway.issuer.issue(application, key_type, consumer_key)[0]


GatewayFactory = Callable[..., "asyncio.Future[Env]"]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Build a gateway: `await make_gateway(edit=fn, subscribe_tier="Gold")`.

    `edit(config_dict)` may change the config before it is written; the echo backends'
    URLs are in it already. DefaultApplication gets production and sandbox keys.
    """
    started: list[Gateway] = []
    servers: list[asyncio.Server] = []

    async def factory(
        edit: Callable[[dict], None] | None = None,
        subscribe_to: tuple[str, str, str] | None = ("EchoWebSocket", "1.0", "Gold"),
        production: str | None = None,
        sandbox: str | None = None,
    ) -> Env:
        if production is None:
            server = await start_echo_server("127.0.0.1", 0, prefix="[production] ")
            servers.append(server)
            production = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        if sandbox is None:
            server = await start_echo_server("127.0.0.1", 0, prefix="[sandbox] ")
            servers.append(server)
            sandbox = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        raw = base_config(production, sandbox)
        if edit is not None:
            edit(raw)
        config_path = tmp_path / "wsgw.yaml"
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(config_path)
        if not os.path.exists(config.security.signing_key_file):
            generate_signing_key(config.security.signing_key_file)
        env_keys = {}
        subs_file = Path(config.gateway.subscriptions_file)
        if not subs_file.exists():
            create_app(config, "DefaultApplication")
            env_keys["PRODUCTION"] = generate_keys(config, "DefaultApplication", "production")
            env_keys["SANDBOX"] = generate_keys(config, "DefaultApplication", "sandbox")
            if subscribe_to is not None:
                subscribe(config, "DefaultApplication", *subscribe_to)
        gateway = Gateway(config, config_path=config_path)
        await gateway.start()
        started.append(gateway)
        env = Env(directory=tmp_path, gateway=gateway, keys=env_keys)
        for key_type in ("PRODUCTION", "SANDBOX"):
            env.tokens[key_type] = env.token("DefaultApplication", key_type)
        return env

    yield factory  # type: ignore[misc]
    for gateway in started:
        await gateway.stop(grace_s=1.0)
    for server in servers:
        server.close()


@pytest.fixture
async def env(make_gateway: GatewayFactory) -> Env:
    return await make_gateway()


class Peers:
    """Purpose-built backends of one test, all closed when it ends."""

    def __init__(self) -> None:
        self.started: list[RawBackend | RecordingBackend] = []
        self.servers: list[asyncio.Server] = []

    def adopt(self, server: asyncio.Server) -> asyncio.Server:
        """Close this server (e.g. an echo backend) with the test's other peers."""
        self.servers.append(server)
        return server

    async def recording(self, path: str = "", **serve_kwargs: object) -> RecordingBackend:
        backend = await RecordingBackend().start(path, **serve_kwargs)
        self.started.append(backend)
        return backend

    async def raw(self, make_handler: Callable[[RawBackend], RawHandler]) -> RawBackend:
        """`make_handler(backend)` returns the per-connection handler; it may call
        `backend.handshake(reader)` to read the gateway's upgrade request."""
        backend = RawBackend(make_handler)  # type: ignore[arg-type]
        backend.handler = make_handler(backend)
        await backend.start()
        self.started.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.started:
            backend.close()
        for server in self.servers:
            server.close()
        servers = [b.server for b in self.started if b.server is not None] + self.servers
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)  # type: ignore[union-attr]


@pytest.fixture
async def peers(make_gateway: GatewayFactory) -> AsyncIterator[Peers]:
    """Depends on make_gateway so that the peers close first and the gateway's legs end
    promptly instead of waiting out the stop grace period."""
    backends = Peers()
    yield backends
    await backends.close()


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> object:
    """Fail the test if the gateway (or asyncio on its behalf) logged an error or a stack
    trace: refusals and misbehaving peers are expected, crashes are not."""
    caplog.set_level(logging.INFO, logger="wsgw")
    yield caplog
    for when in ("setup", "call", "teardown"):
        for record in caplog.get_records(when):  # type: ignore[arg-type]
            ours = record.name.startswith(("wsgw", "asyncio"))
            bad = record.exc_info is not None or record.levelno >= logging.ERROR
            assert not (ours and bad), f"{record.name}: {record.getMessage()}"
