"""wsgw/drain.py: the close times of a drain (one per equal slice of the window, jittered
inside it) and close_spread (every item closed once, in a random order, over the window)."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from wsgw import drain


@pytest.mark.parametrize(("n", "window_s"), [(1, 1.0), (7, 0.5), (20, 5.0), (1000, 2.0)])
def test_one_close_in_each_equal_slice(n: int, window_s: float) -> None:
    times = drain.close_times(n, window_s, random.Random(n))
    assert len(times) == n
    step = window_s / n
    for i, at in enumerate(times):
        assert i * step <= at < (i + 1) * step, (i, at)
    assert times == sorted(times)
    assert all(0 <= at < window_s for at in times)


def test_the_jitter_is_random_within_the_slices() -> None:
    n, window_s = 50, 5.0
    step = window_s / n
    first = drain.close_times(n, window_s, random.Random(1))
    second = drain.close_times(n, window_s, random.Random(2))
    assert first != second
    assert first == drain.close_times(n, window_s, random.Random(1))  # the seed decides
    # Where in its slice each close falls: uniform over [0, 1), not one fixed point.
    positions = [at / step - i for i, at in enumerate(first)]
    assert 0.2 < statistics.pstdev(positions) < 0.4  # uniform: 0.289
    assert min(positions) < 0.2 and max(positions) > 0.8
    # Not in lockstep: the gaps between consecutive closes differ.
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert max(gaps) - min(gaps) > step / 2


def test_window_0_closes_all_at_once() -> None:
    assert drain.close_times(5, 0.0, random.Random(0)) == [0.0] * 5
    assert drain.close_times(3, -1.0, random.Random(0)) == [0.0] * 3


def test_nothing_to_close() -> None:
    assert drain.close_times(0, 5.0, random.Random(0)) == []
    assert drain.close_times(0, 0.0, random.Random(0)) == []


async def test_close_spread_closes_every_item_once_in_a_random_order_over_the_window() -> None:
    items = list(range(20))
    window_s = 0.6
    closed: list[tuple[int, float]] = []
    start = time.monotonic()

    def close(i: int) -> None:
        closed.append((i, time.monotonic() - start))

    await drain.close_spread(items, window_s, close, rng=random.Random(3))
    elapsed = time.monotonic() - start
    order = [i for i, _ in closed]
    assert sorted(order) == items
    assert order != items  # shuffled (this seed's order is not the identity)
    # Spread over the window: the last one near its end, none after it (a tick of slack).
    assert window_s - 2 * window_s / len(items) - drain.TICK_S <= elapsed < window_s + 0.2
    offsets = [at for _, at in closed]
    assert offsets == sorted(offsets)
    for k in range(10):  # no more than a third in any tenth of the window
        low = k * window_s / 10
        assert sum(low <= at < low + window_s / 10 for at in offsets) <= len(items) / 3


async def test_close_spread_orders_differ_between_seeds() -> None:
    orders = []
    for seed in (1, 2):
        closed: list[int] = []
        await drain.close_spread(list(range(30)), 0.0, closed.append, rng=random.Random(seed))
        orders.append(closed)
    assert orders[0] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(30))


async def test_window_0_closes_everyone_without_waiting() -> None:
    closed: list[int] = []
    start = time.monotonic()
    await drain.close_spread(list(range(100)), 0.0, closed.append)
    assert time.monotonic() - start < 0.05
    assert sorted(closed) == list(range(100))


async def test_nothing_to_close_returns_at_once() -> None:
    start = time.monotonic()
    await drain.close_spread([], 5.0, lambda _: pytest.fail("nothing to close"))
    assert time.monotonic() - start < 0.05


async def test_late_closes_go_out_at_once() -> None:
    """A clock already past the window (a loop that was busy): no sleeping to catch up."""
    ticks = iter([0.0])

    def clock() -> float:
        return next(ticks, 100.0)  # the start, then far past every close time

    closed: list[int] = []
    start = time.monotonic()
    await drain.close_spread(list(range(10)), 5.0, closed.append, clock=clock)
    assert time.monotonic() - start < 0.05
    assert sorted(closed) == list(range(10))


async def test_a_failing_close_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[int] = []

    def close(i: int) -> None:
        if i == 3:
            raise RuntimeError("transport gone")
        closed.append(i)

    await drain.close_spread(list(range(8)), 0.0, close)
    assert sorted(closed) == [0, 1, 2, 4, 5, 6, 7]
    assert "closing a connection failed" in caplog.text
