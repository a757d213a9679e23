"""Gateway-wide events over a real Redis: delivery, reconciliation, outages, bad input."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis
import redis.asyncio as redis_asyncio

import wsgw.pipeline.cluster.events as events_module
from tests.redis_support import PrivateRedis, free_port
from wsgw.oauth.revocation import Revocation
from wsgw.pipeline.cluster.events import (
    MAX_MESSAGE_BYTES,
    CloseRequest,
    ClusterEvents,
    canonical,
    names,
    publish_revocations_sync,
)

from .helpers import wait_for

LOGGER = "wsgw.pipeline.cluster"


class Sink:
    """What one process's callbacks were handed."""

    def __init__(self, fail_first: bool = False) -> None:
        self.revocations: list[Revocation] = []
        self.calls = 0
        self.closes: list[CloseRequest] = []
        self._fail_first = fail_first

    def on_revocations(self, entries: list[Revocation]) -> None:
        self.calls += 1
        if self._fail_first and self.calls == 1:
            raise RuntimeError("handler bug")
        self.revocations.extend(entries)

    def on_close(self, request: CloseRequest) -> None:
        self.closes.append(request)

    def has(self, *entries: Revocation) -> Callable[[], bool]:
        return lambda: all(e in self.revocations for e in entries)


def later(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


def jti(value: str, ttl_s: int = 3600) -> Revocation:
    return Revocation("jti", value, later(ttl_s))


class Cluster:
    """Gateway processes' events on one Redis, stopped at the end of the test."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.started: list[ClusterEvents] = []

    async def process(
        self, name: str, sink: Sink | None = None, url: str | None = None, healthy: bool = True
    ) -> tuple[ClusterEvents, Sink]:
        sink = sink or Sink()
        events = ClusterEvents(
            url or self.url,
            on_revocations=sink.on_revocations,
            on_close=sink.on_close,
            prefix=self.prefix,
            origin=name,
        )
        await events.start()
        self.started.append(events)
        if healthy:
            assert await wait_for(lambda: events.healthy, 2.0), f"{name} did not connect"
        return events, sink


@pytest.fixture
async def cluster(redis_url: str, redis_prefix: str) -> AsyncIterator[Cluster]:
    group = Cluster(redis_url, redis_prefix)
    try:
        yield group
    finally:
        for events in group.started:
            await events.stop()


def set_members(url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        members: list[bytes] = client.zrange(names(prefix)[1], 0, -1)  # type: ignore[assignment]
        return members
    finally:
        client.close()


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and "unreachable" in r.getMessage()
    ]


# ------------------------------------------------------------------------------- delivery
async def test_revocations_reach_every_process_within_a_second(cluster: Cluster) -> None:
    a, sink_a = await cluster.process("a")
    _, sink_b = await cluster.process("b")
    _, sink_c = await cluster.process("c")
    entries = [jti("t-1"), Revocation("application", "app", later(), int(time.time()))]

    started = time.monotonic()
    a.publish_revocations(entries)
    assert await wait_for(lambda: sink_b.has(*entries)() and sink_c.has(*entries)(), 1.0)
    elapsed = time.monotonic() - started
    print(f"revocations A -> B, C: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0
    # The publisher gets its own back (documented: the handler merges, harmless).
    assert await wait_for(sink_a.has(*entries), 1.0)
    assert a.counts["revocation", "sent"] == 2
    # One canonical member per revocation: publishing again adds none.
    a.publish_revocations(entries)
    assert await wait_for(lambda: a.counts["revocation", "sent"] == 4, 1.0)
    assert sorted(set_members(cluster.url, cluster.prefix)) == sorted(map(canonical, entries))


async def test_close_reaches_the_others_not_the_origin(cluster: Cluster) -> None:
    a, sink_a = await cluster.process("a")
    _, sink_b = await cluster.process("b")
    _, sink_c = await cluster.process("c")
    request = CloseRequest({"api": "chat", "version": "v1"}, 4000, "revoked by the operator")

    started = time.monotonic()
    a.publish_close(request)
    assert await wait_for(lambda: bool(sink_b.closes and sink_c.closes), 1.0)
    elapsed = time.monotonic() - started
    print(f"close A -> B, C: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0
    assert sink_b.closes == sink_c.closes == [request]
    # A revocation published after the close reaches A after it would have: A got none.
    marker = jti("marker")
    a.publish_revocations([marker])
    assert await wait_for(sink_a.has(marker), 1.0)
    assert sink_a.closes == []
    assert a.counts["close", "sent"] == 1


async def test_sync_publish_reaches_the_processes(cluster: Cluster) -> None:
    _, sink_b = await cluster.process("b")
    entry = Revocation("consumer_key", "ck-1", later(), int(time.time()))
    started = time.monotonic()
    await asyncio.to_thread(publish_revocations_sync, cluster.url, [entry], cluster.prefix)
    assert await wait_for(sink_b.has(entry), 1.0)
    print(f"sync publish -> B: {(time.monotonic() - started) * 1000:.1f} ms")
    assert set_members(cluster.url, cluster.prefix) == [canonical(entry)]


async def test_sync_publish_raises_quickly_when_redis_is_unreachable() -> None:
    started = time.monotonic()
    with pytest.raises((redis.RedisError, OSError)):
        publish_revocations_sync(f"redis://127.0.0.1:{free_port()}", [jti("x")])
    assert time.monotonic() - started < 2.5


async def test_sync_publish_times_out_against_a_silent_server() -> None:
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises((redis.RedisError, OSError)):
            await asyncio.to_thread(
                publish_revocations_sync, f"redis://127.0.0.1:{port}", [jti("x")]
            )
        assert time.monotonic() - started < 3.0  # the 2 s timeout, not a hang
    finally:
        server.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts and never answers (a hung Redis)."""
    try:
        await reader.read()  # until the client hangs up
    finally:
        writer.close()


# ------------------------------------------------------------------------ reconciliation
async def test_reconcile_prunes_and_reads_the_set(cluster: Cluster) -> None:
    live, expired = jti("live"), jti("old", ttl_s=-10)
    channel, key = names(cluster.prefix)
    client = redis_asyncio.Redis.from_url(cluster.url)
    try:
        await client.zadd(
            key,
            {canonical(live): live.expires_at, canonical(expired): expired.expires_at},
        )
        await client.zadd(key, {b"not a revocation": later()})
    finally:
        await client.aclose()

    events, sink = await cluster.process("b")
    assert sink.revocations == [live] and sink.calls == 1  # all in one call
    assert events.reconciliations_total == 1
    assert events.counts["revocation", "reconciled"] == 1
    assert events.malformed_total == 1  # the bad member, skipped
    assert canonical(expired) not in set_members(cluster.url, cluster.prefix)


async def test_a_process_cut_off_reconciles_on_reconnect(
    private_redis: PrivateRedis, redis_prefix: str
) -> None:
    # B logs in as its own user: turning the user off and killing its connections keeps B
    # out (its reconnects fail) while A publishes, so only the set can bring B the entry.
    admin = redis.Redis(port=private_redis.port, socket_timeout=2)
    admin.execute_command("ACL", "SETUSER", "gw-b", "on", ">pw", "~*", "&*", "+@all")
    group = Cluster(private_redis.url, redis_prefix)
    try:
        a, sink_a = await group.process("a")
        b_url = f"redis://gw-b:pw@127.0.0.1:{private_redis.port}"
        b, sink_b = await group.process("b", url=b_url)
        assert b.reconciliations_total == 1

        admin.execute_command("ACL", "SETUSER", "gw-b", "off")
        assert admin.execute_command("CLIENT", "KILL", "USER", "gw-b") >= 1
        assert await wait_for(lambda: not b.healthy, 1.0)

        entry = jti("while-away")
        a.publish_revocations([entry])
        assert await wait_for(sink_a.has(entry), 1.0)  # published, and A got it back
        await asyncio.sleep(0.3)  # B keeps failing to reconnect meanwhile
        assert sink_b.revocations == [] and not b.healthy

        admin.execute_command("ACL", "SETUSER", "gw-b", "on")
        started = time.monotonic()
        assert await wait_for(sink_b.has(entry), 3.0)
        print(f"B reconciled {(time.monotonic() - started) * 1000:.0f} ms after it could")
        assert b.healthy and b.reconciliations_total == 2
        assert b.counts["revocation", "reconciled"] == 1
        assert b.counts["revocation", "received"] == 0  # not by pub/sub: it was away
    finally:
        for events in group.started:
            await events.stop()
        admin.close()


async def test_queued_while_down_and_sent_on_reconnect(
    private_redis: PrivateRedis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    group = Cluster(private_redis.url, redis_prefix)
    try:
        a, _ = await group.process("a")
        b, sink_b = await group.process("b")

        private_redis.kill()
        assert await wait_for(lambda: not a.healthy and not b.healthy, 4.0)
        entry = jti("queued")
        a.publish_revocations([entry])
        a.publish_close(CloseRequest({}, 1012, "restart"))  # not replayed: dropped
        await asyncio.sleep(0.5)  # a few failed reconnects
        assert a.pending == 1 and a.counts["close", "dropped"] == 1
        assert len(outage_warnings(caplog)) == 2  # one per process and outage

        private_redis.start()  # same port, empty: A's queue is all the set gets
        started = time.monotonic()
        assert await wait_for(sink_b.has(entry), 5.0)
        print(f"queued entry reached B {(time.monotonic() - started) * 1000:.0f} ms after restart")
        assert a.pending == 0 and a.counts["revocation", "sent"] == 1
        assert set_members(private_redis.url, redis_prefix) == [canonical(entry)]
        assert sink_b.closes == []  # the close was dropped, not replayed
        assert len(outage_warnings(caplog)) == 2
    finally:
        for events in group.started:
            await events.stop()


# --------------------------------------------------------------------------- robustness
async def test_malformed_messages_are_counted_and_ignored(cluster: Cluster) -> None:
    b, sink_b = await cluster.process("b")
    good = jti("good")
    entry = good.to_builtins()
    bad_messages: list[bytes] = [
        b"not json",
        b"[1, 2]",
        b'{"type": "nope"}',
        b'{"type": "revocations", "entries": {"kind": "jti"}}',
        orjson.dumps({"type": "revocations", "entries": [{**entry, "kind": "bogus"}]}),
        orjson.dumps({"type": "revocations", "entries": [{**entry, "expires_at": 1.5}]}),
        orjson.dumps({"type": "revocations", "entries": [{**entry, "value": 7}]}),
        orjson.dumps({"type": "close", "origin": "x", "filters": {"evil": "1"}, "code": 4000}),
        orjson.dumps({"type": "close", "origin": "x", "filters": {}, "code": 99, "reason": ""}),
        orjson.dumps({"type": "close", "origin": "x", "filters": [], "code": 4000}),
        b'{"type": "revocations", "entries": []' + b" " * MAX_MESSAGE_BYTES + b"}",
    ]
    channel, _ = names(cluster.prefix)
    client = redis_asyncio.Redis.from_url(cluster.url)
    try:
        for data in bad_messages:
            await client.publish(channel, data)
        # One good entry next to a bad one: the good one is kept, the message counted.
        mixed = {"type": "revocations", "entries": [entry, {**entry, "kind": "bogus"}]}
        await client.publish(channel, orjson.dumps(mixed))
        # A close from B's own origin: skipped, not malformed.
        own = {"type": "close", "origin": "b", "filters": {}, "code": 4000, "reason": ""}
        await client.publish(channel, orjson.dumps(own))
        await client.publish(channel, orjson.dumps({"type": "revocations", "entries": [entry]}))
    finally:
        await client.aclose()
    assert await wait_for(lambda: sink_b.revocations == [good, good], 1.0)
    assert b.malformed_total == len(bad_messages) + 1
    assert sink_b.closes == []
    assert b.healthy and b.reconciliations_total == 1  # never reconnected


async def test_a_failing_handler_does_not_stop_the_events(cluster: Cluster) -> None:
    a, _ = await cluster.process("a")
    b, sink_b = await cluster.process("b", Sink(fail_first=True))
    first, second = jti("first"), jti("second")
    a.publish_revocations([first])
    assert await wait_for(lambda: b.callback_errors_total == 1, 1.0)
    a.publish_revocations([second])
    assert await wait_for(sink_b.has(second), 1.0)
    assert b.healthy


def test_close_request_is_validated() -> None:
    CloseRequest({"application": "app", "key_type": "PRODUCTION"}, 1008, "revoked")
    for filters, code, reason in [
        ({"user": "x"}, 4000, ""),
        ({"api": 1}, 4000, ""),
        ({}, 999, ""),
        ({}, 5000, ""),
        ({}, 4000, "x" * 124),
    ]:
        with pytest.raises(ValueError):
            CloseRequest(filters, code, reason)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- lifecycle
async def test_start_and_stop_are_prompt_with_redis_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    events = ClusterEvents(
        f"redis://127.0.0.1:{free_port()}", on_revocations=Sink().on_revocations, on_close=print
    )
    started = time.monotonic()
    await events.start()
    assert time.monotonic() - started < 0.05  # in the background
    events.publish_revocations([jti("x")])
    events.publish_close(CloseRequest({}, 4000, ""))
    await asyncio.sleep(0.5)  # several failed attempts
    assert not events.healthy and events.pending == 1
    assert events.counts["close", "dropped"] == 1
    assert len(outage_warnings(caplog)) == 1
    started = time.monotonic()
    await events.stop()
    assert time.monotonic() - started < 1.0


async def test_stop_is_prompt_against_a_hung_redis() -> None:
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events = ClusterEvents(
        f"redis://127.0.0.1:{port}", on_revocations=Sink().on_revocations, on_close=print
    )
    try:
        await events.start()
        await asyncio.sleep(0.3)  # stuck waiting for the SUBSCRIBE answer
        assert not events.healthy
        started = time.monotonic()
        await events.stop()
        assert time.monotonic() - started < 1.0
    finally:
        server.close()


async def test_stop_is_prompt_after_redis_dies(private_redis: PrivateRedis) -> None:
    events = ClusterEvents(
        private_redis.url, on_revocations=Sink().on_revocations, on_close=print, prefix="t"
    )
    await events.start()
    assert await wait_for(lambda: events.healthy, 2.0)
    private_redis.kill()
    started = time.monotonic()
    await events.stop()
    assert time.monotonic() - started < 1.0
    assert not events.healthy


async def test_collect_shape(cluster: Cluster) -> None:
    events, _ = await cluster.process("b")
    samples = events.collect()
    for name, kind, help_text, labels, value in samples:
        assert name.startswith("wsgw_cluster_events_") and kind in ("counter", "gauge")
        assert help_text and isinstance(labels, dict) and isinstance(value, (int, float))
    by_name = {(s[0], tuple(sorted(s[3].items()))): s[4] for s in samples}
    assert by_name["wsgw_cluster_events_connected", ()] == 1.0
    assert by_name["wsgw_cluster_events_reconciliations_total", ()] == 1
    sent = (("direction", "sent"), ("kind", "revocation"))
    assert by_name["wsgw_cluster_events_total", sent] == 0


async def test_a_silent_connection_is_detected_by_ping(
    private_redis: PrivateRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorter liveness bounds so that the test is quick; the defaults are 1 s / 3 s / 5 s.
    monkeypatch.setattr(events_module, "PING_EVERY_S", 0.1)
    monkeypatch.setattr(events_module, "DEAD_AFTER_S", 0.4)
    monkeypatch.setattr(events_module, "RECONCILE_TIMEOUT_S", 0.5)
    admin = redis.Redis(port=private_redis.port, socket_timeout=2)
    group = Cluster(private_redis.url, redis_prefix)
    try:
        b, _ = await group.process("b")
        await asyncio.sleep(1.0)  # idle, yet answered: the PONGs keep it alive
        assert b.healthy and b.reconciliations_total == 1
        # A paused Redis holds the connection open and answers nothing (a half-open link).
        # (It ends by itself: a CLIENT UNPAUSE would wait for the pause too.)
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        assert await wait_for(lambda: not b.healthy, 0.9)
        assert await wait_for(lambda: b.healthy, 3.0)
        assert b.reconciliations_total == 2
    finally:
        for events in group.started:
            await events.stop()
        admin.close()


async def test_a_large_batch_goes_out_in_chunks(cluster: Cluster) -> None:
    a, _ = await cluster.process("a")
    _, sink_b = await cluster.process("b")
    entries = [jti(f"bulk-{i}") for i in range(2_500)]
    started = time.monotonic()
    a.publish_revocations(entries)
    assert await wait_for(lambda: len(sink_b.revocations) == len(entries), 2.0)
    print(f"2500 revocations A -> B: {(time.monotonic() - started) * 1000:.0f} ms")
    assert set(sink_b.revocations) == set(entries)
    assert len(set_members(cluster.url, cluster.prefix)) == len(entries)


async def test_the_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "MAX_PENDING", 5)
    events = ClusterEvents(
        f"redis://127.0.0.1:{free_port()}", on_revocations=Sink().on_revocations, on_close=print
    )
    await events.start()
    try:
        events.publish_revocations([jti(f"q-{i}") for i in range(8)])
        assert events.pending == 5 and events.counts["revocation", "dropped"] == 3
        kept = [canonical(jti(f"q-{i}")) for i in range(3, 8)]  # the oldest dropped
        assert [member for member, _ in events._pending] == kept
    finally:
        await events.stop()
