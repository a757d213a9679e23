"""`wsgw validate` and `wsgw schema`."""

from __future__ import annotations

import argparse
import os
import sys

import msgspec

from wsgw.config.loader import (
    config_file_problems,
    display_path,
    load_config,
    load_subscriptions,
)
from wsgw.config.models import GatewayConfig, Subscriptions
from wsgw.errors import ConfigError


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the config file and its subscriptions file. 0 if usable, 2 if not."""
    notes: list[str] = []
    try:
        config = load_config(args.config)
        problems = config_file_problems(config, args.config)
        subs_file = config.gateway.subscriptions_file
        # Like the signing key, the subscriptions file is created by a wsgw command, so
        # its absence is a step still to do, not a mistake in the config.
        if os.path.exists(subs_file):
            try:
                subs = load_subscriptions(subs_file, config)
            except ConfigError as exc:
                problems += exc.problems
        else:
            subs = Subscriptions()
            notes.append(f"{display_path(subs_file)} missing: run wsgw app create NAME")
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        _check_runtime_files(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if not os.path.exists(config.security.signing_key_file):
        notes.append("signing key missing: run wsgw keys init")
    published = sum(api.status == "PUBLISHED" for api in config.apis)
    n_subs = sum(len(app.subscriptions) for app in subs.applications)
    line = (
        f"{display_path(args.config)}: OK — {_count(len(config.apis), 'API')} "
        f"({published} published), {_count(len(config.tiers), 'tier')}, "
        f"{_count(len(subs.applications), 'application')}, {_count(n_subs, 'subscription')}"
    )
    print("; ".join([line, *notes]))
    return 0


def _check_runtime_files(config: GatewayConfig) -> None:
    """ConfigError for what the gateway would refuse in the files it reads besides these
    two: a signing key that does not load, a revocation list that does not parse (as a
    reload reads them)."""
    from wsgw.oauth.revocation import load_revocations
    from wsgw.reload import signing_key

    if os.path.exists(config.security.signing_key_file):
        signing_key(config)
    load_revocations(config.security.revocations_file)


def schemas() -> dict[str, object]:
    """The JSON Schema of each file, keyed by its default file name."""
    return {
        "wsgw.yaml": msgspec.json.schema(GatewayConfig),
        "subscriptions.yaml": msgspec.json.schema(Subscriptions),
    }


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of both files as one JSON document."""
    print(msgspec.json.format(msgspec.json.encode(schemas()), indent=2).decode())
    return 0
