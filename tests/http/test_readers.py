"""The HTTP readers: one message per parse, whatever the reads look like.

A reader returns the FIRST message only, with `trailing` = exactly the bytes that followed
it in the read that completed it (WebSocket data after an upgrade or a 101; never parsed
as part of the first message). Oversized bodies are 413, framing that two parsers could
read two ways is 400, HTTP/1.0 is fine except for an upgrade.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgw.errors import BadRequest, HeadersTooLarge, PayloadTooLarge
from wsgw.http import MAX_BODY_BYTES, Request, RequestReader, Response, ResponseReader

UPGRADE_HEAD = (
    b"Host: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
# A masked text frame "hello" (mask 01 02 03 04).
FRAME = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ (i % 4 + 1) for i, b in enumerate(b"hello"))
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def upgrade(path: str = "/echowebsocket/1.0", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET " + path.encode() + b" HTTP/" + version + b"\r\n" + UPGRADE_HEAD + extra + b"\r\n"


def read_one(data: bytes, reader: RequestReader | None = None) -> Request:
    request = (reader or RequestReader()).feed(data)
    assert request is not None
    return request


def read_response(*chunks: bytes) -> Response | None:
    reader = ResponseReader()
    response = None
    for chunk in chunks:
        response = reader.feed(chunk)
        if response is not None:
            break
    return response


# ------------------------------------------------------------------ one request per parse


def test_pipelined_plain_request_then_upgrade_is_only_the_plain_request() -> None:
    first = b"GET /health?access_token=TOKEN HTTP/1.1\r\nHost: gw\r\n\r\n"
    second = upgrade()
    request = read_one(first + second)
    assert (request.method, request.path, request.query) == ("GET", "/health", "access_token=TOKEN")
    assert request.target == "/health?access_token=TOKEN"
    assert not request.is_upgrade
    assert request.headers.items == [("host", "gw")]
    assert request.trailing == second


def test_two_requests_are_never_merged_into_one_authenticated_upgrade() -> None:
    """The desync: a plain GET carrying the token, then a token-less upgrade whose path
    completes the first one's. Merged, they made one authenticated upgrade."""
    first = b"GET /echowebsocket HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer TOKEN\r\n\r\n"
    second = upgrade("/1.0")
    request = read_one(first + second)
    assert request.target == "/echowebsocket"
    assert not request.is_upgrade
    assert request.headers.get("upgrade") is None
    assert request.headers.get("sec-websocket-key") is None
    assert request.trailing == second


def test_pipelined_health_checks_are_one_health_check() -> None:
    first = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
    request = read_one(first + first)
    assert (request.target, request.trailing) == ("/health", first)


def test_the_end_of_the_first_request_in_a_later_read() -> None:
    first = b"POST /oauth2/token HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"
    reader = RequestReader()
    assert reader.feed(first) is None
    request = read_one(b"cdeGET /health HTTP/1.1\r\n\r\n", reader)
    assert request.body == b"abcde"
    assert request.trailing == b"GET /health HTTP/1.1\r\n\r\n"


def test_after_connection_close_or_http_1_0_the_rest_is_trailing() -> None:
    second = b"GET /x HTTP/1.1\r\n\r\n"
    for first in (
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.0\r\n\r\n",
    ):
        request = read_one(first + second)
        assert (request.path, request.trailing) == ("/health", second)


def test_garbage_after_a_complete_request_is_not_an_error_of_that_request() -> None:
    request = read_one(b"GET /health HTTP/1.1\r\n\r\n\x16\x03\x01 not HTTP\r\n\r\n")
    assert request.path == "/health"
    assert request.trailing == b"\x16\x03\x01 not HTTP\r\n\r\n"


def test_empty_lines_after_a_request_are_trailing_too() -> None:
    request = read_one(b"GET /health HTTP/1.1\r\n\r\n\r\n\r\n")
    assert request.trailing == b"\r\n\r\n"
    request = read_one(b"\r\nGET /health HTTP/1.1\r\n\r\n")  # RFC 9112 §2.2: ignored
    assert (request.path, request.trailing) == ("/health", b"")


def test_a_chunked_body_ends_where_its_last_chunk_says() -> None:
    first = (
        b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n4\r\n\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    second = b"GET /health HTTP/1.1\r\n\r\n"
    request = read_one(first + second)
    assert request.body == b"abc\r\n\r\n"
    assert request.trailing == second


def test_upgrade_then_websocket_data_is_trailing() -> None:
    request = read_one(upgrade() + FRAME)
    assert request.is_upgrade
    assert request.trailing == FRAME
    # An HTTP request after an upgrade request is WebSocket data, not a request.
    request = read_one(upgrade() + b"GET /health HTTP/1.1\r\n\r\n")
    assert request.is_upgrade
    assert request.trailing == b"GET /health HTTP/1.1\r\n\r\n"


def test_a_reader_is_done_after_its_request() -> None:
    reader = RequestReader()
    read_one(b"GET /health HTTP/1.1\r\n\r\n", reader)
    assert reader.feed(b"GET /other HTTP/1.1\r\n\r\n") is None


# ------------------------------------------------------------------------------ 413


def test_body_over_the_limit_in_one_read_is_413() -> None:
    body = b"x" * (MAX_BODY_BYTES + 1)
    head = b"POST /oauth2/token HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    with pytest.raises(PayloadTooLarge):
        RequestReader().feed(head + body)


def test_body_over_the_limit_in_many_reads_is_413() -> None:
    reader = RequestReader()
    reader.feed(b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(PayloadTooLarge):  # bounded: the limit is reached
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            reader.feed(b"400\r\n" + b"x" * 1024 + b"\r\n")


def test_announced_body_over_the_limit_is_413_before_it_arrives() -> None:
    head = b"POST /oauth2/token HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
    with pytest.raises(PayloadTooLarge):
        RequestReader().feed(head)


def test_body_at_the_limit_is_fine() -> None:
    body = b"x" * MAX_BODY_BYTES
    head = b"POST /oauth2/token HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert read_one(head + body).body == body


def test_chunk_framing_does_not_buffer_without_bound() -> None:
    """Chunk extensions carry no body: the whole request is bounded all the same."""
    reader = RequestReader()
    reader.feed(b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(PayloadTooLarge):  # bounded loop
        for _ in range(100):
            reader.feed(b"1;" + b"e" * 4000 + b"\r\nx\r\n")


def test_oversized_head_is_431() -> None:
    with pytest.raises(HeadersTooLarge):
        RequestReader().feed(b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 20_000 + b"\r\n\r\n")


# ------------------------------------------------------------------------------ versions


def test_http_1_0_requests_are_read() -> None:
    request = read_one(b"GET /health HTTP/1.0\r\n\r\n")
    assert (request.method, request.path, request.is_upgrade) == ("GET", "/health", False)
    request = read_one(b"POST /oauth2/token HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    assert request.body == b"abc"


def test_http_1_0_upgrade_is_400() -> None:
    with pytest.raises(BadRequest):
        RequestReader().feed(upgrade(version=b"1.0"))


@pytest.mark.parametrize("line", [b"GET /health HTTP/2.0", b"GET /health HTTP/0.9", b"GET /health"])
def test_other_versions_are_400(line: bytes) -> None:
    with pytest.raises(BadRequest):
        RequestReader().feed(line + b"\r\n\r\n")


# -------------------------------------------------------------- ambiguous framing: 400

AMBIGUOUS = {
    "obsolete line folding": b"GET /health HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "obsolete line folding, tab": b"GET /health HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",
    "Content-Length and Transfer-Encoding": (
        b"POST /oauth2/token HTTP/1.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "Transfer-Encoding and Content-Length": (
        b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "two different Content-Lengths": (
        b"POST /oauth2/token HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "two equal Content-Lengths": (
        b"POST /oauth2/token HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "a Content-Length list": b"POST /oauth2/token HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
    "a signed Content-Length": b"POST /oauth2/token HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
    "chunked not last": (
        b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "a transfer coding other than chunked": (
        b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc"
    ),
    "Transfer-Encoding in HTTP/1.0": (
        b"POST /oauth2/token HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "a chunked body on an upgrade": (
        upgrade(extra=b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "a Content-Length body on an upgrade": upgrade(extra=b"Content-Length: 5\r\n") + b"hello",
    "whitespace before the colon": b"GET /health HTTP/1.1\r\nHost : gw\r\n\r\n",
    "a bare LF": b"GET /health HTTP/1.1\r\nHost: gw\n\r\n",
    "a NUL in a value": b"GET /health HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("data", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
def test_ambiguous_framing_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        RequestReader().feed(data)
    assert caught.value.http_status == 400


@pytest.mark.parametrize("data", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
def test_ambiguous_framing_is_400_byte_by_byte(data: bytes) -> None:
    reader = RequestReader()
    with pytest.raises(BadRequest):  # one byte per read, bounded by len(data)
        for i in range(len(data)):
            assert reader.feed(data[i : i + 1]) is None, "a request came out"


def test_an_upgrade_with_an_empty_content_length_is_fine() -> None:
    request = read_one(upgrade(extra=b"Content-Length: 0\r\n") + FRAME)
    assert request.is_upgrade and request.trailing == FRAME


# ------------------------------------------------------------------------- responses


def test_101_then_websocket_data() -> None:
    response = read_response(SWITCHING + FRAME)
    assert response is not None
    assert (response.status, response.reason, response.trailing) == (
        101,
        "Switching Protocols",
        FRAME,
    )


def test_interim_responses_before_the_101_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
    for chunks in ((interim + SWITCHING + FRAME,), (interim, SWITCHING + FRAME)):
        response = read_response(*chunks)
        assert response is not None
        assert (response.status, response.reason) == (101, "Switching Protocols")
        assert response.headers.get("x-interim") is None
        assert response.trailing == FRAME


def test_a_refusal_is_never_merged_with_what_follows() -> None:
    for refusal in (
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 20\r\n\r\nno",
    ):
        response = read_response(refusal + SWITCHING)
        assert response is not None
        assert (response.status, response.reason) == (403, "Forbidden")
        assert response.headers.get("upgrade") is None


def test_too_many_interim_responses_are_refused() -> None:
    reader = ResponseReader()
    with pytest.raises(BadRequest):
        for _ in range(2000):  # bounded: refused after a few
            reader.feed(b"HTTP/1.1 100 \r\n\r\n")


# ------------------------------------------------------------------ property tests

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1)
VALUE = st.text("".join(chr(c) for c in range(0x21, 0x7F)) + " ", min_size=0, max_size=40).map(
    str.strip
)
SEGMENT = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict]:
    """One valid request (Content-Length bodies) and what a reader must make of it."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=4)))
    query = draw(st.none() | st.text("abcdefghijklmnopqrstuvwxyz0123456789=&", max_size=20))
    target = path if query is None else f"{path}?{query}"
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    headers = [
        ("X-" + name, value) for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=6))
    ]
    body = draw(st.binary(max_size=300))
    if body or draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), ("Content-Length", str(len(body))))
    lines = [f"{method} {target} HTTP/{version}", *(f"{n}: {v}" for n, v in headers), "", ""]
    raw = "\r\n".join(lines).encode("latin-1") + body
    expected = {
        "method": method,
        "target": target,
        "path": path,
        "query": query or "",
        "headers": [(n.lower(), v) for n, v in headers],
        "body": body,
        "is_upgrade": False,
    }
    return raw, expected


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def feed_chunks(chunks: list[bytes]) -> tuple[Request, bytes]:
    """Feed until a request comes out; returns it and the bytes never fed."""
    reader = RequestReader()
    for i, chunk in enumerate(chunks):
        request = reader.feed(chunk)
        if request is not None:
            return request, b"".join(chunks[i + 1 :])
    raise AssertionError("no request came out")


def as_dict(request: Request) -> dict:
    return {
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "query": request.query,
        "headers": request.headers.items,
        "body": request.body,
        "is_upgrade": request.is_upgrade,
    }


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 4000), max_size=6))
def test_only_the_first_of_pipelined_requests(batch: list, cuts: list[int]) -> None:
    first, expected = batch[0]
    data = b"".join(raw for raw, _ in batch)
    after = data[len(first) :]
    whole, unfed = feed_chunks([data])
    assert as_dict(whole) == expected
    assert (whole.trailing, unfed) == (after, b"")
    request, unfed = feed_chunks(splits(data, cuts))
    assert as_dict(request) == expected  # the split never changes the result
    assert request.trailing + unfed == after
    assert after.startswith(request.trailing)


@PROPERTY
@given(requests())
def test_one_byte_at_a_time_too(one: tuple[bytes, dict]) -> None:
    raw, expected = one
    request, unfed = feed_chunks([raw[i : i + 1] for i in range(len(raw))])
    assert as_dict(request) == expected
    assert (request.trailing, unfed) == (b"", b"")


@PROPERTY
@given(
    st.binary(max_size=300),
    st.lists(requests(), max_size=2),
    st.lists(st.integers(0, 4000), max_size=6),
)
def test_after_an_upgrade_everything_is_trailing(
    frames: bytes, batch: list, cuts: list[int]
) -> None:
    head = upgrade()
    after = frames + b"".join(raw for raw, _ in batch)
    request, unfed = feed_chunks(splits(head + after, cuts))
    assert request.is_upgrade and request.path == "/echowebsocket/1.0"
    assert request.headers.get("sec-websocket-version") == "13"
    assert request.trailing + unfed == after


@PROPERTY
@given(
    st.lists(st.binary(min_size=1, max_size=80), max_size=4),
    st.lists(requests(), max_size=2),
    st.lists(st.integers(0, 4000), max_size=6),
)
def test_chunked_bodies_end_exactly(pieces: list[bytes], batch: list, cuts: list[int]) -> None:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    first = b"POST /oauth2/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    after = b"".join(raw for raw, _ in batch)
    request, unfed = feed_chunks(splits(first + after, cuts))
    assert request.body == b"".join(pieces)
    assert request.trailing + unfed == after


@PROPERTY
@given(st.binary(max_size=300), st.lists(st.integers(0, 4000), max_size=6))
def test_after_a_101_everything_is_trailing(frames: bytes, cuts: list[int]) -> None:
    reader = ResponseReader()
    chunks = splits(SWITCHING + frames, cuts)
    response = None
    while response is None:
        assert chunks, "no response came out"
        response = reader.feed(chunks.pop(0))
    assert response.status == 101
    assert response.trailing + b"".join(chunks) == frames
