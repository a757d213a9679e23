"""permessage-deflate negotiation when the gateway may drop messages (RFC 7692 §7.1.1).

With context takeover (every peer's default), each compressed message may copy from the
ones before it; a receiver that never sees a dropped message inflates the next ones into
different bytes. So wherever a direction's limits can drop a message, the gateway makes
that direction's messages self-contained:

- client → backend: the answer to the client gains ``client_no_context_takeover`` (a server
  may add it to any answer, §7.1.1.2); the client must then compress each message alone.
- backend → client: every offer to the backend gains ``server_no_context_takeover``; a
  backend that accepts permessage-deflate must then answer with it (§7.1.1.1), or the
  handshake fails with 502.

The relay checks every compressed message of such a direction (a back-reference before the
message is a protocol error), so a peer that agrees and does otherwise is caught, not trusted.
Directions that cannot drop keep what the peers negotiated: context takeover compresses
small related messages much better, and a message held (``shape``) or a connection closed
(``close``) leaves nothing for a receiver to miss.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgw.errors import BadGateway

CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"


@dataclass(frozen=True, slots=True)
class SelfContained:
    """Which directions must carry self-contained compressed messages."""

    client: bool = False  # client → backend
    backend: bool = False  # backend → client

    @property
    def any(self) -> bool:
        return self.client or self.backend


# Nothing can be dropped: the peers' own negotiation stands.
AS_NEGOTIATED = SelfContained()


def parameter_names(extension: str) -> list[str]:
    """The parameter names of one extension offer or answer, lower-cased."""
    _, *params = extension.split(";")
    return [p.split("=", 1)[0].strip().lower() for p in params if p.strip()]


def with_parameter(extension: str, name: str) -> str:
    """``extension`` with the value-less parameter ``name``, added once."""
    if name in parameter_names(extension):
        return extension
    return f"{extension.strip()}; {name}"


def offers_for_backend(offers: tuple[str, ...], need: SelfContained) -> tuple[str, ...]:
    if not need.backend:
        return offers
    return tuple(with_parameter(offer, SERVER_NO_CONTEXT_TAKEOVER) for offer in offers)


def answer_for_client(answer: str, need: SelfContained) -> str:
    """The backend's accepted extension as the client gets it; checks what we asked for."""
    if need.backend and SERVER_NO_CONTEXT_TAKEOVER not in parameter_names(answer):
        raise BadGateway("backend accepted permessage-deflate without server_no_context_takeover")
    if need.client:
        return with_parameter(answer, CLIENT_NO_CONTEXT_TAKEOVER)
    return answer
