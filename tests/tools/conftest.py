from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wsgw.tools.echo import start_echo_server

EchoFactory = Callable[..., Awaitable[int]]


@pytest.fixture
async def start_echo() -> AsyncIterator[EchoFactory]:
    """start_echo(**kwargs) → port of an in-process echo server, closed after the test."""
    servers: list[asyncio.Server] = []

    async def start(**kwargs: object) -> int:
        server = await start_echo_server("127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def echo_port(start_echo: EchoFactory) -> int:
    return await start_echo()
