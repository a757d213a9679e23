"""Every core test runs against both the compiled modules and their pure-Python twins."""

from __future__ import annotations

import pytest

from .core_support import COMPILED, COMPILED_IMPORT_ERROR, PURE, Impl


@pytest.fixture(params=["cython", "python"])
def impl(request: pytest.FixtureRequest) -> Impl:
    if request.param == "python":
        return PURE
    if COMPILED is None:
        pytest.skip(
            f"compiled core not built ({COMPILED_IMPORT_ERROR}); "
            "run `python setup.py build_ext --inplace`"
        )
    return COMPILED
