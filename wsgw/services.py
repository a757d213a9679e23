"""The runtime bundle: everything a connection may use, compiled from one config.

Built in one place (wsgw/app.py) and handed to each protocol when it is accepted; the
protocols never see the gateway object. A reload builds a new bundle (`replace`) and the
listeners hand the new one to new connections, while each open connection keeps the bundle
it was accepted under. The long-lived parts (telemetry, throttle, deadlines, the connection
registry, the listener limits) are the same objects in every bundle of a process.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from wsgw.config.models import Gateway as GatewaySettings
from wsgw.http import Request
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.revocation import RevocationList
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline.deadlines import Deadlines
from wsgw.pipeline.listener import ListenerLimits
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle
from wsgw.plain_http import GATEWAY_PORT


@dataclass(slots=True)
class RuntimeState:
    """The process's own state, which every bundle shares and /health reports."""

    draining: bool = False  # /health says 503
    refusing_upgrades: bool = False  # new upgrades get 503 (a drain without SO_REUSEPORT)
    config_generation: int = 1  # bumped by every reload that took effect
    last_reload_ok: bool = True
    last_reload_success: float = 0.0  # Unix time (the start counts as one)
    reload_errors: list[str] = field(default_factory=list)  # of the last failed reload
    restart_needed: list[str] = field(default_factory=list)  # settings a reload could not apply
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})

    def health(self) -> dict[str, Any]:
        return {
            "generation": self.config_generation,
            "last_reload": "ok" if self.last_reload_ok else "failed",
            "last_success": self.last_reload_success,
            "errors": self.reload_errors,
            "restart_needed": self.restart_needed,
        }

    def collect(self) -> Iterator[tuple[str, str, str, dict[str, str], float]]:
        for result, n in self.reloads.items():
            yield (
                "wsgw_config_reload_total",
                "counter",
                "Reloads of the config files (SIGHUP, a change on disk, POST /reload), by result",
                {"result": result},
                n,
            )
        yield (
            "wsgw_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the files now in force were loaded (Unix time)",
            {},
            self.last_reload_success,
        )
        yield ("wsgw_draining", "gauge", "1 while the gateway drains", {}, int(self.draining))


@dataclass(frozen=True, slots=True, eq=False)
class Services:
    """Frozen: a reload makes a new one. `connections` is the one mutable part, shared by
    every bundle of the process (shutdown and /health see all connections)."""

    loop: asyncio.AbstractEventLoop
    settings: GatewaySettings  # the config's `gateway` section: timeouts and limits
    routes: RouteTable  # with each API's tier resolved
    verifier: TokenVerifier
    issuer: TokenIssuer
    registry: SubscriptionRegistry
    throttle: Throttle
    telemetry: Telemetry
    token_guard: TokenGuard
    deadlines: Deadlines
    backend_tls: ssl.SSLContext
    listener: ListenerLimits
    connections: set[Any]  # every gateway-port connection, HTTP legs and relayed ones
    relayed: dict[int, Any]  # the relayed ones (relay.ClientLeg) by id: what is judged again
    spawn: Callable[[Coroutine[Any, Any, Any]], None]  # a background task, referenced
    revocations: RevocationList  # shared by every bundle: a revocation applies to all
    state: RuntimeState  # shared: draining, the last reload's outcome
    operations: Any  # what the admin port may ask of the gateway (app.Gateway)
    admin_token: bytes | None = None  # the admin port's bearer token (gateway.admin_token_file)

    def answer_plain(self, request: Request, peer: str) -> bytes:
        """A gateway-port request that is not an upgrade (plain_http.py)."""
        return GATEWAY_PORT.answer(self, request, peer)
