"""Builds the running gateway from its config: listeners, admin server, reloads, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

from wsgw import _core
from wsgw.config import load_config, load_subscriptions
from wsgw.config.models import GatewayConfig
from wsgw.errors import (
    ConfigError,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from wsgw.fdlimits import FdBudget, raise_nofile_limit
from wsgw.http import Request, RequestReader, error_response, json_response, render_response
from wsgw.logs import Throttled
from wsgw.oauth.endpoint import handle_token_request
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.keys import load_signing_key
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline import metrics
from wsgw.pipeline.deadlines import Deadlines
from wsgw.pipeline.pending import PendingConnections
from wsgw.pipeline.relay import REQUEST_TIMEOUT_S, ClientLeg
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle

log = logging.getLogger("wsgw")

RELOAD_INTERVAL_S = 1.0
# An admin connection has as long as a gateway-port one to send its request, and its answer
# must be read within the same time (from the accept): a scraper that stops reading is cut.
ADMIN_REQUEST_TIMEOUT_S = REQUEST_TIMEOUT_S
ADMIN_CLOSE_REASONS = ("timeout", "evicted", "over_cap")
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
        self.routes = RouteTable(config)
        self.subscriptions_path = Path(config.gateway.subscriptions_file)
        self._subscriptions_mtime = self._mtime()
        subscriptions = load_subscriptions(self.subscriptions_path, config)
        self.registry = SubscriptionRegistry(config, subscriptions)
        signing_key = gateway_signing_key(config)
        self.issuer = TokenIssuer(signing_key, config.security.issuer, config.security.token_ttl_s)
        self.verifier = TokenVerifier(signing_key, config.security.issuer)
        self.backend_ssl = _backend_ssl_context(config)
        self.connections: set[ClientLeg] = set()
        self.deadlines = Deadlines(self.loop)
        analytics = config.analytics
        self.telemetry = Telemetry(
            events_file=analytics.events_file,
            redis_url=config.gateway.redis_url,
            redis_stream=analytics.redis_stream,
            stream_maxlen=analytics.stream_maxlen,
            buffer_events=analytics.buffer_events,
            api_labels=[(api.name, api.version) for api in config.apis],
            application_labels=[app.name for app in subscriptions.applications],
        )
        self.cluster = None
        if config.gateway.redis_url is not None:
            from wsgw.pipeline.cluster import ClusterLimits

            self.cluster = ClusterLimits(config.gateway.redis_url, config.gateway.redis_failure)
            self.telemetry.add_collector(self.cluster.collect)
        self.throttle = Throttle(self.cluster)
        self.token_guard = TokenGuard.from_config(config.security.token_failures)
        self.telemetry.add_collector(self.token_guard.collect)
        # Limits at the listeners: descriptors, pending connections per address, admin port.
        self.fds = FdBudget(config.gateway.max_admin_connections)
        self.pending = PendingConnections(config.gateway.max_pending_per_address)
        self.admin_connections: dict[AdminProtocol, None] = {}  # oldest first
        self.admin_closed = dict.fromkeys(ADMIN_CLOSE_REASONS, 0)
        self.refusals_log = Throttled(log, REFUSAL_LOG_INTERVAL_S)
        self.telemetry.add_collector(self.fds.collect)
        self.telemetry.add_collector(self.pending.collect)
        self.telemetry.add_collector(self._admin_metrics)
        self._background: set[asyncio.Task[object]] = set()
        self._servers: list[asyncio.Server] = []
        self._reloader: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- start
    async def start(self, *, reuse_port: bool = False) -> None:
        gw = self.config.gateway
        raise_nofile_limit()  # logs the figures when it raises the soft limit
        self.fds.refresh()
        await self.telemetry.start()
        if self.cluster is not None:
            await self.cluster.start()
        host, port = split_host_port(gw.listen)
        self._servers.append(
            await self.loop.create_server(
                lambda: ClientLeg(self, False), host, port, backlog=1024, reuse_port=reuse_port
            )
        )
        if gw.tls is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(gw.tls.cert_file, gw.tls.key_file)
            host, port = split_host_port(gw.tls.listen)
            self._servers.append(
                await self.loop.create_server(
                    lambda: ClientLeg(self, True),
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
        for admin in list(self.admin_connections):
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
        self.deadlines.close()
        self.fds.close()
        self.refusals_log.flush()

    # ------------------------------------------------------- listener limits
    def admit_client(self, leg: ClientLeg, transport: asyncio.BaseTransport) -> bool:
        """At accept, before a gateway-port connection costs anything more. False (the client
        answered and the connection closed at once) when file descriptors run short, or when
        its address already has gateway.max_pending_per_address connections not upgraded."""
        err: GatewayError
        if self.fds.short(transport):
            err = ServiceUnavailable("the gateway is at capacity: retry later")
        elif not self.pending.enter(leg, leg.peer):
            limit = self.pending.limit
            self.refusals_log.warning(
                "connections from %s refused: %d not upgraded yet "
                "(gateway.max_pending_per_address)",
                leg.peer,
                limit,
            )
            err = TooManyRequests(f"more than {limit} connections not upgraded from your address")
        else:
            return True
        transport.write(error_response(err))  # type: ignore[attr-defined]
        transport.close()
        return False

    def _admin_metrics(self) -> Iterator[tuple[str, str, str, dict[str, str], float]]:
        yield (
            "wsgw_admin_connections",
            "gauge",
            "Admin port connections open now",
            {},
            len(self.admin_connections),
        )
        for reason, n in self.admin_closed.items():
            yield (
                "wsgw_admin_connections_closed_total",
                "counter",
                "Admin connections the gateway closed: timeout (no request, or its answer not "
                "read, in time), evicted (the oldest without a request, to make room at "
                "gateway.max_admin_connections), over_cap (503: none could make room)",
                {"reason": reason},
                n,
            )

    # ------------------------------------------------------------- helpers
    def spawn(self, coro) -> None:  # noqa: ANN001
        """Run a coroutine in the background, keeping a reference until it is done."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def api_tier(self, api):  # noqa: ANN001, ANN201
        """The tier of an API's own policy (`apis[].throttle`), if any."""
        return self.config.tiers[api.throttle] if api.throttle is not None else None

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
        self.telemetry.set_labels(
            [(api.name, api.version) for api in self.config.apis],
            [app.name for app in subs.applications],
        )
        log.info("subscriptions reloaded: %d applications", len(subs.applications))
        return True

    # ----------------------------------------------------------------- oauth
    def token_endpoint(
        self, request: Request, peer: str | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """``peer``: the client's IP address, for the per-address failure limit (None: only
        the per-client-id limit applies)."""
        headers = {name: value for name, value in request.headers.items}
        return handle_token_request(
            request.method,
            headers,
            request.body,
            self.registry.lookup_client,
            self.issuer,
            guard=self.token_guard,
            address=peer,
            on_failure=self.telemetry.token_failure,
        )

    def health(self) -> dict[str, object]:
        return {"status": "ok", "connections": len(self.connections), "core": _core.IMPLEMENTATION}


class AdminProtocol(asyncio.Protocol):
    """The admin port: GET /health, /metrics, /stats. One request per connection.

    The request must arrive, and its answer be read, within ADMIN_REQUEST_TIMEOUT_S of the
    accept (on the deadlines wheel: no timer per connection). At most
    gateway.max_admin_connections are open at once: at the cap, the oldest connection that
    has not sent its request is closed to make room, so idle connections cannot lock a
    health check out; when none can make room, the new connection gets 503."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.reader: RequestReader | None = RequestReader()  # None once the request is in
        self.transport: asyncio.Transport | None = None
        self.deadline_slot = -1  # see deadlines.py

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        gw = self.gw
        open_now = len(gw.admin_connections)
        if open_now >= gw.config.gateway.max_admin_connections and not self._make_room():
            gw.admin_closed["over_cap"] += 1
            gw.refusals_log.warning(
                "admin port: %d connections open, all with a request: new ones get 503 "
                "(gateway.max_admin_connections)",
                open_now,
            )
            self.reader = None
            refusal = error_response(ServiceUnavailable("too many admin connections"))
            transport.write(refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        gw.admin_connections[self] = None
        gw.deadlines.arm(self, ADMIN_REQUEST_TIMEOUT_S)

    def _make_room(self) -> bool:
        gw = self.gw
        for conn in gw.admin_connections:  # oldest first; at most the cap
            if conn.reader is not None:
                gw.refusals_log.warning(
                    "admin port: %d connections open (gateway.max_admin_connections): closing "
                    "the oldest that has not sent its request",
                    len(gw.admin_connections),
                )
                conn.close("evicted")
                return True
        return False

    def close(self, reason: str) -> None:
        """Drop the connection now (counted under `reason` unless empty)."""
        gw = self.gw
        if reason:
            gw.admin_closed[reason] += 1
        gw.admin_connections.pop(self, None)
        gw.deadlines.disarm(self)
        if self.transport is not None:
            self.transport.abort()

    def deadline_reached(self) -> None:
        # No complete request in time, or an answer the client does not read.
        log.debug("admin connection timed out")
        self.close("timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.gw.admin_connections.pop(self, None)
        self.gw.deadlines.disarm(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.reader is None:
            return  # answered (or refused): the rest is ignored
        try:
            request = self.reader.feed(data)
            if request is None:
                return
            response = self._answer(request)
        except GatewayError as err:
            response = error_response(err)
        self.reader = None
        self.transport.write(response)
        self.transport.close()

    def _answer(self, request: Request) -> bytes:
        if request.method != "GET":
            raise MethodNotAllowed("use GET")
        if request.path == "/health":
            return json_response(200, self.gw.health())
        if request.path == "/metrics":
            return render_response(
                200, [("Content-Type", metrics.CONTENT_TYPE)], self.gw.telemetry.metrics_text()
            )
        if request.path == "/stats":
            return json_response(200, self.gw.telemetry.stats())
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
