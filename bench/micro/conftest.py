"""pytest-benchmark settings for the micro suite: results live in bench/micro/baseline
(committed; `.benchmarks/` is git-ignored), wherever pytest is started from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]  # workloads.py; this checkout's wsgw

DEFAULT_STORAGE = "file://./.benchmarks"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark opens its storage; an explicit --benchmark-storage wins.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{HERE / 'baseline'}"
