"""How long a revocation made at one gateway process takes to close a connection open on
another: two `wsgw serve` processes sharing one Redis (and nothing else: each has its own
revocation list file, so only Redis carries the event), a websockets client (its defaults)
on B, RFC 7009 POST /oauth2/revoke at A. Prints a transcript and the delays.

    python bench/revoke_across.py [--redis redis://127.0.0.1:6379/0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wsgw(*argv: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "wsgw", *argv], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


def config(port: int, admin: int, echo: int, redis_url: str, prefix: str, name: str) -> dict:
    return {
        "gateway": {
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{admin}",
            "subscriptions_file": "subscriptions.yaml",
            "redis_url": redis_url,
            "redis_prefix": prefix,
            "drain_s": 0,
            "drain_close_window_s": 0,
        },
        "security": {"signing_key_file": "keys/signing.pem", "revocations_file": f"{name}.json"},
        "tiers": {"Gold": {}},
        "apis": [
            {
                "name": "EchoWebSocket",
                "context": "/echowebsocket",
                "version": "1.0",
                "endpoints": {"production": f"ws://127.0.0.1:{echo}"},
                "tiers": ["Gold"],
            }
        ],
    }


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wsgw-revoke-"))
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    echo = free_port()
    ports = {name: (free_port(), free_port()) for name in ("A", "B")}
    for name, (port, admin) in ports.items():
        raw = config(port, admin, echo, args.redis, prefix, name)
        (work / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    wsgw("keys", "init", "-c", "A.yaml", cwd=work)
    wsgw("app", "create", "App", "-c", "A.yaml", cwd=work)
    keys = yaml.safe_load(wsgw("keys", "generate", "App", "-c", "A.yaml", cwd=work))
    wsgw("subscribe", "App", "EchoWebSocket:1.0", "--tier", "Gold", "-c", "A.yaml", cwd=work)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "wsgw", "echo", "--listen", f"127.0.0.1:{echo}"],
            cwd=work,
            env=env,
        )
    ]
    for name in ("A", "B"):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "wsgw", "serve", "-c", f"{name}.yaml"],
                cwd=work,
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        await wait_listening(echo)
        for port, admin in ports.values():
            await wait_listening(port)
            await wait_listening(admin)
        a, b = ports["A"][0], ports["B"][0]
        basic = base64.b64encode(f"{keys['consumer_key']}:{keys['consumer_secret']}".encode())
        auth = {"Authorization": f"Basic {basic.decode()}"}
        print(f"gateway A: ws://127.0.0.1:{a}  gateway B: ws://127.0.0.1:{b}  (Redis {args.redis})")
        delays = []
        async with aiohttp.ClientSession(headers=auth) as http:
            for i in range(args.rounds):
                async with http.post(
                    f"http://127.0.0.1:{a}/oauth2/token", data={"grant_type": "client_credentials"}
                ) as r:
                    token = (await r.json())["access_token"]
                url = f"ws://127.0.0.1:{b}/echowebsocket/1.0"
                async with connect(
                    url, additional_headers={"Authorization": f"Bearer {token}"}
                ) as ws:
                    await ws.send(f"round {i}: hello through B")
                    print(f"[B] < {await ws.recv()}")
                    started = time.monotonic()
                    async with http.post(
                        f"http://127.0.0.1:{a}/oauth2/revoke", data={"token": token}
                    ) as r:
                        print(f"[A] POST /oauth2/revoke -> {r.status}")
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)
                    delay_ms = (time.monotonic() - started) * 1000
                    delays.append(delay_ms)
                    print(
                        f"[B] closed: code {ws.close_code} reason {ws.close_reason!r}, "
                        f"{delay_ms:.1f} ms after the revoke request was sent to A"
                    )
        delays.sort()
        print(
            f"delays (ms): min {delays[0]:.1f}, median {delays[len(delays) // 2]:.1f}, "
            f"max {delays[-1]:.1f}"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
