"""Redis killed and restarted mid-run (a PRIVATE server: the shared one is never killed)."""

from __future__ import annotations

import logging
import time

import pytest
import redis.asyncio as redis_asyncio

from tests.redis_support import PrivateRedis, free_port
from wsgw._core import Limit
from wsgw.pipeline.cluster import ClusterLimits

from .helpers import drive, gate_of, wait_for

LOGGER = "wsgw.pipeline.cluster"


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and "unreachable" in r.getMessage()
    ]


async def test_failure_open_goes_local_and_comes_back(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = ClusterLimits(private_redis.url, "open", key_prefix="wsgw-test:", heartbeat_ttl_s=0.6)
    await cluster.start()
    limit = Limit(600, 0, 0)
    gate = gate_of(limit)
    key = "sub:app:api:1"
    try:
        cluster.attach(key, limit)
        assert cluster.healthy and limit.leased
        assert await cluster.acquire_connection(key, 5)
        assert sum(await drive([gate], 0.3)) > 0

        private_redis.kill()
        assert await wait_for(lambda: not cluster.healthy, 1.0)
        assert not limit.leased  # local fallback: a full local bucket
        during = await drive([gate], 0.7)  # several reconnect attempts fail meanwhile
        assert during[0] >= 600  # admissions continue (the local minute's worth)
        assert await cluster.acquire_connection(key, 5)  # local counts
        assert cluster.fallbacks_total == 1
        assert cluster.redis_errors_total >= 2
        assert len(outage_warnings(caplog)) == 1  # logged once per outage

        private_redis.start()  # same port, empty (its buckets come back full)
        assert await wait_for(lambda: cluster.healthy, 4.0), "did not reconnect by itself"
        # Healthy first, then the limits go back to leasing in the same recovery step; under
        # load the test may look in between.
        assert await wait_for(lambda: limit.leased, 1.0)
        assert sum(await drive([gate], 0.3)) > 0  # fed from Redis again
        client = redis_asyncio.Redis.from_url(private_redis.url)
        try:  # connection counts re-synced into the restarted Redis
            held = await client.hget(f"wsgw-test:conn:{key}", cluster.process_id)
        finally:
            await client.aclose()
        assert held == b"2"
        assert cluster.fallbacks_total == 1
        assert len(outage_warnings(caplog)) == 1
    finally:
        await cluster.stop()


async def test_failure_closed_throttles_while_down(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = ClusterLimits(private_redis.url, "closed", key_prefix="wsgw-test:")
    await cluster.start()
    limit = Limit(600, 0, 0)
    gate = gate_of(limit)
    try:
        cluster.attach("app:a", limit)
        assert sum(await drive([gate], 0.3)) > 0
        private_redis.kill()
        assert await wait_for(lambda: not cluster.healthy, 1.0)
        await drive([gate], 0.05)  # spends what it held when Redis went away
        down = await drive([gate], 0.5)
        assert down == [0]
        assert limit.leased
        assert not await cluster.acquire_connection("app:a", 5)
        assert cluster.fallbacks_total == 1
        assert len(outage_warnings(caplog)) == 1

        private_redis.start()
        assert await wait_for(lambda: cluster.healthy, 4.0)
        assert sum(await drive([gate], 0.3)) > 0
        assert await cluster.acquire_connection("app:a", 5)
    finally:
        await cluster.stop()


async def test_flushed_scripts_are_reloaded_without_an_outage(
    private_redis: PrivateRedis,
) -> None:
    cluster = ClusterLimits(private_redis.url, "closed", key_prefix="wsgw-test:")
    await cluster.start()
    limit = Limit(600, 0, 0)
    client = redis_asyncio.Redis.from_url(private_redis.url)
    try:
        cluster.attach("api:s:1", limit)
        assert sum(await drive([gate_of(limit)], 0.2)) > 0
        await client.script_flush()  # as after a failover to a replica without them
        await drive([gate_of(limit)], 0.1)  # spend the holding
        assert sum(await drive([gate_of(limit)], 0.3)) > 0  # NOSCRIPT -> load -> fed
        assert cluster.healthy and cluster.fallbacks_total == 0
    finally:
        await client.aclose()
        await cluster.stop()


@pytest.mark.parametrize("failure", ["open", "closed"])
async def test_redis_down_at_start(failure: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = ClusterLimits(f"redis://127.0.0.1:{free_port()}", failure)  # nobody listens
    started = time.monotonic()
    await cluster.start()  # never raises
    limit = Limit(60, 0, 0)
    try:
        assert time.monotonic() - started < 1.0
        cluster.attach("sub:x", limit)
        assert not cluster.healthy
        assert cluster.fallbacks_total == 1
        assert len(outage_warnings(caplog)) == 1
        admitted = sum(await drive([gate_of(limit)], 0.1))
        connected = await cluster.acquire_connection("sub:x", 1)
    finally:
        await cluster.stop()
    samples = {name: value for name, _type, _doc, _labels, value in cluster.collect()}
    assert samples["wsgw_cluster_redis_healthy"] == 0
    assert samples["wsgw_cluster_fallbacks_total"] == 1
    assert samples["wsgw_cluster_redis_errors_total"] >= 1
    if failure == "open":
        assert not limit.leased and admitted == 60 and connected
    else:
        assert limit.leased and admitted == 0 and not connected
