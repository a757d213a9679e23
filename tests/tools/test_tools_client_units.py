"""The client's pure helpers: header parsing, URL redaction, message formatting."""

from __future__ import annotations

import pytest
from picows import WSMsgType

from wsgw.tools.client import (
    PREVIEW_BYTES,
    UsageError,
    build_headers,
    format_message,
    parse_header,
    redact_url,
)


def test_parse_header_accepts_name_colon_value() -> None:
    assert parse_header("X-Api-Key: abc: def ") == ("X-Api-Key", "abc: def")
    assert parse_header("X-Empty:") == ("X-Empty", "")


@pytest.mark.parametrize(
    "raw", ["novalue", "Bad Name: v", ": v", "X-A: a\r\nX-B: b", "X(y): 1", "X-Nul: a\0b"]
)
def test_parse_header_refuses_what_would_break_the_request(raw: str) -> None:
    with pytest.raises(UsageError):
        parse_header(raw)


def test_build_headers_order_token_and_subprotocols() -> None:
    headers = build_headers("tok", ["X-A: 1"], ["p1", "p2"])
    assert headers == [
        ("X-A", "1"),
        ("Authorization", "Bearer tok"),
        ("Sec-WebSocket-Protocol", "p1, p2"),
    ]
    assert build_headers(None, [], []) == []
    for token in ["", "a b", "a\nb"]:
        with pytest.raises(UsageError):
            build_headers(token, [], [])
    with pytest.raises(UsageError):
        build_headers("tok", ["authorization: Bearer other"], [])
    with pytest.raises(UsageError):
        build_headers(None, [], ["a,b"])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ws://h:1/p", "ws://h:1/p"),
        ("ws://h/p?access_token=abc&room=1", "ws://h/p?access_token=***&room=1"),
        ("wss://h/p?apikey=k&x&Auth=z", "wss://h/p?apikey=***&x&Auth=***"),
        ("ws://user:pw@h/p", "ws://***@h/p"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_format_message() -> None:
    assert format_message(WSMsgType.TEXT, "héllo".encode()) == "< héllo"
    assert format_message(WSMsgType.TEXT, b"a\r\nb") == "< a\\r\\nb"
    assert format_message(WSMsgType.BINARY, b"") == "< [binary 0 bytes]"
    assert format_message(WSMsgType.BINARY, b"\x00\xff") == "< [binary 2 bytes] 00ff"
    exact = bytes(PREVIEW_BYTES)
    expected = f"< [binary {PREVIEW_BYTES} bytes] {exact.hex()}"
    assert format_message(WSMsgType.BINARY, exact) == expected
    longer = bytes(PREVIEW_BYTES + 1)
    assert format_message(WSMsgType.BINARY, longer).endswith(exact.hex() + "...")
