"""What the end-to-end benchmark and the CI gate share: scenarios, setups (echo backend,
wsgw, nginx, the websockets proxy) and running one cell (one scenario on one setup).

Every process runs in its own process group under `Procs`, so `Bench.close()` ends them all.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import REPO, Procs, child_env, free_port, process_tree, python, run_checked, wait_port

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen.py"
WSPROXY = HERE / "wsproxy.py"
FLOORPROXY = HERE / "floorproxy.py"
AIOHTTPPROXY = HERE / "aiohttpproxy.py"
NODEPROXY = HERE / "nodeproxy"
# The gateway holds two descriptors per relayed connection; the hard RLIMIT_NOFILE here is
# 20000 and cannot be raised without CAP_SYS_RESOURCE, so 10,000 idle relayed connections do
# not fit one process. The largest round number that does, with room for listeners/logs:
IDLE_CONNECTIONS = 9900
METERED_MESSAGES_PER_MINUTE = 10**9  # every message counted and admitted, none dropped


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # loadgen mode: echo | cycle | idle
    conns: int
    inflight: int
    size: int
    title: str
    unit: str  # what one counted operation is
    deflate: bool = False  # permessage-deflate end to end, compressed text (loadgen --deflate)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("latency", "echo", 1, 1, 32, "latency: 1 connection, 1 in flight, 32 B", "rt"),
        Scenario("small", "echo", 64, 8, 32, "small: 64 connections × 8 in flight, 32 B", "rt"),
        Scenario("bulk", "echo", 16, 4, 16384, "bulk: 16 connections × 4 in flight, 16 KiB", "rt"),
        Scenario(
            "small-z",
            "echo",
            64,
            8,
            200,
            "small-z: 64 connections × 8 in flight, ~200 B of JSON-like text, permessage-deflate",
            "rt",
            deflate=True,
        ),
        Scenario(
            "bulk-z",
            "echo",
            16,
            4,
            16384,
            "bulk-z: 16 connections × 4 in flight, ~16 KiB of JSON-like text, permessage-deflate",
            "rt",
            deflate=True,
        ),
        Scenario(
            "connect",
            "cycle",
            32,
            1,
            32,
            "connections/s: connect + handshake (+ token) + 1 echo + close, 32 concurrent",
            "cycle",
        ),
        Scenario(
            "idle",
            "idle",
            IDLE_CONNECTIONS,
            1,
            32,
            f"idle capacity: {IDLE_CONNECTIONS} idle connections, proxy RSS growth",
            "conn",
        ),
        Scenario(
            "idle-z",
            "idle",
            IDLE_CONNECTIONS,
            1,
            200,
            f"idle-z: {IDLE_CONNECTIONS} idle connections, permessage-deflate negotiated, "
            "proxy RSS growth",
            "conn",
            deflate=True,
        ),
    )
}

SETUP_NAMES = [
    "direct",
    "wsgw",
    "wsgw-unlimited",
    "nginx",
    "haproxy",
    "node-http-proxy",
    "aiohttp-proxy",
    "websockets-proxy",
    "uvloop-floor",
]


# Setups that cannot relay the compressed scenarios as they are meant (the client's
# compressed bytes to the backend and back, permessage-deflate negotiated end to end).
NO_DEFLATE_PASSTHROUGH = {
    "websockets-proxy": "relays messages, not frames: websockets inflates what it receives "
    "and deflates what it sends with its own settings, and its extension API must clear RSV1 "
    "on receipt, so a pass-through extension could not tell the other leg which messages were "
    "compressed; with compression on, the backend would get other bytes than the client sent",
    "aiohttp-proxy": "relays messages, not frames: aiohttp inflates on receipt and deflates on "
    "send with its own settings, so the client's compressed bytes never reach the backend",
}


def deflate_unsupported(setup_name: str) -> str | None:
    """Why this setup does not run the compressed scenarios, or None when it does."""
    return NO_DEFLATE_PASSTHROUGH.get(setup_name)


@dataclass
class Setup:
    name: str
    url: str
    headers: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # the proxy's processes (CPU, RSS)
    admin: str | None = None  # wsgw's admin address, for /stats and /health
    note: str = ""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )


def node_proxy_ready() -> str | None:
    """Why the node http-proxy setup cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node not installed (`apt-get install nodejs`)"
    if not (NODEPROXY / "node_modules" / "http-proxy").is_dir():
        return "http-proxy not installed (`npm install --prefix bench/nodeproxy`)"
    return None


def nginx_version(binary: str) -> str:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip().split("/")[-1]


NGINX_CONF = """\
# Generated by bench/harness.py: one worker, a plain WebSocket reverse proxy.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {conns};
}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fastcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_buffering off;{extra}
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""

HAPROXY_CONF = """\
# Generated by bench/harness.py: one thread, a plain HTTP reverse proxy; an upgraded
# connection becomes a tunnel (timeout tunnel), as haproxy documents for WebSocket.
global
    nbthread 1
    maxconn {maxconn}
    ulimit-n {nofile}
    pidfile {d}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
    maxconn {maxconn}
frontend ws
    bind 127.0.0.1:{port}
    default_backend echo
backend echo
    server echo 127.0.0.1:{backend} maxconn {maxconn}
"""

WSGW_YAML = """\
gateway:
  listen: "127.0.0.1:{port}"
  admin_listen: "127.0.0.1:{admin}"
  subscriptions_file: subscriptions.yaml
{pending}security:
  signing_key_file: keys/signing.pem
tiers:
  Metered: {{messages_per_minute: {mpm}}}
  Unlimited: {{}}
apis:
  - name: Echo
    context: /echo
    version: "1.0"
    endpoints: {{production: "ws://127.0.0.1:{backend}"}}
    tiers: [Metered, Unlimited]
"""


def _no_pending_cap(wsgw: list[str], env: dict[str, str] | None, cwd: Path) -> str:
    """The load generator opens 128 handshakes at once from one address: lift the
    per-address cap of a gateway that has one (bench/ab.py may run one that has not).
    `cwd`: not this checkout, whose wsgw `python -m` would import first."""
    done = subprocess.run(
        [*wsgw, "schema"], cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=30
    )
    schema = done.stdout
    return "  max_pending_per_address: 0\n" if "max_pending_per_address" in schema else ""


class Bench:
    """The echo backend and the setups in front of it, alive for one whole run."""

    def __init__(self, *, keep_dir: bool = False) -> None:
        self.procs = Procs()
        self.dir = Path(tempfile.mkdtemp(prefix="wsgw-bench-"))
        self.keep_dir = keep_dir
        self.backend_port = 0
        self.backend_pid = 0
        self.setups: dict[str, Setup] = {}
        self.skipped: dict[str, str] = {}

    def close(self) -> None:
        try:
            self.procs.close()
        finally:
            if not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ backend
    def start_backend(self) -> None:
        """`wsgw echo` (wsgw.tools.echo, the code behind start_echo_server), own process."""
        self.backend_port = free_port()
        proc = self.procs.spawn(
            [python(), "-m", "wsgw", "echo", "--listen", f"127.0.0.1:{self.backend_port}"],
            log=self.dir / "echo.log",
        )
        wait_port(self.backend_port, proc=proc)
        self.backend_pid = proc.pid

    # ------------------------------------------------------------------- setups
    def start(
        self, name: str, *, gateway_env: dict[str, str] | None = None, nginx_extra: str = ""
    ) -> Setup | None:
        """Start one setup; None (and a note in `skipped`) when it cannot run here."""
        if name == "direct":
            setup = Setup("direct", f"ws://127.0.0.1:{self.backend_port}/echo/1.0")
        elif name == "wsgw":
            setup = self._start_wsgw(name, "Metered", gateway_env)
        elif name == "wsgw-unlimited":
            setup = self._start_wsgw(name, "Unlimited", gateway_env)
        elif name == "nginx":
            binary = nginx_binary()
            if binary is None:
                self.skipped[name] = "nginx not installed (`apt-get install nginx`)"
                return None
            setup = self._start_nginx(binary, nginx_extra)
        elif name == "websockets-proxy":
            setup = self._start_process(
                name,
                lambda listen, backend: [
                    python(),
                    str(WSPROXY),
                    "--listen",
                    listen,
                    "--backend",
                    f"ws://{backend}",
                ],
                "websockets library, uvloop",
            )
        elif name == "uvloop-floor":
            setup = self._start_process(
                name,
                lambda listen, backend: [
                    python(),
                    str(FLOORPROXY),
                    "--listen",
                    listen,
                    "--backend",
                    backend,
                ],
                "the gateway's socket work on uvloop, no checks (bench/floorproxy.py)",
            )
        elif name == "haproxy":
            binary = haproxy_binary()
            if binary is None:
                self.skipped[name] = "haproxy not installed (`apt-get install haproxy`)"
                return None
            setup = self._start_haproxy(binary)
        elif name == "node-http-proxy":
            why = node_proxy_ready()
            if why is not None:
                self.skipped[name] = why
                return None
            setup = self._start_process(
                name,
                lambda listen, backend: ["node", str(NODEPROXY / "proxy.js"), listen, backend],
                "node-http-proxy 1.18.1",
            )
        elif name == "aiohttp-proxy":
            setup = self._start_process(
                name,
                lambda listen, backend: [
                    python(),
                    str(AIOHTTPPROXY),
                    "--listen",
                    listen,
                    "--backend",
                    f"ws://{backend}",
                ],
                "aiohttp library, uvloop",
            )
        else:
            raise ValueError(f"unknown setup {name!r}; known: {', '.join(SETUP_NAMES)}")
        self.setups[name] = setup
        return setup

    def _start_wsgw(self, name: str, tier: str, env: dict[str, str] | None) -> Setup:
        """The gateway as users run it: config + signing key + application + keys +
        subscription through the CLI, `wsgw serve`, a token from the OAuth2 endpoint."""
        d = self.dir / name
        d.mkdir()
        port, admin = free_port(), free_port()
        wsgw = [python(), "-m", "wsgw"]
        (d / "wsgw.yaml").write_text(
            WSGW_YAML.format(
                port=port,
                admin=admin,
                backend=self.backend_port,
                mpm=METERED_MESSAGES_PER_MINUTE,
                pending=_no_pending_cap(wsgw, env, d),
            )
        )
        run_checked([*wsgw, "keys", "init"], cwd=d)
        run_checked([*wsgw, "app", "create", "Bench"], cwd=d)
        keys = run_checked([*wsgw, "keys", "generate", "Bench", "--key-type", "production"], cwd=d)
        creds = dict(line.split(": ", 1) for line in keys.splitlines() if ": " in line)
        run_checked([*wsgw, "subscribe", "Bench", "Echo:1.0", "--tier", tier], cwd=d)
        proc = self.procs.spawn([*wsgw, "serve"], cwd=d, log=d / "gateway.log", env=child_env(env))
        wait_port(port, proc=proc)
        token = oauth2_token(port, creds["consumer_key"], creds["consumer_secret"])
        core = json.loads(http_get(f"http://127.0.0.1:{admin}/health")).get("core", "?")
        return Setup(
            name,
            f"ws://127.0.0.1:{port}/echo/1.0",
            headers=[f"Authorization: Bearer {token}"],
            pids=[proc.pid],
            admin=f"127.0.0.1:{admin}",
            note=f"tier {tier}, core={core}",
        )

    def _start_nginx(self, binary: str, extra: str) -> Setup:
        d = self.dir / "nginx"
        d.mkdir()
        port = free_port()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else hard
        (d / "nginx.conf").write_text(
            NGINX_CONF.format(
                d=d,
                port=port,
                backend=self.backend_port,
                nofile=nofile,
                # nginx counts both legs and more; the descriptors are capped by nofile
                conns=max(32768, nofile),
                extra=f"\n            {extra}" if extra else "",
            )
        )
        proc = self.procs.spawn(
            [binary, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
            log=d / "stdout.log",
        )
        wait_port(port, proc=proc)
        pids: list[int] = []
        for _ in range(100):  # the worker is forked right after the master binds
            pids = process_tree(proc.pid)
            if len(pids) >= 2:
                break
            time.sleep(0.05)
        return Setup(
            "nginx",
            f"ws://127.0.0.1:{port}/echo/1.0",
            pids=pids,
            note=f"nginx {nginx_version(binary)}, 1 worker",
        )

    def _start_haproxy(self, binary: str) -> Setup:
        d = self.dir / "haproxy"
        d.mkdir()
        port = free_port()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else hard
        (d / "haproxy.cfg").write_text(
            HAPROXY_CONF.format(
                d=d, port=port, backend=self.backend_port, nofile=nofile, maxconn=nofile // 2 - 50
            )
        )
        proc = self.procs.spawn([binary, "-db", "-f", str(d / "haproxy.cfg")], log=d / "log")
        wait_port(port, proc=proc)
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        return Setup(
            "haproxy",
            f"ws://127.0.0.1:{port}/echo/1.0",
            pids=[proc.pid],
            note=version.stdout.split("\n", 1)[0].split(" - ")[0].strip() + ", 1 thread",
        )

    def _start_process(self, name: str, argv: Callable[[str, str], list[str]], note: str) -> Setup:
        """A one-process proxy: `argv(listen, backend)` with both as HOST:PORT."""
        port = free_port()
        proc = self.procs.spawn(
            argv(f"127.0.0.1:{port}", f"127.0.0.1:{self.backend_port}"),
            log=self.dir / f"{name}.log",
        )
        wait_port(port, proc=proc)
        return Setup(name, f"ws://127.0.0.1:{port}/echo/1.0", pids=[proc.pid], note=note)

    def alive(self) -> list[str]:
        """Names of children that died (a crashed proxy must not read as a slow one)."""
        return [str(p.args) for p in self.procs.children if p.poll() is not None]

    # -------------------------------------------------------------------- cells
    def run_cell(
        self,
        setup: Setup,
        scenario: Scenario,
        *,
        warmup: float,
        duration: float,
        idle_conns: int | None = None,
    ) -> dict[str, Any]:
        """One scenario on one setup, in a fresh load generator process; its JSON result
        (with "errors"), plus wsgw's own message counters when it is a gateway."""
        conns = idle_conns if scenario.mode == "idle" and idle_conns else scenario.conns
        argv = [
            python(),
            str(LOADGEN),
            scenario.mode,
            "--url",
            setup.url,
            "--conns",
            str(conns),
            "--inflight",
            str(scenario.inflight),
            "--size",
            str(scenario.size),
            "--warmup",
            str(warmup),
            "--duration",
            str(duration),
            "--backend-pid",
            str(self.backend_pid),
        ]
        if scenario.deflate:
            argv.append("--deflate")
        for header in setup.headers:
            argv += ["--header", header]
        watch = setup.pids
        if not watch and scenario.mode == "idle":
            watch = [self.backend_pid]  # direct: the backend's own growth, for reference
        for pid in watch:
            argv += ["--watch-pid", str(pid)]
        budget = warmup + duration + (90.0 if scenario.mode == "idle" else 30.0)
        argv += ["--hard-timeout", str(budget)]
        before = wsgw_counters(setup)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=budget + 10, env=child_env()
            )
        except subprocess.TimeoutExpired:
            return {"errors": 1, "error_samples": ["load generator timed out"]}
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            return {"errors": 1, "error_samples": [f"load generator exit {done.returncode}", *tail]}
        result: dict[str, Any] = json.loads(lines[-1])
        if before is not None:
            result["counted"] = _counted(setup, before, int(result.get("sent", 0)))
        dead = self.alive()
        if dead:
            result["errors"] = int(result.get("errors", 0)) + 1
            result.setdefault("error_samples", []).append(f"process died: {dead}")
        return result


# ------------------------------------------------------------------------ helpers
def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def oauth2_token(port: int, key: str, secret: str) -> str:
    """RFC 6749 §4.4 client credentials grant against the gateway's token endpoint."""
    basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}/oauth2/token",
        data=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        return str(json.loads(resp.read())["access_token"])


def wsgw_counters(setup: Setup) -> tuple[int, int, int] | None:
    """(messages client→backend, backend→client, throttled) from wsgw's /stats."""
    if setup.admin is None:
        return None
    try:
        stats = json.loads(http_get(f"http://{setup.admin}/stats"))
    except OSError:
        return None
    c2b = b2c = throttled = 0
    for entry in stats.get("apis", {}).values():
        c2b += entry["messages"]["client_to_backend"]
        b2c += entry["messages"]["backend_to_client"]
        throttled += sum(_leaf_sum(v) for v in entry.get("throttled", {}).values())
    return c2b, b2c, throttled


def _leaf_sum(value: object) -> int:
    if isinstance(value, dict):
        return sum(_leaf_sum(v) for v in value.values())
    return int(value) if isinstance(value, int | float) else 0


def _counted(setup: Setup, before: tuple[int, int, int], sent: int) -> str:
    """Did the gateway count every message both ways and throttle none? Counters of a
    connection are folded in when it closes, so wait (bounded) for the last closes."""
    after = before
    for _ in range(40):
        after = wsgw_counters(setup) or before
        if after[0] - before[0] >= sent and after[1] - before[1] >= sent:
            break
        time.sleep(0.05)
    c2b, b2c, thr = (a - b for a, b in zip(after, before, strict=True))
    if c2b == sent and b2c == sent and thr == 0:
        return "ok"
    return f"sent {sent}, counted {c2b}/{b2c}, throttled {thr}"


def machine_summary() -> dict[str, str]:
    import platform

    import picows
    import uvloop
    import websockets

    info = {
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "picows": picows.__version__ if hasattr(picows, "__version__") else "?",
        "uvloop": uvloop.__version__,
        "websockets": websockets.__version__,
    }
    binary = nginx_binary()
    info["nginx"] = nginx_version(binary) if binary else "not installed"
    info["repo"] = str(REPO)
    return info
