"""Shared helpers for the telemetry tests: a scripted clock, exposition parsing, Redis."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from wsgw.pipeline.telemetry import ConnectionRecord, Telemetry


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """The gateway runs on uvloop in production, so the sinks' tests do too."""
    return {"uvloop": uvloop.new_event_loop}


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

API_LABELS = [("chat", "v1"), ("chat", "v2"), ("quotes", "1.0")]
APP_LABELS = ["acme", "globex"]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counters:
    """Stands in for the relay's two FrameRelay codecs: mutable, read through a callable."""

    def __init__(self) -> None:
        self.c2b_frames = self.c2b_bytes = self.b2c_frames = self.b2c_bytes = 0

    def __call__(self) -> tuple[int, int, int, int]:
        return self.c2b_frames, self.c2b_bytes, self.b2c_frames, self.b2c_bytes

    def add(self, c2b: tuple[int, int] = (0, 0), b2c: tuple[int, int] = (0, 0)) -> None:
        self.c2b_frames += c2b[0]
        self.c2b_bytes += c2b[1]
        self.b2c_frames += b2c[0]
        self.b2c_bytes += b2c[1]


WALL_START = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_telemetry(clock: Clock | None = None, **kwargs: object) -> Telemetry:
    kwargs.setdefault("api_labels", API_LABELS)
    kwargs.setdefault("application_labels", APP_LABELS)
    return Telemetry(
        clock=clock or Clock(),
        wall_clock=lambda: WALL_START + 60,
        **kwargs,  # type: ignore[arg-type]
    )


def record(
    clock: Clock,
    counters: Callable[[], tuple[int, int, int, int]] | object | None = None,
    *,
    api: str = "chat",
    version: str = "v1",
    application: str = "acme",
    key_type: str = "PRODUCTION",
    client: str = "10.0.0.7",
    handshake_seconds: float = 0.004,
) -> ConnectionRecord:
    return ConnectionRecord(
        api=api,
        version=version,
        application=application,
        key_type=key_type,
        client=client,
        started_wall=WALL_START,
        started_mono=clock(),
        handshake_seconds=handshake_seconds,
        counters=counters,
    )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(telemetry: Telemetry) -> tuple[Samples, dict[str, str]]:
    """Parse /metrics with prometheus_client's own parser: (samples, family name → type)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(telemetry.metrics_text().decode()):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def L(**labels: str) -> frozenset[tuple[str, str]]:  # noqa: N802 - reads like a label set
    return frozenset(labels.items())


def _redis_listening() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
async def redis_stream() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """The real Redis on 127.0.0.1:6379 and a fresh stream key, deleted afterwards.
    In CI (env CI set) a missing Redis fails the test; elsewhere it skips it."""
    if not _redis_listening():
        message = f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    client = aioredis.Redis.from_url(REDIS_URL)
    key = f"wsgw-test-events-{uuid.uuid4().hex}"
    try:
        yield client, key
    finally:
        await client.delete(key)
        await client.aclose()


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
