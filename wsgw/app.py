"""The composition root: config → the runtime bundle (wsgw/services.py), listeners, live
operations (reloads, revocations, closes), drain and shutdown. Nothing below this module
imports it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
import time
from dataclasses import replace
from typing import Any

from wsgw import _core, drain, logs
from wsgw.admin import AdminConnections, AdminProtocol, load_admin_token
from wsgw.config import load_config
from wsgw.config.loader import display_path
from wsgw.config.models import GatewayConfig, Subscriptions
from wsgw.errors import ConfigError
from wsgw.fdlimits import FdBudget, raise_nofile_limit
from wsgw.http import Request
from wsgw.logs import Throttled
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.revocation import Revocation, RevocationList, load_revocations, record_revocations
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline.accept import REQUEST_TIMEOUT_S, HttpLeg
from wsgw.pipeline.deadlines import Deadlines
from wsgw.pipeline.flow import OPEN
from wsgw.pipeline.listener import ListenerLimits
from wsgw.pipeline.pending import PendingConnections
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle
from wsgw.plain_http import token_exchange
from wsgw.reload import Files, FileWatch, keep_restart_only, load_files
from wsgw.services import RuntimeState, Services
from wsgw.workers import check_workers

log = logging.getLogger("wsgw")

WATCH_INTERVAL_S = 0.25  # how often the files' signatures are compared
PERSIST_INTERVAL_S = 1.0  # revocations made here are written at most this often
SECOND_SIGNAL_S = 1.0  # a SIGTERM this soon after the first is the same one, delivered twice
PRUNE_INTERVAL_S = 60.0  # revocations whose tokens have all expired are forgotten
REFUSAL_LOG_INTERVAL_S = 10.0


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        worker: int = 0,
        workers: int = 1,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """`config_path`: the file `config` was loaded from, read again now (a worker the
        supervisor restarts gets what is on disk, with the supervisor's listeners) and by
        every reload; without one, the subscriptions and the key are read against
        `config`. `workers`: how many processes share the port (a reload that they could
        not enforce alone is refused, as `wsgw serve` refuses it at start)."""
        self.worker = worker
        self.workers = workers
        self.config_path = os.fspath(config_path) if config_path is not None else None
        self.loop = asyncio.get_running_loop()
        self.config = config
        # Signatures first, then the read: a change in between is seen by the watch.
        self._files = FileWatch(self._reloaded_files())
        self._revocation_file = FileWatch([config.security.revocations_file])
        files = load_files(self.config_path, config)
        config, _ = keep_restart_only(config, files.config)
        self.config = config
        self._files.retarget(self._reloaded_files())
        gw = config.gateway
        analytics = config.analytics
        telemetry = Telemetry(
            events_file=analytics.events_file,
            redis_url=gw.redis_url,
            redis_stream=analytics.redis_stream,
            stream_maxlen=analytics.stream_maxlen,
            buffer_events=analytics.buffer_events,
            api_labels=_api_labels(config),
            application_labels=_application_labels(files.subscriptions),
        )
        self.cluster = None
        self.events = None
        if gw.redis_url is not None:
            from wsgw.pipeline.cluster import ClusterLimits
            from wsgw.pipeline.cluster.events import ClusterEvents

            self.cluster = ClusterLimits(
                gw.redis_url, gw.redis_failure, key_prefix=f"{gw.redis_prefix}:"
            )
            telemetry.add_collector(self.cluster.collect)
            self.events = ClusterEvents(
                gw.redis_url,
                on_revocations=self.revoked_elsewhere,
                on_close=self.close_asked,
                prefix=gw.redis_prefix,
            )
            telemetry.add_collector(self.events.collect)
        token_guard = TokenGuard.from_config(config.security.token_failures)
        # Limits at the listeners: descriptors, pending connections per address, admin port.
        listener = ListenerLimits(
            FdBudget(gw.max_admin_connections),
            PendingConnections(gw.max_pending_per_address),
            Throttled(log, REFUSAL_LOG_INTERVAL_S),
        )
        self.admin = AdminConnections(gw.max_admin_connections)
        state = RuntimeState(last_reload_success=time.time())
        for collect in (
            token_guard.collect,
            listener.fds.collect,
            listener.pending.collect,
            self.admin.collect,
            state.collect,
        ):
            telemetry.add_collector(collect)
        self._background: set[asyncio.Task[object]] = set()
        revocations = RevocationList(self._read_revocations(config))
        revocations.prune(time.time())
        self.services = Services(
            loop=self.loop,
            settings=gw,
            routes=RouteTable(config),
            verifier=TokenVerifier(files.signing_key, config.security.issuer),
            issuer=TokenIssuer(
                files.signing_key, config.security.issuer, config.security.token_ttl_s
            ),
            registry=SubscriptionRegistry(config, files.subscriptions),
            throttle=Throttle(self.cluster),
            telemetry=telemetry,
            token_guard=token_guard,
            deadlines=Deadlines(self.loop),
            backend_tls=files.backend_tls,
            listener=listener,
            connections=set(),
            relayed={},
            spawn=self.spawn,
            revocations=revocations,
            state=state,
            operations=self,
            admin_token=load_admin_token(gw.admin_token_file) if gw.admin_token_file else None,
        )
        self._servers: list[asyncio.Server] = []
        self._gateway_servers: list[asyncio.Server] = []
        self._watcher: asyncio.Task[None] | None = None
        self._reuse_port = False
        self._drain: asyncio.Task[None] | None = None
        self._drain_began = 0.0
        self._unwritten: list[Revocation] = []  # made here, not yet in the file
        self._revoke_pass: asyncio.Handle | None = None
        self.finished = asyncio.Event()  # set once stop() is done (serve waits on it)

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
    def relayed(self) -> dict[int, Any]:
        return self.services.relayed

    @property
    def state(self) -> RuntimeState:
        return self.services.state

    @property
    def revocations(self) -> RevocationList:
        return self.services.revocations

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
        self._reuse_port = reuse_port
        raise_nofile_limit()  # logs the figures when it raises the soft limit
        self.fds.refresh()
        await self.telemetry.start()
        if self.cluster is not None:
            await self.cluster.start()
        if self.events is not None:
            await self.events.start()
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
        self._gateway_servers = list(self._servers)
        host, port = split_host_port(gw.admin_listen)
        if port:
            port += self.worker  # each worker has its own admin port, scraped alone
        self._servers.append(
            await self.loop.create_server(
                lambda: AdminProtocol(self.current_services(), self.admin), host, port
            )
        )
        self._watcher = self.loop.create_task(self._watch())
        if reuse_port:
            _warn_without_request_migration()
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
        if self._watcher is not None:
            self._watcher.cancel()
        if self._revoke_pass is not None:
            self._revoke_pass.cancel()
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
        if self._unwritten:  # revocations made in the last second: written before exit
            entries, self._unwritten = self._unwritten, []
            path = self.config.security.revocations_file
            with contextlib.suppress(ConfigError, OSError):
                await self.loop.run_in_executor(
                    None, record_revocations, path, entries, time.time()
                )
        if self._background:
            await asyncio.wait(self._background, timeout=1.0)
        if self.events is not None:
            await self.events.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.telemetry.stop()
        self.services.deadlines.close()
        self.fds.close()
        self.services.listener.refusals_log.flush()
        self.finished.set()

    # ----------------------------------------------------------------- drain
    def terminate(self) -> None:
        """SIGTERM: the first one drains (unless there is nothing to wait for), a second
        one stops at once. A second one within a second is the same SIGTERM delivered
        twice (systemd signals every process of the unit, and the supervisor passes it on
        too): it does not end the drain."""
        gw = self.config.gateway
        if self._drain is None and (gw.drain_s > 0 or gw.drain_close_window_s > 0):
            self.begin_drain("SIGTERM")
        elif self._drain is None or self.loop.time() - self._drain_began >= SECOND_SIGNAL_S:
            self.begin_stop()

    def begin_drain(self, trigger: str) -> dict[str, Any]:
        """/health says 503 from now on and new upgrades are refused; open connections keep
        working for drain_s, then the rest are closed over drain_close_window_s; then the
        gateway stops. With SO_REUSEPORT the listeners close at once: the kernel gives new
        connections to the other processes on the port."""
        gw = self.config.gateway
        if self._drain is None:
            log.info(
                "%s: draining %d connections (drain_s %g, then closing over %gs)",
                trigger,
                self._relayed(),
                gw.drain_s,
                gw.drain_close_window_s,
            )
            self.state.draining = True
            self._drain_began = self.loop.time()
            if self._reuse_port:
                # The kernel gives new connections to the other processes on the port;
                # those accepted here already are served, their upgrade included.
                for server in self._gateway_servers:
                    server.close()
            else:
                self.state.refusing_upgrades = True
            self._drain = self.loop.create_task(self._drain_then_stop())
        return {"status": "draining", "connections": self._relayed()}

    async def _drain_then_stop(self) -> None:
        gw = self.config.gateway
        deadline = self.loop.time() + gw.drain_s
        while self._waited_for() and self.loop.time() < deadline:
            await asyncio.sleep(min(0.1, max(deadline - self.loop.time(), 0.0)))
        legs = list(self.relayed.values())
        if legs:
            log.info("drain: closing %d connections over %gs", len(legs), gw.drain_close_window_s)
        await drain.close_spread(
            legs, gw.drain_close_window_s, lambda leg: leg.shutdown("gateway draining")
        )
        await self._stop_then_finish(grace_s=gw.close_timeout_s)

    async def _stop_then_finish(self, grace_s: float = 5.0) -> None:
        try:
            await self.stop(grace_s)
        finally:  # serve() waits for this: a failing stop must still let the process exit
            self.finished.set()

    def begin_stop(self) -> None:
        """SIGINT, or a second SIGTERM: close everyone now (1001) and stop."""
        if self._drain is not None:
            self._drain.cancel()
        self._drain = self.loop.create_task(self._stop_now())

    async def _stop_now(self) -> None:
        log.info("shutting down: closing %d connections", len(self.connections))
        await self._stop_then_finish()

    def _waited_for(self) -> int:
        """What the drain waits for: the relayed connections; with SO_REUSEPORT (the
        listeners closed, nothing new arrives) every connection, a handshake under way too."""
        return len(self.connections) if self._reuse_port else self._relayed()

    def _relayed(self) -> int:
        return len(self.relayed)

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

    # ---------------------------------------------------------------- reload
    def _reloaded_files(self) -> list[str]:
        config = self.config
        paths = [config.gateway.subscriptions_file, config.security.signing_key_file]
        return [self.config_path, *paths] if self.config_path is not None else paths

    async def _watch(self) -> None:
        """Poll the files' signatures: a change reloads (the revocation list alone merges)."""
        next_prune = self.loop.time() + PRUNE_INTERVAL_S
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                if self.config.gateway.watch_files and self._files.changed():
                    self.reload("a file changed")
                # Always: the CLI's revocations reach a gateway without Redis only this way.
                if self._revocation_file.changed():
                    self._merge_revocations(self._read_revocations(self.config), publish=False)
                if self.loop.time() >= next_prune:
                    next_prune = self.loop.time() + PRUNE_INTERVAL_S
                    self.revocations.prune(time.time())
            except Exception:  # a bug in one pass must not stop watching for good
                log.exception("file watch: pass failed; watching on")

    def reload(self, trigger: str) -> dict[str, Any]:
        """Read the files again; if they validate together, build a new bundle from them
        and judge every open connection by it (live.py); if not, keep what runs."""
        state = self.state
        try:
            files = load_files(self.config_path, self.config)
        except ConfigError as err:
            state.reloads["failed"] += 1
            state.last_reload_ok = False
            state.reload_errors = list(err.problems)
            log.error("%s: not reloaded, keeping the running config:\n%s", trigger, err)
            return {"result": "failed", "errors": err.problems}
        config, restart_needed = keep_restart_only(self.config, files.config)
        problem = check_workers(config, self.workers)
        if problem is not None:  # the limits would be N times too wide
            problems = [f"{display_path(self.config_path or 'wsgw.yaml')}: {problem}"]
            state.reloads["failed"] += 1
            state.last_reload_ok = False
            state.reload_errors = problems
            log.error("%s: not reloaded, keeping the running config:\n%s", trigger, problems[0])
            return {"result": "failed", "errors": problems}
        for name in restart_needed:
            log.warning("%s: %s changed: a restart is needed to apply it", trigger, name)
        try:
            self._apply(replace(files, config=config))
        except Exception:  # a bug: the running bundle stays, as for a bad file
            log.exception("%s: not reloaded, keeping the running config", trigger)
            state.reloads["failed"] += 1
            state.last_reload_ok = False
            state.reload_errors = ["internal error while applying the files (see the log)"]
            return {"result": "failed", "errors": state.reload_errors}
        state.reloads["ok"] += 1
        state.last_reload_ok = True
        state.reload_errors = []
        state.restart_needed = restart_needed
        state.last_reload_success = time.time()
        state.config_generation += 1
        self._merge_revocations(self._read_revocations(config), publish=False)
        ended = self._recheck_all()
        log.info(
            "%s: reloaded: %d APIs, %d applications; %d open connections ended",
            trigger,
            len(config.apis),
            len(files.subscriptions.applications),
            ended,
        )
        return {
            "result": "ok",
            "generation": state.config_generation,
            "restart_needed": restart_needed,
            "connections_ended": ended,
        }

    def _apply(self, files: Files) -> None:
        """The new bundle, built whole before anything is replaced."""
        config = files.config
        security = config.security
        services = replace(
            self.services,
            settings=config.gateway,
            routes=RouteTable(config),
            verifier=TokenVerifier(files.signing_key, security.issuer),
            issuer=TokenIssuer(files.signing_key, security.issuer, security.token_ttl_s),
            registry=SubscriptionRegistry(config, files.subscriptions),
            backend_tls=files.backend_tls,
        )
        self.config, self.services = config, services
        self._files.retarget(self._reloaded_files())
        self.telemetry.set_labels(_api_labels(config), _application_labels(files.subscriptions))

    def _recheck_all(self) -> int:
        return self._each_relayed("recheck")

    def _each_relayed(self, check: str) -> int:
        """`conn.<check>(services)` on every relayed connection; how many it ended. A bug
        on one connection is logged and the pass goes on: the others are judged all the same."""
        services = self.services
        ended = 0
        for conn in list(self.relayed.values()):
            try:
                ended += bool(getattr(conn, check)(services))
            except Exception:
                logs.throttled(log).error("%s failed on a connection: a bug", check)
                log.debug("%s failed", check, exc_info=True)
        return ended

    # ------------------------------------------------------------ revocations
    def _read_revocations(self, config: GatewayConfig) -> list[Revocation]:
        try:
            return load_revocations(config.security.revocations_file)
        except ConfigError as err:
            log.error("revocation list not read, keeping the one in force:\n%s", err)
            return []

    def revoke(self, entries: list[Revocation]) -> None:
        """Revocations made here (POST /oauth2/revoke): in force at once, told to the
        cluster, and written to the file in the background, at most once a second however
        many come (each write is a locked read, merge and fsync'd replace)."""
        now = time.time()
        new = self._merge_revocations([e for e in entries if e.expires_at >= now], publish=True)
        if not new:
            return
        if not self._unwritten:
            self.spawn(self._persist())
        self._unwritten.extend(new)

    async def _persist(self) -> None:
        await asyncio.sleep(PERSIST_INTERVAL_S)
        entries, self._unwritten = self._unwritten, []
        path = self.config.security.revocations_file
        try:
            await self.loop.run_in_executor(None, record_revocations, path, entries, time.time())
        except (ConfigError, OSError) as err:
            log.error("revocations in force but not written to %s: %s", path, err)

    def revoked_elsewhere(self, entries: list[Revocation]) -> None:
        """The cluster's revocations (another gateway, the CLI, a reconciliation)."""
        self._merge_revocations(entries, publish=False)

    def _merge_revocations(self, entries: list[Revocation], *, publish: bool) -> list[Revocation]:
        new = self.revocations.merge(entries)
        if not new:
            return new
        if publish and self.events is not None:
            self.events.publish_revocations(new)
        # Coalesced: a burst of revocations costs one pass over the open connections.
        if self._revoke_pass is None:
            self._revoke_pass = self.loop.call_soon(self._revocation_pass)
        return new

    def _revocation_pass(self) -> None:
        self._revoke_pass = None
        self._each_relayed("revoke_check")

    # ------------------------------------------------------ open connections
    def list_connections(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Snapshots of the relayed connections matching every filter (admin port)."""
        return [
            snap
            for conn in list(self.relayed.values())
            if conn.state == OPEN and _matches(snap := conn.snapshot(), filters)
        ]

    def close_connection(self, conn_id: int, code: int, reason: str) -> bool:
        conn = self.relayed.get(conn_id)
        return conn is not None and bool(conn.close_by_operator(code, reason))

    def close_connections(
        self, filters: dict[str, str], code: int, reason: str, *, cluster: bool = True
    ) -> int:
        """Close every relayed connection matching the filters, here and (with Redis) on
        every other gateway."""
        if cluster and self.events is not None:
            from wsgw.pipeline.cluster.events import CloseRequest

            self.events.publish_close(CloseRequest(dict(filters), code, reason))
        closed = 0
        for conn in list(self.relayed.values()):
            if conn.state == OPEN and _matches(conn.snapshot(), filters):
                closed += conn.close_by_operator(code, reason)
        return closed

    def close_asked(self, request: Any) -> None:
        """Another gateway's close request (cluster events)."""
        self.close_connections(request.filters, request.code, request.reason, cluster=False)


def _matches(snapshot: dict[str, Any], filters: dict[str, str]) -> bool:
    return all(str(snapshot.get(name)) == value for name, value in filters.items())


def _warn_without_request_migration() -> None:
    """Closing a listener in a SO_REUSEPORT group resets the connections in its accept
    queue, unless the kernel moves them to another listener of the group."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            enabled = f.read().strip() == "1"
    except OSError:
        return
    if not enabled:
        log.warning(
            "net.ipv4.tcp_migrate_req is 0: connections queued at this process when it "
            "drains are reset instead of moving to the other processes on the port; "
            "`sysctl -w net.ipv4.tcp_migrate_req=1` makes restarts lose nothing"
        )


def _api_labels(config: GatewayConfig) -> list[tuple[str, str]]:
    return [(api.name, api.version) for api in config.apis]


def _application_labels(subscriptions: Subscriptions) -> list[str]:
    return [app.name for app in subscriptions.applications]


def _address(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(
    config: GatewayConfig,
    ready: asyncio.Event | None = None,
    *,
    worker: int = 0,
    workers: int = 1,
    reuse_port: bool = False,
    config_path: str | os.PathLike[str] | None = None,
) -> None:
    """Run until stopped: SIGTERM drains (a second one, or SIGINT, stops at once), SIGHUP
    reloads the files."""
    loop = asyncio.get_running_loop()
    gateway = Gateway(config, worker=worker, workers=workers, config_path=config_path)
    await gateway.start(reuse_port=reuse_port)
    loop.add_signal_handler(signal.SIGTERM, gateway.terminate)
    loop.add_signal_handler(signal.SIGINT, gateway.begin_stop)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, "SIGHUP")
    # What is loaded now lives as long as the process: keep the collector off it, and
    # collect the young generation less often (every connection allocates a few hundred
    # short-lived objects; the relay itself allocates none per frame).
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    if ready is not None:
        ready.set()
    await gateway.finished.wait()
    log.info("stopped")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_gateway(
    config: GatewayConfig,
    worker: int = 0,
    reuse_port: bool = False,
    config_path: str | os.PathLike[str] | None = None,
    workers: int = 1,
) -> int:
    import uvloop

    try:
        uvloop.run(
            serve(
                config,
                worker=worker,
                workers=workers,
                reuse_port=reuse_port,
                config_path=config_path,
            )
        )
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the port is taken
        print(f"wsgw: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args) -> int:  # noqa: ANN001
    from wsgw.workers import run_workers

    configure_logging(args.log_level)
    try:
        # Fail before forking: a missing key or a bad subscriptions file is one message.
        config = load_files(args.config, load_config(args.config)).config
        if config.gateway.admin_token_file is not None:
            load_admin_token(config.gateway.admin_token_file)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    problem = check_workers(config, args.workers)
    if problem is not None:
        print(f"wsgw serve: {problem}", file=sys.stderr)
        return 2
    path = args.config
    if args.workers == 1:
        return run_gateway(config, reuse_port=args.reuse_port, config_path=path)
    n = args.workers
    return run_workers(
        config, n, lambda i: run_gateway(config, i, reuse_port=True, config_path=path, workers=n)
    )
