"""Fixtures for the config tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run inside tmp_path, so messages name files as `wsgw.yaml`, not a long path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
