"""Connection caps counted across processes in Redis; a crashed process's counts expire."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as redis_asyncio

from wsgw.pipeline.cluster import ClusterLimits

from .helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


async def test_caps_are_shared_and_released(redis_url: str, redis_prefix: str) -> None:
    first = ClusterLimits(redis_url, "closed", key_prefix=redis_prefix)
    second = ClusterLimits(redis_url, "closed", key_prefix=redis_prefix)
    await first.start()
    await second.start()
    key = "sub:app:api:1"
    try:
        assert await first.acquire_connection(key, 3)
        assert await first.acquire_connection(key, 3)
        assert await second.acquire_connection(key, 3)
        assert not await second.acquire_connection(key, 3)  # 3 held across both
        assert not await first.acquire_connection(key, 3)
        assert await second.acquire_connection("app:app", 1)  # another scope: its own cap
        await first.release_connection(key)
        assert await second.acquire_connection(key, 3)
        assert (first.connections_held(key), second.connections_held(key)) == (1, 2)
        await first.stop()  # its last connection goes with it
        assert await second.acquire_connection(key, 3)
        assert not await second.acquire_connection(key, 3)
        await second.release_connection(key)
        await second.release_connection(key)
        await second.release_connection(key)
        await second.release_connection(key)  # one too many: ignored, never negative
        assert second.connections_held(key) == 0
        assert await second.acquire_connection(key, 1)
        assert not await second.acquire_connection(key, 1)
    finally:
        await first.stop()
        await second.stop()


async def test_crashed_process_counts_expire(redis_url: str, redis_prefix: str) -> None:
    ttl_s, key = 0.6, "api:crash:1"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    worker = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "hold-conns",
            "--url",
            redis_url,
            "--prefix",
            redis_prefix,
            "--key",
            key,
            "--count",
            "2",
            "--heartbeat-ttl",
            str(ttl_s),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    survivor = ClusterLimits(redis_url, "closed", key_prefix=redis_prefix, heartbeat_ttl_s=ttl_s)
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline().decode().strip()  # bounded: the worker exits on error
        assert line == "held", (line, worker.stderr.read().decode() if worker.stderr else "")
        await survivor.start()
        assert not await survivor.acquire_connection(key, 2)  # the worker holds both
        await wait_for(lambda: False, 2 * ttl_s)
        assert not await survivor.acquire_connection(key, 2)  # its heartbeat keeps them
        worker.kill()  # SIGKILL: no stop(), no release
        worker.wait(timeout=5)
        killed_at = time.monotonic()
        acquired = False

        async def retry() -> None:
            nonlocal acquired
            acquired = acquired or await survivor.acquire_connection(key, 2)

        end = killed_at + ttl_s + 1.5
        while not acquired and time.monotonic() < end:
            await retry()
            await wait_for(lambda: False, 0.05)
        waited = time.monotonic() - killed_at
        assert acquired, "a crashed process's connections never expired"
        assert waited <= ttl_s + 0.5, waited
        counts = await client.hgetall(f"{redis_prefix}conn:{key}")
        assert counts == {survivor.process_id.encode(): b"1"}  # the dead entry is gone
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await survivor.stop()
        await client.aclose()
