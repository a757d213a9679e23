"""The handshake pipeline, declared once: STAGES, run in order by `run_stages`.

Each stage reads what the earlier ones established on the `Handshake` and adds its own;
none calls another. A stage refuses by raising a GatewayError, which the runner hands back
to the HTTP leg, the one place where an error becomes its refusal (accept.py). Stages that
wait (the throttle's shared caps, the backend) return an awaitable; the others return None.
Only `connect` does I/O, through the HTTP leg's `open_backend`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wsgw.config.models import Api
from wsgw.errors import GatewayError, InvalidToken, ServiceUnavailable, TooManyRequests
from wsgw.http import Request, Response
from wsgw.oauth.tokens import TokenClaims
from wsgw.pipeline import handshake
from wsgw.pipeline.auth import extract_token, strip_token
from wsgw.pipeline.compression import AS_NEGOTIATED, SelfContained
from wsgw.pipeline.route import Backend, Route
from wsgw.pipeline.subscription import Grant
from wsgw.pipeline.throttle import Admission

# Connects to the backend, sends the upgrade request, returns the backend's answer.
OpenBackend = Callable[[Backend, bytes], Awaitable[Response]]


@dataclass(slots=True, eq=False)
class Handshake:
    """One upgrade request on its way through the stages: what each one established."""

    services: Any  # the bundle the connection was accepted under (wsgw/services.py)
    request: Request
    peer: str
    secure: bool
    open_backend: OpenBackend  # connects, sends the upgrade, awaits the answer
    route: Route | None = None
    suffix: str = ""  # the request path below the API's context and version
    offer: handshake.ClientOffer | None = None
    query: str = ""  # the query to forward: the access token taken out
    claims: TokenClaims | None = None  # None for `auth: none`
    grant: Grant | None = None
    backend: Backend | None = None
    admission: Admission | None = None
    self_contained: SelfContained = AS_NEGOTIATED  # what the admission may drop
    upgrade: bytes = b""  # the upgrade request to the backend
    key: str = ""  # its Sec-WebSocket-Key
    response: Response | None = None
    answer: handshake.BackendAnswer | None = None
    # What a BadGateway or GatewayTimeout means now, for wsgw_backend_failures_total.
    failure: str = "refused"

    @property
    def api(self) -> Api | None:
        return self.route.api if self.route is not None else None


def route(hs: Handshake) -> None:
    if hs.services.state.refusing_upgrades:
        # Load balancers see /health say 503 and stop sending; what still comes is sent on.
        raise ServiceUnavailable("gateway draining: connect again", retry_after_s=0)
    hs.route, hs.suffix = hs.services.routes.match(hs.request.path)


def check_upgrade(hs: Handshake) -> None:
    hs.offer = handshake.check_client_upgrade(hs.request)


def _bearer_token(hs: Handshake) -> None:
    token, hs.query = extract_token(hs.request.headers, hs.request.query)
    claims = hs.services.verifier.verify(token)
    if hs.services.revocations.revokes(claims) is not None:
        raise InvalidToken("access token revoked")
    hs.claims = claims


def _no_token(hs: Handshake) -> None:
    hs.query = strip_token(hs.request.query)  # never leak a token to the backend


# How each `apis[].auth` establishes who is calling.
AUTHENTICATE: dict[str, Callable[[Handshake], None]] = {
    "oauth2": _bearer_token,
    "none": _no_token,
}


def authenticate(hs: Handshake) -> None:
    assert hs.route is not None
    AUTHENTICATE[hs.route.api.auth](hs)


def authorize(hs: Handshake) -> None:
    assert hs.route is not None
    hs.grant = hs.services.registry.grant(hs.claims, hs.route.api)


def choose_backend(hs: Handshake) -> None:
    assert hs.route is not None and hs.grant is not None
    hs.backend = hs.route.backend_for(hs.grant.key_type)


async def admit(hs: Handshake) -> None:
    assert hs.route is not None and hs.grant is not None
    api = hs.route.api
    try:
        admission = await hs.services.throttle.admit(hs.grant, api, hs.route.api_tier)
    except TooManyRequests as err:
        hs.services.telemetry.throttled_handshake(
            api.name, api.version, hs.grant.application, err.scope, client=hs.peer
        )
        raise
    hs.admission = admission
    hs.self_contained = admission.self_contained


def backend_request(hs: Handshake) -> None:
    assert hs.backend is not None and hs.offer is not None
    hs.upgrade, hs.key = handshake.backend_upgrade_request(
        hs.backend,
        hs.backend.target(hs.suffix, hs.query),
        hs.offer,
        hs.request,
        hs.peer,
        hs.secure,
        hs.self_contained,
    )


async def connect(hs: Handshake) -> None:
    """The one I/O stage, through the HTTP leg's open_backend."""
    assert hs.backend is not None
    hs.response = await hs.open_backend(hs.backend, hs.upgrade)
    hs.failure = "bad_handshake"  # a BadGateway from here on is about the answer


def check_answer(hs: Handshake) -> None:
    assert hs.response is not None and hs.offer is not None
    hs.answer = handshake.check_backend_answer(hs.response, hs.key, hs.offer, hs.self_contained)


Stage = Callable[[Handshake], Awaitable[None] | None]

STAGES: tuple[Stage, ...] = (
    route,
    check_upgrade,
    authenticate,
    authorize,
    choose_backend,
    admit,
    backend_request,
    connect,
    check_answer,
)


async def run_stages(hs: Handshake, stages: tuple[Stage, ...] = STAGES) -> GatewayError | None:
    """Run the stages in order; the first refusal ends the run and is returned."""
    try:
        for stage in stages:
            waiting = stage(hs)
            if waiting is not None:
                await waiting
    except GatewayError as err:
        # Its traceback holds the frames that raised it (the backend leg, its future,
        # this context): dropped, so a refused connection is freed by reference counting.
        return err.with_traceback(None)
    return None
