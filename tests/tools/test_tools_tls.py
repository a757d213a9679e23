"""wss://: the echo backend behind TLS, and the client with and without --insecure."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.tls_support import self_signed_certificate

from .tools_proc import run_wsgw

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def wss_port(start_echo, self_signed: tuple[Path, Path]) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    return await start_echo(prefix="tls:", ssl_context=context)


async def test_echo_over_tls_with_a_trusting_websockets_client(
    wss_port: int, self_signed: tuple[Path, Path]
) -> None:
    trust = ssl.create_default_context(cafile=str(self_signed[0]))
    async with connect(f"wss://127.0.0.1:{wss_port}/", ssl=trust, open_timeout=TIMEOUT) as ws:
        await ws.send("secure")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "tls:secure"


async def test_client_insecure_accepts_an_untrusted_certificate(wss_port: int) -> None:
    code, out, err = await run_wsgw(
        "client", f"wss://127.0.0.1:{wss_port}/", "--insecure", stdin=b"over tls\n"
    )
    assert (code, out) == (0, "< tls:over tls\n"), err


async def test_client_verifies_certificates_by_default(wss_port: int) -> None:
    code, out, err = await run_wsgw("client", f"wss://127.0.0.1:{wss_port}/", stdin=b"x\n")
    assert code == 1
    assert out == ""
    assert "certificate" in err.lower()
