"""TokenBucket: exact integer refill, burst, debt, give_back, retry_after, big numbers."""

from __future__ import annotations

import time

import pytest

from .core_support import Impl

MINUTE = 60 * 10**9


def test_starts_full_and_refuses_what_it_lacks(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 0, now_ns=1000)
    assert (b.rate_per_minute, b.burst, b.capacity) == (60, 0, 60)
    assert b.available(1000) == 60
    assert b.consume(61, 1000) is False
    assert b.available(1000) == 60  # a refused consume takes nothing
    assert b.consume(60, 1000) is True
    assert b.consume(1, 1000) is False
    assert b.consume(0, 1000) is True


def test_burst_adds_to_capacity(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(10, 5, now_ns=0)
    assert b.capacity == 15
    assert b.consume(15, 0)
    assert b.available(10 * MINUTE) == 15  # never above capacity, however long it waits


def test_refill_is_exact(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(7, 0, now_ns=0)
    assert b.consume(7, 0)
    one_token_ns = -(-MINUTE // 7)  # 8571428572 ns, rounded up
    assert b.available(one_token_ns - 1) == 0
    assert b.available(one_token_ns) == 1
    assert b.available(MINUTE) == 7


def test_no_drift_over_many_small_steps(impl: Impl) -> None:
    """A day of irregular 1..997 ns steps gives exactly what one step gives."""
    rate = 3
    stepped = impl.bucket.TokenBucket(rate, 0, now_ns=0)
    assert stepped.consume(3, 0)
    now = 0
    for i in range(20000):
        now += 1 + (i * 7919) % 997
        stepped.available(now)
    one = impl.bucket.TokenBucket(rate, 0, now_ns=0)
    assert one.consume(3, 0)
    # Both have refilled now * 3 / 60e9 tokens; fractional units are kept, not rounded.
    expected_units = now * rate
    assert stepped.available(now) == one.available(now) == expected_units // MINUTE
    assert (
        stepped.retry_after_ns(1, now)
        == one.retry_after_ns(1, now)
        == -(-(MINUTE - expected_units) // rate)
    )


def test_long_span_is_capped_at_capacity(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(10**12, 10**12, now_ns=0)
    b.force_consume(5 * 10**12, 0)
    assert b.available(0) == -3 * 10**12
    ten_years = 10 * 365 * 24 * 3600 * 10**9
    assert b.available(ten_years) == 2 * 10**12
    assert b.available(2**63 - 1) == 2 * 10**12


def test_large_rates_are_exact(impl: Impl) -> None:
    rate = 10**12  # 16.67 tokens per ns
    b = impl.bucket.TokenBucket(rate, 0, now_ns=0)
    assert b.consume(rate, 0)
    assert b.available(3) == 50
    assert b.available(7) == 116  # 7e12 / 6e10 = 116.67
    assert b.retry_after_ns(1000, 7) == 53  # 1000 tokens from 116.67: 52.2 ns more
    b2 = impl.bucket.TokenBucket(2**61, 2**61, now_ns=-(2**63))
    assert b2.capacity == 2**62
    b2.force_consume(2**62, -(2**63))
    b2.force_consume(2**62, -(2**63))
    assert b2.available(-(2**63)) == -(2**62)  # debt floor
    assert b2.retry_after_ns(2**62, -(2**63)) == 4 * MINUTE  # 2**63 tokens at 2**61/min
    # The longest possible elapsed time times the largest rate: still exact, capped.
    assert b2.available(2**63 - 1) == 2**62
    b3 = impl.bucket.TokenBucket(2**62, 0, now_ns=0)
    assert b3.consume(2**62, 0)
    assert b3.available(1) == 2**62 // MINUTE


def test_debt(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 0, now_ns=0)  # one token per second
    b.force_consume(100, 0)
    assert b.available(0) == -40
    assert b.consume(0, 0) is False  # consume(n) succeeds iff n <= available
    assert b.retry_after_ns(1, 0) == 41 * 10**9
    assert b.available(40 * 10**9) == 0
    assert b.available(40 * 10**9 + 1) == 0
    assert b.available(41 * 10**9) == 1
    b.force_consume(1, 41 * 10**9)
    assert b.available(41 * 10**9) == 0


def test_partial_debt_rounds_down(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 0, now_ns=0)
    b.force_consume(61, 0)
    assert b.available(10**9 // 2) == -1  # -0.5 tokens: not even zero whole tokens


def test_debt_saturates(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(1, 0, now_ns=0)
    for _ in range(4):
        b.force_consume(2**62, 0)
    assert b.available(0) == -(2**62)
    assert b.retry_after_ns(1, 0) == 2**63 - 1


def test_give_back_is_capped(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(10, 2, now_ns=0)
    assert b.consume(5, 0)
    b.give_back(3, 0)
    assert b.available(0) == 10
    b.give_back(100, 0)
    assert b.available(0) == 12
    b.force_consume(20, 0)
    b.give_back(5, 0)
    assert b.available(0) == -3


def test_retry_after(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 10, now_ns=0)
    assert b.retry_after_ns(70, 0) == 0
    assert b.consume(70, 0)
    assert b.retry_after_ns(0, 0) == 0
    assert b.retry_after_ns(1, 0) == 10**9
    assert b.retry_after_ns(3, 5 * 10**8) == 25 * 10**8
    # More than capacity can never be held: the time until the bucket is full.
    assert b.retry_after_ns(1000, 5 * 10**8) == 695 * 10**8
    assert b.retry_after_ns(1000, 70 * 10**9) == 0
    odd = impl.bucket.TokenBucket(7, 0, now_ns=0)
    assert odd.consume(7, 0)
    assert odd.retry_after_ns(1, 0) == 8571428572  # rounded up, never early
    assert odd.available(8571428572) == 1


def test_clock_going_backwards_is_ignored(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 0, now_ns=10 * 10**9)
    assert b.consume(60, 10 * 10**9)
    assert b.available(5 * 10**9) == 0
    assert b.available(11 * 10**9) == 1
    assert b.available(10 * 10**9) == 1  # no double counting after going back
    assert b.available(12 * 10**9) == 2


def test_default_clock_is_monotonic_ns(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60)
    assert b.available(time.monotonic_ns()) == 60


def test_read_only_attributes(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(60, 1, now_ns=0)
    for name in ("rate_per_minute", "burst", "capacity"):
        with pytest.raises(AttributeError):
            setattr(b, name, 5)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0,), ValueError),
        ((-1,), (ValueError, OverflowError)),
        ((2**62 + 1,), ValueError),
        ((10, -1), (ValueError, OverflowError)),
        ((10, 2**62 + 1), ValueError),
        ((2**61, 2**61 + 1), ValueError),  # capacity above 2**62
        ((10, 0, 2**63), OverflowError),
        ((10.5,), TypeError),
        ((10, 1.0), TypeError),
        ((10, 0, 1.5), TypeError),
    ],
)
def test_constructor_validation(impl: Impl, args: tuple, error: type) -> None:
    with pytest.raises(error):
        impl.bucket.TokenBucket(*args)


def test_method_validation(impl: Impl) -> None:
    b = impl.bucket.TokenBucket(10, 0, now_ns=0)
    for method in (b.consume, b.force_consume, b.give_back, b.retry_after_ns):
        with pytest.raises((ValueError, OverflowError)):
            method(-1, 0)
        with pytest.raises(ValueError):
            method(2**62 + 1, 0)
        with pytest.raises(OverflowError):
            method(1, 2**63)
        with pytest.raises(TypeError):
            method(1.0, 0)
        with pytest.raises(TypeError):
            method(1, 0.5)
    assert b.available(0) == 10  # nothing changed
