"""Hypothesis: compiled == pure on random frame streams, chunkings, gates and buckets."""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .core_support import (
    COMPILED,
    PURE,
    Impl,
    counters,
    deflated,
    feed,
    frame,
    header,
    split,
    unmasked,
)

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="compiled core not built")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.binary(min_size=4, max_size=4)


@st.composite
def one_frame(draw: st.DrawFn, client: bool) -> bytes:
    """A frame that is usually valid and sometimes broken in one way or another."""
    kind = draw(st.sampled_from(["frame"] * 12 + ["huge", "garbage", "deflated"]))
    if kind == "garbage":
        return draw(st.binary(max_size=16))
    if kind == "deflated":  # a valid compressed message, whole or in two fragments
        return deflated_message(draw, client)
    opcode = draw(st.one_of(st.sampled_from([0, 1, 2, 8, 9, 10]), st.integers(0, 15)))
    fin = draw(st.sampled_from([True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 4, 2, 1]))
    masked = draw(st.sampled_from([client] * 9 + [not client]))
    key = draw(KEYS) if masked else None
    encoding = draw(st.sampled_from([None, None, None, 16, 64]))
    if kind == "huge":  # a header announcing far more than will ever arrive
        length = draw(st.integers(0, (1 << 64) - 1))
        return header(opcode, length, fin=fin, rsv=rsv, key=key, encoding=64)
    if opcode == 8 and draw(st.booleans()):
        payload = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big") + draw(st.binary(max_size=8))
    else:
        payload = draw(st.binary(max_size=draw(st.sampled_from([3, 130, 300]))))
    body = PURE.mask.apply_mask(payload, key) if key is not None else payload
    length = len(payload)
    if encoding == 16 and length > 0xFFFF:
        encoding = 64
    return header(opcode, length, fin=fin, rsv=rsv, key=key, encoding=encoding) + body


def deflated_message(draw: st.DrawFn, client: bool) -> bytes:
    # Repeats make it inflate to several times its size (the size limits come into play).
    text = draw(st.binary(max_size=40)) * draw(st.integers(1, 30))
    payload = deflated(text)
    cut = draw(st.integers(0, len(payload)))
    key = draw(KEYS) if client else None
    opcode = draw(st.sampled_from([1, 2]))
    if cut == len(payload):
        return frame(opcode, payload, rsv=4, key=key)
    return frame(opcode, payload[:cut], fin=False, rsv=4, key=key) + frame(
        0, payload[cut:], key=key
    )


@st.composite
def relay_case(draw: st.DrawFn) -> dict[str, Any]:
    client = draw(st.booleans())
    stream = b"".join(draw(st.lists(one_frame(client), max_size=12)))
    cuts = draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=30))
    if draw(st.integers(0, 9)) == 0:
        cuts = list(range(len(stream)))  # byte by byte
    return {
        "client": client,
        "allow_rsv1": draw(st.booleans()),
        "max_message_bytes": draw(st.sampled_from([0, 0, 1, 100, 400])),
        "stream": stream,
        "chunks": split(stream, cuts),
    }


def meter_refused(impl: Impl, relay: Any, events: list) -> bool:
    """The inflate meter refused a payload: the output stops inside the frame."""
    return bool(events) and events[-1] == impl.frames.ERROR and relay.in_frame


def same_output_but_refusals(whole: dict[str, Any], chunked: dict[str, Any]) -> bool:
    """True when the whole input ended in a meter refusal, after checking what may differ:
    streamed, what a chunk before the refused one carried is already out, and nothing past
    it is, so the whole input's output is a prefix of the chunked one's."""
    if not whole["meter_refused"]:
        return False
    assert chunked["meter_refused"]
    whole_frames, chunked_frames = unmasked(whole["out"]), unmasked(chunked["out"])
    assert [h for h, _ in chunked_frames] == [h for h, _ in whole_frames]
    for (_, w), (_, c) in zip(whole_frames, chunked_frames, strict=True):
        assert c.startswith(w)
    return True


def run_relay(impl: Impl, case: dict[str, Any], chunks: list[bytes]) -> dict[str, Any]:
    relay = impl.frames.FrameRelay(
        from_client=case["client"],
        allow_rsv1=case["allow_rsv1"],
        max_message_bytes=case["max_message_bytes"],
    )
    events, out, sizes = feed(relay, chunks)
    return {
        "events": events,
        "out": out,
        "sizes": sizes,
        "counters": counters(relay),
        "meter_refused": meter_refused(impl, relay, events),
        # Where a refusal stops inflating depends on the cuts; a whole message's size not.
        "inflated": None if relay.in_frame else relay.inflated_bytes,
    }


@needs_compiled
@SETTINGS
@given(relay_case())
def test_relay_compiled_equals_pure(case: dict[str, Any]) -> None:
    assert COMPILED is not None
    pure = run_relay(PURE, case, case["chunks"])
    compiled = run_relay(COMPILED, case, case["chunks"])
    assert compiled["events"] == pure["events"]
    assert compiled["sizes"] == pure["sizes"]
    assert compiled["counters"] == pure["counters"]
    assert compiled["inflated"] == pure["inflated"]
    if case["client"]:
        assert unmasked(compiled["out"]) == unmasked(pure["out"])
    else:
        assert compiled["out"] == pure["out"]


BOTH = [
    pytest.param(COMPILED, id="cython", marks=needs_compiled),
    pytest.param(PURE, id="python"),
]


@pytest.mark.parametrize("impl", BOTH)
@SETTINGS
@given(case=relay_case())
def test_relay_chunking_does_not_matter(impl: Impl, case: dict[str, Any]) -> None:
    whole = run_relay(impl, case, [case["stream"]])
    chunked = run_relay(impl, case, case["chunks"])
    assert chunked["events"] == whole["events"]
    assert len(whole["events"]) <= 1
    assert chunked["counters"] == whole["counters"]
    if same_output_but_refusals(whole, chunked):
        return
    assert chunked["inflated"] == whole["inflated"]
    assert unmasked(chunked["out"]) == unmasked(whole["out"])
    if case["client"]:
        assert len(chunked["out"]) == len(whole["out"])
    else:  # verbatim: the output is a prefix of the input
        assert chunked["out"] == whole["out"] == case["stream"][: len(whole["out"])]


MAX = 2**62
UNITS = 60 * 10**9


@st.composite
def bucket_case(draw: st.DrawFn) -> tuple[int, int, int, list[tuple[str, int, int]]]:
    rate = draw(st.one_of(st.integers(1, 1000), st.integers(1, MAX)))
    burst = draw(st.one_of(st.integers(0, min(100, MAX - rate)), st.integers(0, MAX - rate)))
    start = draw(st.integers(-(2**62), 2**62))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["consume", "force_consume", "give_back", "available", "retry"]),
                st.one_of(st.integers(0, 100), st.integers(0, MAX)),
                st.one_of(st.integers(-(10**9), 10**11), st.integers(0, 2**62)),
            ),
            max_size=40,
        )
    )
    return rate, burst, start, ops


def run_bucket(impl: Impl, case: tuple[int, int, int, list[tuple[str, int, int]]]) -> list[Any]:
    rate, burst, now, ops = case
    bucket = impl.bucket.TokenBucket(rate, burst, now_ns=now)
    trace: list[Any] = []
    for op, n, dt in ops:
        now = max(-(2**63), min(now + dt, 2**63 - 1))
        if op == "consume":
            trace.append(bucket.consume(n, now))
        elif op == "force_consume":
            trace.append(bucket.force_consume(n, now))
        elif op == "give_back":
            trace.append(bucket.give_back(n, now))
        elif op == "retry":
            trace.append(bucket.retry_after_ns(n, now))
        trace.append(bucket.available(now))
    return trace


def model_bucket(case: tuple[int, int, int, list[tuple[str, int, int]]]) -> list[Any]:
    """The bucket written the obvious way with exact fractions: checks the spec itself."""
    rate, burst, now, ops = case
    cap = rate + burst
    level = Fraction(cap)
    last = now
    trace: list[Any] = []
    for op, n, dt in ops:
        now = max(-(2**63), min(now + dt, 2**63 - 1))
        if now > last:
            level = min(level + Fraction((now - last) * rate, UNITS), cap)
            last = now
        if op == "consume":
            ok = level >= n
            level -= n if ok else 0
            trace.append(ok)
        elif op == "force_consume":
            level = max(level - n, -MAX)
            trace.append(None)
        elif op == "give_back":
            level = min(level + n, cap)
            trace.append(None)
        elif op == "retry":
            deficit = min(n, cap) - level
            wait = 0 if deficit <= 0 else -(-(deficit * UNITS) // rate)
            trace.append(min(int(wait), 2**63 - 1))
        trace.append(level.__floor__())
    return trace


@SETTINGS
@given(bucket_case())
def test_bucket_matches_exact_model(case: tuple[int, int, int, list[tuple[str, int, int]]]) -> None:
    expected = model_bucket(case)
    assert run_bucket(PURE, case) == expected
    if COMPILED is not None:
        assert run_bucket(COMPILED, case) == expected


# --- FrameRelay with a gate -------------------------------------------------------------

# The relay reads the real monotonic clock; limits whose clock starts this far ahead never
# refill during a test (a clock going backwards is ignored), so runs are deterministic.
FROZEN_NS = time.monotonic_ns() + 10**15


@st.composite
def message_stream(draw: st.DrawFn, client: bool) -> bytes:
    """A valid stream: messages of 1-3 fragments, control frames in between."""

    def key() -> bytes | None:
        return draw(KEYS) if client else None

    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        count = draw(st.integers(1, 3))
        opcode = draw(st.sampled_from([1, 2]))
        for i in range(count):
            payload = draw(st.binary(max_size=draw(st.sampled_from([3, 40, 300]))))
            parts.append(frame(opcode if i == 0 else 0, payload, fin=i == count - 1, key=key()))
            if draw(st.integers(0, 3)) == 0:
                parts.append(
                    frame(draw(st.sampled_from([9, 10])), draw(st.binary(max_size=10)), key=key())
                )
    if draw(st.integers(0, 5)) == 0:
        parts.append(frame(8, b"\x03\xe8", key=key()))
    return b"".join(parts)


@st.composite
def gated_case(draw: st.DrawFn) -> dict[str, Any]:
    case = draw(relay_case())
    if draw(st.integers(0, 3)):  # mostly valid streams, so the gate has work to do
        stream = draw(message_stream(case["client"]))
        case["stream"] = stream
        cuts = draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=30))
        case["chunks"] = split(stream, cuts)
    case["limits"] = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0, 1, 1, 2, 3, 5]),  # messages_per_minute
                st.sampled_from([0, 0, 10, 100, 400]),  # bytes_per_minute
                st.integers(0, 2),  # burst
                st.sampled_from([1, 1, 2, 3]),  # action
                st.integers(0, 3),  # scope
                st.booleans(),  # leased
                st.integers(0, 4),
                st.integers(0, 300),  # first grant when leased
            ),
            min_size=draw(st.sampled_from([0, 1, 1, 1])),
            max_size=3,
        )
    )
    case["grants"] = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 300)), max_size=4))
    return case


def run_gated(impl: Impl, case: dict[str, Any], chunks: list[bytes]) -> dict[str, Any]:
    """Feed chunks; on THROTTLED, grant the next tokens and retry with b"" (bounded by the
    grant list: when it runs out, feeding stops, as a shaped sender would wait)."""
    g = impl.gate
    limits = []
    entries = []
    for mpm, bpm, burst, action, scope, leased, gm, gb in case["limits"]:
        limit = g.Limit(mpm, bpm, burst, now_ns=FROZEN_NS)
        if leased:
            limit.set_leased(True, FROZEN_NS)
            limit.grant(gm, gb)
        limits.append(limit)
        entries.append((limit, action, scope))
    relay = impl.frames.FrameRelay(
        from_client=case["client"],
        allow_rsv1=case["allow_rsv1"],
        max_message_bytes=case["max_message_bytes"],
    )
    relay.set_gate(g.Gate(entries))
    grants = list(case["grants"])
    events: list[Any] = []
    out = bytearray()
    sizes: list[int] = []

    def take() -> None:
        piece = relay.take_output()
        sizes.append(len(piece) if piece else 0)
        out.extend(piece or b"")

    for chunk in chunks:
        result = relay.process(chunk)
        take()
        while result == impl.frames.THROTTLED and grants:
            events.append(
                (result, relay.throttle_action, relay.throttle_scope, relay.retry_after_ns)
            )
            messages, nbytes = grants.pop(0)
            for limit in limits:
                limit.grant(messages, nbytes)
            result = relay.process(b"")
            take()
        if result == impl.frames.THROTTLED:
            events.append(
                (result, relay.throttle_action, relay.throttle_scope, relay.retry_after_ns)
            )
            break
        if result:
            events.append(result)
    state = [
        (
            lim.messages_available(FROZEN_NS),
            lim.bytes_available(FROZEN_NS),
            lim.consumed_messages,
            lim.consumed_bytes,
            lim.starved,
        )
        for lim in limits
    ]
    gate_counters = (
        relay.dropped_messages,
        relay.dropped_frames,
        relay.drop_scope,
        relay.retry_after_ns,
    )
    return {
        "events": events,
        "out": bytes(out),
        "sizes": sizes,
        "limits": state,
        "counters": counters(relay) + gate_counters,
        "meter_refused": meter_refused(impl, relay, events),
    }


@needs_compiled
@SETTINGS
@given(gated_case())
def test_gated_relay_compiled_equals_pure(case: dict[str, Any]) -> None:
    assert COMPILED is not None
    pure = run_gated(PURE, case, case["chunks"])
    compiled = run_gated(COMPILED, case, case["chunks"])
    assert compiled["events"] == pure["events"]
    assert compiled["sizes"] == pure["sizes"]
    assert compiled["counters"] == pure["counters"]
    assert compiled["limits"] == pure["limits"]
    if case["client"]:
        assert unmasked(compiled["out"]) == unmasked(pure["out"])
    else:
        assert compiled["out"] == pure["out"]


@pytest.mark.parametrize("impl", BOTH)
@SETTINGS
@given(case=gated_case())
def test_gated_relay_chunking_does_not_matter(impl: Impl, case: dict[str, Any]) -> None:
    whole = run_gated(impl, case, [case["stream"]])
    chunked = run_gated(impl, case, case["chunks"])
    assert chunked["events"] == whole["events"]
    assert chunked["counters"] == whole["counters"]
    assert chunked["limits"] == whole["limits"]
    if same_output_but_refusals(whole, chunked):
        return
    assert unmasked(chunked["out"]) == unmasked(whole["out"])
    if not case["client"]:
        assert chunked["out"] == whole["out"]
