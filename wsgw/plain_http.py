"""The one plain-HTTP router: what the gateway port answers besides upgrades (the token
endpoint, a health check) and what the admin port answers (health, metrics, stats).

A router maps a path to a handler over the runtime bundle (wsgw/services.py) and returns
the whole response; a refusal is a GatewayError raised to the protocol, which answers it
(the gateway port also counts it). One request per connection on both ports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from wsgw import _core
from wsgw.errors import MethodNotAllowed, NotFound, UpgradeRequired
from wsgw.http import Request, json_response, render_response
from wsgw.oauth.endpoint import handle_token_request
from wsgw.pipeline.metrics import CONTENT_TYPE

Handler = Callable[[Any, Request, str | None], bytes]  # (services, request, peer) → response
Fallback = Callable[[Any, Request], NoReturn]


class Router:
    def __init__(
        self,
        routes: dict[str, Handler],
        fallback: Fallback,
        *,
        get_only: frozenset[str] = frozenset(),
        methods: frozenset[str] | None = None,
    ) -> None:
        self._routes = routes
        self._fallback = fallback
        self._get_only = get_only  # paths that answer GET only
        self._methods = methods  # when set: checked before the path, for every path

    def answer(self, services: Any, request: Request, peer: str | None) -> bytes:
        if self._methods is not None and request.method not in self._methods:
            raise MethodNotAllowed("use GET")
        handler = self._routes.get(request.path)
        if handler is None:
            self._fallback(services, request)
        if request.path in self._get_only and request.method != "GET":
            raise MethodNotAllowed("use GET")
        return handler(services, request, peer)


def token_exchange(
    services: Any, request: Request, peer: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """POST /oauth2/token. ``peer``: the client's IP address, for the per-address failure
    limit (None: only the per-client-id limit applies)."""
    return handle_token_request(
        request.method,
        dict(request.headers.items),
        request.body,
        services.registry.lookup_client,
        services.issuer,
        guard=services.token_guard,
        address=peer,
        on_failure=services.telemetry.token_failure,
    )


def _token(services: Any, request: Request, peer: str | None) -> bytes:
    return render_response(*token_exchange(services, request, peer))


def _liveness(services: Any, request: Request, peer: str | None) -> bytes:
    return json_response(200, {"status": "ok"})


def _not_an_upgrade(services: Any, request: Request) -> NoReturn:
    services.routes.match(request.path)  # NotFound, or BadRequest for the path itself
    raise UpgradeRequired("this is a WebSocket API: send an upgrade")


def _health(services: Any, request: Request, peer: str | None) -> bytes:
    body = {"status": "ok", "connections": len(services.connections), "core": _core.IMPLEMENTATION}
    return json_response(200, body)


def _metrics(services: Any, request: Request, peer: str | None) -> bytes:
    return render_response(200, [("Content-Type", CONTENT_TYPE)], services.telemetry.metrics_text())


def _stats(services: Any, request: Request, peer: str | None) -> bytes:
    return json_response(200, services.telemetry.stats())


def _no_such_resource(services: Any, request: Request) -> NoReturn:
    raise NotFound("no such admin resource")


GATEWAY_PORT = Router(
    {"/oauth2/token": _token, "/health": _liveness},
    _not_an_upgrade,
    get_only=frozenset({"/health"}),
)
ADMIN_PORT = Router(
    {"/health": _health, "/metrics": _metrics, "/stats": _stats},
    _no_such_resource,
    methods=frozenset({"GET"}),
)
