"""What the fuzz campaigns found, each as a minimal reproducer from the corpus (*bug-*).

Fixed findings stay as regression tests. Open ones (harness.KNOWN_BUGS, which the fuzz
tests let through) are strict xfails, run strictly: when the fix lands, the test XPASSes
and fails the suite; then drop the xfail and the KNOWN_BUGS entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from wsgw.errors import ConfigError

from . import harness

CORPUS = harness.CORPUS
needs_compiled = pytest.mark.skipif(harness.inflate_c is None, reason="compiled core not built")


def reproduce(bug_id: str, oracle: Callable[..., Any], *args: Any) -> Any:
    """``oracle(*args)``; a Violation other than the known finding ``bug_id`` fails the
    test (an AssertionError, not the xfail's Violation)."""
    try:
        return oracle(*args)
    except harness.Violation as err:
        bug = harness.matching_bug(err)
        assert bug is not None and bug.id == bug_id, f"not {bug_id}: {err}"
        raise


# --- fixed ---------------------------------------------------------------------------------


def test_recursive_yaml_alias_is_a_config_error() -> None:
    """Found by the hypothesis campaign (0.4% of its inputs): `apis: &a [*a]` made the
    loader raise RecursionError (from _duplicate_keys and msgspec.convert)."""
    data = (CORPUS / "config" / "config-bug-recursive-alias.yaml").read_bytes()
    err = harness.check_config(data, ".yaml", "config")
    assert isinstance(err, ConfigError)


@needs_compiled
@pytest.mark.parametrize(
    "name, self_contained",
    [("bug-limit-vs-refers-back.bin", True), ("bug-limit-vs-invalid.bin", False)],
)
def test_inflate_message_past_the_limit_then_broken_is_too_big(
    name: str, self_contained: bool
) -> None:
    """Found by the hypothesis campaign: inflate_py dropped the output of a zlib
    decompress() call that raised, so a message already past the limit was INVALID or
    REFERS_BACK (pure) where the compiled twin says TOO_BIG."""
    payload = (CORPUS / "inflate" / name).read_bytes()
    case = harness.InflateCase(payload, self_contained=self_contained, limit=50, finish=False)
    statuses, _inflated, _ended = harness.check_inflate(case)
    assert statuses == [harness.inflate_py.TOO_BIG]


@pytest.mark.parametrize("cuts", [(), (8,)], ids=["whole", "cut"])
def test_frame_relay_limit_then_invalid_data_is_1009_however_cut(cuts: tuple[int, ...]) -> None:
    """The same in the relay: this 10-byte compressed frame inflates past 100 bytes, then
    breaks; the pure twin closed with 1007 when whole and 1009 when cut."""
    stream = (CORPUS / "frames" / "backend-bug-limit-vs-invalid.bin").read_bytes()
    case = harness.FrameCase(stream, client=False, max_message_bytes=100, cuts=cuts)
    assert harness.check_frames(case).counters["error_code"] == 1009


# --- open ----------------------------------------------------------------------------------

UNDERCOUNT = (
    "inflate-undercount-before-error (found by atheris): the pure meter counts 515 "
    "bytes where the compiled one counts 516 before invalid data that follows a full "
    "output, so with a limit of 515 it says INVALID (1007) where the compiled one says "
    "TOO_BIG (1009); see inflate_py._written_before_error"
)


@needs_compiled
@pytest.mark.xfail(strict=True, raises=harness.Violation, reason=UNDERCOUNT)
def test_inflate_twins_agree_where_the_limit_meets_an_error() -> None:
    payload = (CORPUS / "inflate" / "bug-undercount-before-error.bin").read_bytes()
    case = harness.InflateCase(payload, self_contained=False, limit=515, finish=False)
    statuses, _, _ = reproduce("inflate-undercount-before-error", harness.check_inflate, case)
    assert statuses == [harness.inflate_py.TOO_BIG]


@needs_compiled
@pytest.mark.xfail(strict=True, raises=harness.Violation, reason=UNDERCOUNT)
def test_frame_relay_twins_agree_where_the_limit_meets_an_error() -> None:
    stream = (CORPUS / "frames" / "backend-bug-undercount-before-error.bin").read_bytes()
    case = harness.FrameCase(stream, client=False, max_message_bytes=515)
    run = reproduce("inflate-undercount-before-error", harness.check_frames, case)
    assert run.counters["error_code"] == 1009
