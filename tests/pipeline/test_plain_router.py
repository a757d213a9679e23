"""The plain-HTTP routers (wsgw/plain_http.py): what the gateway port and the admin port
answer to requests that are not upgrades, parsed from bytes, over a real services bundle."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.pipeline.test_stages import (
    SECRETS,
    StageServices,
    build_services,
    new_key,
    parse_request,
    upgrade_request,
)
from wsgw import _core
from wsgw.errors import BadRequest, GatewayError, MethodNotAllowed, NotFound, UpgradeRequired
from wsgw.http import Request, Response, ResponseReader, error_response
from wsgw.oauth.keys import SigningKey
from wsgw.pipeline.metrics import CONTENT_TYPE
from wsgw.plain_http import ADMIN_PORT, GATEWAY_PORT, Router

PEER = "192.0.2.10"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def services(signing_key: SigningKey) -> StageServices:
    return build_services(signing_key)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return new_key(tmp_path_factory.mktemp("keys"))


def request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Request:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw.example"]
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
@pytest.mark.parametrize("target", ["/health", "/metrics", "/nowhere"])
@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD"])
def test_admin_refuses_non_get_before_the_path(
    services: StageServices, method: str, target: str
) -> None:
    err = refusal(ADMIN_PORT, services, request(method, target))
    assert isinstance(err, MethodNotAllowed) and err.http_status == 405


def test_admin_health_reports_the_connection_count(services: StageServices) -> None:
    services.connections.update({object(), object(), object()})
    response, body = answer(ADMIN_PORT, services, request("GET", "/health"))
    assert response.status == 200
    assert orjson.loads(body) == {
        "status": "ok",
        "connections": 3,
        "core": _core.IMPLEMENTATION,
    }


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
