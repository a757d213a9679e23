"""Soak: the gateway's RSS and open fds over minutes of mixed, throttled and failing traffic."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from procs import Procs, child_env, free_port, python, run_checked, wait_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

HERE = Path(__file__).resolve()
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]  # the clients' source addresses
# Wrong secrets come from these two addresses only and for an application of their own, so a
# limit on failed token requests (per address, per client id) never blocks the good ones.
BAD_SOURCES = SOURCES[-2:]
GOOD_TOKEN_SOURCES = SOURCES[:-2]
NOTICE_PREFIX = '{"code":4008'  # the gateway's drop notice (orjson: no spaces)
SAMPLE_S = 5.0
BACKEND_KILL_EVERY_S = 30.0
REDIS_RESTART_EVERY_S = 60.0
REQUEST_TIMEOUT_S = 10.0  # the gateway's limit for a client's request head
ECHO_TIMEOUT_S = 20.0
SHAPE_TIMEOUT_S = 60.0
MAX_LOOPS = 1_000_000  # every worker loop is also bounded in count
MIB = 1024 * 1024

TIERS = {
    "Unlimited": "{}",
    "SoakDrop": "{messages_per_minute: 600, on_limit: drop}",
    "SoakShape": "{messages_per_minute: 1200, on_limit: shape}",
    "SoakClose": "{messages_per_minute: 120, on_limit: close}",
}
# application -> [(API:version, tier)]
APPS = {
    "SoakFree": [("Echo:1.0", "Unlimited"), ("Flaky:1.0", "Unlimited")],
    "SoakDrop": [("Echo:1.0", "SoakDrop")],
    "SoakShape": [("Echo:1.0", "SoakShape")],
    "SoakClose": [("Echo:1.0", "SoakClose")],
    "SoakIntruder": [],  # only ever asked for tokens with wrong secrets
}
WS_APPS = [app for app, subs in APPS.items() if subs]

WSGW_YAML = """\
gateway:
  listen: "127.0.0.1:{port}"
  admin_listen: "127.0.0.1:{admin}"
  subscriptions_file: subscriptions.yaml
  redis_url: "redis://127.0.0.1:{redis}/0"
  redis_failure: open
  backend_handshake_timeout_s: 5
security:
  signing_key_file: keys/signing.pem
  token_ttl_s: {ttl}
tiers:
{tiers}
apis:
  - name: Echo
    context: /echo
    version: "1.0"
    endpoints: {{production: "ws://127.0.0.1:{backend}"}}
    tiers: [{tier_names}]
  - name: Flaky
    context: /flaky
    version: "1.0"
    endpoints: {{production: "ws://127.0.0.1:{flaky}"}}
    tiers: [Unlimited]
"""


# ----------------------------------------------------------------------------- backend
async def _echo(ws: ServerConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            await ws.send(message)


async def run_echo_backend(port: int) -> None:
    """A websockets echo server with the library's default compression (context takeover)."""
    async with serve(_echo, "127.0.0.1", port, max_size=4 * MIB, ping_interval=None):
        await asyncio.Future()


# ------------------------------------------------------------------------------ record
@dataclass
class Record:
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    open_ws: int = 0

    def error(self, kind: str, detail: object = "") -> None:
        self.errors[kind] += 1
        seen = self.samples.setdefault(kind, [])
        if len(seen) < 3:
            seen.append(f"{time.strftime('%H:%M:%S')} {str(detail)[:160]}")

    def mismatch(self, what: str, sent: str | bytes, got: object) -> None:
        self.counts["mismatches"] += 1
        if len(self.mismatches) < 5:
            at = "?"
            if isinstance(got, type(sent)):
                pairs = enumerate(zip(sent, got, strict=False))
                at = next((i for i, (a, b) in pairs if a != b), "length")
            self.mismatches.append(
                f"{what}: first difference at {at}; sent {type(sent).__name__}[{len(sent)}] "
                f"{sent[:40]!r}, "
                f"got {type(got).__name__}[{len(got) if hasattr(got, '__len__') else '?'}] "
                f"{got[:40] if isinstance(got, str | bytes) else got!r}"
            )


def closed_code(err: websockets.ConnectionClosed) -> int:
    """The close code the peer sent (1006: none, the TCP connection just ended)."""
    return err.rcvd.code if err.rcvd is not None else 1006


# ---------------------------------------------------------------------------- messages
class Messages:
    """Per-worker message maker: every message differs (its own id, a random slice of a
    word corpus or random bytes), some are binary, some compress, some go fragmented."""

    def __init__(self, rng: random.Random, corpus: str, wid: int) -> None:
        self.rng = rng
        self.corpus = corpus
        self.wid = wid
        self.seq = 0

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(8, 512)
        if r < 0.9:
            return self.rng.randint(512, 8192)
        if r < 0.99:
            return self.rng.randint(8192, 65536)
        return self.rng.randint(65536, 131072)

    def make(self, small: bool = False) -> str | bytes:
        self.seq += 1
        n = self.rng.randint(8, 256) if small else self.size()
        head = f"soak {self.wid}.{self.seq} "
        kind = self.rng.random()
        if kind < 0.55:
            start = self.rng.randrange(len(self.corpus) - n)
            return head + self.corpus[start : start + n]
        if kind < 0.8:
            return head.encode() + self.rng.randbytes(n)
        start = self.rng.randrange(len(self.corpus) - n)
        return head.encode() + self.corpus[start : start + n].encode()

    async def send(self, ws: ClientConnection, message: str | bytes) -> bool:
        """Send whole or (one in five, when long enough) in 2-5 fragments; True if fragmented."""
        if len(message) >= 64 and self.rng.random() < 0.2:
            parts = self.rng.randint(2, 5)
            cuts = sorted(self.rng.sample(range(1, len(message)), parts - 1))
            bounds = [0, *cuts, len(message)]
            await ws.send([message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
            return True
        await ws.send(message)
        return False


def make_corpus(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(2000)]
    return " ".join(rng.choices(words, k=60000))  # ~390 KB of compressible text


# -------------------------------------------------------------------------------- soak
class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration = args.minutes * 60.0
        self.procs = Procs()
        self.dir = Path(tempfile.mkdtemp(prefix="wsgw-soak-"))
        self.rec = Record()
        self.rng = random.Random(args.seed)
        self.corpus = make_corpus(self.rng)
        self.port = self.admin = self.redis_port = self.backend_port = self.flaky_port = 0
        self.gateway: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None
        self.flaky: subprocess.Popen | None = None
        self.creds: dict[str, tuple[str, str]] = {}
        self.tokens: dict[str, str] = {}
        self.stop_at = 0.0
        self.t0 = 0.0
        self.samples: list[dict[str, Any]] = []
        self.gateway_died = ""

    # ----------------------------------------------------------------------- processes
    def start_redis(self) -> subprocess.Popen:
        proc = self.procs.spawn(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            log=self.dir / "redis.log",
        )
        wait_port(self.redis_port, proc=proc)
        return proc

    def start_backend(self, port: int, name: str) -> subprocess.Popen:
        proc = self.procs.spawn(
            [python(), str(HERE), "--echo-backend", str(port)], log=self.dir / f"{name}.log"
        )
        wait_port(port, proc=proc)
        return proc

    def kill_now(self, proc: subprocess.Popen | None) -> None:
        """SIGKILL (no close frames, no shutdown) to the process group, then reap."""
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.procs.children:
            self.procs.children.remove(proc)

    def setup(self) -> None:
        self.redis_port, self.port, self.admin = free_port(), free_port(), free_port()
        self.backend_port, self.flaky_port = free_port(), free_port()
        self.redis = self.start_redis()
        self.start_backend(self.backend_port, "backend")
        self.flaky = self.start_backend(self.flaky_port, "flaky")
        ttl = max(3600, int(self.duration) * 2 + 600)
        (self.dir / "wsgw.yaml").write_text(
            WSGW_YAML.format(
                port=self.port,
                admin=self.admin,
                redis=self.redis_port,
                ttl=ttl,
                tiers="\n".join(f"  {name}: {spec}" for name, spec in TIERS.items()),
                tier_names=", ".join(TIERS),
                backend=self.backend_port,
                flaky=self.flaky_port,
            )
        )
        wsgw = [python(), "-m", "wsgw"]
        run_checked([*wsgw, "keys", "init"], cwd=self.dir)
        for app, subs in APPS.items():
            run_checked([*wsgw, "app", "create", app], cwd=self.dir)
            out = run_checked(
                [*wsgw, "keys", "generate", app, "--key-type", "production"], cwd=self.dir
            )
            kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
            self.creds[app] = (kv["consumer_key"].strip(), kv["consumer_secret"].strip())
            for api, tier in subs:
                run_checked([*wsgw, "subscribe", app, api, "--tier", tier], cwd=self.dir)
        run_checked([*wsgw, "validate"], cwd=self.dir)
        extra = dict(kv.split("=", 1) for kv in self.args.gateway_env)
        self.gateway = self.procs.spawn(
            [*wsgw, "serve"], cwd=self.dir, log=self.dir / "gateway.log", env=child_env(extra)
        )
        wait_port(self.port, proc=self.gateway)
        wait_port(self.admin, proc=self.gateway)

    # ------------------------------------------------------------------------- helpers
    def src(self, rng: random.Random) -> str:
        return rng.choice(SOURCES)

    def running(self) -> bool:
        return time.monotonic() < self.stop_at and not self.gateway_died

    async def http(
        self, data: bytes, src: str, timeout_s: float = 5.0, port: int | None = None
    ) -> tuple[int | None, bytes]:
        """One raw request, read to EOF: (status or None if no status line, body)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port or self.port, local_addr=(src, 0)),
            timeout_s,
        )
        try:
            writer.write(data)
            raw = await asyncio.wait_for(reader.read(), timeout_s)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
            return int(parts[1]), body
        return None, raw

    async def token(self, app: str, src: str, secret: str | None = None) -> tuple[int | None, str]:
        key, good = self.creds[app]
        basic = base64.b64encode(f"{key}:{secret or good}".encode()).decode()
        form = b"grant_type=client_credentials"
        req = (
            f"POST /oauth2/token HTTP/1.1\r\nHost: soak\r\nAuthorization: Basic {basic}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + form
        status, body = await self.http(req, src)
        if status == 200:
            return status, str(json.loads(body)["access_token"])
        return status, ""

    async def open_ws(
        self, path: str, app: str, rng: random.Random, compress: bool
    ) -> ClientConnection:
        ws = await connect(
            f"ws://127.0.0.1:{self.port}{path}",
            additional_headers={"Authorization": f"Bearer {self.tokens[app]}"},
            compression="deflate" if compress else None,
            local_addr=(self.src(rng), 0),
            open_timeout=10,
            close_timeout=5,
            max_size=4 * MIB,
            ping_interval=20,
        )
        self.rec.counts["connections"] += 1
        self.rec.counts["connections_deflate" if compress else "connections_plain"] += 1
        return ws

    async def end_ws(self, ws: ClientConnection, rng: random.Random) -> None:
        """Close cleanly (two in three) or abort the transport without a close frame."""
        if rng.random() < 0.67:
            self.rec.counts["closes_clean"] += 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
        else:
            self.rec.counts["closes_abort"] += 1
            ws.transport.abort()

    # ------------------------------------------------------------------------- workers
    async def echo_worker(self, wid: int, flaky: bool) -> None:
        """Connect, a random number of rounds of 1-6 pipelined messages checked byte for
        byte, then a clean close or an abort; on /flaky the backend may vanish meanwhile."""
        rng = random.Random(self.args.seed * 1000 + wid)
        msgs = Messages(rng, self.corpus, wid)
        path = "/flaky/1.0" if flaky else "/echo/1.0"
        tag = "flaky" if flaky else "echo"
        for _ in range(MAX_LOOPS):
            if not self.running():
                return
            compress = rng.random() < 0.5
            try:
                ws = await self.open_ws(path, "SoakFree", rng, compress)
            except websockets.InvalidStatus as err:
                status = err.response.status_code
                if flaky and status == 502:
                    self.rec.counts["flaky_502"] += 1
                else:
                    self.rec.error(f"{tag}: handshake {status}", err)
                await asyncio.sleep(rng.uniform(0.2, 0.5))
                continue
            except Exception as err:  # noqa: BLE001 - every failure is counted
                self.rec.error(f"{tag}: connect {type(err).__name__}", err)
                await asyncio.sleep(0.5)
                continue
            self.rec.open_ws += 1
            rounds = rng.choice([0, 1, 3, 10, 30, 100])
            try:
                for _ in range(rounds):
                    if not self.running():
                        break
                    burst = 1 if rng.random() < 0.7 else rng.randint(2, 6)
                    sent = [msgs.make() for _ in range(burst)]
                    for message in sent:
                        if await msgs.send(ws, message):
                            self.rec.counts["fragmented"] += 1
                    for message in sent:
                        got = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT_S)
                        self.rec.counts["echoes"] += 1
                        if type(got) is not type(message) or got != message:
                            self.rec.mismatch(tag, message, got)
                    await asyncio.sleep(rng.uniform(0.01, 0.1))
                await self.end_ws(ws, rng)
            except websockets.ConnectionClosed as err:
                code = closed_code(err)
                if flaky and code in (1014, 1006):
                    self.rec.counts["flaky_vanished"] += 1
                else:
                    self.rec.error(f"{tag}: closed {code}", err)
            except TimeoutError:
                self.rec.error(f"{tag}: echo timeout", f"{ECHO_TIMEOUT_S}s without an echo")
                ws.transport.abort()
            finally:
                self.rec.open_ws -= 1
            await asyncio.sleep(rng.uniform(0.0, 0.3))

    async def drop_worker(self, wid: int) -> None:
        """SoakDrop (600/min, drop): one message in flight, paced above the limit; each
        reply is its echo or a drop notice."""
        rng = random.Random(self.args.seed * 1000 + wid)
        msgs = Messages(rng, self.corpus, wid)
        for _ in range(MAX_LOOPS):
            if not self.running():
                return
            try:
                ws = await self.open_ws("/echo/1.0", "SoakDrop", rng, rng.random() < 0.5)
            except Exception as err:  # noqa: BLE001 - every failure is counted
                self.rec.error(f"drop: connect {type(err).__name__}", err)
                await asyncio.sleep(0.5)
                continue
            self.rec.open_ws += 1
            try:
                for _ in range(rng.randint(20, 400)):
                    if not self.running():
                        break
                    message = msgs.make(small=rng.random() < 0.7)
                    await msgs.send(ws, message)
                    got = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT_S)
                    if isinstance(got, str) and got.startswith(NOTICE_PREFIX):
                        self.rec.counts["drop_notices"] += 1
                    else:
                        self.rec.counts["echoes"] += 1
                        if type(got) is not type(message) or got != message:
                            self.rec.mismatch("drop", message, got)
                    await asyncio.sleep(rng.uniform(0.01, 0.05))
                await self.end_ws(ws, rng)
            except websockets.ConnectionClosed as err:
                self.rec.error(f"drop: closed {closed_code(err)}", err)
            except TimeoutError:
                self.rec.error("drop: reply timeout", "neither echo nor notice")
                ws.transport.abort()
            finally:
                self.rec.open_ws -= 1

    async def shape_worker(self, wid: int) -> None:
        """SoakShape (1200/min, shape): 4 messages in flight as fast as allowed; lossless,
        every echo in order."""
        rng = random.Random(self.args.seed * 1000 + wid)
        msgs = Messages(rng, self.corpus, wid)
        for _ in range(MAX_LOOPS):
            if not self.running():
                return
            try:
                ws = await self.open_ws("/echo/1.0", "SoakShape", rng, rng.random() < 0.5)
            except Exception as err:  # noqa: BLE001 - every failure is counted
                self.rec.error(f"shape: connect {type(err).__name__}", err)
                await asyncio.sleep(0.5)
                continue
            self.rec.open_ws += 1
            try:
                for _ in range(rng.randint(10, 100)):
                    if not self.running():
                        break
                    sent = [msgs.make(small=True) for _ in range(4)]
                    t = time.monotonic()
                    for message in sent:
                        await msgs.send(ws, message)
                    for message in sent:
                        got = await asyncio.wait_for(ws.recv(), SHAPE_TIMEOUT_S)
                        self.rec.counts["echoes"] += 1
                        if type(got) is not type(message) or got != message:
                            self.rec.mismatch("shape", message, got)
                    if time.monotonic() - t > 0.2:
                        self.rec.counts["shape_slow_rounds"] += 1
                await self.end_ws(ws, rng)
            except websockets.ConnectionClosed as err:
                self.rec.error(f"shape: closed {closed_code(err)}", err)
            except TimeoutError:
                self.rec.error("shape: echo timeout", f"{SHAPE_TIMEOUT_S}s without an echo")
                ws.transport.abort()
            finally:
                self.rec.open_ws -= 1

    async def close_worker(self, wid: int) -> None:
        """SoakClose (120/min, close): messages every ~50 ms until the gateway closes with
        1008; echoes before that are checked."""
        rng = random.Random(self.args.seed * 1000 + wid)
        msgs = Messages(rng, self.corpus, wid)
        for _ in range(MAX_LOOPS):
            if not self.running():
                return
            try:
                ws = await self.open_ws("/echo/1.0", "SoakClose", rng, rng.random() < 0.5)
            except Exception as err:  # noqa: BLE001 - every failure is counted
                self.rec.error(f"close: connect {type(err).__name__}", err)
                await asyncio.sleep(0.5)
                continue
            self.rec.open_ws += 1
            try:
                for _ in range(200):
                    if not self.running():
                        break
                    message = msgs.make(small=True)
                    await msgs.send(ws, message)
                    got = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT_S)
                    self.rec.counts["echoes"] += 1
                    if type(got) is not type(message) or got != message:
                        self.rec.mismatch("close", message, got)
                    await asyncio.sleep(rng.uniform(0.03, 0.07))
                await self.end_ws(ws, rng)
            except websockets.ConnectionClosed as err:
                code = closed_code(err)
                if code == 1008 and err.rcvd is not None and "rate limit" in err.rcvd.reason:
                    self.rec.counts["throttle_closes"] += 1
                else:
                    self.rec.error(f"close: closed {code}", err)
            except TimeoutError:
                self.rec.error("close: echo timeout", f"{ECHO_TIMEOUT_S}s without an echo")
                ws.transport.abort()
            finally:
                self.rec.open_ws -= 1
            await asyncio.sleep(rng.uniform(0.1, 0.5))

    async def http_worker(self, wid: int) -> None:
        """/health, good and bad token requests, garbage, and upgrades aborted at once."""
        rng = random.Random(self.args.seed * 1000 + wid)
        apps = WS_APPS
        for _ in range(MAX_LOOPS):
            if not self.running():
                return
            src = self.src(rng)
            pick = rng.random()
            try:
                if pick < 0.25:
                    status, _ = await self.http(
                        b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n", src
                    )
                    self.count_http("health", status, {200})
                elif pick < 0.45:
                    src = rng.choice(GOOD_TOKEN_SOURCES)
                    status, token = await self.token(rng.choice(apps), src)
                    self.count_http("token_good", status if token else None, {200})
                elif pick < 0.6:
                    src = rng.choice(BAD_SOURCES)
                    status, _ = await self.token("SoakIntruder", src, secret="wrong-secret")
                    # 429: a limit on failed authentications, where the gateway has one
                    self.count_http(f"token_bad_{status}", status, {401, 429})
                elif pick < 0.9:
                    await self.garbage(rng, src)
                else:
                    await self.upgrade_abort(rng, src)
            except (OSError, TimeoutError) as err:
                self.rec.error(f"http: {type(err).__name__}", err)
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    def count_http(self, what: str, status: int | None, ok: set[int]) -> None:
        if status in ok:
            self.rec.counts[f"http_{what}"] += 1
        else:
            self.rec.error(f"http {what}: status {status}", f"expected {sorted(ok)}")

    async def garbage(self, rng: random.Random, src: str) -> None:
        """A malformed or refused request: a 4xx answer, or the connection closed."""
        kind = rng.randrange(6)
        if kind == 0:
            data = rng.randbytes(rng.randint(1, 2000)) + b"\r\n\r\n"
        elif kind == 1:
            data = b"GET /health HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        elif kind == 2:
            data = b"BREW /pot HTCPCP/1.0\r\nHost: soak\r\n\r\n"
        elif kind == 3:
            data = (
                b"GET /echo/1.0 HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )  # no token: 401
        elif kind == 4:
            data = b"POST /health HTTP/1.1\r\nHost: soak\r\nContent-Length: 0\r\n\r\n"
        else:
            data = b"GET /echo/1.0 HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
        try:
            status, _ = await self.http(data, src, timeout_s=REQUEST_TIMEOUT_S + 5)
        except ConnectionResetError:  # refused before all of it was sent: closed too
            status = None
        if status is None or 400 <= status < 500:
            self.rec.counts["http_garbage"] += 1
        else:
            self.rec.error(f"http garbage {kind}: status {status}", data[:60])

    async def upgrade_abort(self, rng: random.Random, src: str) -> None:
        """A valid upgrade with a token, and the TCP connection reset right after sending it."""
        key = base64.b64encode(rng.randbytes(16)).decode()
        data = (
            f"GET /echo/1.0 HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            f"Authorization: Bearer {self.tokens['SoakFree']}\r\n\r\n"
        ).encode()
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, local_addr=(src, 0)), 5
        )
        writer.write(data)
        await asyncio.sleep(rng.uniform(0, 0.01))
        writer.transport.abort()
        self.rec.counts["upgrade_aborts"] += 1

    async def slow_worker(self, wid: int) -> None:
        """A request head trickled one header a second: the gateway must close it at 10 s."""
        rng = random.Random(self.args.seed * 1000 + wid)
        await asyncio.sleep(rng.uniform(0, REQUEST_TIMEOUT_S))  # not all in step
        for _ in range(MAX_LOOPS):
            if time.monotonic() + REQUEST_TIMEOUT_S + 5 > self.stop_at or self.gateway_died:
                return
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.src(rng), 0)),
                    5,
                )
            except (OSError, TimeoutError) as err:
                self.rec.error(f"slow: connect {type(err).__name__}", err)
                await asyncio.sleep(1)
                continue
            t = time.monotonic()
            closed_after = None
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: soak\r\n")
                for i in range(int(REQUEST_TIMEOUT_S * 2)):
                    with contextlib.suppress(TimeoutError):
                        data = await asyncio.wait_for(reader.read(4096), 1.0)
                        if not data:
                            closed_after = time.monotonic() - t
                            break
                        self.rec.error("slow: answered", data[:60])
                    writer.write(f"X-Slow-{i}: {rng.random()}\r\n".encode())
            except OSError:  # reset while writing: closed too
                closed_after = time.monotonic() - t
            finally:
                writer.transport.abort()
            if closed_after is None:
                self.rec.error("slow: not closed", f"open after {time.monotonic() - t:.1f}s")
            elif not REQUEST_TIMEOUT_S - 0.1 <= closed_after <= REQUEST_TIMEOUT_S + 4:
                self.rec.error("slow: closed at odd time", f"{closed_after:.2f}s")
            else:
                self.rec.counts["slow_timed_out"] += 1

    # --------------------------------------------------------------------------- chaos
    async def flaky_chaos(self) -> None:
        """Kill the second backend abruptly every ~30 s; restart it 1-3 s later."""
        rng = random.Random(self.args.seed + 7)
        for _ in range(MAX_LOOPS):
            wait = BACKEND_KILL_EVERY_S + rng.uniform(-3, 3)
            if time.monotonic() + wait + 5 > self.stop_at or self.gateway_died:
                return
            await asyncio.sleep(wait)
            self.kill_now(self.flaky)
            self.flaky = None
            self.rec.counts["backend_kills"] += 1
            await asyncio.sleep(rng.uniform(1, 3))
            try:
                self.flaky = await asyncio.to_thread(self.start_backend, self.flaky_port, "flaky")
            except RuntimeError as err:
                self.rec.error("chaos: backend restart", err)
                return

    async def redis_chaos(self) -> None:
        """Kill our redis-server every ~60 s, wait 2 s, restart it on the same port."""
        for _ in range(MAX_LOOPS):
            if time.monotonic() + REDIS_RESTART_EVERY_S + 5 > self.stop_at or self.gateway_died:
                return
            await asyncio.sleep(REDIS_RESTART_EVERY_S)
            self.kill_now(self.redis)
            self.redis = None
            await asyncio.sleep(2)
            try:
                self.redis = await asyncio.to_thread(self.start_redis)
            except RuntimeError as err:
                self.rec.error("chaos: redis restart", err)
                return
            self.rec.counts["redis_restarts"] += 1

    # ------------------------------------------------------------------------ sampling
    async def sample(self) -> dict[str, Any]:
        assert self.gateway is not None
        pid = self.gateway.pid
        row: dict[str, Any] = {"t": time.monotonic() - self.t0, "rss": None, "fds": None}
        if self.gateway.poll() is not None:
            self.gateway_died = f"gateway exited with {self.gateway.returncode}"
            return row
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    row["rss"] = int(line.split()[1]) * 1024
            row["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        row["conns"] = row["msgs"] = None
        try:
            get = b"GET /health HTTP/1.1\r\nHost: soak\r\n\r\n"
            _, body = await self.http(get, "127.0.0.1", port=self.admin)
            row["conns"] = json.loads(body)["connections"]
            _, body = await self.http(
                get.replace(b"/health", b"/stats"), "127.0.0.1", port=self.admin
            )
            stats = json.loads(body)
            row["msgs"] = sum(sum(a["messages"].values()) for a in stats["apis"].values())
            row["stats"] = stats
        except (OSError, TimeoutError, ValueError, KeyError) as err:
            self.rec.error("admin: stats", err)
        row["open_ws"] = self.rec.open_ws
        return row

    async def sampler(self) -> None:
        for _ in range(MAX_LOOPS):
            if time.monotonic() >= self.stop_at or self.gateway_died:
                return
            await asyncio.sleep(SAMPLE_S)
            row = await self.sample()
            self.samples.append(row)
            if row["rss"] is not None and len(self.samples) % 6 == 0:
                print(
                    f"[soak] t={row['t']:.0f}s rss={row['rss'] / MIB:.1f}MiB fds={row['fds']} "
                    f"conns={row['conns']} msgs={row['msgs']} echoes={self.rec.counts['echoes']}"
                    f" mismatches={self.rec.counts['mismatches']} errors={self.rec.errors.total()}",
                    file=sys.stderr,
                    flush=True,
                )

    # ----------------------------------------------------------------------------- run
    async def run(self) -> None:
        for app in WS_APPS:
            status, token = await self.token(app, GOOD_TOKEN_SOURCES[0])
            if status != 200:
                raise RuntimeError(f"token for {app}: HTTP {status}")
            self.tokens[app] = token
        self.t0 = time.monotonic()
        self.samples.append(await self.sample())  # the idle gateway: the fds baseline
        self.stop_at = self.t0 + self.duration
        n = self.args.echo_workers
        tasks = [asyncio.create_task(self.sampler())]
        tasks += [asyncio.create_task(self.echo_worker(i, False)) for i in range(n)]
        tasks += [asyncio.create_task(self.echo_worker(100 + i, True)) for i in range(4)]
        tasks += [asyncio.create_task(self.drop_worker(200 + i)) for i in range(3)]
        tasks += [asyncio.create_task(self.shape_worker(300 + i)) for i in range(3)]
        tasks += [asyncio.create_task(self.close_worker(400 + i)) for i in range(3)]
        tasks += [asyncio.create_task(self.http_worker(500 + i)) for i in range(3)]
        tasks += [asyncio.create_task(self.slow_worker(600 + i)) for i in range(3)]
        tasks += [asyncio.create_task(self.flaky_chaos()), asyncio.create_task(self.redis_chaos())]
        done, pending = await asyncio.wait(tasks, timeout=self.duration + 45)
        for task in pending:
            task.cancel()
        if pending:
            self.rec.error("soak: tasks still running at the deadline", len(pending))
            await asyncio.wait(pending, timeout=10)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                self.rec.error(
                    f"soak: task failed {type(task.exception()).__name__}", task.exception()
                )
        await self.drain()

    async def drain(self) -> None:
        """Both chaos victims up again, no connection left: then the final sample."""
        if self.redis is None:
            self.redis = await asyncio.to_thread(self.start_redis)
        if self.flaky is None:
            self.flaky = await asyncio.to_thread(self.start_backend, self.flaky_port, "flaky")
        row: dict[str, Any] = {}
        for _ in range(30):
            await asyncio.sleep(1)
            row = await self.sample()
            if self.gateway_died or row.get("conns") == 0:
                break
        await asyncio.sleep(2)
        row = await self.sample()
        row["final"] = True
        self.samples.append(row)

    # -------------------------------------------------------------------------- report
    def report(self) -> int:
        rows = [r for r in self.samples if r.get("rss") is not None]
        print(f"{'time s':>7} {'RSS MiB':>8} {'fds':>5} {'conns':>6} {'relayed msgs':>13}")
        for r in rows:
            mark = "  (end, drained)" if r.get("final") else ""
            print(
                f"{r['t']:7.0f} {r['rss'] / MIB:8.1f} {r['fds']:5d} {_fmt(r.get('conns')):>6} "
                f"{_fmt(r.get('msgs')):>13}{mark}"
            )
        failures: list[str] = []
        if self.gateway_died:
            failures.append(self.gateway_died)
        if not rows:
            print("no samples")
            return 1
        warm_at = min(60.0, self.duration / 3)
        warm = next((r for r in rows if r["t"] >= warm_at), rows[-1])
        start, end = rows[0], rows[-1]
        peak_rss = max(r["rss"] for r in rows)
        peak_fds = max(r["fds"] for r in rows)
        c, e = self.rec.counts, self.rec.errors.total()
        print(
            f"RSS start/peak/end {start['rss'] / MIB:.1f}/{peak_rss / MIB:.1f}/"
            f"{end['rss'] / MIB:.1f} MiB (after warm-up at {warm['t']:.0f}s: "
            f"{warm['rss'] / MIB:.1f}); fds start/peak/end {start['fds']}/{peak_fds}/"
            f"{end['fds']}; totals: connections {c['connections']}, messages "
            f"{c['echoes']} echoed and checked + {c['drop_notices']} drop notices, "
            f"mismatches {c['mismatches']}, errors {e}"
        )
        keys = sorted(k for k in c if k not in ("connections", "echoes", "mismatches"))
        print("counts: " + ", ".join(f"{k} {c[k]}" for k in keys))
        stats = next((r["stats"] for r in reversed(self.samples) if "stats" in r), None)
        if stats:
            throttled: Counter[str] = Counter()
            for entry in stats.get("apis", {}).values():
                for scope, actions in entry.get("throttled", {}).items():
                    for action, n in actions.items():
                        throttled[f"{scope}/{action}"] += n
            print(
                "gateway throttled: " + ", ".join(f"{k} {v}" for k, v in sorted(throttled.items()))
            )
            for name, entry in sorted(stats.get("apis", {}).items()):
                print(
                    f"gateway {name}: connections {entry.get('connections')}, "
                    f"backend_failures {entry.get('backend_failures')}"
                )
        for kind, n in sorted(self.rec.errors.items()):
            print(f"error {kind}: {n}; e.g. {' | '.join(self.rec.samples.get(kind, []))}")
        for line in self.rec.mismatches:
            print(f"mismatch {line}")
        if c["mismatches"]:
            failures.append(f"{c['mismatches']} echoes mismatched")
        growth = end["rss"] - warm["rss"]
        allowed = max(0.2 * warm["rss"], 16 * MIB)
        if growth > allowed:
            failures.append(
                f"RSS grew {growth / MIB:.1f} MiB after warm-up (allowed {allowed / MIB:.1f})"
            )
        if end["fds"] - start["fds"] > 10:
            failures.append(f"fds {start['fds']} -> {end['fds']} (more than 10 above the start)")
        for what, key in (("drop", "drop_notices"), ("close", "throttle_closes")):
            if not c[key]:
                print(f"warning: the {what} tier never throttled")
        print(f"gateway log: {self.log_summary()}")
        print("FAIL: " + "; ".join(failures) if failures else "PASS")
        return 1 if failures else 0

    def log_summary(self) -> str:
        log = self.dir / "gateway.log"
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            return "unreadable"
        levels = Counter(w for ln in lines for w in ln.split()[2:3])
        bad = [ln for ln in lines if "Traceback" in ln or " ERROR " in ln or " CRITICAL " in ln]
        out = f"{len(lines)} lines, by level {dict(levels)}"
        if bad:
            out += "; first problems: " + " | ".join(b[:200] for b in bad[:3])
        return out

    def close(self) -> None:
        code = None
        if self.gateway is not None and self.gateway.poll() is None:
            self.procs.stop(self.gateway, grace_s=10)
            code = self.gateway.returncode
        self.procs.close()
        if code not in (None, 0):
            print(f"note: gateway exited with {code} on SIGTERM")
        if self.args.keep_dir:
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="load duration (default 5)")
    parser.add_argument("--echo-workers", type=int, default=30, help="unlimited echo clients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-dir", action="store_true", help="keep config and logs")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the gateway process (repeatable)",
    )
    parser.add_argument("--echo-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.echo_backend:
        asyncio.run(run_echo_backend(args.echo_backend))
        return 0
    soak = Soak(args)
    hard_deadline = int(soak.duration + 180)

    def kill_all(signum: int, frame: object) -> None:
        """The hard deadline (SIGALRM) or SIGTERM: every child's group killed, then exit."""
        for proc in soak.procs.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if not args.keep_dir:
            shutil.rmtree(soak.dir, ignore_errors=True)
        why = f"hard deadline ({hard_deadline}s) reached" if signum == signal.SIGALRM else "SIGTERM"
        print(f"soak: {why}, everything it started killed", flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, kill_all)
    signal.signal(signal.SIGTERM, kill_all)
    signal.alarm(hard_deadline)
    try:
        soak.setup()
        asyncio.run(soak.run())
        return soak.report()
    finally:
        soak.close()
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
