"""Routing: request path → published API, and token key type → backend endpoint.

Compiled once per config load (Envoy's route table): the handshake does dict lookups only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from wsgw.config.models import Api, GatewayConfig, Tier
from wsgw.errors import Forbidden, NotFound
from wsgw.names import KEY_TYPES, config_key_type
from wsgw.pipeline.paths import normalise_path


@dataclass(frozen=True, slots=True)
class Backend:
    """A backend endpoint, parsed once."""

    url: str
    host: str
    port: int
    secure: bool
    base_path: str  # without a trailing slash; "" for the root

    @classmethod
    def parse(cls, url: str) -> Backend:
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        return cls(
            url=url,
            host=parts.hostname,
            port=parts.port or (443 if secure else 80),
            secure=secure,
            base_path=parts.path.rstrip("/"),
        )

    @property
    def host_header(self) -> str:
        default_port = 443 if self.secure else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"

    def target(self, suffix: str, query: str) -> str:
        path = (self.base_path + suffix) or "/"
        return f"{path}?{query}" if query else path


@dataclass(frozen=True, slots=True)
class Route:
    api: Api
    backends: dict[str, Backend | None]  # by key type
    api_tier: Tier | None  # the API's own policy (`apis[].throttle`), resolved at load

    def backend_for(self, key_type: str) -> Backend:
        backend = self.backends.get(key_type)
        if backend is None:
            raise Forbidden(
                f"API {self.api.name}:{self.api.version} has no {key_type.lower()} endpoint"
            )
        return backend


class RouteTable:
    def __init__(self, config: GatewayConfig) -> None:
        self._by_context: dict[str, dict[str, Route]] = {}
        self._default: dict[str, Route] = {}
        self._by_name: dict[tuple[str, str], Route] = {}
        for api in config.apis:
            route = Route(
                api=api,
                backends={
                    key_type: _maybe_backend(getattr(api.endpoints, config_key_type(key_type)))
                    for key_type in KEY_TYPES
                },
                api_tier=config.tiers[api.throttle] if api.throttle is not None else None,
            )
            self._by_context.setdefault(api.context, {})[api.version] = route
            self._by_name[(api.name, api.version)] = route
            if api.default_version:
                self._default[api.context] = route
        self._max_depth = max((c.count("/") for c in self._by_context), default=0)

    def named(self, name: str, version: str) -> Route | None:
        """The route of API `name` at `version` (what an open connection is rechecked by)."""
        return self._by_name.get((name, version))

    def match(self, path: str) -> tuple[Route, str]:
        """The route for a request path, and the path suffix to send to the backend.

        `/ctx/1.0/more` → (ctx 1.0, "/more"); `/ctx/more` → (ctx default version, "/more").
        The longest configured context wins; contexts and versions match whole segments.
        The path is normalised first (see paths.py: BadRequest for what is refused), so the
        suffix has no dot segment and never leads above the backend's base path.
        """
        segments = normalise_path(path).split("/")
        for depth in range(min(self._max_depth, len(segments) - 1), 0, -1):
            versions = self._by_context.get("/".join(segments[: depth + 1]))
            if versions is None:
                continue
            rest = segments[depth + 1 :]
            if rest and rest[0] in versions:
                return versions[rest[0]], _join(rest[1:])
            default = self._default.get("/".join(segments[: depth + 1]))
            if default is not None:
                return default, _join(rest)
            raise NotFound("no such API version")
        raise NotFound("no API at this path")


def _join(segments: list[str]) -> str:
    return "/" + "/".join(segments) if segments else ""


def _maybe_backend(url: str | None) -> Backend | None:
    return Backend.parse(url) if url else None
