"""The plain-HTTP routers (wsgw/plain_http.py): what the gateway port and the admin port
answer to requests that are not upgrades, parsed from bytes, over a real services bundle
(with a stand-in for the gateway's operations and, on the admin port, its token)."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.pipeline.test_stages import (
    SECRETS,
    StageServices,
    build_services,
    new_key,
    parse_request,
    token_for,
    upgrade_request,
)
from wsgw import _core
from wsgw.errors import BadRequest, GatewayError, MethodNotAllowed, NotFound, UpgradeRequired
from wsgw.http import Request, Response, ResponseReader, error_response
from wsgw.oauth.keys import SigningKey
from wsgw.oauth.revocation import Revocation
from wsgw.pipeline.metrics import CONTENT_TYPE
from wsgw.plain_http import ADMIN_PORT, GATEWAY_PORT, AdminUnauthorized, Router, redact

PEER = "192.0.2.10"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Operations:
    """What the admin port asks of the gateway (app.Gateway), recorded."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    reload_result: dict[str, Any] = field(default_factory=lambda: {"result": "ok"})
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    revoked: list[Revocation] = field(default_factory=list)

    def list_connections(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append(("list", filters))
        return [s for s in self.snapshots if all(str(s[k]) == v for k, v in filters.items())]

    def close_connection(self, conn_id: int, code: int, reason: str) -> bool:
        self.calls.append(("close", conn_id, code, reason))
        return any(s["id"] == conn_id for s in self.snapshots)

    def close_connections(self, filters: dict[str, str], code: int, reason: str) -> int:
        self.calls.append(("close_matching", filters, code, reason))
        return len(self.list_connections(filters))

    def reload(self, trigger: str) -> dict[str, Any]:
        self.calls.append(("reload", trigger))
        return self.reload_result

    def begin_drain(self, trigger: str) -> dict[str, Any]:
        self.calls.append(("drain", trigger))
        return {"status": "draining", "connections": 2}

    def revoke(self, entries: list[Revocation]) -> None:
        self.revoked.extend(entries)


@dataclass(frozen=True, slots=True, eq=False)
class AdminServices(StageServices):
    """StageServices with what the admin port and the revocation endpoint use besides."""

    operations: Operations = field(default_factory=Operations)
    admin_token: bytes | None = None


ADMIN_TOKEN = b"s3cr3t-admin-token_0123456789abcdef"


def with_admin(base: StageServices, token: bytes | None = None) -> AdminServices:
    parts = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return AdminServices(**parts, admin_token=token)


@pytest.fixture
def services(signing_key: SigningKey) -> AdminServices:
    return with_admin(build_services(signing_key))


@pytest.fixture
def guarded(services: AdminServices) -> AdminServices:
    """The same bundle with an admin token configured."""
    return dataclasses.replace(services, admin_token=ADMIN_TOKEN)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return new_key(tmp_path_factory.mktemp("keys"))


def request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Request:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1:9901"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return parse_request(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def parse_response(raw: bytes) -> tuple[Response, bytes]:
    """The response head as ResponseReader parses it, and the body its Content-Length says."""
    response = ResponseReader().feed(raw)
    assert response is not None, "incomplete response"
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert len(body) == int(response.headers.get("content-length") or -1)
    return response, body


def answer(router: Router, services: StageServices, req: Request) -> tuple[Response, bytes]:
    return parse_response(router.answer(services, req, PEER))


def refusal(router: Router, services: StageServices, req: Request) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        router.answer(services, req, PEER)
    return exc.value


def token_request(body: str, headers: dict[str, str] | None = None) -> Request:
    return request(
        "POST", "/oauth2/token", {"Content-Type": FORM, **(headers or {})}, body.encode()
    )


# --------------------------------------------------------------- gateway port
def test_gateway_health_is_ok(services: StageServices) -> None:
    response, body = answer(GATEWAY_PORT, services, request("GET", "/health"))
    assert (response.status, response.headers.get("content-type")) == (200, "application/json")
    assert orjson.loads(body) == {"status": "ok"}
    assert response.headers.get("connection") == "close"


@pytest.mark.parametrize("method", ["POST", "HEAD", "DELETE"])
def test_gateway_health_answers_get_only(services: StageServices, method: str) -> None:
    err = refusal(GATEWAY_PORT, services, request(method, "/health"))
    assert isinstance(err, MethodNotAllowed) and err.http_status == 405


@pytest.mark.parametrize("target", ["/chat/1.0", "/chat/1.0/room?x=1", "/chat", "/public/1.0"])
def test_gateway_api_path_without_upgrade_is_426(services: StageServices, target: str) -> None:
    err = refusal(GATEWAY_PORT, services, request("GET", target))
    assert isinstance(err, UpgradeRequired)
    response, body = parse_response(error_response(err))
    assert response.status == 426
    assert response.headers.get("upgrade") == "websocket"
    assert response.headers.get("sec-websocket-version") == "13"
    assert response.headers.get("cache-control") == "no-store"
    assert orjson.loads(body)["error"] == "upgrade_required"


def test_gateway_upgrade_request_that_reaches_the_router_is_still_426(
    services: StageServices,
) -> None:
    """The router never upgrades: the HTTP leg sends upgrades to the stages instead."""
    assert isinstance(refusal(GATEWAY_PORT, services, upgrade_request()), UpgradeRequired)


@pytest.mark.parametrize("target", ["/nowhere", "/", "/metrics", "/stats", "/oauth2/tokens"])
def test_gateway_unknown_path_is_404(services: StageServices, target: str) -> None:
    err = refusal(GATEWAY_PORT, services, request("GET", target))
    assert isinstance(err, NotFound) and err.http_status == 404


def test_gateway_climbing_path_is_400(services: StageServices) -> None:
    err = refusal(GATEWAY_PORT, services, request("GET", "/chat/1.0/%2e%2e%2fadmin"))
    assert isinstance(err, BadRequest)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (f"grant_type=client_credentials&client_id=ck-prod&client_secret={SECRETS['ck-prod']}", {}),
        (
            "grant_type=client_credentials",
            {
                "Authorization": "Basic "
                + base64.b64encode(f"ck-prod:{SECRETS['ck-prod']}".encode()).decode()
            },
        ),
    ],
    ids=["form", "basic"],
)
def test_gateway_token_exchange_issues_a_token_the_verifier_accepts(
    services: StageServices, body: str, headers: dict[str, str]
) -> None:
    response, raw = answer(GATEWAY_PORT, services, token_request(body, headers))
    assert response.status == 200
    assert response.headers.get("cache-control") == "no-store"
    payload = orjson.loads(raw)
    assert (payload["token_type"], payload["expires_in"]) == ("Bearer", 3600)
    claims = services.verifier.verify(payload["access_token"])
    assert (claims.application, claims.key_type, claims.consumer_key) == (
        "MyApp",
        "PRODUCTION",
        "ck-prod",
    )
    assert set(services.telemetry.token_failures.values()) == {0}


def test_gateway_token_exchange_for_the_sandbox_key(services: StageServices) -> None:
    body = f"grant_type=client_credentials&client_id=ck-sbx&client_secret={SECRETS['ck-sbx']}"
    _, raw = answer(GATEWAY_PORT, services, token_request(body))
    assert services.verifier.verify(orjson.loads(raw)["access_token"]).key_type == "SANDBOX"


def test_gateway_token_exchange_with_a_wrong_secret_is_401_and_counted(
    services: StageServices,
) -> None:
    body = "grant_type=client_credentials&client_id=ck-prod&client_secret=wrong"
    response, raw = answer(GATEWAY_PORT, services, token_request(body))
    assert response.status == 401
    assert orjson.loads(raw)["error"] == "invalid_client"
    assert services.telemetry.token_failures[("invalid_client",)] == 1


def test_gateway_token_endpoint_answers_get_itself(services: StageServices) -> None:
    """/oauth2/token is not GET-only in the router: the endpoint answers 405 with Allow."""
    response, raw = answer(GATEWAY_PORT, services, request("GET", "/oauth2/token"))
    assert (response.status, response.headers.get("allow")) == (405, "POST")
    assert orjson.loads(raw)["error"] == "invalid_request"


# ----------------------------------------------------------------- admin port
def test_admin_health_reports_the_connection_count(services: StageServices) -> None:
    services.connections.update({object(), object(), object()})
    response, body = answer(ADMIN_PORT, services, request("GET", "/health"))
    assert response.status == 200
    assert orjson.loads(body) == {
        "status": "ok",
        "connections": 3,
        "core": _core.IMPLEMENTATION,
        "config": services.state.health(),
    }


def test_both_health_checks_say_503_while_draining(services: StageServices) -> None:
    services.state.draining = True
    response, body = answer(ADMIN_PORT, services, request("GET", "/health"))
    assert response.status == 503 and orjson.loads(body)["status"] == "draining"
    response, body = answer(GATEWAY_PORT, services, request("GET", "/health"))
    assert response.status == 503 and orjson.loads(body) == {"status": "draining"}


def test_admin_metrics_are_prometheus_text(services: StageServices) -> None:
    services.telemetry.token_failure("invalid_client")
    response, body = answer(ADMIN_PORT, services, request("GET", "/metrics"))
    assert response.status == 200
    assert response.headers.get("content-type") == CONTENT_TYPE
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert b'wsgw_token_failures_total{reason="invalid_client"} 1.0' in body


def test_admin_stats_are_json(services: StageServices) -> None:
    services.telemetry.refused("Chat", "1.0", 401, client=PEER, application=None, reason="x")
    response, body = answer(ADMIN_PORT, services, request("GET", "/stats"))
    assert (response.status, response.headers.get("content-type")) == (200, "application/json")
    stats = orjson.loads(body)
    assert stats["connections_active"] == 0
    assert stats["apis"]["Chat:1.0"]["connections"] == {"401": 1}


@pytest.mark.parametrize("target", ["/nowhere", "/oauth2/token", "/chat/1.0", "/"])
def test_admin_unknown_path_is_404(services: StageServices, target: str) -> None:
    err = refusal(ADMIN_PORT, services, request("GET", target))
    assert isinstance(err, NotFound) and err.message == "no such admin resource"


# ------------------------------------------------------ methods, per admin route
def bearer(token: bytes | str = ADMIN_TOKEN) -> dict[str, str]:
    value = token.decode() if isinstance(token, bytes) else token
    return {"Authorization": f"Bearer {value}"}


def snapshot(conn_id: int, **fields: Any) -> dict[str, Any]:
    base = {
        "id": conn_id,
        "api": "Chat",
        "version": "1.0",
        "application": "MyApp",
        "key_type": "PRODUCTION",
        "tier": "Gold",
        "client": "203.0.113.7",
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("POST", "/health", "GET"),
        ("HEAD", "/health", "GET"),
        ("PUT", "/metrics", "GET"),
        ("OPTIONS", "/stats", "GET"),
        ("POST", "/connections", "DELETE, GET"),
        ("PUT", "/connections", "DELETE, GET"),
        ("HEAD", "/connections", "DELETE, GET"),
        ("GET", "/connections/7", "DELETE"),
        ("POST", "/connections/7", "DELETE"),
        ("GET", "/reload", "POST"),
        ("DELETE", "/reload", "POST"),
        ("GET", "/drain", "POST"),
        ("PUT", "/drain", "POST"),
    ],
)
def test_admin_route_refuses_other_methods_with_allow(
    services: AdminServices, method: str, target: str, allow: str
) -> None:
    err = refusal(ADMIN_PORT, services, request(method, target))
    assert isinstance(err, MethodNotAllowed) and err.http_status == 405
    response, body = parse_response(error_response(err))
    assert response.headers.get("allow") == allow
    assert orjson.loads(body)["error"] == "method_not_allowed"
    assert services.operations.calls == []  # nothing was done


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
@pytest.mark.parametrize(
    "target", ["/nowhere", "/oauth2/token", "/connection", "/health/", "/Reload", "/drain/"]
)
def test_admin_unknown_path_is_404_whatever_the_method(
    services: AdminServices, method: str, target: str
) -> None:
    err = refusal(ADMIN_PORT, services, request(method, target))
    assert isinstance(err, NotFound)


# ------------------------------------------------------------ admin: the token
OPEN_ROUTES = [
    ("GET", "/metrics"),
    ("GET", "/stats"),
    ("GET", "/connections"),
    ("DELETE", "/connections?all=true"),
    ("DELETE", "/connections/1"),
    ("POST", "/reload"),
    ("POST", "/drain"),
]


@pytest.mark.parametrize(("method", "target"), [("GET", "/health"), *OPEN_ROUTES])
def test_admin_without_a_token_configured_is_open(
    services: AdminServices, method: str, target: str
) -> None:
    services.operations.snapshots.append(snapshot(1))
    response, _ = answer(ADMIN_PORT, services, request(method, target))
    assert response.status in (200, 202)


@pytest.mark.parametrize(("method", "target"), [*OPEN_ROUTES, ("GET", "/nowhere")])
def test_admin_with_a_token_refuses_requests_without_it(
    guarded: AdminServices, method: str, target: str
) -> None:
    """Before the path is looked at: an unknown path is 401 too (nothing to learn)."""
    err = refusal(ADMIN_PORT, guarded, request(method, target))
    assert isinstance(err, AdminUnauthorized) and err.http_status == 401
    response, body = parse_response(error_response(err))
    assert response.headers.get("www-authenticate") == 'Bearer realm="wsgw-admin"'
    assert orjson.loads(body)["error"] == "unauthorized"
    assert guarded.operations.calls == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        "Bearer " + ADMIN_TOKEN.decode()[:-1],
        "Bearer " + ADMIN_TOKEN.decode() + "x",
        "Bearer " + ADMIN_TOKEN.decode().upper(),
        "Basic " + base64.b64encode(b"admin:" + ADMIN_TOKEN).decode(),
        ADMIN_TOKEN.decode(),
        "Bearer",
        "Bearer ",
        "Token " + ADMIN_TOKEN.decode(),
    ],
)
@pytest.mark.parametrize(("method", "target"), OPEN_ROUTES)
def test_admin_with_a_token_refuses_a_wrong_one(
    guarded: AdminServices, method: str, target: str, authorization: str
) -> None:
    err = refusal(ADMIN_PORT, guarded, request(method, target, {"Authorization": authorization}))
    assert isinstance(err, AdminUnauthorized)
    raw = error_response(err)
    response, _ = parse_response(raw)
    assert response.headers.get("www-authenticate") == (
        'Bearer realm="wsgw-admin", error="invalid_token"'
    )
    assert authorization.encode() not in raw or authorization in ("Bearer", "Bearer ")
    assert guarded.operations.calls == []


def test_admin_refuses_two_authorization_fields(guarded: AdminServices) -> None:
    line = b"Authorization: Bearer " + ADMIN_TOKEN + b"\r\n"
    req = parse_request(b"GET /stats HTTP/1.1\r\nHost: x\r\n" + line * 2 + b"\r\n")
    assert isinstance(refusal(ADMIN_PORT, guarded, req), AdminUnauthorized)


@pytest.mark.parametrize(("method", "target"), OPEN_ROUTES)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_admin_with_the_right_token_answers(
    guarded: AdminServices, method: str, target: str, scheme: str
) -> None:
    guarded.operations.snapshots.append(snapshot(1))
    headers = {"Authorization": f"{scheme} {ADMIN_TOKEN.decode()}"}
    response, body = answer(ADMIN_PORT, guarded, request(method, target, headers))
    assert response.status in (200, 202)
    assert ADMIN_TOKEN not in body


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, bearer()])
def test_admin_health_never_needs_the_token(
    guarded: AdminServices, headers: dict[str, str]
) -> None:
    response, body = answer(ADMIN_PORT, guarded, request("GET", "/health", headers))
    assert response.status == 200 and orjson.loads(body)["status"] == "ok"


def test_admin_health_shows_reload_errors_only_with_the_token(guarded: AdminServices) -> None:
    guarded.state.last_reload_ok = False
    guarded.state.reload_errors = ["wsgw.yaml:3: bad - at $.gateway.listen"]
    _, body = answer(ADMIN_PORT, guarded, request("GET", "/health"))
    config = orjson.loads(body)["config"]
    assert config["last_reload"] == "failed" and "errors" not in config
    _, body = answer(ADMIN_PORT, guarded, request("GET", "/health", bearer()))
    assert orjson.loads(body)["config"]["errors"] == guarded.state.reload_errors


def test_admin_health_redacts_reload_errors(services: AdminServices) -> None:
    services.state.reload_errors = [
        "wsgw.yaml:2: Expected a redis://, rediss:// or unix:// URL, got "
        "'redis://:hunter2@host:6379/x y' - at $.gateway.redis_url"
    ]
    _, body = answer(ADMIN_PORT, services, request("GET", "/health"))
    assert b"hunter2" not in body
    assert orjson.loads(body)["config"]["errors"] == [
        "wsgw.yaml:2: Expected a redis://, rediss:// or unix:// URL - at $.gateway.redis_url"
    ]


@pytest.mark.parametrize(
    ("problem", "shown"),
    [
        ("f:1: got 'a\\'b' - at $.x", "f:1: got 'a\\'b' - at $.x"),  # no comma: not an echo
        ("f:1: Expected x, got 'a\\'b' - at $.x", "f:1: Expected x - at $.x"),
        ('f:1: Expected x, got "it\'s" - at $.x', "f:1: Expected x - at $.x"),
        ("f:2: cannot reach redis://user:pw@h:1/0", "f:2: cannot reach redis://***@h:1/0"),
        ("f:2: see rediss://:pw@h", "f:2: see rediss://***@h"),
        ("f:3: unknown field 'x' - at $.gateway", "f:3: unknown field 'x' - at $.gateway"),
    ],
)
def test_redact(problem: str, shown: str) -> None:
    assert redact(problem) == shown


# ---------------------------------------------------------- GET /connections
def listed(services: AdminServices, query: str = "") -> dict[str, Any]:
    target = "/connections" + (f"?{query}" if query else "")
    response, body = answer(ADMIN_PORT, services, request("GET", target))
    assert response.status == 200
    assert response.headers.get("cache-control") == "no-store"
    return orjson.loads(body)


def test_admin_lists_connections_by_id_with_the_count(services: AdminServices) -> None:
    services.operations.snapshots.extend([snapshot(3), snapshot(1), snapshot(2, api="Other")])
    result = listed(services)
    assert [s["id"] for s in result["connections"]] == [1, 2, 3] and result["count"] == 3
    assert services.operations.calls == [("list", {})]


@pytest.mark.parametrize(
    ("query", "filters", "ids"),
    [
        ("api=Other", {"api": "Other"}, [2]),
        ("version=2.0", {"version": "2.0"}, [4]),
        ("application=My%20App", {"application": "My App"}, [3]),
        ("application=My+App", {"application": "My App"}, [3]),
        ("key_type=SANDBOX", {"key_type": "SANDBOX"}, [3]),
        ("api=Chat&key_type=PRODUCTION", {"api": "Chat", "key_type": "PRODUCTION"}, [1, 4]),
        ("api=Chat&version=1.0&application=MyApp", None, [1]),
    ],
)
def test_admin_lists_connections_matching_every_filter(
    services: AdminServices, query: str, filters: dict[str, str] | None, ids: list[int]
) -> None:
    services.operations.snapshots.extend(
        [
            snapshot(1),
            snapshot(2, api="Other"),
            snapshot(3, application="My App", key_type="SANDBOX"),
            snapshot(4, version="2.0"),
        ]
    )
    result = listed(services, query)
    assert [s["id"] for s in result["connections"]] == ids
    if filters is not None:
        assert services.operations.calls == [("list", filters)]


def test_admin_list_limit_keeps_the_count(services: AdminServices) -> None:
    services.operations.snapshots.extend(snapshot(i) for i in range(1, 1202))
    result = listed(services)
    assert (len(result["connections"]), result["count"]) == (1000, 1201)
    result = listed(services, "limit=5")
    assert [s["id"] for s in result["connections"]] == [1, 2, 3, 4, 5] and result["count"] == 1201
    assert listed(services, "limit=0") == {"connections": [], "count": 1201}
    assert len(listed(services, "limit=10000")["connections"]) == 1201


BAD_QUERIES = [
    ("limit=10001", "limit must be at most 10000"),
    ("limit=-1", "limit must be a decimal number"),
    ("limit=%2B1", "limit must be a decimal number"),
    ("limit=%201", "limit must be a decimal number"),
    ("limit=1_0", "limit must be a decimal number"),
    ("limit=", "limit must be a decimal number"),
    ("limit=99999999999999999999", "limit must be a decimal number"),
    ("api=", "empty api filter"),
    ("key_type=production", "key_type must be one of PRODUCTION, SANDBOX"),
    ("tier=Gold", "unknown query parameter 'tier'"),
    ("API=Chat", "unknown query parameter 'API'"),
    ("api=Chat&api=Other", "query parameter 'api' given more than once"),
    ("api=a%00b", "control character in query parameter 'api'"),
    ("api=a%0Ab", "control character in query parameter 'api'"),
    ("api=a%0D%0Ab", "control character in query parameter 'api'"),
    ("api=a%7Fb", "control character in query parameter 'api'"),
    ("api=a%C2%85b", "control character in query parameter 'api'"),
    ("api=a%E2%80%A8b", "control character in query parameter 'api'"),
    ("ap%00i=x", "control character in a query parameter name"),
    ("api=%FF", "malformed query string"),
    ("api=%C3", "malformed query string"),
    ("api", "malformed query string"),
    ("api=Chat&&version=1.0", "malformed query string"),
    ("&", "malformed query string"),
    ("=x", "unknown query parameter ''"),
    ("&".join(f"api{i}=x" for i in range(17)), "malformed query string"),
]


@pytest.mark.parametrize(("query", "message"), BAD_QUERIES)
def test_admin_list_refuses_a_bad_query(services: AdminServices, query: str, message: str) -> None:
    err = refusal(ADMIN_PORT, services, request("GET", f"/connections?{query}"))
    assert isinstance(err, BadRequest)
    assert err.message.startswith(message), err.message
    assert services.operations.calls == []


def test_admin_unknown_parameter_is_named_but_cut(services: AdminServices) -> None:
    err = refusal(ADMIN_PORT, services, request("GET", "/connections?" + "x" * 500 + "=1"))
    assert isinstance(err, BadRequest)
    assert repr("x" * 40) in err.message and "x" * 41 not in err.message
    assert "api, application, key_type, limit, version" in err.message


def test_admin_query_with_raw_non_ascii_is_refused(services: AdminServices) -> None:
    with pytest.raises(BadRequest):  # by the reader or the router
        ADMIN_PORT.answer(services, request("GET", "/connections?api=\xe9"), PEER)


# -------------------------------------------------------- DELETE /connections/<id>
def deleted(services: AdminServices, target: str) -> tuple[Response, dict[str, Any]]:
    response, body = answer(ADMIN_PORT, services, request("DELETE", target))
    return response, orjson.loads(body)


def test_admin_closes_one_connection_with_the_defaults(services: AdminServices) -> None:
    services.operations.snapshots.append(snapshot(7))
    response, body = deleted(services, "/connections/7")
    assert (response.status, body) == (200, {"closed": 1})
    assert response.headers.get("cache-control") == "no-store"
    assert services.operations.calls == [("close", 7, 4000, "closed by operator")]


def test_admin_closes_one_connection_with_a_code_and_reason(services: AdminServices) -> None:
    services.operations.snapshots.append(snapshot(7))
    reason = quote("maintenance: reconnect in 5 min — merci")
    _, body = deleted(services, f"/connections/7?code=4321&reason={reason}")
    assert body == {"closed": 1}
    assert services.operations.calls == [
        ("close", 7, 4321, "maintenance: reconnect in 5 min — merci")
    ]


def test_admin_close_of_an_unknown_connection_is_404(services: AdminServices) -> None:
    err = refusal(ADMIN_PORT, services, request("DELETE", "/connections/8"))
    assert isinstance(err, NotFound) and err.http_status == 404
    assert orjson.loads(parse_response(error_response(err))[1])["error"] == "not_found"


@pytest.mark.parametrize(
    "target",
    [
        "/connections/",
        "/connections/abc",
        "/connections/%31",
        "/connections/../health",
        "/connections/%2e%2e/health",
        "/connections/1/",
        "/connections/1/x",
        "/connections/-1",
        "/connections/+1",
        "/connections/1.0",
        "/connections/1e3",
        "/connections/0x10",
        "/connections/" + "9" * 20,
        "/connections/" + "1" * 5000,
    ],
)
def test_admin_close_one_refuses_what_is_not_an_id(services: AdminServices, target: str) -> None:
    err = refusal(ADMIN_PORT, services, request("DELETE", target))
    assert isinstance(err, BadRequest) and err.message == "a connection id is decimal digits"
    assert services.operations.calls == []


def test_admin_close_one_refuses_filters(services: AdminServices) -> None:
    err = refusal(ADMIN_PORT, services, request("DELETE", "/connections/7?api=Chat"))
    assert isinstance(err, BadRequest) and "unknown query parameter 'api'" in err.message


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1012, 1013, 3000, 4000, 4102, 4999])
def test_admin_close_takes_the_allowed_codes(services: AdminServices, code: int) -> None:
    services.operations.snapshots.append(snapshot(7))
    assert deleted(services, f"/connections/7?code={code}")[1] == {"closed": 1}
    assert services.operations.calls[-1][2] == code
    assert type(services.operations.calls[-1][2]) is int


@pytest.mark.parametrize(
    "code",
    ["999", "1002", "1003", "1005", "1006", "1007", "1009", "1010", "1014", "1015", "2999"]
    + ["5000", "0", "", "abc", "04000", "4000.0", "%2B4000", "-4000", "9" * 30],
)
@pytest.mark.parametrize("target", ["/connections/7", "/connections?all=true"])
def test_admin_close_refuses_other_codes(services: AdminServices, target: str, code: str) -> None:
    services.operations.snapshots.append(snapshot(7))
    sep = "&" if "?" in target else "?"
    err = refusal(ADMIN_PORT, services, request("DELETE", f"{target}{sep}code={code}"))
    assert isinstance(err, BadRequest)
    assert err.message in (
        "close code must be 1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999",
        "code must be a decimal number",
    )
    assert services.operations.calls == []


@pytest.mark.parametrize(
    ("reason", "ok"),
    [("x" * 123, True), ("x" * 124, False), ("é" * 61, True), ("é" * 62, False), ("", True)],
)
def test_admin_close_reason_fits_a_control_frame(
    services: AdminServices, reason: str, ok: bool
) -> None:
    services.operations.snapshots.append(snapshot(7))
    req = request("DELETE", f"/connections/7?reason={quote(reason)}")
    if ok:
        answer(ADMIN_PORT, services, req)
        assert services.operations.calls == [("close", 7, 4000, reason)]
    else:
        err = refusal(ADMIN_PORT, services, req)
        assert isinstance(err, BadRequest)
        assert err.message == "close reason must be at most 123 UTF-8 bytes"
        assert services.operations.calls == []


# ---------------------------------------------------------- DELETE /connections
def test_admin_bulk_close_needs_a_filter_or_all(services: AdminServices) -> None:
    services.operations.snapshots.append(snapshot(7))
    for query in ("", "?all=false", "?code=4000", "?reason=bye"):
        err = refusal(ADMIN_PORT, services, request("DELETE", "/connections" + query))
        assert isinstance(err, BadRequest) and "all=true" in err.message
    assert services.operations.calls == []


@pytest.mark.parametrize("value", ["TRUE", "1", "yes", ""])
def test_admin_bulk_close_all_is_true_or_false(services: AdminServices, value: str) -> None:
    err = refusal(ADMIN_PORT, services, request("DELETE", f"/connections?all={value}"))
    assert isinstance(err, BadRequest) and err.message == "all must be true or false"


@pytest.mark.parametrize(
    ("query", "call"),
    [
        ("all=true", ("close_matching", {}, 4000, "closed by operator")),
        (
            "application=MyApp",
            ("close_matching", {"application": "MyApp"}, 4000, "closed by operator"),
        ),
        (
            "api=Chat&version=1.0&code=1001&reason=bye",
            ("close_matching", {"api": "Chat", "version": "1.0"}, 1001, "bye"),
        ),
        (
            "key_type=SANDBOX&all=true",
            ("close_matching", {"key_type": "SANDBOX"}, 4000, "closed by operator"),
        ),
    ],
)
def test_admin_bulk_close(services: AdminServices, query: str, call: tuple[Any, ...]) -> None:
    services.operations.snapshots.extend([snapshot(1), snapshot(2, key_type="SANDBOX")])
    response, body = deleted(services, f"/connections?{query}")
    assert response.status == 200
    assert services.operations.calls[0] == call
    assert body == {"closed": len(services.operations.list_connections(call[1]))}


def test_admin_bulk_close_refuses_a_bad_query(services: AdminServices) -> None:
    for query, message in [*BAD_QUERIES[7:], ("limit=5", "unknown query parameter 'limit'")]:
        err = refusal(ADMIN_PORT, services, request("DELETE", f"/connections?{query}"))
        assert isinstance(err, BadRequest) and err.message.startswith(message), query
    assert services.operations.calls == []


# ------------------------------------------------------ POST /reload, POST /drain
def test_admin_reload_ok_is_200(services: AdminServices) -> None:
    services.operations.reload_result = {"result": "ok", "generation": 2, "restart_needed": []}
    response, body = answer(ADMIN_PORT, services, request("POST", "/reload"))
    assert response.status == 200 and orjson.loads(body)["generation"] == 2
    assert services.operations.calls == [("reload", "POST /reload")]


def test_admin_reload_failed_is_422_with_redacted_errors(services: AdminServices) -> None:
    services.operations.reload_result = {
        "result": "failed",
        "errors": ["wsgw.yaml:2: Expected a URL, got 'redis://:pw@h' - at $.gateway.redis_url"],
    }
    response, body = answer(ADMIN_PORT, services, request("POST", "/reload"))
    assert response.status == 422
    assert orjson.loads(body) == {
        "result": "failed",
        "errors": ["wsgw.yaml:2: Expected a URL - at $.gateway.redis_url"],
    }


def test_admin_drain_is_202(services: AdminServices) -> None:
    response, body = answer(ADMIN_PORT, services, request("POST", "/drain"))
    assert response.status == 202
    assert orjson.loads(body) == {"status": "draining", "connections": 2}
    assert services.operations.calls == [("drain", "POST /drain")]


@pytest.mark.parametrize("target", ["/reload?now=1", "/drain?x", "/drain?force=true"])
def test_admin_reload_and_drain_take_no_parameters(services: AdminServices, target: str) -> None:
    assert isinstance(refusal(ADMIN_PORT, services, request("POST", target)), BadRequest)
    assert services.operations.calls == []


# ------------------------------------------------------- POST /oauth2/revoke
def revoke_request(body: str, method: str = "POST") -> Request:
    return request(method, "/oauth2/revoke", {"Content-Type": FORM}, body.encode())


def test_gateway_revoke_endpoint_revokes_the_clients_token(services: AdminServices) -> None:
    token = token_for(services)
    body = f"token={token}&client_id=ck-prod&client_secret={SECRETS['ck-prod']}"
    response, raw = answer(GATEWAY_PORT, services, revoke_request(body))
    assert (response.status, raw) == (200, b"")
    assert response.headers.get("cache-control") == "no-store"
    claims = services.verifier.verify(token)
    assert services.operations.revoked == [Revocation("jti", claims.jti, claims.expires_at)]


def test_gateway_revoke_endpoint_refuses_another_clients_token(services: AdminServices) -> None:
    token = token_for(services, "OtherApp")
    body = f"token={token}&client_id=ck-prod&client_secret={SECRETS['ck-prod']}"
    response, raw = answer(GATEWAY_PORT, services, revoke_request(body))
    assert (response.status, orjson.loads(raw)["error"]) == (400, "unauthorized_client")
    assert services.operations.revoked == []


def test_gateway_revoke_endpoint_with_a_wrong_secret_is_401_and_counted(
    services: AdminServices,
) -> None:
    body = f"token={token_for(services)}&client_id=ck-prod&client_secret=wrong"
    response, _ = answer(GATEWAY_PORT, services, revoke_request(body))
    assert response.status == 401
    assert services.telemetry.token_failures[("invalid_client",)] == 1
    assert services.operations.revoked == []


def test_gateway_revoke_endpoint_answers_get_itself(services: AdminServices) -> None:
    response, _ = answer(GATEWAY_PORT, services, request("GET", "/oauth2/revoke"))
    assert (response.status, response.headers.get("allow")) == (405, "POST")


def test_gateway_health_405_says_allow_get(services: AdminServices) -> None:
    err = refusal(GATEWAY_PORT, services, request("POST", "/health"))
    assert parse_response(error_response(err))[0].headers.get("allow") == "GET"


def test_gateway_port_serves_no_admin_route(services: AdminServices) -> None:
    for method, target in OPEN_ROUTES:
        assert isinstance(refusal(GATEWAY_PORT, services, request(method, target)), NotFound)
    assert services.operations.calls == []


# --------------------------------------------------- the admin port and browsers
@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("POST", "/drain", {"Origin": "https://evil.example"}),
        ("DELETE", "/connections?all=true", {"Origin": "null"}),
        ("GET", "/connections", {"Sec-Fetch-Site": "cross-site"}),
        ("POST", "/reload", {"Sec-Fetch-Site": "same-site"}),
        ("GET", "/connections", {"Host": "rebound.evil.example"}),
        ("GET", "/metrics", {"Host": "10.0.0.1:9901"}),
    ],
)
def test_admin_refuses_what_a_web_page_could_send(
    services: StageServices, method: str, target: str, headers: dict[str, str]
) -> None:
    """A page on any site (or one DNS-rebound to 127.0.0.1) must not drain the gateway,
    close connections or read them."""
    req = request(method, target, {"Host": "127.0.0.1:9901", **headers})
    if "Host" in headers:  # replace the default Host line
        lines = [f"{method} {target} HTTP/1.1", f"Host: {headers['Host']}"]
        if method == "POST":
            lines.append("Content-Length: 0")
        req = parse_request(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    err = refusal(ADMIN_PORT, services, req)
    assert err.http_status == 403


def test_admin_answers_a_typed_url_and_health_to_anyone(services: StageServices) -> None:
    response, _ = answer(
        ADMIN_PORT, services, request("GET", "/connections", {"Sec-Fetch-Site": "none"})
    )
    assert response.status == 200
    response, _ = answer(ADMIN_PORT, services, request("GET", "/health", {"Origin": "https://x"}))
    assert response.status == 200
