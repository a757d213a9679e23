"""The failed-authentication limit of POST /oauth2/token, over real HTTP (aiohttp) against a
real gateway; and what the endpoint logs (never a secret)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time

import aiohttp
import orjson
import pytest

from wsgw.http import Headers, Request

from .conftest import Env, GatewayFactory

pytestmark = pytest.mark.usefixtures("no_tracebacks")

WINDOW_S = 1.0
FORM = {"grant_type": "client_credentials"}


def small_window(raw: dict) -> None:
    raw["security"]["token_failures"] = {"per_client_id": 5, "per_address": 10, "window_s": 1}


def basic(client_id: str, secret: str) -> str:
    # The generated ids and secrets are URL-safe: §2.3.1's form-urlencoding leaves them as is.
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def post_token(
    session: aiohttp.ClientSession,
    env: Env,
    client_id: str,
    secret: str,
    *,
    via_basic: bool = True,
) -> tuple[int, dict[str, str], dict]:
    if via_basic:
        headers, data = {"Authorization": basic(client_id, secret)}, FORM
    else:
        headers, data = {}, {**FORM, "client_id": client_id, "client_secret": secret}
    url = f"{env.http}/oauth2/token"
    async with session.post(url, data=data, headers=headers) as response:
        return response.status, dict(response.headers), orjson.loads(await response.read())


async def token_failures(session: aiohttp.ClientSession, env: Env) -> dict[str, float]:
    async with session.get(f"http://{env.gateway.admin_address}/metrics") as response:
        text = await response.text()
    found = re.findall(r'^wsgw_token_failures_total\{reason="([^"]+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


async def test_sixth_wrong_secret_is_refused_and_then_the_right_one_until_the_window_passes(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway(edit=small_window)
    client_id, secret = env.keys["PRODUCTION"]
    async with aiohttp.ClientSession() as session:
        first_failure = time.monotonic()
        for _ in range(5):
            status, _, body = await post_token(session, env, client_id, "wrong-secret")
            assert (status, body["error"]) == (401, "invalid_client")
        status, headers, body = await post_token(session, env, client_id, "wrong-secret")
        assert (status, body["error"]) == (429, "too_many_requests")
        assert headers["Retry-After"] == "1"
        assert headers["Cache-Control"] == "no-store"
        # The right secret, by either method, gets the same 429: no oracle.
        assert await post_token(session, env, client_id, secret) == (status, headers, body)
        assert (await post_token(session, env, client_id, secret, via_basic=False))[0] == 429
        counts = await token_failures(session, env)
        assert counts["invalid_client"] == 5 and counts["blocked"] == 3
        assert counts["invalid_request"] == 0

        await asyncio.sleep(max(0.0, first_failure + WINDOW_S + 0.05 - time.monotonic()))
        status, _, body = await post_token(session, env, client_id, secret)
        assert status == 200 and body["token_type"] == "Bearer"
        assert (await token_failures(session, env))["blocked"] == 3


async def test_the_other_key_of_the_application_is_not_blocked(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway(edit=small_window)
    production_id, _ = env.keys["PRODUCTION"]
    sandbox_id, sandbox_secret = env.keys["SANDBOX"]
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            assert (await post_token(session, env, production_id, "wrong"))[0] == 401
        assert (await post_token(session, env, production_id, "wrong"))[0] == 429
        assert (await post_token(session, env, sandbox_id, sandbox_secret))[0] == 200


async def test_per_address_limit_over_http(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(edit=small_window)
    client_id, secret = env.keys["PRODUCTION"]
    async with aiohttp.ClientSession() as session:
        for i in range(10):  # ten made-up ids, once each: only the address limit is reached
            assert (await post_token(session, env, f"made-up-{i}", "guess"))[0] == 401
        assert (await post_token(session, env, client_id, secret))[0] == 429


def token_request(authorization: str) -> Request:
    body = b"grant_type=client_credentials"
    headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("authorization", authorization),
        ("content-length", str(len(body))),
    ]
    return Request("POST", "/oauth2/token", "/oauth2/token", "", Headers(headers), body, False)


async def test_gateway_limits_per_peer_address(make_gateway: GatewayFactory) -> None:
    """Gateway.token_endpoint with the peer's address: the per-address limit."""
    env = await make_gateway(edit=small_window)
    client_id, secret = env.keys["PRODUCTION"]
    right = basic(client_id, secret)
    for i in range(10):
        wrong = basic(f"made-up-{i}", "guess")
        assert env.gateway.token_endpoint(token_request(wrong), "203.0.113.5")[0] == 401
    status, headers, _ = env.gateway.token_endpoint(token_request(right), "203.0.113.5")
    assert status == 429 and ("Retry-After", "1") in headers
    assert env.gateway.token_endpoint(token_request(right), "203.0.113.6")[0] == 200
    assert env.gateway.token_endpoint(token_request(right))[0] == 200


async def test_token_endpoint_logs_never_carry_secrets(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures of every kind, a block, a success: no log record holds a secret, an
    Authorization value (or its base64) or an access token, even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    env = await make_gateway(edit=small_window)
    client_id, secret = env.keys["PRODUCTION"]
    wrong = "wrong-secret-7f3a9c"
    secrets = [secret, wrong]
    async with aiohttp.ClientSession() as session:
        status, _, body = await post_token(session, env, client_id, secret)
        assert status == 200
        secrets.append(body["access_token"])
        for _ in range(6):  # wrong secret by Basic: five 401, then the block
            await post_token(session, env, client_id, wrong)
        for _ in range(6):  # the secret typed as the client id (swapped fields), by form
            await post_token(session, env, secret, client_id, via_basic=False)
        for _ in range(6):  # ... and by Basic
            await post_token(session, env, secret, wrong)
        assert (await post_token(session, env, client_id, secret))[0] == 429
    for user, password in ((client_id, wrong), (secret, client_id), (secret, wrong)):
        b64 = base64.b64encode(f"{user}:{password}".encode()).decode()
        secrets += [b64, f"Basic {b64}"]
    texts = [caplog.text]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), str(record.exc_text or "")]
    logged = "\n".join(texts)
    assert "failed client authentications for client id " + client_id in logged  # logged...
    for value in secrets:  # ...but none of these
        assert value not in logged, value
