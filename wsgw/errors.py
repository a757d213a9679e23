"""One error tree and the close codes the gateway sends. Each error knows how it goes on
the wire.

Before the upgrade an error becomes an HTTP response (``http_status``, and a JSON body
``{"error": error, "message": message}``); after it, a close frame (``close_code``, with
``message`` as its reason). ``message`` is written for the peer: never put ``str(exc)`` of a
foreign exception in it.
"""

from __future__ import annotations

from enum import IntEnum

from wsgw.names import CONNECTIONS_SCOPE


class CloseCode(IntEnum):
    """The close codes wsgw uses (RFC 6455 §7.4.1; 1012 and 1014 from the IANA registry;
    4008 is WSO2's, for the drop notice). The codec's own protocol-error codes are members
    too. wsgw's own codes for ending access on an open connection read 4xyy, where x says
    what the client should do, as the HTTP status class it mirrors: 1 (401) get a new token
    and reconnect, 3 (403) do not reconnect, 5 (503) reconnect later."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    ABNORMAL_CLOSURE = 1006  # never sent: what a connection without a close frame records
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # a reload changed the policy this connection was set up with
    BAD_GATEWAY = 1014
    CLOSED_BY_OPERATOR = 4000  # the admin port's default
    THROTTLED_OUT = 4008
    TOKEN_EXPIRED = 4101
    TOKEN_REVOKED = 4102
    KEY_REGENERATED = 4103
    SUBSCRIPTION_BLOCKED = 4301
    SUBSCRIPTION_REMOVED = 4302
    APPLICATION_REMOVED = 4303
    API_RETIRED = 4304
    API_REMOVED = 4305
    API_BLOCKED = 4501


class GatewayError(Exception):
    http_status: int = 500
    error: str = "server_error"
    close_code: int = CloseCode.INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra_headers(self) -> list[tuple[str, str]]:
        """Headers the HTTP refusal must carry besides the JSON body."""
        return []


class BadRequest(GatewayError):
    http_status = 400
    error = "bad_request"
    close_code = CloseCode.PROTOCOL_ERROR


class NotFound(GatewayError):
    http_status = 404
    error = "not_found"


class MethodNotAllowed(GatewayError):
    http_status = 405
    error = "method_not_allowed"


class HeadersTooLarge(GatewayError):
    http_status = 431
    error = "request_header_fields_too_large"


class PayloadTooLarge(GatewayError):
    http_status = 413
    error = "payload_too_large"


class UpgradeRequired(GatewayError):
    """A plain HTTP request where a WebSocket upgrade is expected (RFC 6455 §4.2.2)."""

    http_status = 426
    error = "upgrade_required"

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]


class InvalidToken(GatewayError):
    """Missing, malformed, badly signed or expired access token (RFC 6750 §3.1)."""

    http_status = 401
    error = "invalid_token"
    close_code = CloseCode.POLICY_VIOLATION

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", 'Bearer error="invalid_token"')]


class Forbidden(GatewayError):
    """The token is good but does not grant this API: no subscription, blocked, ..."""

    http_status = 403
    error = "forbidden"
    close_code = CloseCode.POLICY_VIOLATION


class TooManyRequests(GatewayError):
    http_status = 429
    error = "too_many_requests"
    close_code = CloseCode.POLICY_VIOLATION

    def __init__(
        self, message: str, retry_after_s: int = 1, scope: str = CONNECTIONS_SCOPE
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.scope = scope  # which limit refused: subscription | application | api

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after_s))]


class BadGateway(GatewayError):
    """The backend refused the connection or answered the upgrade with anything but 101."""

    http_status = 502
    error = "bad_gateway"
    close_code = CloseCode.BAD_GATEWAY


class GatewayTimeout(GatewayError):
    http_status = 504
    error = "gateway_timeout"
    close_code = CloseCode.BAD_GATEWAY


class ServiceUnavailable(GatewayError):
    http_status = 503
    error = "service_unavailable"
    close_code = CloseCode.GOING_AWAY

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def extra_headers(self) -> list[tuple[str, str]]:
        if self.retry_after_s is None:
            return []
        return [("Retry-After", str(self.retry_after_s))]


# ---- Why the gateway ends an open connection: each error's close code is the one sent.
class ConnectionEnded(GatewayError):
    """The gateway ends an upgraded connection; ``message`` is the close frame's reason."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class ProtocolViolation(ConnectionEnded):
    """A peer broke the protocol or a message limit: the codec's code and reason."""


class IdleTimeout(ConnectionEnded):
    close_code = CloseCode.GOING_AWAY


class ShuttingDown(ConnectionEnded):
    close_code = CloseCode.GOING_AWAY


class PeerGone(ConnectionEnded):
    """The other side went away without a close frame: this side is told 1001."""

    close_code = CloseCode.GOING_AWAY


class DurationReached(ConnectionEnded):
    close_code = CloseCode.NORMAL_CLOSURE


class RateLimitExceeded(ConnectionEnded):
    """`on_limit: close`."""

    close_code = CloseCode.POLICY_VIOLATION


class AccessEnded(ConnectionEnded):
    """Access was withdrawn while the connection was open (a reload, a revocation, the
    token's expiry): the close code says which, and what the client should do."""

    def __init__(self, message: str, close_code: int) -> None:
        super().__init__(message, close_code)


class ClosedByOperator(ConnectionEnded):
    """The admin port closed it (DELETE /connections)."""

    close_code = CloseCode.CLOSED_BY_OPERATOR


class PolicyChanged(ConnectionEnded):
    """A reload changed a limit in a way this connection cannot take on while open (it
    negotiated compression that a dropping limit would corrupt): reconnect to get it."""

    close_code = CloseCode.SERVICE_RESTART


class BackendFailed(ConnectionEnded):
    """The backend broke the protocol, sent a message over its limit, or vanished: the
    client is told 1014."""

    close_code = CloseCode.BAD_GATEWAY


class ConfigError(Exception):
    """A configuration or subscriptions file is invalid. Each line of ``str(exc)`` names
    the file, the line where known, and the field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
