"""`python -m wsgw serve` as a real process, set up with the CLI exactly as the README
does: keys init, app create, keys generate, subscribe, token. Then a client through it,
subscriptions reloaded while it runs, SIGTERM, and a config it must refuse."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wsgw.tools.echo import start_echo_server

from .backends import TIMEOUT, free_port
from .conftest import base_config

REPO = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wsgw(*argv: str, cwd: Path) -> tuple[int, str, str]:
    """Run `python -m wsgw ARGV…` to completion (bounded): (status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsgw",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=child_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Deployment:
    directory: Path
    config: Path
    port: int
    admin_port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echowebsocket/1.0"

    async def cli(self, *argv: str) -> str:
        """A `wsgw` command against this deployment's config; it must succeed."""
        status, out, err = await wsgw(*argv, "-c", str(self.config), cwd=self.directory)
        assert status == 0, f"wsgw {' '.join(argv)}: {err}"
        return out

    async def token(self) -> str:
        out = await self.cli("token", "DefaultApplication")
        return out.strip()

    async def serve(self, *extra: str) -> asyncio.subprocess.Process:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsgw",
            "serve",
            "-c",
            str(self.config),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.directory,
            env=child_env(),
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.returncode is None, "wsgw serve exited at start"
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
                writer.close()
                return self.process
            assert time.monotonic() < deadline, "wsgw serve did not start listening"
            await asyncio.sleep(0.05)


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A config with free ports and an in-process echo backend; the signing key, the
    application and its production keys made by the CLI. Not subscribed yet."""
    echo = await start_echo_server("127.0.0.1", 0, prefix="[production] ")
    echo_url = f"ws://127.0.0.1:{echo.sockets[0].getsockname()[1]}"
    raw = base_config(echo_url, None)
    del raw["apis"][0]["endpoints"]["sandbox"]
    port, admin_port = free_port(), free_port()
    raw["gateway"]["listen"] = f"127.0.0.1:{port}"
    raw["gateway"]["admin_listen"] = f"127.0.0.1:{admin_port}"
    config = tmp_path / "wsgw.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    dep = Deployment(tmp_path, config, port, admin_port)
    await dep.cli("keys", "init")
    assert (tmp_path / "keys" / "signing.pem").stat().st_mode & 0o077 == 0
    await dep.cli("app", "create", "DefaultApplication")
    out = await dep.cli("keys", "generate", "DefaultApplication", "--key-type", "production")
    assert "consumer_key" in out
    yield dep
    if dep.process is not None and dep.process.returncode is None:
        dep.process.kill()
        await dep.process.wait()
    echo.close()


async def test_sigterm_without_a_drain_closes_clients_with_1001_and_exits_0(
    deployment: Deployment,
) -> None:
    # The fast path: nothing to drain for (test_drain.py has the drain itself).
    raw = yaml.safe_load(deployment.config.read_text())
    raw["gateway"].update(drain_s=0, drain_close_window_s=0)
    deployment.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    token = await deployment.token()
    process = await deployment.serve()
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(deployment.url, additional_headers=headers, proxy=None) as ws:
        await ws.send("through a real process")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] through a real process"
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1001
        assert await asyncio.wait_for(process.wait(), 5.0) == 0
    assert time.monotonic() - started < 5.0
    assert process.stderr is not None
    stderr = (await process.stderr.read()).decode()
    assert "Traceback" not in stderr
    assert token not in stderr  # no secrets in the logs
    # It stopped accepting: nothing listens on the port any more.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", deployment.port)


async def test_subscription_added_while_running_is_honoured(deployment: Deployment) -> None:
    token = await deployment.token()
    await deployment.serve()
    headers = {"Authorization": f"Bearer {token}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(deployment.url, additional_headers=headers, proxy=None):
            pass
    assert refused.value.response.status_code == 403
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    subscribed_at = time.monotonic()
    while True:
        try:
            async with connect(deployment.url, additional_headers=headers, proxy=None) as ws:
                await ws.send("now subscribed")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] now subscribed"
                break
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 403
            assert time.monotonic() - subscribed_at < 3.0, "subscription not picked up"
            await asyncio.sleep(0.1)


async def test_bad_config_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "wsgw.yaml"
    config.write_text('gateway:\n  listen: "127.0.0.1:0"\n  max_message_bytes: -5\napis: []\n')
    status, _, err = await wsgw("serve", "-c", str(config), cwd=tmp_path)
    assert status == 2
    assert "wsgw.yaml:3:" in err
    assert "max_message_bytes" in err
    assert "Traceback" not in err


async def test_missing_signing_key_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "wsgw.yaml"
    config.write_text(yaml.safe_dump(base_config("ws://127.0.0.1:1", None)))
    (tmp_path / "subscriptions.yaml").write_text("applications: []\n")
    status, _, err = await wsgw("serve", "-c", str(config), cwd=tmp_path)
    assert status == 2
    assert "keys init" in err
    assert "Traceback" not in err
