"""Who may use what: applications, their keys and their subscriptions, compiled for
constant-time lookup at the handshake and at the token endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from wsgw.config.models import Api, GatewayConfig, Subscriptions, Tier
from wsgw.errors import Forbidden, InvalidToken
from wsgw.names import ANONYMOUS, KEY_TYPES, config_key_type
from wsgw.oauth.endpoint import ClientRecord
from wsgw.oauth.tokens import TokenClaims

# An API in these states accepts connections from existing subscriptions (WSO2 semantics:
# DEPRECATED stops new subscriptions, not traffic).
SERVING_STATUSES = frozenset({"PUBLISHED", "DEPRECATED"})


@dataclass(frozen=True, slots=True)
class Grant:
    """What the handshake established: who is calling, how, and under which tier."""

    application: str
    key_type: str  # PRODUCTION | SANDBOX
    # The limits that apply, by scope; None where the scope sets none.
    subscription_tier: Tier | None
    application_tier: Tier | None


class SubscriptionRegistry:
    def __init__(self, config: GatewayConfig, subscriptions: Subscriptions) -> None:
        tiers = config.tiers
        self._app_tiers: dict[str, Tier | None] = {}  # tiers resolved at load
        self._clients: dict[str, ClientRecord] = {}
        self._consumer_keys: dict[tuple[str, str], str] = {}
        self._subs: dict[tuple[str, str, str], tuple[Tier, str]] = {}  # → (tier, status)
        for app in subscriptions.applications:
            self._app_tiers[app.name] = tiers[app.tier] if app.tier is not None else None
            for key_type in KEY_TYPES:
                keys = getattr(app.keys, config_key_type(key_type))
                if keys is None:
                    continue
                self._consumer_keys[(app.name, key_type)] = keys.consumer_key
                self._clients[keys.consumer_key] = ClientRecord(
                    application=app.name,
                    key_type=key_type,
                    consumer_secret_sha256=keys.consumer_secret_sha256,
                )
            for sub in app.subscriptions:
                self._subs[(app.name, sub.api, sub.version)] = (tiers[sub.tier], sub.status)

    def lookup_client(self, consumer_key: str) -> ClientRecord | None:
        return self._clients.get(consumer_key)

    def authorize(self, claims: TokenClaims, api: Api) -> Grant:
        """Check that the token's application may call `api` now; refuse otherwise."""
        # Keys regenerated or application removed: tokens issued to the old consumer key die.
        if self._consumer_keys.get((claims.application, claims.key_type)) != claims.consumer_key:
            raise InvalidToken("access token revoked")
        sub = self._subs.get((claims.application, api.name, api.version))
        if sub is None:
            raise Forbidden(f"application is not subscribed to {api.name}:{api.version}")
        tier, status = sub
        if status != "ACTIVE":
            raise Forbidden(f"subscription to {api.name}:{api.version} is {status}")
        check_api_serving(api)
        return Grant(claims.application, claims.key_type, tier, self._app_tiers[claims.application])

    def grant(self, claims: TokenClaims | None, api: Api) -> Grant:
        """The grant of a handshake: the token's (authorize), or none needed (anonymous)."""
        return self.authorize(claims, api) if claims is not None else self.anonymous(api)

    def anonymous(self, api: Api) -> Grant:
        """The grant of an `auth: none` API: no application; only the API's own policy."""
        check_api_serving(api)
        return Grant(ANONYMOUS, "PRODUCTION", None, None)


def check_api_serving(api: Api) -> None:
    if api.status not in SERVING_STATUSES:
        raise Forbidden(f"API {api.name}:{api.version} is {api.status}, not PUBLISHED")
