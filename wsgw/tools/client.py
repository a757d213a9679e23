"""`wsgw client URL`: an interactive WebSocket client on picows (like WSO2's sample client).

Every stdin line goes out as a text message; every message received is one stdout line,
`< text` or `< [binary N bytes] <hex preview>`. Diagnostics go to stderr. The token is sent,
never printed: URLs are shown with credential-looking query values redacted. When stdin
ends, the client waits until replies stop coming (LINGER_S), then closes with 1000.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from wsgw.tools.echo import DEFAULT_MAX_MESSAGE_BYTES, MessageAssembler, MessageError

CLOSE_REPLY_TIMEOUT = 5.0  # after our close, how long the peer gets to answer it
LINGER_S = 0.3  # after stdin ends: close once no reply has come for this long
HANDSHAKE_TIMEOUT = 10.0
PREVIEW_BYTES = 32  # hex shown for a binary message
PICOWS_LOGGER = "wsgw.client.picows"
_OK_CLOSE_CODES = (1000, 1001, 1005)  # 1005: the peer's close frame carried no code
_STDIN_CHUNK = 64 * 1024
_STDIN_QUEUE_CHUNKS = 8  # paces the stdin thread to the sender

# RFC 9110 token: what a header name (or a subprotocol name) may be made of
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SECRET_PARAM = re.compile(r"token|secret|key|pass|auth|sig", re.IGNORECASE)


class UsageError(ValueError):
    """A bad command-line value; exit status 2 like argparse."""


def parse_header(raw: str) -> tuple[str, str]:
    """'Name: value' → (name, value); refuses what would break or smuggle into the request."""
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise UsageError(f"-H wants 'Name: value', got {raw!r}")
    if any(c in value for c in "\r\n\0"):
        raise UsageError(f"header {name} has a line break or NUL in its value")
    return name, value


def build_headers(
    token: str | None, raw_headers: list[str], subprotocols: list[str]
) -> list[tuple[str, str]]:
    headers = [parse_header(raw) for raw in raw_headers]
    if token is not None:
        if any(name.lower() == "authorization" for name, _ in headers):
            raise UsageError("give the token with --token or -H Authorization, not both")
        if not token or any(c in token for c in "\r\n\0 "):
            raise UsageError("--token is empty or has whitespace in it")
        headers.append(("Authorization", f"Bearer {token}"))
    for name in subprotocols:
        if not _TOKEN.match(name):
            raise UsageError(f"--subprotocol {name!r} is not a valid token")
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    return headers


def redact_url(url: str) -> str:
    """The URL as shown to humans: password and credential-like query values hidden."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=***" if _SECRET_PARAM.search(name) else f"{name}={value}" if sep else name
        for name, sep, value in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def format_message(kind: WSMsgType, payload: bytes) -> str:
    """One stdout line per message (line breaks inside a text message are escaped)."""
    if kind == WSMsgType.TEXT:
        text = payload.decode("utf-8")  # already validated by the assembler
        return "< " + text.replace("\r", "\\r").replace("\n", "\\n")
    preview = payload[:PREVIEW_BYTES].hex()
    more = "..." if len(payload) > PREVIEW_BYTES else ""
    return f"< [binary {len(payload)} bytes] {preview}{more}".rstrip()


class _ClientListener(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self._assembler = MessageAssembler(DEFAULT_MAX_MESSAGE_BYTES)
        self._failed = False  # we failed the connection: the rest of the input is moot
        # set when the peer's close frame is handled (not transport.close_handshake.recv:
        # picows fills that in while parsing, before the frames ahead of it are delivered)
        self.close_received = asyncio.Event()
        self.last_frame_at = time.monotonic()  # see _linger
        self.writable = asyncio.Event()
        self.writable.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last_frame_at = time.monotonic()
        if self.close_received.is_set() or self._failed:
            return  # nothing counts after the peer's close or our failing the connection
        msg_type = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "reserved bit set")
        elif msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:  # the peer started closing: echo its code
                code = frame.get_close_code()
                transport.send_close(WSCloseCode.OK if frame.payload_size < 2 else code)
            self.close_received.set()
        elif msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            try:
                message = self._assembler.feed(frame)
            except MessageError as exc:
                self._fail(transport, exc.code, exc.reason)
                return
            if message is not None:
                self._print(transport, format_message(*message) + "\n")
        # PING is answered by picows (auto-pong); PONG needs nothing
        if frame.last_in_buffer:
            self._print(transport, None)  # one flush per read, not per message

    def _print(self, transport: WSTransport, line: str | None) -> None:
        try:
            if line is not None:
                sys.stdout.write(line)
            else:
                sys.stdout.flush()
        except BrokenPipeError:  # `wsgw client … | head`: the reader has gone, so do we
            # stdout now points at /dev/null so the interpreter's final flush stays quiet
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            self._fail(transport, WSCloseCode.GOING_AWAY, "output closed")

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        self._failed = True
        transport.send_close(code, reason)
        transport.disconnect()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class _StdinReader:
    """Reads stdin on a daemon thread so the event loop never blocks on it.

    A thread (not loop.connect_read_pipe) because stdin may be a regular file, which pipe
    transports refuse, or a terminal, which they would leave non-blocking for the shell.
    It uses os.read on the raw fd: a thread blocked inside sys.stdin's BufferedReader holds
    its lock, and interpreter shutdown can then abort on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 0) -> None:
        self._loop = loop
        self._fd = fd
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(_STDIN_QUEUE_CHUNKS)
        threading.Thread(target=self._read, name="wsgw-client-stdin", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, _STDIN_CHUNK)
            except OSError:
                chunk = b""
            try:  # blocks while the queue is full: the sender sets the pace
                asyncio.run_coroutine_threadsafe(self._chunks.put(chunk), self._loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop is gone
            if not chunk:
                return

    async def lines(self) -> AsyncIterator[str]:
        pending = b""
        while True:
            chunk = await self._chunks.get()
            if not chunk:
                if pending:
                    yield pending.decode("utf-8", "replace")
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.removesuffix(b"\r").decode("utf-8", "replace")


async def _send_lines(stdin: _StdinReader, transport: WSTransport, listener: _ClientListener):
    async for line in stdin.lines():
        if not listener.writable.is_set():
            await listener.writable.wait()
        if transport.is_disconnected or transport.is_close_frame_sent:
            return
        transport.send(WSMsgType.TEXT, line)


def _report_refusal(exc: WSHandshakeError) -> None:
    response = exc.response
    if response is not None and response.status != 101:
        print(
            f"upgrade refused: HTTP {response.status.value} {response.status.phrase}",
            file=sys.stderr,
        )
    else:  # a 101 that does not hold up, or no parsable response at all
        print(f"upgrade failed: {exc}", file=sys.stderr)
    body = exc.raw_body if exc.raw_body else (response.body if response is not None else None)
    if body:
        print(body.decode("utf-8", "replace").rstrip("\n"), file=sys.stderr)


def _close_outcome(transport: WSTransport) -> tuple[str, int]:
    """(what to print after 'closed: ', exit status) from the close handshake as it went."""
    handshake = transport.close_handshake
    if handshake is not None and handshake.recv is not None:
        recv = handshake.recv
        code = recv.code.value or 1005  # NO_INFO: the peer sent no code (RFC 6455 §7.1.5)
        line = f"{code} {recv.reason or ''}".rstrip()
        return line, 0 if code in _OK_CLOSE_CODES else 1
    if handshake is not None and handshake.sent is not None and handshake.sent.code.value != 1000:
        sent = handshake.sent  # we failed the connection (protocol error from the peer)
        return f"{sent.code.value} {sent.reason or ''} (sent by this client)".rstrip(), 1
    return "1006 connection lost without a close frame", 1


async def _linger(listener: _ClientListener, ends: set[asyncio.Future[Any]]) -> None:
    """stdin ended, but replies to the last lines may still be on their way (a peer stops
    sending once it receives our close): wait until nothing arrived for LINGER_S, bounded."""
    listener.last_frame_at = max(listener.last_frame_at, time.monotonic())
    deadline = time.monotonic() + CLOSE_REPLY_TIMEOUT
    while not any(end.done() for end in ends):
        now = time.monotonic()
        quiet = now - listener.last_frame_at
        if quiet >= LINGER_S or now >= deadline:
            return
        await asyncio.wait(ends, timeout=LINGER_S - quiet)


async def _wait_disconnected(transport: WSTransport, timeout: float) -> None:
    try:
        await asyncio.wait_for(transport.wait_disconnected(), timeout)
    except (TimeoutError, WSError, OSError):
        pass  # what happened is read from transport.close_handshake
    finally:
        transport.disconnect()


async def _session(
    url: str, headers: list[tuple[str, str]], offered: list[str], ssl_context: ssl.SSLContext | None
) -> int:
    shown_url = redact_url(url)
    try:
        # the whole connect is bounded: picows' own timeout starts after TCP connects
        transport, listener = await asyncio.wait_for(
            ws_connect(
                _ClientListener,
                url,
                ssl_context=ssl_context,
                extra_headers=headers,
                websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                max_frame_size=DEFAULT_MAX_MESSAGE_BYTES,
                logger_name=logging.getLogger(PICOWS_LOGGER),
                max_redirects=0,  # a redirect could carry the Authorization header elsewhere
            ),
            HANDSHAKE_TIMEOUT,
        )
    except WSHandshakeError as exc:
        _report_refusal(exc)
        return 1
    except (TimeoutError, OSError) as exc:  # before ValueError: a TLS verify error is both
        reason = str(exc) or "timeout"
        print(f"wsgw client: cannot connect to {shown_url}: {reason}", file=sys.stderr)
        return 1
    except (WSInvalidURL, ValueError):
        print(f"wsgw client: not a ws:// or wss:// URL: {shown_url}", file=sys.stderr)
        return 2
    assert isinstance(listener, _ClientListener)

    chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
    if chosen is not None and chosen not in offered:
        print(
            f"wsgw client: server chose subprotocol {chosen!r}, which was not offered",
            file=sys.stderr,
        )
        transport.send_close(WSCloseCode.PROTOCOL_ERROR)
        await _wait_disconnected(transport, 1.0)
        return 1
    print(
        f"connected to {shown_url} (subprotocol: {chosen or 'none'})", file=sys.stderr, flush=True
    )

    stdin = _StdinReader(asyncio.get_running_loop())
    sender = asyncio.ensure_future(_send_lines(stdin, transport, listener))
    peer_closed = asyncio.ensure_future(listener.close_received.wait())
    gone = asyncio.ensure_future(transport.wait_disconnected())
    try:
        await asyncio.wait({sender, peer_closed, gone}, return_when=asyncio.FIRST_COMPLETED)
        stdin_ended = (
            sender.done()
            and not listener.close_received.is_set()
            and not transport.is_disconnected
            and not transport.is_close_frame_sent
        )
        if stdin_ended:
            await _linger(listener, {peer_closed, gone})
        if stdin_ended and not (peer_closed.done() or gone.done()):
            transport.send_close(WSCloseCode.OK)  # stdin ended: close politely
            await asyncio.wait(
                {peer_closed, gone},
                timeout=CLOSE_REPLY_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not peer_closed.done() and not gone.done():
                transport.disconnect()
                print(f"closed: no close reply within {CLOSE_REPLY_TIMEOUT:g} s", file=sys.stderr)
                return 1
        # the server closes TCP after the handshake (RFC 6455 §7.1.1); don't wait forever
        await _wait_disconnected(transport, 1.0)
    finally:
        for task in (sender, peer_closed, gone):
            task.cancel()
        await asyncio.gather(sender, peer_closed, gone, return_exceptions=True)
        sys.stdout.flush()
    line, status = _close_outcome(transport)
    print(f"closed: {line}", file=sys.stderr)
    return status


def _ssl_context(url: str, insecure: bool) -> ssl.SSLContext | None:
    if not url.lower().startswith("wss:"):
        return None
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def cmd_client(args: argparse.Namespace) -> int:
    import uvloop  # imported here so that importing this module stays cheap

    try:
        headers = build_headers(args.token, args.header, args.subprotocol)
    except UsageError as exc:
        print(f"wsgw client: {exc}", file=sys.stderr)
        return 2
    # picows logs the upgrade request (with the Authorization header) at debug level
    logging.getLogger(PICOWS_LOGGER).setLevel(logging.CRITICAL)
    return uvloop.run(
        _session(args.url, headers, args.subprotocol, _ssl_context(args.url, args.insecure))
    )
