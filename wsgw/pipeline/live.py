"""An open connection judged again: after a reload, a revocation or a close request, by
the files and the revocation list now in force.

The handshake decided once; a WebSocket lives for hours. `judge` applies the handshake's
rules to what the connection was granted (its API, its token's claims) and says whether it
may go on, under which grant, or why its access ended: an AccessEnded whose close code
tells the client what to do (CloseCode: 41xx get a new token, 43xx do not come back, 45xx
come back later). Sans I/O: the relay leg acts on the verdict (relay.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsgw.errors import (
    AccessEnded,
    CloseCode,
    Forbidden,
    GatewayError,
    InvalidToken,
    PolicyChanged,
)
from wsgw.oauth.tokens import TokenClaims
from wsgw.pipeline.route import Route
from wsgw.pipeline.subscription import Grant
from wsgw.pipeline.throttle import Policy

TOKEN_REVOKED = "access token revoked"
TOKEN_EXPIRED = "access token expired"


@dataclass(frozen=True, slots=True)
class Still:
    """The connection may go on: under this route (the API as configured now) and grant."""

    route: Route
    grant: Grant


def judge(
    services: Any, name: str, version: str, claims: TokenClaims | None
) -> Still | AccessEnded:
    """The verdict on a connection to API `name` at `version`, opened with `claims` (None:
    an `auth: none` API), under the bundle `services`."""
    route = services.routes.named(name, version)
    api = route.api if route is not None else None
    if api is not None and api.auth != "none" and claims is None:
        return AccessEnded("API requires an access token now", CloseCode.TOKEN_REVOKED)
    verdict = services.registry.recheck(claims, api)
    if isinstance(verdict, AccessEnded):
        return verdict
    if claims is not None and services.revocations.revokes(claims) is not None:
        return AccessEnded(TOKEN_REVOKED, CloseCode.TOKEN_REVOKED)
    assert route is not None  # recheck ends a connection whose API is gone
    return Still(route, verdict)


def refusal(verdict: Still | AccessEnded) -> GatewayError | None:
    """A verdict reached before the 101, as the handshake's HTTP refusal: 401 where the
    client needs a new token (41xx), 403 otherwise."""
    if isinstance(verdict, Still):
        return None
    if verdict.close_code // 100 % 10 == 1:
        return InvalidToken(verdict.message)
    return Forbidden(verdict.message)


def revoked(services: Any, claims: TokenClaims | None) -> AccessEnded | None:
    """Only the revocation list: what a new revocation asks of every open connection."""
    if claims is not None and services.revocations.revokes(claims) is not None:
        return AccessEnded(TOKEN_REVOKED, CloseCode.TOKEN_REVOKED)
    return None


def unsafe_drop(
    policy: Policy, compressed: bool, self_contained: tuple[bool, bool]
) -> PolicyChanged | None:
    """A limit that drops messages needs that direction's compressed messages to be
    self-contained (compression.py), which was agreed, or not, at the handshake: a new
    dropping limit on a direction that keeps its compression context would corrupt it."""
    if not compressed:
        return None
    for from_client, agreed in zip((True, False), self_contained, strict=True):
        if policy.drops(from_client) and not agreed:
            return PolicyChanged("limits changed: reconnect to apply them")
    return None
