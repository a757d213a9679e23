"""`wsgw demo` as a user runs it: start it, take the token and URL it prints, talk through
the gateway with a third-party client (production and sandbox), get a token from the
printed curl credentials, then Ctrl-C (SIGINT) and a clean exit."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
from websockets.asyncio.client import connect

from .backends import TIMEOUT, free_port
from .test_serve_process import child_env


async def test_demo_walks_the_tutorial(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsgw",
        "demo",
        "--port",
        str(port),
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert process.stdout is not None
        printed = ""
        while "Ctrl-C stops the demo." not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line, "wsgw demo exited early"
            printed += line.decode()
        url = re.search(r"API URL\s+(\S+)", printed).group(1)  # type: ignore[union-attr]
        tokens = re.findall(r"wsgw client \S+ --token (\S+)", printed)
        assert url == f"ws://127.0.0.1:{port}/echowebsocket/1.0"
        for token, backend in zip(tokens, ("production", "sandbox"), strict=True):
            headers = {"Authorization": f"Bearer {token}"}
            async with connect(url, additional_headers=headers) as ws:
                await ws.send("hello from the tutorial")
                reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert reply == f"[{backend}] hello from the tutorial"
        credentials = re.search(r"curl -s -u (\S+)", printed).group(1)  # type: ignore[union-attr]
        consumer_key, consumer_secret = credentials.strip("'").split(":", 1)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": aiohttp.encode_basic_auth(consumer_key, consumer_secret)},
            ) as response,
        ):
            assert response.status == 200
            assert (await response.json())["token_type"] == "Bearer"
        assert (tmp_path / "wsgw.yaml").exists() and (tmp_path / "subscriptions.yaml").exists()
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
