"""The floor: the gateway's socket work on uvloop with none of its checks.

    python bench/floorproxy.py --listen 127.0.0.1:9500 --backend 127.0.0.1:9300

Per connection it does what `wsgw serve` does on the wire and nothing else: read the
client's upgrade request (up to the blank line), connect to the backend, send it a fixed
upgrade request, read its 101 (up to the blank line), answer the client's key with a 101,
then copy bytes both ways, untouched (no frame parsing, no re-masking, no token, no
subscription, no limits, no counting), and close each side when the other closes.
Not a WebSocket proxy anyone should run: it is the cost of asyncio protocols on uvloop for
two TCP connections, which is what the gateway's own figures should be read against.

Like the gateway, it forwards the client's Sec-WebSocket-Extensions offer to the backend and
the backend's answer to the client (the compressed scenarios need permessage-deflate end to
end); it does not look at them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import raise_nofile  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BACKEND_REQUEST = (
    b"GET /echo HTTP/1.1\r\nHost: backend\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
EXTENSIONS = b"sec-websocket-extensions"


def extension_lines(head: bytes) -> bytes:
    """The Sec-WebSocket-Extensions header lines of an HTTP head, each ending in CRLF."""
    if EXTENSIONS not in head.lower():  # the common case: one scan, no split
        return b""
    return b"".join(
        line + b"\r\n"
        for line in head.split(b"\r\n")
        if line.partition(b":")[0].strip().lower() == EXTENSIONS
    )


def backend_request(client_head: bytes) -> bytes:
    offer = extension_lines(client_head)
    return BACKEND_REQUEST[:-2] + offer + b"\r\n" if offer else BACKEND_REQUEST


def switching_protocols(request: bytes, backend_head: bytes = b"") -> bytes:
    key = b""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extension_lines(backend_head) + b"\r\n"
    )


class BackendSide(asyncio.Protocol):
    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(backend_request(self.client.head))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.open:
            self.client.transport.write(data)  # type: ignore[union-attr]
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end >= 0:
            self.open = True
            self.client.backend_ready(self.head[: end + 4], self.head[end + 4 :])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class ClientSide(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend_addr = backend
        self.transport: asyncio.Transport | None = None
        self.backend: BackendSide | None = None
        self.head = b""
        self.early = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.open:
            self.backend.transport.write(data)  # type: ignore[union-attr]
            return
        if self.backend is not None:
            self.early += data
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end >= 0:
            self.early = self.head[end + 4 :]
            self.head = self.head[: end + 4]
            self.backend = BackendSide(self)
            asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.backend_addr
        try:
            await loop.create_connection(lambda: self.backend, host, port)  # type: ignore[arg-type, return-value]
        except OSError:
            self.transport.close()  # type: ignore[union-attr]

    def backend_ready(self, backend_head: bytes, early_from_backend: bytes) -> None:
        assert self.transport is not None and self.backend is not None
        self.transport.write(switching_protocols(self.head, backend_head))
        self.open = True
        if early_from_backend:
            self.transport.write(early_from_backend)
        if self.early:
            self.backend.transport.write(self.early)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()


async def main(host: str, port: int, backend: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: ClientSide(backend), host, port, backlog=1024)
    print(f"floor proxy on {host}:{port} -> {backend[0]}:{backend[1]}", flush=True)
    async with server:
        await stop.wait()


def cli() -> int:
    import uvloop

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9500", metavar="HOST:PORT")
    p.add_argument("--backend", required=True, metavar="HOST:PORT")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    bhost, bport = args.backend.rsplit(":", 1)
    raise_nofile()
    uvloop.run(main(host, int(port), (bhost, int(bport))))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
