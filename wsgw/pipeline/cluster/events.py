"""Gateway-wide events over Redis: revocations and close requests reach every process.

Two things travel on one pub/sub channel (`<prefix>:events`, JSON messages):
  - {"type": "revocations", "origin", "entries": [Revocation.to_builtins(), ...]}; each entry
    is also kept in a sorted set (`<prefix>:revocations`, member = canonical JSON, score =
    expires_at), so that a process that was away (starting, or Redis unreachable) catches up;
  - {"type": "close", "origin", "filters", "code", "reason"}: pub/sub only.
A process receives its own revocations back (harmless: the handler merges) but not its own
close requests (it applies them locally).

The subscriber task connects, SUBSCRIBEs (and waits for the confirmation), and only then
reconciles: prune the set of expired members, read the rest, on_revocations(all). Whatever
is published from then on arrives as a message, so nothing falls in between. On connection
loss: unhealthy, one warning, reconnect with backoff (0.1 s doubling to 2 s), reconcile again.
A silent half-open connection is caught by a PING every second (dead after 3 s of silence).

Publishing is fire and forget from the event loop thread: a sender task drains a queue.
Revocations wait in it (at most MAX_PENDING entries, the oldest dropped first) while Redis is
down and go out on reconnect; close requests do not (see publish_close).

Callbacks run on the event loop thread, synchronously; an exception from one is logged and
counted, and the task goes on. Redis without persistence loses the set when it restarts:
only what is published after that (including the queues of the processes that saw the
outage) is in it again; the processes that were up keep what they had merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as redis_asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from wsgw.oauth.revocation import KINDS, Revocation

__all__ = [
    "CHANNEL",
    "FILTER_KEYS",
    "REVOCATIONS_KEY",
    "ClusterEvents",
    "CloseRequest",
    "canonical",
    "names",
    "publish_revocations_sync",
]

log = logging.getLogger("wsgw.pipeline.cluster")

CHANNEL = "wsgw:events"
REVOCATIONS_KEY = "wsgw:revocations"
FILTER_KEYS = frozenset({"api", "version", "application", "key_type"})

MAX_MESSAGE_BYTES = 1 << 20  # a received message over this is ignored (malformed)
MAX_ENTRIES = 10_000  # entries per received message, more is malformed
MAX_PENDING = 10_000  # revocations queued while Redis is down
MAX_PENDING_CLOSES = 1_000
CHUNK_BYTES = 256 << 10  # a published message stays well under MAX_MESSAGE_BYTES
CHUNK_ENTRIES = 1_000
MAX_ENTRY_BYTES = 16 << 10  # one revocation's JSON; larger is a caller's bug, dropped

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
CALL_TIMEOUT_S = 0.5  # a publish round trip
RECONCILE_TIMEOUT_S = 5.0  # SUBSCRIBE + reading the whole set
SYNC_TIMEOUT_S = 2.0  # publish_revocations_sync (the CLI)
PING_EVERY_S = 1.0
DEAD_AFTER_S = 3.0  # nothing read for this long (not even a PONG): the connection is gone
POLL_S = 0.2  # a read waits at most this long, so the flag of stop() is seen soon
_RATE_LOG_NS = 60_000_000_000  # malformed messages and callback errors: one log a minute

REDIS_ERRORS = (redis.RedisError, OSError)  # TimeoutError and ConnectionError are OSErrors

Sample = tuple[str, str, str, dict[str, str], float]


def names(prefix: str = "wsgw") -> tuple[str, str]:
    """(channel, sorted set) under `prefix` ("wsgw" and "wsgw:" name the same ones)."""
    base = prefix.rstrip(":")
    return f"{base}:events", f"{base}:revocations"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Close every connection matching all of `filters` (an empty one matches every
    connection) with WebSocket close `code` and `reason`."""

    filters: dict[str, str]  # keys among FILTER_KEYS
    code: int
    reason: str

    def __post_init__(self) -> None:
        if not set(self.filters) <= FILTER_KEYS:
            raise ValueError(f"close filters must be among {sorted(FILTER_KEYS)}")
        if not all(isinstance(v, str) for v in self.filters.values()):
            raise ValueError("close filter values must be strings")
        # 1000-4999 are the codes a close frame may carry; the reason fits one control frame.
        if type(self.code) is not int or not 1000 <= self.code <= 4999:
            raise ValueError("close code must be an int in 1000..4999")
        if not isinstance(self.reason, str) or len(self.reason.encode()) > 123:
            raise ValueError("close reason must be a string of at most 123 UTF-8 bytes")


def canonical(entry: Revocation) -> bytes:
    """The set member of `entry`: the same revocation is always the same member."""
    return orjson.dumps(entry.to_builtins(), option=orjson.OPT_SORT_KEYS)


def decode_revocation(raw: Any) -> Revocation | None:
    """A Revocation from its to_builtins() form; None if it is not one."""
    if not isinstance(raw, dict):
        return None
    kind, value = raw.get("kind"), raw.get("value")
    expires_at, issued_before = raw.get("expires_at"), raw.get("issued_before", 0)
    if kind not in KINDS or not isinstance(value, str):
        return None
    # type() is int: a bool is an int too, and a float would not be the same member.
    if type(expires_at) is not int or type(issued_before) is not int:
        return None
    return Revocation(kind, value, expires_at, issued_before)


def decode_close(raw: dict[str, Any]) -> CloseRequest | None:
    filters = raw.get("filters")
    if not isinstance(filters, dict):
        return None
    try:
        code: Any = raw.get("code")
        reason: Any = raw.get("reason")
        return CloseRequest(dict(filters), code, reason)  # __post_init__ checks the types
    except ValueError:
        return None


Member = tuple[bytes, int]  # (canonical JSON, score = expires_at)


def _members(entries: Iterable[Revocation]) -> list[Member]:
    """Encoded where published: a bad entry raises in the caller, not in the sender."""
    members = []
    for entry in entries:
        member = canonical(entry)
        if len(member) > MAX_ENTRY_BYTES:  # no real revocation is that large
            log.warning("cluster events: a revocation of %d bytes was not published", len(member))
            continue
        members.append((member, entry.expires_at))
    return members


def _chunks(members: Iterable[Member]) -> list[list[Member]]:
    """Groups that make messages of at most CHUNK_ENTRIES entries and CHUNK_BYTES."""
    chunks: list[list[Member]] = []
    size = 0
    for member, score in members:
        if not chunks or len(chunks[-1]) >= CHUNK_ENTRIES or size + len(member) > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((member, score))
        size += len(member) + 1
    return chunks


def _revocations_message(origin: str, chunk: list[Member]) -> bytes:
    # The members are already canonical JSON: join them rather than encode twice.
    head = b'{"type":"revocations","origin":' + orjson.dumps(origin) + b',"entries":['
    return head + b",".join(member for member, _ in chunk) + b"]}"


def _close_message(origin: str, request: CloseRequest) -> bytes:
    return orjson.dumps(
        {
            "type": "close",
            "origin": origin,
            "filters": request.filters,
            "code": request.code,
            "reason": request.reason,
        }
    )


def publish_revocations_sync(
    redis_url: str, entries: list[Revocation], prefix: str = "wsgw"
) -> None:
    """ZADD `entries` to the set and PUBLISH them (for the CLI: no event loop needed).

    Raises redis.RedisError or OSError when Redis does not answer within 2 s. The
    message's origin is "cli": every process, none excepted, merges the entries.
    """
    channel, key = names(prefix)
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=SYNC_TIMEOUT_S,
        socket_connect_timeout=SYNC_TIMEOUT_S,
        retry=SyncRetry(NoBackoff(), 0),
    )
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", f"({time.time()}")
        for chunk in _chunks(_members(entries)):
            pipe.zadd(key, dict(chunk))
            pipe.publish(channel, _revocations_message("cli", chunk))
        pipe.execute()
    finally:
        client.close()


class ClusterEvents:
    """Revocations and close requests to and from every gateway process, through Redis.

    Use it on one event loop: the publish methods and the callbacks run on its thread."""

    def __init__(
        self,
        redis_url: str,
        *,
        on_revocations: Callable[[list[Revocation]], None],
        on_close: Callable[[CloseRequest], None],
        prefix: str = "wsgw",
        origin: str | None = None,
    ) -> None:
        self.origin = origin or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channel, self.key = names(prefix)
        self._url = redis_url
        self._on_revocations = on_revocations
        self._on_close = on_close
        self._client: redis_asyncio.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something to send, or Redis is back
        self._stopping = False
        self._up = False
        self._outage_logged = False  # one warning per outage (and one if down from start)
        self._pending: deque[Member] = deque()
        self._closes: deque[CloseRequest] = deque()
        self._logged_ns: dict[str, int] = {}
        # (kind, direction) -> count: kind revocation (entries) | close (requests).
        self.counts: dict[tuple[str, str], int] = {
            ("revocation", "sent"): 0,
            ("revocation", "received"): 0,
            ("revocation", "reconciled"): 0,
            ("revocation", "dropped"): 0,
            ("close", "sent"): 0,
            ("close", "received"): 0,
            ("close", "dropped"): 0,
        }
        self.malformed_total = 0
        self.callback_errors_total = 0
        self.reconciliations_total = 0
        self.redis_errors_total = 0

    # ------------------------------------------------------------------ state
    @property
    def healthy(self) -> bool:
        """Subscribed and reconciled: events from the other processes arrive."""
        return self._up

    @property
    def pending(self) -> int:
        """Revocations waiting for Redis."""
        return len(self._pending)

    def collect(self) -> list[Sample]:
        """Metrics samples (name, type, help, labels, value), read at scrape time."""
        samples: list[Sample] = [
            (
                "wsgw_cluster_events_total",
                "counter",
                "Cluster events by kind (revocation: entries, close: requests) and direction "
                "(sent, received, reconciled: read from the set on connect, dropped: not sent)",
                {"kind": kind, "direction": direction},
                n,
            )
            for (kind, direction), n in self.counts.items()
        ]
        samples += [
            (
                "wsgw_cluster_events_connected",
                "gauge",
                "1 while subscribed to the cluster events (and reconciled), else 0",
                {},
                float(self._up),
            ),
            (
                "wsgw_cluster_events_reconciliations_total",
                "counter",
                "Revocation set reads on (re)connecting to Redis",
                {},
                self.reconciliations_total,
            ),
            (
                "wsgw_cluster_events_malformed_total",
                "counter",
                "Cluster event messages (or set members) ignored as malformed",
                {},
                self.malformed_total,
            ),
            (
                "wsgw_cluster_events_callback_errors_total",
                "counter",
                "Exceptions raised by the revocation or close handlers",
                {},
                self.callback_errors_total,
            ),
            (
                "wsgw_cluster_events_pending",
                "gauge",
                "Revocations waiting for Redis to be published",
                {},
                len(self._pending),
            ),
        ]
        return samples

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start connecting in the background; returns at once, whether Redis is up or not."""
        if self._reader is not None:
            return
        self._stopping = False
        self._client = redis_asyncio.Redis.from_url(
            self._url,
            socket_timeout=RECONCILE_TIMEOUT_S,  # each call has its own, shorter, timeout
            socket_connect_timeout=CALL_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # the tasks own retrying; a call fails fast
        )
        self._reader = asyncio.create_task(self._read_loop(), name="wsgw-cluster-events")
        self._sender = asyncio.create_task(self._send_loop(), name="wsgw-cluster-events-send")

    async def stop(self) -> None:
        """Stop both tasks and disconnect (under a second, Redis up or not). Revocations
        still queued are sent first if Redis is up (at most CALL_TIMEOUT_S), else lost."""
        self._stopping = True
        was_up = self._up  # the reader's exit clears it
        tasks = {t for t in (self._reader, self._sender) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a cancellation swallowed inside a Redis call still ends at the flag.
            await asyncio.wait(tasks, timeout=POLL_S + 0.1)
        self._reader = self._sender = None
        client, self._client = self._client, None
        if client is None:
            return
        if was_up and (self._pending or self._closes):
            with contextlib.suppress(*REDIS_ERRORS):
                await self._flush(client)
        self._up = False
        with contextlib.suppress(*REDIS_ERRORS):
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await client.aclose()

    # -------------------------------------------------------------- publishing
    def publish_revocations(self, entries: list[Revocation]) -> None:
        """Send `entries` to every process (fire and forget; call on the loop thread).

        They are added to the set, then published; this process receives them back too
        (harmless: on_revocations merges). While Redis is down they wait (the oldest dropped
        past MAX_PENDING) and are sent on reconnect.
        """
        self._pending.extend(_members(entries))
        self._bound_pending()
        self._wake.set()

    def publish_close(self, request: CloseRequest) -> None:
        """Ask every other process to close its matching connections (fire and forget).

        This process does not receive it: apply it locally. Pub/sub only, never replayed: a
        process that is not subscribed when it goes out (Redis down, reconnecting, starting)
        never sees it, and one published while this process is cut off from Redis is
        dropped (counted as close/dropped).
        """
        if not self._up or len(self._closes) >= MAX_PENDING_CLOSES:
            self.counts["close", "dropped"] += 1
            return
        self._closes.append(request)
        self._wake.set()

    def _bound_pending(self) -> None:
        over = len(self._pending) - MAX_PENDING
        if over > 0:
            for _ in range(over):
                self._pending.popleft()
            self.counts["revocation", "dropped"] += over
            self._rate_log("dropped", "cluster events: revocation queue full; oldest dropped")

    async def _send_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            # While down, wait: the reader wakes this loop when Redis is back.
            while self._up and (self._pending or self._closes) and not self._stopping:
                client = self._client
                if client is None:  # stop() went past a swallowed cancellation
                    return
                try:
                    await self._flush(client)
                except REDIS_ERRORS:
                    # The reader sees an outage itself; this may be one connection only.
                    self.redis_errors_total += 1
                except Exception:  # a bug: keep the queue, try again later
                    if self._due("send"):
                        log.exception("cluster events: publishing failed")
                else:
                    backoff = BACKOFF_MIN_S
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _flush(self, client: redis_asyncio.Redis) -> None:
        """Send the closes and one chunk of revocations in one round trip; on failure the
        revocations go back in front of the queue (closes are dropped)."""
        closes = list(self._closes)
        self._closes.clear()
        batch = [self._pending.popleft() for _ in range(min(CHUNK_ENTRIES, len(self._pending)))]
        chunks = _chunks(batch)
        pipe = client.pipeline(transaction=False)
        for request in closes:
            pipe.publish(self.channel, _close_message(self.origin, request))
        if chunks:
            pipe.zremrangebyscore(self.key, "-inf", f"({time.time()}")
        for chunk in chunks:
            pipe.zadd(self.key, dict(chunk))
            pipe.publish(self.channel, _revocations_message(self.origin, chunk))
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await pipe.execute()
        except BaseException:  # also a cancellation: nothing of the batch is lost
            self.counts["close", "dropped"] += len(closes)
            self._pending.extendleft(reversed(batch))
            self._bound_pending()
            raise
        self.counts["close", "sent"] += len(closes)
        self.counts["revocation", "sent"] += sum(len(chunk) for chunk in chunks)

    # ---------------------------------------------------------------- reading
    async def _read_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            client = self._client
            if client is None:  # stop() went past a swallowed cancellation
                return
            pubsub = client.pubsub()
            try:
                await self._subscribe_and_reconcile(client, pubsub)
                backoff = BACKOFF_MIN_S
                await self._listen(pubsub)
            except REDIS_ERRORS as exc:
                self.redis_errors_total += 1
                self._enter_outage(exc)
            except Exception:  # a bug: reconnect rather than end the events of this process
                if self._due("bug"):
                    log.exception("cluster events: subscriber failed")
            finally:
                self._up = False
                with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                    async with asyncio.timeout(CALL_TIMEOUT_S):
                        await pubsub.aclose()
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _subscribe_and_reconcile(self, client: redis_asyncio.Redis, pubsub: PubSub) -> None:
        async with asyncio.timeout(RECONCILE_TIMEOUT_S):
            await pubsub.subscribe(self.channel)
            # SUBSCRIBE is effective once confirmed; reading the set before could miss an
            # entry published in between.
            while True:
                message = await pubsub.get_message(timeout=RECONCILE_TIMEOUT_S)
                if message is not None and message["type"] == "subscribe":
                    break
            now = time.time()
            pipe = client.pipeline(transaction=False)
            pipe.zremrangebyscore(self.key, "-inf", f"({now}")
            pipe.zrangebyscore(self.key, now, "+inf")
            _, members = await pipe.execute()
        entries = []
        for member in members:
            entry = self._decode_member(member)
            if entry is not None:
                entries.append(entry)
        self.reconciliations_total += 1
        self.counts["revocation", "reconciled"] += len(entries)
        self._up = True
        if self._outage_logged:
            self._outage_logged = False
            log.warning("cluster events: Redis is back; %d revocations reconciled", len(entries))
        if entries:
            self._call(self._on_revocations, entries)
        self._wake.set()  # what was queued meanwhile goes out now

    def _decode_member(self, member: bytes) -> Revocation | None:
        try:
            entry = decode_revocation(orjson.loads(member))
        except orjson.JSONDecodeError:
            entry = None
        if entry is None:
            self._malformed("a revocation set member")
        return entry

    async def _listen(self, pubsub: PubSub) -> None:
        last_read = last_ping = time.monotonic()
        while not self._stopping:
            message = await pubsub.get_message(timeout=POLL_S)
            now = time.monotonic()
            if message is not None:
                last_read = now
                if message["type"] == "message":
                    self._handle(message["data"])
            if now - last_read > DEAD_AFTER_S:
                raise ConnectionError("no answer to PING")
            if now - last_ping >= PING_EVERY_S:
                last_ping = now
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await pubsub.ping()

    def _handle(self, data: Any) -> None:
        if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
            self._malformed("a message too large")
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._malformed("a message that is not JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "revocations":
            raw = message.get("entries")
            if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
                self._malformed("a revocations message without a valid entry list")
                return
            entries = [e for e in map(decode_revocation, raw) if e is not None]
            if len(entries) < len(raw):
                self._malformed("a revocations message with invalid entries")
            if entries:
                self.counts["revocation", "received"] += len(entries)
                self._call(self._on_revocations, entries)
        elif kind == "close":
            if message.get("origin") == self.origin:
                return  # the publisher applied it locally
            request = decode_close(message)
            if request is None:
                self._malformed("an invalid close message")
                return
            self.counts["close", "received"] += 1
            self._call(self._on_close, request)
        else:
            self._malformed("a message of an unknown type")

    # ---------------------------------------------------------------- helpers
    def _call(self, callback: Callable[[Any], None], arg: Any) -> None:
        try:
            callback(arg)
        except Exception:  # a handler's bug must not end the events of every process
            self.callback_errors_total += 1
            if self._due("callback"):
                log.exception("cluster events: handler failed")

    def _malformed(self, what: str) -> None:
        self.malformed_total += 1
        # Never the content: it may be anything, a token included.
        self._rate_log("malformed", f"cluster events: ignored {what}")

    def _rate_log(self, topic: str, message: str) -> None:
        if self._due(topic):
            log.warning("%s (logged once a minute)", message)

    def _due(self, topic: str) -> bool:
        now = time.monotonic_ns()
        last = self._logged_ns.get(topic)
        if last is not None and now - last < _RATE_LOG_NS:
            return False
        self._logged_ns[topic] = now
        return True

    def _enter_outage(self, exc: BaseException) -> None:
        if self._outage_logged or self._stopping:
            return
        self._outage_logged = True
        # The error's type only: a URL may carry a password.
        log.warning(
            "cluster events: Redis unreachable (%s); revocations and close requests stay in "
            "this process until it is back",
            type(exc).__name__,
        )
