"""Hypothesis side of the fuzz tests: the budget, corpus-seeded input strategies, and the
wrapper that runs an oracle and lets known (reported, xfail-tracked) findings through.

Budget: ``WSGW_FUZZ_EXAMPLES`` examples per test (default 200, derandomized so the normal
suite runs the same inputs every time); set it (e.g. 20000) for a longer, random campaign.
``WSGW_FUZZ_SEED`` fixes hypothesis' seed for a random run; ``WSGW_FUZZ_STRICT=1`` fails
on known findings too.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, seed, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from . import harness

DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get("WSGW_FUZZ_EXAMPLES", "0")) or DEFAULT_EXAMPLES
CAMPAIGN = "WSGW_FUZZ_EXAMPLES" in os.environ

# The suite's short run is derandomized (the same inputs every time, no example database);
# a campaign is random and keeps failing examples in .hypothesis/ to replay them.
_DETERMINISTIC: dict[str, Any] = {} if CAMPAIGN else {"derandomize": True, "database": None}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    **_DETERMINISTIC,
)


def fuzz(test: Callable[..., Any]) -> Callable[..., Any]:
    """The fuzz budget, a pytest timeout that grows with it, and WSGW_FUZZ_SEED."""
    test = FUZZ_SETTINGS(test)
    if os.environ.get("WSGW_FUZZ_SEED"):
        test = seed(int(os.environ["WSGW_FUZZ_SEED"]))(test)
    return pytest.mark.timeout(120 + EXAMPLES * 0.1, method="thread")(test)


def run(oracle: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``oracle(*args)``; a known finding is recorded as a hypothesis event, not a failure."""
    try:
        return oracle(*args, **kw)
    except harness.Violation as err:
        bug = harness.known_bug(err)
        if bug is None:
            raise
        if currently_in_test_context():
            event(f"known bug: {bug.id}")
        return None


@functools.cache
def seed_bytes(target: str, prefix: str = "") -> tuple[bytes, ...]:
    return tuple(d for name, d in harness.seeds(target) if name.startswith(prefix))


@st.composite
def mutated(draw: st.DrawFn, pool: tuple[bytes, ...], max_ops: int = 4) -> bytes:
    """A corpus seed with a few byte-level mutations (harness.mutate). The mutations come
    from one drawn integer: generating them is cheap, and a failure prints the input."""
    seed_ = draw(st.integers(0, 2**64 - 1))
    return harness.mutate(random.Random(seed_), pool, max_ops)


def inputs(pool: tuple[bytes, ...], max_random: int = 300) -> st.SearchStrategy[bytes]:
    """Random bytes, corpus seeds as they are, and mutated seeds (the most of them)."""
    return st.one_of(
        st.binary(max_size=max_random),
        st.sampled_from(pool),
        mutated(pool),
        mutated(pool),
        mutated(pool),
    )


def cuts_for(draw: st.DrawFn, data: bytes) -> tuple[int, ...]:
    """Where the input is cut into reads: whole, a few cuts, or byte by byte."""
    return harness.cuts(random.Random(draw(st.integers(0, 2**64 - 1))), len(data))
