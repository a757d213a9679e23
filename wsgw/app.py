"""Builds the running gateway from its config: listeners, admin server, reloads, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from pathlib import Path

from wsgw import _core
from wsgw.config import load_config, load_subscriptions
from wsgw.config.models import GatewayConfig
from wsgw.errors import ConfigError, GatewayError, MethodNotAllowed, NotFound
from wsgw.http import Request, RequestReader, error_response, json_response
from wsgw.oauth.endpoint import handle_token_request
from wsgw.oauth.keys import load_signing_key
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline.analytics import Stats
from wsgw.pipeline.relay import ClientLeg
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry

log = logging.getLogger("wsgw")

RELOAD_INTERVAL_S = 1.0


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.routes = RouteTable(config)
        self.subscriptions_path = Path(config.gateway.subscriptions_file)
        self._subscriptions_mtime = self._mtime()
        self.registry = SubscriptionRegistry(
            config, load_subscriptions(self.subscriptions_path, config)
        )
        key_file = Path(config.security.signing_key_file)
        if not key_file.exists():
            raise ConfigError(
                [f"{key_file}: signing key not found: run `wsgw keys init -c <config>` first"]
            )
        signing_key = load_signing_key(key_file)
        self.issuer = TokenIssuer(signing_key, config.security.issuer, config.security.token_ttl_s)
        self.verifier = TokenVerifier(signing_key, config.security.issuer)
        self.backend_ssl = _backend_ssl_context(config)
        self.connections: set[ClientLeg] = set()
        self.stats = Stats()
        self._servers: list[asyncio.Server] = []
        self._reloader: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- start
    async def start(self) -> None:
        gw = self.config.gateway
        host, port = split_host_port(gw.listen)
        self._servers.append(
            await self.loop.create_server(lambda: ClientLeg(self, False), host, port, backlog=1024)
        )
        if gw.tls is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(gw.tls.cert_file, gw.tls.key_file)
            host, port = split_host_port(gw.tls.listen)
            self._servers.append(
                await self.loop.create_server(
                    lambda: ClientLeg(self, True), host, port, ssl=tls_context, backlog=1024
                )
            )
        host, port = split_host_port(gw.admin_listen)
        self._servers.append(await self.loop.create_server(lambda: AdminProtocol(self), host, port))
        self._reloader = self.loop.create_task(self._watch_subscriptions())
        log.info(
            "wsgw listening on ws://%s%s, admin http://%s, %d APIs, core=%s",
            self.address,
            f" and wss://{gw.tls.listen}" if gw.tls else "",
            self.admin_address,
            len(self.config.apis),
            _core.IMPLEMENTATION,
        )

    @property
    def address(self) -> str:
        return _address(self._servers[0])

    @property
    def tls_address(self) -> str | None:
        return _address(self._servers[1]) if self.config.gateway.tls else None

    @property
    def admin_address(self) -> str:
        return _address(self._servers[-1])

    # ------------------------------------------------------------------ stop
    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, close open connections with 1001 on both sides, wait (bounded)."""
        for server in self._servers:
            server.close()
        if self._reloader is not None:
            self._reloader.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.loop.time() + grace_s
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # ---------------------------------------------------------- subscriptions
    def _mtime(self) -> int:
        try:
            return self.subscriptions_path.stat().st_mtime_ns
        except OSError:
            return 0

    async def _watch_subscriptions(self) -> None:
        """The developer portal commands edit the subscriptions file; pick their changes up.
        A bad file is reported and the last good one stays in force."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            mtime = self._mtime()
            if mtime == self._subscriptions_mtime:
                continue
            self._subscriptions_mtime = mtime
            self.reload_subscriptions()

    def reload_subscriptions(self) -> bool:
        try:
            subs = load_subscriptions(self.subscriptions_path, self.config)
        except ConfigError as err:
            log.error("subscriptions not reloaded, keeping the previous ones:\n%s", err)
            return False
        self.registry = SubscriptionRegistry(self.config, subs)
        log.info("subscriptions reloaded: %d applications", len(subs.applications))
        return True

    # ----------------------------------------------------------------- oauth
    def token_endpoint(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {name: value for name, value in request.headers.items}
        return handle_token_request(
            request.method, headers, request.body, self.registry.lookup_client, self.issuer
        )

    def health(self) -> dict[str, object]:
        return {"status": "ok", "connections": len(self.connections), "core": _core.IMPLEMENTATION}


class AdminProtocol(asyncio.Protocol):
    """The admin port: GET /health (and /stats). One request per connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.reader = RequestReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            request = self.reader.feed(data)
            if request is None:
                return
            self.transport.write(self._answer(request))
        except GatewayError as err:
            self.transport.write(error_response(err))
        self.transport.close()

    def _answer(self, request: Request) -> bytes:
        if request.method != "GET":
            raise MethodNotAllowed("use GET")
        if request.path == "/health":
            return json_response(200, self.gw.health())
        if request.path == "/stats":
            stats = self.gw.stats
            return json_response(
                200,
                {
                    "connections_active": stats.active,
                    "outcomes": {f"{a} {o}": n for (a, o), n in stats.outcomes.items()},
                    "close_codes": {
                        f"{a} {c} {b}": n for (a, c, b), n in stats.close_codes.items()
                    },
                },
            )
        raise NotFound("no such admin resource")


def _address(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _backend_ssl_context(config: GatewayConfig) -> ssl.SSLContext:
    tls = config.gateway.backend_tls
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def serve(config: GatewayConfig, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config)
    await gateway.start()
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: closing %d connections", len(gateway.connections))
    await gateway.stop()
    log.info("stopped")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args) -> int:  # noqa: ANN001
    import uvloop

    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        uvloop.run(serve(config))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the port is taken
        print(f"wsgw: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0

