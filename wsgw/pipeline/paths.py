"""The request path as the gateway routes and forwards it: RFC 3986 normalised, or refused.

A backend must never be asked for a path above its endpoint's base path, however the client
spelled it: ``/ctx/1.0/../../x``, ``%2e%2e``, ``.%2E``, ``..%2f``, ``..\\`` and ``..;``
all climb on some backend. So, before routing, in one pass over the path:

1. It must be an absolute path (origin-form, or the path of an absolute-form target, which
   the HTTP parser has already split off): ``*`` or anything else is 400.
2. Percent-encoded *unreserved* characters (ALPHA DIGIT ``-._~``, RFC 3986 §2.3) are
   decoded, as §6.2.2.2 says a normaliser should: ``%2e``/``%2E`` become ``.``, ``%41``
   ``A``. Every other triplet is kept as sent (case included). Decoding is done once:
   ``%252e`` is ``%25`` + ``2e``, a literal segment, forwarded as it is.
3. Refused (400), because decoding them would change segment boundaries and passing them
   lets a backend that decodes them climb: ``%2F`` (``/``), ``%5C`` and a raw ``\\``
   (a separator on some servers), ``%00``; a ``%`` not followed by two hex digits; and a
   dot segment behind path parameters (``..;x``, ``.%3Bx``), which Tomcat, Jetty and
   Spring read as ``..``.
4. Dot segments are removed as RFC 3986 §5.2.4 says (``..`` at the root stays at the root).

The result is routed, and what follows the API's context and version is the suffix sent to
the backend: it has no dot segment, so the base path plus the suffix stays under the base
path. A path whose ``..`` climb out of an API names another path (``/a/1.0/../../b/1.0``
is ``/b/1.0``), routed and authorised as that one, like a browser would have sent it.
Empty segments (``//``) are significant (RFC 3986) and kept. The query is not touched here.
"""

from __future__ import annotations

import re

from wsgw.errors import BadRequest

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_REFUSED = {0x2F: "an encoded '/'", 0x5C: "an encoded '\\'", 0x00: "an encoded NUL"}
_TRIPLET = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PARAMS = re.compile(r";|%3[Bb]")


def normalise_path(path: str) -> str:
    """The normalised absolute path, or BadRequest. Idempotent: a result normalises to
    itself."""
    if not path.startswith("/"):
        raise BadRequest("the request target must be an absolute path")
    if "\\" in path:
        raise BadRequest("a '\\' in the request path")
    if "%" in path:
        path = _decode_unreserved(path)
    if "/." in path:
        path = _remove_dot_segments(path)
    return path


def _decode_unreserved(path: str) -> str:
    if _BAD_PERCENT.search(path):
        raise BadRequest("a '%' in the request path is not followed by two hex digits")
    return _TRIPLET.sub(_decode_one, path)


def _decode_one(match: re.Match[str]) -> str:
    octet = int(match.group(1), 16)
    if octet in _UNRESERVED:
        return chr(octet)
    refused = _REFUSED.get(octet)
    if refused is not None:
        raise BadRequest(f"{refused} in the request path")
    return match.group(0)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path, segment by segment: "." goes, ".." takes the
    segment before it; either at the end leaves a trailing "/"."""
    segments = path.split("/")
    last = len(segments) - 1
    out: list[str] = []
    for i in range(1, last + 1):
        segment = segments[i]
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            if segment.startswith(".") and _PARAMS.split(segment, 1)[0] in (".", ".."):
                raise BadRequest("a dot segment with path parameters in the request path")
            out.append(segment)
            continue
        if i == last:
            out.append("")
    return "/" + "/".join(out)
