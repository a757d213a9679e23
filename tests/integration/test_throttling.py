"""Per-message throttling through a real gateway: every on_limit action, every scope,
bandwidth limits, connection caps and duration caps, with the metrics and analytics events
checked against the traffic that was actually sent.

Every data frame in either direction counts: a message and its echo cost two tokens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from wsgw.portal import subscribe

from .conftest import Env, GatewayFactory

RECV_S = 5.0


def with_tier(name: str, tier: dict, **api_fields: object) -> Callable[[dict], None]:
    """Config edit: define tier `name`, offer it on EchoWebSocket (+ extra API fields)."""

    def edit(raw: dict) -> None:
        raw["tiers"][name] = tier
        api = raw["apis"][0]
        api["tiers"] = [*api["tiers"], name]
        api.update(api_fields)

    return edit


async def recv_json(ws: websockets.ClientConnection) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), RECV_S))


async def closed_after_two_messages(env: Env) -> websockets.ClientConnection:
    """One message and its echo spend a 2-per-minute limit; the next message closes."""
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("one")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] one"
        await ws.send("two")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), RECV_S)
    return ws


async def scrape(env: Env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://{env.gateway.admin_address}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


API = {"api": "EchoWebSocket", "version": "1.0"}
APP = {**API, "application": "DefaultApplication"}


async def test_drop_keeps_the_connection_and_notifies_the_client(
    make_gateway: GatewayFactory,
) -> None:
    env = await make_gateway(
        edit=with_tier("Tiny", {"messages_per_minute": 4, "on_limit": "drop"}),
        subscribe_to=("EchoWebSocket", "1.0", "Tiny"),
    )
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for text in ("a", "b"):  # 2 messages + 2 echoes = the 4 tokens
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), RECV_S) == f"[production] {text}"
        await ws.send("c")  # no token left: dropped, and the client is told
        notice = await recv_json(ws)
        assert notice["code"] == 4008
        assert notice["message"] == "Websocket frame throttled out"
        assert 0 < notice["retry_after_s"] <= 15
        pong = await ws.ping()  # control frames are never throttled
        await asyncio.wait_for(pong, RECV_S)
    samples = await scrape(env)
    assert sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="drop") == 1
    assert sample(samples, "wsgw_messages_total", **APP, direction="client_to_backend") == 2


async def test_drop_takes_a_fragmented_message_whole(make_gateway: GatewayFactory) -> None:
    # 60 per minute: 60 tokens now, then one a second.
    env = await make_gateway(
        edit=with_tier("Tiny", {"messages_per_minute": 60, "on_limit": "drop"}),
        subscribe_to=("EchoWebSocket", "1.0", "Tiny"),
    )
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for i in range(30):  # 30 messages + 30 echoes spend the bucket
            await ws.send(f"m{i}")
        for i in range(30):
            assert await asyncio.wait_for(ws.recv(), RECV_S) == f"[production] m{i}"
        await ws.send(["frag", "ment", "ed"])  # three frames, one message: dropped whole
        assert (await recv_json(ws))["code"] == 4008
        await asyncio.sleep(2.2)  # two tokens back: one message and its echo
        await ws.send("after")
        # Had the backend seen half of the fragmented message, it would have closed 1002
        # at "after" (a new message inside a fragmented one).
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] after"


async def test_close_action_closes_with_1008(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(
        edit=with_tier("Strict", {"messages_per_minute": 2, "on_limit": "close"}),
        subscribe_to=("EchoWebSocket", "1.0", "Strict"),
    )
    ws = await closed_after_two_messages(env)
    assert ws.close_code == 1008
    assert "rate limit exceeded (subscription)" in ws.close_reason
    samples = await scrape(env)
    assert sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="close") == 1
    assert sample(samples, "wsgw_close_codes_total", **API, code="1008", by="gateway") == 1


async def test_shape_is_lossless_and_pushes_back(make_gateway: GatewayFactory) -> None:
    # 600 per minute: 600 tokens, then 10 a second. 320 messages + 320 echoes = 640 tokens,
    # so the last 40 wait for the refill (about 4 s) instead of being dropped.
    env = await make_gateway(
        edit=with_tier("Smooth", {"messages_per_minute": 600, "on_limit": "shape"}),
        subscribe_to=("EchoWebSocket", "1.0", "Smooth"),
    )
    sent = [f"n{i}" for i in range(320)]
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for text in sent:
            await ws.send(text)
        received = [await asyncio.wait_for(ws.recv(), 10) for _ in sent]
    assert received == [f"[production] {text}" for text in sent]
    samples = await scrape(env)
    assert sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="shape") >= 1
    assert sample(samples, "wsgw_messages_total", **APP, direction="backend_to_client") == 320


async def test_bandwidth_limit_with_bursts_of_frames(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(
        edit=with_tier(
            "Thin", {"bytes_per_minute": 2000, "on_limit": "drop", "backend_on_limit": "drop"}
        ),
        subscribe_to=("EchoWebSocket", "1.0", "Thin"),
    )
    payload = b"x" * 300
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for _ in range(10):  # a burst: 10 frames of 300 bytes, 3000 bytes each way
            await ws.send(payload)
        echoes = notices = 0
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                break
            if isinstance(message, bytes):
                echoes += 1
            else:
                assert json.loads(message)["code"] == 4008
                notices += 1
    samples = await scrape(env)
    forwarded = sample(samples, "wsgw_bytes_total", **APP, direction="client_to_backend")
    forwarded += sample(samples, "wsgw_bytes_total", **APP, direction="backend_to_client")
    # The bucket holds 2000 bytes: a frame passes while the level covers it.
    assert 1800 <= forwarded <= 2000
    assert echoes * 300 <= forwarded
    assert notices >= 1
    assert sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="drop") >= 4


async def test_application_tier_counts_across_apis(make_gateway: GatewayFactory) -> None:
    def edit(raw: dict) -> None:
        raw["tiers"]["AppTiny"] = {"messages_per_minute": 4, "on_limit": "drop"}
        second = dict(raw["apis"][0], version="2.0", default_version=False)
        raw["apis"].append(second)

    env = await make_gateway(edit=edit, subscribe_to=("EchoWebSocket", "1.0", "Unlimited"))
    config = env.gateway.config
    subscribe(config, "DefaultApplication", "EchoWebSocket", "2.0", "Unlimited")
    _set_application_tier(Path(config.gateway.subscriptions_file), "AppTiny")
    assert env.gateway.reload("test")["result"] == "ok"
    headers = env.auth()
    async with connect(env.url, additional_headers=headers) as first:
        for text in ("a", "b"):
            await first.send(text)
            assert await asyncio.wait_for(first.recv(), RECV_S) == f"[production] {text}"
    async with connect(f"{env.base}/echowebsocket/2.0", additional_headers=headers) as second:
        await second.send("c")
        assert (await recv_json(second))["code"] == 4008
    samples = await scrape(env)
    assert (
        sample(
            samples,
            "wsgw_throttled_total",
            api="EchoWebSocket",
            version="2.0",
            application="DefaultApplication",
            scope="application",
            action="drop",
        )
        == 1
    )


async def test_api_policy_applies_to_all_traffic(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(
        edit=with_tier(
            "ApiCap", {"messages_per_minute": 2, "on_limit": "close"}, throttle="ApiCap"
        ),
        subscribe_to=("EchoWebSocket", "1.0", "Unlimited"),
    )
    ws = await closed_after_two_messages(env)
    assert ws.close_code == 1008
    assert "(api)" in ws.close_reason


async def test_connection_cap_refuses_with_429(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(
        edit=with_tier("Two", {"max_connections": 2}),
        subscribe_to=("EchoWebSocket", "1.0", "Two"),
    )
    async with (
        connect(env.url, additional_headers=env.auth()),
        connect(env.url, additional_headers=env.auth()),
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(env.url, additional_headers=env.auth()):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert orjson.loads(response.body)["error"] == "too_many_requests"
    await asyncio.sleep(0.1)  # the slots come back when the connections end
    async with connect(env.url, additional_headers=env.auth()) as ws:
        await ws.send("room again")
        assert await asyncio.wait_for(ws.recv(), RECV_S) == "[production] room again"
    samples = await scrape(env)
    assert (
        sample(samples, "wsgw_throttled_total", **APP, scope="subscription", action="refuse") == 1
    )
    assert sample(samples, "wsgw_connections_total", **API, outcome="429") == 1


async def test_connection_duration_cap_closes_with_1000(make_gateway: GatewayFactory) -> None:
    env = await make_gateway(
        edit=with_tier("Brief", {"max_connection_duration_s": 0.5}),
        subscribe_to=("EchoWebSocket", "1.0", "Brief"),
    )
    async with connect(env.url, additional_headers=env.auth()) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), RECV_S)
    assert ws.close_code == 1000
    assert ws.close_reason == "maximum connection duration reached"


async def test_metrics_and_events_match_the_traffic(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    events_file = tmp_path / "events.jsonl"

    def edit(raw: dict) -> None:
        raw["analytics"] = {"events_file": str(events_file)}

    env = await make_gateway(edit=edit)
    async with connect(env.url, additional_headers=env.auth()) as ws:
        for _i in range(7):
            await ws.send(b"y" * 100)
            assert await asyncio.wait_for(ws.recv(), RECV_S) == b"y" * 100
        await ws.close(1000, "done")
    with pytest.raises(websockets.InvalidStatus):
        async with connect(env.url):
            pass
    for _ in range(50):  # the connection's end is accounted once both legs are down
        if not env.gateway.connections:
            break
        await asyncio.sleep(0.02)
    samples = await scrape(env)
    assert sample(samples, "wsgw_messages_total", **APP, direction="client_to_backend") == 7
    assert sample(samples, "wsgw_messages_total", **APP, direction="backend_to_client") == 7
    assert sample(samples, "wsgw_bytes_total", **APP, direction="client_to_backend") == 700
    assert sample(samples, "wsgw_connections_total", **API, outcome="upgraded") == 1
    assert (
        sample(samples, "wsgw_connections_total", api="EchoWebSocket", version="1.0", outcome="401")
        == 1
    )
    assert sample(samples, "wsgw_close_codes_total", **API, code="1000", by="client") == 1
    assert sample(samples, "wsgw_connections_active", **APP, key_type="PRODUCTION") == 0
    assert sample(samples, "wsgw_handshake_seconds_count", **API) == 1
    await env.gateway.telemetry.stop()  # flush the sink
    events = [orjson.loads(line) for line in events_file.read_text().splitlines()]
    connection = next(e for e in events if e["type"] == "connection")
    assert connection["messages_in"] == 7 and connection["bytes_in"] == 700
    assert connection["messages_out"] == 7 and connection["bytes_out"] == 700
    assert connection["close_code"] == 1000 and connection["closed_by"] == "client"
    assert connection["application"] == "DefaultApplication"
    refusal = next(e for e in events if e["type"] == "refusal")
    assert refusal["status"] == 401
    assert env.tokens["PRODUCTION"] not in events_file.read_text()


def _set_application_tier(path: Path, tier: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["applications"][0]["tier"] = tier
    path.write_text(yaml.safe_dump(data, sort_keys=False))
