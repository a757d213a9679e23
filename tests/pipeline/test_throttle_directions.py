"""One gate per direction: which limits count which direction, with which action, and so
which directions must carry self-contained compressed messages."""

from __future__ import annotations

import msgspec
import pytest

from wsgw import _core
from wsgw.config.models import Api, Tier
from wsgw.pipeline.subscription import Grant
from wsgw.pipeline.throttle import Admission, Throttle

API = msgspec.convert(
    {"name": "A", "context": "/a", "version": "1", "endpoints": {"production": "ws://h:1"}}, Api
)


async def admit(
    subscription: Tier | None, application: Tier | None = None, api: Tier | None = None
) -> Admission:
    grant = Grant("App", "PRODUCTION", subscription, application)
    return await Throttle().admit(grant, API, api)


def actions(gate: _core.Gate | None) -> list[tuple[int, int]]:
    return [] if gate is None else [(action, scope) for _, action, scope in gate.limits]


async def test_both_directions_share_the_limit_with_their_own_actions() -> None:
    adm = await admit(Tier(messages_per_minute=10))
    assert actions(adm.client_gate) == [(_core.ACTION_DROP, 0)]
    assert actions(adm.backend_gate) == [(_core.ACTION_SHAPE, 0)]
    assert adm.client_gate.limits[0][0] is adm.backend_gate.limits[0][0]  # one budget
    assert (adm.self_contained.client, adm.self_contained.backend) == (True, False)


@pytest.mark.parametrize(
    ("count", "client", "backend"),
    [("client", True, False), ("backend", False, True)],
)
async def test_count_picks_the_direction(count: str, client: bool, backend: bool) -> None:
    adm = await admit(Tier(messages_per_minute=10, count=count, backend_on_limit="drop"))
    assert (adm.client_gate is not None, adm.backend_gate is not None) == (client, backend)
    assert (adm.self_contained.client, adm.self_contained.backend) == (client, backend)


async def test_only_drop_needs_self_contained_messages() -> None:
    adm = await admit(
        Tier(messages_per_minute=10, on_limit="close"),
        api=Tier(messages_per_minute=10, on_limit="shape", backend_on_limit="close"),
    )
    assert actions(adm.client_gate) == [(_core.ACTION_CLOSE, 0), (_core.ACTION_SHAPE, 2)]
    assert actions(adm.backend_gate) == [(_core.ACTION_SHAPE, 0), (_core.ACTION_CLOSE, 2)]
    assert not adm.self_contained.any
    # Any one scope that drops is enough.
    adm = await admit(None, application=Tier(bytes_per_minute=100, backend_on_limit="drop"))
    assert adm.self_contained.client and adm.self_contained.backend


async def test_no_limits_no_gates() -> None:
    adm = await admit(Tier(max_connections=5), api=Tier())
    assert adm.client_gate is None and adm.backend_gate is None
    assert not adm.self_contained.any
    await adm.release()
