"""Connection caps (a tier's max_connections): where the open connections are counted.

`Throttle` takes one slot per capped scope key at the handshake and gives it back when the
connection ends, through a `SlotStore`: `LocalSlots` counts in this process (a gateway
without Redis), `RedisSlots` across every process sharing a `RedisLink`.
"""

from __future__ import annotations

from typing import Protocol

from wsgw.pipeline import redis_scripts
from wsgw.pipeline.cluster.link import Op, RedisLink


class SlotStore(Protocol):
    """Counts the open connections per scope key against a cap."""

    async def acquire(self, key: str, max_connections: int) -> bool:
        """Take one of `max_connections` slots of `key`; False when they are all taken."""
        ...

    async def release(self, key: str) -> None:
        """Give back a slot taken by acquire (never raises; one too many is ignored)."""
        ...

    def held(self, key: str) -> int:
        """This process's open connections under `key`."""
        ...


class LocalSlots:
    """Slots counted in this process alone: the cap holds per process. It never fails."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    async def acquire(self, key: str, max_connections: int) -> bool:
        if self.held(key) >= max_connections:
            return False
        self.take(key)
        return True

    async def release(self, key: str) -> None:
        self.give_back(key)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def take(self, key: str) -> None:
        """One slot more, whatever the cap (it was checked elsewhere)."""
        self._held[key] = self.held(key) + 1

    def give_back(self, key: str) -> bool:
        """One slot less; False when `key` held none (then nothing changes)."""
        count = self.held(key)
        if count <= 0:
            return False
        if count == 1:
            del self._held[key]
        else:
            self._held[key] = count - 1
        return True

    def counts(self) -> dict[str, int]:
        """Every key with slots held, and how many."""
        return dict(self._held)

    def clear(self) -> None:
        self._held.clear()


class RedisSlots:
    """Slots counted across the cluster: per scope key one Redis hash {process id: open
    connections}. An acquire drops the counts of processes missing from the link's registry,
    so a crashed process's connections expire after heartbeat_ttl_s.

    Failure policy, while Redis is down (or not reached yet): failure="open" counts locally,
    per process (a cap then holds per process: up to P times it across P processes);
    failure="closed" refuses every connection under a cap. Once Redis is back, the link's
    recovery writes this process's counts again (`resync_ops`), as Redis may have lost them.
    """

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._mine = LocalSlots()  # this process's open connections, whether Redis is up or not

    async def acquire(self, key: str, max_connections: int) -> bool:
        taken = await self._link.call(
            redis_scripts.CONN_ACQUIRE,
            2,
            self._hash_key(key),
            self._link.registry,
            self._link.process_id,
            max_connections,
        )
        if taken is not None:
            if taken:
                self._mine.take(key)
            return bool(taken)
        # Redis down (or not started): the failure policy decides.
        if self._link.failure == "closed":
            return False
        return await self._mine.acquire(key, max_connections)

    async def release(self, key: str) -> None:
        if not self._mine.give_back(key):
            return
        # While Redis is down this skips Redis: re-synced from the local counts when it is back.
        await self._link.call(
            redis_scripts.CONN_RELEASE, 1, self._hash_key(key), self._link.process_id
        )

    def held(self, key: str) -> int:
        return self._mine.held(key)

    def resync_ops(self) -> list[Op]:
        """The CONN_SET calls that write this process's counts into Redis (a reconnect)."""
        return self._set_ops(self._mine.counts())

    def farewell_ops(self) -> list[Op]:
        """The CONN_SET calls that drop this process's counts from Redis (stop)."""
        return self._set_ops(dict.fromkeys(self._mine.counts(), 0))

    def forget(self) -> None:
        """Stop: this process holds no connection any more."""
        self._mine.clear()

    def _set_ops(self, counts: dict[str, int]) -> list[Op]:
        process_id = self._link.process_id
        return [
            ("conn_set", (1, self._hash_key(key), process_id, count))
            for key, count in counts.items()
        ]

    def _hash_key(self, key: str) -> str:
        return f"{self._link.prefix}conn:{key}"
