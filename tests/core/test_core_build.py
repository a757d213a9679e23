"""The compiled core must be built wherever the tests run (CI included)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .core_support import COMPILED


def test_compiled_core_is_built() -> None:
    if os.environ.get("WSGW_PURE_PYTHON") == "1":
        pytest.skip("WSGW_PURE_PYTHON=1 asks for the pure-Python twins")
    import wsgw._core as core

    assert core.IMPLEMENTATION == "cython", (
        "wsgw._core is running the pure-Python twins: build the extension with "
        "`python setup.py build_ext --inplace`"
    )


@pytest.mark.parametrize(("flag", "expected"), [("1", "python"), ("0", None), ("", None)])
def test_pure_python_flag(flag: str, expected: str | None) -> None:
    code = (
        "import wsgw._core as c; "
        "print(c.IMPLEMENTATION, c.FrameRelay.__module__, c.TokenBucket.__module__, "
        "c.apply_mask.__module__, c.Gate.__module__, c.Limit.__module__, "
        "c.ClientLegCore.__module__, c.BackendLegCore.__module__)"
    )
    env = {**os.environ, "WSGW_PURE_PYTHON": flag}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    built = expected or ("python" if COMPILED is None else "cython")  # compiled if built
    suffix = "_py" if built == "python" else ""
    assert out == [
        built,
        f"wsgw._core.frames{suffix}",
        f"wsgw._core.bucket{suffix}",
        f"wsgw._core.mask{suffix}",
        f"wsgw._core.gate{suffix}",
        f"wsgw._core.gate{suffix}",
        f"wsgw._core.legs{suffix}",
        f"wsgw._core.legs{suffix}",
    ]


def test_package_exports() -> None:
    import wsgw._core as core

    for name in core.__all__:
        assert hasattr(core, name), name
    assert (core.NEED_DATA, core.CLOSE, core.ERROR) == (0, 1, 2)
    assert (core.OP_CONT, core.OP_TEXT, core.OP_BINARY) == (0, 1, 2)
    assert (core.OP_CLOSE, core.OP_PING, core.OP_PONG) == (8, 9, 10)
    assert core.THROTTLED == 3
    assert (core.ACTION_DROP, core.ACTION_CLOSE, core.ACTION_SHAPE) == (1, 2, 3)
