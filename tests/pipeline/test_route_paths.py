"""Request paths as the gateway routes and forwards them (wsgw.pipeline.paths, RouteTable).

Every spelling of a dot segment is resolved (RFC 3986 §6.2.2.2, §5.2.4) before routing;
encoded separators, NUL, malformed escapes and dot segments behind path parameters are
400; the suffix sent to a backend never has a dot segment, so it never leaves the
endpoint's base path."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wsgw.config.models import GatewayConfig
from wsgw.errors import BadRequest, NotFound
from wsgw.pipeline.paths import normalise_path
from wsgw.pipeline.route import Backend, RouteTable

BASE = "ws://127.0.0.1:9/private/api"


def table() -> RouteTable:
    def api(name: str, context: str, version: str, default: bool = False) -> dict:
        return {
            "name": name,
            "context": context,
            "version": version,
            "default_version": default,
            "endpoints": {"production": f"{BASE}/{name}"},
        }

    config = {
        "apis": [
            api("Echo", "/echowebsocket", "1.0", default=True),
            api("Echo2", "/echowebsocket", "2.0"),
            api("Deep", "/a/b", "1.0"),
            api("Shallow", "/a", "1.0"),
        ]
    }
    return RouteTable(msgspec.convert(config, GatewayConfig))


ROUTES = table()


def rfc_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 as written: the input and output buffers, steps A to E."""
    out, inp = "", path
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./") or inp.startswith("/./"):
            inp = inp[2:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../") or inp == "/..":
            inp = "/" + inp[4:] if inp.startswith("/../") else "/"
            out = out[: max(out.rfind("/"), 0)]
        elif inp in (".", ".."):
            inp = ""
        else:
            end = inp.find("/", 1)
            end = len(inp) if end < 0 else end
            out, inp = out + inp[:end], inp[end:]
    return out


def decode_unreserved(path: str) -> str:
    unreserved = re.compile(r"[A-Za-z0-9._~-]")

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if unreserved.fullmatch(char) else match.group(0)

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


def dot_free(path: str) -> bool:
    return all(segment not in (".", "..") for segment in path.split("/"))


# ----------------------------------------------------------------- normalise_path


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("/", "/"),
        ("/ctx/1.0/x", "/ctx/1.0/x"),
        ("/ctx/1.0/../../x", "/x"),
        ("/ctx/1.0/a/../x", "/ctx/1.0/x"),
        ("/ctx/1.0/./x", "/ctx/1.0/x"),
        ("/ctx/1.0/x/.", "/ctx/1.0/x/"),
        ("/ctx/1.0/x/..", "/ctx/1.0/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/ctx/1.0/%2e%2e/x", "/ctx/x"),
        ("/ctx/1.0/%2E%2E/x", "/ctx/x"),
        ("/ctx/1.0/%2e%2E/x", "/ctx/x"),
        ("/ctx/1.0/.%2e/x", "/ctx/x"),
        ("/ctx/1.0/%2e./x", "/ctx/x"),
        ("/ctx/1.0/.%2E/x", "/ctx/x"),
        ("/ctx/1.0/%2E./x", "/ctx/x"),
        ("/ctx/1.0/%2e/x", "/ctx/1.0/x"),
        ("/ctx/1.0/%2e%2e", "/ctx/"),
        # Once only: %25 is not unreserved, so the segment stays "%252e%252e".
        ("/ctx/1.0/%252e%252e/x", "/ctx/1.0/%252e%252e/x"),
        ("/ctx/1.0/%25%32%65/x", "/ctx/1.0/%252e/x"),
        # Every unreserved character is decoded, nothing else (case of the rest kept).
        ("/%65cho/%41%7e%2D%5f%30", "/echo/A~-_0"),
        ("/x/%c3%a9%20%3F%23%3b", "/x/%c3%a9%20%3F%23%3b"),
        # Not dot segments.
        ("/ctx/.well-known/.x/x./.../..x", "/ctx/.well-known/.x/x./.../..x"),
        ("/ctx/1.0/x;.;..", "/ctx/1.0/x;.;.."),
        # Empty segments are significant (RFC 3986) and kept.
        ("/ctx//1.0//x", "/ctx//1.0//x"),
        ("/ctx/1.0//../x", "/ctx/1.0/x"),
    ],
)
def test_normalise(path: str, normalised: str) -> None:
    assert normalise_path(path) == normalised
    assert normalise_path(normalised) == normalised


@pytest.mark.parametrize(
    "path",
    [
        "*",
        "",
        "ctx/1.0",
        "/ctx/1.0/..%2f..%2fx",
        "/ctx/1.0/..%2F..%2Fx",
        "/ctx/1.0/%2e%2e%2f",
        "/ctx/1.0/x%2Fy",
        "/ctx/1.0/..%5c..%5cx",
        "/ctx/1.0/..%5Cx",
        "/ctx/1.0/..\\..\\x",
        "/ctx/1.0/x\\",
        "/ctx/1.0/x%00",
        "/ctx/1.0/%00/..",
        "/ctx/1.0/x%zz",
        "/ctx/1.0/x%2",
        "/ctx/1.0/x%",
        "/ctx/1.0/%%32%65",
        "/ctx/1.0/..;/..;/x",
        "/ctx/1.0/.;x",
        "/ctx/1.0/..;jsessionid=1",
        "/ctx/1.0/%2e%2e;x/y",
        "/ctx/1.0/..%3b/x",
        "/ctx/1.0/..%3B/x",
        "/ctx/1.0/.%2e%3bx/y",
    ],
)
def test_refused(path: str) -> None:
    with pytest.raises(BadRequest) as info:
        normalise_path(path)
    assert info.value.http_status == 400 and info.value.error == "bad_request"


# -------------------------------------------------------------------- RouteTable


@pytest.mark.parametrize(
    ("path", "api", "suffix"),
    [
        ("/echowebsocket/1.0", "Echo", ""),
        ("/echowebsocket/1.0/", "Echo", "/"),
        ("/echowebsocket/2.0/x", "Echo2", "/x"),
        ("/echowebsocket/x", "Echo", "/x"),
        ("/echowebsocket/1.0X", "Echo", "/1.0X"),  # the version is a whole segment
        ("/echowebsocket/1.0/../x", "Echo", "/x"),  # /echowebsocket/x: the default version
        ("/echowebsocket/2.0/../1.0/x", "Echo", "/x"),
        ("/echowebsocket/1.0/../2.0/x", "Echo2", "/x"),
        ("/echowebsocket/1.0/%2e%2e/%2e%2e/a/1.0/x", "Shallow", "/x"),
        ("/echowebsocket/./1.0/./x", "Echo", "/x"),
        ("/%65chowebsocket/1%2E0/%2e%2e/2%2e0/x", "Echo2", "/x"),
        ("/a/b/1.0/x", "Deep", "/x"),
        ("/a/1.0/x", "Shallow", "/x"),
        ("/a/b/1.0/../../1.0/x", "Shallow", "/x"),
        ("/a/b/../1.0/x", "Shallow", "/x"),
        ("/echowebsocket/1.0/%252e%252e", "Echo", "/%252e%252e"),
    ],
)
def test_match_routes_the_normalised_path(path: str, api: str, suffix: str) -> None:
    route, got = ROUTES.match(path)
    assert (route.api.name, got) == (api, suffix)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/echowebsocket/1.0/../../x",
        "/echowebsocket/1.0/%2e%2e/%2e%2e/private/api",
        "/echowebsocketX/1.0",  # contexts are whole segments
        "/echowebsocket.1.0",
        "/echo/websocket/1.0",
        "/a/bc/1.0",
        "/ab/1.0",
        "/a/b/2.0",
    ],
)
def test_match_not_found(path: str) -> None:
    with pytest.raises(NotFound):
        ROUTES.match(path)


def test_match_refuses_what_normalise_refuses() -> None:
    for path in ("*", "/echowebsocket/1.0/..%2fx", "/echowebsocket/1.0/..;/x"):
        with pytest.raises(BadRequest):
            ROUTES.match(path)


@pytest.mark.parametrize(
    ("url", "suffix", "query", "target"),
    [
        ("ws://h/private/api", "/x", "q=1", "/private/api/x?q=1"),
        ("ws://h/private/api", "", "", "/private/api"),
        ("ws://h/private/api/", "/", "", "/private/api/"),
        ("ws://h", "", "", "/"),
        ("ws://h", "/x", "a=../..", "/x?a=../.."),
    ],
)
def test_backend_target(url: str, suffix: str, query: str, target: str) -> None:
    assert Backend.parse(url).target(suffix, query) == target


# -------------------------------------------------------------------- properties

SEGMENTS = [
    "",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2E.",
    "%252e",
    "%252e%252e",
    "...",
    ".x",
    "x.",
    "x;y",
    "%41",
    "a",
    "b",
    "echowebsocket",
    "%65chowebsocket",
    "1.0",
    "1%2e0",
    "2.0",
]
REFUSED_SEGMENTS = ["%2f", "..%2F", "%5c", "\\", "%00", "..;", "%2e%2e;x", ".%3b", "%zz", "%"]


PREFIXES = ["", "/echowebsocket", "/echowebsocket/1.0", "/echowebsocket/2.0", "/a/b/1.0", "/a"]


def joined(segments: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Random segments, half the time after a route's prefix (so that some are routed)."""
    tail = st.lists(segments, max_size=12).map(lambda parts: "/" + "/".join(parts))
    return st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(PREFIXES), tail)


clean_paths = joined(st.sampled_from(SEGMENTS))
paths = joined(st.sampled_from(SEGMENTS) | st.sampled_from(REFUSED_SEGMENTS))


@given(clean_paths)
@example("/echowebsocket/1.0/../../x")
@example("/a/b/%2e%2e/..//1.0/.")
def test_normalised_is_dot_free_idempotent_and_rfc_3986(path: str) -> None:
    normalised = normalise_path(path)
    assert normalised.startswith("/")
    assert dot_free(normalised)
    assert normalise_path(normalised) == normalised
    assert normalised == rfc_remove_dot_segments(decode_unreserved(path))


@given(paths)
@example("/echowebsocket/1.0/..%2F")
@example("/echowebsocket/1.0/..;/..")
def test_refused_exactly_when_a_refused_spelling_is_there(path: str) -> None:
    refused = any(segment in REFUSED_SEGMENTS for segment in path.split("/")[1:])
    try:
        normalise_path(path)
    except BadRequest:
        assert refused
    else:
        assert not refused


@given(clean_paths)
@example("/echowebsocket/1.0/%2e%2e/%2e%2e/echowebsocket/2.0/x")
@example("/a/b/1.0/%2E./../a/1.0/.")
def test_an_accepted_path_stays_under_its_route(path: str) -> None:
    try:
        route, suffix = ROUTES.match(path)
    except (BadRequest, NotFound):
        return
    normalised = normalise_path(path)
    context, version = route.api.context, route.api.version
    assert normalised.startswith(context + "/") or normalised == context
    assert normalised in (f"{context}/{version}{suffix}", f"{context}{suffix}")
    if normalised == f"{context}{suffix}":
        assert route.api.default_version
    assert suffix == "" or suffix.startswith("/")
    assert dot_free(suffix)
    backend = route.backend_for("PRODUCTION")
    target = backend.target(suffix, "")
    assert target == backend.base_path or target.startswith(backend.base_path + "/")
    assert dot_free(target)
    assert ROUTES.match(normalised) == (route, suffix)
