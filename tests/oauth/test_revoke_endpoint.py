"""POST /oauth2/revoke (RFC 7009) and TokenVerifier.claims_for_revocation, on real tokens
signed with generated keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlencode

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from wsgw.errors import InvalidToken
from wsgw.oauth.endpoint import ClientRecord, handle_revoke_request, handle_token_request
from wsgw.oauth.guard import TokenGuard
from wsgw.oauth.keys import SigningKey
from wsgw.oauth.revocation import (
    Revocation,
    RevocationList,
    load_revocations,
    record_revocations,
)
from wsgw.oauth.tokens import MAX_TOKEN_CHARS, TokenIssuer, TokenVerifier

ISSUER = "https://gw.test"
TTL = 900
FORM = "application/x-www-form-urlencoded"

OWN_ID, OWN_SECRET = "ck-own", "s3cret-own"
OTHER_ID, OTHER_SECRET = "ck-other", "s3cret-other"


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


CLIENTS = {
    OWN_ID: ClientRecord("weather", "PRODUCTION", _sha(OWN_SECRET)),
    OTHER_ID: ClientRecord("news", "PRODUCTION", _sha(OTHER_SECRET)),
}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class Revoked(list[Revocation]):
    """The revoke callback: remembers what it was given."""

    def __call__(self, entry: Revocation) -> None:
        self.append(entry)


@pytest.fixture
def issuer(ed_key: SigningKey) -> TokenIssuer:
    return TokenIssuer(ed_key, ISSUER, TTL)


@pytest.fixture
def verifier(ed_key: SigningKey) -> TokenVerifier:
    return TokenVerifier(ed_key, ISSUER)


@pytest.fixture
def own_token(issuer: TokenIssuer) -> str:
    return issuer.issue("weather", "PRODUCTION", OWN_ID)[0]


@pytest.fixture
def revoked() -> Revoked:
    return Revoked()


@pytest.fixture
def call(verifier: TokenVerifier, revoked: Revoked):
    def run(
        form: dict[str, str] | bytes | None = None,
        *,
        method: str = "POST",
        content_type: str | None = FORM,
        authorization: str | None = basic(OWN_ID, OWN_SECRET),
        **kwargs,
    ):
        body = urlencode(form).encode() if isinstance(form, dict) else (form or b"")
        headers = {}
        if content_type is not None:
            headers["content-type"] = content_type
        if authorization is not None:
            headers["authorization"] = authorization
        return handle_revoke_request(
            method, headers, body, CLIENTS.get, verifier, revoked, **kwargs
        )

    return run


def _assert_ok(answer) -> None:
    status, headers, body = answer
    assert (status, body) == (200, b"")
    assert dict(headers) == {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _assert_error(answer, status: int, error: str) -> dict[str, str]:
    got, headers, body = answer
    document = orjson.loads(body)
    assert (got, document["error"]) == (status, error)
    assert set(document) == {"error", "error_description"}
    as_dict = dict(headers)
    assert as_dict["Content-Type"] == "application/json"
    assert as_dict["Cache-Control"] == "no-store"
    return as_dict


def _assert_nothing_echoed(answer, *secrets: str) -> None:
    _, headers, body = answer
    text = body.decode() + json.dumps(headers)
    for secret in (OWN_SECRET, OTHER_SECRET, *secrets):
        assert secret not in text


# --- the endpoint -----------------------------------------------------------------------


def test_own_token_is_revoked(call, revoked: Revoked, own_token: str, verifier) -> None:
    answer = call({"token": own_token})
    _assert_ok(answer)
    claims = verifier.verify(own_token)
    assert revoked == [Revocation("jti", claims.jti, claims.expires_at)]
    assert RevocationList(revoked).revokes(claims) is not None
    _assert_nothing_echoed(answer, own_token)


def test_client_may_authenticate_in_the_form(call, revoked: Revoked, own_token: str) -> None:
    form = {"token": own_token, "client_id": OWN_ID, "client_secret": OWN_SECRET}
    _assert_ok(call(form, authorization=None))
    assert len(revoked) == 1


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "id_token", "weird"])
def test_token_type_hint_is_ignored(call, revoked: Revoked, own_token: str, hint: str) -> None:
    _assert_ok(call({"token": own_token, "token_type_hint": hint}))
    assert len(revoked) == 1


def test_expired_own_token_is_revoked_too(ed_key, call, revoked: Revoked) -> None:
    token = TokenIssuer(ed_key, ISSUER, TTL, clock=lambda: 1_600_000_000).issue(
        "weather", "PRODUCTION", OWN_ID
    )[0]
    _assert_ok(call({"token": token}))
    assert [(e.kind, e.expires_at) for e in revoked] == [("jti", 1_600_000_000 + TTL)]


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * (MAX_TOKEN_CHARS + 1)],
)
def test_garbage_token_is_200_and_revokes_nothing(call, revoked: Revoked, token: str) -> None:
    failures: list[str] = []
    answer = call({"token": token}, on_failure=failures.append)
    _assert_ok(answer)
    assert revoked == [] and failures == []
    _assert_nothing_echoed(answer, token)


def test_token_of_another_key_is_200_and_revokes_nothing(
    other_ed_key, call, revoked: Revoked
) -> None:
    foreign = TokenIssuer(other_ed_key, ISSUER, TTL).issue("weather", "PRODUCTION", OWN_ID)[0]
    _assert_ok(call({"token": foreign}))
    assert revoked == []


def test_token_of_another_client_is_refused(call, issuer, revoked: Revoked) -> None:
    theirs = issuer.issue("news", "PRODUCTION", OTHER_ID)[0]
    failures: list[str] = []
    answer = call({"token": theirs}, on_failure=failures.append)
    _assert_error(answer, 400, "unauthorized_client")
    assert orjson.loads(answer[2])["error_description"] == "the token was not issued to this client"
    assert revoked == [] and failures == ["unauthorized_client"]
    _assert_nothing_echoed(answer, theirs)


def test_missing_token(call, revoked: Revoked) -> None:
    _assert_error(call({"token_type_hint": "access_token"}), 400, "invalid_request")
    _assert_error(call(b""), 400, "invalid_request")
    assert revoked == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "post"])
def test_method_must_be_post(call, own_token: str, method: str) -> None:
    headers = _assert_error(call({"token": own_token}, method=method), 405, "invalid_request")
    assert headers["Allow"] == "POST"


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
def test_content_type_must_be_a_form(call, own_token: str, content_type) -> None:
    body = json.dumps({"token": own_token}).encode()
    _assert_error(call(body, content_type=content_type), 400, "invalid_request")


def test_repeated_token_parameter(call, own_token: str, revoked: Revoked) -> None:
    body = f"token={own_token}&token={own_token}".encode()
    _assert_error(call(body), 400, "invalid_request")
    assert revoked == []


@pytest.mark.parametrize(
    ("authorization", "form_auth", "challenge"),
    [
        (basic(OWN_ID, "wrong-secret"), {}, True),
        (basic("ck-unknown", OWN_SECRET), {}, True),
        (None, {}, True),  # no authentication at all
        (None, {"client_id": OWN_ID, "client_secret": "wrong-secret"}, False),
    ],
)
def test_client_authentication_failures(
    call, own_token: str, revoked: Revoked, authorization, form_auth, challenge: bool
) -> None:
    answer = call({"token": own_token, **form_auth}, authorization=authorization)
    headers = _assert_error(answer, 401, "invalid_client")
    assert ("WWW-Authenticate" in headers) == challenge
    assert revoked == []
    _assert_nothing_echoed(answer, own_token, "wrong-secret")


def test_guard_blocks_after_failures(call, own_token: str, revoked: Revoked, clock) -> None:
    guard = TokenGuard(per_address=10, per_client_id=2, clock=clock)
    failures: list[str] = []
    wrong = basic(OWN_ID, "wrong-secret")
    for _ in range(2):
        _assert_error(
            call(
                {"token": own_token}, authorization=wrong, guard=guard, on_failure=failures.append
            ),
            401,
            "invalid_client",
        )
    # Past the limit: 429 even with the right secret, and the token is not looked at.
    answer = call(
        {"token": own_token}, guard=guard, address="192.0.2.1", on_failure=failures.append
    )
    headers = _assert_error(answer, 429, "too_many_requests")
    assert int(headers["Retry-After"]) >= 1
    assert failures == ["invalid_client", "invalid_client", "blocked"]
    assert revoked == []


def test_guard_is_shared_with_the_token_endpoint(call, issuer, own_token: str, clock) -> None:
    """Failures at /oauth2/revoke count towards /oauth2/token's limit: one budget per client."""
    guard = TokenGuard(per_address=0, per_client_id=1, clock=clock)
    call({"token": own_token}, authorization=basic(OWN_ID, "wrong-secret"), guard=guard)
    status, _, _ = handle_token_request(
        "POST",
        {"content-type": FORM, "authorization": basic(OWN_ID, OWN_SECRET)},
        b"grant_type=client_credentials",
        CLIENTS.get,
        issuer,
        guard=guard,
    )
    assert status == 429


def test_revoked_into_the_file_ends_the_token(
    call, own_token: str, verifier, tmp_path: Path
) -> None:
    """The endpoint wired to the file, as a gateway would: the token is refused after."""
    path = tmp_path / "revocations.json"
    claims = verifier.verify(own_token)

    def revoke(entry: Revocation) -> None:
        record_revocations(path, [entry], claims.issued_at)

    headers = {"content-type": FORM, "authorization": basic(OWN_ID, OWN_SECRET)}
    body = urlencode({"token": own_token}).encode()
    _assert_ok(handle_revoke_request("POST", headers, body, CLIENTS.get, verifier, revoke))
    assert RevocationList(load_revocations(path)).revokes(claims) is not None
    assert own_token not in path.read_text()


# --- claims_for_revocation --------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(**changes: object) -> dict[str, object]:
    now = 1_700_000_000
    return {
        "iss": ISSUER,
        "sub": "weather",
        "application": "weather",
        "key_type": "PRODUCTION",
        "azp": OWN_ID,
        "iat": now,
        "nbf": now,
        "exp": now + TTL,
        "jti": "0" * 32,
        **changes,
    }


def _hs256_with_public_key(key: SigningKey, payload: dict[str, object]) -> str:
    """The RS256→HS256 confusion: HMAC-signed with the public key's PEM as the secret."""
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.key_id}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_claims_of_a_real_token(any_key: SigningKey) -> None:
    token = TokenIssuer(any_key, ISSUER, TTL).issue("weather", "SANDBOX", OWN_ID)[0]
    verifier = TokenVerifier(any_key, ISSUER)
    claims = verifier.claims_for_revocation(token)
    assert claims == verifier.verify(token)
    assert verifier.claims_for_revocation(token) == claims  # from the cache, same answer


def test_expired_and_not_yet_valid_tokens_are_identified(ed_key: SigningKey, clock) -> None:
    issuer = TokenIssuer(ed_key, ISSUER, TTL, clock=clock)
    expired, _ = issuer.issue("weather", "PRODUCTION", OWN_ID)
    clock.now += 2 * TTL
    future, _ = issuer.issue("weather", "PRODUCTION", OWN_ID)
    clock.now -= TTL  # `expired` is past its exp, `future` before its iat/nbf
    verifier = TokenVerifier(ed_key, ISSUER, clock=clock)
    for token in (expired, future):
        with pytest.raises(InvalidToken):  # verify() is unchanged
            verifier.verify(token)
        claims = verifier.claims_for_revocation(token)
        assert claims is not None and claims.consumer_key == OWN_ID
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(expired)


def test_forged_tokens_yield_no_claims(
    ed_key: SigningKey, other_ed_key: SigningKey, rsa_key: SigningKey
) -> None:
    payload = _payload()
    real = jwt.encode(payload, ed_key.private_key, algorithm="EdDSA")
    head, body, signature = real.split(".")
    tampered = f"{head}.{_b64(json.dumps(_payload(azp=OTHER_ID)).encode())}.{signature}"
    none_header = _b64(b'{"alg":"none"}')
    forged = {
        "other key": jwt.encode(payload, other_ed_key.private_key, algorithm="EdDSA"),
        "alg none": jwt.encode(payload, None, algorithm="none"),
        "alg none, signature kept": f"{none_header}.{body}.{signature}",
        "HS256 with the public key": _hs256_with_public_key(ed_key, payload),
        "tampered payload": tampered,
        "no signature": f"{head}.{body}.",
    }
    verifier = TokenVerifier(ed_key, ISSUER)
    assert verifier.claims_for_revocation(real) is not None  # the control
    for what, token in forged.items():
        assert verifier.claims_for_revocation(token) is None, what

    rsa_payload = _payload()
    rsa_verifier = TokenVerifier(rsa_key, ISSUER)
    assert rsa_verifier.claims_for_revocation(_hs256_with_public_key(rsa_key, rsa_payload)) is None
    assert (
        rsa_verifier.claims_for_revocation(jwt.encode(rsa_payload, ed_key.private_key, "EdDSA"))
        is None
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://elsewhere.test"},
        {"sub": "news"},  # sub and application disagree
        {"key_type": "STAGING"},
        {"azp": ""},
        {"iat": 1_700_000_000.5},
        {"exp": True},
        {"jti": 7},
    ],
)
def test_signed_tokens_of_the_wrong_shape_yield_no_claims(
    ed_key: SigningKey, changes: dict[str, object]
) -> None:
    token = jwt.encode(_payload(**changes), ed_key.private_key, algorithm="EdDSA")
    assert TokenVerifier(ed_key, ISSUER).claims_for_revocation(token) is None


@pytest.mark.parametrize("value", [None, 42, b"bytes", "", " ", "....", "ä.ö.ü"])
def test_bad_input_yields_none_and_never_raises(ed_key: SigningKey, value: object) -> None:
    assert TokenVerifier(ed_key, ISSUER).claims_for_revocation(value) is None
