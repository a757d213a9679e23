"""Connection slots: LocalSlots in one process, RedisSlots across processes (real Redis)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as redis_asyncio

from tests.redis_support import redis_prefix, redis_url  # noqa: F401 (fixtures)
from wsgw.config.models import Api, Tier
from wsgw.errors import TooManyRequests
from wsgw.pipeline.cluster.link import Failure, RedisLink
from wsgw.pipeline.cluster.slots import LocalSlots, RedisSlots
from wsgw.pipeline.subscription import Grant
from wsgw.pipeline.throttle import Throttle

UNREACHABLE = "redis://127.0.0.1:1"  # nobody listens on port 1: refused at once
KEY = "sub:app:api:1"


@contextlib.asynccontextmanager
async def redis_slots(
    url: str, failure: Failure, prefix: str, process_id: str | None = None
) -> AsyncIterator[RedisSlots]:
    """A RedisSlots on its own started link (as one process); closed afterwards."""
    link = RedisLink(url, failure, key_prefix=prefix, process_id=process_id)
    slots = RedisSlots(link)
    link.connect()
    await link.recover(slots.resync_ops())
    try:
        yield slots
    finally:
        await link.close(slots.farewell_ops())


# ------------------------------------------------------------------ LocalSlots
async def test_local_slots_take_up_to_the_cap() -> None:
    slots = LocalSlots()
    assert await slots.acquire(KEY, 2)
    assert await slots.acquire(KEY, 2)
    assert not await slots.acquire(KEY, 2)
    assert slots.held(KEY) == 2
    assert await slots.acquire("app:app", 1)  # another key: its own cap
    assert slots.held("app:app") == 1


async def test_local_slots_release_frees_a_slot() -> None:
    slots = LocalSlots()
    assert await slots.acquire(KEY, 1)
    await slots.release(KEY)
    assert slots.held(KEY) == 0
    assert await slots.acquire(KEY, 1)


async def test_local_slots_release_of_an_unknown_key_is_harmless() -> None:
    slots = LocalSlots()
    await slots.release("never:taken")
    assert slots.held("never:taken") == 0
    assert await slots.acquire("never:taken", 1)  # never negative: the cap still holds
    assert not await slots.acquire("never:taken", 1)


async def test_throttle_without_a_cluster_counts_locally() -> None:
    api = msgspec.convert(
        {"name": "A", "context": "/a", "version": "1", "endpoints": {"production": "ws://h:1"}},
        Api,
    )
    throttle = Throttle()
    grant = Grant("App", "PRODUCTION", Tier(max_connections=1), None)
    assert isinstance(throttle.slots, LocalSlots)
    admission = await throttle.admit(grant, api, None)
    with pytest.raises(TooManyRequests):
        await throttle.admit(grant, api, None)
    await admission.release()  # through the store
    await (await throttle.admit(grant, api, None)).release()
    assert throttle.slots.held("sub:App:A:1") == 0


# ------------------------------------------------------------------ RedisSlots
async def test_redis_slots_share_one_cap(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    async with (
        redis_slots(redis_url, "closed", redis_prefix) as first,
        redis_slots(redis_url, "closed", redis_prefix) as second,
    ):
        assert await first.acquire(KEY, 3)
        assert await second.acquire(KEY, 3)
        assert await second.acquire(KEY, 3)
        assert not await first.acquire(KEY, 3)  # 3 held across both
        assert (first.held(KEY), second.held(KEY)) == (1, 2)
        await second.release(KEY)
        assert await first.acquire(KEY, 3)
        await first.release("never:taken")  # harmless, and nothing in Redis
        client = redis_asyncio.Redis.from_url(redis_url)
        try:
            counts = await client.hgetall(f"{redis_prefix}conn:{KEY}")
            assert sorted(counts.values()) == [b"1", b"2"]
            assert not await client.exists(f"{redis_prefix}conn:never:taken")
        finally:
            await client.aclose()


async def test_redis_slots_closed_refuses_while_redis_is_unreachable() -> None:
    async with redis_slots(UNREACHABLE, "closed", "wsgw-test:unreachable:") as slots:
        assert not await slots.acquire(KEY, 5)
        assert slots.held(KEY) == 0


async def test_redis_slots_open_counts_locally_while_redis_is_unreachable() -> None:
    prefix = "wsgw-test:unreachable:"
    async with redis_slots(UNREACHABLE, "open", prefix, process_id="proc-a") as slots:
        assert await slots.acquire(KEY, 2)
        assert await slots.acquire(KEY, 2)
        assert not await slots.acquire(KEY, 2)  # the cap holds, per process
        assert slots.held(KEY) == 2
        await slots.release(KEY)
        assert slots.held(KEY) == 1
        assert slots.resync_ops() == [
            ("conn_set", (1, f"{prefix}conn:{KEY}", "proc-a", 1))
        ]  # written into Redis once it is back
