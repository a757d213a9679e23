"""The micro workloads, built once per implementation: each returns a zero-argument callable
doing one operation of the compiled core or its pure-Python twin. Shared by the
pytest-benchmark suite (test_micro.py) and the CI gate (bench/gate.py), so both time the
same thing.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from types import ModuleType

IMPLS = ("cython", "python")
REMASK_SIZES = (16, 1024, 65536)
# One instant for the clocked calls: the refill arithmetic runs, with zero elapsed time.
NOW_NS = time.monotonic_ns()
RATE = 10**9  # tokens per minute: never exhausted within a benchmark


def modules(impl: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """(frames, bucket, gate) of one implementation; ImportError when not built."""
    suffix = "" if impl == "cython" else "_py"
    frames = importlib.import_module(f"wsgw._core.frames{suffix}")
    bucket = importlib.import_module(f"wsgw._core.bucket{suffix}")
    gate = importlib.import_module(f"wsgw._core.gate{suffix}")
    if impl == "cython" and str(frames.__file__).endswith(".py"):
        raise ImportError("compiled core not built")
    return frames, bucket, gate


def client_frame(size: int) -> bytes:
    """A masked binary frame of `size` random payload bytes, as a client sends it."""
    frames, _, _ = modules("python")
    return frames.build_frame(2, os.urandom(size), mask=True)


def parse_header(impl: str, size: int = 16) -> Callable[[], object]:
    frames, _, _ = modules(impl)
    frame = client_frame(size)
    parse = frames.parse_header
    return lambda: parse(frame)


def remask(impl: str, size: int) -> Callable[[], object]:
    """Client→backend: validate, unmask with the client's key, re-mask with a fresh one."""
    frames, _, _ = modules(impl)
    frame = client_frame(size)
    relay = frames.FrameRelay(from_client=True)

    def run() -> object:
        relay.process(frame)
        return relay.take_output()

    return run


def passthrough(impl: str, size: int) -> Callable[[], object]:
    """Backend→client: validate an unmasked frame and hand it on verbatim."""
    frames, _, _ = modules(impl)
    frame = frames.build_frame(2, os.urandom(size))
    relay = frames.FrameRelay(from_client=False)

    def run() -> object:
        relay.process(frame)
        return relay.take_output()

    return run


def remask_gated(impl: str, size: int = 32) -> Callable[[], object]:
    """What wsgw does per client frame on a metered tier: admit through the gate, re-mask."""
    frames, _, gate_mod = modules(impl)
    frame = client_frame(size)
    relay = frames.FrameRelay(from_client=True)
    relay.set_gate(gate_mod.Gate([(gate_mod.Limit(messages_per_minute=RATE), 1, 0)]))

    def run() -> object:
        relay.process(frame)
        return relay.take_output()

    return run


def bucket_consume(impl: str) -> Callable[[], object]:
    _, bucket_mod, _ = modules(impl)
    bucket = bucket_mod.TokenBucket(RATE, now_ns=NOW_NS)
    consume = bucket.consume
    return lambda: consume(1, NOW_NS)


def gate_admit(impl: str) -> Callable[[], object]:
    _, _, gate_mod = modules(impl)
    gate = gate_mod.Gate([(gate_mod.Limit(messages_per_minute=RATE, now_ns=NOW_NS), 1, 0)])
    admit = gate.admit
    return lambda: admit(32, NOW_NS)
