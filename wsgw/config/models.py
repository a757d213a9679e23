"""The two config files as frozen msgspec Structs.

``wsgw.yaml`` (operator: listeners, keys, tiers, APIs) is :class:`GatewayConfig`;
``subscriptions.yaml`` (developer portal: applications, keys, subscriptions) is
:class:`Subscriptions`. Field constraints live in the ``Annotated`` aliases below so the
JSON Schema carries them; rules that span fields live in ``__post_init__``.

A ``__post_init__`` reports every broken rule at once: it raises one ``ValueError`` whose
lines read ``<problem> - at $<path relative to the struct>``. msgspec appends the struct's
own location, and the loader joins both into a full path with a line number.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from wsgw.names import CONFIG_KEY_TYPES, OnLimitAction

__all__ = [
    "Api",
    "AppKeys",
    "Application",
    "BackendTls",
    "Base",
    "Endpoints",
    "Gateway",
    "GatewayConfig",
    "Keys",
    "Security",
    "Subscription",
    "Subscriptions",
    "Tier",
    "TlsListener",
    "PATTERN_HELP",
    "ApiStatus",
    "OnLimitAction",
    "MAX_CONSUMER_KEY_CHARS",
]

# --- constrained scalar types -------------------------------------------------------------

_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
HOST_PORT_RE = rf"^{_HOST}:{_PORT}$"
# No ':' (the CLI splits API:VERSION on it) and no '/' or spaces (names appear in paths).
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
VERSION_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
# One or more non-empty segments: starts with '/', no '//', no trailing '/', no query; each
# segment as a normalised request path has it (pipeline/paths.py): unreserved characters and
# sub-delimiters, no '%' escape, no ';', and no '.' or '..' segment.
CONTEXT_RE = r"^(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+$"
WS_URL_RE = r"^wss?://[^\s/?#]+(?:[/?][^\s#]*)?$"
REDIS_URL_RE = r"^(?:redis|rediss|unix)://\S*$"
# URL-safe characters only: consumer keys travel in HTTP Basic auth, where ':' splits.
MAX_CONSUMER_KEY_CHARS = 256
CONSUMER_KEY_RE = rf"^[A-Za-z0-9._~-]{{1,{MAX_CONSUMER_KEY_CHARS}}}$"
SHA256_HEX_RE = r"^[0-9a-f]{64}$"

# What each pattern means, in words: the loader appends it to msgspec's regex message.
PATTERN_HELP: dict[str, str] = {
    HOST_PORT_RE: "HOST:PORT, e.g. 127.0.0.1:9099 or [::1]:9099, port 0-65535",
    NAME_RE: "1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
    VERSION_RE: "1-32 letters, digits, '_', '.', '-', starting with a letter or digit",
    CONTEXT_RE: "a path like /chat: starts with '/', no trailing '/', no '//', no query, "
    "no '%', ';' or '.'/'..' segment",
    WS_URL_RE: "a ws:// or wss:// URL with a host, e.g. ws://127.0.0.1:7001/chat",
    REDIS_URL_RE: "a redis://, rediss:// or unix:// URL",
    CONSUMER_KEY_RE: "letters, digits, '.', '_', '~', '-'",
    SHA256_HEX_RE: "64 lowercase hex digits (the SHA-256 of the consumer secret)",
}

HostPort = Annotated[str, Meta(pattern=HOST_PORT_RE, description="HOST:PORT")]
Name = Annotated[str, Meta(pattern=NAME_RE)]
Version = Annotated[str, Meta(pattern=VERSION_RE)]
Context = Annotated[str, Meta(pattern=CONTEXT_RE, description="URL path prefix, e.g. /chat")]
WsUrl = Annotated[str, Meta(pattern=WS_URL_RE, description="ws:// or wss:// backend URL")]
RedisUrl = Annotated[str, Meta(pattern=REDIS_URL_RE)]
FilePath = Annotated[
    str, Meta(min_length=1, description="relative paths are relative to the config file")
]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Seconds = Annotated[float, Meta(ge=0, le=86400)]
NonEmptyStr = Annotated[str, Meta(min_length=1)]
ControlRate = Annotated[int, Meta(ge=0, le=1_000_000, description="per second; 0: no limit")]
AdminConnections = Annotated[int, Meta(ge=1, le=4096, description="open at once")]
PendingPerAddress = Annotated[
    int, Meta(ge=0, le=1_000_000, description="per client address; 0: no limit")
]
ConsumerKey = Annotated[str, Meta(pattern=CONSUMER_KEY_RE)]
Sha256Hex = Annotated[str, Meta(pattern=SHA256_HEX_RE)]

ApiStatus = Literal["CREATED", "PUBLISHED", "BLOCKED", "DEPRECATED", "RETIRED"]
# wsgw.names.ON_LIMIT_ACTIONS as a type: msgspec needs the Literal to check the field.


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Common base: immutable, typos in field names are errors, keyword-only."""


class _Problems:
    """Collects broken cross-field rules so one load reports all of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, problem: str, path: str = "$") -> None:
        self.lines.append(f"{problem} - at {path}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ValueError("\n".join(self.lines))


def _port(host_port: str) -> int:
    return int(host_port.rsplit(":", 1)[1])


def _is_loopback(host_port: str) -> bool:
    host = host_port.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


# --- wsgw.yaml --------------------------------------------------------------------------


class TlsListener(Base, frozen=True, kw_only=True):
    """A TLS (wss://) listener."""

    listen: HostPort
    cert_file: FilePath
    key_file: FilePath


class BackendTls(Base, frozen=True, kw_only=True):
    """How the gateway verifies wss:// backends."""

    ca_file: FilePath | None = None
    verify: bool = True


class Gateway(Base, frozen=True, kw_only=True):
    """Listeners, limits and shared services of the gateway process."""

    listen: HostPort = "127.0.0.1:9099"
    admin_listen: HostPort = "127.0.0.1:9901"
    subscriptions_file: FilePath = "subscriptions.yaml"
    max_message_bytes: PositiveInt = 1048576
    max_backend_message_bytes: PositiveInt = 16777216
    # Pings and pongs a client may send per second (a bucket of one second's worth); 0: any.
    max_pings_per_second: ControlRate = 100
    idle_timeout_s: PositiveFloat = 600
    backend_handshake_timeout_s: PositiveFloat = 10
    close_timeout_s: PositiveFloat = 5
    # Admin port connections open at once; at the cap the oldest that has sent no request
    # is closed to make room (503 when none can be).
    max_admin_connections: AdminConnections = 64
    # Gateway-port connections one client address may have before their upgrade (request
    # or backend handshake under way); past it, 429 at accept. 0: no limit.
    max_pending_per_address: PendingPerAddress = 32
    tls: TlsListener | None = None
    backend_tls: BackendTls = BackendTls()
    redis_url: RedisUrl | None = None
    # What throttling does when Redis is unreachable: let traffic through, or refuse it.
    redis_failure: Literal["open", "closed"] = "open"
    # What every Redis key and channel of this gateway starts with: gateways with another
    # prefix share nothing through the same Redis (its limits, events and revocations).
    redis_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "wsgw"
    # SIGTERM: /health says 503 at once and new upgrades are refused; open connections keep
    # working for drain_s, then the rest are closed with 1001 spread over
    # drain_close_window_s (with jitter, so clients do not all reconnect at once). 0 and 0:
    # close everyone at once. A second SIGTERM always takes that fast path.
    drain_s: Seconds = 10
    drain_close_window_s: Seconds = 5
    # A file holding the bearer token the admin port requires (everything but /health).
    # Required when admin_listen is not a loopback address.
    admin_token_file: FilePath | None = None
    # Reload when wsgw.yaml, the subscriptions file, the signing key or the revocation list
    # changes on disk (checked every 0.25 s). SIGHUP and POST /reload work either way.
    watch_files: bool = True

    def __post_init__(self) -> None:
        problems = _Problems()
        if self.admin_token_file is None and not _is_loopback(self.admin_listen):
            problems.add(
                f"admin_listen {self.admin_listen} is not a loopback address: set "
                "gateway.admin_token_file (the admin port then requires that bearer token)",
                "$.admin_listen",
            )
        # Port 0 asks the OS for a free port, so two of those never clash.
        seen: dict[str, str] = {}
        listeners = [("$.listen", self.listen), ("$.admin_listen", self.admin_listen)]
        if self.tls is not None:
            listeners.append(("$.tls.listen", self.tls.listen))
        for path, address in listeners:
            if _port(address) == 0:
                continue
            if address in seen:
                problems.add(f"address {address} is already used by {seen[address]}", path)
            else:
                seen[address] = path.removeprefix("$.")
        problems.raise_if_any()


class TokenFailures(Base, frozen=True, kw_only=True):
    """Failed client authentications POST /oauth2/token allows (wsgw/oauth/guard.py): at most
    `per_address` per client address (IPv6: per /64) and `per_client_id` per client id in any
    `window_s`; past either, 429 with Retry-After, even for the right secret. 0: no limit."""

    per_address: Annotated[int, Meta(ge=0, le=1000)] = 10
    per_client_id: Annotated[int, Meta(ge=0, le=1000)] = 5
    window_s: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    # Keys (addresses, client ids) remembered per limit; past it the least recently failed
    # key is forgotten.
    max_tracked: Annotated[int, Meta(ge=100, le=1_000_000)] = 10_000


class Security(Base, frozen=True, kw_only=True):
    """Access-token signing."""

    signing_key_file: FilePath = "keys/signing.pem"
    token_ttl_s: PositiveInt = 3600
    issuer: NonEmptyStr = "wsgw"
    token_failures: TokenFailures = TokenFailures()
    # Revoked tokens (POST /oauth2/revoke, `wsgw revoke`), each kept until it would have
    # expired anyway; written by the gateway and the CLI, read back at start and on change.
    revocations_file: FilePath = "revocations.json"


class Tier(Base, frozen=True, kw_only=True):
    """A throttling policy. An unset limit means unlimited."""

    messages_per_minute: PositiveInt | None = None
    bytes_per_minute: PositiveInt | None = None
    max_connections: PositiveInt | None = None
    max_connection_duration_s: PositiveFloat | None = None
    burst: NonNegativeInt = 0
    # Which direction's messages take tokens; `both` (WSO2's way) shares one budget.
    count: Literal["both", "client", "backend"] = "both"
    # What an exhausted limit does to a client's message, and to a backend's: the backend's
    # work is never thrown away unless the tier says so.
    on_limit: OnLimitAction = "drop"
    backend_on_limit: OnLimitAction = "shape"

    def counts(self, from_client: bool) -> bool:
        return self.count == "both" or self.count == ("client" if from_client else "backend")

    def action(self, from_client: bool) -> str:
        return self.on_limit if from_client else self.backend_on_limit


class Analytics(Base, frozen=True, kw_only=True):
    """Where analytics events go: JSON lines and/or a Redis Stream (needs gateway.redis_url)."""

    events_file: FilePath | None = None  # a path, or "-" for standard output
    redis_stream: NonEmptyStr | None = None
    stream_maxlen: PositiveInt = 100_000
    buffer_events: PositiveInt = 10_000


class Endpoints(Base, frozen=True, kw_only=True):
    """Backend URLs; the key type of the access token picks one."""

    production: WsUrl | None = None
    sandbox: WsUrl | None = None

    def __post_init__(self) -> None:
        problems = _Problems()
        for key_type in CONFIG_KEY_TYPES:
            url = getattr(self, key_type)
            if url is not None:
                problem = _ws_url_problem(url)
                if problem:
                    problems.add(problem, f"$.{key_type}")
        problems.raise_if_any()


def _ws_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable WebSocket backend URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if parts.scheme not in ("ws", "wss"):
        return f"URL {url!r} must use ws:// or wss://"
    if not parts.hostname:
        return f"URL {url!r} has no host"
    if parts.username is not None or parts.password is not None:
        return f"URL {url!r} must not carry credentials"
    return None


class Api(Base, frozen=True, kw_only=True):
    """A WebSocket API: where clients connect (context, version) and where it goes."""

    name: Name
    context: Context
    version: Version
    default_version: bool = False
    endpoints: Endpoints
    tiers: list[Name] = []
    status: ApiStatus = "PUBLISHED"
    auth: Literal["oauth2", "none"] = "oauth2"
    # Name of a tier applied to the API as a whole, on top of each subscription's tier.
    throttle: Name | None = None
    # What the token's `exp` does to a connection opened with it: `keep` (the token was
    # checked at the handshake; revocation and blocking end access), or `close` (4101).
    on_token_expiry: Literal["close", "keep"] = "keep"

    @property
    def ref(self) -> str:
        """``NAME:VERSION``, as the CLI spells it."""
        return f"{self.name}:{self.version}"

    def __post_init__(self) -> None:
        problems = _Problems()
        seen: set[str] = set()
        for i, tier in enumerate(self.tiers):
            if tier in seen:
                problems.add(f"tier {tier!r} is listed twice", f"$.tiers[{i}]")
            seen.add(tier)
        problems.raise_if_any()


class GatewayConfig(Base, frozen=True, kw_only=True):
    """wsgw.yaml: the gateway configuration."""

    gateway: Gateway = Gateway()
    security: Security = Security()
    tiers: dict[Name, Tier] = msgspec.field(default_factory=lambda: {"Unlimited": Tier()})
    apis: list[Api] = []
    analytics: Analytics = Analytics()

    def api(self, name: str, version: str) -> Api | None:
        """The API called ``name`` at ``version``, if defined."""
        for api in self.apis:
            if api.name == name and api.version == version:
                return api
        return None

    def __post_init__(self) -> None:
        problems = _Problems()
        defined = ", ".join(self.tiers) or "none"
        by_context_version: dict[tuple[str, str], int] = {}
        by_name_version: dict[tuple[str, str], int] = {}
        default_by_context: dict[str, int] = {}
        for i, api in enumerate(self.apis):
            for j, tier in enumerate(api.tiers):
                if tier not in self.tiers:
                    problems.add(
                        f"tier {tier!r} is not defined in tiers (defined: {defined})",
                        f"$.apis[{i}].tiers[{j}]",
                    )
            if api.throttle is not None and api.throttle not in self.tiers:
                problems.add(
                    f"tier {api.throttle!r} is not defined in tiers (defined: {defined})",
                    f"$.apis[{i}].throttle",
                )
            key = (api.context, api.version)
            if key in by_context_version:
                problems.add(
                    f"context {api.context} version {api.version} is already used by "
                    f"apis[{by_context_version[key]}]",
                    f"$.apis[{i}]",
                )
            else:
                by_context_version[key] = i
            key = (api.name, api.version)
            if key in by_name_version:
                problems.add(
                    f"API {api.ref} is already defined by apis[{by_name_version[key]}]",
                    f"$.apis[{i}]",
                )
            else:
                by_name_version[key] = i
            if api.default_version:
                if api.context in default_by_context:
                    problems.add(
                        f"context {api.context} already has a default version "
                        f"(apis[{default_by_context[api.context]}])",
                        f"$.apis[{i}].default_version",
                    )
                else:
                    default_by_context[api.context] = i
        if self.analytics.redis_stream is not None and self.gateway.redis_url is None:
            problems.add(
                "analytics.redis_stream needs gateway.redis_url", "$.analytics.redis_stream"
            )
        problems.raise_if_any()


# --- subscriptions.yaml -----------------------------------------------------------------


class Keys(Base, frozen=True, kw_only=True):
    """An OAuth2 client: the consumer key, and only the SHA-256 of its secret."""

    consumer_key: ConsumerKey
    consumer_secret_sha256: Sha256Hex


class AppKeys(Base, frozen=True, kw_only=True):
    """An application's keys, one pair per key type."""

    production: Keys | None = None
    sandbox: Keys | None = None


class Subscription(Base, frozen=True, kw_only=True):
    """An application's subscription to one API version at a tier."""

    api: Name
    version: Version
    tier: Name
    status: Literal["ACTIVE", "BLOCKED"] = "ACTIVE"


class Application(Base, frozen=True, kw_only=True):
    """A developer's application: its keys and its subscriptions."""

    name: Name
    # Application-level throttling tier, shared by all its subscriptions.
    tier: Name | None = None
    keys: AppKeys = AppKeys()
    subscriptions: list[Subscription] = []

    def subscription(self, api: str, version: str) -> Subscription | None:
        for sub in self.subscriptions:
            if sub.api == api and sub.version == version:
                return sub
        return None

    def __post_init__(self) -> None:
        problems = _Problems()
        seen: dict[tuple[str, str], int] = {}
        for i, sub in enumerate(self.subscriptions):
            key = (sub.api, sub.version)
            if key in seen:
                problems.add(
                    f"already subscribed to {sub.api}:{sub.version} (subscriptions[{seen[key]}])",
                    f"$.subscriptions[{i}]",
                )
            else:
                seen[key] = i
        problems.raise_if_any()


class Subscriptions(Base, frozen=True, kw_only=True):
    """subscriptions.yaml: applications, written by the developer-portal commands."""

    applications: list[Application] = []

    def application(self, name: str) -> Application | None:
        for app in self.applications:
            if app.name == name:
                return app
        return None

    def __post_init__(self) -> None:
        problems = _Problems()
        names: dict[str, int] = {}
        consumer_keys: dict[str, str] = {}
        for i, app in enumerate(self.applications):
            if app.name in names:
                problems.add(
                    f"application {app.name!r} is already defined by "
                    f"applications[{names[app.name]}]",
                    f"$.applications[{i}].name",
                )
            else:
                names[app.name] = i
            for key_type in CONFIG_KEY_TYPES:
                keys = getattr(app.keys, key_type)
                if keys is None:
                    continue
                where = f"applications[{i}].keys.{key_type}"
                if keys.consumer_key in consumer_keys:
                    problems.add(
                        f"consumer key is already used by {consumer_keys[keys.consumer_key]}",
                        f"$.{where}.consumer_key",
                    )
                else:
                    consumer_keys[keys.consumer_key] = where
        problems.raise_if_any()
