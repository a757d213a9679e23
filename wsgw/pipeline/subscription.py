"""Who may use what: applications, their keys and their subscriptions, compiled for
constant-time lookup at the handshake and at the token endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from wsgw.config.models import Api, GatewayConfig, Subscriptions, Tier
from wsgw.errors import AccessEnded, CloseCode, Forbidden, InvalidToken
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
    tier_name: str | None = None  # the subscription's tier, as the admin port lists it


class SubscriptionRegistry:
    def __init__(self, config: GatewayConfig, subscriptions: Subscriptions) -> None:
        tiers = config.tiers
        self._app_tiers: dict[str, Tier | None] = {}  # tiers resolved at load
        self._clients: dict[str, ClientRecord] = {}
        self._consumer_keys: dict[tuple[str, str], str] = {}
        # (application, api, version) → (tier, status, tier name)
        self._subs: dict[tuple[str, str, str], tuple[Tier, str, str]] = {}
        self._applications: set[str] = set()
        for app in subscriptions.applications:
            self._applications.add(app.name)
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
                key = (app.name, sub.api, sub.version)
                self._subs[key] = (tiers[sub.tier], sub.status, sub.tier)

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
        tier, status, name = sub
        if status != "ACTIVE":
            raise Forbidden(f"subscription to {api.name}:{api.version} is {status}")
        check_api_serving(api)
        app_tier = self._app_tiers[claims.application]
        return Grant(claims.application, claims.key_type, tier, app_tier, name)

    def grant(self, claims: TokenClaims | None, api: Api) -> Grant:
        """The grant of a handshake: the token's (authorize), or none needed (anonymous)."""
        return self.authorize(claims, api) if claims is not None else self.anonymous(api)

    def recheck(self, claims: TokenClaims | None, api: Api) -> Grant | AccessEnded:
        """An open connection judged again (after a reload): its grant under the files now
        in force, or why its access ended, with the close code that tells the client what
        to do. The handshake's rules, from the widest loss to the narrowest (the API, the
        application, its key, the subscription), so the code names what changed."""
        ended = api_ended(api)
        if ended is not None:
            return ended
        if claims is None:
            return Grant(ANONYMOUS, "PRODUCTION", None, None)
        if claims.application not in self._applications:
            return AccessEnded("application removed", CloseCode.APPLICATION_REMOVED)
        if self._consumer_keys.get((claims.application, claims.key_type)) != claims.consumer_key:
            return AccessEnded("consumer key regenerated", CloseCode.KEY_REGENERATED)
        sub = self._subs.get((claims.application, api.name, api.version))
        if sub is None:
            return AccessEnded("subscription removed", CloseCode.SUBSCRIPTION_REMOVED)
        tier, status, name = sub
        if status != "ACTIVE":
            return AccessEnded(f"subscription {status}", CloseCode.SUBSCRIPTION_BLOCKED)
        app_tier = self._app_tiers[claims.application]
        return Grant(claims.application, claims.key_type, tier, app_tier, name)

    def anonymous(self, api: Api) -> Grant:
        """The grant of an `auth: none` API: no application; only the API's own policy."""
        check_api_serving(api)
        return Grant(ANONYMOUS, "PRODUCTION", None, None)


def api_ended(api: Api | None) -> AccessEnded | None:
    """Why an open connection to `api` (None: removed from the config) must end, if so."""
    if api is None:
        return AccessEnded("API removed", CloseCode.API_REMOVED)
    if api.status in SERVING_STATUSES:
        return None
    if api.status == "RETIRED":
        return AccessEnded("API retired", CloseCode.API_RETIRED)
    # BLOCKED (or back to CREATED): the operator may publish it again.
    return AccessEnded(f"API {api.status}", CloseCode.API_BLOCKED)


def check_api_serving(api: Api) -> None:
    if api.status not in SERVING_STATUSES:
        raise Forbidden(f"API {api.name}:{api.version} is {api.status}, not PUBLISHED")
