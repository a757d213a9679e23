"""HTTP/1.1 around the WebSocket handshake: parse requests and responses with httptools
(llhttp, the parser behind uvicorn) and render the few responses the gateway writes.

Nothing here does I/O: readers are fed bytes and answer with a parsed message or None.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import dataclass
from http import HTTPStatus

import httptools
import orjson

from wsgw.errors import BadRequest, GatewayError, HeadersTooLarge, PayloadTooLarge

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024
# The largest request body read, on every port: the only bodies the gateway accepts are
# POST /oauth2/token forms (a few hundred bytes), so a larger one is refused (413) as soon
# as it is announced, or once it is more than this, and never buffered.
MAX_BODY_BYTES = 16 * 1024


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
    # The bytes that followed the request in the read that completed it: after an upgrade,
    # early WebSocket frames; after a plain request, whatever the client pipelined (never
    # read as part of this request, never acted on).
    trailing: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    trailing: bytes = b""


class _Collector:
    """httptools callbacks: accumulate the pieces of ONE message, and stop the parser
    where a second one would begin (its bytes are the caller's `trailing`, never parsed
    into the first)."""

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

    def on_message_begin(self) -> None:
        if self.done:
            raise _NextMessage

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_status(self, status: bytes) -> None:
        self.status += status
        self.head_bytes += len(status)

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


class _NextMessage(Exception):
    """Raised where a second message begins: the parser stops there."""


class _Probe:
    """Callbacks of a throw-away parser that only finds where the first message ends."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True  # what follows (within the probe's slice) costs less than a raise


def _cause(exc: BaseException) -> BaseException | None:
    """httptools reports an exception raised in a callback as HttpParserCallbackError,
    with the callback's exception as its context."""
    return exc.__cause__ or exc.__context__


class _MessageReader:
    """One message per parse. httptools (llhttp) runs on into the next message of a read
    and reports no offset except after an upgrade; so the first message's collector stops
    the parser where a second message begins, and where the first one ended is found by
    re-parsing its bytes (`_end_in`, only when anything can follow it in the read)."""

    _parser_type: type = httptools.HttpRequestParser

    def __init__(self, max_head: int, max_body: int) -> None:
        self._max_head = max_head
        self._max_body = max_body
        self._finished = False
        self._begin()

    def _begin(self) -> None:
        self._cb = _Collector(self._max_body)
        self._parser = self._parser_type(self._cb)
        # The message's reads so far (references, joined only to locate its end).
        self._chunks: list[bytes] = []
        self._fed = 0

    def _feed(self, data: bytes) -> tuple[int, bool]:
        """Feed `data` to the parser: (offset in `data` where an upgrade paused the
        parser or -1, whether the parser stopped on something after a complete message).
        Errors of the message itself are raised as HttpParserError."""
        self._chunks.append(data)
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return exc.args[0], False
        except httptools.HttpParserError:
            if not self._cb.done:
                raise
            return -1, True  # the next message began, or broke: not this one's business
        return -1, False

    def _end_in(self, data: bytes, stopped: bool) -> int:
        """Offset in `data` (the last read, which completed the message) where the
        message ends. Without a stop, only empty lines (CR, LF: llhttp skips them without
        a callback) can follow it; a read that does not end in one ends with the message."""
        n = len(data)
        base = self._fed - n  # bytes before `data`: the message was incomplete there
        low = base
        if not stopped:
            run = n - len(data.rstrip(b"\r\n"))
            if run == 0:
                return n
            low = max(base, base + n - run - 1)
        high = base + n  # complete there; the end is the least complete prefix
        view = memoryview(data if base == 0 else b"".join(self._chunks))
        while high - low > 1:  # at most log2(len(data)) parses
            mid = (low + high) // 2
            probe = _Probe()
            with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._parser_type(probe).feed_data(view[:mid])
            if probe.done:
                high = mid
            else:
                low = mid
        return high - base


class RequestReader(_MessageReader):
    """Feed bytes from a client; `feed` returns the first Request once it is complete,
    with the bytes that followed it in that read as `trailing`. After it, `feed` reads
    nothing more (one request per connection)."""

    _parser_type = httptools.HttpRequestParser

    def __init__(self, max_head: int = MAX_HEAD_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        super().__init__(max_head, max_body)
        self._headers: Headers | None = None  # set once the head is in, and checked

    def feed(self, data: bytes) -> Request | None:
        if self._finished:
            return None
        if type(data) is not bytes:
            data = bytes(data)
        cb = self._cb
        try:
            upgrade_at, stopped = self._feed(data)
        except httptools.HttpParserError as exc:
            if isinstance(_cause(exc), _BodyTooLarge):
                raise PayloadTooLarge("request body too large") from None
            raise BadRequest("malformed HTTP request") from None
        upgrade = upgrade_at >= 0
        if cb.head_bytes > self._max_head:
            raise HeadersTooLarge("request header fields too large")
        if not cb.head_done:
            if self._fed > self._max_head:
                raise HeadersTooLarge("request header fields too large")
            return None
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(cb.headers)
            self._check_head(headers, upgrade)
        if not (cb.done or upgrade):
            # Chunk framing carries no body but must be bounded too.
            if self._fed > self._max_head + 2 * self._max_body:
                raise PayloadTooLarge("request body too large")
            return None
        self._finished = True
        end = upgrade_at if upgrade else self._end_in(data, stopped)
        self._chunks = []
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
            headers=headers,
            body=bytes(cb.body),
            is_upgrade=upgrade,
            trailing=data[end:],
        )

    def _check_head(self, headers: Headers, upgrade: bool) -> None:
        """What llhttp lets through but the gateway must refuse, once the head is in."""
        version = self._parser.get_http_version()
        chunked = headers.count("transfer-encoding") > 0
        length = _length(headers.get("content-length"))  # llhttp allows one, digits only
        if upgrade:
            if version != "1.1":
                # RFC 6455 §4.1: the opening handshake is an HTTP/1.1 GET (and RFC 9110
                # §7.8 has an HTTP/1.0 server ignore Upgrade): 400, as §4.2.1 suggests.
                raise BadRequest("a WebSocket upgrade needs HTTP/1.1")
            if chunked or length:
                # llhttp skips an upgrade's body: it would be taken as WebSocket data.
                raise BadRequest("an upgrade request has no body")
        elif version not in ("1.1", "1.0"):
            raise BadRequest("HTTP/1.1 or HTTP/1.0 required")
        elif chunked and version == "1.0":
            # RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is
            # faulty.
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        elif length > self._max_body:
            raise PayloadTooLarge("request body too large")


def _length(value: str | None) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise BadRequest("malformed Content-Length") from None


# Interim (1xx) responses a backend may send before its 101 (RFC 9110 §15.2).
MAX_INTERIM_RESPONSES = 8


class ResponseReader(_MessageReader):
    """Feed bytes from a backend; `feed` returns the Response once its head is complete
    (interim 1xx responses other than 101 are skipped). After a 101, `trailing` is what
    followed its head in that read: WebSocket data from the backend."""

    _parser_type = httptools.HttpResponseParser

    def __init__(self, max_head: int = MAX_HEAD_BYTES) -> None:
        super().__init__(max_head, 0)  # the body of a refusal is of no interest
        self._interim = 0

    def feed(self, data: bytes) -> Response | None:
        if self._finished:
            return None
        if type(data) is not bytes:
            data = bytes(data)
        while True:  # once per interim response in `data`: bounded by their number
            cb = self._cb
            try:
                upgrade_at, stopped = self._feed(data)
            except httptools.HttpParserError:
                if not cb.head_done:
                    raise BadRequest("malformed HTTP response") from None
                upgrade_at, stopped = -1, False  # in a final response's body: ignored
            if cb.head_bytes > self._max_head:
                raise BadRequest("response header fields too large")
            if not cb.head_done:
                if self._fed > self._max_head:
                    raise BadRequest("response header fields too large")
                return None
            status = self._parser.get_status_code()
            if not (100 <= status < 200 and status != 101):
                self._finished = True
                self._chunks = []
                return Response(
                    status=status,
                    reason=cb.status.decode("latin-1"),
                    headers=Headers(cb.headers),
                    trailing=data[upgrade_at:] if upgrade_at >= 0 else b"",
                )
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise BadRequest("too many interim responses")
            if not cb.done:
                return None
            rest = data[self._end_in(data, stopped) :]
            self._begin()
            if not rest:
                return None
            data = rest


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
