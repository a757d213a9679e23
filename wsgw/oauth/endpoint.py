"""POST /oauth2/token, the client credentials grant (RFC 6749 §4.4), and POST
/oauth2/revoke, token revocation (RFC 7009), sans I/O.

The HTTP server hands over the method, lower-cased headers and body; this module returns
the status, headers and body. Both endpoints start alike, so each failure has one answer:
method (405) → content type and form syntax (400 invalid_request) → client authentication
(401 invalid_client). Then the token endpoint checks the grant type (400 invalid_request
when missing, unsupported_grant_type otherwise); the revocation endpoint wants `token`
(400 invalid_request when missing) and refuses a token of another client (400
unauthorized_client, RFC 7009 §2.1). Authenticating before looking at the rest means an
unauthenticated caller learns nothing beyond "authenticate first".

Revocation answers 200 with an empty body for a token revoked and for one that is not ours
at all (garbage, another issuer's, a forged signature): RFC 7009 §2.2, an invalid token is
not an error. `token_type_hint` is ignored, whatever its value (§2.1 allows that): the
gateway issues access tokens only, and recognises its own without a hint, so it never
answers unsupported_token_type. An expired token of the client is revoked too (a no-op).

With a guard (wsgw/oauth/guard.py), a client address or client id past its limit of failed
authentications gets 429 too_many_requests with Retry-After, decided before the secret is
looked at (right and wrong secrets get the same answer, and no hashing). Nothing here logs,
and no answer echoes a client id or a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_plus

import orjson

from wsgw.http import MAX_BODY_BYTES
from wsgw.oauth.revocation import Revocation, revoke_token
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier

if TYPE_CHECKING:
    from wsgw.oauth.guard import TokenGuard

Response = tuple[int, list[tuple[str, str]], bytes]
HeaderList = Sequence[tuple[str, str]]

MAX_FORM_FIELDS = 16
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GRANT_CLIENT_CREDENTIALS = "client_credentials"

# The `error` of each answer (RFC 6749 §5.2, and 429's); `on_failure` is told the same
# names, except BLOCKED for a 429.
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
UNAUTHORIZED_CLIENT = "unauthorized_client"  # revocation: another client's token
TOO_MANY_REQUESTS = "too_many_requests"
BLOCKED = "blocked"

# RFC 6749 §5.1: responses with tokens or credentials MUST NOT be cached.
_NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
_BASE_HEADERS = [("Content-Type", "application/json"), *_NO_STORE]
_BASIC_CHALLENGE = ("WWW-Authenticate", 'Basic realm="wsgw"')

# Compared against when the client id is unknown, so that unknown and known ids cost the
# same hashing and comparing work (no timing oracle on which consumer keys exist).
_DUMMY_SECRET_SHA256 = hashlib.sha256(os.urandom(32)).hexdigest().encode("ascii")


@dataclass(frozen=True, slots=True)
class ClientRecord:
    application: str
    key_type: str  # one of wsgw.names.KEY_TYPES
    consumer_secret_sha256: str  # lower-case hex


def _challenge(challenge: bool) -> HeaderList:
    """WWW-Authenticate: Basic, for a client that tried (or should try) HTTP Basic (§5.2)."""
    return (_BASIC_CHALLENGE,) if challenge else ()


class _OAuthError(Exception):
    """An error answer: every one goes out, and is counted, the same way."""

    def __init__(self, status: int, error: str, description: str, headers: HeaderList = ()) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description  # fixed text written here: never echoes input
        self.headers = headers  # besides _BASE_HEADERS


class _AuthenticationFailed(_OAuthError):
    """A secret was checked and did not match (or the client id is unknown)."""

    def __init__(self, challenge: bool, known_client: bool) -> None:
        # One answer for "unknown client" and "wrong secret": which one is nobody's business.
        super().__init__(401, INVALID_CLIENT, "client authentication failed", _challenge(challenge))
        self.known_client = known_client


def _too_many_failures(retry_after: int) -> _OAuthError:
    return _OAuthError(
        429,
        TOO_MANY_REQUESTS,
        "too many failed client authentications: retry later",
        (("Retry-After", str(retry_after)),),
    )


def _invalid_request(description: str) -> _OAuthError:
    return _OAuthError(400, INVALID_REQUEST, description)


def _invalid_client(description: str, challenge: bool) -> _OAuthError:
    return _OAuthError(401, INVALID_CLIENT, description, _challenge(challenge))


def handle_token_request(
    method: str,
    headers: dict[str, str],
    body: bytes,
    lookup_client: Callable[[str], ClientRecord | None],
    issuer: TokenIssuer,
    *,
    guard: TokenGuard | None = None,
    address: str | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> Response:
    """Answer one token request. ``headers`` has lower-case names. ``guard`` limits failed
    authentications per client ``address`` (the peer's IP) and per client id;
    ``on_failure(reason)`` is told of every error answer: its ``error``, or BLOCKED (429)."""
    try:
        form, client_id, record = _authenticated_client(
            method, headers, body, lookup_client, guard, address
        )
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise _invalid_request("grant_type is required")
        if grant_type != GRANT_CLIENT_CREDENTIALS:
            raise _OAuthError(
                400, UNSUPPORTED_GRANT_TYPE, f"only {GRANT_CLIENT_CREDENTIALS} is supported"
            )
    except _OAuthError as exc:
        return _error_answer(exc, on_failure)
    # "scope" is accepted and ignored: tokens carry no scopes, subscriptions decide access.
    token, expires_in = issuer.issue(record.application, record.key_type, client_id)
    return _respond(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


def handle_revoke_request(
    method: str,
    headers: dict[str, str],
    body: bytes,
    lookup_client: Callable[[str], ClientRecord | None],
    verifier: TokenVerifier,
    revoke: Callable[[Revocation], object],
    *,
    guard: TokenGuard | None = None,
    address: str | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> Response:
    """Answer one revocation request (RFC 7009 §2); ``revoke(entry)`` is called for a token
    of the authenticated client, before the 200 (an exception from it propagates: a 200
    means the revocation was taken). The other arguments are as for
    :func:`handle_token_request`, with the same client authentication and guard."""
    try:
        form, client_id, _ = _authenticated_client(
            method, headers, body, lookup_client, guard, address
        )
        token = form.get("token")
        if token is None:
            raise _invalid_request("token is required")
        claims = verifier.claims_for_revocation(token)
        if claims is not None and claims.consumer_key != client_id:
            raise _OAuthError(400, UNAUTHORIZED_CLIENT, "the token was not issued to this client")
    except _OAuthError as exc:
        return _error_answer(exc, on_failure)
    if claims is not None:
        revoke(revoke_token(claims))
    # §2.2: the status says it all; an empty body, and no Content-Type for it.
    return 200, list(_NO_STORE), b""


def _authenticated_client(
    method: str,
    headers: dict[str, str],
    body: bytes,
    lookup_client: Callable[[str], ClientRecord | None],
    guard: TokenGuard | None,
    address: str | None,
) -> tuple[dict[str, str], str, ClientRecord]:
    """(form, client id, its record) of a POSTed form whose client authenticated; the
    guard answers 429 before the secret is looked at, and counts the failed checks."""
    if method != "POST":
        raise _OAuthError(405, INVALID_REQUEST, "use POST", (("Allow", "POST"),))
    form = _parse_form(headers, body)
    client_id, secret, via_basic = _client_credentials(headers, form)
    if guard is not None:
        retry_after = guard.retry_after(address, client_id)
        if retry_after:
            raise _too_many_failures(retry_after)
    try:
        record = _authenticate(client_id, secret, via_basic, lookup_client)
    except _AuthenticationFailed as exc:
        if guard is not None:
            guard.failed(address, client_id, known=exc.known_client)
        raise
    return form, client_id, record


def _error_answer(exc: _OAuthError, on_failure: Callable[[str], None] | None) -> Response:
    """The JSON error answer (RFC 6749 §5.2), told to ``on_failure`` first."""
    if on_failure is not None:
        on_failure(BLOCKED if exc.status == 429 else exc.error)
    return _respond(
        exc.status, {"error": exc.error, "error_description": exc.description}, exc.headers
    )


def _respond(status: int, body: dict[str, object], extra: HeaderList = ()) -> Response:
    return status, [*_BASE_HEADERS, *extra], orjson.dumps(body)


def _parse_form(headers: dict[str, str], body: bytes) -> dict[str, str]:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise _invalid_request(f"Content-Type must be {FORM_CONTENT_TYPE}")
    # The request reader already refuses a larger body (413): this is for callers that
    # hand one in directly.
    if len(body) > MAX_BODY_BYTES:
        raise _invalid_request("request body too large")
    try:
        # Appendix B: the form is UTF-8; strict parsing refuses "a&b" and "a=1&&b=2".
        fields = parse_qs(
            body.decode("utf-8"),
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # includes UnicodeDecodeError and too many fields
        raise _invalid_request("malformed form body") from None
    # §3.2: parameters MUST NOT be included more than once. Empty values were dropped
    # already by parse_qs, as §3.1 asks ("treated as if they were omitted").
    if any(len(values) > 1 for values in fields.values()):
        raise _invalid_request("repeated parameter")
    return {name: values[0] for name, values in fields.items()}


def _client_credentials(headers: dict[str, str], form: dict[str, str]) -> tuple[str, str, bool]:
    """(client_id, client_secret, came via HTTP Basic) from the one method the client used."""
    authorization = headers.get("authorization")
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if authorization is not None:
        client_id, secret = _parse_basic(authorization)
        # §2.3: one authentication method per request. A client_id in the form that repeats
        # the Basic one is tolerated (common in client libraries); a secret never is.
        if form_secret is not None or (form_id is not None and form_id != client_id):
            raise _invalid_request("use one client authentication method, not two")
        return client_id, secret, True
    if form_id is None and form_secret is None:
        raise _invalid_client("client authentication required", challenge=True)
    if form_id is None or form_secret is None:
        raise _invalid_client("client_id and client_secret are both required", challenge=False)
    return form_id, form_secret, False


def _parse_basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("unsupported authentication scheme", challenge=True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
        # §2.3.1: id and secret are form-urlencoded before they are joined and base64'd.
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except (ValueError, binascii.Error):
        raise _invalid_client("malformed Basic credentials", challenge=True) from None
    if not client_id or not secret:
        raise _invalid_client("malformed Basic credentials", challenge=True)
    return client_id, secret


def _authenticate(
    client_id: str,
    secret: str,
    via_basic: bool,
    lookup_client: Callable[[str], ClientRecord | None],
) -> ClientRecord:
    record = lookup_client(client_id)
    expected = (
        record.consumer_secret_sha256.lower().encode("ascii", "replace")
        if record is not None
        else _DUMMY_SECRET_SHA256
    )
    presented = hashlib.sha256(secret.encode("utf-8")).hexdigest().encode("ascii")
    if hmac.compare_digest(presented, expected) and record is not None:
        return record
    raise _AuthenticationFailed(challenge=via_basic, known_client=record is not None)
