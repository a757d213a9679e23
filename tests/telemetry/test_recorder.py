"""The recorder's label vocabulary (from wsgw/names.py) and the telemetry modules' layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from wsgw import names
from wsgw.pipeline.recorder import Recorder

from .conftest import Clock, record

PIPELINE = Path(__file__).parents[2] / "wsgw" / "pipeline"
TELEMETRY_MODULES = ("telemetry", "recorder", "metrics", "stats", "events")


def make_recorder(clock: Clock) -> Recorder:
    return Recorder(api_labels=[("chat", "v1")], application_labels=["acme"], clock=clock)


@pytest.mark.parametrize("key_type", names.KEY_TYPES)
def test_every_key_type_is_a_label(key_type: str) -> None:
    clock = Clock()
    r = make_recorder(clock)
    r.opened(record(clock, None, key_type=key_type))
    assert dict(r.active) == {("chat", "v1", "acme", key_type): 1}


def test_a_key_type_no_token_carries_is_not_a_label() -> None:
    # "NONE" was once listed; nothing issues it (tokens and grants: PRODUCTION | SANDBOX).
    clock = Clock()
    r = make_recorder(clock)
    r.opened(record(clock, None, key_type="NONE"))
    assert dict(r.active) == {("chat", "v1", "acme", "-"): 1}


def test_every_scope_action_and_closer_is_a_label() -> None:
    clock = Clock()
    r = make_recorder(clock)
    rec = record(clock, None)
    r.opened(rec)
    for scope in names.LIMIT_SCOPES:
        for action in names.ON_LIMIT_ACTIONS:
            r.throttled(rec, scope, action)
        r.throttled_handshake("chat", "v1", "acme", scope)
    # TooManyRequests' default scope (wsgw/errors.py) stays a label of its own.
    r.throttled_handshake("chat", "v1", "acme", "connections")
    expected = {
        ("chat", "v1", "acme", scope, action): 1
        for scope in names.LIMIT_SCOPES
        for action in names.THROTTLE_ACTIONS
    }
    expected[("chat", "v1", "acme", "connections", names.REFUSE)] = 1
    assert dict(r.throttled_counts) == expected
    for closer in names.CLOSERS:
        one = record(clock, None)
        r.opened(one)
        one.closed_by = closer
        r.closed(one)
    assert {by for (_, _, _, by) in r.close_codes} == set(names.CLOSERS)


def test_anonymous_is_always_an_application_label() -> None:
    clock = Clock()
    r = make_recorder(clock)
    r.set_labels([("chat", "v1")], [])  # a reload with no applications at all
    r.opened(record(clock, None, application=names.ANONYMOUS))
    r.opened(record(clock, None, application="acme"))
    assert dict(r.active) == {
        ("chat", "v1", names.ANONYMOUS, "PRODUCTION"): 1,
        ("chat", "v1", "-", "PRODUCTION"): 1,
    }


def wsgw_imports(module: str) -> set[str]:
    """Every wsgw module `module` imports, anywhere in it (TYPE_CHECKING blocks and
    function bodies included), as dotted names."""
    tree = ast.parse((PIPELINE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("wsgw", "wsgw.pipeline"):  # `from wsgw.pipeline import stats`
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return {name for name in found if name.startswith("wsgw.")}


def test_telemetry_imports_point_one_way() -> None:
    graph = {
        m: {name.rsplit(".", 1)[1] for name in wsgw_imports(m)} & set(TELEMETRY_MODULES)
        for m in TELEMETRY_MODULES
    }
    assert graph == {
        "telemetry": {"recorder", "metrics", "stats"},
        "recorder": {"events"},
        "metrics": {"recorder"},
        "stats": {"recorder"},
        "events": set(),
    }
    # Beyond these five, the recorder imports only the vocabulary.
    assert wsgw_imports("recorder") == {"wsgw.names", "wsgw.pipeline.events"}
    assert wsgw_imports("events") == set()
