"""`wsgw …` commands. Argument parsing only: each command lives in the module that owns
its job and is imported lazily, so `wsgw validate` does not pay for uvloop or picows."""

from __future__ import annotations

import argparse
import importlib
import sys

from wsgw.names import CONFIG_KEY_TYPES

DEFAULT_CONFIG = "wsgw.yaml"


def _command(target: str):
    """`module:function` → a callable taking the parsed args, imported on first use."""

    def run(args: argparse.Namespace) -> int:
        module_name, func_name = target.split(":")
        return getattr(importlib.import_module(module_name), func_name)(args)

    return run


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="gateway config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsgw", description="WebSocket API gateway")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gateway")
    _add_config(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    p.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other wsgw processes (SO_REUSEPORT; --workers implies it): "
        "start the new one, then SIGTERM the old one, for a restart that loses no connection",
    )
    p.set_defaults(run=_command("wsgw.app:cmd_serve"))

    p = sub.add_parser("validate", help="check the config and subscriptions files")
    _add_config(p)
    p.set_defaults(run=_command("wsgw.config.commands:cmd_validate"))

    p = sub.add_parser("schema", help="print the JSON Schema of both config files")
    p.set_defaults(run=_command("wsgw.config.commands:cmd_schema"))

    p = sub.add_parser("app", help="applications (developer portal)")
    app_sub = p.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    p = app_sub.add_parser("create", help="create an application")
    _add_config(p)
    p.add_argument("name")
    p.set_defaults(run=_command("wsgw.portal:cmd_app_create"))

    p = sub.add_parser("keys", help="signing key and application keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("init", help="create the token signing key")
    _add_config(p)
    p.add_argument("--algorithm", choices=["ed25519", "rsa"], default="ed25519")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(run=_command("wsgw.oauth.commands:cmd_keys_init"))
    p = keys_sub.add_parser("generate", help="(re)generate an application's consumer key/secret")
    _add_config(p)
    p.add_argument("name", help="application name")
    p.add_argument("--key-type", choices=CONFIG_KEY_TYPES, default="production")
    p.set_defaults(run=_command("wsgw.portal:cmd_keys_generate"))

    p = sub.add_parser("subscribe", help="subscribe an application to an API")
    _add_config(p)
    p.add_argument("name", help="application name")
    p.add_argument("api", metavar="API:VERSION")
    p.add_argument("--tier", required=True)
    p.set_defaults(run=_command("wsgw.portal:cmd_subscribe"))

    p = sub.add_parser("token", help="issue an access token locally (operator shortcut)")
    _add_config(p)
    p.add_argument("name", help="application name")
    p.add_argument("--key-type", choices=CONFIG_KEY_TYPES, default="production")
    p.set_defaults(run=_command("wsgw.oauth.commands:cmd_token"))

    p = sub.add_parser(
        "revoke",
        help="revoke access tokens before they expire",
        description="Add a revocation to security.revocations_file (every gateway watches "
        "it; with gateway.redis_url the cluster is told at once). --app and --consumer-key "
        "revoke every token issued up to the current second, inclusive; token times have "
        "whole seconds, so the command returns only once that second is over, and a token "
        "issued after it returns is not revoked.",
    )
    _add_config(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--jti", help="one token, by its jti claim")
    what.add_argument("--app", metavar="NAME", help="every token of an application so far")
    what.add_argument("--consumer-key", metavar="KEY", help="every token of a consumer key so far")
    what.add_argument("--token", help="one token, given whole ('-': read it from stdin)")
    p.set_defaults(run=_command("wsgw.oauth.commands:cmd_revoke"))

    p = sub.add_parser("echo", help="run an echo WebSocket backend")
    p.add_argument("--listen", default="127.0.0.1:7001", metavar="HOST:PORT")
    p.add_argument("--prefix", default="", help="text put before every echoed text message")
    p.set_defaults(run=_command("wsgw.tools.echo:cmd_echo"))

    p = sub.add_parser("client", help="interactive WebSocket client")
    p.add_argument("url")
    p.add_argument("--token", help="access token, sent as Authorization: Bearer")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--subprotocol", action="append", default=[])
    p.add_argument("--insecure", action="store_true", help="do not verify a wss:// certificate")
    p.set_defaults(run=_command("wsgw.tools.client:cmd_client"))

    p = sub.add_parser("demo", help="the whole tutorial in one command")
    p.add_argument("--port", type=int, default=9099, help="gateway port")
    p.add_argument("--dir", help="keep the demo files here instead of a temp directory")
    p.set_defaults(run=_command("wsgw.tools.demo:cmd_demo"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `wsgw schema | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
