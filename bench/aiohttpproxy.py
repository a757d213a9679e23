"""A plain WebSocket proxy written with aiohttp: the issue's "aiohttp proxy" column.

    python bench/aiohttpproxy.py --listen 127.0.0.1:9600 --backend ws://127.0.0.1:9300

Each client connection opens one connection to the backend (same path and query) with
aiohttp's client, and two tasks relay messages both ways until either side closes; the
close code goes through. No auth, no limits, no counting; on uvloop like the gateway,
compression off. What a user would write with aiohttp in an afternoon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

import aiohttp
from aiohttp import WSMsgType, web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import raise_nofile  # noqa: E402

MAX_MESSAGE = 64 * 1024 * 1024
FORWARDED = {WSMsgType.TEXT, WSMsgType.BINARY}


async def pump(source, sink) -> None:  # noqa: ANN001 - aiohttp client or server socket
    async for msg in source:
        if msg.type not in FORWARDED:
            break
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        else:
            await sink.send_bytes(msg.data)


async def relay(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    client = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False, autoping=True)
    await client.prepare(request)
    try:
        backend = await app["session"].ws_connect(
            app["backend"] + request.path_qs, max_msg_size=MAX_MESSAGE, compress=0
        )
    except (aiohttp.ClientError, OSError):
        await client.close(code=1014, message=b"backend unreachable")
        return client
    up = asyncio.ensure_future(pump(client, backend))
    down = asyncio.ensure_future(pump(backend, client))
    _, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    code = backend.close_code or client.close_code or 1000
    await backend.close(code=client.close_code or 1000)
    await client.close(code=code)
    return client


async def main(host: str, port: int, backend_url: str) -> None:
    app = web.Application()
    app["backend"] = backend_url.rstrip("/")
    app.router.add_get("/{tail:.*}", relay)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        app["session"] = session
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        print(f"aiohttp proxy on ws://{host}:{port} -> {backend_url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def cli() -> int:
    import uvloop

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9600", metavar="HOST:PORT")
    p.add_argument("--backend", required=True, metavar="ws://HOST:PORT")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt, web.GracefulExit):
        uvloop.run(main(host, int(port), args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
