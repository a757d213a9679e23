"""An open connection judged again (wsgw/pipeline/live.py), without sockets: `judge`,
`revoked` and `unsafe_drop` over a real route table, subscription registry, revocation list
and throttle compiled from a config and subscriptions, as a reload builds them; and the
registry's own `recheck` and `api_ended`.

Each case builds the files "after the reload" from the ones the connection was opened
under, changing one thing, and checks the verdict: Still (with the route and grant now in
force) or AccessEnded with its close code and reason, as the client will read them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from wsgw import _core
from wsgw.config import GatewayConfig, Subscriptions, check_subscriptions
from wsgw.config.models import Tier
from wsgw.errors import AccessEnded, CloseCode, PolicyChanged
from wsgw.names import ANONYMOUS
from wsgw.oauth.revocation import (
    Revocation,
    RevocationList,
    revoke_application,
    revoke_consumer_key,
    revoke_token,
)
from wsgw.oauth.tokens import TokenClaims
from wsgw.pipeline import live
from wsgw.pipeline.live import Still, judge, revoked, unsafe_drop
from wsgw.pipeline.route import RouteTable
from wsgw.pipeline.subscription import Grant, SubscriptionRegistry, api_ended
from wsgw.pipeline.throttle import Policy, Throttle

NOW = int(time.time())

CONFIG: dict[str, Any] = {
    "tiers": {
        "Gold": {"messages_per_minute": 600},
        "Silver": {"messages_per_minute": 60, "on_limit": "shape"},
        "AppTier": {"max_connections": 5},
        "ApiPolicy": {"messages_per_minute": 1000, "on_limit": "close"},
    },
    "apis": [
        {
            "name": "Chat",
            "context": "/chat",
            "version": "1.0",
            "endpoints": {"production": "ws://chat.internal:7001", "sandbox": "ws://sbx.internal"},
            "tiers": ["Gold", "Silver"],
            "throttle": "ApiPolicy",
        },
        {
            "name": "Chat",
            "context": "/chat",
            "version": "2.0",
            "endpoints": {"production": "ws://chat.internal:7002"},
            "tiers": ["Silver"],
        },
        {
            "name": "Public",
            "context": "/public",
            "version": "1.0",
            "auth": "none",
            "endpoints": {"production": "ws://public.internal"},
        },
    ],
}


def _keys(consumer_key: str) -> dict[str, str]:
    return {
        "consumer_key": consumer_key,
        "consumer_secret_sha256": hashlib.sha256(consumer_key.encode()).hexdigest(),
    }


SUBSCRIPTIONS: dict[str, Any] = {
    "applications": [
        {
            "name": "MyApp",
            "tier": "AppTier",
            "keys": {"production": _keys("ck-prod"), "sandbox": _keys("ck-sbx")},
            "subscriptions": [
                {"api": "Chat", "version": "1.0", "tier": "Gold"},
                {"api": "Chat", "version": "2.0", "tier": "Silver"},
            ],
        },
        {
            "name": "OtherApp",
            "keys": {"production": _keys("ck-other")},
            "subscriptions": [{"api": "Chat", "version": "1.0", "tier": "Silver"}],
        },
    ]
}


@dataclass(frozen=True, slots=True, eq=False)
class LiveServices:
    """The parts of wsgw.services.Services that live.py reads."""

    routes: RouteTable
    registry: SubscriptionRegistry
    revocations: RevocationList = field(default_factory=RevocationList)


def bundle(
    config_edit: Callable[[dict], None] | None = None,
    subs_edit: Callable[[dict], None] | None = None,
    revocations: list[Revocation] = (),  # type: ignore[assignment]
) -> LiveServices:
    """The bundle a reload builds from the files, after `config_edit` and `subs_edit`."""
    raw_config = msgspec.json.decode(msgspec.json.encode(CONFIG))  # a deep copy
    raw_subs = msgspec.json.decode(msgspec.json.encode(SUBSCRIPTIONS))
    if config_edit is not None:
        config_edit(raw_config)
    if subs_edit is not None:
        subs_edit(raw_subs)
    config = msgspec.convert(raw_config, GatewayConfig)
    subs = msgspec.convert(raw_subs, Subscriptions)
    assert check_subscriptions(config, subs) == []  # a pair that validates, as a reload wants
    return LiveServices(
        RouteTable(config), SubscriptionRegistry(config, subs), RevocationList(revocations)
    )


def claims(
    application: str = "MyApp",
    key_type: str = "PRODUCTION",
    consumer_key: str = "ck-prod",
    jti: str = "jti-1",
    issued_at: int = NOW - 10,
) -> TokenClaims:
    return TokenClaims(application, key_type, consumer_key, jti, issued_at, issued_at + 3600)


def api(raw: dict, name: str, version: str = "1.0") -> dict:
    return next(a for a in raw["apis"] if a["name"] == name and a["version"] == version)


def app(raw: dict, name: str) -> dict:
    return next(a for a in raw["applications"] if a["name"] == name)


def sub(raw: dict, application: str, api_name: str, version: str = "1.0") -> dict:
    subs = app(raw, application)["subscriptions"]
    return next(s for s in subs if s["api"] == api_name and s["version"] == version)


def ended(verdict: object, code: int, reason: str) -> None:
    assert isinstance(verdict, AccessEnded), verdict
    assert (verdict.close_code, verdict.message) == (code, reason)


# ============================================================ judge: still granted


def test_an_unchanged_connection_goes_on_under_the_files_now_in_force() -> None:
    services = bundle()
    verdict = judge(services, "Chat", "1.0", claims())
    assert isinstance(verdict, Still)
    assert verdict.route is services.routes.named("Chat", "1.0")
    assert verdict.grant == Grant(
        "MyApp",
        "PRODUCTION",
        subscription_tier=Tier(messages_per_minute=600),
        application_tier=Tier(max_connections=5),
        tier_name="Gold",
    )
    assert verdict.route.api_tier == Tier(messages_per_minute=1000, on_limit="close")


def test_the_grant_carries_the_edited_tier_and_the_route_the_edited_api() -> None:
    def edit(raw: dict) -> None:
        raw["tiers"]["Gold"] = {"messages_per_minute": 6, "on_limit": "close"}
        api(raw, "Chat")["endpoints"]["production"] = "ws://elsewhere.internal"
        api(raw, "Chat")["throttle"] = None

    verdict = judge(bundle(edit), "Chat", "1.0", claims())
    assert isinstance(verdict, Still)
    tier = verdict.grant.subscription_tier
    assert tier is not None and (tier.messages_per_minute, tier.on_limit) == (6, "close")
    assert verdict.route.api.endpoints.production == "ws://elsewhere.internal"
    assert verdict.route.api_tier is None


def test_a_subscription_moved_to_another_tier_is_granted_that_tier() -> None:
    verdict = judge(
        bundle(subs_edit=lambda raw: sub(raw, "MyApp", "Chat").update(tier="Silver")),
        "Chat",
        "1.0",
        claims(),
    )
    assert isinstance(verdict, Still)
    assert verdict.grant.tier_name == "Silver"
    assert verdict.grant.subscription_tier is not None
    assert verdict.grant.subscription_tier.on_limit == "shape"


def test_the_sandbox_key_is_judged_by_its_own_consumer_key() -> None:
    verdict = judge(bundle(), "Chat", "1.0", claims(key_type="SANDBOX", consumer_key="ck-sbx"))
    assert isinstance(verdict, Still) and verdict.grant.key_type == "SANDBOX"


def test_an_anonymous_connection_to_an_auth_none_api_goes_on() -> None:
    verdict = judge(bundle(), "Public", "1.0", None)
    assert isinstance(verdict, Still)
    assert verdict.grant == Grant(ANONYMOUS, "PRODUCTION", None, None)


@pytest.mark.parametrize("status", ["PUBLISHED", "DEPRECATED"])
def test_a_serving_status_keeps_connections(status: str) -> None:
    verdict = judge(
        bundle(lambda raw: api(raw, "Chat").update(status=status)), "Chat", "1.0", claims()
    )
    assert isinstance(verdict, Still)
    assert verdict.route.api.status == status


# ============================================================ judge: access ended


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        ("BLOCKED", CloseCode.API_BLOCKED, "API BLOCKED"),
        ("CREATED", CloseCode.API_BLOCKED, "API CREATED"),
        ("RETIRED", CloseCode.API_RETIRED, "API retired"),
    ],
)
def test_an_api_that_stopped_serving_ends_its_connections(
    status: str, code: int, reason: str
) -> None:
    services = bundle(lambda raw: api(raw, "Chat").update(status=status))
    ended(judge(services, "Chat", "1.0", claims()), code, reason)
    # Every connection of the API, whoever holds it; the other version is not concerned.
    ended(judge(services, "Chat", "1.0", claims("OtherApp", consumer_key="ck-other")), code, reason)
    assert isinstance(judge(services, "Chat", "2.0", claims()), Still)


def test_an_anonymous_connection_to_a_blocked_api_ends_too() -> None:
    services = bundle(lambda raw: api(raw, "Public").update(status="BLOCKED"))
    ended(judge(services, "Public", "1.0", None), 4501, "API BLOCKED")


def test_a_removed_api_ends_its_connections_with_4305() -> None:
    def remove_v1(raw: dict) -> None:
        raw["apis"] = [
            a for a in raw["apis"] if not (a["name"] == "Chat" and a["version"] == "1.0")
        ]

    def unsubscribe_v1(raw: dict) -> None:
        for application in raw["applications"]:
            application["subscriptions"] = [
                s for s in application["subscriptions"] if s["version"] != "1.0"
            ]

    services = bundle(remove_v1, unsubscribe_v1)
    ended(judge(services, "Chat", "1.0", claims()), CloseCode.API_REMOVED, "API removed")
    assert isinstance(judge(services, "Chat", "2.0", claims()), Still)
    ended(judge(bundle(lambda raw: raw["apis"].pop()), "Public", "1.0", None), 4305, "API removed")


def test_an_api_that_now_requires_a_token_ends_anonymous_connections() -> None:
    services = bundle(lambda raw: api(raw, "Public").update(auth="oauth2"))
    ended(
        judge(services, "Public", "1.0", None),
        CloseCode.TOKEN_REVOKED,
        "API requires an access token now",
    )


def test_a_removed_application_ends_its_connections_with_4303() -> None:
    services = bundle(
        subs_edit=lambda raw: raw.update(
            applications=[a for a in raw["applications"] if a["name"] != "MyApp"]
        )
    )
    for key_type, key in (("PRODUCTION", "ck-prod"), ("SANDBOX", "ck-sbx")):
        verdict = judge(services, "Chat", "1.0", claims(key_type=key_type, consumer_key=key))
        ended(verdict, CloseCode.APPLICATION_REMOVED, "application removed")
    assert isinstance(
        judge(services, "Chat", "1.0", claims("OtherApp", consumer_key="ck-other")), Still
    )


def test_a_regenerated_key_ends_the_connections_of_the_old_key_only() -> None:
    services = bundle(
        subs_edit=lambda raw: app(raw, "MyApp")["keys"].update(production=_keys("ck-prod-2"))
    )
    ended(
        judge(services, "Chat", "1.0", claims()),
        CloseCode.KEY_REGENERATED,
        "consumer key regenerated",
    )
    ended(judge(services, "Chat", "2.0", claims()), 4103, "consumer key regenerated")
    assert isinstance(judge(services, "Chat", "1.0", claims(consumer_key="ck-prod-2")), Still)
    sandbox = claims(key_type="SANDBOX", consumer_key="ck-sbx")
    assert isinstance(judge(services, "Chat", "1.0", sandbox), Still)


def test_a_removed_key_type_ends_its_connections_as_regenerated() -> None:
    services = bundle(subs_edit=lambda raw: app(raw, "MyApp")["keys"].pop("sandbox"))
    sandbox = claims(key_type="SANDBOX", consumer_key="ck-sbx")
    ended(judge(services, "Chat", "1.0", sandbox), 4103, "consumer key regenerated")
    assert isinstance(judge(services, "Chat", "1.0", claims()), Still)


def test_a_removed_subscription_ends_that_api_only() -> None:
    def unsubscribe(raw: dict) -> None:
        subs = app(raw, "MyApp")["subscriptions"]
        subs.remove(sub(raw, "MyApp", "Chat", "1.0"))

    services = bundle(subs_edit=unsubscribe)
    ended(
        judge(services, "Chat", "1.0", claims()),
        CloseCode.SUBSCRIPTION_REMOVED,
        "subscription removed",
    )
    assert isinstance(judge(services, "Chat", "2.0", claims()), Still)
    assert isinstance(
        judge(services, "Chat", "1.0", claims("OtherApp", consumer_key="ck-other")), Still
    )


def test_a_blocked_subscription_ends_that_api_only() -> None:
    services = bundle(subs_edit=lambda raw: sub(raw, "MyApp", "Chat").update(status="BLOCKED"))
    ended(
        judge(services, "Chat", "1.0", claims()),
        CloseCode.SUBSCRIPTION_BLOCKED,
        "subscription BLOCKED",
    )
    assert isinstance(judge(services, "Chat", "2.0", claims()), Still)


# ============================================================ judge and revoked: the list


@pytest.mark.parametrize(
    ("entry", "revokes"),
    [
        (revoke_token(claims()), True),
        (Revocation("jti", "jti-other", NOW + 3600), False),
        (revoke_application("MyApp", NOW, 3600), True),  # issued before now
        (revoke_application("MyApp", NOW - 60, 3600), False),  # issued after the entry's second
        (revoke_application("OtherApp", NOW, 3600), False),
        (revoke_consumer_key("ck-prod", NOW, 3600), True),
        (revoke_consumer_key("ck-sbx", NOW, 3600), False),
    ],
    ids=["jti", "other jti", "app", "app, older", "other app", "key", "other key"],
)
def test_the_revocation_list_ends_the_tokens_it_names(entry: Revocation, revokes: bool) -> None:
    services = bundle(revocations=[entry])
    verdict = judge(services, "Chat", "1.0", claims())
    quick = revoked(services, claims())
    if revokes:
        ended(verdict, CloseCode.TOKEN_REVOKED, live.TOKEN_REVOKED)
        ended(quick, 4102, "access token revoked")
    else:
        assert isinstance(verdict, Still) and quick is None


def test_revoked_ignores_anonymous_connections_and_checks_nothing_else() -> None:
    services = bundle(
        subs_edit=lambda raw: raw.update(applications=[]),
        config_edit=lambda raw: api(raw, "Chat").update(status="BLOCKED"),
        revocations=[revoke_application("MyApp", NOW, 3600)],
    )
    assert revoked(services, None) is None
    # Only the list: the files' changes are judge's (after a reload), not a revocation's.
    assert revoked(bundle(subs_edit=lambda raw: raw.update(applications=[])), claims()) is None
    ended(revoked(services, claims()), 4102, "access token revoked")


def test_what_ends_a_connection_whatever_its_token_comes_before_the_list() -> None:
    """An API gone or stopped ends the connection, revoked token or not: the code says
    what happened to the API. A connection whose grant is gone says so, not 'revoked'."""
    entry = [revoke_token(claims())]
    blocked = bundle(lambda raw: api(raw, "Chat").update(status="RETIRED"), revocations=entry)
    ended(judge(blocked, "Chat", "1.0", claims()), 4304, "API retired")
    unsubscribed = bundle(
        subs_edit=lambda raw: sub(raw, "MyApp", "Chat").update(status="BLOCKED"),
        revocations=entry,
    )
    ended(judge(unsubscribed, "Chat", "1.0", claims()), 4301, "subscription BLOCKED")


# ============================================================ SubscriptionRegistry.recheck


def test_registry_recheck_of_anonymous_needs_no_application() -> None:
    services = bundle(subs_edit=lambda raw: raw.update(applications=[]))
    route = services.routes.named("Public", "1.0")
    assert route is not None
    assert services.registry.recheck(None, route.api) == Grant(ANONYMOUS, "PRODUCTION", None, None)


def test_registry_recheck_of_a_missing_api_is_api_removed() -> None:
    ended(bundle().registry.recheck(claims(), None), 4305, "API removed")
    ended(bundle().registry.recheck(None, None), 4305, "API removed")


def test_registry_recheck_resolves_the_application_tier_now_in_force() -> None:
    def edit(raw: dict) -> None:
        raw["tiers"]["AppTier"] = {"max_connections": 1, "messages_per_minute": 30}

    services = bundle(edit, lambda raw: app(raw, "OtherApp").update(tier="AppTier"))
    route = services.routes.named("Chat", "1.0")
    assert route is not None
    grant = services.registry.recheck(claims("OtherApp", consumer_key="ck-other"), route.api)
    assert isinstance(grant, Grant)
    assert grant.application_tier is not None
    assert grant.application_tier.messages_per_minute == 30
    assert grant.tier_name == "Silver"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PUBLISHED", None),
        ("DEPRECATED", None),
        ("BLOCKED", (4501, "API BLOCKED")),
        ("CREATED", (4501, "API CREATED")),
        ("RETIRED", (4304, "API retired")),
    ],
)
def test_api_ended_by_status(status: str, expected: tuple[int, str] | None) -> None:
    route = bundle(lambda raw: api(raw, "Chat").update(status=status)).routes.named("Chat", "1.0")
    assert route is not None
    verdict = api_ended(route.api)
    if expected is None:
        assert verdict is None
    else:
        ended(verdict, *expected)


def test_api_ended_of_no_api_is_removed() -> None:
    ended(api_ended(None), 4305, "API removed")


# ============================================================ unsafe_drop


def gate(*actions: int) -> _core.Gate:
    return _core.Gate([(_core.Limit(60), action, i) for i, action in enumerate(actions)])


DROP, SHAPE, CLOSE = _core.ACTION_DROP, _core.ACTION_SHAPE, _core.ACTION_CLOSE


def policy(client: _core.Gate | None, backend: _core.Gate | None) -> Policy:
    return Policy(client_gate=client, backend_gate=backend, max_duration_s=None, new_limits=[])


@pytest.mark.parametrize(
    ("client", "backend", "compressed", "agreed", "unsafe"),
    [
        # Uncompressed: nothing to corrupt, whatever drops.
        (gate(DROP), gate(DROP), False, (False, False), False),
        # Compressed, nothing drops.
        (None, None, True, (False, False), False),
        (gate(SHAPE), gate(CLOSE), True, (False, False), False),
        # Compressed, a direction drops: fine only where self-contained was agreed.
        (gate(DROP), None, True, (True, False), False),
        (gate(DROP), None, True, (False, True), True),
        (None, gate(DROP), True, (False, True), False),
        (None, gate(DROP), True, (True, False), True),
        (gate(DROP), gate(DROP), True, (True, True), False),
        (gate(DROP), gate(DROP), True, (True, False), True),
        # One dropping limit among others is enough.
        (gate(SHAPE, DROP, CLOSE), None, True, (False, False), True),
    ],
)
def test_unsafe_drop(
    client: _core.Gate | None,
    backend: _core.Gate | None,
    compressed: bool,
    agreed: tuple[bool, bool],
    unsafe: bool,
) -> None:
    verdict = unsafe_drop(policy(client, backend), compressed, agreed)
    if unsafe:
        assert isinstance(verdict, PolicyChanged)
        assert verdict.close_code == CloseCode.SERVICE_RESTART == 1012
        assert verdict.message == "limits changed: reconnect to apply them"
    else:
        assert verdict is None


@pytest.mark.parametrize(
    ("tier", "drops"),
    [
        ({"messages_per_minute": 60}, (True, False)),  # on_limit drop, backend shape: defaults
        ({"messages_per_minute": 60, "on_limit": "shape"}, (False, False)),
        ({"messages_per_minute": 60, "backend_on_limit": "drop"}, (True, True)),
        (
            {"messages_per_minute": 60, "count": "backend", "backend_on_limit": "drop"},
            (False, True),
        ),
        ({"messages_per_minute": 60, "count": "client", "backend_on_limit": "drop"}, (True, False)),
        ({"max_connections": 3}, (False, False)),  # no message limit: no gate
    ],
)
def test_unsafe_drop_of_a_reloaded_tier(tier: dict, drops: tuple[bool, bool]) -> None:
    """The policy a reload computes for an open connection (Throttle.repolicy) drops where
    the tier says, and unsafe_drop asks for the directions that were not agreed."""

    def edit(raw: dict) -> None:
        raw["tiers"]["Gold"] = tier

    services = bundle(edit)
    route = services.routes.named("Chat", "1.0")
    assert route is not None
    grant = services.registry.recheck(claims(), route.api)
    assert isinstance(grant, Grant)
    repolicy = Throttle().repolicy(grant, route.api, None)  # without the API's own policy
    assert (repolicy.drops(True), repolicy.drops(False)) == drops
    for agreed in ((False, False), (True, False), (False, True), (True, True)):
        unsafe = any(d and not a for d, a in zip(drops, agreed, strict=True))
        verdict_drop = unsafe_drop(repolicy, True, agreed)
        assert (verdict_drop is not None) == unsafe
        assert unsafe_drop(repolicy, False, agreed) is None
