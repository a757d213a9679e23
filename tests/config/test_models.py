"""The models on their own: defaults, field constraints, cross-field rules."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from wsgw.config import (
    Api,
    Application,
    GatewayConfig,
    Subscriptions,
    Tier,
)

HASH = "ab" * 32


def api(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "Chat",
        "context": "/chat",
        "version": "1.0",
        "endpoints": {"production": "ws://127.0.0.1:7001/chat"},
        "tiers": ["Unlimited"],
    }
    raw.update(overrides)
    return raw


def config(**sections: Any) -> GatewayConfig:
    return msgspec.convert(sections, GatewayConfig)


def error(raw: dict[str, Any], type_: type = GatewayConfig) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(raw, type_)
    return str(info.value)


def test_defaults() -> None:
    c = GatewayConfig()
    g = c.gateway
    assert (g.listen, g.admin_listen, g.subscriptions_file) == (
        "127.0.0.1:9099",
        "127.0.0.1:9901",
        "subscriptions.yaml",
    )
    assert (g.max_message_bytes, g.idle_timeout_s) == (1048576, 600)
    assert (g.backend_handshake_timeout_s, g.close_timeout_s) == (10, 5)
    assert (g.max_backend_message_bytes, g.max_pings_per_second) == (16777216, 100)
    assert g.tls is None and g.redis_url is None and g.redis_failure == "open"
    assert (g.backend_tls.ca_file, g.backend_tls.verify) == (None, True)
    s = c.security
    assert (s.signing_key_file, s.token_ttl_s, s.issuer) == ("keys/signing.pem", 3600, "wsgw")
    assert c.tiers == {"Unlimited": Tier()} and c.apis == []
    t = Tier()
    assert (t.messages_per_minute, t.bytes_per_minute, t.max_connections) == (None, None, None)
    assert (t.max_connection_duration_s, t.burst, t.on_limit) == (None, 0, "drop")
    assert (t.count, t.backend_on_limit) == ("both", "shape")
    a = msgspec.convert(api(), Api)
    assert (a.default_version, a.status, a.auth, a.throttle) == (False, "PUBLISHED", "oauth2", None)
    app = msgspec.convert({"name": "A"}, Application)
    assert (app.tier, app.keys.production, app.keys.sandbox, app.subscriptions) == (
        None,
        None,
        None,
        [],
    )
    assert Subscriptions().applications == []


def test_empty_document_is_all_defaults() -> None:
    assert msgspec.convert({}, GatewayConfig) == GatewayConfig()


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        GatewayConfig().gateway.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_default_tiers_are_not_shared() -> None:
    GatewayConfig().tiers["Gold"] = Tier()
    assert list(GatewayConfig().tiers) == ["Unlimited"]


@pytest.mark.parametrize(
    "address", ["127.0.0.1:0", "127.0.0.1:65535", "[::1]:9099", "localhost:80", "0.0.0.0:9099"]
)
def test_host_port_accepted(address: str) -> None:
    assert config(gateway={"listen": address}).gateway.listen == address


@pytest.mark.parametrize(
    "address", ["9099", ":9099", "host:", "host:65536", "host:-1", "a b:1", "host:80/x", ""]
)
def test_host_port_rejected(address: str) -> None:
    assert error({"gateway": {"listen": address}}).endswith("- at `$.gateway.listen`")


@pytest.mark.parametrize(
    ("section", "field", "bad", "good"),
    [
        ("gateway", "max_message_bytes", 0, 1),
        ("gateway", "idle_timeout_s", 0, 0.001),
        ("gateway", "backend_handshake_timeout_s", -1, 10),
        ("gateway", "close_timeout_s", 0, 5),
        ("gateway", "max_backend_message_bytes", 0, 1),
        ("gateway", "max_pings_per_second", -1, 0),
        ("gateway", "max_pings_per_second", 1_000_001, 1_000_000),
        ("gateway", "redis_failure", "maybe", "closed"),
        ("gateway", "redis_url", "http://x", "redis://127.0.0.1:6379/0"),
        ("security", "token_ttl_s", 0, 1),
        ("security", "issuer", "", "https://gw.example"),
        ("security", "signing_key_file", "", "k.pem"),
    ],
)
def test_scalar_bounds(section: str, field: str, bad: Any, good: Any) -> None:
    assert getattr(getattr(config(**{section: {field: good}}), section), field) == good
    assert error({section: {field: bad}}).endswith(f"- at `$.{section}.{field}`")


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("messages_per_minute", 0, 1),
        ("bytes_per_minute", 0, 1),
        ("max_connections", 0, 1),
        ("max_connection_duration_s", 0, 0.5),
        ("burst", -1, 0),
        ("on_limit", "queue", "shape"),
        ("backend_on_limit", "queue", "drop"),
        ("count", "sideways", "client"),
    ],
)
def test_tier_bounds(field: str, bad: Any, good: Any) -> None:
    assert getattr(config(tiers={"T": {field: good}}).tiers["T"], field) == good
    assert error({"tiers": {"T": {field: bad}}}).endswith(f"- at `$.tiers[...].{field}`")


def test_tier_name_pattern() -> None:
    assert "at `key` in `$.tiers`" in error({"tiers": {"bad name": {}}})


def test_booleans_are_not_numbers() -> None:
    assert "got `bool`" in error({"gateway": {"max_message_bytes": True}})


@pytest.mark.parametrize("context", ["/chat", "/a/b", "/v1.0/chat-x", "/.well-known", "/a/...b"])
def test_context_accepted(context: str) -> None:
    assert config(apis=[api(context=context)]).apis[0].context == context


@pytest.mark.parametrize(
    "context",
    ["chat", "/", "/chat/", "/a//b", "/chat?x=1", "/c#f", "", "/..", "/a/./b", "/%41pi", "/a;b"],
)
def test_context_rejected(context: str) -> None:
    assert error({"apis": [api(context=context)]}).endswith("- at `$.apis[0].context`")


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:7001", "wss://echo.example/ws?x=1", "ws://[::1]:80/x", "ws://h/"]
)
def test_endpoint_accepted(url: str) -> None:
    assert config(apis=[api(endpoints={"sandbox": url})]).apis[0].endpoints.sandbox == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:7001", "matching regex"),
        ("ws://", "matching regex"),
        ("ws:///path", "matching regex"),
        ("ws://host:99999/", "Port out of range"),
        ("ws://user:pw@host/", "must not carry credentials"),
        ("ws://host/#frag", "matching regex"),
    ],
)
def test_endpoint_rejected(url: str, why: str) -> None:
    message = error({"apis": [api(endpoints={"production": url})]})
    assert why in message
    assert "$.apis[0].endpoints" in message


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("name", "Chat API"),
        ("name", "Chat:1"),
        ("version", "1.0/x"),
        ("version", 1.0),
        ("status", "ACTIVE"),
        ("auth", "basic"),
        ("default_version", "yes"),
    ],
)
def test_api_fields_rejected(field: str, bad: Any) -> None:
    assert error({"apis": [api(**{field: bad})]}).endswith(f"- at `$.apis[0].{field}`")


def test_api_missing_endpoints() -> None:
    raw = api()
    del raw["endpoints"]
    assert error({"apis": [raw]}) == "Object missing required field `endpoints` - at `$.apis[0]`"


def test_unknown_field_rejected_everywhere() -> None:
    assert error({"gateway": {"lisen": "x"}}) == (
        "Object contains unknown field `lisen` - at `$.gateway`"
    )
    assert "unknown field `rate`" in error({"tiers": {"T": {"rate": 1}}})
    assert "unknown field `extra`" in error(
        {"applications": [{"name": "A", "extra": 1}]}, Subscriptions
    )


def test_api_tier_must_be_defined() -> None:
    message = error({"tiers": {"Gold": {}}, "apis": [api(tiers=["Gold", "Platinum"])]})
    assert message == (
        "tier 'Platinum' is not defined in tiers (defined: Gold) - at $.apis[0].tiers[1]"
    )


def test_api_throttle_must_be_defined() -> None:
    assert error({"apis": [api(throttle="PerApi")]}) == (
        "tier 'PerApi' is not defined in tiers (defined: Unlimited) - at $.apis[0].throttle"
    )
    assert config(tiers={"Unlimited": {}, "PerApi": {}}, apis=[api(throttle="PerApi")])


def test_api_tier_listed_twice() -> None:
    assert error({"apis": [api(tiers=["Unlimited", "Unlimited"])]}) == (
        "tier 'Unlimited' is listed twice - at $.tiers[1] - at `$.apis[0]`"
    )


def test_context_version_unique() -> None:
    raw = {"apis": [api(), api(name="Other")]}
    assert error(raw) == ("context /chat version 1.0 is already used by apis[0] - at $.apis[1]")
    assert config(apis=[api(), api(name="Other", version="2.0")])


def test_name_version_unique() -> None:
    assert error({"apis": [api(), api(context="/other")]}) == (
        "API Chat:1.0 is already defined by apis[0] - at $.apis[1]"
    )
    assert config(apis=[api(), api(context="/other", version="2.0")])


def test_one_default_version_per_context() -> None:
    two = [api(default_version=True), api(version="2.0", default_version=True)]
    assert error({"apis": two}) == (
        "context /chat already has a default version (apis[0]) - at $.apis[1].default_version"
    )
    elsewhere = [api(default_version=True), api(name="B", context="/b", default_version=True)]
    assert len(config(apis=elsewhere).apis) == 2


def test_all_cross_field_problems_at_once() -> None:
    raw = {"apis": [api(tiers=["Gold"], throttle="X"), api(context="/b")]}
    assert error(raw).splitlines() == [
        "tier 'Gold' is not defined in tiers (defined: Unlimited) - at $.apis[0].tiers[0]",
        "tier 'X' is not defined in tiers (defined: Unlimited) - at $.apis[0].throttle",
        "API Chat:1.0 is already defined by apis[0] - at $.apis[1]",
    ]


def test_listen_addresses_distinct_except_port_zero() -> None:
    assert error({"gateway": {"listen": "127.0.0.1:9000", "admin_listen": "127.0.0.1:9000"}}) == (
        "address 127.0.0.1:9000 is already used by listen - at $.admin_listen - at `$.gateway`"
    )
    tls = {"listen": "127.0.0.1:9099", "cert_file": "c", "key_file": "k"}
    assert "already used by listen - at $.tls.listen" in error({"gateway": {"tls": tls}})
    both_zero = config(gateway={"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"})
    assert both_zero.gateway.listen == both_zero.gateway.admin_listen


def test_tls_listener_requires_all_fields() -> None:
    assert "missing required field `key_file`" in error(
        {"gateway": {"tls": {"listen": "0.0.0.0:443", "cert_file": "c"}}}
    )


def keys(consumer_key: str, digest: str = HASH) -> dict[str, str]:
    return {"consumer_key": consumer_key, "consumer_secret_sha256": digest}


@pytest.mark.parametrize("digest", ["AB" * 32, "ab" * 31 + "a", "ab" * 32 + "0", "zz" * 32])
def test_secret_hash_must_be_64_lowercase_hex(digest: str) -> None:
    raw = {"applications": [{"name": "A", "keys": {"production": keys("ck", digest)}}]}
    assert error(raw, Subscriptions).endswith(
        "- at `$.applications[0].keys.production.consumer_secret_sha256`"
    )


@pytest.mark.parametrize("consumer_key", ["", "a:b", "a b"])
def test_consumer_key_charset(consumer_key: str) -> None:
    raw = {"applications": [{"name": "A", "keys": {"sandbox": keys(consumer_key)}}]}
    assert error(raw, Subscriptions).endswith("- at `$.applications[0].keys.sandbox.consumer_key`")


def test_application_names_unique() -> None:
    raw = {"applications": [{"name": "A"}, {"name": "B"}, {"name": "A"}]}
    assert error(raw, Subscriptions) == (
        "application 'A' is already defined by applications[0] - at $.applications[2].name"
    )


def test_consumer_keys_unique_across_apps_and_key_types() -> None:
    raw = {
        "applications": [
            {"name": "A", "keys": {"production": keys("k1"), "sandbox": keys("k1")}},
            {"name": "B", "keys": {"sandbox": keys("k1")}},
        ]
    }
    assert error(raw, Subscriptions).splitlines() == [
        "consumer key is already used by applications[0].keys.production"
        " - at $.applications[0].keys.sandbox.consumer_key",
        "consumer key is already used by applications[0].keys.production"
        " - at $.applications[1].keys.sandbox.consumer_key",
    ]


def test_subscription_unique_within_app() -> None:
    sub = {"api": "Chat", "version": "1.0", "tier": "Gold"}
    raw = {"applications": [{"name": "A", "subscriptions": [sub, {**sub, "tier": "Silver"}]}]}
    assert error(raw, Subscriptions) == (
        "already subscribed to Chat:1.0 (subscriptions[0]) - at $.subscriptions[1]"
        " - at `$.applications[0]`"
    )
    other_version = {**sub, "version": "2.0"}
    ok = {"applications": [{"name": "A", "subscriptions": [sub, other_version]}]}
    assert len(msgspec.convert(ok, Subscriptions).applications[0].subscriptions) == 2


def test_subscription_status() -> None:
    sub = {"api": "Chat", "version": "1.0", "tier": "Gold", "status": "ON_HOLD"}
    raw = {"applications": [{"name": "A", "subscriptions": [sub]}]}
    assert "Invalid enum value 'ON_HOLD'" in error(raw, Subscriptions)


def test_rules_also_run_when_built_in_python() -> None:
    with pytest.raises(ValueError, match="already defined"):
        Subscriptions(applications=[Application(name="A"), Application(name="A")])


def test_lookup_helpers() -> None:
    c = config(apis=[api()])
    assert c.api("Chat", "1.0") is c.apis[0] and c.api("Chat", "2.0") is None
    assert c.apis[0].ref == "Chat:1.0"
    subs = msgspec.convert(
        {
            "applications": [
                {"name": "A", "subscriptions": [{"api": "Chat", "version": "1.0", "tier": "Gold"}]}
            ]
        },
        Subscriptions,
    )
    app = subs.application("A")
    assert app is not None and subs.application("B") is None
    assert app.subscription("Chat", "1.0") is app.subscriptions[0]
    assert app.subscription("Chat", "2.0") is None


@pytest.mark.parametrize(
    ("count", "client", "backend"),
    [("both", True, True), ("client", True, False), ("backend", False, True)],
)
def test_tier_directions(count: str, client: bool, backend: bool) -> None:
    tier = Tier(count=count, on_limit="close", backend_on_limit="drop")
    assert (tier.counts(True), tier.counts(False)) == (client, backend)
    assert (tier.action(True), tier.action(False)) == ("close", "drop")


def test_token_failures_defaults() -> None:
    f = GatewayConfig().security.token_failures
    assert (f.per_address, f.per_client_id, f.window_s, f.max_tracked) == (10, 5, 60.0, 10_000)


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("per_address", -1, 0),
        ("per_address", 1001, 1000),
        ("per_client_id", -1, 0),
        ("per_client_id", 1001, 1),
        ("window_s", 0, 0.5),
        ("window_s", 86401, 86400),
        ("max_tracked", 99, 100),
        ("max_tracked", 1_000_001, 1_000_000),
    ],
)
def test_token_failures_bounds(field: str, bad: Any, good: Any) -> None:
    section = config(security={"token_failures": {field: good}}).security.token_failures
    assert getattr(section, field) == good
    where = f"- at `$.security.token_failures.{field}`"
    assert error({"security": {"token_failures": {field: bad}}}).endswith(where)


def test_token_failures_unknown_field() -> None:
    raw = {"security": {"token_failures": {"per_ip": 3}}}
    assert "unknown field `per_ip`" in error(raw)


def test_listener_limit_defaults() -> None:
    g = GatewayConfig().gateway
    assert (g.max_admin_connections, g.max_pending_per_address) == (64, 32)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_admin_connections", 0, "Expected `int` >= 1"),
        ("max_admin_connections", 4097, "Expected `int` <= 4096"),
        ("max_pending_per_address", -1, "Expected `int` >= 0"),
        ("max_pending_per_address", 1_000_001, "Expected `int` <= 1000000"),
        ("max_pending_per_address", 2.5, "Expected `int`, got `float`"),
    ],
)
def test_listener_limit_bounds(field: str, value: object, message: str) -> None:
    problem = error({"gateway": {field: value}})
    assert message in problem and f"$.gateway.{field}" in problem


def test_pending_per_address_zero_means_no_limit() -> None:
    g = config(gateway={"max_pending_per_address": 0, "max_admin_connections": 4096}).gateway
    assert (g.max_pending_per_address, g.max_admin_connections) == (0, 4096)
