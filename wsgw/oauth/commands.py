"""`wsgw keys init`, `wsgw token` and `wsgw revoke`.

`wsgw token` prints only the token on stdout, so `TOKEN=$(wsgw token NAME)` works; every
other line goes to stderr. `wsgw revoke` never prints a token.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wsgw.config.loader import display_path
from wsgw.errors import ConfigError
from wsgw.names import CONFIG_KEY_TYPES, KEY_TYPES, config_key_type
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.revocation import (
    Revocation,
    record_revocations,
    revoke_application,
    revoke_consumer_key,
    revoke_jti,
    revoke_token,
)
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier

# The config's spelling of a key type (`--key-type`, the `keys` fields) → the token's.
_TOKEN_KEY_TYPE = {config_key_type(key_type): key_type for key_type in KEY_TYPES}


class CommandError(Exception):
    """A problem the operator can fix; the message says how."""


def cmd_keys_init(args: argparse.Namespace) -> int:
    from wsgw.config import load_config  # lazy: the config package pulls in msgspec/yaml

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(*exc.problems)
    path = Path(config.security.signing_key_file)
    if path.exists() and not args.force:
        print(f"signing key already exists: {path} (unchanged; --force replaces it)")
        return 0
    try:
        generate_signing_key(path, args.algorithm, force=args.force)
    except FileExistsError:  # created by someone else between the check and now
        print(f"signing key already exists: {path} (unchanged; --force replaces it)")
        return 0
    except OSError as exc:
        return _fail(f"{path}: cannot write signing key: {exc.strerror or exc}")
    print(f"created {args.algorithm} signing key: {path}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from wsgw.config import load_config, load_subscriptions

    try:
        config = load_config(args.config)
        subscriptions = load_subscriptions(config.gateway.subscriptions_file, config)
        token, expires_in = issue_token_for(config, subscriptions, args.name, args.key_type)
    except ConfigError as exc:
        return _fail(*exc.problems)
    except CommandError as exc:
        return _fail(str(exc))
    expires_at = _iso(_now() + expires_in)
    print(token)
    print(
        f"{args.key_type.lower()} token for {args.name}: expires in {expires_in}s ({expires_at})",
        file=sys.stderr,
    )
    return 0


def issue_token_for(config: Any, subscriptions: Any, name: str, key_type: str) -> tuple[str, int]:
    """An access token for application ``name`` as the token endpoint would issue it.

    ``key_type`` is "production" or "sandbox" (any case). Raises CommandError when the
    application or its keys do not exist, ConfigError when the signing key is unusable.
    """
    kind = key_type.lower()
    token_key_type = _TOKEN_KEY_TYPE.get(kind)
    if token_key_type is None:
        expected = " or ".join(CONFIG_KEY_TYPES)
        raise CommandError(f"key type must be {expected}, not {key_type!r}")
    app = next((a for a in subscriptions.applications if a.name == name), None)
    if app is None:
        raise CommandError(f"unknown application {name!r}: create it with `wsgw app create {name}`")
    keys = getattr(app.keys, kind, None) if app.keys is not None else None
    if keys is None:
        raise CommandError(
            f"application {name!r} has no {kind} keys: run "
            f"`wsgw keys generate {name} --key-type {kind}`"
        )
    key_file = Path(config.security.signing_key_file)
    if not key_file.exists():
        raise CommandError(f"signing key {key_file} not found: run `wsgw keys init`")
    issuer = TokenIssuer(
        load_signing_key(key_file), config.security.issuer, config.security.token_ttl_s
    )
    return issuer.issue(app.name, token_key_type, keys.consumer_key)


def cmd_revoke(args: argparse.Namespace) -> int:
    """`wsgw revoke (--jti JTI | --app NAME | --consumer-key KEY | --token TOKEN)`.

    The entry is merged into ``security.revocations_file`` (which every gateway watches)
    and, with ``gateway.redis_url``, published to the cluster at once. `--app` and
    `--consumer-key` revoke every token issued up to the current second, inclusive: `iat`
    has whole seconds, so the command returns only once that second is over. A token
    issued after it returns (by a gateway whose clock agrees) is then not revoked.
    """
    from wsgw.config import load_config

    try:
        config = load_config(args.config)
        now = time.time()
        entry, what = _revocation(config, args, now)
        new = record_revocations(config.security.revocations_file, [entry], now)
    except ConfigError as exc:
        return _fail(*exc.problems)
    except CommandError as exc:
        return _fail(f"error: {exc}")
    if entry.expires_at < now:
        print(f"{what}: expired already at {_iso(entry.expires_at)}, nothing to revoke")
        return 0
    # Published even when the file had it already: a rerun after an unreachable Redis
    # tells the cluster this time (merging it twice changes nothing).
    if config.gateway.redis_url is not None:
        _publish(config.gateway, entry, config.security.revocations_file)
    if entry.kind != "jti":
        wait_past_second(entry.issued_before)
    up_to = f" issued up to {_iso(entry.issued_before)}" if entry.kind != "jti" else ""
    done = "revoked" if new else "already revoked:"
    print(f"{done} {what}{up_to} (kept until {_iso(entry.expires_at)})")
    return 0


def _revocation(config: Any, args: argparse.Namespace, now: float) -> tuple[Revocation, str]:
    """The entry the arguments ask for, and how the output line names what it revokes."""
    ttl_s = config.security.token_ttl_s
    if args.token is not None:
        return _token_revocation(config, _read_token(args.token))
    if args.app is not None:
        _check_application(config, args.app)
        return revoke_application(args.app, now, ttl_s), f"tokens of application {args.app!r}"
    if args.consumer_key is not None:
        # Any key: one replaced by `wsgw keys generate` still has tokens worth revoking.
        key = _non_empty(args.consumer_key, "--consumer-key")
        return revoke_consumer_key(key, now, ttl_s), f"tokens of consumer key {key!r}"
    jti = _non_empty(args.jti, "--jti")
    return revoke_jti(jti, now, ttl_s), f"token {jti!r}"


def _token_revocation(config: Any, token: str) -> tuple[Revocation, str]:
    key_file = Path(config.security.signing_key_file)
    if not key_file.exists():
        raise CommandError(f"signing key {key_file} not found: run `wsgw keys init`")
    verifier = TokenVerifier(load_signing_key(key_file), config.security.issuer, cache_size=0)
    claims = verifier.claims_for_revocation(token)
    if claims is None:  # never the token itself in the message
        raise CommandError(
            "--token is not a token of this gateway (signature, issuer or claims do not "
            "match its signing key and issuer); use --jti if you know its jti"
        )
    return revoke_token(claims), f"token {claims.jti!r} of application {claims.application!r}"


def _read_token(value: str) -> str:
    """``-`` reads the token from standard input, out of the shell history and `ps`."""
    token = sys.stdin.readline().strip() if value == "-" else value.strip()
    return _non_empty(token, "--token")


def _check_application(config: Any, name: str) -> None:
    from wsgw.config import load_subscriptions

    path = config.gateway.subscriptions_file
    if load_subscriptions(path, config).application(name) is None:
        raise CommandError(f"unknown application {name!r}: not in {display_path(path)}")


def _non_empty(value: str, option: str) -> str:
    if not value:
        raise CommandError(f"{option} must not be empty")
    return value


def _publish(gateway: Any, entry: Revocation, revocations_file: str) -> None:
    """Tell every gateway of the cluster now; the file is written already, so a failure
    is a warning: the gateways learn of it later, by the file or the Redis reconnect."""
    from redis import RedisError

    from wsgw.pipeline.cluster.events import publish_revocations_sync

    redis_url = gateway.redis_url
    try:
        publish_revocations_sync(redis_url, [entry], prefix=gateway.redis_prefix)
    except (RedisError, OSError) as exc:  # unreachable or timed out (2 s)
        print(
            f"warning: not published to the cluster ({_redacted(str(exc), redis_url)}); the "
            f"gateways reading {display_path(revocations_file)} apply it when they reload it, "
            "the others when their Redis link reconnects",
            file=sys.stderr,
        )


def _redacted(message: str, redis_url: str) -> str:
    """``message`` without the URL's password, should the client library quote it."""
    password = urlsplit(redis_url).password
    return message.replace(password, "***") if password else message


def wait_past_second(second: int, clock: Callable[[], float] = time.time) -> None:
    """Return once ``clock`` reads ``second + 1`` or later: from then on a token's `iat`
    (whole seconds) is past ``second``."""
    while (left := second + 1 - clock()) > 0:
        time.sleep(left)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _fail(*lines: str) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return 2
