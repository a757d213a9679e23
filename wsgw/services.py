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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from wsgw.config.models import Gateway as GatewaySettings
from wsgw.http import Request
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline.deadlines import Deadlines
from wsgw.pipeline.listener import ListenerLimits
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle
from wsgw.plain_http import GATEWAY_PORT


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
    spawn: Callable[[Coroutine[Any, Any, Any]], None]  # a background task, referenced

    def answer_plain(self, request: Request, peer: str) -> bytes:
        """A gateway-port request that is not an upgrade (plain_http.py)."""
        return GATEWAY_PORT.answer(self, request, peer)
