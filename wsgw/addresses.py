"""What counts as one client address for the per-address limits (the pending-connection cap,
the token endpoint's failure limit): one definition, so that both see the same client."""

from __future__ import annotations

import socket

_V4_MAPPED = bytes(10) + b"\xff\xff"


def address_key(address: str | None) -> str | None:
    """IPv4 as is, IPv6 by /64 (an IPv4-mapped one as IPv4). None for no IP address (the
    relay's "?" when the socket has no peer name): no address limit then, rather than one
    shared by every such client. inet_pton, not ipaddress: a microsecond, not tens."""
    if address is None:
        return None
    try:
        if ":" not in address:
            socket.inet_pton(socket.AF_INET, address)
            return address
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])
    except (OSError, ValueError):
        return None
    if packed[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"
