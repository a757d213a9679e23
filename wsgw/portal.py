"""Developer-portal commands: applications, their keys, their subscriptions.

Each edit is read → change → validate (both files) → atomic write, under an exclusive
lock so two commands run at once cannot lose each other's change. A consumer secret is
shown once and never stored: the file keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from collections.abc import Callable

import msgspec

from wsgw.config.loader import (
    check_subscriptions,
    display_path,
    dump_subscriptions,
    load_config,
    load_subscriptions,
    locked_directory,
)
from wsgw.config.models import (
    NAME_RE,
    PATTERN_HELP,
    Application,
    GatewayConfig,
    Keys,
    Name,
    Subscription,
    Subscriptions,
)
from wsgw.errors import ConfigError
from wsgw.names import CONFIG_KEY_TYPES

__all__ = [
    "cmd_app_create",
    "cmd_keys_generate",
    "cmd_subscribe",
    "create_app",
    "generate_keys",
    "hash_secret",
    "subscribe",
]

_MAX_KEY_ATTEMPTS = 8  # a 144-bit random key colliding even once is already absurd


def hash_secret(secret: str) -> str:
    """What the subscriptions file stores for a consumer secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --- functions --------------------------------------------------------------------------


def create_app(config: GatewayConfig, name: str) -> None:
    """Add an application with no keys and no subscriptions."""
    _check_name(name, "application name")

    def change(subs: Subscriptions) -> Subscriptions:
        if subs.application(name) is not None:
            raise ValueError(f"application {name!r} already exists")
        return msgspec.structs.replace(
            subs, applications=[*subs.applications, Application(name=name)]
        )

    _edit(config, change)


def generate_keys(config: GatewayConfig, name: str, key_type: str) -> tuple[str, str]:
    """Issue a new consumer key and secret for ``key_type``; returns (key, secret).
    Replaces any previous pair of that type, so the old secret stops working."""
    if key_type not in CONFIG_KEY_TYPES:
        raise ValueError(f"key type must be one of {', '.join(CONFIG_KEY_TYPES)}, not {key_type!r}")
    consumer_secret = secrets.token_urlsafe(32)
    consumer_key = ""

    def change(subs: Subscriptions) -> Subscriptions:
        nonlocal consumer_key
        app = _application(subs, name)
        used = {
            keys.consumer_key
            for other in subs.applications
            for kind in CONFIG_KEY_TYPES
            if (keys := getattr(other.keys, kind)) is not None
        }
        for _ in range(_MAX_KEY_ATTEMPTS):
            consumer_key = secrets.token_urlsafe(18)
            if consumer_key not in used:
                break
        keys = Keys(consumer_key=consumer_key, consumer_secret_sha256=hash_secret(consumer_secret))
        app_keys = msgspec.structs.replace(app.keys, **{key_type: keys})
        return _replace_app(subs, msgspec.structs.replace(app, keys=app_keys))

    _edit(config, change)
    return consumer_key, consumer_secret


def subscribe(config: GatewayConfig, name: str, api: str, version: str, tier: str) -> None:
    """Subscribe application ``name`` to ``api`` ``version`` at ``tier``; if already
    subscribed, change the tier (a BLOCKED subscription stays blocked)."""
    _subscribe(config, name, api, version, tier)


def _subscribe(config: GatewayConfig, name: str, api: str, version: str, tier: str) -> str | None:
    """:func:`subscribe`, returning the tier it replaced (None for a new subscription)."""
    target = config.api(api, version)
    if target is None:
        versions = [a.version for a in config.apis if a.name == api]
        hint = f" (versions: {', '.join(versions)})" if versions else ""
        raise ValueError(f"no API {api}:{version} in the gateway config{hint}")
    # As in WSO2 API Manager: only a PUBLISHED API takes subscriptions.
    if target.status != "PUBLISHED":
        raise ValueError(
            f"API {target.ref} is {target.status}: only a PUBLISHED API can be subscribed to"
        )
    if tier not in target.tiers:
        offered = ", ".join(target.tiers) or "none"
        raise ValueError(f"API {target.ref} does not offer tier {tier!r} (offers: {offered})")

    before: str | None = None

    def change(subs: Subscriptions) -> Subscriptions:
        nonlocal before
        app = _application(subs, name)
        existing = app.subscription(api, version)
        before = existing.tier if existing else None
        if existing is None:
            new = [*app.subscriptions, Subscription(api=api, version=version, tier=tier)]
        else:
            new = [
                msgspec.structs.replace(s, tier=tier) if s is existing else s
                for s in app.subscriptions
            ]
        return _replace_app(subs, msgspec.structs.replace(app, subscriptions=new))

    _edit(config, change)
    return before


# --- editing the file -------------------------------------------------------------------


def _check_name(name: str, what: str) -> None:
    try:
        msgspec.convert(name, Name)
    except msgspec.ValidationError:
        raise ValueError(f"invalid {what} {name!r}: expected {PATTERN_HELP[NAME_RE]}") from None


def _application(subs: Subscriptions, name: str) -> Application:
    app = subs.application(name)
    if app is None:
        raise ValueError(f"no application {name!r} (create it with: wsgw app create {name})")
    return app


def _replace_app(subs: Subscriptions, app: Application) -> Subscriptions:
    return msgspec.structs.replace(
        subs, applications=[app if a.name == app.name else a for a in subs.applications]
    )


def _edit(config: GatewayConfig, change: Callable[[Subscriptions], Subscriptions]) -> None:
    path = os.path.abspath(config.gateway.subscriptions_file)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ConfigError([f"{display_path(path)}: directory {directory} does not exist"])
    with locked_directory(directory):
        current = load_subscriptions(path, config) if os.path.exists(path) else Subscriptions()
        changed = change(current)
        # Structs built in Python skip the field constraints; a round trip through
        # builtins applies them all before anything touches the file.
        try:
            changed = msgspec.convert(msgspec.to_builtins(changed), Subscriptions)
        except msgspec.ValidationError as exc:
            raise ConfigError([f"{display_path(path)}: {exc}"]) from None
        problems = check_subscriptions(config, changed)
        if problems:
            raise ConfigError([f"{display_path(path)}: {p}" for p in problems])
        dump_subscriptions(changed, path)


# --- commands ---------------------------------------------------------------------------


def _run(args: argparse.Namespace, action: Callable[[GatewayConfig], str]) -> int:
    """Load the config, run ``action``; print its line, or the errors and return 2."""
    try:
        config = load_config(args.config)
        line = action(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def cmd_app_create(args: argparse.Namespace) -> int:
    def action(config: GatewayConfig) -> str:
        create_app(config, args.name)
        where = display_path(config.gateway.subscriptions_file)
        return f"created application {args.name!r} in {where}"

    return _run(args, action)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    def action(config: GatewayConfig) -> str:
        key, secret = generate_keys(config, args.name, args.key_type)
        print(
            "warning: the consumer secret is shown only this once; wsgw keeps only its "
            "SHA-256. Store it now.",
            file=sys.stderr,
        )
        return f"consumer_key: {key}\nconsumer_secret: {secret}"

    return _run(args, action)


def cmd_subscribe(args: argparse.Namespace) -> int:
    def action(config: GatewayConfig) -> str:
        api, sep, version = args.api.partition(":")
        if not sep or not api or not version:
            raise ValueError(f"expected API:VERSION, e.g. Chat:1.0, not {args.api!r}")
        before = _subscribe(config, args.name, api, version, args.tier)
        if before is None:
            return f"subscribed {args.name!r} to {api}:{version} at tier {args.tier}"
        return f"changed {args.name!r} subscription to {api}:{version}: tier {before} → {args.tier}"

    return _run(args, action)
