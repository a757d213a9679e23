"""The one plain-HTTP router: what the gateway port answers besides upgrades (the token and
revocation endpoints, a health check) and what the admin port answers (health, metrics,
stats, the open connections, reload, drain).

A router maps a path, then a method, to a handler over the runtime bundle
(wsgw/services.py) and returns the whole response; a refusal is a GatewayError raised to
the protocol, which answers it (the gateway port also counts it). One request per
connection on both ports.

Paths are matched exactly as the request reader hands them over: never percent-decoded nor
normalised, so `/connections/%31` and `/connections/../health` are not connection 1 nor
/health (both are 400: not an id). On the admin port, with an admin token configured
(`services.admin_token`), every request but GET /health must carry it as a bearer token,
checked before the path is looked at: without it nobody learns which paths exist.

Admin answers hold nothing secret: connection snapshots carry no token, and the errors of a
failed reload are shown with URL credentials and echoed values removed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
from urllib.parse import parse_qs

from wsgw import _core
from wsgw.errors import (
    BadRequest,
    CloseCode,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    UpgradeRequired,
)
from wsgw.http import Request, json_response, render_response
from wsgw.names import KEY_TYPES
from wsgw.oauth.endpoint import handle_revoke_request, handle_token_request
from wsgw.pipeline.metrics import CONTENT_TYPE

log = logging.getLogger("wsgw")

Handler = Callable[[Any, Request, str | None], bytes]  # (services, request, peer) → response
Fallback = Callable[[Any, Request], NoReturn]
Authorize = Callable[[Any, Request], None]  # raises when the request may not go on
Methods = Mapping[str, Handler]  # method → handler; ANY_METHOD: the handler takes them all

ANY_METHOD = "*"


class NotAllowed(MethodNotAllowed):
    """405 with the Allow header RFC 9110 §15.5.6 requires."""

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(f"use {' or '.join(allowed)}")
        self.allowed = allowed

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(self.allowed))]


class Router:
    def __init__(
        self,
        routes: dict[str, Methods],
        fallback: Fallback,
        *,
        items: dict[str, Methods] | None = None,
        authorize: Authorize | None = None,
        public: frozenset[str] = frozenset(),
    ) -> None:
        """`items`: prefix → the methods of `prefix + <id>` (the handler parses the id);
        `authorize`: checked first for every path but the `public` ones."""
        self._routes = routes
        self._fallback = fallback
        self._items = items or {}
        self._authorize = authorize
        self._public = public

    def answer(self, services: Any, request: Request, peer: str | None) -> bytes:
        path = request.path
        if self._authorize is not None and path not in self._public:
            self._authorize(services, request)
        methods = self._methods(path)
        if methods is None:
            self._fallback(services, request)
        handler = methods.get(request.method) or methods.get(ANY_METHOD)
        if handler is None:
            raise NotAllowed(sorted(methods))
        return handler(services, request, peer)

    def _methods(self, path: str) -> Methods | None:
        methods = self._routes.get(path)
        if methods is not None:
            return methods
        for prefix, item_methods in self._items.items():
            if path.startswith(prefix):
                return item_methods
        return None


# ------------------------------------------------------------------ gateway port
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


def revoke_exchange(
    services: Any, request: Request, peer: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """POST /oauth2/revoke (RFC 7009): a client revokes one of its own tokens; the open
    connections holding it are closed (4102) by the gateway's revocation pass."""
    return handle_revoke_request(
        request.method,
        dict(request.headers.items),
        request.body,
        services.registry.lookup_client,
        services.verifier,
        lambda entry: services.operations.revoke([entry]),
        guard=services.token_guard,
        address=peer,
        on_failure=services.telemetry.token_failure,
    )


def _token(services: Any, request: Request, peer: str | None) -> bytes:
    return render_response(*token_exchange(services, request, peer))


def _revoke(services: Any, request: Request, peer: str | None) -> bytes:
    return render_response(*revoke_exchange(services, request, peer))


def _liveness(services: Any, request: Request, peer: str | None) -> bytes:
    if services.state.draining:  # load balancers: stop sending here
        return json_response(503, {"status": "draining"})
    return json_response(200, {"status": "ok"})


def _not_an_upgrade(services: Any, request: Request) -> NoReturn:
    services.routes.match(request.path)  # NotFound, or BadRequest for the path itself
    raise UpgradeRequired("this is a WebSocket API: send an upgrade")


# -------------------------------------------------------------- admin: the token
ADMIN_REALM = "wsgw-admin"


class AdminUnauthorized(GatewayError):
    """401 from the admin port: the bearer token is missing (`invalid` False) or wrong."""

    http_status = 401
    error = "unauthorized"

    def __init__(self, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self.invalid = invalid

    def extra_headers(self) -> list[tuple[str, str]]:
        challenge = f'Bearer realm="{ADMIN_REALM}"'
        if self.invalid:  # RFC 6750 §3: no error code when no credentials came
            challenge += ', error="invalid_token"'
        return [("WWW-Authenticate", challenge)]


def admin_authorized(services: Any, request: Request) -> bool:
    """Whether the request may use the admin port: no token is configured, or it carries
    the right one. Never raises, logs or keeps what was presented."""
    expected = getattr(services, "admin_token", None)
    if expected is None:
        return True
    presented = _bearer(request.headers.get_all("authorization"))
    # Digests: equal lengths, so that the comparison does not tell the token's length.
    return presented is not None and hmac.compare_digest(
        hashlib.sha256(presented).digest(), hashlib.sha256(expected).digest()
    )


def _not_from_a_browser(services: Any, request: Request) -> None:
    """The admin port closes connections and drains the gateway: a web page must not be
    able to ask it to. Browsers mark their requests (`Origin` on a cross-site POST or
    DELETE, `Sec-Fetch-Site` on every request), which the port's real clients (curl,
    Prometheus, scripts) do not send; without a token, the Host must also name a loopback
    address, so a DNS-rebound page cannot read it either."""
    headers = request.headers
    site = headers.get("sec-fetch-site")
    if headers.get_all("origin") or (site is not None and site != "none"):
        raise Forbidden("the admin port does not answer browser requests")
    if getattr(services, "admin_token", None) is None and not _loopback_host(headers.get("host")):
        raise Forbidden("the admin port without a token answers only a loopback Host")


def _loopback_host(host: str | None) -> bool:
    if host is None:  # HTTP/1.0: no Host, and no browser sends that
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _require_admin_token(services: Any, request: Request) -> None:
    _not_from_a_browser(services, request)
    if admin_authorized(services, request):
        return
    if not request.headers.get_all("authorization"):
        raise AdminUnauthorized("the admin token is required", invalid=False)
    raise AdminUnauthorized("invalid admin token", invalid=True)


def _bearer(values: list[str]) -> bytes | None:
    """The token of the one `Authorization: Bearer <token>` field (None otherwise)."""
    if len(values) != 1:
        return None
    scheme, _, token = values[0].partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode("latin-1")  # the reader decoded the header as latin-1


# --------------------------------------------------------- admin: query strings
MAX_QUERY_FIELDS = 16
MAX_SHOWN_NAME = 40
FILTERS = ("api", "version", "application", "key_type")  # what a snapshot is matched on
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10_000
DEFAULT_CLOSE_REASON = "closed by operator"
MAX_CLOSE_REASON_BYTES = 123  # a close frame is a control frame: 125 bytes with the code
CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012, 1013})  # besides 3000-4999
CLOSE_CODES_TEXT = "1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999"

_LIST_PARAMS = frozenset({*FILTERS, "limit"})
_CLOSE_ONE_PARAMS = frozenset({"code", "reason"})
_CLOSE_MATCHING_PARAMS = frozenset({*FILTERS, "all", "code", "reason"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DIGITS = re.compile("[0-9]+")
MAX_ID_DIGITS = 19


def _query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query's parameters, percent-decoded (UTF-8): each at most once, all among
    `allowed`, none holding a control character."""
    raw = request.query
    if not raw:
        return {}
    if not raw.isascii():
        raise BadRequest("the query string must be ASCII: percent-encode the rest")
    try:
        fields = parse_qs(
            raw,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except ValueError:  # includes UnicodeDecodeError and too many fields
        raise BadRequest("malformed query string") from None
    params = {}
    for name, values in fields.items():
        if _CONTROL.search(name):
            raise BadRequest("control character in a query parameter name")
        if name not in allowed:
            shown = repr(name[:MAX_SHOWN_NAME])
            raise BadRequest(
                f"unknown query parameter {shown} (this one takes: {', '.join(sorted(allowed))})"
            )
        if len(values) > 1:
            raise BadRequest(f"query parameter {name!r} given more than once")
        if _CONTROL.search(values[0]):
            raise BadRequest(f"control character in query parameter {name!r}")
        params[name] = values[0]
    return params


def _filters(params: dict[str, str]) -> dict[str, str]:
    filters = {name: params[name] for name in FILTERS if name in params}
    for name, value in filters.items():
        if not value:
            raise BadRequest(f"empty {name} filter")
    key_type = filters.get("key_type")
    if key_type is not None and key_type not in KEY_TYPES:
        raise BadRequest(f"key_type must be one of {', '.join(KEY_TYPES)}")
    return filters


def _number(params: dict[str, str], name: str, default: int, digits: int) -> int:
    """A decimal parameter: digits only (int() would take " 1", "+1" and "1_0")."""
    value = params.get(name)
    if value is None:
        return default
    if not (_DIGITS.fullmatch(value) and len(value) <= digits):
        raise BadRequest(f"{name} must be a decimal number")
    return int(value)


def _limit(params: dict[str, str]) -> int:
    limit = _number(params, "limit", DEFAULT_LIST_LIMIT, 6)
    if limit > MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be at most {MAX_LIST_LIMIT}")
    return limit


def _close_frame(params: dict[str, str]) -> tuple[int, str]:
    """The close code and reason asked for (the operator's defaults otherwise)."""
    code = _number(params, "code", CloseCode.CLOSED_BY_OPERATOR, 4)
    if code not in CLOSE_CODES and not 3000 <= code <= 4999:
        raise BadRequest(f"close code must be {CLOSE_CODES_TEXT}")
    reason = params.get("reason", DEFAULT_CLOSE_REASON)
    if len(reason.encode("utf-8")) > MAX_CLOSE_REASON_BYTES:
        raise BadRequest(f"close reason must be at most {MAX_CLOSE_REASON_BYTES} UTF-8 bytes")
    return int(code), reason


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise BadRequest(f"{name} must be true or false")


def _no_params(request: Request) -> None:
    _query(request, frozenset())


CONNECTIONS = "/connections"
CONNECTION_PREFIX = CONNECTIONS + "/"


def _connection_id(path: str) -> int:
    """The id of `/connections/<id>`: decimal digits only, as the reader gave the path
    (`%31` is not 1, `..` is not a parent)."""
    raw = path[len(CONNECTION_PREFIX) :]
    if not (_DIGITS.fullmatch(raw) and len(raw) <= MAX_ID_DIGITS):
        raise BadRequest("a connection id is decimal digits")
    return int(raw)


# ------------------------------------------------------ admin: what a reload says
_ECHOED_VALUE = re.compile(r""", got (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")


def redact(problem: str) -> str:
    """A config problem as the admin port shows it: file, line and field, without the
    offending value (a wrong redis_url may carry its password) or URL credentials."""
    return _URL_CREDENTIALS.sub(r"\1***@", _ECHOED_VALUE.sub("", problem))


def _redacted(result: dict[str, Any]) -> dict[str, Any]:
    errors = result.get("errors")
    if not errors:
        return result
    return {**result, "errors": [redact(str(e)) for e in errors]}


# -------------------------------------------------------------- admin: handlers
_NO_STORE = [("Cache-Control", "no-store")]


def _json(status: int, payload: object) -> bytes:
    return json_response(status, payload, _NO_STORE)


def _health(services: Any, request: Request, peer: str | None) -> bytes:
    state = services.state
    config = _redacted(state.health())
    if not admin_authorized(services, request):
        config.pop("errors", None)  # open to load balancers: file names and lines are not
    body = {
        "status": "draining" if state.draining else "ok",
        "connections": len(services.connections),
        "core": _core.IMPLEMENTATION,
        "config": config,
    }
    return json_response(503 if state.draining else 200, body)


def _metrics(services: Any, request: Request, peer: str | None) -> bytes:
    return render_response(200, [("Content-Type", CONTENT_TYPE)], services.telemetry.metrics_text())


def _stats(services: Any, request: Request, peer: str | None) -> bytes:
    return json_response(200, services.telemetry.stats())


def _list_connections(services: Any, request: Request, peer: str | None) -> bytes:
    """GET /connections?api=&version=&application=&key_type=&limit=: the snapshots (by id)
    of the open connections matching every filter; `count` is before the limit."""
    params = _query(request, _LIST_PARAMS)
    filters, limit = _filters(params), _limit(params)
    found = services.operations.list_connections(filters)
    found.sort(key=lambda snapshot: snapshot["id"])
    return _json(200, {"connections": found[:limit], "count": len(found)})


def _close_matching(services: Any, request: Request, peer: str | None) -> bytes:
    """DELETE /connections?<filters>&code=&reason=: close every match (with Redis, on every
    gateway). Without a filter, only `all=true` closes everything."""
    params = _query(request, _CLOSE_MATCHING_PARAMS)
    filters = _filters(params)
    everyone = _flag(params, "all")
    code, reason = _close_frame(params)
    if not filters and not everyone:
        raise BadRequest(
            f"give a filter ({', '.join(FILTERS)}), or all=true to close every connection"
        )
    closed = services.operations.close_connections(filters, code, reason)
    log.info(
        "admin port (%s): closed %d connections matching %s with %d %r",
        peer or "?",
        closed,
        filters or "all",
        code,
        reason,
    )
    return _json(200, {"closed": closed})


def _close_one(services: Any, request: Request, peer: str | None) -> bytes:
    """DELETE /connections/<id>?code=&reason=."""
    conn_id = _connection_id(request.path)
    code, reason = _close_frame(_query(request, _CLOSE_ONE_PARAMS))
    if not services.operations.close_connection(conn_id, code, reason):
        raise NotFound("no open connection with that id")
    log.info("admin port (%s): closed connection %d with %d %r", peer or "?", conn_id, code, reason)
    return _json(200, {"closed": 1})


def _reload(services: Any, request: Request, peer: str | None) -> bytes:
    """POST /reload: 200 with what took effect, or 422 with the problems (nothing changed)."""
    _no_params(request)
    result = _redacted(services.operations.reload("POST /reload"))
    return _json(200 if result.get("result") == "ok" else 422, result)


def _drain(services: Any, request: Request, peer: str | None) -> bytes:
    """POST /drain: as SIGTERM; the gateway stops once drained."""
    _no_params(request)
    return _json(202, services.operations.begin_drain("POST /drain"))


def _no_such_resource(services: Any, request: Request) -> NoReturn:
    raise NotFound("no such admin resource")


GATEWAY_PORT = Router(
    {
        # The OAuth endpoints answer every method themselves (405 in their own format).
        "/oauth2/token": {ANY_METHOD: _token},
        "/oauth2/revoke": {ANY_METHOD: _revoke},
        "/health": {"GET": _liveness},
    },
    _not_an_upgrade,
)
ADMIN_PORT = Router(
    {
        "/health": {"GET": _health},
        "/metrics": {"GET": _metrics},
        "/stats": {"GET": _stats},
        CONNECTIONS: {"GET": _list_connections, "DELETE": _close_matching},
        "/reload": {"POST": _reload},
        "/drain": {"POST": _drain},
    },
    _no_such_resource,
    items={CONNECTION_PREFIX: {"DELETE": _close_one}},
    authorize=_require_admin_token,
    public=frozenset({"/health"}),  # load balancers probe it without a token
)
