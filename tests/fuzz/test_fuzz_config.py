"""Fuzz the config loader (wsgw/config/loader.py) on YAML, JSON and TOML text: a config
or a ConfigError whose every line is ``FILE[:LINE]: ...``, never another exception."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import fuzz, inputs, run, seed_bytes


@st.composite
def config_case(draw: st.DrawFn) -> tuple[bytes, str, str, bool]:
    data = draw(st.one_of(inputs(seed_bytes("config")), st.text(max_size=200).map(str.encode)))
    sniffed, kind = harness._sniff_config(data)
    suffix = draw(st.sampled_from([sniffed] * 6 + list(harness.CONFIG_SUFFIXES)))
    if draw(st.integers(0, 9)) == 0:
        kind = "subscriptions" if kind == "config" else "config"
    return data, suffix, kind, draw(st.booleans())


@fuzz
@given(config_case())
def test_config_loader(case: tuple[bytes, str, str, bool]) -> None:
    run(harness.check_config, *case)


def test_config_loader_corpus() -> None:
    for name, data in harness.seeds("config"):
        suffix = os.path.splitext(name)[1]
        kind = "subscriptions" if name.startswith("subs-") else "config"
        run(harness.run_one, "config", data, name)
        run(harness.check_config, data, suffix, kind, True)
        run(harness.check_config, data, ".yaml" if suffix != ".yaml" else ".json", kind)
