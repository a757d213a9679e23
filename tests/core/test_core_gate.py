"""Limit and Gate: exact refill, burst, both dimensions, leased mode, order, all-or-nothing."""

from __future__ import annotations

import pytest

from .core_support import COMPILED, PURE, Impl

MINUTE = 60 * 10**9
UNLIMITED = 2**63 - 1
LEASED_RETRY_NS = 50_000_000


def one_gate(impl: Impl, limit: object, action: int = 1, scope: int = 0) -> object:
    return impl.gate.Gate([(limit, action, scope)])


# --- Limit, LOCAL mode -------------------------------------------------------------------


def test_constants(impl: Impl) -> None:
    g = impl.gate
    assert (g.ACTION_DROP, g.ACTION_CLOSE, g.ACTION_SHAPE) == (1, 2, 3)
    assert g.UNLIMITED == UNLIMITED
    assert g.LEASED_RETRY_NS == LEASED_RETRY_NS


def test_attributes(impl: Impl) -> None:
    limit = impl.gate.Limit(60, 5000, 7, now_ns=0)
    assert (limit.messages_per_minute, limit.bytes_per_minute, limit.burst) == (60, 5000, 7)
    assert (limit.message_capacity, limit.byte_capacity) == (67, 5000)
    assert (limit.leased, limit.starved) == (False, False)
    assert (limit.consumed_messages, limit.consumed_bytes) == (0, 0)
    for name in (
        "messages_per_minute",
        "bytes_per_minute",
        "burst",
        "leased",
        "consumed_messages",
        "consumed_bytes",
    ):
        with pytest.raises(AttributeError):
            setattr(limit, name, 1)


def test_local_message_refill_is_exact(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=7, now_ns=0)
    gate = one_gate(impl, limit)
    assert [gate.admit(0, 0) for _ in range(8)] == [0] * 7 + [1]
    one_token_ns = -(-MINUTE // 7)  # 8571428572 ns, rounded up
    assert limit.messages_available(one_token_ns - 1) == 0
    assert gate.admit(0, one_token_ns - 1) == 1
    assert limit.messages_available(one_token_ns) == 1
    assert gate.admit(0, one_token_ns) == 0
    assert limit.messages_available(one_token_ns + MINUTE) == 7  # capped at capacity


def test_local_byte_refill_is_exact(impl: Impl) -> None:
    limit = impl.gate.Limit(bytes_per_minute=600, now_ns=0)
    gate = one_gate(impl, limit)
    assert gate.admit(600, 0) == 0
    assert limit.bytes_available(0) == 0
    assert gate.admit(1, 0) == 1
    assert gate.retry_after_ns == MINUTE // 600  # one byte every 100 ms
    assert limit.bytes_available(MINUTE // 600 - 1) == 0
    assert limit.bytes_available(MINUTE // 600) == 1
    assert limit.bytes_available(MINUTE // 2) == 300
    assert limit.messages_available(0) == UNLIMITED


def test_burst_adds_message_tokens(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=10, burst=5, now_ns=0)
    gate = one_gate(impl, limit)
    assert [gate.admit(1, 0) for _ in range(16)] == [0] * 15 + [1]
    assert limit.messages_available(10 * MINUTE) == 15  # never above rate + burst
    # Burst means nothing when messages are unlimited.
    free = impl.gate.Limit(bytes_per_minute=100, burst=5, now_ns=0)
    assert free.message_capacity == 0
    assert free.messages_available(0) == UNLIMITED


def test_both_dimensions_are_checked(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=5, bytes_per_minute=100, now_ns=0)
    gate = one_gate(impl, limit)
    assert gate.admit(60, 0) == 0
    assert gate.admit(60, 0) == 1  # 40 bytes left: bytes refuse, messages would pass
    assert limit.messages_available(0) == 4
    assert [gate.admit(10, 0) for _ in range(5)] == [0, 0, 0, 0, 1]  # now messages refuse
    assert limit.bytes_available(0) == 0
    assert (limit.consumed_messages, limit.consumed_bytes) == (5, 100)


def test_unlimited_dimensions(impl: Impl) -> None:
    limit = impl.gate.Limit(now_ns=0)
    gate = one_gate(impl, limit)
    assert all(gate.admit(1 << 40, 0) == 0 for _ in range(1000))
    assert limit.messages_available(0) == limit.bytes_available(0) == UNLIMITED
    assert (limit.consumed_messages, limit.consumed_bytes) == (1000, 1000 << 40)


def test_clock_going_backwards_is_ignored(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=60, now_ns=10 * MINUTE)
    gate = one_gate(impl, limit)
    assert all(gate.admit(0, 10 * MINUTE) == 0 for _ in range(60))
    assert limit.messages_available(0) == 0
    assert limit.messages_available(10 * MINUTE + MINUTE // 60) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1, 0, 0), ValueError),
        ((0, -1, 0), ValueError),
        ((1, 0, -1), ValueError),
        ((2**62, 0, 1), ValueError),
        ((0, 2**62 + 1, 0), ValueError),
        ((1.5, 0, 0), TypeError),
    ],
)
def test_limit_rejects_bad_arguments(impl: Impl, args: tuple, error: type) -> None:
    with pytest.raises(error):
        impl.gate.Limit(*args, now_ns=0)


def test_big_numbers_do_not_overflow(impl: Impl) -> None:
    big = 2**62
    limit = impl.gate.Limit(big - 1, big, 1, now_ns=0)
    gate = one_gate(impl, limit)
    assert gate.admit(2**63 - 1, 0) == 0  # more than the capacity: passes when full
    assert limit.bytes_available(0) == 0
    gate.force(2**63 - 1, 0)
    assert limit.bytes_available(0) == -big  # debt saturates
    assert gate.admit(0, 0) == 1
    assert gate.retry_after_ns == -(-(big * MINUTE) // big)
    assert limit.bytes_available(2**63 - 1) == big


# --- Limit, LEASED mode --------------------------------------------------------------------


def test_leased_has_no_refill_and_grants_tokens(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=60, bytes_per_minute=1000, now_ns=0)
    limit.set_leased(True, 0)
    assert limit.leased is True
    assert (limit.messages_available(0), limit.bytes_available(0)) == (0, 0)
    assert limit.messages_available(100 * MINUTE) == 0  # no clock refill
    gate = one_gate(impl, limit, action=3, scope=2)
    assert gate.admit(0, 0) == 3
    assert limit.starved is True
    assert (gate.retry_after_ns, gate.last_scope) == (LEASED_RETRY_NS, 2)
    limit.starved = False
    limit.grant(2, 150)
    assert gate.admit(100, 0) == 0
    assert gate.admit(100, 0) == 3  # 50 bytes left
    assert limit.starved is True
    assert limit.take_unused() == (1, 50)
    assert (limit.messages_available(0), limit.bytes_available(0)) == (0, 0)
    assert limit.take_unused() == (0, 0)
    assert (limit.consumed_messages, limit.consumed_bytes) == (1, 100)


def test_leased_grants_are_not_capped_at_capacity(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=10, now_ns=0)
    limit.set_leased(True, 0)
    limit.grant(25, 0)
    assert limit.messages_available(0) == 25
    limit.grant(2**62, 0)
    assert limit.messages_available(0) == 2**62  # saturates


def test_debt_is_paid_by_grants(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=100, bytes_per_minute=100, now_ns=0)
    limit.set_leased(True, 0)
    limit.grant(1, 10)
    gate = one_gate(impl, limit)
    assert gate.admit(10, 0) == 0
    for _ in range(3):
        gate.force(20, 0)  # continuation frames: into debt
    assert (limit.messages_available(0), limit.bytes_available(0)) == (-3, -60)
    assert limit.take_unused() == (0, 0)  # nothing positive to give back
    assert (limit.messages_available(0), limit.bytes_available(0)) == (-3, -60)
    limit.grant(5, 70)
    assert (limit.messages_available(0), limit.bytes_available(0)) == (2, 10)
    assert limit.take_unused() == (2, 10)


def test_starved_marks_every_refusing_leased_limit(impl: Impl) -> None:
    g = impl.gate
    first, second, third = (g.Limit(10, now_ns=0) for _ in range(3))
    first.set_leased(True, 0)
    third.set_leased(True, 0)
    gate = g.Gate([(first, 1, 0), (second, 2, 1), (third, 3, 2)])
    assert gate.admit(0, 0) == 1
    assert (first.starved, second.starved, third.starved) == (True, False, True)
    assert gate.last_scope == 0
    # A refusing LOCAL limit is never starved.
    first.grant(1, 0)
    assert gate.admit(0, 0) == 3
    assert second.starved is False


def test_switching_modes(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=60, bytes_per_minute=600, burst=4, now_ns=0)
    gate = one_gate(impl, limit)
    assert all(gate.admit(10, 0) == 0 for _ in range(60))
    limit.set_leased(True, 0)
    limit.grant(3, 30)
    limit.set_leased(True, 0)  # already leased: no change, the grant stays
    assert limit.messages_available(0) == 3
    limit.set_leased(False, 5 * MINUTE)  # fallback: a fresh, full local limit
    assert limit.leased is False
    assert (limit.messages_available(5 * MINUTE), limit.bytes_available(5 * MINUTE)) == (64, 600)
    assert all(gate.admit(0, 5 * MINUTE) == 0 for _ in range(64))
    assert limit.messages_available(5 * MINUTE + MINUTE // 60) == 1  # refills from then
    limit.set_leased(False, 9 * MINUTE)  # already local: no refill to full, no clock reset
    assert limit.messages_available(5 * MINUTE + MINUTE // 60) == 1
    limit.set_leased(True, 9 * MINUTE)  # entering LEASED empties the buckets
    assert (limit.messages_available(0), limit.bytes_available(0)) == (0, 0)


def test_local_grant_is_capped_and_take_unused_gives_nothing(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=10, bytes_per_minute=100, now_ns=0)
    gate = one_gate(impl, limit)
    assert gate.admit(50, 0) == 0
    limit.grant(5, 500)
    assert (limit.messages_available(0), limit.bytes_available(0)) == (10, 100)
    assert limit.take_unused() == (0, 0)
    assert limit.messages_available(0) == 10
    with pytest.raises(ValueError):
        limit.grant(-1, 0)
    with pytest.raises(ValueError):
        limit.grant(0, 2**62 + 1)


# --- Gate ------------------------------------------------------------------------------


def test_first_exhausted_limit_decides(impl: Impl) -> None:
    g = impl.gate
    sub = g.Limit(messages_per_minute=3, now_ns=0)
    app = g.Limit(messages_per_minute=2, now_ns=0)
    api = g.Limit(messages_per_minute=2, now_ns=0)
    gate = g.Gate([(sub, g.ACTION_DROP, 10), (app, g.ACTION_CLOSE, 20), (api, g.ACTION_SHAPE, 30)])
    assert gate.admit(0, 0) == 0
    assert gate.admit(0, 0) == 0
    # app and api are both empty now: app comes first.
    assert gate.admit(0, 0) == g.ACTION_CLOSE
    assert gate.last_scope == 20
    app.grant(1, 0)
    assert gate.admit(0, 0) == g.ACTION_SHAPE
    assert gate.last_scope == 30
    assert gate.retry_after_ns == MINUTE // 2
    api.grant(1, 0)
    assert gate.admit(0, 0) == 0
    # All three empty: the first one decides.
    assert gate.admit(0, 0) == g.ACTION_DROP
    assert gate.last_scope == 10
    assert gate.retry_after_ns == MINUTE // 3


def test_refusal_consumes_from_no_limit(impl: Impl) -> None:
    g = impl.gate
    roomy = g.Limit(messages_per_minute=100, bytes_per_minute=10_000, now_ns=0)
    tight = g.Limit(bytes_per_minute=100, now_ns=0)
    gate = g.Gate([(roomy, 1, 0), (tight, 2, 1)])
    assert gate.admit(80, 0) == 0
    assert gate.admit(80, 0) == 2
    assert (roomy.messages_available(0), roomy.bytes_available(0)) == (99, 9920)
    assert (roomy.consumed_messages, roomy.consumed_bytes) == (1, 80)
    assert (tight.consumed_messages, tight.consumed_bytes) == (1, 80)
    assert tight.bytes_available(0) == 20


def test_frames_larger_than_the_byte_capacity(impl: Impl) -> None:
    limit = impl.gate.Limit(bytes_per_minute=100, now_ns=0)
    gate = one_gate(impl, limit)
    assert gate.admit(1000, 0) == 0  # full bucket: passes, into debt
    assert limit.bytes_available(0) == -900
    assert gate.admit(1000, 0) == 1
    # Waits for a FULL bucket (min(1000, 100) tokens): 1000 bytes at 100/minute.
    assert gate.retry_after_ns == 10 * MINUTE
    assert gate.admit(1000, 10 * MINUTE - 1) == 1
    assert gate.admit(1000, 10 * MINUTE) == 0
    assert gate.admit(0, 10 * MINUTE) == 1  # in debt: even an empty frame waits
    assert gate.retry_after_ns == 9 * MINUTE


def test_force_goes_into_debt(impl: Impl) -> None:
    g = impl.gate
    a = g.Limit(messages_per_minute=2, bytes_per_minute=10, now_ns=0)
    b = g.Limit(now_ns=0)
    gate = g.Gate([(a, 1, 0), (b, 1, 1)])
    assert gate.admit(10, 0) == 0
    for _ in range(4):
        gate.force(5, 0)
    assert (a.messages_available(0), a.bytes_available(0)) == (-3, -20)
    assert (a.consumed_messages, a.consumed_bytes) == (5, 30)
    assert (b.consumed_messages, b.consumed_bytes) == (5, 30)
    assert gate.admit(0, 0) == 1
    # Message tokens: 4 at 2/minute; bytes: 20 at 10/minute. The longer wait decides.
    assert gate.retry_after_ns == 2 * MINUTE


def test_retry_after_is_exact(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=7, now_ns=0)
    gate = one_gate(impl, limit)
    for _ in range(7):
        gate.admit(0, 0)
    assert gate.admit(0, 1000) == 1
    expected = -(-(MINUTE - 1000 * 7) // 7)  # the 1000 ns already refilled count
    assert gate.retry_after_ns == expected
    assert gate.admit(0, 1000 + expected - 1) == 1
    assert gate.admit(0, 1000 + expected) == 0


def test_admitted_frames_keep_last_refusal(impl: Impl) -> None:
    limit = impl.gate.Limit(messages_per_minute=1, now_ns=0)
    gate = impl.gate.Gate([(limit, 2, 5)])
    assert (gate.last_scope, gate.retry_after_ns) == (0, 0)
    gate.admit(0, 0)
    assert gate.admit(0, 0) == 2
    limit.grant(1, 0)
    assert gate.admit(0, 0) == 0
    assert (gate.last_scope, gate.retry_after_ns) == (5, MINUTE)


def test_empty_gate_admits_everything(impl: Impl) -> None:
    gate = impl.gate.Gate([])
    assert gate.admit(2**63 - 1, 0) == 0
    gate.force(5, 0)
    assert gate.limits == ()


def test_gate_rejects_bad_entries(impl: Impl) -> None:
    g = impl.gate
    limit = g.Limit(now_ns=0)
    with pytest.raises(ValueError):
        g.Gate([(limit, 0, 0)])
    with pytest.raises(ValueError):
        g.Gate([(limit, 4, 0)])
    with pytest.raises(TypeError):
        g.Gate([(object(), 1, 0)])
    with pytest.raises(ValueError):
        g.Gate([(limit, 1, i) for i in range(g.MAX_LIMITS + 1)])
    gate = g.Gate([(limit, 1, i) for i in range(g.MAX_LIMITS)])
    assert len(gate.limits) == g.MAX_LIMITS
    with pytest.raises(ValueError):
        gate.admit(-1, 0)
    with pytest.raises(TypeError):
        gate.admit(1.0, 0)


@pytest.mark.skipif(COMPILED is None, reason="compiled core not built")
def test_twins_do_not_mix() -> None:
    assert COMPILED is not None
    with pytest.raises(TypeError):
        COMPILED.gate.Gate([(PURE.gate.Limit(now_ns=0), 1, 0)])
    with pytest.raises(TypeError):
        PURE.gate.Gate([(COMPILED.gate.Limit(now_ns=0), 1, 0)])
