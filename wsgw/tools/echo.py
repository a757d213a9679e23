"""`wsgw echo`: a message-level echo WebSocket backend on picows + uvloop.

It is the backend of the demo, the integration tests, the Autobahn conformance run and the
benchmarks, so it has to be an honest WebSocket peer (fragments reassembled, UTF-8 checked,
close handshake answered) and cheap per message (one dispatch, one copy, one send).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

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


class MessageError(Exception):
    """A peer broke the message layer; `code` is the close code to fail the connection with."""

    def __init__(self, code: WSCloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MessageAssembler:
    """Turns data frames (TEXT, BINARY, CONTINUATION) into whole messages.

    `feed` returns `(msg_type, payload)` when a message is complete, None while one is still
    open, and raises MessageError on a sequencing error (1002), invalid UTF-8 (1007, found as
    early as possible so a peer streaming garbage is cut off at the first bad fragment) or a
    message over `max_bytes` (1009). The payload is owned bytes: it may be handed to a
    transport that keeps it.
    """

    __slots__ = ("max_bytes", "_kind", "_parts", "_size", "_decoder")

    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kind: WSMsgType | None = None  # type of the fragmented message being assembled
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None:
        msg_type = frame.msg_type
        if msg_type == _CONTINUATION:
            if self._kind is None:
                raise MessageError(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
            return self._continue(frame)
        if self._kind is not None:
            raise MessageError(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        if frame.payload_size > self.max_bytes:
            raise MessageError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        payload = frame.get_payload_as_bytes()
        if frame.fin:  # the common case: a whole message in one frame
            if msg_type == _TEXT:
                _check_utf8(payload)
            return msg_type, payload
        self._kind = msg_type
        self._parts = [payload]
        self._size = len(payload)
        if msg_type == _TEXT:
            self._decoder = _Utf8Decoder()
            self._decode(payload, False)
        return None

    def _continue(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None:
        self._size += frame.payload_size
        if self._size > self.max_bytes:
            raise MessageError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        payload = frame.get_payload_as_bytes()
        if self._decoder is not None:
            self._decode(payload, frame.fin)
        self._parts.append(payload)
        if not frame.fin:
            return None
        message = (self._kind, b"".join(self._parts))
        self._kind, self._parts, self._size, self._decoder = None, [], 0, None
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


class _EchoConfig:
    """Shared by every connection of one server; a connection only points at it."""

    __slots__ = ("prefix", "max_message_bytes", "subprotocols", "connections")

    def __init__(self, prefix: str, max_message_bytes: int, subprotocols: Sequence[str]) -> None:
        self.prefix = prefix.encode("utf-8")
        self.max_message_bytes = max_message_bytes
        self.subprotocols = frozenset(subprotocols)
        self.connections: set[EchoListener] = set()  # live ones, told "going away" on shutdown


class EchoListener(WSListener):
    """One connection: echo each complete message as one frame of the same type."""

    def __init__(self, config: _EchoConfig) -> None:
        super().__init__()
        self._config = config
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
        # picows leaves RSV bits to the application; no extension is negotiated here
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "reserved bit set")
            return
        msg_type = frame.msg_type
        if msg_type == _CLOSE:
            self._answer_close(transport, frame)
            return
        if msg_type != _TEXT and msg_type != _BINARY and msg_type != _CONTINUATION:
            return  # PONG; PING never gets here, picows answers it (auto-pong, same payload)
        try:
            message = self._assembler.feed(frame)
        except MessageError as exc:
            self._fail(transport, exc.code, exc.reason)
            return
        if message is not None:
            kind, payload = message
            if kind == _TEXT and self._prefix:
                payload = self._prefix + payload
            transport.send(kind, payload)

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
        listener = EchoListener(config)
        if config.subprotocols:
            chosen = select_subprotocol(
                request.headers.getall("Sec-WebSocket-Protocol", []), config.subprotocols
            )
            if chosen is not None:
                response = WSUpgradeResponse.create_101_response(
                    extra_headers={"Sec-WebSocket-Protocol": chosen}
                )
                return WSUpgradeResponseWithListener(response, listener)
        return listener

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
) -> asyncio.Server:
    """Listen for WebSocket clients and echo their messages; port 0 picks a free port
    (read it from `server.sockets[0].getsockname()[1]`). Close the server to stop it."""
    config = _EchoConfig(prefix, max_message_bytes, subprotocols)
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
    config = _EchoConfig(prefix, DEFAULT_MAX_MESSAGE_BYTES, ())
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
