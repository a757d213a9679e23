"""The composition root: config → the runtime bundle (wsgw/services.py), listeners,
subscription reloads, shutdown. Nothing below this module imports it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from wsgw import _core
from wsgw.admin import AdminConnections, AdminProtocol
from wsgw.config import load_config, load_subscriptions
from wsgw.config.models import GatewayConfig, Subscriptions
from wsgw.errors import ConfigError
from wsgw.fdlimits import FdBudget, raise_nofile_limit
from wsgw.http import Request
from wsgw.logs import Throttled
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.keys import load_signing_key
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline.accept import REQUEST_TIMEOUT_S, HttpLeg
from wsgw.pipeline.deadlines import Deadlines
from wsgw.pipeline.listener import ListenerLimits
from wsgw.pipeline.pending import PendingConnections
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle
from wsgw.plain_http import token_exchange
from wsgw.services import Services

log = logging.getLogger("wsgw")

RELOAD_INTERVAL_S = 1.0
REFUSAL_LOG_INTERVAL_S = 10.0


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def gateway_signing_key(config: GatewayConfig):  # noqa: ANN201
    key_file = Path(config.security.signing_key_file)
    if not key_file.exists():
        raise ConfigError(
            [f"{key_file}: signing key not found: run `wsgw keys init -c <config>` first"]
        )
    return load_signing_key(key_file)


class Gateway:
    def __init__(self, config: GatewayConfig, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        gw = config.gateway
        self.subscriptions_path = Path(gw.subscriptions_file)
        self._subscriptions_mtime = self._mtime()
        subscriptions = load_subscriptions(self.subscriptions_path, config)
        signing_key = gateway_signing_key(config)
        analytics = config.analytics
        telemetry = Telemetry(
            events_file=analytics.events_file,
            redis_url=gw.redis_url,
            redis_stream=analytics.redis_stream,
            stream_maxlen=analytics.stream_maxlen,
            buffer_events=analytics.buffer_events,
            api_labels=_api_labels(config),
            application_labels=[app.name for app in subscriptions.applications],
        )
        self.cluster = None
        if gw.redis_url is not None:
            from wsgw.pipeline.cluster import ClusterLimits

            self.cluster = ClusterLimits(gw.redis_url, gw.redis_failure)
            telemetry.add_collector(self.cluster.collect)
        token_guard = TokenGuard.from_config(config.security.token_failures)
        # Limits at the listeners: descriptors, pending connections per address, admin port.
        listener = ListenerLimits(
            FdBudget(gw.max_admin_connections),
            PendingConnections(gw.max_pending_per_address),
            Throttled(log, REFUSAL_LOG_INTERVAL_S),
        )
        self.admin = AdminConnections(gw.max_admin_connections)
        for collect in (
            token_guard.collect,
            listener.fds.collect,
            listener.pending.collect,
            self.admin.collect,
        ):
            telemetry.add_collector(collect)
        self._background: set[asyncio.Task[object]] = set()
        self.services = Services(
            loop=self.loop,
            settings=gw,
            routes=RouteTable(config),
            verifier=TokenVerifier(signing_key, config.security.issuer),
            issuer=TokenIssuer(signing_key, config.security.issuer, config.security.token_ttl_s),
            registry=SubscriptionRegistry(config, subscriptions),
            throttle=Throttle(self.cluster),
            telemetry=telemetry,
            token_guard=token_guard,
            deadlines=Deadlines(self.loop),
            backend_tls=_backend_ssl_context(config),
            listener=listener,
            connections=set(),
            spawn=self.spawn,
        )
        self._servers: list[asyncio.Server] = []
        self._reloader: asyncio.Task[None] | None = None

    def current_services(self) -> Services:
        """The bundle a request arriving now is judged by (a reload swaps it)."""
        return self.services

    # What tests and tools read of the running gateway: the current bundle's parts.
    @property
    def connections(self) -> set[Any]:
        return self.services.connections

    @property
    def registry(self) -> SubscriptionRegistry:
        return self.services.registry

    @property
    def issuer(self) -> TokenIssuer:
        return self.services.issuer

    @property
    def telemetry(self) -> Telemetry:
        return self.services.telemetry

    @property
    def pending(self) -> PendingConnections:
        return self.services.listener.pending

    @property
    def fds(self) -> FdBudget:
        return self.services.listener.fds

    @property
    def admin_connections(self) -> dict[AdminProtocol, None]:
        return self.admin.open

    # ----------------------------------------------------------------- start
    async def start(self, *, reuse_port: bool = False) -> None:
        gw = self.config.gateway
        raise_nofile_limit()  # logs the figures when it raises the soft limit
        self.fds.refresh()
        await self.telemetry.start()
        if self.cluster is not None:
            await self.cluster.start()
        # Each listener hands every new connection the bundle current at its accept.
        host, port = split_host_port(gw.listen)
        self._servers.append(
            await self.loop.create_server(
                lambda: HttpLeg(self.current_services, False),
                host,
                port,
                backlog=1024,
                reuse_port=reuse_port,
            )
        )
        if gw.tls is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(gw.tls.cert_file, gw.tls.key_file)
            host, port = split_host_port(gw.tls.listen)
            self._servers.append(
                await self.loop.create_server(
                    lambda: HttpLeg(self.current_services, True),
                    host,
                    port,
                    ssl=tls_context,
                    # A TLS handshake holds its fd before the accept check and the pending
                    # cap see the connection: bound it like a request (uvloop's default: 60 s).
                    ssl_handshake_timeout=REQUEST_TIMEOUT_S,
                    backlog=1024,
                    reuse_port=reuse_port,
                )
            )
        host, port = split_host_port(gw.admin_listen)
        if port:
            port += self.worker  # each worker has its own admin port, scraped alone
        self._servers.append(
            await self.loop.create_server(
                lambda: AdminProtocol(self.services, self.admin), host, port
            )
        )
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
        for admin in list(self.admin.open):
            admin.close("")
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
        if self._background:
            await asyncio.wait(self._background, timeout=1.0)
        if self.cluster is not None:
            await self.cluster.stop()
        await self.telemetry.stop()
        self.services.deadlines.close()
        self.fds.close()
        self.services.listener.refusals_log.flush()

    # ------------------------------------------------------------- helpers
    def spawn(self, coro) -> None:  # noqa: ANN001
        """Run a coroutine in the background, keeping a reference until it is done."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def token_endpoint(
        self, request: Request, peer: str | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """POST /oauth2/token as the gateway port answers it (plain_http.token_exchange)."""
        return token_exchange(self.services, request, peer)

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
        """A new bundle with the new registry; open connections keep the one they have."""
        try:
            subs = load_subscriptions(self.subscriptions_path, self.config)
        except ConfigError as err:
            log.error("subscriptions not reloaded, keeping the previous ones:\n%s", err)
            return False
        self.services = replace(self.services, registry=SubscriptionRegistry(self.config, subs))
        self.telemetry.set_labels(_api_labels(self.config), _application_labels(subs))
        log.info("subscriptions reloaded: %d applications", len(subs.applications))
        return True


def _api_labels(config: GatewayConfig) -> list[tuple[str, str]]:
    return [(api.name, api.version) for api in config.apis]


def _application_labels(subscriptions: Subscriptions) -> list[str]:
    return [app.name for app in subscriptions.applications]


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


async def serve(
    config: GatewayConfig,
    ready: asyncio.Event | None = None,
    *,
    worker: int = 0,
    reuse_port: bool = False,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, worker=worker)
    await gateway.start(reuse_port=reuse_port)
    # What is loaded now lives as long as the process: keep the collector off it, and
    # collect the young generation less often (every connection allocates a few hundred
    # short-lived objects; the relay itself allocates none per frame).
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
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


def run_gateway(config: GatewayConfig, worker: int = 0, reuse_port: bool = False) -> int:
    import uvloop

    try:
        uvloop.run(serve(config, worker=worker, reuse_port=reuse_port))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the port is taken
        print(f"wsgw: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args) -> int:  # noqa: ANN001
    from wsgw.workers import check_workers, run_workers

    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        # Fail before forking: a missing key or a bad subscriptions file is one message.
        load_subscriptions(config.gateway.subscriptions_file, config)
        gateway_signing_key(config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    problem = check_workers(config, args.workers)
    if problem is not None:
        print(f"wsgw serve: {problem}", file=sys.stderr)
        return 2
    if args.workers == 1:
        return run_gateway(config)
    return run_workers(config, args.workers, lambda i: run_gateway(config, i, reuse_port=True))
