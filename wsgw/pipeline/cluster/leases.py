"""Token leasing: LEASED `Limit`s fed from shared Redis token buckets.

Each process keeps its per-message path local: a connection's `Gate` admits against the
process's `Limit` objects, with no Redis round trip per frame. `Leases.attach()` puts a
`Limit` in LEASED mode (no refill of its own) and the lease rounds feed it tokens taken from
ONE shared token bucket per key in Redis (a Lua script, Redis TIME as the clock: capacity
C = messages_per_minute + burst, refill N/60 per second; bytes alike with B =
bytes_per_minute). Every lease_interval_s (tau, 50 ms) a round sends ONE pipelined round trip
carrying a request per limit that needs tokens, plus the link's heartbeat when due.

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

Failure policy: failure="open": on the first failed call every attached limit leaves LEASED
mode (a fresh, full local limit in each process: up to P * C per window while Redis is down).
failure="closed": limits stay LEASED and get no grants (everything throttled once the
holdings are spent). Once Redis answers again, `resume()` leases first and then makes every
limit LEASED again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from wsgw._core import Limit
from wsgw.pipeline.cluster.link import Op, RedisLink

ACCURACY = 0.02  # eps: what one process may hold when tokens are scarce, as a share of C / P
IDLE_ROUNDS = 2  # rounds without traffic before a holding is given back
QUIET_KEEP_MESSAGES = 2  # a quiet limit keeps a request and its response
_U64 = 2**64
_BACK_M, _BACK_B = 3, 8  # give-back positions in the LEASE script's ARGV


class _Lease:
    """What the lease rounds know about one attached limit."""

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


class Leases:
    """The attached limits and their lease rounds over one `RedisLink`."""

    def __init__(
        self, link: RedisLink, *, interval_s: float = 0.05, accuracy: float = ACCURACY
    ) -> None:
        self.interval_s = interval_s
        self._link = link
        self._accuracy = accuracy
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[str, list[int]] = {}  # key -> LEASE args carrying give-backs
        self._round_waiters: list[asyncio.Future[None]] = []  # see prime()
        link.outage_listeners.append(self._on_outage)

    def collect(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        """Metrics samples (name, type, help, labels, value), read at scrape time."""
        return [
            (
                "wsgw_cluster_leased_limits",
                "gauge",
                "Limits fed from the shared Redis buckets",
                {},
                sum(1 for st in self._leases.values() if st.limit.leased),
            ),
        ]

    # ----------------------------------------------------------------- limits
    def attach(self, key: str, limit: Limit) -> None:
        """Feed `limit` from the shared bucket `key` (LEASED; local while Redis is down and
        failure is open)."""
        if key in self._leases:
            self.detach(key)
        st = _Lease(key, self._bucket_key(key), limit)
        self._leases[key] = st
        if self._link.healthy or self._link.failure == "closed":
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
                self._give_back_later(st, m, b)
            st.limit.set_leased(False, time.monotonic_ns())

    async def prime(self, key: str) -> None:
        """Lease the first tokens of a newly attached limit before its first connection is
        admitted: otherwise a fresh limit refuses every message for a lease interval.
        Waits for one full lease round (bounded); does nothing while Redis is down."""
        st = self._leases.get(key)
        if st is None or not st.limit.leased or not self._link.healthy:
            return
        st.limit.starved = True  # the next round leases a full share for it
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._round_waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(waiter), self._link.timeout_s + 3 * self.interval_s
            )

    # ----------------------------------------------------------------- rounds
    async def round(self) -> None:
        """One lease round; then the prime() calls that came before it are answered."""
        # Waiters resolve after a round that started after they came: that round saw them.
        waiters, self._round_waiters = self._round_waiters, []
        try:
            await self._lease_round()
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def resume(self) -> bool:
        """Back from an outage: lease first, then switch each limit to LEASED together with
        its grant, in one step, so that no message meets an empty lease in between (the
        local limits stay in force until then). False when Redis failed again."""
        leases = [st for st in self._leases.values() if not st.limit.leased]
        ops: list[Op] = []
        for st in leases:
            st.reset()
            share_m, share_b = self._shares(st)
            want_m = max(share_m, st.m_cap // 2) if st.m_cap else 0
            want_b = max(share_b, st.b_cap // 2) if st.b_cap else 0
            ops.append(_lease_op(st.redis_key, self._args(st, want_m, 0, want_b, 0)))
        results = await self._link.execute(ops) if ops else []
        if results is None:
            return False  # down again: the local limits stay
        now = time.monotonic_ns()
        for st, reply in zip(leases, results, strict=True):
            granted_m, granted_b, left_m, left_b = (int(x) for x in reply)
            if self._leases.get(st.key) is not st:  # detached meanwhile: straight back
                self._give_back_later(st, granted_m, granted_b)
                continue
            st.limit.set_leased(True, now)
            st.limit.grant(granted_m, granted_b)
            st.seen_m, st.seen_b = left_m, left_b
        return True

    def farewell_ops(self) -> list[Op]:
        """The LEASE requests that give back every unused and every queued token (stop)."""
        ops = []
        for key, st in self._leases.items():
            m, b = st.limit.take_unused()
            args = self._pending.pop(key, None) or self._args(st)
            ops.append(_lease_op(st.redis_key, _add_back(args, m, b)))
        ops.extend(_lease_op(self._bucket_key(key), args) for key, args in self._pending.items())
        return ops

    def drop_pending(self) -> None:
        """Forget the queued give-backs (stop: sent by farewell_ops, or lost with Redis)."""
        self._pending.clear()

    async def _lease_round(self) -> None:
        now_ns = time.monotonic_ns()
        requests: list[tuple[_Lease | None, Op]] = []
        for key, st in self._leases.items():
            args = self._plan(st, now_ns)
            pending = self._pending.pop(key, None)
            if pending is not None:
                args = _add_back(args or self._args(st), pending[_BACK_M], pending[_BACK_B])
            if args is not None:
                requests.append((st, _lease_op(st.redis_key, args)))
        for key, args in self._pending.items():
            requests.append((None, _lease_op(self._bucket_key(key), args)))
        self._pending.clear()
        replies = await self._link.execute_with_heartbeat([op for _, op in requests], now_ns)
        if replies is None:
            return  # outage: grants of lost replies are lost (under-admission only)
        for (lease, _op), reply in zip(requests, replies, strict=True):
            granted_m, granted_b, left_m, left_b = (int(x) for x in reply)
            if lease is None:
                continue
            if self._leases.get(lease.key) is lease and lease.limit.leased:
                lease.limit.grant(granted_m, granted_b)
            elif granted_m or granted_b:  # detached meanwhile: straight back
                self._give_back_later(lease, granted_m, granted_b)
            lease.seen_m, lease.seen_b = left_m, left_b

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

    def _on_outage(self) -> None:
        """failure=open: every limit goes local (a full bucket of its own) until `resume`."""
        if self._link.failure != "open":
            return
        now = time.monotonic_ns()
        for st in self._leases.values():
            st.limit.set_leased(False, now)

    def _give_back_later(self, st: _Lease, m: int, b: int) -> None:
        """Queue tokens for `st`'s shared bucket: they go back with the next round."""
        _add_back(self._pending.setdefault(st.key, self._args(st)), m, b)

    # ------------------------------------------------------------------- args
    def _bucket_key(self, key: str) -> str:
        return f"{self._link.prefix}bucket:{key}"

    def _shares(self, st: _Lease) -> tuple[int, int]:
        """What one process may hold of each dimension when tokens are scarce (>= 1)."""
        processes = self._link.processes
        return (
            max(1, int(self._accuracy * st.m_cap / processes)),
            max(1, int(self._accuracy * st.b_cap / processes)),
        )

    def _args(
        self, st: _Lease, want_m: int = 0, back_m: int = 0, want_b: int = 0, back_b: int = 0
    ) -> list[int]:
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


def _lease_op(redis_key: str, args: list[int]) -> Op:
    return ("lease", (1, redis_key, *args))


def _add_back(args: list[int], m: int, b: int) -> list[int]:
    """`args` with `m` messages and `b` bytes more given back (in place)."""
    args[_BACK_M] += m
    args[_BACK_B] += b
    return args
