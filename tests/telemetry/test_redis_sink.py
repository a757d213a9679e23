"""The Redis Stream sink against the real Redis on 127.0.0.1:6379, and a dead one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from .conftest import REDIS_URL, Clock, Counters, L, free_port, make_telemetry, record, scrape
from .test_events import wait_until


async def test_events_reach_the_stream(redis_stream, tmp_path: Path) -> None:  # noqa: ANN001
    client, key = redis_stream
    path = tmp_path / "events.jsonl"
    clock = Clock()
    t = make_telemetry(clock, events_file=str(path), redis_url=REDIS_URL, redis_stream=key)
    await t.start()
    t.refused("chat", "v1", 401, client="10.0.0.1", application=None, reason="invalid token")
    counters = Counters()
    rec = record(clock, counters)
    t.opened(rec)
    counters.add(c2b=(2, 20), b2c=(1, 7))
    t.throttled(rec, "subscription", "close")
    clock.now += 1.5
    rec.close_code, rec.closed_by = 1008, "gateway"
    t.closed(rec)
    await t.stop()

    entries = await client.xrange(key)
    assert [fields[b"type"] for _, fields in entries] == [b"refusal", b"throttle", b"connection"]
    from_stream = [orjson.loads(fields[b"event"]) for _, fields in entries]
    # Both sinks carry the same events.
    assert from_stream == [orjson.loads(line) for line in path.read_bytes().splitlines()]
    connection = from_stream[-1]
    assert (connection["messages_in"], connection["bytes_in"]) == (2, 20)
    assert (connection["messages_out"], connection["bytes_out"]) == (1, 7)
    assert connection["close_code"] == 1008 and connection["duration_s"] == 1.5
    assert t.stats()["events"]["redis"]["written"] == 3


async def test_stream_length_is_capped(redis_stream) -> None:  # noqa: ANN001
    client, key = redis_stream
    maxlen, n = 50, 1200
    t = make_telemetry(redis_url=REDIS_URL, redis_stream=key, stream_maxlen=maxlen)
    await t.start()
    for i in range(n):
        t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    await t.stop()
    assert t.sinks()[0].written == n
    # MAXLEN ~ trims whole stream nodes: the length stays within one node of the cap.
    node = int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    length = await client.xlen(key)
    assert maxlen <= length < maxlen + node
    ((_, last),) = await client.xrevrange(key, count=1)
    assert orjson.loads(last[b"event"])["reason"] == f"r{n - 1}"


async def test_dead_redis_never_raises_and_counts_failures() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    clock = Clock()
    t = make_telemetry(clock, redis_url=url, redis_stream="wsgw-events")
    await t.start()
    for i in range(10):
        rec = record(clock, None)
        t.opened(rec)
        t.closed(rec)
        t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    sink = t.sinks()[0]
    await wait_until(lambda: sink.failed >= 2)  # retried after the first failure
    samples, _ = scrape(t)
    assert samples[("wsgw_events_failed_total", L(sink="redis"))] >= 2
    assert samples[("wsgw_events_dropped_total", L(sink="redis"))] == 0
    assert len(sink.buffer) == 20  # kept for later, nothing lost yet
    began = time.monotonic()
    await t.stop(timeout_s=1.0)
    assert time.monotonic() - began < 3.0


@pytest.fixture
def private_redis_port() -> int:
    """A free port for a redis-server of the test's own (CI: the binary must be there)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    return free_port()


async def test_stream_catches_up_when_redis_comes_back(private_redis_port: int) -> None:
    """Events emitted while Redis is down are written, in order, once it answers."""
    port = private_redis_port
    url = f"redis://127.0.0.1:{port}/0"
    t = make_telemetry(redis_url=url, redis_stream="wsgw-events")
    await t.start()
    for i in range(3):
        t.refused("chat", "v1", 429, client="x", application="acme", reason=f"r{i}")
    sink = t.sinks()[0]
    await wait_until(lambda: sink.failed >= 1)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(lambda: sink.written == 3, timeout_s=5.0)
        t.refused("chat", "v1", 429, client="x", application="acme", reason="r3")
        await t.stop()
        assert sink.written == 4
        client = aioredis.Redis.from_url(url)
        entries = await client.xrange("wsgw-events")
        await client.aclose()
        assert [orjson.loads(f[b"event"])["reason"] for _, f in entries] == [
            "r0", "r1", "r2", "r3"
        ]  # fmt: skip
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(3)
        if server.poll() is None:
            server.kill()
            server.wait(3)
