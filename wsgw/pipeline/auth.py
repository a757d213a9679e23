"""Where the access token comes from (RFC 6750 §2.1 header, §2.3 query) and what is left
of the query once it is taken out."""

from __future__ import annotations

from wsgw.errors import BadRequest, InvalidToken
from wsgw.http import Headers

QUERY_PARAM = "access_token"


def extract_token(headers: Headers, query: str) -> tuple[str, str]:
    """Return (token, query without access_token). Raise InvalidToken when none is given."""
    header_token = _bearer(headers)
    query_token, rest = _pop_query_token(query)
    if header_token and query_token:
        raise BadRequest("access token given twice (header and query)")
    token = header_token or query_token
    if not token:
        raise InvalidToken("missing access token")
    return token, rest


def strip_token(query: str) -> str:
    """The query to forward when no token is needed: never leak one to the backend."""
    return _pop_query_token(query)[1]


def _bearer(headers: Headers) -> str | None:
    values = headers.get_all("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("more than one Authorization header")
    scheme, _, credentials = values[0].partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise InvalidToken("Authorization must be a Bearer token")
    return credentials.strip()


def _pop_query_token(query: str) -> tuple[str | None, str]:
    if QUERY_PARAM not in query:
        return None, query
    token = None
    kept = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if name == QUERY_PARAM:
            if token is not None:
                raise BadRequest("access_token given twice")
            # Tokens are JWTs (base64url and dots): no percent-decoding is needed, and a
            # percent sign in one makes it invalid at verification.
            token = value
        else:
            kept.append(pair)
    return token, "&".join(kept)
