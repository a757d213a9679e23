"""The Python reference: a plain WebSocket proxy written with the websockets library.

    python bench/wsproxy.py --listen 127.0.0.1:9400 --backend ws://127.0.0.1:9300

Each client connection opens one connection to the backend (same path and query) and two
tasks relay messages both ways until either side closes. No auth, no limits, no counting:
this is what a user would write in an afternoon, on uvloop like the gateway so the
comparison is about the relay and not the event loop. Compression is off on both legs (the
load generator never offers it; websockets would otherwise offer it to the backend).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import raise_nofile  # noqa: E402

MAX_MESSAGE = 64 * 1024 * 1024


async def pump(source, sink) -> None:  # noqa: ANN001 - client or server connection
    with contextlib.suppress(ConnectionClosed):
        async for message in source:
            await sink.send(message)


async def relay(client: ServerConnection, backend_url: str) -> None:
    assert client.request is not None  # set once the handshake is done
    target = backend_url + client.request.path
    try:
        backend = await connect(
            target, compression=None, max_size=MAX_MESSAGE, ping_interval=None, open_timeout=10
        )
    except (OSError, TimeoutError, ConnectionClosed) as err:
        await client.close(1014, f"backend: {type(err).__name__}")
        return
    async with backend:
        up = asyncio.ensure_future(pump(client, backend))
        down = asyncio.ensure_future(pump(backend, client))
        _, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    await client.close()


async def main(host: str, port: int, backend_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        lambda ws: relay(ws, backend_url.rstrip("/")),
        host,
        port,
        compression=None,
        max_size=MAX_MESSAGE,
        ping_interval=None,
        backlog=1024,
    ):
        print(f"websockets proxy on ws://{host}:{port} -> {backend_url}", flush=True)
        await stop.wait()


def cli() -> int:
    import uvloop

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9400", metavar="HOST:PORT")
    p.add_argument("--backend", required=True, metavar="ws://HOST:PORT")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    raise_nofile()
    uvloop.run(main(host, int(port), args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
