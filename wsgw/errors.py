"""One error tree. Each error knows how it goes on the wire.

Before the upgrade an error becomes an HTTP response (``http_status``, and a JSON body
``{"error": error, "message": message}``); after it, a close frame (``close_code``).
``message`` is written for the peer: never put ``str(exc)`` of a foreign exception in it.
"""

from __future__ import annotations


class GatewayError(Exception):
    http_status: int = 500
    error: str = "server_error"
    close_code: int = 1011  # Internal Error

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra_headers(self) -> list[tuple[str, str]]:
        """Headers the HTTP refusal must carry besides the JSON body."""
        return []


class BadRequest(GatewayError):
    http_status = 400
    error = "bad_request"
    close_code = 1002


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
    close_code = 1008  # Policy Violation

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", 'Bearer error="invalid_token"')]


class Forbidden(GatewayError):
    """The token is good but does not grant this API: no subscription, blocked, ..."""

    http_status = 403
    error = "forbidden"
    close_code = 1008


class TooManyRequests(GatewayError):
    http_status = 429
    error = "too_many_requests"
    close_code = 1008

    def __init__(self, message: str, retry_after_s: int = 1, scope: str = "connections") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.scope = scope  # which limit refused: subscription | application | api

    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after_s))]


class BadGateway(GatewayError):
    """The backend refused the connection or answered the upgrade with anything but 101."""

    http_status = 502
    error = "bad_gateway"
    close_code = 1014  # Bad Gateway


class GatewayTimeout(GatewayError):
    http_status = 504
    error = "gateway_timeout"
    close_code = 1014


class ServiceUnavailable(GatewayError):
    http_status = 503
    error = "service_unavailable"
    close_code = 1001


class ConfigError(Exception):
    """A configuration or subscriptions file is invalid. Each line of ``str(exc)`` names
    the file, the line where known, and the field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
