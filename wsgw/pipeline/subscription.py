"""Who may use what: applications, their keys and their subscriptions, compiled for
constant-time lookup at the handshake and at the token endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from wsgw.config.models import Api, Application, GatewayConfig, Subscriptions, Tier
from wsgw.errors import Forbidden, InvalidToken
from wsgw.oauth.endpoint import ClientRecord
from wsgw.oauth.tokens import TokenClaims

# An API in these states accepts connections from existing subscriptions (WSO2 semantics:
# DEPRECATED stops new subscriptions, not traffic).
SERVING_STATUSES = frozenset({"PUBLISHED", "DEPRECATED"})
ANONYMOUS = "anonymous"  # the application label of `auth: none` traffic


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
        self._tiers = config.tiers
        self._apps: dict[str, Application] = {}
        self._clients: dict[str, ClientRecord] = {}
        self._consumer_keys: dict[tuple[str, str], str] = {}
        self._subs: dict[tuple[str, str, str], tuple[str, str]] = {}  # → (tier, status)
        for app in subscriptions.applications:
            self._apps[app.name] = app
            app_keys = (("PRODUCTION", app.keys.production), ("SANDBOX", app.keys.sandbox))
            for key_type, keys in app_keys:
                if keys is None:
                    continue
                self._consumer_keys[(app.name, key_type)] = keys.consumer_key
                self._clients[keys.consumer_key] = ClientRecord(
                    application=app.name,
                    key_type=key_type,
                    consumer_secret_sha256=keys.consumer_secret_sha256,
                )
            for sub in app.subscriptions:
                self._subs[(app.name, sub.api, sub.version)] = (sub.tier, sub.status)

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
        tier_name, status = sub
        if status != "ACTIVE":
            raise Forbidden(f"subscription to {api.name}:{api.version} is {status}")
        check_api_serving(api)
        app_tier = self._apps[claims.application].tier
        return Grant(
            claims.application,
            claims.key_type,
            self._tiers[tier_name],
            self._tiers[app_tier] if app_tier is not None else None,
        )

    def anonymous(self, api: Api) -> Grant:
        """The grant of an `auth: none` API: no application; only the API's own policy."""
        check_api_serving(api)
        return Grant(ANONYMOUS, "PRODUCTION", None, None)


def check_api_serving(api: Api) -> None:
    if api.status not in SERVING_STATUSES:
        raise Forbidden(f"API {api.name}:{api.version} is {api.status}, not PUBLISHED")
