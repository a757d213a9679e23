"""Configuration: the two files as frozen msgspec Structs, and their loaders.

``wsgw.yaml`` → :class:`GatewayConfig` (operator); ``subscriptions.yaml`` →
:class:`Subscriptions` (developer portal). Errors are :class:`wsgw.errors.ConfigError`.
"""

from wsgw.config.loader import (
    check_subscriptions,
    dump_subscriptions,
    load_config,
    load_subscriptions,
)
from wsgw.config.models import (
    Analytics,
    Api,
    AppKeys,
    Application,
    BackendTls,
    Base,
    Endpoints,
    Gateway,
    GatewayConfig,
    Keys,
    Security,
    Subscription,
    Subscriptions,
    Tier,
    TlsListener,
)

__all__ = [
    "Analytics",
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
    "check_subscriptions",
    "dump_subscriptions",
    "load_config",
    "load_subscriptions",
]
