"""Shared pieces of the cluster tests: drive gates hungrily with real time, the bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from wsgw._core import ACTION_DROP, Gate, Limit
from wsgw.pipeline.cluster import ACCURACY

TAU_S = 0.05  # the default lease interval


def gate_of(limit: Limit) -> Gate:
    return Gate([(limit, ACTION_DROP, 0)])


async def drive(
    gates: list[Gate],
    seconds: float,
    payload: int = 16,
    stop: Callable[[], bool] | None = None,
) -> list[int]:
    """Admit on every gate as fast as it lets through, for `seconds` of real time (bounded).

    Returns the admitted message count per gate.
    """
    counts = [0] * len(gates)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop()):
        for i, gate in enumerate(gates):
            now = time.monotonic_ns()
            while gate.admit(payload, now) == 0:
                counts[i] += 1
        await asyncio.sleep(0.002)  # let the lease loops run
    return counts


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` every 10 ms for at most `timeout_s`."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def under_bound(capacity: int, per_minute: int, processes: int) -> float:
    """Documented under-admission: stranded leases + shared residue + one round of refill."""
    return max(ACCURACY * capacity, processes) + 1 + per_minute * TAU_S / 60


def over_bound(per_minute: int, processes: int) -> float:
    """Documented over-admission (no fragmented messages): prefetch held at a full bucket."""
    return processes + 2 * per_minute * TAU_S / 60
