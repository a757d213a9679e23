"""`wsgw demo`: the "Create a WebSocket API" tutorial in one command.

Writes a signing key, the EchoWebSocket config and DefaultApplication (subscribed with Gold,
production and sandbox keys) into a directory, starts echo backends for production and
sandbox and the gateway in this process, prints how to call it, and runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEMO_CONFIG = """\
# wsgw demo: the EchoWebSocket API of the WSO2 tutorial
gateway:
  listen: "127.0.0.1:{port}"
  admin_listen: "127.0.0.1:{admin_port}"
  subscriptions_file: subscriptions.yaml
security:
  signing_key_file: keys/signing.pem
  token_ttl_s: 3600
tiers:
  Gold:      {{messages_per_minute: 5000}}
  Silver:    {{messages_per_minute: 2000}}
  Bronze:    {{messages_per_minute: 1000}}
  Unlimited: {{}}
apis:
  - name: EchoWebSocket
    context: /echowebsocket
    version: "1.0"
    default_version: true
    endpoints:
      production: "ws://127.0.0.1:{production_port}"
      sandbox: "ws://127.0.0.1:{sandbox_port}"
    tiers: [Gold, Unlimited]
    status: PUBLISHED
"""


@dataclass(frozen=True)
class DemoFiles:
    config_path: Path
    production: tuple[str, str]  # consumer key, consumer secret
    sandbox: tuple[str, str]


def write_demo_files(
    directory: Path, port: int, admin_port: int, production_port: int, sandbox_port: int
) -> DemoFiles:
    """Create config, key, application, keys and subscription; return what to print."""
    from wsgw.config import load_config
    from wsgw.oauth.keys import generate_signing_key
    from wsgw.portal import create_app, generate_keys, subscribe

    config_path = directory / "wsgw.yaml"
    config_path.write_text(
        DEMO_CONFIG.format(
            port=port,
            admin_port=admin_port,
            production_port=production_port,
            sandbox_port=sandbox_port,
        )
    )
    config = load_config(config_path)
    generate_signing_key(config.security.signing_key_file, force=True)
    (directory / "subscriptions.yaml").unlink(missing_ok=True)
    create_app(config, "DefaultApplication")
    production = generate_keys(config, "DefaultApplication", "production")
    sandbox = generate_keys(config, "DefaultApplication", "sandbox")
    subscribe(config, "DefaultApplication", "EchoWebSocket", "1.0", "Gold")
    return DemoFiles(config_path, production, sandbox)


async def run_demo(port: int, directory: Path, stop: asyncio.Event | None = None) -> None:
    from wsgw.app import Gateway
    from wsgw.config import load_config
    from wsgw.tools.echo import start_echo_server

    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    production_backend = await start_echo_server("127.0.0.1", 0, prefix="[production] ")
    sandbox_backend = await start_echo_server("127.0.0.1", 0, prefix="[sandbox] ")
    files = write_demo_files(
        directory,
        port,
        port + 802 if port + 802 < 65536 else 0,  # 9099 → 9901, the documented admin port
        production_backend.sockets[0].getsockname()[1],
        sandbox_backend.sockets[0].getsockname()[1],
    )
    config = load_config(files.config_path)
    gateway = Gateway(config)
    await gateway.start()
    token, expires_in = gateway.issuer.issue(
        "DefaultApplication", "PRODUCTION", files.production[0]
    )
    sandbox_token, _ = gateway.issuer.issue("DefaultApplication", "SANDBOX", files.sandbox[0])
    url = f"ws://{gateway.address}/echowebsocket/1.0"
    consumer_key, consumer_secret = files.production
    print(
        f"""
wsgw demo: EchoWebSocket 1.0 is published; DefaultApplication is subscribed with Gold.
  files          {directory}  (wsgw.yaml, subscriptions.yaml, keys/)
  gateway        ws://{gateway.address}   admin http://{gateway.admin_address}/health
  API URL        {url}

Production access token (valid {expires_in} s):
{token}

Talk to the API through the gateway (type lines; Ctrl-D to close):
  wsgw client {url} --token {token}

Sandbox token (routes to the sandbox backend):
  wsgw client {url} --token {sandbox_token}

Get a fresh token with the client credentials grant:
  curl -s -u {shlex.quote(f"{consumer_key}:{consumer_secret}")} \\
       -d grant_type=client_credentials http://{gateway.address}/oauth2/token

Ctrl-C stops the demo.""",
        flush=True,
    )
    await stop.wait()
    await gateway.stop()
    production_backend.close()
    sandbox_backend.close()


def cmd_demo(args) -> int:  # noqa: ANN001
    import uvloop

    from wsgw.app import configure_logging
    from wsgw.tools.echo import PICOWS_LOGGER

    configure_logging("info")
    # The echo backends' per-connection lines would bury the gateway's own.
    logging.getLogger(PICOWS_LOGGER).setLevel(logging.WARNING)
    if args.dir:
        directory = Path(args.dir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        uvloop.run(run_demo(args.port, directory))
        return 0
    with tempfile.TemporaryDirectory(prefix="wsgw-demo-") as tmp:
        try:
            uvloop.run(run_demo(args.port, Path(tmp)))
        except OSError as err:
            print(f"wsgw demo: {err.strerror or err}", file=sys.stderr)
            return 1
    return 0
