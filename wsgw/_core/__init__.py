"""Frame codec, masking, token bucket, admission gate: compiled (Cython) or pure-Python twins.

The compiled modules are used when built, unless WSGW_PURE_PYTHON=1 forces the twins
(IMPLEMENTATION says which is live). Both behave identically; tests/core runs both.
"""

import os
from types import ModuleType
from typing import TYPE_CHECKING


def _modules() -> tuple[str, ModuleType, ModuleType, ModuleType, ModuleType, ModuleType]:
    if os.environ.get("WSGW_PURE_PYTHON") != "1":
        try:
            from . import bucket, frames, gate, legs, mask  # type: ignore[attr-defined]

            return "cython", bucket, frames, gate, mask, legs
        except ImportError:  # not built: the twins below
            pass
    from . import bucket_py, frames_py, gate_py, legs_py, mask_py

    return "python", bucket_py, frames_py, gate_py, mask_py, legs_py


IMPLEMENTATION, _bucket, _frames, _gate, _mask, _legs = _modules()

TokenBucket = _bucket.TokenBucket
FrameRelay = _frames.FrameRelay
FrameHeader = _frames.FrameHeader
parse_header = _frames.parse_header
build_frame = _frames.build_frame
build_close_payload = _frames.build_close_payload
NEED_DATA, CLOSE, ERROR = _frames.NEED_DATA, _frames.CLOSE, _frames.ERROR
THROTTLED = _frames.THROTTLED
OP_CONT, OP_TEXT, OP_BINARY = _frames.OP_CONT, _frames.OP_TEXT, _frames.OP_BINARY
OP_CLOSE, OP_PING, OP_PONG = _frames.OP_CLOSE, _frames.OP_PING, _frames.OP_PONG
Gate = _gate.Gate
Limit = _gate.Limit
ACTION_DROP, ACTION_CLOSE, ACTION_SHAPE = _gate.ACTION_DROP, _gate.ACTION_CLOSE, _gate.ACTION_SHAPE
apply_mask = _mask.apply_mask
random_key = _mask.random_key
if TYPE_CHECKING:  # the twin is the spec, for mypy too
    from .legs_py import BackendLegCore, ClientLegCore
else:
    ClientLegCore = _legs.ClientLegCore
    BackendLegCore = _legs.BackendLegCore

__all__ = [
    "ACTION_CLOSE",
    "ACTION_DROP",
    "ACTION_SHAPE",
    "CLOSE",
    "ERROR",
    "IMPLEMENTATION",
    "NEED_DATA",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "THROTTLED",
    "BackendLegCore",
    "ClientLegCore",
    "FrameHeader",
    "FrameRelay",
    "Gate",
    "Limit",
    "TokenBucket",
    "apply_mask",
    "build_close_payload",
    "build_frame",
    "parse_header",
    "random_key",
]
