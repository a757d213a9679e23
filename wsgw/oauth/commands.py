"""`wsgw keys init` and `wsgw token`.

`wsgw token` prints only the token on stdout, so `TOKEN=$(wsgw token NAME)` works; every
other line goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wsgw.errors import ConfigError
from wsgw.names import CONFIG_KEY_TYPES, KEY_TYPES, config_key_type
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.tokens import TokenIssuer

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
    expires_at = datetime.fromtimestamp(_now() + expires_in, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _fail(*lines: str) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return 2
