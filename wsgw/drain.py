"""Leaving gracefully: the connections still open when the drain period ends are closed
over a window, in a random order at jittered times, so their clients do not all reconnect
elsewhere in the same instant (a reconnect storm is what a drain exists to avoid).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("wsgw")

TICK_S = 0.02  # closes due within one tick go out together


def close_times(n: int, window_s: float, rng: random.Random) -> list[float]:
    """`n` offsets in [0, window_s), ascending: one in each of n equal slices, at a random
    point of it (stratified jitter: evenly spread on the whole, never in lockstep).
    A window of 0 (or less): all at 0."""
    if n <= 0:
        return []
    if window_s <= 0:
        return [0.0] * n
    step = window_s / n
    return [step * (i + rng.random()) for i in range(n)]


async def close_spread(
    items: Sequence[T],
    window_s: float,
    close: Callable[[T], None],
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] | None = None,
) -> None:
    """Call `close(item)` for each item, in a random order, spread over `window_s` from
    now (`clock`: the loop's time unless given). A close that is late (a busy loop) goes
    out at once, with every other one already due; one `close` that raises is logged and
    does not keep the others open."""
    rng = rng or random.Random()
    order = list(items)
    rng.shuffle(order)
    now = clock or asyncio.get_running_loop().time
    start = now()
    for item, at in zip(order, close_times(len(order), window_s, rng), strict=True):
        wait = start + at - now()
        if wait > TICK_S:
            await asyncio.sleep(wait)
        try:
            close(item)
        except Exception:
            log.exception("drain: closing a connection failed")
