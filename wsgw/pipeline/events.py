"""Analytics events: JSON lines to a file or stdout, and a capped Redis Stream.

emit() is called on the event loop by the relay's telemetry: it serializes the event once
(orjson) and appends it to each sink's bounded buffer, nothing more. Each sink has its own
background task that drains its buffer in batches (every FLUSH_INTERVAL_S, or sooner when
FLUSH_EVENTS are waiting), so a slow disk, a full stdout pipe or a dead Redis never slows
the relay, nor the other sinks: when a buffer is full the new event is dropped and counted
(wsgw_events_dropped_total{sink}); a failed write is counted (wsgw_events_failed_total{sink})
and its batch is retried after a backoff, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("wsgw.events")

FLUSH_INTERVAL_S = 0.1
FLUSH_EVENTS = 500  # a batch this large is written without waiting for the interval
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 2.0
REDIS_TIMEOUT_S = 1.0

# One buffered event: its type (the Redis Stream's field, to filter without parsing) and
# its JSON line (newline included).
Item = tuple[str, bytes]


def iso_utc(wall: float) -> str:
    """ISO-8601 in UTC with milliseconds and a Z: 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Sink:
    """A bounded buffer and the task that drains it into write_batch()."""

    name = "sink"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer: deque[Item] = deque()
        self.dropped = 0  # events lost because the buffer was full
        self.failed = 0  # write attempts that raised (their events were kept and retried)
        self.written = 0  # events written
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()  # interrupts a backoff wait
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # log once per outage, not once per retry

    # ------------------------------------------------------------- the caller side
    def put(self, item: Item) -> None:
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            self.dropped += 1
            return
        buffer.append(item)
        if len(buffer) >= FLUSH_EVENTS:
            self._wake.set()

    # ------------------------------------------------------------- the drain side
    async def write_batch(self, batch: list[Item]) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        """Prepare resources (may fail: the writes will count it and retry)."""

    async def close(self) -> None:
        """Release resources."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name=self.name)

    async def stop(self, timeout_s: float) -> None:
        """Write what is buffered (bounded by timeout_s), then close."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=timeout_s)
            if pending:  # a sink too slow to flush in time: what is left is lost
                task.cancel()
                await asyncio.wait({task})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close(), 1.0)

    async def _drain(self) -> None:
        try:
            await self._drain_loop()
        except Exception:  # a bug here must not go unnoticed, nor reach the relay
            log.exception("analytics sink %s stopped", self.name)

    async def _drain_loop(self) -> None:
        await self.open()
        backoff = BACKOFF_MIN_S
        while True:
            if not self.buffer:
                if self._stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLUSH_INTERVAL_S):
                        await self._wake.wait()
                self._wake.clear()
                continue
            if await self.flush_once():
                backoff = BACKOFF_MIN_S
                if len(self.buffer) < FLUSH_EVENTS and not self._stopping:
                    # Wait for the interval: batches, not one write per event.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(FLUSH_INTERVAL_S):
                            await self._wake.wait()
                    self._wake.clear()
            else:
                if self._stopping:
                    return  # one last try failed: do not hold the shutdown for a dead sink
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._stop.wait()
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def flush_once(self) -> bool:
        """Write up to FLUSH_EVENTS buffered events. False (and the events are back at the
        head of the buffer) when the write failed."""
        buffer = self.buffer
        batch = [buffer.popleft() for _ in range(min(len(buffer), FLUSH_EVENTS))]
        try:
            await self.write_batch(batch)
        except Exception as err:  # any sink error: count, keep the events, retry later
            self.failed += 1
            self._requeue(batch)
            if not self._failing:
                self._failing = True
                log.warning("analytics sink %s failing (%s), retrying", self.name, err)
            return False
        except asyncio.CancelledError:
            self._requeue(batch)
            raise
        if self._failing:
            self._failing = False
            log.info("analytics sink %s recovered", self.name)
        self.written += len(batch)
        return True

    def _requeue(self, batch: list[Item]) -> None:
        buffer = self.buffer
        buffer.extendleft(reversed(batch))
        # New events arrived during the write: keep the oldest (ordered) ones.
        while len(buffer) > self.capacity:
            buffer.pop()
            self.dropped += 1


class FileSink(Sink):
    """JSON lines appended to a file, or written to stdout when the path is "-". The blocking
    write runs in a worker thread; one write at a time per sink (its drain task awaits it)."""

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(capacity)
        self.path = path
        self.name = "stdout" if path == "-" else "file"
        self._file: IO[bytes] | None = None

    async def write_batch(self, batch: list[Item]) -> None:
        data = b"".join(line for _, line in batch)
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        if self.path == "-":
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
            return
        try:
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
            self._file.write(data)
            self._file.flush()
        except OSError:
            # Reopen on the next try: the file may have been moved, the disk freed.
            self._close_file()
            raise

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close_file)


class RedisStreamSink(Sink):
    """XADD to a capped stream (MAXLEN ~), one pipelined round trip per batch. Each entry is
    {"type": <event type>, "event": <the JSON line>}."""

    name = "redis"

    def __init__(self, url: str, stream: str, maxlen: int, capacity: int) -> None:
        super().__init__(capacity)
        self.stream = stream
        self.maxlen = maxlen
        # Our own loop retries with backoff; redis-py's own retries would only stall a batch.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )

    async def write_batch(self, batch: list[Item]) -> None:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            pipe = self.client.pipeline(transaction=False)
            for kind, line in batch:
                pipe.xadd(
                    self.stream,
                    {"type": kind, "event": line.rstrip(b"\n")},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


class EventLog:
    """Fans each event out to the configured sinks."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def emit(self, event: dict[str, Any]) -> None:
        item = (event["type"], orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        for sink in self.sinks:
            sink.put(item)

    async def start(self) -> None:
        for sink in self.sinks:
            sink.start()

    async def stop(self, timeout_s: float = 2.0) -> None:
        await asyncio.gather(*(sink.stop(timeout_s) for sink in self.sinks))
