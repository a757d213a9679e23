"""The one Redis connection the cluster limits share, and its health.

A `RedisLink` owns the client, the state (starting | up | down | stopped), the failure policy
and the process registry. Every Redis call has a timeout (call_timeout_s, 0.5 s) and none
raises: a failed call is an outage (`enter_outage`: one warning per outage, counted), and the
jobs on the link apply the failure policy (the leases through `outage_listeners`, the slots
when `call` answers None). It comes back through `reconnect` (backoff 0.2 s doubling to 2 s).

Process registry: a sorted set (score = expiry); each process heartbeats its entry every
heartbeat_ttl_s / 3 with a lease round, so `processes` counts the live gateway processes and
a crashed process drops out after heartbeat_ttl_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from wsgw.pipeline import redis_scripts

# The package's logger ("wsgw.pipeline.cluster") for every module of it: one name to filter on.
log = logging.getLogger(__package__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 2.0
# Errors that mean "Redis is not answering"; TimeoutError and ConnectionError are OSErrors.
REDIS_ERRORS = (RedisError, OSError)

Failure = Literal["open", "closed"]
State = Literal["starting", "up", "down", "stopped"]
# One script run: its name in redis_scripts.ALL and its EVALSHA arguments (numkeys, keys, argv).
Op = tuple[str, tuple[Any, ...]]

# What each failure policy does while Redis is down, as the outage warning tells it.
_CONSEQUENCES: dict[str, str] = {
    "open": "limits are local to each process (full buckets) until it is back",
    "closed": "messages are throttled and connections refused until it is back",
}


class _Script:
    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        # EVALSHA needs the SHA1 Redis computes on SCRIPT LOAD: the same one.
        self.sha = hashlib.sha1(source.encode()).hexdigest()


SCRIPTS = {name: _Script(source) for name, source in redis_scripts.ALL.items()}


class RedisLink:
    """The shared Redis client, its up/down state and the failure policy of every job on it."""

    def __init__(
        self,
        redis_url: str,
        failure: Failure = "open",
        *,
        process_id: str | None = None,
        key_prefix: str = "wsgw:",
        heartbeat_ttl_s: float = 5.0,
        call_timeout_s: float = 0.5,
    ) -> None:
        if failure not in ("open", "closed"):
            raise ValueError("failure must be 'open' or 'closed'")
        self.failure: Failure = failure
        self.process_id = process_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.prefix = key_prefix
        self.timeout_s = call_timeout_s
        self.registry = f"{key_prefix}procs"
        self.client: redis_asyncio.Redis | None = None  # from connect() to close()
        self.state: State = "starting"
        # Called on entering an outage, before the warning: the jobs apply the failure policy.
        self.outage_listeners: list[Callable[[], None]] = []
        self.processes = 1  # live gateway processes sharing the registry (last heartbeat)
        self.redis_errors_total = 0
        self.fallbacks_total = 0
        self._url = redis_url
        self._hb_ttl_ms = max(1, int(heartbeat_ttl_s * 1000))
        self._hb_every_ns = int(heartbeat_ttl_s * 1e9 / 3)
        self._next_heartbeat_ns = 0
        self._backoff_s = BACKOFF_MIN_S

    @property
    def healthy(self) -> bool:
        return self.state == "up"

    def collect(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """Metrics samples (name, type, help, labels, value), read at scrape time."""
        return [
            (
                "wsgw_cluster_redis_healthy",
                "gauge",
                "1 while the cluster limits reach Redis, else 0",
                {},
                float(self.healthy),
            ),
            (
                "wsgw_cluster_redis_errors_total",
                "counter",
                "Failed Redis calls of the cluster limits",
                {},
                self.redis_errors_total,
            ),
            (
                "wsgw_cluster_fallbacks_total",
                "counter",
                "Redis outages (each applies gateway.redis_failure once)",
                {},
                self.fallbacks_total,
            ),
            (
                "wsgw_cluster_processes",
                "gauge",
                "Live gateway processes sharing the limits (last heartbeat)",
                {},
                self.processes,
            ),
        ]

    # -------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        """Make the client (it connects on its first call); `recover` is the first call."""
        self.client = redis_asyncio.Redis.from_url(
            self._url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),  # the link owns retrying; a call fails fast
        )
        self._backoff_s = BACKOFF_MIN_S

    async def recover(self, resync: list[Op]) -> bool:
        """Reach Redis in one round trip: load the scripts, register this process, and run
        `resync` (state Redis may have lost meanwhile); True and up, or False and down."""
        if self.client is None:
            return False
        pipe = self.client.pipeline(transaction=False)
        for script in SCRIPTS.values():
            pipe.script_load(script.source)
        name, args = self._heartbeat_op()
        pipe.evalsha(SCRIPTS[name].sha, *args)
        for name, args in resync:
            pipe.evalsha(SCRIPTS[name].sha, *args)
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            self.enter_outage(exc)
            return False
        self._note_heartbeat(replies[len(SCRIPTS)], time.monotonic_ns())
        if self.state == "down":
            log.warning("cluster limits: Redis is back; limits are shared again")
        self.state = "up"
        return True

    async def reconnect(self, recover: Callable[[], Awaitable[bool]]) -> None:
        """Wait out the backoff, then try `recover` once: after a failure the next wait
        doubles (up to 2 s), after a success it starts again from 0.2 s."""
        await asyncio.sleep(self._backoff_s)
        if await recover():
            self._backoff_s = BACKOFF_MIN_S
        else:
            self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)

    async def close(self, farewell: list[Op]) -> None:
        """Run `farewell` and leave the registry (while up, one round trip), disconnect."""
        client = self.client
        if client is None:
            return
        if self.state == "up":
            pipe = client.pipeline(transaction=False)
            for name, args in farewell:
                pipe.evalsha(SCRIPTS[name].sha, *args)
            pipe.zrem(self.registry, self.process_id)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS:
                self.redis_errors_total += 1
        self.state = "stopped"
        self.client = None
        with contextlib.suppress(*REDIS_ERRORS):
            await client.aclose()

    # ------------------------------------------------------------------ calls
    async def call(self, source: str, numkeys: int, *args: Any) -> Any:
        """One script by EVAL (once per handshake: never NOSCRIPT after a Redis restart);
        None when Redis is down or the call failed (then an outage)."""
        if self.state != "up" or self.client is None:
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.client.eval(source, numkeys, *args)
        except REDIS_ERRORS as exc:
            self.enter_outage(exc)
            return None

    async def execute_with_heartbeat(self, ops: list[Op], now_ns: int) -> list[Any] | None:
        """`ops` and, when it is due, the heartbeat, in one round trip (none for neither).
        The replies of `ops`; None when Redis failed (an outage)."""
        heartbeat = now_ns >= self._next_heartbeat_ns
        if not heartbeat:
            return await self.execute(ops) if ops else []
        replies = await self.execute([self._heartbeat_op(), *ops])
        if replies is None:
            return None
        self._note_heartbeat(replies[0], now_ns)
        return replies[1:]

    async def execute(self, ops: list[Op]) -> list[Any] | None:
        """Run scripts in one pipelined round trip; None (and outage) if Redis failed."""
        assert self.client is not None
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                name, args = ops[i]
                pipe.evalsha(SCRIPTS[name].sha, *args)
            try:
                async with asyncio.timeout(self.timeout_s):
                    if attempt:
                        await self._load_scripts()
                    replies = await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS as exc:
                self.enter_outage(exc)
                return None
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)  # not run at all: safe to run again
                elif isinstance(reply, Exception):
                    self.enter_outage(reply)
                    return None
                else:
                    results[i] = reply
            if not missing:
                return results
            todo = missing  # Redis restarted or flushed its scripts: load, run those again
        self.enter_outage(NoScriptError("scripts could not be loaded"))
        return None

    async def _load_scripts(self) -> None:
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for script in SCRIPTS.values():
            pipe.script_load(script.source)
        await pipe.execute()

    # ----------------------------------------------------------------- health
    def enter_outage(self, exc: BaseException) -> None:
        """Count a failed call; the first of an outage applies the failure policy once."""
        self.redis_errors_total += 1
        if self.state in ("down", "stopped"):
            return
        self.state = "down"
        self.fallbacks_total += 1
        for listener in self.outage_listeners:
            listener()
        # Once per outage; the error's type only (a URL may carry a password).
        log.warning(
            "cluster limits: Redis unreachable (%s); failure=%s: %s",
            type(exc).__name__,
            self.failure,
            _CONSEQUENCES[self.failure],
        )

    def _heartbeat_op(self) -> Op:
        return ("heartbeat", (1, self.registry, self.process_id, self._hb_ttl_ms))

    def _note_heartbeat(self, live: Any, now_ns: int) -> None:
        self.processes = max(1, int(live))
        self._next_heartbeat_ns = now_ns + self._hb_every_ns
