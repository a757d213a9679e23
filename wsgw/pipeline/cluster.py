"""Limits shared by every gateway process through Redis: token leasing.

Each process keeps its per-message path local: a connection's `Gate` admits against the
process's `Limit` objects, with no Redis round trip per frame. `ClusterLimits.attach()` puts a
`Limit` in LEASED mode (no refill of its own) and a background lease loop feeds it tokens
taken from ONE shared token bucket per key in Redis (a Lua script, Redis TIME as the clock:
capacity C = messages_per_minute + burst, refill N/60 per second; bytes alike with
B = bytes_per_minute). Every lease_interval_s (tau, 50 ms) the loop sends ONE pipelined round
trip carrying a request per limit that needs tokens, plus the heartbeat when due.

Lease sizing (per limit and dimension; P = live gateway processes, from the registry;
eps = 2 %):
  share  s = max(1, floor(eps * C / P))          what one process may hold when tokens are scarce
  cap    c = max(s, floor(L / 2))                L = shared level in the last reply: a hungry
                                                 process takes at most half of what is left
  target   = c when the limit was starved, else min(c, max(minimum, 2 * d)),
             d = tokens used since the previous round (demand for ~2 rounds), minimum =
             max(2, s) messages / s bytes (so the first request after a quiet spell, and its
             response, are not refused)
  A limit asks for (target - level) when its level falls below target / 2 or it starved. The
  script itself never grants one request more than max(s, half of what is left), so a stale L
  cannot hand one process the whole bucket. After 2 rounds without traffic a limit gives back
  everything above the minimum; detach() and stop() give back everything.

Accuracy (tau = 50 ms):
  Over-admission: an admission in LEASED mode spends a token that already left the shared
  bucket, so the cluster lets through more than one bucket would only by
   (a) the debt of force()d continuation frames (and of their bytes): paid back from the
       next grants, so it moves admissions in time and never accumulates; at a window's end
       at most the continuation frames of the messages then in flight (one per connection
       and direction);
   (b) tokens held in leases while the shared bucket sits at its capacity (the bucket is
       capped at C without knowing what the processes hold). It is full only when traffic is
       below the refill rate, so holdings are the demand prefetch: at most
       P + 2 * N * tau / 60 messages (P + 0.17 % of N) and eps * B + 2 * B * tau / 60 bytes.
  Under-admission (some process is refused while the cluster has not spent its tokens):
   tokens stranded in other processes' leases, at most P * max(2, s) <= max(eps * C, 2 * P),
   plus the shared bucket's residue (< 1 token plus the refill of one round, N * tau / 60).
   With C >= 100 * P that is <= 2 % of C (+ 1 + 0.08 % of N). A large lease taken while the
   bucket is well stocked is given back within 2 rounds once its process goes quiet; while
   the bucket is well stocked a refused process simply leases more, so that only delays.
  Bytes: a frame larger than the holding is refused once and its limit starved; the byte
  target then doubles each round (up to B) until the frame fits.
  A Redis restart loses the buckets: they come back full (one extra C at most). Grants in a
  reply lost to an outage are lost (under-admission only).

Failure policy (every Redis call has a timeout, call_timeout_s = 0.5 s; the loop never raises):
  failure="open": on the first failed call every attached limit leaves LEASED mode (a fresh,
  full local limit in each process: up to P * C per window while Redis is down), one warning
  per outage, fallbacks_total += 1; connection caps count locally, per process.
  failure="closed": limits stay LEASED and get no grants (everything throttled once the
  holdings are spent); connection caps refuse.
  Reconnect by itself (backoff 0.2 s doubling to 2 s); once Redis answers: scripts loaded,
  registered again, connection counts re-synced, every limit LEASED again.

Connection caps: per scope key one Redis hash {process id: open connections}; a process
heartbeats its entry in a registry (sorted set, score = expiry) every heartbeat_ttl_s / 3, and
an acquire drops the counts of processes missing from it, so a crashed process's connections
expire after heartbeat_ttl_s.
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
from typing import Any, Literal

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from wsgw._core import Limit
from wsgw.pipeline import redis_scripts

log = logging.getLogger(__name__)

ACCURACY = 0.02  # eps: what one process may hold when tokens are scarce, as a share of C / P
IDLE_ROUNDS = 2  # rounds without traffic before a holding is given back
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 2.0
_U64 = 2**64
# Errors that mean "Redis is not answering"; TimeoutError and ConnectionError are OSErrors.
_REDIS_ERRORS = (RedisError, OSError)
_BACK_M, _BACK_B = 3, 8  # give-back positions in the LEASE script's ARGV

Failure = Literal["open", "closed"]


class _Script:
    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        # EVALSHA needs the SHA1 Redis computes on SCRIPT LOAD: the same one.
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_SCRIPTS = {name: _Script(source) for name, source in redis_scripts.ALL.items()}


class _Lease:
    """What the lease loop knows about one attached limit."""

    __slots__ = (
        "key",
        "redis_key",
        "limit",
        "m_rate",
        "m_cap",
        "b_rate",
        "b_cap",
        "seen_m",
        "seen_b",
        "used_m",
        "used_b",
        "idle",
        "boost_b",
    )

    def __init__(self, key: str, redis_key: str, limit: Limit) -> None:
        self.key = key
        self.redis_key = redis_key
        self.limit = limit
        self.m_rate = limit.messages_per_minute
        self.m_cap = limit.message_capacity
        self.b_rate = limit.bytes_per_minute
        self.b_cap = limit.byte_capacity
        self.reset()

    def reset(self) -> None:
        self.seen_m = self.m_cap  # shared level last seen; a new bucket is full
        self.seen_b = self.b_cap
        self.used_m = self.limit.consumed_messages
        self.used_b = self.limit.consumed_bytes
        self.idle = 0
        self.boost_b = 0


QUIET_KEEP_MESSAGES = 2


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
        if failure not in ("open", "closed"):
            raise ValueError("failure must be 'open' or 'closed'")
        self.failure: Failure = failure
        self.process_id = process_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._url = redis_url
        self._interval = lease_interval_s
        self._prefix = key_prefix
        self._hb_ttl_ms = max(1, int(heartbeat_ttl_s * 1000))
        self._hb_every_ns = int(heartbeat_ttl_s * 1e9 / 3)
        self._timeout = call_timeout_s
        self._accuracy = accuracy
        self._registry = f"{key_prefix}procs"
        self._redis: redis_asyncio.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._state = "starting"  # starting | up | down | stopped
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[str, list[int]] = {}  # key -> [rates/caps/back as lease args]
        self._round_waiters: list[asyncio.Future[None]] = []  # see prime()
        self._connections: dict[str, int] = {}  # scope key -> this process's open connections
        self._next_heartbeat_ns = 0
        self._bug_logged_ns = 0
        self.processes = 1  # live gateway processes sharing the registry (last heartbeat)
        self.redis_errors_total = 0
        self.fallbacks_total = 0

    # ------------------------------------------------------------------ state
    @property
    def healthy(self) -> bool:
        return self._state == "up"

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
            (
                "wsgw_cluster_leased_limits",
                "gauge",
                "Limits fed from the shared Redis buckets",
                {},
                sum(1 for st in self._leases.values() if st.limit.leased),
            ),
        ]

    async def start(self) -> None:
        """Connect (one try) and start the lease loop; never raises on Redis trouble."""
        if self._task is not None:
            return
        self._stopping = False
        self._redis = redis_asyncio.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),  # the loop owns retrying; a call fails fast
        )
        await self._recover()
        self._task = asyncio.create_task(self._run(), name="wsgw-cluster-leases")

    async def stop(self) -> None:
        """Give back unused tokens, drop this process's connection counts, disconnect."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: the loop also ends by the flag at its next step.
            await asyncio.wait({self._task}, timeout=self._timeout + self._interval + 1.0)
            self._task = None
        redis = self._redis
        if redis is None:
            return
        if self._state == "up":
            pipe = redis.pipeline(transaction=False)
            lease = _SCRIPTS["lease"].sha
            for key, st in self._leases.items():
                m, b = st.limit.take_unused()
                args = self._pending.pop(key, None) or self._args(st, 0, 0, 0, 0)
                args[_BACK_M] += m
                args[_BACK_B] += b
                pipe.evalsha(lease, 1, st.redis_key, *args)
            for key, args in self._pending.items():
                pipe.evalsha(lease, 1, self._bucket_key(key), *args)
            for key in self._connections:
                pipe.evalsha(_SCRIPTS["conn_set"].sha, 1, self._conn_key(key), self.process_id, 0)
            pipe.zrem(self._registry, self.process_id)
            try:
                async with asyncio.timeout(self._timeout):
                    await pipe.execute(raise_on_error=False)
            except _REDIS_ERRORS:
                self.redis_errors_total += 1
        self._pending.clear()
        self._connections.clear()
        self._state = "stopped"
        self._redis = None
        with contextlib.suppress(*_REDIS_ERRORS):
            await redis.aclose()

    # ----------------------------------------------------------------- limits
    def attach(self, key: str, limit: Limit) -> None:
        """Feed `limit` from the shared bucket `key` (LEASED; local while Redis is down and
        failure is open)."""
        if key in self._leases:
            self.detach(key)
        st = _Lease(key, self._bucket_key(key), limit)
        self._leases[key] = st
        if self._state == "up" or self.failure == "closed":
            limit.set_leased(True, time.monotonic_ns())
        st.reset()

    def detach(self, key: str) -> None:
        """Stop feeding `key`; its unused tokens go back with the next round.

        The detached Limit becomes a plain local limit again, so connections that still hold
        it (e.g. after a tier edit) keep working instead of starving.
        """
        st = self._leases.pop(key, None)
        if st is None:
            return
        if st.limit.leased:
            m, b = st.limit.take_unused()
            if m or b:
                args = self._pending.setdefault(key, self._args(st, 0, 0, 0, 0))
                args[_BACK_M] += m
                args[_BACK_B] += b
            st.limit.set_leased(False, time.monotonic_ns())

    # ------------------------------------------------------- connection caps
    async def acquire_connection(self, scope_key: str, max_connections: int) -> bool:
        """Take one of `max_connections` slots of `scope_key` across the cluster."""
        if self._state == "up" and self._redis is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    # EVAL, not EVALSHA: once per handshake, and never NOSCRIPT after a restart.
                    taken = await self._redis.eval(
                        redis_scripts.CONN_ACQUIRE,
                        2,
                        self._conn_key(scope_key),
                        self._registry,
                        self.process_id,
                        max_connections,
                    )
            except _REDIS_ERRORS as exc:
                self._enter_outage(exc)
                taken = None
            if taken is not None:
                if taken:
                    self._connections[scope_key] = self._connections.get(scope_key, 0) + 1
                return bool(taken)
        # Redis down (or not started): the failure policy decides.
        if self.failure == "closed":
            return False
        count = self._connections.get(scope_key, 0)
        if count >= max_connections:
            return False
        self._connections[scope_key] = count + 1
        return True

    async def release_connection(self, scope_key: str) -> None:
        """Give back a slot taken by acquire_connection (never raises)."""
        count = self._connections.get(scope_key, 0)
        if count <= 0:
            return
        if count == 1:
            del self._connections[scope_key]
        else:
            self._connections[scope_key] = count - 1
        if self._state != "up" or self._redis is None:
            return  # re-synced from the local counts when Redis is back
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.eval(
                    redis_scripts.CONN_RELEASE, 1, self._conn_key(scope_key), self.process_id
                )
        except _REDIS_ERRORS as exc:
            self._enter_outage(exc)

    def connections_held(self, scope_key: str) -> int:
        """This process's open connections under `scope_key`."""
        return self._connections.get(scope_key, 0)

    # ------------------------------------------------------------ lease loop
    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        # The flag, not only cancel(): a cancellation that lands inside a Redis call can be
        # swallowed by the client, and stop() must still end this loop.
        while not self._stopping:
            try:
                if self._state == "up":
                    await self._round()
                    await asyncio.sleep(self._interval)
                    continue
                await asyncio.sleep(backoff)
                if await self._recover():
                    backoff = BACKOFF_MIN_S
                else:
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the feeding of every limit
                now = time.monotonic_ns()
                if now - self._bug_logged_ns > 60_000_000_000 or not self._bug_logged_ns:
                    self._bug_logged_ns = now
                    log.exception("cluster limits: lease round failed")
                await asyncio.sleep(self._interval)

    def _plan(self, st: _Lease, now_ns: int) -> list[int] | None:
        """The lease request of one limit this round, or None when it needs nothing."""
        limit = st.limit
        if not limit.leased:
            return None
        consumed_m, consumed_b = limit.consumed_messages, limit.consumed_bytes
        used_m = (consumed_m - st.used_m) % _U64  # the counters wrap at 2**64 in C
        used_b = (consumed_b - st.used_b) % _U64
        st.used_m, st.used_b = consumed_m, consumed_b
        starved = limit.starved
        limit.starved = False
        st.idle = 0 if (used_m or used_b or starved) else st.idle + 1
        share_m, share_b = self._shares(st)
        back_m = back_b = 0
        if st.idle >= IDLE_ROUNDS:
            # Quiet: keep only the minimum, so the tokens serve the other processes. Two
            # messages at least: a request and its response, the first traffic after a pause.
            m, b = limit.take_unused()
            keep_m, keep_b = min(m, max(QUIET_KEEP_MESSAGES, share_m)), min(b, share_b)
            limit.grant(keep_m, keep_b)
            back_m, back_b = m - keep_m, b - keep_b
        want_m = want_b = 0
        level_m = 0
        if st.m_cap:
            level_m = limit.messages_available(now_ns)
            cap = max(share_m, st.seen_m // 2)
            hungry = starved and level_m < 1  # refused for lack of a message token
            target = cap if hungry else min(cap, max(1, 2 * used_m))
            if level_m * 2 < target or hungry:
                want_m = target - level_m
        if st.b_cap:
            level_b = limit.bytes_available(now_ns)
            cap = max(share_b, st.seen_b // 2)
            target = min(cap, max(share_b, 2 * used_b))
            if starved and (not st.m_cap or level_m >= 1):
                # Refused on bytes: a frame bigger than the holding; grow until it fits.
                st.boost_b = min(st.b_cap, max(cap, 2 * st.boost_b))
            elif used_b:
                st.boost_b = 0
            target = max(target, st.boost_b)
            if level_b * 2 < target or st.boost_b > level_b:
                want_b = target - level_b
        if not (want_m or want_b or back_m or back_b):
            return None
        return self._args(st, want_m, back_m, want_b, back_b)

    async def prime(self, key: str) -> None:
        """Lease the first tokens of a newly attached limit before its first connection is
        admitted: otherwise a fresh limit refuses every message for a lease interval.
        Waits for one full lease round (bounded); does nothing while Redis is down."""
        st = self._leases.get(key)
        if st is None or not st.limit.leased or self._state != "up" or self._stopping:
            return
        st.limit.starved = True  # the next round leases a full share for it
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._round_waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout + 3 * self._interval)

    async def _round(self) -> None:
        # Waiters resolve after a round that started after they came: that round saw them.
        waiters, self._round_waiters = self._round_waiters, []
        try:
            await self._lease_round()
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _lease_round(self) -> None:
        now_ns = time.monotonic_ns()
        requests: list[tuple[str, _Lease | None, list[int]]] = []
        for key, st in self._leases.items():
            args = self._plan(st, now_ns)
            pending = self._pending.pop(key, None)
            if pending is not None:
                args = args or self._args(st, 0, 0, 0, 0)
                args[_BACK_M] += pending[_BACK_M]
                args[_BACK_B] += pending[_BACK_B]
            if args is not None:
                requests.append((st.redis_key, st, args))
        for key, args in self._pending.items():
            requests.append((self._bucket_key(key), None, args))
        self._pending.clear()
        heartbeat = now_ns >= self._next_heartbeat_ns
        if not requests and not heartbeat:
            return
        ops: list[tuple[str, tuple[Any, ...]]] = []
        if heartbeat:
            ops.append(("heartbeat", (1, self._registry, self.process_id, self._hb_ttl_ms)))
        for redis_key, _st, args in requests:
            ops.append(("lease", (1, redis_key, *args)))
        results = await self._execute(ops)
        if results is None:
            return  # outage: grants of lost replies are lost (under-admission only)
        if heartbeat:
            self._note_heartbeat(results[0], now_ns)
            results = results[1:]
        for (_key, lease, _args), reply in zip(requests, results, strict=True):
            granted_m, granted_b, left_m, left_b = (int(x) for x in reply)
            if lease is None:
                continue
            if self._leases.get(lease.key) is lease and lease.limit.leased:
                lease.limit.grant(granted_m, granted_b)
            elif granted_m or granted_b:  # detached meanwhile: straight back
                args = self._pending.setdefault(lease.key, self._args(lease, 0, 0, 0, 0))
                args[_BACK_M] += granted_m
                args[_BACK_B] += granted_b
            lease.seen_m, lease.seen_b = left_m, left_b

    async def _execute(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any] | None:
        """Run scripts in one pipelined round trip; None (and outage) if Redis failed."""
        assert self._redis is not None
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for i in todo:
                name, args = ops[i]
                pipe.evalsha(_SCRIPTS[name].sha, *args)
            try:
                async with asyncio.timeout(self._timeout):
                    if attempt:
                        await self._load_scripts()
                    replies = await pipe.execute(raise_on_error=False)
            except _REDIS_ERRORS as exc:
                self._enter_outage(exc)
                return None
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)  # not run at all: safe to run again
                elif isinstance(reply, Exception):
                    self._enter_outage(reply)
                    return None
                else:
                    results[i] = reply
            if not missing:
                return results
            todo = missing  # Redis restarted or flushed its scripts: load, run those again
        self._enter_outage(NoScriptError("scripts could not be loaded"))
        return None

    async def _load_scripts(self) -> None:
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=False)
        for script in _SCRIPTS.values():
            pipe.script_load(script.source)
        await pipe.execute()

    def _note_heartbeat(self, live: Any, now_ns: int) -> None:
        self.processes = max(1, int(live))
        self._next_heartbeat_ns = now_ns + self._hb_every_ns

    # ---------------------------------------------------------------- health
    async def _recover(self) -> bool:
        """Reach Redis, load scripts, register, re-sync connection counts; LEASED again."""
        if self._redis is None:
            return False
        pipe = self._redis.pipeline(transaction=False)
        for script in _SCRIPTS.values():
            pipe.script_load(script.source)
        pipe.evalsha(_SCRIPTS["heartbeat"].sha, 1, self._registry, self.process_id, self._hb_ttl_ms)
        for key, count in self._connections.items():
            pipe.evalsha(_SCRIPTS["conn_set"].sha, 1, self._conn_key(key), self.process_id, count)
        try:
            async with asyncio.timeout(self._timeout):
                replies = await pipe.execute()
        except _REDIS_ERRORS as exc:
            self._enter_outage(exc)
            return False
        now = time.monotonic_ns()
        self._note_heartbeat(replies[len(_SCRIPTS)], now)
        if self._state == "down":
            log.warning("cluster limits: Redis is back; limits are shared again")
        self._state = "up"
        return await self._resume_leasing()

    async def _resume_leasing(self) -> bool:
        """Back from an outage: lease first, then switch each limit to LEASED together with
        its grant, in one step, so that no message meets an empty lease in between (the
        local limits stay in force until then)."""
        leases = [st for st in self._leases.values() if not st.limit.leased]
        ops: list[tuple[str, tuple[Any, ...]]] = []
        for st in leases:
            st.reset()
            share_m, share_b = self._shares(st)
            want_m = max(share_m, st.m_cap // 2) if st.m_cap else 0
            want_b = max(share_b, st.b_cap // 2) if st.b_cap else 0
            ops.append(("lease", (1, st.redis_key, *self._args(st, want_m, 0, want_b, 0))))
        results = await self._execute(ops) if ops else []
        if results is None:
            return False  # down again: the local limits stay
        now = time.monotonic_ns()
        for st, reply in zip(leases, results, strict=True):
            granted_m, granted_b, left_m, left_b = (int(x) for x in reply)
            if self._leases.get(st.key) is not st:  # detached meanwhile: straight back
                args = self._pending.setdefault(st.key, self._args(st, 0, 0, 0, 0))
                args[_BACK_M] += granted_m
                args[_BACK_B] += granted_b
                continue
            st.limit.set_leased(True, now)
            st.limit.grant(granted_m, granted_b)
            st.seen_m, st.seen_b = left_m, left_b
        return True

    def _enter_outage(self, exc: BaseException) -> None:
        self.redis_errors_total += 1
        if self._state in ("down", "stopped"):
            return
        self._state = "down"
        self.fallbacks_total += 1
        if self.failure == "open":
            now = time.monotonic_ns()
            for st in self._leases.values():
                st.limit.set_leased(False, now)
            consequence = "limits are local to each process (full buckets) until it is back"
        else:
            consequence = "messages are throttled and connections refused until it is back"
        # Once per outage; the error's type only (a URL may carry a password).
        log.warning(
            "cluster limits: Redis unreachable (%s); failure=%s: %s",
            type(exc).__name__,
            self.failure,
            consequence,
        )

    # ------------------------------------------------------------------ keys
    def _bucket_key(self, key: str) -> str:
        return f"{self._prefix}bucket:{key}"

    def _conn_key(self, scope_key: str) -> str:
        return f"{self._prefix}conn:{scope_key}"

    def _shares(self, st: _Lease) -> tuple[int, int]:
        """What one process may hold of each dimension when tokens are scarce (>= 1)."""
        processes = self.processes
        return (
            max(1, int(self._accuracy * st.m_cap / processes)),
            max(1, int(self._accuracy * st.b_cap / processes)),
        )

    def _args(self, st: _Lease, want_m: int, back_m: int, want_b: int, back_b: int) -> list[int]:
        """The LEASE script's ARGV (redis_scripts.LEASE)."""
        share_m, share_b = self._shares(st)
        return [
            st.m_rate,
            st.m_cap,
            want_m,
            back_m,
            share_m,
            st.b_rate,
            st.b_cap,
            want_b,
            back_b,
            share_b,
        ]
