"""Limits shared across gateway processes through a real Redis, at the gateway level: two
gateways sharing one budget, a Redis outage under `redis_failure: open` and `closed`, and
`wsgw serve --workers N`.

Each test runs its own redis-server (tests.redis_support.PrivateRedis), so that buckets
never leak between tests and the shared server on 6379 is never killed.
"""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pytest
import redis.asyncio
import yaml
from websockets.asyncio.client import connect

from tests.redis_support import PrivateRedis, private_redis  # noqa: F401 (fixture)

from .conftest import GatewayFactory
from .test_serve_process import Deployment, deployment  # noqa: F401 (fixture)
from .test_throttling import sample, scrape, with_tier

RECV_S = 5.0


def clustered(redis_url: str, failure: str, tier: dict) -> object:
    add_tier = with_tier("Shared", tier)

    def edit(raw: dict) -> None:
        add_tier(raw)
        raw["gateway"]["redis_url"] = redis_url
        raw["gateway"]["redis_failure"] = failure

    return edit


async def echo_count(url: str, headers: dict, messages: int) -> tuple[int, int]:
    """Send `messages` messages at a steady pace (demand that lasts longer than a lease
    round, as the documented bound assumes), then collect for a second:
    (echoes, drop notices)."""
    echoes = notices = 0

    async def collect(ws: object, until: float) -> None:
        nonlocal echoes, notices
        while time.monotonic() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), until - time.monotonic())  # type: ignore[attr-defined]
            except TimeoutError:
                return
            if str(message).startswith("[production]"):
                echoes += 1
            else:
                notices += 1

    async with connect(url, additional_headers=headers) as ws:
        reader = asyncio.create_task(collect(ws, time.monotonic() + messages * 0.02 + 1.0))
        for i in range(messages):
            await ws.send(f"m{i}")
            await asyncio.sleep(0.02)
        await reader
    return echoes, notices


async def test_two_gateways_share_one_budget(
    make_gateway: GatewayFactory,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    edit = clustered(private_redis.url, "open", {"messages_per_minute": 40, "on_limit": "drop"})
    first = await make_gateway(edit=edit, subscribe_to=("EchoWebSocket", "1.0", "Shared"))
    second = await make_gateway(edit=edit)
    # One subscription, two gateways: alone, each would let 40 messages through.
    results = await asyncio.gather(
        echo_count(first.url, first.auth(), 60), echo_count(second.url, second.auth(), 60)
    )
    forwarded = 0.0
    for env in (first, second):
        samples = await scrape(env)
        for direction in ("client_to_backend", "backend_to_client"):
            forwarded += sample(
                samples,
                "wsgw_messages_total",
                api="EchoWebSocket",
                version="1.0",
                application="DefaultApplication",
                direction=direction,
            )
    # 40 tokens, plus the refill over the test (40/60 per second, a few seconds), plus the
    # documented over-admission bound (P = 2 processes).
    assert 38 <= forwarded <= 48, (forwarded, results)
    assert sum(notices for _, notices in results) >= 1


async def test_redis_outage_with_failure_open_falls_back_and_recovers(
    make_gateway: GatewayFactory,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    env = await make_gateway(
        edit=clustered(private_redis.url, "open", {"messages_per_minute": 100000}),
        subscribe_to=("EchoWebSocket", "1.0", "Shared"),
    )
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] before"
        private_redis.kill()
        for i in range(20):  # local limits now: traffic flows all the while
            await ws.send(f"during {i}")
            assert await asyncio.wait_for(ws.recv(), RECV_S) == f"[production] during {i}"
            await asyncio.sleep(0.05)
        await _wait_metric(env, "wsgw_cluster_fallbacks_total", lambda v: v >= 1)
        assert await _metric(env, "wsgw_cluster_redis_healthy") == 0
        private_redis.start()  # same port
        await _wait_metric(env, "wsgw_cluster_redis_healthy", lambda v: v == 1)
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] after"
    assert await _metric(env, "wsgw_cluster_fallbacks_total") == 1  # one outage, counted once


async def test_redis_outage_with_failure_closed_throttles(
    make_gateway: GatewayFactory,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    env = await make_gateway(
        edit=clustered(
            private_redis.url,
            "closed",
            {"messages_per_minute": 100000, "max_connections": 10},
        ),
        subscribe_to=("EchoWebSocket", "1.0", "Shared"),
    )
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] before"
        private_redis.kill()
        await _wait_metric(env, "wsgw_cluster_redis_healthy", lambda v: v == 0)
        throttled = False
        for i in range(5000):  # the tokens already leased run out, then nothing passes
            await ws.send(f"m{i}")
            reply = await asyncio.wait_for(ws.recv(), RECV_S)
            if reply.startswith("{"):
                assert orjson.loads(reply)["code"] == 4008
                throttled = True
                break
        assert throttled
    with pytest.raises(Exception) as refused:  # noqa: PT011
        async with connect(env.url, additional_headers=env.auth()):
            pass
    assert "429" in str(refused.value)


async def test_workers_without_redis_refuse_to_multiply_limits(
    deployment: Deployment,  # noqa: F811
) -> None:
    status, _, err = await _serve_exit(deployment, "--workers", "2")
    assert status == 2
    assert "gateway.redis_url" in err


async def test_workers_share_the_port_and_stop_cleanly(
    deployment: Deployment,  # noqa: F811
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    raw = yaml.safe_load(deployment.config.read_text())
    raw["gateway"]["redis_url"] = private_redis.url
    deployment.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    await deployment.cli("subscribe", "DefaultApplication", "EchoWebSocket:1.0", "--tier", "Gold")
    token = await deployment.token()
    process = await deployment.serve("--workers", "2")
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(6):  # the kernel spreads them over both workers
        async with connect(deployment.url, additional_headers=headers) as ws:
            await ws.send(f"w{i}")
            assert await asyncio.wait_for(ws.recv(), RECV_S) == f"[production] w{i}"
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 8.0) == 0


async def _serve_exit(deployment: Deployment, *extra: str) -> tuple[int, str, str]:  # noqa: F811
    from .test_serve_process import wsgw

    return await wsgw("serve", "-c", str(deployment.config), *extra, cwd=deployment.directory)


async def _metric(env: object, name: str) -> float:
    samples = await scrape(env)  # type: ignore[arg-type]
    return sample(samples, name)


async def _wait_metric(env: object, name: str, ok: object, timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await _metric(env, name)
        if ok(value):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"{name} stayed at {value}"
        await asyncio.sleep(0.1)


async def test_events_reach_a_redis_stream(
    make_gateway: GatewayFactory,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    def edit(raw: dict) -> None:
        raw["gateway"]["redis_url"] = private_redis.url
        raw["analytics"] = {"redis_stream": "wsgw:events", "stream_maxlen": 1000}

    env = await make_gateway(edit=edit)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("to the stream")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] to the stream"
    client = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        deadline = time.monotonic() + 5
        events: list[dict] = []
        while time.monotonic() < deadline:
            entries = await client.xrange("wsgw:events")
            events = [orjson.loads(fields[b"event"]) for _, fields in entries]
            if any(e["type"] == "connection" for e in events):
                break
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    connection = next(e for e in events if e["type"] == "connection")
    assert connection["messages_in"] == 1 and connection["messages_out"] == 1
    assert connection["api"] == "EchoWebSocket" and connection["closed_by"] == "client"
