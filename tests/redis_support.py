"""Redis for tests: the shared server on 127.0.0.1:6379, or a private one a test may kill.

Policy (issue 3, section 7): a test that needs Redis FAILS when Redis is unreachable and the
environment variable CI is set (CI must run it); elsewhere it is skipped with a reason.
Use the fixtures from a conftest.py:  ``from tests.redis_support import redis_url, redis_prefix``
(re-exported fixtures), or call ``require_redis()`` directly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379"
_reachable: dict[str, bool] = {}


def redis_reachable(url: str = REDIS_URL, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at `url` (cached per URL for the session)."""
    if url not in _reachable:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            _reachable[url] = bool(client.ping())
        except (redis.RedisError, OSError):
            _reachable[url] = False
        finally:
            client.close()
    return _reachable[url]


def require_redis(url: str = REDIS_URL) -> str:
    """The URL, or fail (CI set) / skip (elsewhere) when Redis does not answer there."""
    if not redis_reachable(url):
        unavailable(f"Redis is not reachable at {url} (start it: see .ci/run)")
    return url


def unavailable(message: str) -> NoReturn:
    """Fail when CI is set (CI must run Redis tests), else skip with the reason."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message}; CI is set, so tests that need Redis must run", pytrace=False)
    pytest.skip(message)


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix` (a test's own namespace); returns how many."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (127.0.0.1:6379), fail-in-CI / skip-elsewhere when it is missing."""
    return require_redis(REDIS_URL)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"wsgw-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own (never the shared one), to kill and restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (a private server is needed)")
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except (redis.RedisError, OSError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.kill()
        pytest.fail(f"private redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the abrupt outage (no goodbye to the clients)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
            self._process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started private Redis on a free port; killed at the end whatever happens."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
