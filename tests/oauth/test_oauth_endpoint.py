from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote_plus, urlencode

import orjson
import pytest

from wsgw.oauth.endpoint import MAX_BODY_BYTES, ClientRecord, handle_token_request
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier

ISSUER = "https://gw.test"
TTL = 900
FORM = "application/x-www-form-urlencoded"
CHALLENGE = 'Basic realm="wsgw"'

PROD_ID, PROD_SECRET = "ck-prod", "s3cret-prod"
# Characters that §2.3.1's form-urlencoding changes: ":" in the id, "+", " ", "%", "é"...
ODD_ID, ODD_SECRET = "ck:odd/+ é", "p@ss:w+rd %41 é"


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


CLIENTS = {
    PROD_ID: ClientRecord("app1", "PRODUCTION", _sha(PROD_SECRET)),
    ODD_ID: ClientRecord("app2", "SANDBOX", _sha(ODD_SECRET)),
    "ck-upper": ClientRecord("app3", "PRODUCTION", _sha("upper").upper()),
    "ck-plus": ClientRecord("app4", "PRODUCTION", _sha("a+b%41")),
}


class Lookups:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, client_id: str) -> ClientRecord | None:
        self.seen.append(client_id)
        return CLIENTS.get(client_id)


def basic(client_id: str, secret: str, *, encode: bool = True) -> str:
    if encode:
        client_id, secret = quote_plus(client_id), quote_plus(secret)
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def issuer(ed_key) -> TokenIssuer:
    return TokenIssuer(ed_key, ISSUER, TTL)


@pytest.fixture
def verifier(ed_key) -> TokenVerifier:
    return TokenVerifier(ed_key, ISSUER)


@pytest.fixture
def call(issuer):
    def run(
        body: bytes | str | dict = b"grant_type=client_credentials",
        *,
        method: str = "POST",
        content_type: str | None = FORM,
        authorization: str | None = None,
        lookup=None,
    ):
        if isinstance(body, dict):
            body = urlencode(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {}
        if content_type is not None:
            headers["content-type"] = content_type
        if authorization is not None:
            headers["authorization"] = authorization
        status, response_headers, payload = handle_token_request(
            method, headers, body, lookup or Lookups(), issuer
        )
        return status, response_headers, orjson.loads(payload), payload

    return run


def _assert_common_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    names = [name.lower() for name, _ in headers]
    assert len(names) == len(set(names))  # no header twice
    as_dict = {name.lower(): value for name, value in headers}
    assert as_dict["content-type"] == "application/json"
    assert as_dict["cache-control"] == "no-store"
    assert as_dict["pragma"] == "no-cache"
    return as_dict


def _assert_error(result, status: int, error: str, challenge: bool = False) -> dict:
    got_status, headers, body, raw = result
    assert (got_status, body["error"]) == (status, error)
    assert set(body) == {"error", "error_description"}
    assert isinstance(body["error_description"], str)
    h = _assert_common_headers(headers)
    assert h.get("www-authenticate") == (CHALLENGE if challenge else None)
    # No secret, and no client id, is ever echoed back
    for secret in (PROD_SECRET, ODD_SECRET, PROD_ID, "wrong-secret"):
        assert secret.encode() not in raw
    return h


def test_success_via_basic(call, verifier) -> None:
    status, headers, body, _ = call(authorization=basic(PROD_ID, PROD_SECRET))
    assert status == 200
    _assert_common_headers(headers)
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == TTL
    claims = verifier.verify(body["access_token"])
    assert (claims.application, claims.key_type, claims.consumer_key) == (
        "app1",
        "PRODUCTION",
        PROD_ID,
    )


def test_success_via_form(call, verifier) -> None:
    status, headers, body, _ = call(
        {"grant_type": "client_credentials", "client_id": ODD_ID, "client_secret": ODD_SECRET}
    )
    assert status == 200
    _assert_common_headers(headers)
    claims = verifier.verify(body["access_token"])
    assert (claims.application, claims.key_type, claims.consumer_key) == ("app2", "SANDBOX", ODD_ID)


def test_basic_credentials_are_form_urlencoded(call, verifier) -> None:
    lookups = Lookups()
    status, _, body, _ = call(authorization=basic(ODD_ID, ODD_SECRET), lookup=lookups)
    assert status == 200
    assert lookups.seen == [ODD_ID]  # decoded: ":" inside the id did not split it
    assert verifier.verify(body["access_token"]).consumer_key == ODD_ID


def test_basic_credentials_not_urlencoded_are_taken_as_encoded(call) -> None:
    # §2.3.1: "+" decodes to " " and "%41" to "A", so a client that skips the encoding
    # presents a different secret; the same secret encoded passes.
    assert call(authorization=basic("ck-plus", "a+b%41"))[0] == 200
    _assert_error(
        call(authorization=basic("ck-plus", "a+b%41", encode=False)),
        401,
        "invalid_client",
        challenge=True,
    )


def test_basic_scheme_is_case_insensitive(call) -> None:
    auth = basic(PROD_ID, PROD_SECRET).replace("Basic", "bAsIc")
    assert call(authorization=auth)[0] == 200


def test_content_type_parameters_are_allowed(call) -> None:
    result = call(
        content_type="Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        authorization=basic(PROD_ID, PROD_SECRET),
    )
    assert result[0] == 200


def test_scope_is_accepted_and_ignored(call) -> None:
    status, _, body, _ = call(
        "grant_type=client_credentials&scope=read+write", authorization=basic(PROD_ID, PROD_SECRET)
    )
    assert status == 200
    assert "scope" not in body


def test_uppercase_hex_in_record(call) -> None:
    assert call(authorization=basic("ck-upper", "upper"))[0] == 200


def test_basic_with_matching_client_id_in_form_is_tolerated(call) -> None:
    result = call(
        {"grant_type": "client_credentials", "client_id": PROD_ID},
        authorization=basic(PROD_ID, PROD_SECRET),
    )
    assert result[0] == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "OPTIONS", "post"])
def test_wrong_method(call, method: str) -> None:
    h = _assert_error(
        call(method=method, authorization=basic(PROD_ID, PROD_SECRET)), 405, "invalid_request"
    )
    assert h["allow"] == "POST"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "text/plain",
        "multipart/form-data",
        "application/x-www-form-urlencodedx",
    ],
)
def test_wrong_content_type(call, content_type) -> None:
    _assert_error(
        call(content_type=content_type, authorization=basic(PROD_ID, PROD_SECRET)),
        400,
        "invalid_request",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type",  # no "="
        b"grant_type=client_credentials&&x=1",  # empty field
        b"grant_type=client_credentials&x=%ff",  # not UTF-8 after decoding
        b"grant_type=client_credentials\xff",  # not UTF-8
        b"grant_type=client_credentials&grant_type=client_credentials",  # §3.2: repeated
        b"grant_type=client_credentials&scope=a&scope=b",
        "&".join(f"f{i}=1" for i in range(100)).encode(),  # too many fields
        b"grant_type=client_credentials&pad=" + b"x" * MAX_BODY_BYTES,
    ],
    ids=lambda b: repr(b[:40]),
)
def test_malformed_body(call, body: bytes) -> None:
    _assert_error(call(body, authorization=basic(PROD_ID, PROD_SECRET)), 400, "invalid_request")


def test_missing_grant_type(call) -> None:
    _assert_error(
        call(b"scope=x", authorization=basic(PROD_ID, PROD_SECRET)), 400, "invalid_request"
    )
    # §3.1: an empty value counts as omitted
    _assert_error(
        call(b"grant_type=", authorization=basic(PROD_ID, PROD_SECRET)), 400, "invalid_request"
    )


@pytest.mark.parametrize(
    "grant",
    [
        "password",
        "authorization_code",
        "refresh_token",
        "Client_Credentials",
        "urn:ietf:params:oauth:grant-type:jwt",
    ],
)
def test_unsupported_grant_type(call, grant: str) -> None:
    _assert_error(
        call({"grant_type": grant}, authorization=basic(PROD_ID, PROD_SECRET)),
        400,
        "unsupported_grant_type",
    )


def test_unsupported_grant_type_needs_authentication_first(call) -> None:
    _assert_error(call({"grant_type": "password"}), 401, "invalid_client", challenge=True)


def test_no_client_authentication(call) -> None:
    lookups = Lookups()
    _assert_error(call(lookup=lookups), 401, "invalid_client", challenge=True)
    assert lookups.seen == []


@pytest.mark.parametrize(
    "form",
    [
        {"client_secret": PROD_SECRET},
        {"client_id": PROD_ID, "client_secret": PROD_SECRET},
        {"client_id": "someone-else"},
    ],
)
def test_two_authentication_methods(call, form) -> None:
    result = call(
        {"grant_type": "client_credentials", **form}, authorization=basic(PROD_ID, PROD_SECRET)
    )
    _assert_error(result, 400, "invalid_request")


def test_wrong_secret_basic(call) -> None:
    _assert_error(
        call(authorization=basic(PROD_ID, "wrong-secret")), 401, "invalid_client", challenge=True
    )


def test_wrong_secret_form(call) -> None:
    result = call(
        {"grant_type": "client_credentials", "client_id": PROD_ID, "client_secret": "wrong-secret"}
    )
    _assert_error(result, 401, "invalid_client", challenge=False)


def test_secret_of_another_client(call) -> None:
    _assert_error(
        call(authorization=basic(PROD_ID, ODD_SECRET)), 401, "invalid_client", challenge=True
    )


def test_unknown_client_looks_like_wrong_secret(call) -> None:
    unknown = call(authorization=basic("ck-nobody", "wrong-secret"))
    wrong = call(authorization=basic(PROD_ID, "wrong-secret"))
    _assert_error(unknown, 401, "invalid_client", challenge=True)
    assert unknown[1:] == wrong[1:]  # same headers, same body
    unknown_form = call(
        {
            "grant_type": "client_credentials",
            "client_id": "ck-nobody",
            "client_secret": "wrong-secret",
        }
    )
    _assert_error(unknown_form, 401, "invalid_client", challenge=False)


@pytest.mark.parametrize("form", [{"client_id": PROD_ID}, {"client_secret": PROD_SECRET}])
def test_half_form_credentials(call, form) -> None:
    _assert_error(call({"grant_type": "client_credentials", **form}), 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":secret").decode(),  # empty id
        "Basic " + base64.b64encode(b"ck-prod:").decode(),  # empty secret
        "Basic " + base64.b64encode(b"ck-prod:\xff").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"ck-prod:%ff").decode(),  # not UTF-8 once decoded
        "Bearer abc.def.ghi",
        "Digest username=ck-prod",
        "",
    ],
)
def test_malformed_basic(call, authorization: str) -> None:
    _assert_error(call(authorization=authorization), 401, "invalid_client", challenge=True)
