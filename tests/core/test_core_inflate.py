"""permessage-deflate: the inflate meter (both twins) and the FrameRelay behaviours built on it
(inflated size limit, invalid data, self-contained messages), plus the control-frame rate."""

from __future__ import annotations

import functools
import importlib
import random
import time
import zlib
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgw._core import inflate_py

from .core_support import COMPILED, PURE, Impl, client_frame, deflated, feed, frame, split, unmasked

inflate_c: ModuleType | None
try:
    inflate_c = importlib.import_module("wsgw._core.inflate")
except ImportError:
    inflate_c = None

needs_compiled = pytest.mark.skipif(inflate_c is None or COMPILED is None, reason="not built")
RSV1 = 0b100
SLICE = 65536  # the meters inflate into 64 KiB slices: a refusal overshoots by at most this
TAIL = b"\x00\x00\xff\xff"
CONTEXT_REASON = "compressed message refers to an earlier message (no context takeover agreed)"


@pytest.fixture(params=[pytest.param("cython", marks=needs_compiled), "python"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return inflate_c if request.param == "cython" else inflate_py  # type: ignore[return-value]


def rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def rep(n: int, unit: bytes = b"wsgw-inflate-") -> bytes:
    return (unit * (n // len(unit) + 1))[:n]


@functools.cache
def bomb() -> bytes:
    return deflated(bytes(20_000_000))


def pieces(payload: bytes, how: str) -> list[bytes]:
    if how == "whole" or not payload:
        return [payload]
    if how == "bytes":
        return [payload[i : i + 1] for i in range(len(payload))]
    rng = random.Random(len(payload))
    return split(payload, [rng.randrange(len(payload)) for _ in range(40)])


def measure(
    mod: ModuleType, chunks: list[bytes], *, self_contained: bool = False, limit: int = 0
) -> tuple[int, int]:
    meter = mod.InflateMeter(self_contained=self_contained)
    meter.start()
    for chunk in chunks:
        status = meter.feed(chunk, limit)
        if status != mod.OK:
            return status, meter.inflated
    return meter.finish(limit), meter.inflated


def context_stream(shared: bool) -> tuple[list[bytes], list[bytes]]:
    """5 messages sharing a random 2 KiB block at shifting offsets; with ``shared`` one
    compressor (context takeover), so messages 1..4 copy the block from the one before."""
    rng = random.Random(7)
    common = rng.randbytes(2048)
    msgs = [rng.randbytes(i) + common + b"#%d" % i for i in range(5)]
    c = zlib.compressobj(9, zlib.DEFLATED, -15) if shared else None
    return msgs, [deflated(m, c) for m in msgs]


def sync_fragments(parts: list[bytes]) -> list[bytes]:
    """One message's payloads, fragment j inflating to exactly parts[j] (sync flushes)."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = [c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in parts]
    assert out[-1].endswith(TAIL)
    out[-1] = out[-1][:-4]
    return out


def wire_of(client: bool, opcode: int, payload: bytes, **kw: Any) -> bytes:
    return client_frame(opcode, payload, **kw) if client else frame(opcode, payload, **kw)


def message(client: bool, payloads: list[bytes], opcode: int = 1) -> list[bytes]:
    last = len(payloads) - 1
    return [
        wire_of(client, opcode if i == 0 else 0, p, fin=i == last, rsv=RSV1 if i == 0 else 0)
        for i, p in enumerate(payloads)
    ]


def relay_of(impl: Impl, client: bool, **kw: Any) -> Any:
    return impl.frames.FrameRelay(from_client=client, allow_rsv1=True, **kw)


def after_a_drop(impl: Impl, client: bool, **kw: Any) -> Any:
    """A self-contained relay that has just dropped a compressed message (a leased limit
    with no tokens), then got tokens again: the next 32 KiB it inflates are checked."""
    limit = impl.gate.Limit(60, 0, 0, time.monotonic_ns())
    limit.set_leased(True)
    relay = relay_of(impl, client, **{**kw, "self_contained": True})
    relay.set_gate(impl.gate.Gate([(limit, impl.gate.ACTION_DROP, 0)]))
    events, out, _ = feed(relay, [wire_of(client, 1, deflated(b"dropped"), rsv=RSV1)])
    assert (events, out, relay.dropped_messages) == ([], b"", 1)
    limit.grant(10**6, 0)
    return relay


def assert_relayed(client: bool, out: bytes, wire: bytes) -> None:
    """``out`` is what ``wire`` (possibly ending inside a frame) relays to."""
    assert len(out) == len(wire)
    if client:
        assert unmasked(out) == unmasked(wire)
    else:
        assert out == wire


DIRS = pytest.mark.parametrize("client", [True, False], ids=["client", "backend"])
MESSAGES = [b"", b"x", rand(100 * 1024), rep(1 << 20), rep(65535), rep(65536), rep(65537)]
MESSAGES += [bytes(65537), bytes(65540), bytes(131073)]  # zlib may hold output back: drained?

# --- the meter ---------------------------------------------------------------------------


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: str(len(m)))
@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
@pytest.mark.parametrize("self_contained", [False, True])
def test_inflated_size_is_exact(mod: ModuleType, msg: bytes, how: str, self_contained: bool):
    meter = mod.InflateMeter(self_contained=self_contained)
    meter.start()
    assert all(meter.feed(piece) == mod.OK for piece in pieces(deflated(msg), how))
    assert meter.inflated == len(msg)  # all out once the payload is in, before the tail
    assert (meter.finish(), meter.inflated) == (mod.OK, len(msg))


def test_context_takeover(mod: ModuleType) -> None:
    msgs, payloads = context_stream(shared=True)
    assert all(len(p) < 200 for p in payloads[1:])  # they do copy from earlier messages
    meter = mod.InflateMeter(self_contained=False)
    for msg, payload in zip(msgs, payloads, strict=True):  # one meter, restarted each time
        meter.start()
        assert (meter.feed(payload), meter.finish(), meter.inflated) == (mod.OK, mod.OK, len(msg))
    statuses = [measure(mod, [p], self_contained=True)[0] for p in payloads]
    assert statuses == [mod.OK] + [mod.REFERS_BACK] * 4
    msgs, payloads = context_stream(shared=False)
    assert all(len(p) > 2048 for p in payloads)
    for msg, payload in zip(msgs, payloads, strict=True):
        assert measure(mod, pieces(payload, "random"), self_contained=True) == (mod.OK, len(msg))


@pytest.mark.parametrize("n", [2, 1000, 65536, 65537, 200_000])
@pytest.mark.parametrize("how", ["whole", "random"])
def test_limit_boundary(mod: ModuleType, n: int, how: str) -> None:
    chunks = pieces(deflated(rep(n)), how)
    assert measure(mod, chunks, limit=n) == (mod.OK, n)
    status, inflated = measure(mod, chunks, limit=n - 1)
    assert status == mod.TOO_BIG
    assert n - 1 < inflated <= n


@pytest.mark.parametrize("how", ["whole", "random"])
@pytest.mark.parametrize("self_contained", [False, True])
def test_compression_bomb_stops_early(mod: ModuleType, how: str, self_contained: bool) -> None:
    assert len(bomb()) < 30_000
    limit = 1 << 20
    status, inflated = measure(mod, pieces(bomb(), how), self_contained=self_contained, limit=limit)
    assert status == mod.TOO_BIG
    assert limit < inflated <= limit + SLICE
    assert measure(mod, [bomb()]) == (mod.OK, 20_000_000)


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", deflated(b"hello") + bytes(4)])
@pytest.mark.parametrize("self_contained", [False, True])
def test_invalid_data(mod: ModuleType, payload: bytes, self_contained: bool) -> None:
    assert measure(mod, [payload], self_contained=self_contained)[0] == mod.INVALID


def test_negative_limit_is_refused(mod: ModuleType) -> None:
    meter = mod.InflateMeter()
    meter.start()
    with pytest.raises(ValueError):
        meter.feed(deflated(b"abc"), -1)
    with pytest.raises(ValueError):
        meter.finish(-1)


@needs_compiled
@pytest.mark.parametrize("self_contained", [False, True])
def test_compiled_pool_is_bounded(self_contained: bool) -> None:
    assert inflate_c is not None and COMPILED is not None
    mode = 1 if self_contained else 0
    first, rest = sync_fragments([rep(3000), rep(5000, b"xyz")])
    relays = []
    for _ in range(100):  # 100 messages in flight at once: each holds a meter
        if self_contained:  # checked after a drop
            relay = after_a_drop(COMPILED, False)
        else:  # the first frame of a fragmented message: it may exceed the limit
            relay = relay_of(COMPILED, False, max_message_bytes=1 << 20)
        assert feed(relay, [frame(2, first, fin=False, rsv=RSV1)])[0] == []
        relays.append(relay)
    other = inflate_c.pooled()[1 - mode]
    assert inflate_c.pooled()[mode] == 0
    for i, relay in enumerate(relays):
        assert feed(relay, [frame(0, rest)])[0] == []
        assert relay.inflated_bytes == 8000
        assert inflate_c.pooled()[mode] == min(i + 1, inflate_c.MAX_POOLED)
    assert inflate_c.pooled()[1 - mode] == other
    for _ in range(20):  # sequential messages reuse a pooled meter: the pool stays full
        if self_contained:
            relay = after_a_drop(COMPILED, True)
        else:
            relay = relay_of(COMPILED, True, max_message_bytes=1 << 20)
        assert feed(relay, message(True, [first, rest]))[0] == []
        assert inflate_c.pooled()[mode] == inflate_c.MAX_POOLED


# --- the relay ---------------------------------------------------------------------------


REFUSED = {  # payload, error code, reason
    "too big": (deflated(rep(100_000)), 1009, "message too big once inflated"),
    "bomb": (bomb(), 1009, "message too big once inflated"),
    "invalid": (b"\xff\xff\xff", 1007, "invalid compressed data"),
    "bad stored block": (deflated(b"hello") + bytes(4), 1007, "invalid compressed data"),
}


@DIRS
@pytest.mark.parametrize(
    "kind, cut",  # cut: payload bytes sent (and accepted) in a chunk before the rest
    [("too big", 0), ("too big", 1), ("bomb", 1), ("invalid", 0), ("bad stored block", 4)],
)
def test_refused_message(impl: Impl, client: bool, kind: str, cut: int) -> None:
    payload, code, reason = REFUSED[kind]
    # Small enough that the wire size cannot rule out going over: the message is inflated.
    limit = {"bomb": 1 << 20, "too big": 10_000}.get(kind, 1000)
    assert len(payload) < limit // 10  # the wire size is far under the limit
    wire = wire_of(client, 1, payload, rsv=RSV1)
    hl = len(wire) - len(payload)
    relay = relay_of(impl, client, max_message_bytes=limit)
    events, out, _ = feed(relay, split(wire, [hl + cut]))
    assert events == [impl.frames.ERROR]
    assert (relay.error_code, relay.error_reason) == (code, reason)
    assert_relayed(client, out, wire[: hl + cut])  # no byte of the refused chunk
    assert relay.in_frame
    if code == 1009:
        assert limit < relay.inflated_bytes <= limit + SLICE


@DIRS
@pytest.mark.parametrize("limit", [0, 1032 * 12 - 1, 1032 * 12])
def test_messages_that_cannot_exceed_the_limit_are_not_inflated(
    impl: Impl, client: bool, limit: int
) -> None:
    """(payload + 4) x 1032 <= limit: DEFLATE cannot inflate it past the limit. Such a
    message passes as it is, invalid or not (the receiver inflates it anyway)."""
    payload = b"\xff" * 8  # not DEFLATE at all; 8 + 4 bytes
    wire = wire_of(client, 2, payload, rsv=RSV1)
    relay = relay_of(impl, client, max_message_bytes=limit)
    events, out, _ = feed(relay, [wire])
    inflated = 0 < limit < 1032 * 12
    assert events == ([impl.frames.ERROR] if inflated else [])
    assert relay.metered_bytes == (8 if inflated else 0)
    assert (relay.compressed_messages, relay.compressed_bytes) == (1, 8)
    if not inflated:
        assert_relayed(client, out, wire)
    # The first frame of a fragmented message says nothing of the whole: inflated.
    frag = wire_of(client, 2, payload, fin=False, rsv=RSV1)
    relay = relay_of(impl, client, max_message_bytes=limit)
    assert feed(relay, [frag])[0] == ([impl.frames.ERROR] if limit else [])


@DIRS
@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_inflated_too_big_fragmented(impl: Impl, client: bool, how: str) -> None:
    payloads = sync_fragments([bytes([65 + j]) * 4000 for j in range(4)])
    frames = message(client, payloads)
    wire = b"".join(frames)
    before = len(frames[0]) + len(frames[1])  # 8000 inflated: forwarded as they are
    fail_payload_at = before + len(frames[2]) - len(payloads[2])  # the 3rd frame's header
    relay = relay_of(impl, client, max_message_bytes=10_000)
    events, out, _ = feed(relay, pieces(wire, how))
    assert (events, relay.error_code) == ([impl.frames.ERROR], 1009)
    assert relay.error_reason == "message too big once inflated"
    assert fail_payload_at <= len(out) < before + len(frames[2])
    if how == "whole":
        assert len(out) == fail_payload_at
    assert_relayed(client, out, wire[: len(out)])
    assert relay.compressed_messages == 1
    assert 10_000 < relay.inflated_bytes <= 12_000


@DIRS
@pytest.mark.parametrize("fragmented", [False, True])
def test_exactly_at_limit_passes(impl: Impl, client: bool, fragmented: bool) -> None:
    parts = [rep(4000), rep(4000, b"q"), rep(2000, b"zz")] if fragmented else [rep(10_000)]
    payloads = sync_fragments(parts)
    wire = b"".join(message(client, payloads))
    relay = relay_of(impl, client, max_message_bytes=10_000)
    events, out, _ = feed(relay, [wire])
    assert events == []
    assert_relayed(client, out, wire)
    assert (relay.compressed_messages, relay.inflated_bytes) == (1, 10_000)
    assert relay.compressed_bytes == sum(map(len, payloads))
    relay = relay_of(impl, client, max_message_bytes=9_999)
    assert feed(relay, [wire])[0] == [impl.frames.ERROR]
    assert relay.error_code == 1009


@DIRS
def test_empty_compressed_frames(impl: Impl, client: bool) -> None:
    """An empty last frame ends the compressed message: what follows is not metered."""
    msg, payload = rep(3000), deflated(rep(3000))
    wire = (
        wire_of(client, 1, b"", rsv=RSV1)
        + b"".join(message(client, [payload, b""]))
        + wire_of(client, 1, b"plain, not DEFLATE")
    )
    relay = relay_of(impl, client, max_message_bytes=3000)
    events, out, _ = feed(relay, pieces(wire, "bytes"))
    assert events == []
    assert_relayed(client, out, wire)
    counts = (relay.compressed_messages, relay.compressed_bytes, relay.inflated_bytes)
    assert counts == (2, len(payload), len(msg))


@DIRS
def test_self_contained_refuses_context_takeover(impl: Impl, client: bool) -> None:
    msgs, payloads = context_stream(shared=True)
    frames = [wire_of(client, 2, p, rsv=RSV1) for p in payloads[:2]]
    # Without a drop, referring back harms no one: nothing is inflated to check it.
    relay = relay_of(impl, client, self_contained=True)
    assert feed(relay, [b"".join(frames)])[0] == []
    assert relay.metered_bytes == 0
    relay = after_a_drop(impl, client)
    events, out, _ = feed(relay, [b"".join(frames)])
    assert events == [impl.frames.ERROR]
    assert relay.error_code == 1002
    assert relay.error_reason == CONTEXT_REASON
    assert_relayed(client, out, frames[0] + frames[1][: len(frames[1]) - len(payloads[1])])
    assert (relay.compressed_messages, relay.dropped_messages) == (2, 1)
    wire = b"".join(wire_of(client, 2, p, rsv=RSV1) for p in payloads)
    relay = relay_of(impl, client, self_contained=False, max_message_bytes=2100)
    events, out, _ = feed(relay, pieces(wire, "random"))
    assert events == []
    assert_relayed(client, out, wire)
    assert relay.compressed_messages == 5
    assert relay.compressed_bytes == sum(map(len, payloads))
    assert relay.inflated_bytes == sum(map(len, msgs))


@DIRS
def test_uncompressed_messages_are_not_metered(impl: Impl, client: bool) -> None:
    wire = (
        wire_of(client, 1, b"hello")
        + wire_of(client, 2, b"\xff\xff\xff", fin=False)  # not DEFLATE, and not metered
        + wire_of(client, 0, bytes(5000))
    )
    relay = relay_of(impl, client, max_message_bytes=5003)
    events, out, _ = feed(relay, [wire])
    assert events == []
    assert_relayed(client, out, wire)
    counts = (relay.compressed_messages, relay.compressed_bytes, relay.inflated_bytes)
    assert counts == (0, 0, 0)


@pytest.mark.parametrize("kind", ["invalid", "too big", "refers back"])
def test_meter_reused_after_a_refusal(impl: Impl, kind: str) -> None:
    """A meter given back after a refusal (the pool is last in, first out) measures anew."""
    sc = kind == "refers back"
    bad, code = {
        "invalid": ([frame(2, b"\xff\xff\xff", rsv=RSV1)], 1007),
        "too big": ([frame(2, deflated(rep(50_000)), rsv=RSV1)], 1009),
        "refers back": ([frame(2, p, rsv=RSV1) for p in context_stream(True)[1][:2]], 1002),
    }[kind]

    def new_relay() -> Any:  # one that inflates its next message
        return after_a_drop(impl, False) if sc else relay_of(impl, False, max_message_bytes=3000)

    relay = new_relay()
    assert feed(relay, bad)[0] == [impl.frames.ERROR]
    assert relay.error_code == code
    for msg in (rep(2900), rand(1000)):
        relay = new_relay()
        assert feed(relay, [frame(1, deflated(msg), rsv=RSV1)])[0] == []
        assert relay.inflated_bytes == len(msg)


# --- control-frame rate ------------------------------------------------------------------


@DIRS
@pytest.mark.parametrize("ops", [[9] * 6, [9, 10, 9, 10, 10, 9], [10] * 5 + [9]])
@pytest.mark.parametrize("one_call", [True, False])
def test_control_rate(impl: Impl, client: bool, ops: list[int], one_call: bool) -> None:
    frames = [wire_of(client, op, b"c%d" % i) for i, op in enumerate(ops)]
    data = wire_of(client, 2, b"data")  # data frames do not count
    frames = [f + data for f in frames]
    relay = relay_of(impl, client, max_control_per_second=5)
    events, out, _ = feed(relay, [b"".join(frames)] if one_call else frames)
    assert events == [impl.frames.ERROR]
    assert (relay.error_code, relay.error_reason) == (1008, "too many control frames")
    assert_relayed(client, out, b"".join(frames[:5]))  # the 6th is not in the output
    assert (relay.control_frames, relay.data_frames) == (5, 5)


@DIRS
@pytest.mark.parametrize("rate, n", [(5, 5), (0, 1000)])  # 0: no limit
def test_close_never_counts_and_zero_is_unlimited(impl: Impl, client: bool, rate: int, n: int):
    wire = b"".join(wire_of(client, 9 + i % 2, b"p") for i in range(n))
    wire += wire_of(client, 8, b"\x03\xe8")
    relay = relay_of(impl, client, max_control_per_second=rate)
    events, out, _ = feed(relay, [wire])
    assert events == [impl.frames.CLOSE]
    assert_relayed(client, out, wire)
    assert relay.control_frames == n + 1


def test_control_rate_refills(impl: Impl) -> None:
    ping = frame(9, b"")
    relay = relay_of(impl, False, max_control_per_second=10)
    start = time.monotonic()
    assert feed(relay, [ping * 10]) == ([], ping * 10, [20])
    time.sleep(0.3)
    events, out, _ = feed(relay, [ping * 10])
    elapsed = time.monotonic() - start
    assert events == [impl.frames.ERROR] and relay.error_code == 1008
    assert len(out) % 2 == 0 and out == ping * (len(out) // 2)
    assert 2 <= len(out) // 2 <= min(9, int(elapsed * 10) + 1)


@pytest.mark.parametrize("rate", [-1, 1_000_001])
def test_control_rate_bounds(impl: Impl, rate: int) -> None:
    with pytest.raises(ValueError):
        impl.frames.FrameRelay(from_client=False, max_control_per_second=rate)
    relay = impl.frames.FrameRelay(from_client=False, max_control_per_second=1_000_000)
    assert relay.max_control_per_second == 1_000_000


# --- compiled == pure ----------------------------------------------------------------------


@st.composite
def deflate_case(draw: st.DrawFn) -> dict[str, Any]:
    client, shared, sc = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15) if shared else None
    msgs, frames, metered = [], [], []
    limit = draw(st.sampled_from([0, 0, 1000, 65536, 65537, 100_000, 300_000]))
    units = draw(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=3))
    for _ in range(draw(st.integers(1, 3))):
        unit = draw(st.sampled_from(units))  # a unit reused across messages: back-references
        edges = st.sampled_from([65535, 65536, 65537, 65540, 131072, 131073])
        msg = rep(draw(st.integers(0, 200 * 1024) | edges), unit)  # edges: 64 KiB slices
        payload = deflated(msg, c)
        cut = draw(st.integers(0, len(payload)))
        parts = [payload] if cut == len(payload) else [payload[:cut], payload[cut:]]
        msgs.append(msg)
        # Inflated unless one frame whose wire size rules out going over the limit.
        metered.append(bool(limit) and (len(parts) > 1 or len(payload) + 4 > limit // 1032))
        frames += message(client, parts, draw(st.sampled_from([1, 2])))
    stream = b"".join(frames)
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=20))
    drop_first = sc and draw(st.booleans())  # then the messages in the next 32 KiB are checked
    ok = not (shared and drop_first) and all(not limit or len(m) <= limit for m in msgs)
    expected, to_check = 0, 32768 if drop_first else 0
    for msg, for_size in zip(msgs, metered, strict=True):
        if to_check or for_size:
            expected += len(msg)
        to_check -= min(to_check, len(msg))
    chunks = split(stream, cuts)
    kw = {"max_message_bytes": limit, "self_contained": sc}
    return {
        "client": client,
        "kw": kw,
        "drop_first": drop_first,
        "ok": ok,
        "inflated": expected,
        "chunks": chunks,
    }


def run(impl: Impl, case: dict[str, Any]) -> dict[str, Any]:
    if case["drop_first"]:
        relay = after_a_drop(impl, case["client"], **case["kw"])
    else:
        relay = relay_of(impl, case["client"], **case["kw"])
    events, out, sizes = feed(relay, case["chunks"])
    refused = relay.in_frame and relay.error_code in (1002, 1007)
    return {
        "events": events,
        "error": (relay.error_code, relay.error_reason),
        "sizes": sizes,
        "out": unmasked(out) if case["client"] else out,
        "counts": (
            relay.compressed_messages,
            relay.compressed_bytes,
            relay.metered_bytes,
            relay.data_frames,
        ),
        "inflated": None if refused else relay.inflated_bytes,
    }


@needs_compiled
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deflate_case())
def test_compiled_equals_pure(case: dict[str, Any]) -> None:
    assert COMPILED is not None
    pure, compiled = run(PURE, case), run(COMPILED, case)
    assert compiled == pure
    if case["ok"]:
        assert pure["events"] == []
        assert pure["inflated"] == case["inflated"]
