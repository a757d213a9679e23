"""The benchmark's load generator: picows + uvloop, in its own process, one JSON line out.

    python bench/loadgen.py echo  --url ws://127.0.0.1:9000/p --conns 64 --inflight 8 --size 32
    python bench/loadgen.py cycle --url ... --conns 32 --size 32       # connections per second
    python bench/loadgen.py idle  --url ... --conns 9900 --watch-pid P # memory per connection

echo:  N connections each keep W binary messages of S bytes in flight; every echo is checked
       against what was sent (content and order: 8-byte sequence number + a per-connection
       random body), and a message never echoed by the end is an error.
       With --deflate: permessage-deflate offered (no context takeover both ways) and every
       message ~S bytes of JSON-like text, compressed and self-contained, sent with RSV1
       (bench/zpayload.py composes them from precompressed pieces); the echo must come back
       with the same compressed bytes and RSV1.
cycle: N workers loop connect + handshake (+ token) + 1 echo + close handshake.
idle:  opens N connections (1 echo each), holds them, and reads the RSS growth of the
       watched processes (the proxy) per connection.

Counting starts after --warmup seconds and lasts --duration seconds. The CPU time of the
--watch-pid processes (the proxy) and of --backend-pid is read from /proc at the same two
instants, so CPU per round trip covers exactly the counted round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import cpu_seconds, raise_nofile, rss_bytes  # noqa: E402
from zpayload import Composer  # noqa: E402

BINARY = WSMsgType.BINARY
CLOSE = WSMsgType.CLOSE
CONNECT_CONCURRENCY = 128
HANDSHAKE_TIMEOUT_S = 15.0
ECHO_TIMEOUT_S = 10.0
MAX_ERRORS_KEPT = 5
# What the compressed scenarios offer: every message self-contained both ways (the load
# generator deflates each message on its own, and compares echoes as bytes)
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"


class Stats:
    __slots__ = ("counting", "done", "latencies_ns", "errors", "error_count", "extension")

    def __init__(self) -> None:
        self.extension: str | None = None  # the Sec-WebSocket-Extensions answer, if any
        self.counting = False
        self.done = 0
        self.latencies_ns = array("q")
        self.errors: list[str] = []
        self.error_count = 0

    def error(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(what)


class EchoConn(WSListener):
    """One connection keeping `inflight` messages outstanding; checks every echo."""

    def __init__(self, stats: Stats, size: int, inflight: int, rng: random.Random) -> None:
        super().__init__()
        self.stats = stats
        self.body = rng.randbytes(max(size - 8, 0))
        self.inflight = inflight
        self.expected: deque[tuple[int, bytes]] = deque()
        self.seq = 0
        self.sending = False
        self.rsv1 = False  # what every echo's RSV1 must be
        self.transport: WSTransport | None = None
        self.echoed = asyncio.get_running_loop().create_future()  # the first echo is back

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.sending = True
        for _ in range(self.inflight):
            self.send_one()

    def send_one(self) -> None:
        self.seq += 1
        payload = self.seq.to_bytes(8, "little") + self.body
        self.expected.append((time.perf_counter_ns(), payload))
        assert self.transport is not None
        self.transport.send(BINARY, payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        stats = self.stats
        if frame.msg_type != BINARY:
            if frame.msg_type == CLOSE and self.expected:
                stats.error(f"closed with {frame.get_close_code()} with echoes outstanding")
            return
        if not self.expected:
            stats.error("an echo nobody asked for")
            return
        sent_at, payload = self.expected.popleft()
        if not frame.fin or frame.rsv1 != self.rsv1 or frame.get_payload_as_bytes() != payload:
            stats.error(f"echo differs from message (seq {int.from_bytes(payload[:8], 'little')})")
        elif stats.counting:
            stats.done += 1
            stats.latencies_ns.append(time.perf_counter_ns() - sent_at)
        if not self.echoed.done():
            self.echoed.set_result(None)
        if self.sending:
            self.send_one()


class DeflateEchoConn(EchoConn):
    """EchoConn with compressed messages (RSV1), composed by the shared `Composer`."""

    def __init__(self, stats: Stats, inflight: int, composer: Composer, conn_id: int) -> None:
        super().__init__(stats, 8, inflight, composer.rng)
        self.composer = composer
        self.conn_id = conn_id
        self.rsv1 = True
        self.raw_bytes = 0  # summed over the messages sent, for the report
        self.wire_bytes = 0

    def send_one(self) -> None:
        self.seq += 1
        payload, raw_len = self.composer.compose(self.seq, self.conn_id)
        self.raw_bytes += raw_len
        self.wire_bytes += len(payload)
        self.expected.append((time.perf_counter_ns(), payload))
        assert self.transport is not None
        self.transport.send(BINARY, payload, rsv1=True)


def _factory(
    stats: Stats, size: int, inflight: int, rng: random.Random, composer: Composer | None
) -> Callable[[], EchoConn]:
    if composer is None:
        return lambda: EchoConn(stats, size, inflight, rng)
    ids = iter(range(1, 1 << 30))
    return lambda: DeflateEchoConn(stats, inflight, composer, next(ids))


def check_deflate_answer(answer: str | None) -> str | None:
    """Why the server's Sec-WebSocket-Extensions answer does not fit what we send, or None.
    Our messages are deflated with a 32 KiB window: a smaller client window is refused."""
    if not answer or answer.split(";")[0].strip().lower() != "permessage-deflate":
        return f"permessage-deflate not negotiated (answer: {answer!r})"
    for param in answer.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "client_max_window_bits" and value.strip(' "') != "15":
            return f"the server limits our window ({answer!r}); we deflate with 15 bits"
    return None


async def open_conns(
    args: argparse.Namespace, stats: Stats, n: int, inflight: int
) -> list[EchoConn]:
    """n connections, CONNECT_CONCURRENCY handshakes at a time, each with one verified echo."""
    rng = random.Random(os.getpid())
    headers = dict(h.split(": ", 1) for h in args.header)
    composer = None
    if args.deflate:
        headers["Sec-WebSocket-Extensions"] = DEFLATE_OFFER
        composer = Composer(args.size, rng)
        composer.self_check()
    factory = _factory(stats, args.size, inflight, rng, composer)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    conns: list[EchoConn] = []

    async def one() -> None:
        async with sem:
            transport, listener = await ws_connect(
                factory,
                args.url,
                extra_headers=headers,
                websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                enable_auto_pong=True,
                max_frame_size=64 * 1024 * 1024,
            )
            if not isinstance(listener, EchoConn):  # None when the peer hung up at once
                raise ConnectionError("connection closed right after the handshake")
            if args.deflate:
                answer = transport.response.headers.get("Sec-WebSocket-Extensions")
                stats.extension = answer
                why = check_deflate_answer(answer)
                if why is not None:
                    transport.disconnect(graceful=False)
                    raise ConnectionError(why)
            conn = listener
            conns.append(conn)
            conn.send_one()  # one echo proves the relay path works before timing starts
            await asyncio.wait_for(conn.echoed, ECHO_TIMEOUT_S)

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            stats.error(f"connect: {type(res).__name__}: {res}")
    return conns


async def close_conns(conns: list[EchoConn], timeout_s: float) -> None:
    """Client-initiated close handshake on every connection, bounded in time."""
    waits = []
    for conn in conns:
        t = conn.transport
        if t is not None and not t.is_disconnected:
            t.send_close(WSCloseCode.OK)
            waits.append(asyncio.ensure_future(t.wait_disconnected()))
    if waits:
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for fut in pending:
            fut.cancel()
    for conn in conns:
        if conn.transport is not None and not conn.transport.is_disconnected:
            conn.transport.disconnect(graceful=False)


class Window:
    """The counted interval: wall time and CPU time of the watched processes at both ends."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.proxy = args.watch_pid
        self.backend = args.backend_pid
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = (0.0, 0.0, 0.0)

    def _cpu(self) -> tuple[float, float, float]:
        return cpu_seconds(self.proxy), cpu_seconds(self.backend), cpu_seconds([os.getpid()])

    def begin(self) -> None:
        self.cpu0, self.t0 = self._cpu(), time.perf_counter()

    def end(self) -> None:
        self.t1, self.cpu1 = time.perf_counter(), self._cpu()

    def report(self, stats: Stats) -> dict[str, object]:
        lat = sorted(stats.latencies_ns)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else None

        return {
            "window_s": self.t1 - self.t0,
            "count": stats.done,
            "per_s": stats.done / (self.t1 - self.t0) if self.t1 > self.t0 else 0.0,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "p999_us": pct(0.999),
            "proxy_cpu_s": self.cpu1[0] - self.cpu0[0],
            "backend_cpu_s": self.cpu1[1] - self.cpu0[1],
            "loadgen_cpu_s": self.cpu1[2] - self.cpu0[2],
        }


async def run_echo(args: argparse.Namespace, stats: Stats) -> dict[str, object]:
    conns = await open_conns(args, stats, args.conns, args.inflight)
    if stats.error_count:
        await close_conns(conns, 5.0)
        return {}
    window = Window(args)
    for conn in conns:
        conn.start()
    await asyncio.sleep(args.warmup)
    window.begin()
    stats.counting = True
    await asyncio.sleep(args.duration)
    stats.counting = False
    window.end()
    for conn in conns:
        conn.sending = False
    # Every message sent must come back: wait (bounded) for the last echoes.
    deadline = time.monotonic() + ECHO_TIMEOUT_S
    while any(c.expected for c in conns) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    lost = sum(len(c.expected) for c in conns)
    if lost:
        stats.error(f"{lost} messages never echoed")
    await close_conns(conns, 5.0)
    result = {**window.report(stats), "sent": sum(c.seq for c in conns)}
    deflated = [c for c in conns if isinstance(c, DeflateEchoConn)]
    if deflated and result["sent"]:
        sent = int(result["sent"])  # type: ignore[call-overload]
        result["raw_bytes"] = sum(c.raw_bytes for c in deflated) / sent
        result["wire_bytes"] = sum(c.wire_bytes for c in deflated) / sent
        result["extension"] = stats.extension
    return result


class CycleConn(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.echo: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == BINARY and not self.echo.done():
            self.echo.set_result(frame.get_payload_as_bytes())


async def run_cycle(args: argparse.Namespace, stats: Stats) -> dict[str, object]:
    headers = dict(h.split(": ", 1) for h in args.header)
    body = random.Random(os.getpid()).randbytes(max(args.size - 8, 0))
    window = Window(args)
    stop_at = time.monotonic() + args.warmup + args.duration
    seq = 0

    async def worker() -> None:
        nonlocal seq
        while time.monotonic() < stop_at and stats.error_count == 0:
            started = time.perf_counter_ns()
            seq += 1
            payload = seq.to_bytes(8, "little") + body
            try:
                transport, listener = await ws_connect(
                    CycleConn,
                    args.url,
                    extra_headers=headers,
                    websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
                if not isinstance(listener, CycleConn):
                    raise ConnectionError("connection closed right after the handshake")
                transport.send(BINARY, payload)
                echo = await asyncio.wait_for(listener.echo, ECHO_TIMEOUT_S)
                transport.send_close(WSCloseCode.OK)
                await asyncio.wait_for(transport.wait_disconnected(), ECHO_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - reported, ends the run
                stats.error(f"cycle: {type(err).__name__}: {err}")
                return
            if echo != payload:
                stats.error("echo differs from message")
            elif stats.counting:
                stats.done += 1
                stats.latencies_ns.append(time.perf_counter_ns() - started)

    async def clock() -> None:
        await asyncio.sleep(args.warmup)
        window.begin()
        stats.counting = True
        await asyncio.sleep(args.duration)
        stats.counting = False
        window.end()

    await asyncio.gather(clock(), *(worker() for _ in range(args.conns)))
    return {**window.report(stats), "sent": seq}


async def run_idle(args: argparse.Namespace, stats: Stats) -> dict[str, object]:
    # Warm the proxy's code paths and allocator first, so the growth is per connection.
    warm = await open_conns(args, stats, min(64, args.conns), 1)
    await close_conns(warm, 5.0)
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(args.watch_pid)
    t0 = time.perf_counter()
    conns = await open_conns(args, stats, args.conns, 1)
    opened_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # let the proxy settle (buffers released, handshakes done)
    rss1 = rss_bytes(args.watch_pid)
    held = sum(1 for c in conns if c.transport is not None and not c.transport.is_disconnected)
    if held != args.conns:
        stats.error(f"{args.conns - held} of {args.conns} connections not open")
    await close_conns(conns, 30.0)
    return {
        "connections": held,
        "rss_before": rss0,
        "rss_after": rss1,
        "bytes_per_conn": (rss1 - rss0) / held if held else None,
        "open_s": opened_s,
        "sent": sum(c.seq for c in warm) + sum(c.seq for c in conns),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["echo", "cycle", "idle"])
    p.add_argument("--url", required=True)
    p.add_argument("--header", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--inflight", type=int, default=1)
    p.add_argument("--size", type=int, default=32)
    p.add_argument(
        "--deflate",
        action="store_true",
        help="echo and idle modes: permessage-deflate, ~SIZE bytes of text per message",
    )
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--watch-pid", type=int, action="append", default=[], help="the proxy")
    p.add_argument("--backend-pid", type=int, action="append", default=[])
    p.add_argument("--hard-timeout", type=float, default=120.0, help="exit(3) past this")
    args = p.parse_args(argv)
    if args.size < 8:
        p.error("--size must be >= 8 (the sequence number)")
    if args.deflate and args.mode == "cycle":
        p.error("--deflate is for the echo and idle modes")
    return args


async def main(args: argparse.Namespace) -> dict[str, object]:
    # The last line of defence of "every loop bounded": the process ends, whatever happens.
    asyncio.get_running_loop().call_later(args.hard_timeout, os._exit, 3)
    stats = Stats()
    runner = {"echo": run_echo, "cycle": run_cycle, "idle": run_idle}[args.mode]
    result = await runner(args, stats)
    result["errors"] = stats.error_count
    result["error_samples"] = stats.errors
    return result


def cli() -> int:
    import uvloop

    args = parse_args()
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        result = uvloop.run(main(args))
        print(json.dumps(result), flush=True)
        return 1 if result["errors"] else 0
    return 130


if __name__ == "__main__":
    sys.exit(cli())
