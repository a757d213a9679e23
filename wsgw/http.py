"""HTTP/1.1 around the WebSocket handshake: parse requests and responses with httptools
(llhttp, the parser behind uvicorn) and render the few responses the gateway writes.

Nothing here does I/O: readers are fed bytes and answer with a parsed message or None.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from http import HTTPStatus

import httptools
import orjson

from wsgw.errors import BadRequest, GatewayError, HeadersTooLarge, PayloadTooLarge

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024


def accept_key(client_key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(client_key.encode("ascii") + WS_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


class Headers:
    """Header fields in arrival order, names lower-cased. Repeated fields are kept.

    Lookups go through a name → values index built on the first one: a handshake asks
    about a dozen names of the same ten-odd fields."""

    __slots__ = ("items", "_index")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self.items = items if items is not None else []
        self._index: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        return f"Headers({self.items!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self.items == other.items

    def _values(self, name: str) -> list[str]:
        index = self._index
        if index is None:
            index = self._index = {}
            for key, value in self.items:
                values = index.get(key)
                if values is None:
                    index[key] = [value]
                else:
                    values.append(value)
        return index.get(name, _NONE)

    def get(self, name: str) -> str | None:
        values = self._values(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._values(name))

    def tokens(self, name: str) -> list[str]:
        """Comma-separated tokens of every `name` field, stripped (e.g. Connection)."""
        out = []
        for value in self._values(name):
            for token in value.split(","):
                token = token.strip()
                if token:
                    out.append(token)
        return out

    def count(self, name: str) -> int:
        return len(self._values(name))


_NONE: list[str] = []  # the values of an absent field (never mutated)


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: Headers
    body: bytes
    is_upgrade: bool
    # Bytes that arrived after the request head of an upgrade (early WebSocket frames).
    trailing: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    trailing: bytes = b""


class _Collector:
    """httptools callbacks: accumulate the pieces of one message."""

    __slots__ = (
        "url",
        "headers",
        "body",
        "head_done",
        "done",
        "status",
        "body_limit",
        "head_bytes",
    )

    def __init__(self, body_limit: int) -> None:
        self.url = b""
        # Size of the head as parsed, whatever the TCP chunks: a limit counted per chunk
        # misses a whole oversized head arriving in one read.
        self.head_bytes = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.head_done = False
        self.done = False
        self.status = b""
        self.body_limit = body_limit

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.body_limit:
            raise _BodyTooLarge
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class _BodyTooLarge(Exception):
    pass


class RequestReader:
    """Feed bytes from a client; `feed` returns the Request once it is complete."""

    def __init__(self, max_head: int = MAX_HEAD_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self._cb = _Collector(max_body)
        self._parser = httptools.HttpRequestParser(self._cb)
        self._seen = 0
        self._max_head = max_head

    def feed(self, data: bytes) -> Request | None:
        cb = self._cb
        trailing = b""
        upgrade = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            upgrade = True
            trailing = data[exc.args[0] :]
        except _BodyTooLarge:
            raise PayloadTooLarge("request body too large") from None
        except httptools.HttpParserError:
            raise BadRequest("malformed HTTP request") from None
        if cb.head_bytes > self._max_head:
            raise HeadersTooLarge("request header fields too large")
        if not cb.head_done:
            self._seen += len(data)
            if self._seen > self._max_head:
                raise HeadersTooLarge("request header fields too large")
            return None
        if not (cb.done or upgrade):
            return None
        if self._parser.get_http_version() != "1.1":
            raise BadRequest("HTTP/1.1 required")
        try:
            parsed = httptools.parse_url(cb.url)
        except httptools.HttpParserInvalidURLError:
            raise BadRequest("malformed request target") from None
        path = (parsed.path or b"/").decode("latin-1")
        query = (parsed.query or b"").decode("latin-1")
        return Request(
            method=self._parser.get_method().decode("ascii"),
            target=cb.url.decode("latin-1"),
            path=path,
            query=query,
            headers=Headers(cb.headers),
            body=bytes(cb.body),
            is_upgrade=upgrade,
            trailing=trailing,
        )


class ResponseReader:
    """Feed bytes from a backend; `feed` returns the Response once its head is complete."""

    def __init__(self, max_head: int = MAX_HEAD_BYTES) -> None:
        self._cb = _Collector(0)
        self._parser = httptools.HttpResponseParser(self._cb)
        self._seen = 0
        self._max_head = max_head

    def feed(self, data: bytes) -> Response | None:
        trailing = b""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            trailing = data[exc.args[0] :]
        except _BodyTooLarge:
            pass  # the body of a refusal is of no interest: the head is complete
        except httptools.HttpParserError:
            raise BadRequest("malformed HTTP response") from None
        if self._cb.head_bytes > self._max_head:
            raise BadRequest("response header fields too large")
        if not self._cb.head_done:
            self._seen += len(data)
            if self._seen > self._max_head:
                raise BadRequest("response header fields too large")
            return None
        return Response(
            status=self._parser.get_status_code(),
            reason=self._cb.status.decode("latin-1"),
            headers=Headers(self._cb.headers),
            trailing=trailing,
        )


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def render_response(
    status: int,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    *,
    close: bool = True,
) -> bytes:
    reason = _REASONS.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if status != 101:
        lines.append(f"Content-Length: {len(body)}")
        if close:
            lines.append("Connection: close")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("latin-1") + body


def json_response(
    status: int,
    payload: object,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> bytes:
    all_headers = [("Content-Type", "application/json"), *headers]
    return render_response(status, all_headers, orjson.dumps(payload))


def error_response(err: GatewayError) -> bytes:
    """The one place a GatewayError becomes an HTTP refusal."""
    return json_response(
        err.http_status,
        {"error": err.error, "message": err.message},
        [("Cache-Control", "no-store"), *err.extra_headers()],
    )
