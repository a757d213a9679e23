"""Limits shared by every gateway process through Redis.

`ClusterLimits` puts two jobs on one Redis connection (`link.RedisLink`: the client, its
health, the failure policy and the process registry):
  - token leasing (`leases.Leases`): LEASED `Limit`s fed from shared token buckets, so that
    the per-message path stays local (see leases.py for the lease sizing and its accuracy);
  - connection caps (`slots.RedisSlots`, as `.slots`): open connections per scope key
    counted across the processes.
One background task drives both: a lease round every lease_interval_s while Redis is up, a
reconnect (backoff 0.2 s doubling to 2 s) while it is down; the task never raises.

Failure policy (every Redis call has a timeout, call_timeout_s = 0.5 s): on the first failed
call of an outage, one warning and fallbacks_total += 1, then
  failure="open": limits are local to each process (full buckets), caps count per process;
  failure="closed": limits get no grants (throttled once spent), capped connections refused.
Once Redis answers: scripts loaded, registered again, connection counts re-synced, every
limit LEASED again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from wsgw._core import Limit
from wsgw.pipeline.cluster.leases import ACCURACY, Leases
from wsgw.pipeline.cluster.link import Failure, Op, RedisLink
from wsgw.pipeline.cluster.slots import LocalSlots, RedisSlots, SlotStore

__all__ = ["ACCURACY", "ClusterLimits", "LocalSlots", "RedisSlots", "SlotStore"]

log = logging.getLogger(__name__)

_BUG_LOG_INTERVAL_NS = 60_000_000_000  # a failing lease round is logged once a minute


class ClusterLimits:
    """Feeds LEASED limits from shared Redis buckets; connection caps across processes."""

    def __init__(
        self,
        redis_url: str,
        failure: Failure = "open",
        *,
        process_id: str | None = None,
        lease_interval_s: float = 0.05,
        key_prefix: str = "wsgw:",
        heartbeat_ttl_s: float = 5.0,
        call_timeout_s: float = 0.5,
        accuracy: float = ACCURACY,
    ) -> None:
        self.link = RedisLink(
            redis_url,
            failure,
            process_id=process_id,
            key_prefix=key_prefix,
            heartbeat_ttl_s=heartbeat_ttl_s,
            call_timeout_s=call_timeout_s,
        )
        self.leases = Leases(self.link, interval_s=lease_interval_s, accuracy=accuracy)
        self.slots = RedisSlots(self.link)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._bug_logged_ns = 0

    # ------------------------------------------------------------------ state
    @property
    def failure(self) -> Failure:
        return self.link.failure

    @property
    def process_id(self) -> str:
        return self.link.process_id

    @property
    def healthy(self) -> bool:
        return self.link.healthy

    @property
    def processes(self) -> int:
        """Live gateway processes sharing the registry (last heartbeat)."""
        return self.link.processes

    @property
    def redis_errors_total(self) -> int:
        return self.link.redis_errors_total

    @property
    def fallbacks_total(self) -> int:
        return self.link.fallbacks_total

    def collect(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """Metrics samples (name, type, help, labels, value), read at scrape time."""
        return [*self.link.collect(), *self.leases.collect()]

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect (one try) and start the lease loop; never raises on Redis trouble."""
        if self._task is not None:
            return
        self._stopping = False
        self.link.connect()
        await self._recover()
        self._task = asyncio.create_task(self._run(), name="wsgw-cluster-leases")

    async def stop(self) -> None:
        """Give back unused tokens, drop this process's connection counts, disconnect."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: the loop also ends by the flag at its next step.
            await asyncio.wait(
                {self._task}, timeout=self.link.timeout_s + self.leases.interval_s + 1.0
            )
            self._task = None
        if self.link.client is None:
            return  # never started
        farewell: list[Op] = []
        if self.link.healthy:
            farewell = [*self.leases.farewell_ops(), *self.slots.farewell_ops()]
        await self.link.close(farewell)
        self.leases.drop_pending()
        self.slots.forget()

    # ----------------------------------------------------------------- limits
    def attach(self, key: str, limit: Limit) -> None:
        """Feed `limit` from the shared bucket `key` (see Leases.attach)."""
        self.leases.attach(key, limit)

    def detach(self, key: str) -> None:
        """Stop feeding `key`; it becomes a plain local limit (see Leases.detach)."""
        self.leases.detach(key)

    async def prime(self, key: str) -> None:
        """Lease the first tokens of a newly attached limit (see Leases.prime)."""
        if not self._stopping:  # no round comes any more to answer it
            await self.leases.prime(key)

    # ------------------------------------------------------- connection caps
    async def acquire_connection(self, scope_key: str, max_connections: int) -> bool:
        """Take one of `max_connections` slots of `scope_key` across the cluster."""
        return await self.slots.acquire(scope_key, max_connections)

    async def release_connection(self, scope_key: str) -> None:
        """Give back a slot taken by acquire_connection (never raises)."""
        await self.slots.release(scope_key)

    def connections_held(self, scope_key: str) -> int:
        """This process's open connections under `scope_key`."""
        return self.slots.held(scope_key)

    # ------------------------------------------------------------------- loop
    async def _run(self) -> None:
        # The flag, not only cancel(): a cancellation that lands inside a Redis call can be
        # swallowed by the client, and stop() must still end this loop.
        while not self._stopping:
            try:
                if self.link.healthy:
                    await self.leases.round()
                    await asyncio.sleep(self.leases.interval_s)
                else:
                    await self.link.reconnect(self._recover)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the feeding of every limit
                now = time.monotonic_ns()
                if now - self._bug_logged_ns > _BUG_LOG_INTERVAL_NS or not self._bug_logged_ns:
                    self._bug_logged_ns = now
                    log.exception("cluster limits: lease round failed")
                await asyncio.sleep(self.leases.interval_s)

    async def _recover(self) -> bool:
        """Reach Redis (re-syncing the connection counts), then make the limits LEASED."""
        return await self.link.recover(self.slots.resync_ops()) and await self.leases.resume()
