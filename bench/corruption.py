"""Measures whether permessage-deflate messages survive a gateway tier that drops some of them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

HERE = Path(__file__).resolve().parent.parent
NOTICE = '{"code":4008'  # the gateway's drop notice to the client
TIER = "Tiny: {messages_per_minute: 60, on_limit: drop}"
CLI_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 55.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shifting_messages(n: int, seed: int) -> list[str]:
    """n distinct messages: one ~2.5 KB random-word text rotated by i*97 characters, plus a few
    words of their own, prefixed with the index. Each shares long runs with the one before it,
    never at the same place, so a compressed message refers back into the previous ones."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(300)]
    text = " ".join(rng.choices(words, k=360))
    out = []
    for i in range(n):
        cut = (i * 97) % len(text)
        own = " ".join(rng.choices(words, k=5))
        out.append(f"{i}:{text[cut:]}{text[:cut]} {own}")
    return out


@dataclass
class Backend:
    """A websockets echo server (default compression) that records one connection."""

    received: list[tuple[float, str | bytes]] = field(default_factory=list)
    sent: list[tuple[float, str | bytes]] = field(default_factory=list)
    extensions: str | None = None
    close_sent: int | None = None
    close_rcvd: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        if ws.response is not None:
            self.extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        try:
            async for message in ws:
                self.received.append((time.monotonic(), message))
                await ws.send(message)
                self.sent.append((time.monotonic(), message))
        except websockets.ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 3)
            proto = ws.protocol
            self.close_sent = proto.close_sent.code if proto.close_sent else None
            self.close_rcvd = proto.close_rcvd.code if proto.close_rcvd else None
            self.ended.set()


def cli(repo: Path, work: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "wsgw", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise SystemExit(f"wsgw {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


async def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited ({proc.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"gateway not listening on {port} after {timeout_s} s:\n{log.read_text()}")


def verdict(target: str | bytes | None, got: list, after: list, known: set) -> str:
    """intact / corrupted / not delivered, for the message `target`."""
    if target is None:
        return "n/a (nothing to deliver)"
    if target in got:
        return "intact"
    if any(m not in known for m in after):
        return "corrupted"
    return "not delivered"


def where(bad: str | bytes, originals: list) -> str:
    """Which original a corrupted message started as, and how far it stays equal to it."""
    best, index = max((len(os.path.commonprefix([bad, m])), i) for i, m in enumerate(originals))
    return f"{len(bad)} B, first {best} B equal to #{index} ({len(originals[index])} B)"


def close_text(sent: int | None, rcvd: int | None) -> str:
    return f"{rcvd} (sent {sent})" if sent != rcvd else str(rcvd)


async def run(args: argparse.Namespace, work: Path) -> None:
    repo = Path(args.repo).resolve()
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    backend = Backend()
    server = await serve(backend.handler, "127.0.0.1", 0)  # compression: default (deflate)
    backend_port = server.sockets[0].getsockname()[1]
    gateway_port, admin_port = free_port(), free_port()
    (work / "wsgw.yaml").write_text(
        f"""gateway:
  listen: "127.0.0.1:{gateway_port}"
  admin_listen: "127.0.0.1:{admin_port}"
tiers: {{{TIER}}}
apis:
  - name: Echo
    context: /echo
    version: "1.0"
    endpoints: {{production: "ws://127.0.0.1:{backend_port}"}}
    tiers: [Tiny]
"""
    )
    cli(repo, work, "keys", "init")
    cli(repo, work, "app", "create", "Corruption")
    cli(repo, work, "keys", "generate", "Corruption", "--key-type", "production")
    cli(repo, work, "subscribe", "Corruption", "Echo:1.0", "--tier", "Tiny")
    token = cli(repo, work, "token", "Corruption").splitlines()[-1].strip()

    log = work / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsgw", "serve", "--log-level", "warning"],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await wait_port(gateway_port, proc, log)
        sent = shifting_messages(args.messages + 1, args.seed)
        echoes: list[tuple[float, str | bytes]] = []
        notices = 0
        url = f"ws://127.0.0.1:{gateway_port}/echo/1.0?access_token={token}"

        async def reader(ws: ClientConnection) -> None:
            nonlocal notices
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    if isinstance(message, str) and message.startswith(NOTICE):
                        notices += 1
                    else:
                        echoes.append((time.monotonic(), message))

        async with connect(url, open_timeout=10, close_timeout=3) as ws:
            client_ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            reading = asyncio.create_task(reader(ws))
            for message in sent[:-1]:
                await asyncio.wait_for(ws.send(message), 5)
            await asyncio.sleep(args.wait)
            t_last = time.monotonic()
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.send(sent[-1]), 5)
            # Until the last message's echo is in, or nothing arrives for 1.5 s (10 s at most).
            deadline = t_last + 10
            while time.monotonic() < deadline and not reading.done():
                last_echo = next((m for t, m in backend.sent if t >= t_last), None)
                if last_echo is not None and any(m == last_echo for _, m in echoes):
                    break
                latest = max([t_last] + [t for t, _ in echoes])
                if time.monotonic() - latest > 1.5:
                    break
                await asyncio.sleep(0.05)
            await ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reading, 5)
            proto = ws.protocol
            client_close = close_text(
                proto.close_sent.code if proto.close_sent else None,
                proto.close_rcvd.code if proto.close_rcvd else None,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(backend.ended.wait(), 5)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 3)

        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    got = [m for _, m in backend.received]
    got_after = [m for t, m in backend.received if t >= t_last]
    echoed = [m for _, m in backend.sent]
    echo_target = next((m for t, m in backend.sent if t >= t_last), None)
    back = [m for _, m in echoes]
    back_after = [m for t, m in echoes if t >= t_last]
    print(f"repo {repo} ({rev or '?'}): tier {TIER}")
    print(f"  extensions, client side:  {client_ext}")
    print(f"  extensions, backend side: {backend.extensions}")
    print(
        f"  client -> backend: sent {len(sent)}, delivered to backend {len(got)}, "
        f"not identical to any sent {sum(m not in sent for m in got)}, "
        f"last message {verdict(sent[-1], got, got_after, set(sent))}, "
        f"backend close code {close_text(backend.close_sent, backend.close_rcvd)}"
    )
    print(
        f"  backend -> client: echoed by backend {len(echoed)}, delivered to client {len(back)}, "
        f"not identical to any echoed {sum(m not in echoed for m in back)}, "
        f"last echo {verdict(echo_target, back, back_after, set(echoed))}, "
        f"client close code {client_close}; drop notices {notices}"
    )
    for name, delivered, originals in (("backend", got, sent), ("client", back, echoed)):
        for bad in (m for m in delivered if m not in originals):
            print(f"  not identical, at the {name}: {where(bad, originals)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default=str(HERE), help="wsgw checkout to run (PYTHONPATH)")
    parser.add_argument("--messages", type=int, default=80, help="messages in the first burst")
    parser.add_argument("--wait", type=float, default=2.2, help="seconds before the last one")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgw-corruption-") as work:
        try:
            asyncio.run(asyncio.wait_for(run(args, Path(work)), RUN_TIMEOUT_S))
        except TimeoutError:
            raise SystemExit(f"gave up after {RUN_TIMEOUT_S} s") from None


if __name__ == "__main__":
    main()
