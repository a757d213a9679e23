"""Frame codec, masking, token bucket, admission gate: compiled (Cython) or pure-Python twins.

The compiled modules are used when built, unless WSGW_PURE_PYTHON=1 forces the twins
(IMPLEMENTATION says which is live). Both behave identically; tests/core runs both.
"""

import os

IMPLEMENTATION: str

if os.environ.get("WSGW_PURE_PYTHON") != "1":
    try:
        from .bucket import TokenBucket
        from .frames import (
            CLOSE,
            ERROR,
            NEED_DATA,
            OP_BINARY,
            OP_CLOSE,
            OP_CONT,
            OP_PING,
            OP_PONG,
            OP_TEXT,
            THROTTLED,
            FrameHeader,
            FrameRelay,
            build_close_payload,
            build_frame,
            parse_header,
        )
        from .gate import ACTION_CLOSE, ACTION_DROP, ACTION_SHAPE, Gate, Limit
        from .mask import apply_mask, random_key

        IMPLEMENTATION = "cython"
    except ImportError:  # not built: the twins below
        pass

if "IMPLEMENTATION" not in globals():
    from .bucket_py import TokenBucket
    from .frames_py import (
        CLOSE,
        ERROR,
        NEED_DATA,
        OP_BINARY,
        OP_CLOSE,
        OP_CONT,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        THROTTLED,
        FrameHeader,
        FrameRelay,
        build_close_payload,
        build_frame,
        parse_header,
    )
    from .gate_py import ACTION_CLOSE, ACTION_DROP, ACTION_SHAPE, Gate, Limit
    from .mask_py import apply_mask, random_key

    IMPLEMENTATION = "python"

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
