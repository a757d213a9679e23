"""The handshake stages (wsgw/pipeline/stages.py), each on its own, then run in order.

Everything is real except the socket: requests are parsed from bytes by RequestReader; the
route table, registry and throttle are compiled from a real config and subscriptions; tokens
are signed with a freshly generated key. The HTTP leg's `open_backend` (the pipeline's one
I/O boundary) is a backend that parses the upgrade it is sent and answers with bytes that
ResponseReader parses.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wsgw.config import GatewayConfig, Subscriptions, check_subscriptions
from wsgw.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    InvalidToken,
    NotFound,
    TooManyRequests,
    UpgradeRequired,
)
from wsgw.http import Request, RequestReader, Response, ResponseReader, accept_key, render_response
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.keys import SigningKey, generate_signing_key, load_signing_key
from wsgw.oauth.revocation import RevocationList
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier
from wsgw.pipeline import stages
from wsgw.pipeline.compression import AS_NEGOTIATED, SelfContained
from wsgw.pipeline.handshake import BackendAnswer, ClientOffer
from wsgw.pipeline.route import Backend, RouteTable
from wsgw.pipeline.stages import STAGES, Handshake, run_stages
from wsgw.pipeline.subscription import Grant, SubscriptionRegistry
from wsgw.pipeline.telemetry import Telemetry
from wsgw.pipeline.throttle import Throttle
from wsgw.services import RuntimeState, Services

# ---------------------------------------------------------------- the config
ISSUER = "wsgw-test"
PROD_URL = "ws://prod.internal:7001/chat-backend"
SANDBOX_URL = "wss://sandbox.internal/sbx/"
CHAT2_URL = "ws://prod.internal:7002"
PUBLIC_URL = "ws://public.internal:7003/feed"
SECRETS = {"ck-prod": "prod-secret", "ck-sbx": "sandbox-secret", "ck-other": "other-secret"}
CONSUMER_KEYS = {
    ("MyApp", "PRODUCTION"): "ck-prod",
    ("MyApp", "SANDBOX"): "ck-sbx",
    ("OtherApp", "PRODUCTION"): "ck-other",
}

CONFIG: GatewayConfig = msgspec.convert(
    {
        "security": {"issuer": ISSUER},
        "tiers": {
            "Gold": {"messages_per_minute": 600, "max_connections": 1},
            "Silver": {"messages_per_minute": 60},
            "AppTier": {"max_connections": 2},
            "ApiPolicy": {"messages_per_minute": 1000, "max_connections": 100},
        },
        "apis": [
            {
                "name": "Chat",
                "context": "/chat",
                "version": "1.0",
                "default_version": True,
                "endpoints": {"production": PROD_URL, "sandbox": SANDBOX_URL},
                "tiers": ["Gold", "Silver"],
            },
            {
                "name": "Chat",
                "context": "/chat",
                "version": "2.0",
                "endpoints": {"production": CHAT2_URL},  # no sandbox endpoint
                "tiers": ["Silver"],
            },
            {
                "name": "Public",
                "context": "/public",
                "version": "1.0",
                "auth": "none",
                "endpoints": {"production": PUBLIC_URL},
                "throttle": "ApiPolicy",
            },
            {
                "name": "Frozen",
                "context": "/frozen",
                "version": "1.0",
                "status": "BLOCKED",
                "endpoints": {"production": "ws://frozen.internal"},
                "tiers": ["Gold"],
            },
        ],
    },
    GatewayConfig,
)


def _keys(consumer_key: str, secret: str) -> dict[str, str]:
    return {
        "consumer_key": consumer_key,
        "consumer_secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
    }


def make_subscriptions(my_app_production_key: str = "ck-prod") -> Subscriptions:
    """MyApp (tier AppTier) subscribes to Chat 1.0, Chat 2.0 and the BLOCKED Frozen API;
    OtherApp's one subscription is BLOCKED."""
    subs = msgspec.convert(
        {
            "applications": [
                {
                    "name": "MyApp",
                    "tier": "AppTier",
                    "keys": {
                        "production": _keys(my_app_production_key, SECRETS["ck-prod"]),
                        "sandbox": _keys("ck-sbx", SECRETS["ck-sbx"]),
                    },
                    "subscriptions": [
                        {"api": "Chat", "version": "1.0", "tier": "Gold"},
                        {"api": "Chat", "version": "2.0", "tier": "Silver"},
                        {"api": "Frozen", "version": "1.0", "tier": "Gold"},
                    ],
                },
                {
                    "name": "OtherApp",
                    "keys": {"production": _keys("ck-other", SECRETS["ck-other"])},
                    "subscriptions": [
                        {"api": "Chat", "version": "1.0", "tier": "Silver", "status": "BLOCKED"}
                    ],
                },
            ]
        },
        Subscriptions,
    )
    assert check_subscriptions(CONFIG, subs) == []
    return subs


@dataclass(frozen=True, slots=True, eq=False)
class StageServices:
    """The parts of wsgw.services.Services that the stages and the plain router use."""

    routes: RouteTable
    verifier: TokenVerifier
    issuer: TokenIssuer
    registry: SubscriptionRegistry
    throttle: Throttle
    telemetry: Telemetry
    token_guard: TokenGuard
    connections: set[Any] = field(default_factory=set)
    revocations: RevocationList = field(default_factory=RevocationList)
    state: RuntimeState = field(default_factory=RuntimeState)


def build_services(key: SigningKey, subscriptions: Subscriptions | None = None) -> StageServices:
    subscriptions = subscriptions if subscriptions is not None else make_subscriptions()
    return StageServices(
        routes=RouteTable(CONFIG),
        verifier=TokenVerifier(key, ISSUER),
        issuer=TokenIssuer(key, ISSUER, CONFIG.security.token_ttl_s),
        registry=SubscriptionRegistry(CONFIG, subscriptions),
        throttle=Throttle(),
        telemetry=Telemetry(
            api_labels=[(api.name, api.version) for api in CONFIG.apis],
            application_labels=[app.name for app in subscriptions.applications],
        ),
        token_guard=TokenGuard.from_config(CONFIG.security.token_failures),
    )


def new_key(directory: Path) -> SigningKey:
    path = directory / "signing.pem"
    generate_signing_key(path)
    return load_signing_key(path)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return new_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def services(signing_key: SigningKey) -> StageServices:
    return build_services(signing_key)


def token_for(services: StageServices, app: str = "MyApp", key_type: str = "PRODUCTION") -> str:
    return services.issuer.issue(app, key_type, CONSUMER_KEYS[(app, key_type)])[0]


# ------------------------------------------------------------- the requests
CLIENT_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample nonce
PEER = "203.0.113.7"
BASE_HEADERS = (
    ("Host", "gw.example"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", CLIENT_KEY),
    ("Sec-WebSocket-Version", "13"),
)
Headers = list[tuple[str, str]] | tuple[tuple[str, str], ...]


def parse_request(raw: bytes) -> Request:
    request = RequestReader().feed(raw)
    assert request is not None, "incomplete request"
    return request


def upgrade_request(
    target: str = "/chat/1.0",
    headers: Headers = (),
    *,
    drop: tuple[str, ...] = (),
    method: str = "GET",
) -> Request:
    """An upgrade request as a client sends it: BASE_HEADERS but `drop`, then `headers`."""
    dropped = {name.lower() for name in drop}
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{n}: {v}" for n, v in BASE_HEADERS if n.lower() not in dropped]
    lines += [f"{n}: {v}" for n, v in headers]
    return parse_request(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def switching_protocols(request: Request, *extra: tuple[str, str]) -> bytes:
    """A backend's correct 101 to `request`, with `extra` headers."""
    accept = accept_key(request.headers.get("sec-websocket-key") or "")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    return render_response(101, [*headers, *extra])


class ScriptedBackend:
    """`open_backend` without a socket: parses the upgrade it is sent, as a backend would,
    and answers with the bytes of `answer(request)`, parsed by ResponseReader."""

    def __init__(self, answer: Callable[[Request], bytes] = switching_protocols) -> None:
        self.answer = answer
        self.calls: list[tuple[Backend, Request]] = []

    async def open(self, backend: Backend, upgrade: bytes) -> Response:
        request = parse_request(upgrade)
        self.calls.append((backend, request))
        response = ResponseReader().feed(self.answer(request))
        assert response is not None, "incomplete response"
        return response


def new_hs(
    services: StageServices, request: Request, backend: ScriptedBackend | None = None
) -> Handshake:
    open_backend = (backend or ScriptedBackend()).open
    return Handshake(services, request, PEER, False, open_backend)


async def advanced(
    services: StageServices,
    request: Request,
    until: Callable[[Handshake], Awaitable[None] | None],
    backend: ScriptedBackend | None = None,
) -> Handshake:
    """A Handshake that went through every stage before `until`."""
    hs = new_hs(services, request, backend)
    err = await run_stages(hs, STAGES[: STAGES.index(until)])
    assert err is None, err
    return hs


def test_stage_services_are_a_subset_of_the_real_bundle() -> None:
    """The stand-in bundle names its parts as wsgw.services.Services does."""
    real = {f.name for f in fields(Services)}
    assert {f.name for f in fields(StageServices)} <= real


# ---------------------------------------------------------------------- route
@pytest.mark.parametrize(
    ("target", "api", "suffix"),
    [
        ("/chat/1.0/more?x=1", ("Chat", "1.0"), "/more"),
        ("/chat/2.0", ("Chat", "2.0"), ""),
        ("/chat/more/deeper", ("Chat", "1.0"), "/more/deeper"),  # the default version
        ("/chat", ("Chat", "1.0"), ""),
        ("/public/1.0/", ("Public", "1.0"), "/"),
        # A decoded dot segment is resolved before routing, never sent on: /chat/x.
        ("/chat/2.0/%2e%2e/x", ("Chat", "1.0"), "/x"),
    ],
)
def test_route_finds_the_api_and_the_suffix(
    services: StageServices, target: str, api: tuple[str, str], suffix: str
) -> None:
    hs = new_hs(services, upgrade_request(target))
    stages.route(hs)
    assert hs.api is not None
    assert ((hs.api.name, hs.api.version), hs.suffix) == (api, suffix)


@pytest.mark.parametrize("target", ["/nothing/1.0", "/", "/chatter/1.0", "/frozen2"])
def test_route_refuses_an_unknown_path(services: StageServices, target: str) -> None:
    hs = new_hs(services, upgrade_request(target))
    with pytest.raises(NotFound) as exc:
        stages.route(hs)
    assert exc.value.http_status == 404
    assert hs.route is None


def test_route_refuses_an_unconfigured_version_of_a_context_without_default(
    services: StageServices,
) -> None:
    hs = new_hs(services, upgrade_request("/public/9.9"))
    with pytest.raises(NotFound, match="no such API version"):
        stages.route(hs)


@pytest.mark.parametrize(
    "target",
    ["/chat/1.0/%2e%2e%2fadmin", "/chat/1.0/%2e%2e;x/admin", "/chat/1.0/..%5cadmin", "/chat/%00"],
)
def test_route_refuses_a_path_that_could_climb_on_a_backend(
    services: StageServices, target: str
) -> None:
    hs = new_hs(services, upgrade_request(target))
    with pytest.raises(BadRequest) as exc:
        stages.route(hs)
    assert exc.value.http_status == 400


# -------------------------------------------------------------- check_upgrade
def test_check_upgrade_reads_the_offer(services: StageServices) -> None:
    """Subprotocols kept in order; of the extensions, only permessage-deflate offers."""
    request = upgrade_request(
        headers=[
            ("Sec-WebSocket-Protocol", "chat.v2, chat.v1"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-foo"),
        ]
    )
    hs = new_hs(services, request)
    stages.check_upgrade(hs)
    assert hs.offer == ClientOffer(
        key=CLIENT_KEY,
        subprotocols=("chat.v2", "chat.v1"),
        extensions=("permessage-deflate; client_max_window_bits",),
    )


@pytest.mark.parametrize(
    ("drop", "headers", "method", "message"),
    [
        (("Upgrade",), [], "GET", "send an upgrade request"),
        (("Upgrade", "Connection"), [], "GET", "send an upgrade request"),
        (("Upgrade",), [("Upgrade", "h2c")], "GET", "send an upgrade request"),
        ((), [], "POST", "requires GET"),
        (("Sec-WebSocket-Version",), [("Sec-WebSocket-Version", "8")], "GET", "Version"),
        (("Sec-WebSocket-Version",), [], "GET", "Version"),
    ],
)
def test_check_upgrade_requires_a_websocket_upgrade(
    services: StageServices, drop: tuple[str, ...], headers: Headers, method: str, message: str
) -> None:
    hs = new_hs(services, upgrade_request(headers=headers, drop=drop, method=method))
    with pytest.raises(UpgradeRequired, match=message) as exc:
        stages.check_upgrade(hs)
    assert exc.value.http_status == 426
    assert exc.value.extra_headers() == [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    assert hs.offer is None


@pytest.mark.parametrize(
    "keys",
    [
        ["not base64!"],
        [base64.b64encode(b"x" * 15).decode()],  # 15 bytes, not 16
        [base64.b64encode(b"x" * 16).decode().rstrip("=")],  # unpadded
        [CLIENT_KEY, CLIENT_KEY],  # twice
        [],
    ],
)
def test_check_upgrade_refuses_a_bad_key(services: StageServices, keys: list[str]) -> None:
    request = upgrade_request(
        headers=[("Sec-WebSocket-Key", k) for k in keys], drop=("Sec-WebSocket-Key",)
    )
    with pytest.raises(BadRequest, match="invalid Sec-WebSocket-Key"):
        stages.check_upgrade(new_hs(services, request))


@pytest.mark.parametrize("hosts", [[], ["gw.example", "evil.example"]])
def test_check_upgrade_wants_exactly_one_host(services: StageServices, hosts: list[str]) -> None:
    request = upgrade_request(headers=[("Host", h) for h in hosts], drop=("Host",))
    with pytest.raises(BadRequest, match="exactly one Host"):
        stages.check_upgrade(new_hs(services, request))


# --------------------------------------------------------------- authenticate
def authenticated(services: StageServices, request: Request) -> Handshake:
    hs = new_hs(services, request)
    stages.route(hs)
    stages.authenticate(hs)
    return hs


def test_authenticate_takes_a_bearer_header(services: StageServices) -> None:
    hs = authenticated(services, upgrade_request("/chat/1.0?x=1", bearer(token_for(services))))
    assert hs.claims is not None
    assert (hs.claims.application, hs.claims.key_type, hs.claims.consumer_key) == (
        "MyApp",
        "PRODUCTION",
        "ck-prod",
    )
    assert hs.query == "x=1"


def test_authenticate_takes_the_query_token_out_of_the_query(services: StageServices) -> None:
    token = token_for(services, "MyApp", "SANDBOX")
    hs = authenticated(services, upgrade_request(f"/chat/1.0?b=2&access_token={token}&a=1&c"))
    assert hs.claims is not None
    assert (hs.claims.application, hs.claims.key_type) == ("MyApp", "SANDBOX")
    assert hs.query == "b=2&a=1&c"  # the other parameters, in their order


def test_authenticate_refuses_a_token_in_header_and_query(services: StageServices) -> None:
    token = token_for(services)
    request = upgrade_request(f"/chat/1.0?access_token={token}", bearer(token))
    with pytest.raises(BadRequest, match="given twice"):
        authenticated(services, request)


def test_authenticate_refuses_two_query_tokens(services: StageServices) -> None:
    token = token_for(services)
    request = upgrade_request(f"/chat/1.0?access_token={token}&access_token={token}")
    with pytest.raises(BadRequest, match="access_token given twice"):
        authenticated(services, request)


def test_authenticate_refuses_two_authorization_headers(services: StageServices) -> None:
    token = token_for(services)
    with pytest.raises(BadRequest, match="more than one Authorization"):
        authenticated(services, upgrade_request(headers=bearer(token) + bearer(token)))


def test_authenticate_without_a_token_is_401_with_a_challenge(services: StageServices) -> None:
    with pytest.raises(InvalidToken, match="missing access token") as exc:
        authenticated(services, upgrade_request("/chat/1.0?x=1"))
    assert exc.value.http_status == 401
    assert exc.value.extra_headers() == [("WWW-Authenticate", 'Bearer error="invalid_token"')]


def test_authenticate_refuses_an_expired_token(
    services: StageServices, signing_key: SigningKey
) -> None:
    hours_ago = TokenIssuer(signing_key, ISSUER, 3600, clock=lambda: time.time() - 7200)
    token = hours_ago.issue("MyApp", "PRODUCTION", "ck-prod")[0]
    with pytest.raises(InvalidToken, match="^access token expired$"):
        authenticated(services, upgrade_request(headers=bearer(token)))


def test_authenticate_refuses_a_token_signed_by_another_key(
    services: StageServices, tmp_path: Path
) -> None:
    forged = TokenIssuer(new_key(tmp_path), ISSUER, 3600).issue("MyApp", "PRODUCTION", "ck-prod")
    with pytest.raises(InvalidToken, match="^invalid access token$"):
        authenticated(services, upgrade_request(headers=bearer(forged[0])))


@pytest.mark.parametrize(
    ("headers", "target", "message"),
    [
        ([("Authorization", "Bearer garbage")], "/chat/1.0", "^invalid access token$"),
        ([], "/chat/1.0?access_token=a.b.c", "^invalid access token$"),
        ([], "/chat/1.0?access_token=", "^missing access token$"),
        ([("Authorization", "Basic Y2stcHJvZDpwcm9kLXNlY3JldA==")], "/chat/1.0", "Bearer"),
        ([("Authorization", "Bearer ")], "/chat/1.0", "Bearer"),
    ],
)
def test_authenticate_refuses_a_bad_token(
    services: StageServices, headers: Headers, target: str, message: str
) -> None:
    with pytest.raises(InvalidToken, match=message):
        authenticated(services, upgrade_request(target, headers))


def test_auth_none_strips_a_stray_token_and_sets_no_claims(services: StageServices) -> None:
    hs = authenticated(services, upgrade_request("/public/1.0?access_token=stray&x=1"))
    assert hs.claims is None
    assert hs.query == "x=1"


def test_auth_none_ignores_an_authorization_header(services: StageServices) -> None:
    """Not even a garbage Bearer token is looked at on an `auth: none` API."""
    hs = authenticated(services, upgrade_request("/public/1.0", bearer("garbage")))
    assert hs.claims is None
    assert hs.query == ""


# ------------------------------------------------------------------ authorize
def authorized(services: StageServices, request: Request) -> Handshake:
    hs = authenticated(services, request)
    stages.authorize(hs)
    return hs


def test_authorize_grants_the_subscription_and_application_tiers(
    services: StageServices,
) -> None:
    hs = authorized(services, upgrade_request(headers=bearer(token_for(services))))
    assert hs.grant == Grant(
        "MyApp", "PRODUCTION", CONFIG.tiers["Gold"], CONFIG.tiers["AppTier"], "Gold"
    )
    assert hs.grant.subscription_tier is CONFIG.tiers["Gold"]
    assert hs.grant.application_tier is CONFIG.tiers["AppTier"]


def test_authorize_grants_an_application_without_a_tier(services: StageServices) -> None:
    hs = authorized(
        services, upgrade_request("/chat/2.0", bearer(token_for(services, "MyApp", "SANDBOX")))
    )
    assert hs.grant == Grant(
        "MyApp", "SANDBOX", CONFIG.tiers["Silver"], CONFIG.tiers["AppTier"], "Silver"
    )


@pytest.mark.parametrize(
    ("app", "target", "message"),
    [
        ("OtherApp", "/chat/2.0", "^application is not subscribed to Chat:2.0$"),
        ("OtherApp", "/chat/1.0", "^subscription to Chat:1.0 is BLOCKED$"),
        ("MyApp", "/frozen/1.0", "^API Frozen:1.0 is BLOCKED, not PUBLISHED$"),
    ],
)
def test_authorize_forbids(services: StageServices, app: str, target: str, message: str) -> None:
    request = upgrade_request(target, bearer(token_for(services, app)))
    with pytest.raises(Forbidden, match=message) as exc:
        authorized(services, request)
    assert exc.value.http_status == 403


def test_authorize_revokes_a_token_of_a_regenerated_key(signing_key: SigningKey) -> None:
    """MyApp's production key is now ck-prod-2: a well-signed token for ck-prod is dead."""
    services = build_services(signing_key, make_subscriptions("ck-prod-2"))
    with pytest.raises(InvalidToken, match="^access token revoked$") as exc:
        authorized(services, upgrade_request(headers=bearer(token_for(services))))
    assert exc.value.http_status == 401


def test_authorize_revokes_a_token_of_a_removed_application(signing_key: SigningKey) -> None:
    services = build_services(signing_key, Subscriptions())
    with pytest.raises(InvalidToken, match="^access token revoked$"):
        authorized(services, upgrade_request(headers=bearer(token_for(services))))


def test_authorize_grants_anonymous_on_auth_none(services: StageServices) -> None:
    hs = authorized(services, upgrade_request("/public/1.0"))
    assert hs.grant == Grant("anonymous", "PRODUCTION", None, None)


# ------------------------------------------------------------- choose_backend
@pytest.mark.parametrize(
    ("target", "key_type", "backend"),
    [
        (
            "/chat/1.0",
            "PRODUCTION",
            Backend(PROD_URL, "prod.internal", 7001, False, "/chat-backend"),
        ),
        ("/chat/1.0", "SANDBOX", Backend(SANDBOX_URL, "sandbox.internal", 443, True, "/sbx")),
        ("/chat/2.0", "PRODUCTION", Backend(CHAT2_URL, "prod.internal", 7002, False, "")),
    ],
)
def test_choose_backend_follows_the_key_type(
    services: StageServices, target: str, key_type: str, backend: Backend
) -> None:
    hs = authorized(
        services, upgrade_request(target, bearer(token_for(services, "MyApp", key_type)))
    )
    stages.choose_backend(hs)
    assert hs.backend == backend


def test_choose_backend_of_anonymous_is_production(services: StageServices) -> None:
    hs = authorized(services, upgrade_request("/public/1.0"))
    stages.choose_backend(hs)
    assert hs.backend == Backend(PUBLIC_URL, "public.internal", 7003, False, "/feed")


def test_choose_backend_forbids_a_key_type_without_an_endpoint(services: StageServices) -> None:
    token = token_for(services, "MyApp", "SANDBOX")
    hs = authorized(services, upgrade_request("/chat/2.0", bearer(token)))
    with pytest.raises(Forbidden, match="^API Chat:2.0 has no sandbox endpoint$"):
        stages.choose_backend(hs)
    assert hs.backend is None


# ---------------------------------------------------------------------- admit
async def at_admit(services: StageServices, target: str = "/chat/1.0") -> Handshake:
    headers = [] if target.startswith("/public") else bearer(token_for(services))
    return await advanced(services, upgrade_request(target, headers), until=stages.admit)


async def test_admit_takes_the_capped_slots(services: StageServices) -> None:
    hs = await at_admit(services)
    await stages.admit(hs)
    assert hs.admission is not None and hs.admission.holds_slots
    slots = services.throttle.slots
    assert (slots.held("sub:MyApp:Chat:1.0"), slots.held("app:MyApp")) == (1, 1)
    assert hs.admission.client_gate is not None  # Gold counts both directions
    assert hs.admission.backend_gate is not None
    assert hs.admission.max_duration_s is None


async def test_admit_refuses_past_max_connections_and_counts_it(services: StageServices) -> None:
    first, second = await at_admit(services), await at_admit(services)
    await stages.admit(first)
    with pytest.raises(TooManyRequests) as exc:
        await stages.admit(second)
    assert (exc.value.scope, exc.value.http_status) == ("subscription", 429)
    assert exc.value.extra_headers() == [("Retry-After", "1")]
    assert second.admission is None
    assert dict(services.telemetry.throttled_counts) == {
        ("Chat", "1.0", "MyApp", "subscription", "refuse"): 1
    }


async def test_release_gives_the_slot_back(services: StageServices) -> None:
    first = await at_admit(services)
    await stages.admit(first)
    assert first.admission is not None
    await first.admission.release()
    assert services.throttle.slots.held("sub:MyApp:Chat:1.0") == 0
    again = await at_admit(services)
    await stages.admit(again)
    assert again.admission is not None and again.admission.holds_slots
    assert not services.telemetry.throttled_counts


async def test_admit_refused_by_a_later_scope_gives_back_the_earlier_slots(
    services: StageServices,
) -> None:
    """AppTier allows MyApp 2 connections: with both on Chat 2.0, Chat 1.0's subscription
    slot is taken, then given back when the application's cap refuses."""
    for _ in range(2):
        await stages.admit(await at_admit(services, "/chat/2.0"))
    hs = await at_admit(services)
    with pytest.raises(TooManyRequests) as exc:
        await stages.admit(hs)
    assert exc.value.scope == "application"
    slots = services.throttle.slots
    assert (slots.held("sub:MyApp:Chat:1.0"), slots.held("app:MyApp")) == (0, 2)
    assert dict(services.telemetry.throttled_counts) == {
        ("Chat", "1.0", "MyApp", "application", "refuse"): 1
    }


async def test_admit_of_anonymous_takes_the_api_slot_only(services: StageServices) -> None:
    hs = await at_admit(services, "/public/1.0")
    await stages.admit(hs)
    slots = services.throttle.slots
    assert slots.held("api:Public:1.0") == 1
    assert (slots.held("sub:anonymous:Public:1.0"), slots.held("app:anonymous")) == (0, 0)


# ------------------------------------------------------------ backend_request
async def test_backend_request_is_the_upgrade_the_backend_gets(services: StageServices) -> None:
    """Exactly these headers: no Authorization, no Cookie; the client's X-Forwarded-For
    extended with the peer; a key of our own."""
    token = token_for(services)
    request = upgrade_request(
        f"/chat/1.0/more?x=1&access_token={token}&y=2",
        [
            ("Origin", "https://app.example"),
            ("User-Agent", "client/1.0"),
            ("Cookie", "session=secret"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("Sec-WebSocket-Protocol", "chat.v1"),
        ],
    )
    hs = await advanced(services, request, until=stages.connect)
    assert hs.upgrade.startswith(b"GET /chat-backend/more?x=1&y=2 HTTP/1.1\r\n")
    sent = parse_request(hs.upgrade)
    assert sent.is_upgrade and sent.trailing == b""
    assert sent.headers.items == [
        ("host", "prod.internal:7001"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", hs.key),
        ("sec-websocket-version", "13"),
        ("origin", "https://app.example"),
        ("user-agent", "client/1.0"),
        ("sec-websocket-protocol", "chat.v1"),
        ("x-forwarded-for", f"198.51.100.1, {PEER}"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "gw.example"),
    ]
    assert token.encode() not in hs.upgrade


async def test_backend_request_never_forwards_the_bearer_header(services: StageServices) -> None:
    token = token_for(services)
    hs = await advanced(services, upgrade_request("/chat/1.0", bearer(token)), until=stages.connect)
    assert hs.upgrade.startswith(b"GET /chat-backend HTTP/1.1\r\n")
    assert parse_request(hs.upgrade).headers.get("authorization") is None
    assert token.encode() not in hs.upgrade


async def test_backend_request_of_auth_none_drops_header_and_query_tokens(
    services: StageServices,
) -> None:
    request = upgrade_request("/public/1.0/a?access_token=stray", bearer("garbage"))
    hs = await advanced(services, request, until=stages.connect)
    assert hs.upgrade.startswith(b"GET /feed/a HTTP/1.1\r\n")
    assert b"stray" not in hs.upgrade and b"garbage" not in hs.upgrade


async def test_backend_request_uses_a_fresh_key_each_time(services: StageServices) -> None:
    keys = set()
    for _ in range(2):
        hs = await advanced(
            services, upgrade_request("/chat/2.0", bearer(token_for(services))), stages.connect
        )
        assert len(base64.b64decode(hs.key, validate=True)) == 16
        keys.add(hs.key)
    assert len(keys) == 2 and CLIENT_KEY not in keys


async def test_backend_request_forwards_the_deflate_offer_and_the_scheme(
    services: StageServices,
) -> None:
    request = upgrade_request(
        headers=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
        + bearer(token_for(services))
    )
    hs = new_hs(services, request)
    hs.secure = True
    assert await run_stages(hs, STAGES[: STAGES.index(stages.connect)]) is None
    sent = parse_request(hs.upgrade).headers
    assert sent.get("sec-websocket-extensions") == "permessage-deflate; client_max_window_bits"
    assert sent.get("x-forwarded-proto") == "https"


# -------------------------------------------------------------------- connect
async def test_connect_sends_the_upgrade_and_keeps_the_response(services: StageServices) -> None:
    backend = ScriptedBackend()
    request = upgrade_request(headers=bearer(token_for(services)))
    hs = await advanced(services, request, until=stages.connect, backend=backend)
    assert (hs.response, hs.failure) == (None, "refused")
    await stages.connect(hs)
    assert hs.response is not None
    assert (hs.response.status, hs.response.headers.get("sec-websocket-accept")) == (
        101,
        accept_key(hs.key),
    )
    assert hs.failure == "bad_handshake"
    [(target, received)] = backend.calls
    assert target is hs.backend
    assert received.headers.get("sec-websocket-key") == hs.key


async def test_connect_that_fails_leaves_the_failure_refused(services: StageServices) -> None:
    async def refusing(backend: Backend, upgrade: bytes) -> Response:
        raise BadGateway("backend refused the connection")

    hs = await advanced(
        services, upgrade_request(headers=bearer(token_for(services))), stages.connect
    )
    hs.open_backend = refusing
    with pytest.raises(BadGateway):
        await stages.connect(hs)
    assert (hs.response, hs.failure) == (None, "refused")


# --------------------------------------------------------------- check_answer
async def answered(
    services: StageServices,
    answer: Callable[[Request], bytes],
    headers: Headers = (),
) -> Handshake:
    request = upgrade_request(headers=[*headers, *bearer(token_for(services))])
    return await advanced(services, request, stages.check_answer, ScriptedBackend(answer))


async def test_check_answer_accepts_a_correct_101(services: StageServices) -> None:
    hs = await answered(services, switching_protocols)
    stages.check_answer(hs)
    assert hs.answer == BackendAnswer(None, None, False, AS_NEGOTIATED)


async def test_check_answer_keeps_the_chosen_subprotocol(services: StageServices) -> None:
    hs = await answered(
        services,
        lambda r: switching_protocols(r, ("Sec-WebSocket-Protocol", "chat.v1")),
        [("Sec-WebSocket-Protocol", "chat.v2, chat.v1")],
    )
    stages.check_answer(hs)
    assert hs.answer is not None and hs.answer.subprotocol == "chat.v1"


async def test_check_answer_of_deflate_asks_the_client_for_no_context_takeover(
    services: StageServices,
) -> None:
    """Gold drops client messages over the limit: each must inflate on its own."""
    hs = await answered(
        services,
        lambda r: switching_protocols(r, ("Sec-WebSocket-Extensions", "permessage-deflate")),
        [("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    stages.check_answer(hs)
    assert hs.answer == BackendAnswer(
        subprotocol=None,
        extensions="permessage-deflate; client_no_context_takeover",
        permessage_deflate=True,
        self_contained=SelfContained(client=True, backend=False),
    )


def wrong_accept(request: Request) -> bytes:
    accept = accept_key(CLIENT_KEY)  # the client's key, not the one we sent
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    return render_response(101, headers)


@pytest.mark.parametrize(
    ("answer", "offered", "message"),
    [
        (wrong_accept, [], "invalid WebSocket handshake"),
        (lambda r: render_response(403, [], b"go away"), [], r"refused .* \(HTTP 403\)"),
        (lambda r: render_response(200, [], b"hello"), [], r"\(HTTP 200\)"),
        (
            lambda r: switching_protocols(r, ("Sec-WebSocket-Protocol", "chat.v3")),
            [("Sec-WebSocket-Protocol", "chat.v1")],
            "subprotocol the client did not offer",
        ),
        (
            lambda r: switching_protocols(r, ("Sec-WebSocket-Extensions", "permessage-deflate")),
            [],
            "extension the client did not offer",
        ),
    ],
)
async def test_check_answer_refuses_a_bad_answer_as_bad_gateway(
    services: StageServices,
    answer: Callable[[Request], bytes],
    offered: Headers,
    message: str,
) -> None:
    hs = await answered(services, answer, offered)
    with pytest.raises(BadGateway, match=message) as exc:
        stages.check_answer(hs)
    assert exc.value.http_status == 502
    assert (hs.answer, hs.failure) == (None, "bad_handshake")


# ----------------------------------------------------------------- run_stages
def test_stages_run_in_the_documented_order() -> None:
    assert [stage.__name__ for stage in STAGES] == [
        "route",
        "check_upgrade",
        "authenticate",
        "authorize",
        "choose_backend",
        "admit",
        "backend_request",
        "connect",
        "check_answer",
    ]


async def test_run_stages_reaches_the_answer(services: StageServices) -> None:
    backend = ScriptedBackend()
    request = upgrade_request("/chat/1.0/room?x=1", bearer(token_for(services)))
    hs = new_hs(services, request, backend)
    assert await run_stages(hs) is None
    assert hs.answer == BackendAnswer(None, None, False, AS_NEGOTIATED)
    assert hs.grant is not None and hs.grant.application == "MyApp"
    assert hs.admission is not None and hs.admission.holds_slots
    [(target, received)] = backend.calls
    assert target == Backend.parse(PROD_URL)
    assert received.target == "/chat-backend/room?x=1"


async def test_run_stages_of_auth_none_reaches_the_answer(services: StageServices) -> None:
    backend = ScriptedBackend()
    hs = new_hs(services, upgrade_request("/public/1.0"), backend)
    assert await run_stages(hs) is None
    assert hs.answer is not None and hs.claims is None
    assert backend.calls[0][1].target == "/feed"


async def test_run_stages_stops_at_the_first_refusal(services: StageServices) -> None:
    """No token: authenticate refuses; nothing after it ran and the backend was not called."""
    backend = ScriptedBackend()
    hs = new_hs(services, upgrade_request("/chat/1.0"), backend)
    err = await run_stages(hs)
    assert isinstance(err, InvalidToken) and err.message == "missing access token"
    assert hs.route is not None and hs.offer is not None  # the stages before it ran
    assert (hs.claims, hs.grant, hs.backend, hs.admission) == (None, None, None, None)
    assert (hs.upgrade, hs.key, hs.response, hs.answer) == (b"", "", None, None)
    assert backend.calls == []


async def test_run_stages_routes_before_checking_the_upgrade(services: StageServices) -> None:
    hs = new_hs(services, upgrade_request("/nowhere", drop=("Upgrade",)))
    assert isinstance(await run_stages(hs), NotFound)
    assert hs.offer is None


async def test_run_stages_checks_the_upgrade_before_the_token(services: StageServices) -> None:
    """A plain GET with a garbage token is 426, not 401."""
    request = upgrade_request("/chat/1.0", bearer("garbage"), drop=("Upgrade",))
    hs = new_hs(services, request)
    assert isinstance(await run_stages(hs), UpgradeRequired)
    assert hs.claims is None


async def test_run_stages_refused_at_admit_builds_no_upgrade(services: StageServices) -> None:
    backend = ScriptedBackend()
    first = new_hs(services, upgrade_request(headers=bearer(token_for(services))), backend)
    assert await run_stages(first) is None
    second = new_hs(services, upgrade_request(headers=bearer(token_for(services))), backend)
    err = await run_stages(second)
    assert isinstance(err, TooManyRequests) and err.scope == "subscription"
    assert second.grant is not None and second.backend is not None
    assert (second.admission, second.upgrade, second.response) == (None, b"", None)
    assert len(backend.calls) == 1


async def test_run_stages_refused_after_admit_leaves_the_slots_to_the_caller(
    services: StageServices,
) -> None:
    """The HTTP leg releases hs.admission on a refusal (accept.py): the runner does not."""
    backend = ScriptedBackend(lambda r: render_response(503, [], b""))
    hs = new_hs(services, upgrade_request(headers=bearer(token_for(services))), backend)
    err = await run_stages(hs)
    assert isinstance(err, BadGateway) and hs.failure == "bad_handshake"
    assert hs.admission is not None and hs.admission.holds_slots
    await hs.admission.release()
    assert services.throttle.slots.held("sub:MyApp:Chat:1.0") == 0
