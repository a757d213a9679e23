"""A restart under load with two `wsgw serve --reuse-port` processes on one port.

Run alone (tests/integration/test_restart.py runs it in a fresh network namespace, where
it may set net.ipv4.tcp_migrate_req without touching the host):

    python tests/integration/restart_scenario.py --dir DIR [--workers N]

It sets up a deployment with the CLI (config, signing key, an application subscribed to
the echo API on a tier without limits, a token), starts `wsgw echo` and gateway A, runs
a load of short connections (connect with the token, one message, check the echo, close),
starts gateway B on the same port, waits for B's /health, sends SIGTERM to A, keeps the
load on until A has exited and a little longer, then prints one JSON summary on stdout.

A connection A closes with 1001 while it drains is expected (its client connects again):
it is counted as closed_by_drain. A failed handshake (refused, reset, an HTTP refusal,
a timeout) is what a restart must not cause.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
import websockets
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

REPO = Path(__file__).resolve().parents[2]
PREFIX = "[echo] "
OPEN_TIMEOUT_S = 5.0
HOLD_INTERVAL_S = 0.1
STEP_TIMEOUT_S = 15.0  # any one step: a process starting, stopping, a CLI command


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_ports(n: int, *, consecutive: int = 1) -> list[int]:
    """n ports nobody listens on, each followed by consecutive - 1 more that are free too
    (a --workers gateway serves its admin API on admin port + worker index)."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        block = range(base, base + consecutive)
        if any(p in found for p in block) or not all(_is_free(p) for p in block):
            continue
        found.append(base)
    return found


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def migrate_req() -> str:
    try:
        return Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    except OSError as err:
        return f"unreadable: {err}"


# ------------------------------------------------------------------------ setup


@dataclass
class Setup:
    directory: Path
    port: int
    echo_port: int
    admin_ports: dict[str, int]  # gateway name → its (first) admin port
    token: str = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echowebsocket/1.0"

    def config(self, name: str) -> Path:
        return self.directory / f"{name}.yaml"


def write_configs(setup: Setup, drain_s: float, window_s: float) -> None:
    """Two configs differing only in admin_listen; the same port, no limit anywhere."""
    for name, admin_port in setup.admin_ports.items():
        raw = {
            "gateway": {
                "listen": f"127.0.0.1:{setup.port}",
                "admin_listen": f"127.0.0.1:{admin_port}",
                "subscriptions_file": "subscriptions.yaml",
                "backend_handshake_timeout_s": 5,
                "close_timeout_s": 2,
                "max_pending_per_address": 0,
                "drain_s": drain_s,
                "drain_close_window_s": window_s,
            },
            "security": {"signing_key_file": "keys/signing.pem", "token_ttl_s": 3600},
            "tiers": {"Unlimited": {}},
            "apis": [
                {
                    "name": "EchoWebSocket",
                    "context": "/echowebsocket",
                    "version": "1.0",
                    "default_version": True,
                    "endpoints": {"production": f"ws://127.0.0.1:{setup.echo_port}"},
                    "tiers": ["Unlimited"],
                    "status": "PUBLISHED",
                }
            ],
        }
        setup.config(name).write_text(yaml.safe_dump(raw, sort_keys=False))


def cli(setup: Setup, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "wsgw", *argv, "-c", str(setup.config("a"))],
        cwd=setup.directory,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise SystemExit(f"wsgw {' '.join(argv)} failed: {done.stderr}")
    return done.stdout


def provision(setup: Setup) -> None:
    cli(setup, "keys", "init")
    cli(setup, "app", "create", "DefaultApplication")
    cli(setup, "keys", "generate", "DefaultApplication", "--key-type", "production")
    cli(setup, "subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Unlimited")
    setup.token = cli(setup, "token", "DefaultApplication").strip()


async def start(setup: Setup, *argv: str, log_name: str) -> asyncio.subprocess.Process:
    log = (setup.directory / f"{log_name}.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsgw",
            *argv,
            stdout=log,
            stderr=log,
            cwd=setup.directory,
            env=child_env(),
            start_new_session=True,  # a signal for one never reaches the other
        )
    finally:
        log.close()


async def http_status(port: int, path: str) -> int | None:
    """GET path on loopback: the status, or None when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 2.0)
        return int(line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return None
    finally:
        writer.close()


async def until_listening(port: int, process: asyncio.subprocess.Process, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        if process.returncode is not None:
            raise SystemExit(f"{what} exited with {process.returncode} at start")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not listen on {port}")
        await asyncio.sleep(0.05)


async def until_healthy(
    admin_ports: list[int], process: asyncio.subprocess.Process, what: str
) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        if process.returncode is not None:
            raise SystemExit(f"{what} exited with {process.returncode} at start")
        statuses = await asyncio.gather(*(http_status(p, "/health") for p in admin_ports))
        if all(s == 200 for s in statuses):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: /health {statuses}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------- load


@dataclass
class Load:
    """Short connections from `clients` loops, and `holders` connections that stay open
    (each a message every HOLD_INTERVAL_S) until a drain closes them, then connect again."""

    url: str
    token: str
    attempted: int = 0
    succeeded: int = 0
    closed_by_drain: int = 0
    held_messages: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    other_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # failures only
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    in_window: int = 0  # handshakes that succeeded while `window` was set
    window: bool = False

    async def handshake(self) -> ClientConnection | None:
        """One opening handshake: the connection, or None (the failure counted)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        self.attempted += 1
        try:
            ws = await connect(
                self.url, additional_headers=headers, proxy=None, open_timeout=OPEN_TIMEOUT_S
            )
        except InvalidStatus as err:
            self.fail(f"HTTP {err.response.status_code}")
        except InvalidMessage as err:  # the connection ended before a response
            self.fail(f"InvalidMessage: {type(err.__cause__).__name__}")
        except TimeoutError:
            self.fail("handshake timeout")
        except OSError as err:
            self.fail(type(err).__name__)
        except websockets.InvalidHandshake as err:
            self.fail(f"{type(err).__name__}: {err}")
        else:
            self.succeeded += 1
            if self.window:
                self.in_window += 1
            return ws
        return None

    def fail(self, reason: str) -> None:
        self.failures[reason] += 1
        self.timeline.append((time.monotonic(), reason))

    async def exchange(self, ws: ClientConnection, message: str) -> bool:
        """Send one message and check its echo: False once the connection has ended (a
        drain's 1001 counted apart from any other end)."""
        try:
            await ws.send(message)
            reply = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S)
        except ConnectionClosed as err:
            if err.rcvd is not None and err.rcvd.code == 1001:
                self.closed_by_drain += 1
            else:
                self.other_errors[f"closed: {err}"] += 1
            return False
        except (OSError, TimeoutError) as err:
            self.other_errors[f"after handshake: {type(err).__name__}"] += 1
            return False
        if reply != PREFIX + message:
            self.other_errors[f"bad echo {reply!r:.60}"] += 1
        return True

    async def client(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            ws = await self.handshake()
            if ws is None:
                continue
            n += 1
            if await self.exchange(ws, f"client {index} message {n}"):
                with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                    await asyncio.wait_for(ws.close(), OPEN_TIMEOUT_S)

    async def holder(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            ws = await self.handshake()
            if ws is None:
                await asyncio.sleep(HOLD_INTERVAL_S)
                continue
            while not self.stop.is_set():
                n += 1
                if not await self.exchange(ws, f"holder {index} message {n}"):
                    break
                self.held_messages += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), HOLD_INTERVAL_S)
            else:
                with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                    await asyncio.wait_for(ws.close(), OPEN_TIMEOUT_S)


# --------------------------------------------------------------------- scenario


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    port, echo_port = free_ports(2)
    admin_a, admin_b = free_ports(2, consecutive=args.workers)
    admin = {"a": admin_a, "b": admin_b}
    setup = Setup(directory, port, echo_port, admin)
    write_configs(setup, args.drain_s, args.window_s)
    provision(setup)
    serve_args = ["--reuse-port"] + (["--workers", str(args.workers)] if args.workers > 1 else [])
    admin_ports = {
        name: [p + i for i in range(args.workers)] for name, p in setup.admin_ports.items()
    }

    processes: list[asyncio.subprocess.Process] = []
    load = Load(setup.url, setup.token)
    clients: list[asyncio.Task[None]] = []
    summary: dict[str, Any] = {
        "tcp_migrate_req": migrate_req(),
        "workers": args.workers,
        "pause_s": args.pause_s,
    }
    try:
        echo = await start(
            setup, "echo", "--listen", f"127.0.0.1:{echo_port}", "--prefix", PREFIX, log_name="echo"
        )
        processes.append(echo)
        await until_listening(echo_port, echo, "wsgw echo")
        a = await start(setup, "serve", "-c", str(setup.config("a")), *serve_args, log_name="a")
        processes.append(a)
        await until_healthy(admin_ports["a"], a, "gateway A")

        clients = [asyncio.create_task(load.client(i)) for i in range(args.clients)]
        clients += [asyncio.create_task(load.holder(i)) for i in range(args.holders)]
        await asyncio.sleep(args.before_s)
        before_b = load.succeeded
        b = await start(setup, "serve", "-c", str(setup.config("b")), *serve_args, log_name="b")
        processes.append(b)
        await until_healthy(admin_ports["b"], b, "gateway B")
        await asyncio.sleep(args.both_s)

        load.window = True
        if args.pause_s > 0:
            await sigterm_while_busy(a, args.pause_s, args.workers)
        else:
            a.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()  # when A acts on it (a busy A: when it resumes)
        try:
            a_status: int | None = await asyncio.wait_for(a.wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            a_status = None
        a_exited_at = time.monotonic()
        await asyncio.sleep(args.after_s)
        load.window = False
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), STEP_TIMEOUT_S)

        b.send_signal(signal.SIGTERM)
        try:
            b_status: int | None = await asyncio.wait_for(b.wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            b_status = None
        summary.update(
            attempted=load.attempted,
            succeeded=load.succeeded,
            failed=sum(load.failures.values()),
            failures=dict(load.failures),
            failure_times_since_sigterm=[round(at - sigterm_at, 3) for at, _ in load.timeline[:50]],
            closed_by_drain=load.closed_by_drain,
            held_messages=load.held_messages,
            other_errors=dict(load.other_errors),
            succeeded_before_b=before_b,
            succeeded_from_sigterm_to_a_exit_and_after=load.in_window,
            a_exit=a_status,
            a_exit_after_sigterm_s=round(a_exited_at - sigterm_at, 3),
            b_exit=b_status,
            a_log_warnings=_warnings(directory / "a.log"),
            tracebacks=[
                name
                for name in ("a", "b", "echo")
                if "Traceback" in (directory / f"{name}.log").read_text(errors="replace")
            ],
        )
    finally:
        load.stop.set()
        for task in clients:
            task.cancel()
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
    return summary


async def sigterm_while_busy(a: asyncio.subprocess.Process, pause_s: float, workers: int) -> None:
    """SIGTERM to a gateway whose loop was busy: stopped for pause_s (SIGSTOP), the
    connections the kernel gives it meanwhile wait in its accept queue, so that its
    listener closes with a full queue (what tcp_migrate_req is about); then it resumes
    with SIGTERM pending. A supervisor resumes first, to forward SIGTERM to its workers
    while they are still stopped."""
    os.killpg(a.pid, signal.SIGSTOP)  # the supervisor and its workers (one session)
    await asyncio.sleep(pause_s)
    a.send_signal(signal.SIGTERM)
    os.kill(a.pid, signal.SIGCONT)
    if workers > 1:
        await asyncio.sleep(0.1)
    os.killpg(a.pid, signal.SIGCONT)


def _warnings(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines()
    return [line[-160:] for line in lines if " WARNING " in line or " ERROR " in line][:10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="a directory for the files and logs")
    parser.add_argument("--workers", type=int, default=1, help="each gateway's --workers")
    parser.add_argument("--clients", type=int, default=4, help="concurrent load clients")
    parser.add_argument(
        "--holders", type=int, default=8, help="connections held open across the restart"
    )
    parser.add_argument(
        "--pause-s",
        type=float,
        default=0.0,
        help="stop A (SIGSTOP) this long before its SIGTERM: a busy loop, a full queue",
    )
    parser.add_argument("--drain-s", type=float, default=1.0)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--before-s", type=float, default=2.0, help="load on A alone")
    parser.add_argument("--both-s", type=float, default=1.0, help="load on A and B")
    parser.add_argument("--after-s", type=float, default=1.0, help="load once A has exited")
    args = parser.parse_args()
    summary = uvloop.run(scenario(args))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
