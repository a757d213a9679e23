"""JWT access tokens: issued by the token endpoint, verified once per WebSocket handshake.

The verifier trusts exactly one key and one algorithm, both taken from the gateway's own
signing key, never from the token header: that closes "alg": "none" and the classic
RS256→HS256 confusion (a token HMAC-signed with the public key as the secret).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from wsgw.errors import InvalidToken
from wsgw.names import KEY_TYPES
from wsgw.oauth.keys import SigningKey

MAX_TOKEN_CHARS = 8 * 1024  # ours are ~400; anything this large is not worth a parse
DEFAULT_CACHE_SIZE = 4096

_EXPIRED = "access token expired"
_INVALID = "invalid access token"

# PyJWT checks presence (and string type for sub/jti); values and times are checked below.
_DECODE_OPTIONS: Any = {
    "require": ["iss", "sub", "exp", "iat", "jti"],
    "verify_signature": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    # Times are checked by us against our clock, the same way on cache hits and misses.
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    application: str
    key_type: str  # one of wsgw.names.KEY_TYPES
    consumer_key: str
    jti: str
    issued_at: int
    expires_at: int


class TokenIssuer:
    def __init__(
        self,
        signing_key: SigningKey,
        issuer: str,
        ttl_s: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("token ttl_s must be >= 1")
        self._key = signing_key
        self._issuer = issuer
        self._ttl_s = int(ttl_s)
        self._clock = clock
        self._headers = {"kid": signing_key.key_id}

    def issue(self, application: str, key_type: str, consumer_key: str) -> tuple[str, int]:
        """A signed access token for ``application`` and its lifetime in seconds."""
        if key_type not in KEY_TYPES:
            raise ValueError(f"key_type must be {' or '.join(KEY_TYPES)}, not {key_type!r}")
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "sub": application,
            "application": application,
            "key_type": key_type,
            "azp": consumer_key,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl_s,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            claims, self._key.private_key, algorithm=self._key.algorithm, headers=self._headers
        )
        return token, self._ttl_s


class TokenVerifier:
    def __init__(
        self,
        signing_key: SigningKey,
        issuer: str,
        leeway_s: int = 0,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._public_key = signing_key.public_key
        self._algorithms = [signing_key.algorithm]  # pinned: the token header has no say
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._clock = clock
        self._cache_size = cache_size
        # Only verified tokens enter, so garbage cannot flush it; hits still check the clock.
        self._cache: OrderedDict[str, TokenClaims] = OrderedDict()
        self._decoder = jwt.PyJWT()

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; InvalidToken with a message safe for the peer."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(_INVALID)
        claims = self._cache.get(token)
        if claims is not None:
            if self._is_expired(claims.expires_at):
                del self._cache[token]
                raise InvalidToken(_EXPIRED)
            self._cache.move_to_end(token)
            return claims
        claims = self._verify_uncached(token)
        if self._cache_size > 0:
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def claims_for_revocation(self, token: object) -> TokenClaims | None:
        """The claims of a token this gateway issued, expired or not yet valid included
        (a token is identified whatever the clock says: revoking one not valid yet matters,
        one expired is harmless); None for anything else. Signature, issuer and claim
        shapes are checked as by verify(), so a forged token never yields claims. Never
        raises for bad input."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            return None
        cached = self._cache.get(token)  # verified already; no reordering: not a use
        if cached is not None:
            return cached
        try:
            claims, _ = self._signed_claims(token)
        except InvalidToken:
            return None
        return claims

    def _is_expired(self, expires_at: int) -> bool:
        return self._clock() >= expires_at + self._leeway_s

    def _verify_uncached(self, token: str) -> TokenClaims:
        claims, nbf = self._signed_claims(token)
        # Signature first, then times: "expired" is only said of tokens we really issued.
        now = self._clock()
        leeway = self._leeway_s
        if claims.issued_at > now + leeway or (nbf is not None and nbf > now + leeway):
            raise InvalidToken(_INVALID)
        if self._is_expired(claims.expires_at):
            raise InvalidToken(_EXPIRED)
        return claims

    def _signed_claims(self, token: str) -> tuple[TokenClaims, int | None]:
        """The claims and `nbf` of a token signed with our key by our issuer, with every
        claim of the shape we issue; the times are not compared with the clock."""
        try:
            payload = self._decoder.decode(
                token,
                self._public_key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                options=_DECODE_OPTIONS,
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            # Never the library's message: it can quote the token or the claims.
            raise InvalidToken(_INVALID) from None

        exp = _int_claim(payload, "exp")
        iat = _int_claim(payload, "iat")
        nbf = _int_claim(payload, "nbf") if "nbf" in payload else None
        application = _str_claim(payload, "application")
        key_type = _str_claim(payload, "key_type")
        consumer_key = _str_claim(payload, "azp")
        jti = _str_claim(payload, "jti")
        if payload["sub"] != application or key_type not in KEY_TYPES:
            raise InvalidToken(_INVALID)
        return TokenClaims(application, key_type, consumer_key, jti, iat, exp), nbf


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if type(value) is not int:  # not bool, not float: we only issue integer NumericDates
        raise InvalidToken(_INVALID)
    return value


def _str_claim(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(_INVALID)
    return value
