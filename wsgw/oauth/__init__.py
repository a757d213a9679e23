"""OAuth2 for wsgw: the signing key, JWT access tokens and the token endpoint logic."""

from wsgw.oauth.endpoint import ClientRecord, handle_token_request
from wsgw.oauth.keys import SigningKey, generate_signing_key, load_signing_key
from wsgw.oauth.tokens import TokenClaims, TokenIssuer, TokenVerifier

__all__ = [
    "ClientRecord",
    "SigningKey",
    "TokenClaims",
    "TokenIssuer",
    "TokenVerifier",
    "generate_signing_key",
    "handle_token_request",
    "load_signing_key",
]
