from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from wsgw.errors import InvalidToken
from wsgw.oauth.keys import SigningKey
from wsgw.oauth.tokens import MAX_TOKEN_CHARS, TokenClaims, TokenIssuer, TokenVerifier

ISSUER = "https://gw.test"
EXPIRED = "access token expired"
INVALID = "invalid access token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(now: int, **overrides) -> dict:
    claims = {
        "iss": ISSUER,
        "sub": "app1",
        "application": "app1",
        "key_type": "PRODUCTION",
        "azp": "ck-1",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP = object()


def _sign(key: SigningKey, claims: dict) -> str:
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.key_id})


def _rejected(verifier: TokenVerifier, token: str, message: str = INVALID) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert info.value.message == message
    assert str(info.value) == message
    # The library's exception (which may quote the token) is not chained for a logger to find.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_round_trip(any_key: SigningKey, clock) -> None:
    issuer = TokenIssuer(any_key, ISSUER, 300, clock=clock)
    token, expires_in = issuer.issue("app1", "SANDBOX", "ck-1")
    assert expires_in == 300
    header = jwt.get_unverified_header(token)
    assert header["alg"] == any_key.algorithm
    assert header["kid"] == any_key.key_id
    payload = jwt.decode(token, options={"verify_signature": False})
    now = int(clock.now)
    assert payload["iss"] == ISSUER
    assert payload["sub"] == payload["application"] == "app1"
    assert payload["key_type"] == "SANDBOX"
    assert payload["azp"] == "ck-1"
    assert payload["iat"] == payload["nbf"] == now
    assert payload["exp"] == now + 300
    assert isinstance(payload["jti"], str) and len(payload["jti"]) >= 16

    claims = TokenVerifier(any_key, ISSUER, clock=clock).verify(token)
    assert claims == TokenClaims("app1", "SANDBOX", "ck-1", payload["jti"], now, now + 300)


def test_default_clock_round_trip(ed_key: SigningKey) -> None:
    token, _ = TokenIssuer(ed_key, ISSUER, 60).issue("app1", "PRODUCTION", "ck-1")
    claims = TokenVerifier(ed_key, ISSUER).verify(token)
    assert claims.expires_at - 60 == claims.issued_at <= time.time()


def test_jti_is_unique(ed_key: SigningKey) -> None:
    issuer = TokenIssuer(ed_key, ISSUER, 60)
    verifier = TokenVerifier(ed_key, ISSUER)
    jtis = {verifier.verify(issuer.issue("a", "PRODUCTION", "c")[0]).jti for _ in range(20)}
    assert len(jtis) == 20


def test_issue_refuses_bad_key_type(ed_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        TokenIssuer(ed_key, ISSUER, 60).issue("a", "production", "c")


def test_expired(any_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(any_key, ISSUER, 60, clock=clock).issue("a", "PRODUCTION", "c")
    verifier = TokenVerifier(any_key, ISSUER, clock=clock, cache_size=0)
    clock.now += 59
    verifier.verify(token)
    clock.now += 1  # exp is the first second the token is no longer valid
    _rejected(verifier, token, EXPIRED)


def test_leeway(ed_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(ed_key, ISSUER, 60, clock=clock).issue("a", "PRODUCTION", "c")
    verifier = TokenVerifier(ed_key, ISSUER, leeway_s=10, clock=clock, cache_size=0)
    clock.now += 69
    verifier.verify(token)
    clock.now += 1
    _rejected(verifier, token, EXPIRED)


def test_not_yet_valid(ed_key: SigningKey, clock) -> None:
    now = int(clock.now)
    verifier = TokenVerifier(ed_key, ISSUER, clock=clock)
    _rejected(verifier, _sign(ed_key, _claims(now, nbf=now + 30)))
    _rejected(verifier, _sign(ed_key, _claims(now, iat=now + 30, nbf=_DROP)))
    # nbf is optional
    assert verifier.verify(_sign(ed_key, _claims(now, nbf=_DROP))).application == "app1"


def test_expired_is_only_said_of_authentic_tokens(ed_key, other_ed_key, clock) -> None:
    now = int(clock.now)
    forged = _sign(other_ed_key, _claims(now - 600, exp=now - 300))
    _rejected(TokenVerifier(ed_key, ISSUER, clock=clock), forged, INVALID)


def test_wrong_issuer(ed_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(ed_key, "https://other", 60, clock=clock).issue("a", "SANDBOX", "c")
    _rejected(TokenVerifier(ed_key, ISSUER, clock=clock), token)


def test_wrong_key(ed_key, other_ed_key, clock) -> None:
    token, _ = TokenIssuer(other_ed_key, ISSUER, 60, clock=clock).issue("a", "SANDBOX", "c")
    _rejected(TokenVerifier(ed_key, ISSUER, clock=clock), token)


def test_algorithm_is_pinned_to_the_key(ed_key, rsa_key, clock) -> None:
    rsa_token, _ = TokenIssuer(rsa_key, ISSUER, 60, clock=clock).issue("a", "SANDBOX", "c")
    _rejected(TokenVerifier(ed_key, ISSUER, clock=clock), rsa_token)
    ed_token, _ = TokenIssuer(ed_key, ISSUER, 60, clock=clock).issue("a", "SANDBOX", "c")
    _rejected(TokenVerifier(rsa_key, ISSUER, clock=clock), ed_token)


def test_alg_none(any_key: SigningKey, clock) -> None:
    token = jwt.encode(_claims(int(clock.now)), None, algorithm="none")
    assert token.endswith(".")  # really unsigned
    _rejected(TokenVerifier(any_key, ISSUER, clock=clock), token)
    # Same, with a signature segment that is not empty
    _rejected(TokenVerifier(any_key, ISSUER, clock=clock), token + _b64(b"x" * 32))


@pytest.mark.parametrize("public_format", ["pem", "raw-pem-text"])
def test_hs256_with_public_key_as_secret(any_key: SigningKey, clock, public_format) -> None:
    """The key-confusion attack: HMAC-sign with the (public) verification key as secret."""
    secret = any_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public_format == "raw-pem-text":
        secret = secret.strip()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": any_key.key_id}).encode())
    payload = _b64(json.dumps(_claims(int(clock.now))).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    _rejected(TokenVerifier(any_key, ISSUER, clock=clock), f"{header}.{payload}.{signature}")


def test_tampered_payload(any_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(any_key, ISSUER, 60, clock=clock).issue("app1", "SANDBOX", "c")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["key_type"] = "PRODUCTION"
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    verifier = TokenVerifier(any_key, ISSUER, clock=clock)
    _rejected(verifier, forged)
    assert verifier.verify(token).key_type == "SANDBOX"  # the original is fine


def test_tampered_signature(ed_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(ed_key, ISSUER, 60, clock=clock).issue("app1", "SANDBOX", "c")
    head, _, signature = token.rpartition(".")
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    _rejected(TokenVerifier(ed_key, ISSUER, clock=clock), f"{head}.{flipped}")


@pytest.mark.parametrize(
    "claim", ["iss", "sub", "exp", "iat", "jti", "application", "key_type", "azp"]
)
def test_missing_claim(ed_key: SigningKey, clock, claim: str) -> None:
    verifier = TokenVerifier(ed_key, ISSUER, clock=clock)
    now = int(clock.now)
    verifier.verify(_sign(ed_key, _claims(now)))  # the control: complete claims pass
    _rejected(verifier, _sign(ed_key, _claims(now, **{claim: _DROP})))


@pytest.mark.parametrize(
    "overrides",
    [
        {"key_type": "GOLD"},
        {"key_type": "production"},
        {"key_type": ""},
        {"key_type": None},
        {"application": ""},
        {"application": 7},
        {"azp": ""},
        {"azp": ["ck-1"]},
        {"jti": ""},
        {"sub": "someone-else"},
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": 1e12},
        {"iat": "0"},
        {"nbf": None},
    ],
    ids=repr,
)
def test_bad_claim_values(ed_key: SigningKey, clock, overrides: dict) -> None:
    _rejected(
        TokenVerifier(ed_key, ISSUER, clock=clock),
        _sign(ed_key, _claims(int(clock.now), **overrides)),
    )


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "...",
        "é.é.é",
        "\x00",
        "eyJ.eyJ.eyJ",
        "Bearer x.y.z",
        _b64(b'{"alg":"EdDSA"}') + "." + _b64(b"[1,2]") + ".AAAA",
    ],
)
def test_garbage(ed_key: SigningKey, garbage: str) -> None:
    _rejected(TokenVerifier(ed_key, ISSUER), garbage)


def test_non_string(ed_key: SigningKey) -> None:
    _rejected(TokenVerifier(ed_key, ISSUER), b"a.b.c")  # type: ignore[arg-type]


def test_oversize_token_rejected_even_if_authentic(ed_key: SigningKey, clock) -> None:
    verifier = TokenVerifier(ed_key, ISSUER, clock=clock)
    now = int(clock.now)
    padded = _claims(now, pad="")
    base = len(_sign(ed_key, padded))
    # A padding claim brings the authentic token to exactly the limit, then one over.
    padded["pad"] = "x" * ((MAX_TOKEN_CHARS - base) * 3 // 4)
    token = _sign(ed_key, padded)
    while len(token) < MAX_TOKEN_CHARS:
        padded["pad"] += "x"
        token = _sign(ed_key, padded)
    assert len(token) == MAX_TOKEN_CHARS
    verifier.verify(token)
    while len(token) <= MAX_TOKEN_CHARS:
        padded["pad"] += "x"
        token = _sign(ed_key, padded)
    _rejected(verifier, token)


def test_oversize_garbage_is_cheap(ed_key: SigningKey) -> None:
    verifier = TokenVerifier(ed_key, ISSUER)
    # A plausible header, then a 1 MiB payload: parsing it means base64 and JSON work.
    huge = _b64(b'{"alg":"EdDSA","typ":"JWT"}') + "." + "a" * (1024 * 1024) + ".AAAA"
    start = time.perf_counter()
    for _ in range(20):
        _rejected(verifier, huge)
    # Refused by length alone this takes microseconds; parsing would take about a second.
    assert time.perf_counter() - start < 0.1


class CountingVerifier(TokenVerifier):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.full_checks = 0

    def _verify_uncached(self, token: str) -> TokenClaims:
        self.full_checks += 1
        return super()._verify_uncached(token)


def test_cache_hits_skip_the_signature_check(ed_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(ed_key, ISSUER, 60, clock=clock).issue("a", "PRODUCTION", "c")
    verifier = CountingVerifier(ed_key, ISSUER, clock=clock)
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    assert verifier.verify(token) == first
    assert verifier.full_checks == 1


def test_cache_still_enforces_expiry(ed_key: SigningKey, clock) -> None:
    token, _ = TokenIssuer(ed_key, ISSUER, 60, clock=clock).issue("a", "PRODUCTION", "c")
    verifier = CountingVerifier(ed_key, ISSUER, clock=clock)
    verifier.verify(token)
    clock.now += 60
    _rejected(verifier, token, EXPIRED)
    assert verifier.full_checks == 1  # the refusal came from the cache hit
    _rejected(verifier, token, EXPIRED)  # and the entry is gone: a full check says the same
    assert verifier.full_checks == 2


def test_cache_does_not_keep_failures(ed_key, other_ed_key, clock) -> None:
    forged, _ = TokenIssuer(other_ed_key, ISSUER, 60, clock=clock).issue("a", "SANDBOX", "c")
    verifier = CountingVerifier(ed_key, ISSUER, clock=clock)
    for _ in range(3):
        _rejected(verifier, forged)
    assert verifier.full_checks == 3


def test_cache_is_bounded_lru(ed_key: SigningKey, clock) -> None:
    issuer = TokenIssuer(ed_key, ISSUER, 60, clock=clock)
    tokens = [issuer.issue(f"app{i}", "PRODUCTION", "c")[0] for i in range(5)]
    verifier = CountingVerifier(ed_key, ISSUER, cache_size=3, clock=clock)
    for token in tokens[:3]:
        verifier.verify(token)
    verifier.verify(tokens[0])  # now most recently used
    verifier.verify(tokens[3])  # evicts tokens[1], the least recently used
    verifier.verify(tokens[4])  # evicts tokens[2]
    assert verifier.full_checks == 5
    verifier.verify(tokens[0])
    assert verifier.full_checks == 5  # still cached
    verifier.verify(tokens[1])
    assert verifier.full_checks == 6  # was evicted
    assert len(verifier._cache) == 3
