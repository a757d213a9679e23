"""The WebSocket opening handshake on both sides of the gateway (RFC 6455 §4).

Pure functions over parsed HTTP messages: what a client's upgrade request must hold, the
upgrade request the gateway sends to the backend, and what the backend's answer must hold.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from wsgw.errors import BadGateway, BadRequest, UpgradeRequired
from wsgw.http import Headers, Request, Response, accept_key, render_response
from wsgw.pipeline.compression import (
    AS_NEGOTIATED,
    SelfContained,
    answer_for_client,
    offers_for_backend,
)
from wsgw.pipeline.route import Backend

# The one extension whose wire effects (RSV1 on a message's first frame) the relay checks.
# Other offers are not forwarded: the gateway cannot vouch for frames it does not understand.
PERMESSAGE_DEFLATE = "permessage-deflate"


@dataclass(frozen=True, slots=True)
class ClientOffer:
    """What the client asked for in its upgrade request."""

    key: str
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]  # permessage-deflate offers only


@dataclass(frozen=True, slots=True)
class BackendAnswer:
    subprotocol: str | None
    extensions: str | None  # as the client gets it
    permessage_deflate: bool
    self_contained: SelfContained  # what the relay checks of the compressed messages


def check_client_upgrade(request: Request) -> ClientOffer:
    headers = request.headers
    if request.method != "GET":
        raise UpgradeRequired("WebSocket upgrade requires GET")
    if not request.is_upgrade or "websocket" not in _lower_tokens(headers, "upgrade"):
        raise UpgradeRequired("this is a WebSocket API: send an upgrade request")
    if "upgrade" not in _lower_tokens(headers, "connection"):
        raise UpgradeRequired("Connection header must contain Upgrade")
    if headers.get("sec-websocket-version") != "13":
        raise UpgradeRequired("unsupported Sec-WebSocket-Version (13 required)")
    key = headers.get("sec-websocket-key")
    if headers.count("sec-websocket-key") != 1 or key is None or not _valid_key(key):
        raise BadRequest("invalid Sec-WebSocket-Key")
    if headers.count("host") != 1:
        raise BadRequest("exactly one Host header is required")
    return ClientOffer(
        key=key,
        subprotocols=tuple(headers.tokens("sec-websocket-protocol")),
        extensions=tuple(
            offer
            for offer in headers.tokens("sec-websocket-extensions")
            if _extension_name(offer) == PERMESSAGE_DEFLATE
        ),
    )


def backend_upgrade_request(
    backend: Backend,
    target: str,
    offer: ClientOffer,
    request: Request,
    client_ip: str,
    client_secure: bool,
    self_contained: SelfContained = AS_NEGOTIATED,
) -> tuple[bytes, str]:
    """The upgrade request for the backend, and the Sec-WebSocket-Key it carries.

    The client's key is not reused: the backend's accept value is checked against ours.
    Authorization is never forwarded; the access token was already taken out of `target`.
    The permessage-deflate offers ask for what `self_contained` needs (compression.py).
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    headers = request.headers
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {backend.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, wire_name in (("origin", "Origin"), ("user-agent", "User-Agent")):
        value = headers.get(name)
        if value is not None:
            lines.append(f"{wire_name}: {value}")
    if offer.subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(offer.subprotocols))
    if offer.extensions:
        offers = offers_for_backend(offer.extensions, self_contained)
        lines.append("Sec-WebSocket-Extensions: " + ", ".join(offers))
    forwarded_for = headers.tokens("x-forwarded-for")
    lines.append("X-Forwarded-For: " + ", ".join([*forwarded_for, client_ip]))
    lines.append("X-Forwarded-Proto: " + ("https" if client_secure else "http"))
    host = headers.get("host")
    if host:
        lines.append(f"X-Forwarded-Host: {host}")
    for line in lines:
        if "\r" in line or "\n" in line:  # httptools rejects these; belt and braces
            raise BadRequest("invalid header value")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), key


def check_backend_answer(
    response: Response,
    key: str,
    offer: ClientOffer,
    self_contained: SelfContained = AS_NEGOTIATED,
) -> BackendAnswer:
    if response.status != 101:
        raise BadGateway(f"backend refused the WebSocket upgrade (HTTP {response.status})")
    headers = response.headers
    if (
        "websocket" not in _lower_tokens(headers, "upgrade")
        or "upgrade" not in _lower_tokens(headers, "connection")
        or headers.get("sec-websocket-accept") != accept_key(key)
    ):
        raise BadGateway("backend answered with an invalid WebSocket handshake")
    subprotocol = headers.get("sec-websocket-protocol")
    if subprotocol is not None and subprotocol not in offer.subprotocols:
        raise BadGateway("backend chose a subprotocol the client did not offer")
    extension_values = headers.tokens("sec-websocket-extensions")
    if any(_extension_name(e) != PERMESSAGE_DEFLATE for e in extension_values) or (
        extension_values and not offer.extensions
    ):
        raise BadGateway("backend chose an extension the client did not offer")
    if len(extension_values) > 1:
        raise BadGateway("backend accepted permessage-deflate twice")
    if not extension_values:
        return BackendAnswer(subprotocol, None, False, AS_NEGOTIATED)
    return BackendAnswer(
        subprotocol=subprotocol,
        extensions=answer_for_client(extension_values[0], self_contained),
        permessage_deflate=True,
        self_contained=self_contained,
    )


def client_switching_protocols(offer: ClientOffer, answer: BackendAnswer) -> bytes:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(offer.key)),
    ]
    if answer.subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", answer.subprotocol))
    if answer.extensions is not None:
        headers.append(("Sec-WebSocket-Extensions", answer.extensions))
    return render_response(101, headers)


def _lower_tokens(headers: Headers, name: str) -> list[str]:
    return [t.lower() for t in headers.tokens(name)]


def _extension_name(offer: str) -> str:
    return offer.split(";", 1)[0].strip().lower()


def _valid_key(key: str) -> bool:
    """16 bytes in strict base64 (RFC 6455 §4.1), as websockets and picows check it."""
    try:
        return len(binascii.a2b_base64(key.encode("ascii"), strict_mode=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False
