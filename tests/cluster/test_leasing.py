"""Several ClusterLimits (as if several processes) leasing from one shared Redis bucket."""

from __future__ import annotations

import time

import redis.asyncio as redis_asyncio

from wsgw._core import Limit
from wsgw.pipeline import redis_scripts
from wsgw.pipeline.cluster import ClusterLimits

from .helpers import drive, gate_of, over_bound, under_bound, wait_for


async def test_hungry_instances_share_one_budget(redis_url: str, redis_prefix: str) -> None:
    per_minute, processes = 1200, 3
    clusters = [ClusterLimits(redis_url, "open", key_prefix=redis_prefix) for _ in range(3)]
    for cluster in clusters:
        await cluster.start()
    limits = [Limit(per_minute, 0, 0) for _ in clusters]
    try:
        started_at = time.monotonic()
        for cluster, limit in zip(clusters, limits, strict=True):
            cluster.attach("sub:a:b:1", limit)
            assert limit.leased
        counts = await drive([gate_of(limit) for limit in limits], 1.5)
        elapsed = time.monotonic() - started_at
        # the last one started sees all three in the registry
        samples = {name: value for name, _type, _doc, _labels, value in clusters[-1].collect()}
    finally:
        for cluster in clusters:
            await cluster.stop()
    ideal = per_minute + per_minute * elapsed / 60
    total = sum(counts)
    print(
        f"3 instances, {per_minute}/min, {elapsed:.2f} s: admitted {counts} = {total}, "
        f"ideal {ideal:.1f}"
    )
    assert total <= ideal + over_bound(per_minute, processes)
    assert total >= ideal - under_bound(per_minute, per_minute, processes)
    assert all(count > 0 for count in counts)  # each process got leases, not one hog
    assert samples["wsgw_cluster_redis_healthy"] == 1
    assert samples["wsgw_cluster_processes"] == processes
    assert samples["wsgw_cluster_leased_limits"] == 1


async def test_quiet_instance_gives_its_lease_back(redis_url: str, redis_prefix: str) -> None:
    per_minute = 600
    busy, quiet = (ClusterLimits(redis_url, "open", key_prefix=redis_prefix) for _ in range(2))
    await busy.start()
    await quiet.start()
    busy_limit, quiet_limit = Limit(per_minute, 0, 0), Limit(per_minute, 0, 0)
    try:
        started_at = time.monotonic()
        quiet.attach("app:a", quiet_limit)
        busy.attach("app:a", busy_limit)
        # The quiet one is hungry for 0.3 s (takes big leases), then stops sending.
        first = await drive([gate_of(quiet_limit), gate_of(busy_limit)], 0.3)
        rest = await drive([gate_of(busy_limit)], 1.2)
        elapsed = time.monotonic() - started_at
        held = quiet_limit.messages_available(time.monotonic_ns())
    finally:
        await busy.stop()
        await quiet.stop()
    total = sum(first) + sum(rest)
    ideal = per_minute + per_minute * elapsed / 60
    print(f"quiet holder: admitted {first} then {rest}; ideal {ideal:.1f}; quiet holds {held}")
    assert held <= 1  # given back down to the one-message minimum
    assert total >= ideal - under_bound(per_minute, per_minute, 2)
    assert total <= ideal + over_bound(per_minute, 2)


async def test_frame_larger_than_a_share_gets_through(redis_url: str, redis_prefix: str) -> None:
    # 60 000 bytes/min: one process's share is 2 % = 1 200 bytes; frames of 20 000 bytes need
    # the starved byte target to grow. The minute's capacity holds exactly three of them.
    cluster = ClusterLimits(redis_url, "open", key_prefix=redis_prefix)
    await cluster.start()
    limit = Limit(0, 60_000, 0)
    try:
        cluster.attach("api:x:1", limit)
        counts = await drive([gate_of(limit)], 1.0, payload=20_000)
    finally:
        await cluster.stop()
    assert counts == [3], counts


async def test_lease_script_is_exact_beyond_14_digits(redis_url: str, redis_prefix: str) -> None:
    # Redis turns a Lua number into a string with 14 digits; the script must not lose tokens.
    client = redis_asyncio.Redis.from_url(redis_url)
    key = f"{redis_prefix}bucket:big"
    cap = 2**50 + 1  # 16 digits
    try:

        def args(want: int, back: int) -> list[int]:
            return [1, cap, want, back, 1, 0, 0, 0, 0, 0]

        g1, _, left1, _ = await client.eval(redis_scripts.LEASE, 1, key, *args(cap, 0))
        g2, _, left2, _ = await client.eval(redis_scripts.LEASE, 1, key, *args(cap, 0))
        assert (g1, left1) == (2**49, 2**49 + 1)  # at most half of what is left
        assert (g2, left2) == (2**48, 2**48 + 1)
        _, _, left3, _ = await client.eval(redis_scripts.LEASE, 1, key, *args(0, g1 + g2))
        assert left3 == cap  # everything back, exactly (refill of 1/min adds < 1 token)
        assert await client.pttl(key) > 0  # the bucket expires once it would be full anyway
    finally:
        await client.aclose()


async def test_detach_returns_tokens_and_frees_the_limit(redis_url: str, redis_prefix: str) -> None:
    cluster = ClusterLimits(redis_url, "open", key_prefix=redis_prefix)
    other = ClusterLimits(redis_url, "open", key_prefix=redis_prefix)
    await cluster.start()
    await other.start()
    limit, other_limit = Limit(600, 0, 0), Limit(600, 0, 0)
    try:
        cluster.attach("sub:k", limit)
        # Lease a lot (starved -> half the bucket), then detach without spending it.
        gate = gate_of(limit)
        gate.admit(0, time.monotonic_ns())
        assert await wait_for(lambda: limit.messages_available(time.monotonic_ns()) > 100, 1.0)
        held = limit.messages_available(time.monotonic_ns())
        cluster.detach("sub:k")
        assert not limit.leased  # a plain local limit again (connections keep working)
        await wait_for(lambda: False, 0.15)  # the give-back goes with the next round
        other.attach("sub:k", other_limit)
        counts = await drive([gate_of(other_limit)], 0.5)
    finally:
        await cluster.stop()
        await other.stop()
    print(f"detached holding {held}; the other instance then admitted {counts[0]}")
    assert counts[0] >= 600 - under_bound(600, 600, 2)
