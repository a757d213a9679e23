"""`wsgw echo`: a message-level echo WebSocket backend on picows + uvloop.

It is the backend of the demo, the integration tests, the Autobahn conformance run and the
benchmarks, so it has to be an honest WebSocket peer (fragments reassembled, UTF-8 checked,
close handshake answered) and cheap per message (one dispatch, one copy, one send).

`wsgw echo` accepts permessage-deflate (RFC 7692) when offered (`start_echo_server` when
asked to), always with
`server_no_context_takeover; client_no_context_takeover`: every message then inflates on its
own, so a compressed client message is echoed verbatim (RSV1 kept) without being inflated
or deflated again. Compressed text is inflated once to check its UTF-8 (and deflated again
when a prefix goes before it); compressed binary is never inflated: the client gets back
exactly the bytes it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import logging
import re
import signal
import ssl
import sys
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# picows is told to log here; `wsgw echo` silences it (a misbehaving peer already learns
# what went wrong from the close code; stderr is not the place to repeat it per connection)
PICOWS_LOGGER = "wsgw.echo.picows"
_SHUTDOWN_GRACE_SECONDS = 2.0

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

PERMESSAGE_DEFLATE = "permessage-deflate"
_DEFLATE_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)
_WINDOW_BITS = re.compile(r"[1-9][0-9]?")  # RFC 7692 §7.1.2: a decimal without leading zeros
# RFC 7692 §7.2.1: the sender removes the empty stored block that ends each message (a
# sync flush), the receiver appends it again before inflating
_EMPTY_STORED_BLOCK = b"\x00\x00\xff\xff"

Message = tuple[WSMsgType, bytes, bool]  # (TEXT or BINARY, payload, compressed)


class MessageError(Exception):
    """A peer broke the message layer; `code` is the close code to fail the connection with."""

    def __init__(self, code: WSCloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MessageAssembler:
    """Turns data frames (TEXT, BINARY, CONTINUATION) into whole messages.

    `feed_message` returns `(msg_type, payload, compressed)` when a message is complete
    (`feed`: `(msg_type, payload)`, for peers that negotiate no extension), None while one
    is still open, and raises MessageError on a sequencing error (1002), invalid UTF-8
    (1007, found as early as possible so a peer streaming garbage is cut off at the first bad
    fragment) or a message over `max_bytes` (1009). The payload is owned bytes: it may be
    handed to a transport that keeps it.

    `compressed` is the RSV1 bit of the message's first frame (permessage-deflate: RSV1 on a
    continuation frame is a protocol error); whether RSV1 may be set at all is the caller's
    check. A compressed payload is returned as received: its UTF-8 and its inflated size
    are checked by whoever inflates it (`inflate_message`).
    """

    __slots__ = ("max_bytes", "_kind", "_compressed", "_parts", "_size", "_decoder")

    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kind: WSMsgType | None = None  # type of the fragmented message being assembled
        self._compressed = False
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None:
        message = self.feed_message(frame)
        return None if message is None else (message[0], message[1])

    def feed_message(self, frame: WSFrame) -> Message | None:
        msg_type = frame.msg_type
        if msg_type == _CONTINUATION:
            if self._kind is None:
                raise MessageError(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
            if frame.rsv1:
                raise MessageError(WSCloseCode.PROTOCOL_ERROR, "RSV1 on a continuation frame")
            return self._continue(frame)
        if self._kind is not None:
            raise MessageError(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        if frame.payload_size > self.max_bytes:
            raise MessageError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        payload = frame.get_payload_as_bytes()
        compressed = frame.rsv1
        if frame.fin:  # the common case: a whole message in one frame
            if msg_type == _TEXT and not compressed:
                _check_utf8(payload)
            return msg_type, payload, compressed
        self._kind = msg_type
        self._compressed = compressed
        self._parts = [payload]
        self._size = len(payload)
        if msg_type == _TEXT and not compressed:
            self._decoder = _Utf8Decoder()
            self._decode(payload, False)
        return None

    def _continue(self, frame: WSFrame) -> Message | None:
        self._size += frame.payload_size
        if self._size > self.max_bytes:
            raise MessageError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        payload = frame.get_payload_as_bytes()
        if self._decoder is not None:
            self._decode(payload, frame.fin)
        self._parts.append(payload)
        if not frame.fin:
            return None
        message = (self._kind, b"".join(self._parts), self._compressed)
        self._kind, self._parts, self._size, self._decoder = None, [], 0, None
        self._compressed = False
        return message  # type: ignore[return-value]

    def _decode(self, payload: bytes, final: bool) -> None:
        assert self._decoder is not None
        try:
            self._decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise MessageError(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in text message") from None


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in text message") from None


class DeflateAnswer(NamedTuple):
    """An accepted permessage-deflate offer."""

    header: str  # the Sec-WebSocket-Extensions value of the 101
    server_window_bits: int  # the window of what this server deflates itself (prefixed text)


def negotiate_deflate(offer_headers: Sequence[str]) -> DeflateAnswer | None:
    """The answer to the first permessage-deflate offer this echo can honour, or None
    (RFC 7692 §5, §7.1): offers are tried in the client's order, across headers.

    Every answer carries `server_no_context_takeover; client_no_context_takeover` (a server
    may add both to any offer): the echo sends a client's compressed message back as it
    came, which is a valid server message only when the client deflates each message on
    its own and inflates each of ours on its own. For the same reason the client's window
    must fit in the one it inflates ours with: an offer of `server_max_window_bits=N` is
    accepted with N only together with `client_max_window_bits` (answered with at most N),
    and N = 8 is declined (zlib cannot deflate raw with a 256-byte window).
    """
    for header in offer_headers:
        for element in header.split(","):
            answer = _accept_offer(element)
            if answer is not None:
                return answer
    return None


def _accept_offer(element: str) -> DeflateAnswer | None:
    name, *raw_params = (part.strip() for part in element.split(";"))
    if name.lower() != PERMESSAGE_DEFLATE:
        return None
    params: dict[str, str | None] = {}
    for param in raw_params:
        key, eq, value = param.partition("=")
        key = key.strip().lower()
        if key not in _DEFLATE_PARAMS or key in params:
            return None  # an unknown or repeated parameter: decline this offer (§5.1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[key] = value if eq else None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if params.get(flag) is not None:
            return None
    server_bits = _window_bits(params, "server_max_window_bits", required=True)
    client_bits = _window_bits(params, "client_max_window_bits", required=False)
    if server_bits == 0 or client_bits == 0:
        return None
    parts = [PERMESSAGE_DEFLATE, "server_no_context_takeover", "client_no_context_takeover"]
    if server_bits is None:
        return DeflateAnswer("; ".join(parts), 15)
    if server_bits < 9 or client_bits is None:
        return None  # see negotiate_deflate: the client's window could exceed ours
    client_bits = min(server_bits, client_bits)
    if client_bits < 9:
        return None
    parts += [f"server_max_window_bits={server_bits}", f"client_max_window_bits={client_bits}"]
    return DeflateAnswer("; ".join(parts), server_bits)


def _window_bits(params: dict[str, str | None], key: str, *, required: bool) -> int | None:
    """None when absent; 0 when invalid; 15 for a client_max_window_bits without a value."""
    if key not in params:
        return None
    value = params[key]
    if value is None:
        return 0 if required else 15
    if not _WINDOW_BITS.fullmatch(value) or not 8 <= int(value) <= 15:
        return 0
    return int(value)


def inflate_message(payload: bytes, max_bytes: int) -> bytes:
    """One self-contained permessage-deflate message, inflated: MessageError 1009 past
    `max_bytes` (inflating stops there: no bomb is ever fully inflated), 1002 when the
    data is not valid DEFLATE."""
    inflater = zlib.decompressobj(-15)  # the largest window inflates any smaller one
    try:
        data = inflater.decompress(payload + _EMPTY_STORED_BLOCK, max_bytes + 1)
    except zlib.error:
        raise MessageError(WSCloseCode.PROTOCOL_ERROR, "invalid compressed data") from None
    if len(data) > max_bytes:
        raise MessageError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
    return data


def deflate_message(data: bytes, window_bits: int = 15) -> bytes:
    """`data` as one self-contained permessage-deflate message payload (RFC 7692 §7.2.1)."""
    deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return out[: -len(_EMPTY_STORED_BLOCK)]  # a sync flush always ends with it


class _EchoConfig:
    """Shared by every connection of one server; a connection only points at it."""

    __slots__ = ("prefix", "max_message_bytes", "subprotocols", "deflate", "connections")

    def __init__(
        self,
        prefix: str,
        max_message_bytes: int,
        subprotocols: Sequence[str],
        deflate: bool,
    ) -> None:
        self.prefix = prefix.encode("utf-8")
        self.max_message_bytes = max_message_bytes
        self.subprotocols = frozenset(subprotocols)
        self.deflate = deflate  # accept permessage-deflate offers
        self.connections: set[EchoListener] = set()  # live ones, told "going away" on shutdown


class EchoListener(WSListener):
    """One connection: echo each complete message as one frame of the same type."""

    def __init__(self, config: _EchoConfig, deflate: DeflateAnswer | None = None) -> None:
        super().__init__()
        self._config = config
        self._deflate = deflate  # the negotiated permessage-deflate, if any
        self._prefix = config.prefix
        self._assembler = MessageAssembler(config.max_message_bytes)
        self._transport: WSTransport | None = None
        self._closing = False  # a close frame went out: nothing more is processed

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._config.connections.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._config.connections.discard(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._closing:
            return
        # picows leaves RSV bits to the application: RSV1 means "compressed" once
        # permessage-deflate is negotiated, and only on a data frame (RFC 7692 §6)
        msg_type = frame.msg_type
        if (
            frame.rsv2
            or frame.rsv3
            or (frame.rsv1 and (self._deflate is None or msg_type == _CLOSE))
        ):
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "reserved bit set")
            return
        if msg_type == _CLOSE:
            self._answer_close(transport, frame)
            return
        if msg_type != _TEXT and msg_type != _BINARY and msg_type != _CONTINUATION:
            return  # PONG; PING never gets here, picows answers it (auto-pong, same payload)
        try:
            message = self._assembler.feed_message(frame)
            if message is None:
                return
            kind, payload, compressed = message
            if compressed:
                payload = self._compressed_echo(kind, payload)
            elif kind == _TEXT and self._prefix:
                payload = self._prefix + payload
        except MessageError as exc:
            self._fail(transport, exc.code, exc.reason)
            return
        if compressed:
            transport.send(kind, payload, rsv1=True)
        else:
            transport.send(kind, payload)

    def _compressed_echo(self, kind: WSMsgType, payload: bytes) -> bytes:
        """The payload of the compressed echo of a compressed message.

        Sent back as it came: the negotiated `client_no_context_takeover` makes every client
        message inflate on its own (no reference to the previous ones) within a window no
        larger than ours, and `server_no_context_takeover` makes the client inflate each of
        ours on its own, so the client's message is also a valid server message. Without
        both, the echo would have to inflate and deflate every message.
        """
        if kind != _TEXT:
            return payload
        text = inflate_message(payload, self._config.max_message_bytes)
        _check_utf8(text)
        if not self._prefix:
            return payload
        assert self._deflate is not None
        return deflate_message(self._prefix + text, self._deflate.server_window_bits)

    def _answer_close(self, transport: WSTransport, frame: WSFrame) -> None:
        # picows refuses a 1-byte payload, most bad codes (1002) and a non-UTF-8 reason
        # (1007), but lets through the codes its enum knows yet the wire forbids (0, 1006)
        if frame.payload_size < 2:
            transport.send_close(WSCloseCode.OK)
        else:
            code = frame.get_close_code()
            if not is_valid_close_code(code.value):
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "invalid close code")
                return
            transport.send_close(code)
        self._closing = True
        transport.disconnect()  # the server closes TCP first (RFC 6455 §7.1.1)

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        self._closing = True
        transport.send_close(code, reason)
        transport.disconnect()

    def going_away(self) -> None:
        if self._transport is not None and not self._closing:
            self._fail(self._transport, WSCloseCode.GOING_AWAY, "server shutting down")

    # Backpressure: a peer that does not read its echoes stops being read, instead of
    # growing our write buffer without bound.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.underlying_transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.underlying_transport.resume_reading()


def is_valid_close_code(code: int) -> bool:
    """May this code appear in a close frame on the wire? (RFC 6455 §7.4, IANA registry)"""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def select_subprotocol(offered_headers: Sequence[str], supported: frozenset[str]) -> str | None:
    """The first subprotocol the client offers that the server supports (RFC 6455 §4.2.2)."""
    for header in offered_headers:
        for name in header.split(","):
            name = name.strip()
            if name in supported:
                return name
    return None


async def _start(
    host: str,
    port: int,
    config: _EchoConfig,
    ssl_context: ssl.SSLContext | None,
) -> asyncio.Server:
    def listener_factory(request: WSUpgradeRequest) -> EchoListener | WSUpgradeResponseWithListener:
        answer_headers: dict[str, str] = {}
        if config.subprotocols:
            chosen = select_subprotocol(
                request.headers.getall("Sec-WebSocket-Protocol", []), config.subprotocols
            )
            if chosen is not None:
                answer_headers["Sec-WebSocket-Protocol"] = chosen
        deflate = None
        if config.deflate:
            deflate = negotiate_deflate(request.headers.getall("Sec-WebSocket-Extensions", []))
            if deflate is not None:
                answer_headers["Sec-WebSocket-Extensions"] = deflate.header
        listener = EchoListener(config, deflate)
        if not answer_headers:
            return listener
        response = WSUpgradeResponse.create_101_response(extra_headers=answer_headers)
        return WSUpgradeResponseWithListener(response, listener)

    return await ws_create_server(
        listener_factory,
        host,
        port,
        # a frame can never be larger than the message it belongs to
        max_frame_size=config.max_message_bytes,
        enable_auto_pong=True,
        logger_name=logging.getLogger(PICOWS_LOGGER),
        ssl=ssl_context,
    )


async def start_echo_server(
    host: str,
    port: int,
    *,
    prefix: str = "",
    subprotocols: Sequence[str] = (),
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    permessage_deflate: bool = False,
) -> asyncio.Server:
    """Listen for WebSocket clients and echo their messages; port 0 picks a free port
    (read it from `server.sockets[0].getsockname()[1]`). Close the server to stop it.

    `permessage_deflate=True` accepts compression offers, as `wsgw echo` does; off by
    default so that in-process tests, whose clients offer compression unasked (websockets
    does), keep relaying uncompressed frames unless they ask for it."""
    config = _EchoConfig(prefix, max_message_bytes, subprotocols, permessage_deflate)
    return await _start(host, port, config, ssl_context)


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' → (host, port); an empty host means all IPv4 interfaces."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_until_signal(host: str, port: int, prefix: str) -> int:
    config = _EchoConfig(prefix, DEFAULT_MAX_MESSAGE_BYTES, (), deflate=True)
    try:
        server = await _start(host, port, config, None)
    except OSError as exc:
        print(f"wsgw echo: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound_port = server.sockets[0].getsockname()[1]
    print(f"echo backend listening on ws://{_url_host(host)}:{bound_port}", flush=True)
    await stop.wait()

    server.close()
    live = list(config.connections)
    for listener in live:
        listener.going_away()
    waits = [listener._transport.wait_disconnected() for listener in live if listener._transport]
    if waits:
        # let the 1001 close frames reach the peers before the loop goes away
        await asyncio.wait(
            [asyncio.ensure_future(w) for w in waits], timeout=_SHUTDOWN_GRACE_SECONDS
        )
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    import uvloop  # imported here so that importing this module stays cheap

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"wsgw echo: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(PICOWS_LOGGER).setLevel(logging.CRITICAL)
    return uvloop.run(_serve_until_signal(host, port, args.prefix))
