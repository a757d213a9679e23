"""The token endpoint's limit on failed client authentications (wsgw/oauth/guard.py), on its
own and through handle_token_request. An injected clock: no sleeps."""

from __future__ import annotations

import base64
import hashlib
import logging
import tracemalloc
from urllib.parse import urlencode

import msgspec
import orjson
import pytest

from wsgw.addresses import address_key
from wsgw.config.models import GatewayConfig, TokenFailures
from wsgw.oauth import endpoint
from wsgw.oauth.endpoint import ClientRecord, handle_token_request
from wsgw.oauth.guard import PRUNE_PER_CALL, SlidingLimit, TokenGuard, client_key
from wsgw.oauth.tokens import TokenIssuer
from wsgw.pipeline.telemetry import Telemetry

FORM = "application/x-www-form-urlencoded"
CLIENT_ID, SECRET = "ck-prod", "s3cret-prod-0123456789"
OTHER_ID, OTHER_SECRET = "ck-other", "s3cret-other-9876543210"
ADDRESS = "198.51.100.7"


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


CLIENTS = {
    CLIENT_ID: ClientRecord("app1", "PRODUCTION", _sha(SECRET)),
    OTHER_ID: ClientRecord("app2", "PRODUCTION", _sha(OTHER_SECRET)),
}


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> TokenGuard:
    return TokenGuard(per_address=10, per_client_id=5, window_s=60.0, clock=clock)


# ---------------------------------------------------------------- the limits alone


def test_client_id_limit_and_retry_after(guard: TokenGuard, clock: Clock) -> None:
    for i in range(5):
        assert guard.retry_after(None, CLIENT_ID) == 0
        guard.failed(f"203.0.113.{i}", CLIENT_ID, known=True)  # five addresses: one id
        clock.now += 1.5
    # The first failure was 7.5 s ago: blocked for the 52.5 s it has left, rounded up.
    assert guard.retry_after("192.0.2.99", CLIENT_ID) == 53
    assert guard.retry_after(None, OTHER_ID) == 0  # other ids are not affected
    clock.now += 52.4
    assert guard.retry_after(None, CLIENT_ID) == 1  # never 0 while blocked
    clock.now += 0.1
    assert guard.retry_after(None, CLIENT_ID) == 0  # the first failure aged out


def test_window_slides(guard: TokenGuard, clock: Clock) -> None:
    start = clock.now
    for i in range(5):
        clock.now = start + 10 * i
        guard.failed(None, CLIENT_ID, known=False)
    assert guard.retry_after(None, CLIENT_ID) == 20  # until start + 60
    clock.now = start + 60
    assert guard.retry_after(None, CLIENT_ID) == 0
    guard.failed(None, CLIENT_ID, known=False)  # one more: failures at 10..60 now
    assert guard.retry_after(None, CLIENT_ID) == 10  # until start + 70
    # At most 5 failures in any 60 s: never 6.
    assert guard.by_client is not None
    assert len(guard.by_client.keys[CLIENT_ID]) == 5


def test_address_limit_covers_every_client_id(guard: TokenGuard, clock: Clock) -> None:
    for i in range(10):
        assert guard.retry_after(ADDRESS, f"guess-{i}") == 0
        guard.failed(ADDRESS, f"guess-{i}", known=False)
    assert guard.retry_after(ADDRESS, CLIENT_ID) == 60  # a fresh, real id: still refused
    assert guard.retry_after("198.51.100.8", CLIENT_ID) == 0  # another address is not
    assert guard.retry_after(None, CLIENT_ID) == 0


def test_ipv6_counts_per_64(guard: TokenGuard) -> None:
    for i in range(10):
        guard.failed(f"2001:db8:1:2::{i + 1:x}", f"guess-{i}", known=False)
    assert guard.retry_after("2001:db8:1:2:ffff::1", "new") == 60  # same /64
    assert guard.retry_after("2001:db8:1:3::1", "new") == 0  # next /64
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("2001:db8::") == "2001:db8::/64"
    for junk in ("?", "", "1.2.3", "::g", "10.0.0.1\n", "x" * 300):
        assert address_key(junk) is None


def test_no_ip_address_means_no_address_limit(guard: TokenGuard) -> None:
    assert address_key("?") is None and address_key(None) is None
    for i in range(20):
        guard.failed("?", f"guess-{i}", known=False)
    assert guard.retry_after("?", "new") == 0
    assert guard.by_address is not None and not guard.by_address.keys


def test_zero_disables_a_limit(clock: Clock) -> None:
    g = TokenGuard(per_address=0, per_client_id=0, clock=clock)
    for _ in range(100):
        g.failed(ADDRESS, CLIENT_ID, known=True)
    assert g.retry_after(ADDRESS, CLIENT_ID) == 0
    assert list(g.collect()) == []


def test_long_client_ids_cost_a_digest(guard: TokenGuard) -> None:
    huge = "x" * 16_000
    guard.failed(None, huge, known=False)
    assert guard.by_client is not None
    [key] = guard.by_client.keys
    assert len(key) < 80 and key == client_key(huge)
    assert client_key("ck-normal") == "ck-normal"


def test_memory_is_bounded_whatever_the_ids(clock: Clock) -> None:
    """An attacker rotating client ids and addresses (20 times the cap here): at most
    max_tracked keys per limit, the least recently failed forgotten first (and counted)."""
    g = TokenGuard(max_tracked=1000, clock=clock)
    for i in range(20_000):
        clock.now += 0.0001  # all within one window: nothing ages out
        g.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"fake-{i}", known=False)
    assert g.by_client is not None and g.by_address is not None
    assert len(g.by_client.keys) == 1000 and len(g.by_address.keys) == 1000
    assert g.by_client.evicted == 19_000
    assert "fake-19999" in g.by_client.keys and "fake-0" not in g.by_client.keys
    samples = {(name, labels["limit"]): value for name, _, _, labels, value in g.collect()}
    assert samples[("wsgw_token_guard_tracked", "client_id")] == 1000
    assert samples[("wsgw_token_guard_evicted_total", "address")] == 19_000


def test_worst_case_memory_per_key(clock: Clock) -> None:
    """Keys at their limit, client ids of the longest valid length: under 1.5 kB per address
    and client id, so the default cap (10,000 of each) stays under 15 MB."""
    keys = 500
    g = TokenGuard(max_tracked=keys, clock=clock)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(keys):
            address = f"2001:db8:{i:x}::1"
            client_id = f"{i:08d}" + "k" * 248
            for _ in range(10):
                clock.now += 0.0001
                g.failed(address, client_id, known=False)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert g.by_client is not None and len(g.by_client.keys) == keys
    assert used / keys < 1500, used / keys


def test_aged_out_keys_are_pruned_as_failures_arrive(guard: TokenGuard, clock: Clock) -> None:
    for i in range(300):
        guard.failed(None, f"old-{i}", known=False)
    clock.now += 61
    assert guard.by_client is not None
    guard.failed(None, "new-0", known=False)
    assert len(guard.by_client.keys) == 300 + 1 - PRUNE_PER_CALL  # bounded work per call
    for i in range(1, 10):
        guard.failed(None, f"new-{i}", known=False)
    assert sorted(guard.by_client.keys) == sorted(f"new-{i}" for i in range(10))
    assert guard.by_client.evicted == 0  # pruning is not eviction


def test_sliding_limit_arguments() -> None:
    with pytest.raises(ValueError):
        SlidingLimit("x", 0, 60.0, 10)
    with pytest.raises(ValueError):
        SlidingLimit("x", 1, 0.0, 10)


def test_blocking_is_logged_once_per_interval_without_unknown_ids(
    guard: TokenGuard, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgw")
    for _ in range(5):
        guard.failed(ADDRESS, CLIENT_ID, known=True)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "token endpoint: 5 failed client authentications for client id ck-prod within 60 s: "
        "its token requests are refused (429) until they age out"
    ]
    assert caplog.records[0].levelno == logging.WARNING
    caplog.clear()
    # An unknown "client id" may be a secret typed in the wrong field: never logged.
    for _ in range(5):
        guard.failed("192.0.2.1", SECRET, known=False)
    for i in range(10):
        guard.failed("192.0.2.2", f"x{i}", known=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    assert "an unknown client id" not in text  # same event as above: held back this minute
    assert "from 192.0.2.2 within 60 s" in text  # the first address block: a new event
    clock.now += 60  # the interval is over: the summary, then the new block
    for _ in range(5):
        guard.failed(None, "y", known=False)
    messages = [r.getMessage() for r in caplog.records][1:]
    assert messages == [
        "token endpoint: 5 failed client authentications for client id ck-prod within 60 s: "
        "its token requests are refused (429) until they age out ... and 1 more in the last "
        "60 s",
        "token endpoint: 5 failed client authentications for an unknown client id within "
        "60 s: its token requests are refused (429) until they age out",
    ]
    assert SECRET not in "\n".join(messages)


def test_from_config() -> None:
    raw = {"security": {"token_failures": {"per_address": 3, "window_s": 2.5}}}
    section = msgspec.convert(raw, GatewayConfig).security.token_failures
    g = TokenGuard.from_config(section)
    assert g.by_address is not None and g.by_client is not None
    assert (g.by_address.limit, g.by_client.limit, g.window_s) == (3, 5, 2.5)
    assert g.by_client.max_tracked == 10_000
    assert GatewayConfig().security.token_failures == TokenFailures()


# ------------------------------------------------- through handle_token_request


@pytest.fixture
def issuer(ed_key) -> TokenIssuer:
    return TokenIssuer(ed_key, "https://gw.test", 900)


class Lookups:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, client_id: str) -> ClientRecord | None:
        self.seen.append(client_id)
        return CLIENTS.get(client_id)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def call(issuer: TokenIssuer, guard: TokenGuard):
    lookups = Lookups()
    reasons: list[str] = []

    def run(
        client_id: str | None = CLIENT_ID,
        secret: str | None = SECRET,
        *,
        form: dict | None = None,
        address: str | None = ADDRESS,
        via_basic: bool = True,
        method: str = "POST",
    ):
        fields = {"grant_type": "client_credentials"} if form is None else dict(form)
        headers = {"content-type": FORM}
        if client_id is not None and secret is not None:
            if via_basic:
                headers["authorization"] = basic(client_id, secret)
            else:
                fields.update(client_id=client_id, client_secret=secret)
        status, response_headers, payload = handle_token_request(
            method,
            headers,
            urlencode(fields).encode(),
            lookups,
            issuer,
            guard=guard,
            address=address,
            on_failure=reasons.append,
        )
        return status, dict(response_headers), orjson.loads(payload)

    run.lookups = lookups  # type: ignore[attr-defined]
    run.reasons = reasons  # type: ignore[attr-defined]
    return run


def test_sixth_wrong_secret_is_refused_then_the_right_one_too(call, clock: Clock) -> None:
    for _ in range(5):
        status, _, body = call(secret="wrong")
        assert (status, body["error"]) == (401, "invalid_client")
    status, headers, body = call(secret="wrong")
    assert status == 429
    assert body == {
        "error": "too_many_requests",
        "error_description": "too many failed client authentications: retry later",
    }
    assert headers["Retry-After"] == "60"
    assert headers["Cache-Control"] == "no-store" and "WWW-Authenticate" not in headers
    # The right secret gets the very same answer: the limit is no oracle.
    assert call() == (status, headers, body)
    assert call(via_basic=False) == (status, headers, body)
    clock.now += 60
    status, _, body = call()
    assert status == 200 and body["token_type"] == "Bearer"
    assert call.reasons == ["invalid_client"] * 5 + ["blocked"] * 3


def test_blocked_requests_do_not_look_at_the_secret(call, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(5):
        call(secret="wrong")
    seen = len(call.lookups.seen)

    def no_check(*args: object) -> None:
        raise AssertionError("the secret was checked while blocked")

    monkeypatch.setattr(endpoint, "_authenticate", no_check)
    monkeypatch.setattr(endpoint.hashlib, "sha256", no_check)
    for _ in range(100):
        assert call()[0] == 429
    assert len(call.lookups.seen) == seen


def test_blocked_requests_do_not_extend_the_block(call, clock: Clock) -> None:
    for _ in range(5):
        call(secret="wrong")
    for _ in range(50):
        clock.now += 1
        assert call(secret="wrong")[0] == 429
    clock.now += 10
    assert call()[0] == 200


def test_unknown_client_ids_are_limited_like_known_ones(call) -> None:
    for _ in range(5):
        assert call(client_id="no-such-client", secret="guess")[0] == 401
    assert call(client_id="no-such-client", secret="guess")[0] == 429


def test_successes_do_not_count_nor_reset(call) -> None:
    for _ in range(4):
        assert call(secret="wrong")[0] == 401
    for _ in range(20):
        assert call()[0] == 200
    assert call(secret="wrong")[0] == 401  # the 5th failure: successes did not reset
    assert call()[0] == 429


def test_address_limit_through_the_endpoint(call) -> None:
    for i in range(10):
        assert call(client_id=f"guess-{i}", secret="guess", address="192.0.2.50")[0] == 401
    assert call(client_id=OTHER_ID, secret=OTHER_SECRET, address="192.0.2.50")[0] == 429
    assert call(client_id=OTHER_ID, secret=OTHER_SECRET, address="192.0.2.51")[0] == 200
    assert call(client_id=OTHER_ID, secret=OTHER_SECRET, address=None)[0] == 200


def test_only_checked_secrets_count(call) -> None:
    """Requests refused before a secret is compared (no credentials, malformed, two methods)
    are not guesses: they do not count towards the limit."""
    for _ in range(20):
        assert call(client_id=None, secret=None)[0] == 401  # the Basic challenge round
        assert call(client_id=None, secret=None, form={"client_id": CLIENT_ID})[0] == 401
        assert call(form={"grant_type": "client_credentials", "client_secret": "x"})[0] == 400
    assert call()[0] == 200


def test_the_grant_type_does_not_matter_once_blocked(call) -> None:
    for _ in range(5):
        call(secret="wrong")
    assert call(form={"grant_type": "password"})[0] == 429
    assert call(form={})[0] == 429


def test_failure_reasons(call) -> None:
    call(method="GET")
    call(form={"grant_type": "password"})
    call(client_id=None, secret=None)
    call(secret="wrong")
    call(form={})
    assert call.reasons == [
        "invalid_request",
        "unsupported_grant_type",
        "invalid_client",
        "invalid_client",
        "invalid_request",
    ]


def test_without_a_guard_nothing_changes(issuer: TokenIssuer) -> None:
    headers = {"content-type": FORM, "authorization": basic(CLIENT_ID, "wrong")}
    for _ in range(20):
        status, _, _ = handle_token_request(
            "POST", headers, b"grant_type=client_credentials", Lookups(), issuer
        )
        assert status == 401


# --------------------------------------------------------------------- metrics


def test_token_failures_metric_has_bounded_labels() -> None:
    t = Telemetry()
    text = t.metrics_text().decode()
    for reason in ("invalid_request", "invalid_client", "unsupported_grant_type", "blocked"):
        assert f'wsgw_token_failures_total{{reason="{reason}"}} 0.0' in text
    t.token_failure("blocked")
    t.token_failure("blocked")
    t.token_failure(CLIENT_ID)  # anything else is "-", never an id
    text = t.metrics_text().decode()
    assert 'wsgw_token_failures_total{reason="blocked"} 2.0' in text
    assert 'wsgw_token_failures_total{reason="-"} 1.0' in text
    assert CLIENT_ID not in text
