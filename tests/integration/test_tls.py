"""wss:// on both sides: the gateway's TLS listener, and wss:// backends verified (or not)
against the configured CA."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.tls_support import self_signed_certificate
from wsgw.tools.echo import start_echo_server

from .backends import TIMEOUT
from .conftest import GatewayFactory, Peers

# Not module-wide: where the gateway refuses a backend's certificate, the backend's own
# TLS server reports the failed handshake through asyncio's exception handler.
no_tracebacks = pytest.mark.usefixtures("no_tracebacks")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def client_trusting(cert_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_file))


async def wss_echo(certificate: tuple[Path, Path], peers: Peers) -> str:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = peers.adopt(
        await start_echo_server("127.0.0.1", 0, prefix="[tls] ", ssl_context=context)
    )
    return f"wss://localhost:{server.sockets[0].getsockname()[1]}"


@no_tracebacks
async def test_wss_client_through_the_tls_listener(
    make_gateway: GatewayFactory, peers: Peers, certificate: tuple[Path, Path]
) -> None:
    backend = await peers.recording()
    cert_file, key_file = certificate

    def with_tls(config: dict) -> None:
        config["gateway"]["tls"] = {
            "listen": "127.0.0.1:0",
            "cert_file": str(cert_file),
            "key_file": str(key_file),
        }

    env = await make_gateway(edit=with_tls, production=backend.url)
    url = f"wss://{env.gateway.tls_address}/echowebsocket/1.0"
    async with connect(
        url, ssl=client_trusting(cert_file), additional_headers=env.auth(), proxy=None
    ) as ws:
        await ws.send("over TLS")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "over TLS"
        big = bytes(range(256)) * 1024
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == big
    assert (await backend.next()).headers["X-Forwarded-Proto"] == "https"
    # The plain listener still serves, and says so.
    async with connect(env.url, additional_headers=env.auth(), proxy=None):
        pass
    assert (await backend.next()).headers["X-Forwarded-Proto"] == "http"


@no_tracebacks
async def test_tls_listener_refuses_a_client_that_does_not_trust_it(
    make_gateway: GatewayFactory, certificate: tuple[Path, Path]
) -> None:
    cert_file, key_file = certificate

    def with_tls(config: dict) -> None:
        config["gateway"]["tls"] = {
            "listen": "127.0.0.1:0",
            "cert_file": str(cert_file),
            "key_file": str(key_file),
        }

    env = await make_gateway(edit=with_tls)
    url = f"wss://{env.gateway.tls_address}/echowebsocket/1.0"
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(url, additional_headers=env.auth(), proxy=None, open_timeout=TIMEOUT):
            pass
    # The listener survives the failed handshake.
    async with connect(
        url, ssl=client_trusting(cert_file), additional_headers=env.auth(), proxy=None
    ) as ws:
        await ws.send("still up")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[production] still up"


@no_tracebacks
async def test_wss_backend_verified_against_the_configured_ca(
    make_gateway: GatewayFactory, peers: Peers, certificate: tuple[Path, Path]
) -> None:
    backend_url = await wss_echo(certificate, peers)

    def trust(config: dict) -> None:
        config["gateway"]["backend_tls"] = {"ca_file": str(certificate[0])}

    env = await make_gateway(edit=trust, production=backend_url)
    async with connect(env.url, additional_headers=env.auth(), proxy=None) as ws:
        await ws.send("to a wss backend")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[tls] to a wss backend"


async def test_wss_backend_with_an_unknown_ca_is_502(
    make_gateway: GatewayFactory, peers: Peers, certificate: tuple[Path, Path]
) -> None:
    backend_url = await wss_echo(certificate, peers)
    env = await make_gateway(production=backend_url)  # verification on, system CAs only
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(env.url, additional_headers=env.auth(), proxy=None):
            pass
    assert refused.value.response.status_code == 502
    assert b'"bad_gateway"' in refused.value.response.body


@no_tracebacks
async def test_wss_backend_without_verification(
    make_gateway: GatewayFactory, peers: Peers, certificate: tuple[Path, Path]
) -> None:
    backend_url = await wss_echo(certificate, peers)

    def no_verify(config: dict) -> None:
        config["gateway"]["backend_tls"] = {"verify": False}

    env = await make_gateway(edit=no_verify, production=backend_url)
    async with connect(env.url, additional_headers=env.auth(), proxy=None) as ws:
        await ws.send("unverified")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "[tls] unverified"
