"""wsgw.reload without a gateway: the watch's settling rule, the refusal of empty files,
and the restart-only list.

FileWatch.changed() is polled every WATCH_INTERVAL_S by the gateway: a change counts only
once a second poll finds the files as the first one left them (an editor writing in place
shows a half-written file for a moment). Each edit here changes the size, so that it is
seen whatever the file system's mtime granularity.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
import yaml

from wsgw.config import load_config
from wsgw.config.loader import display_path
from wsgw.errors import ConfigError
from wsgw.oauth.keys import generate_signing_key
from wsgw.portal import create_app
from wsgw.reload import RESTART_ONLY, FileWatch, _not_empty, keep_restart_only, load_files


def grow(path: Path, text: str = "x") -> None:
    """An in-place edit (same inode): only the size and the mtime tell."""
    with open(path, "a") as f:
        f.write(text)


# ------------------------------------------------------------------ FileWatch


def test_a_single_change_is_reported_at_the_second_poll_that_sees_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("one\n")
    b.write_text("two\n")
    watch = FileWatch([str(a), str(b)])
    assert [watch.changed() for _ in range(3)] == [False, False, False]  # nothing changed
    grow(b)
    assert watch.changed() is False  # the first poll that sees it: settling
    assert watch.changed() is True  # the second one, unchanged since: reported
    # Reported once: the new signatures are the baseline now.
    assert [watch.changed() for _ in range(3)] == [False, False, False]


def test_a_file_still_changing_between_polls_is_not_reported_until_it_settles(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wsgw.yaml"
    path.write_text("gateway: {}\n")
    watch = FileWatch([str(path)])
    for i in range(5):  # written in pieces, one between each pair of polls
        grow(path, "#" * (i + 1))
        assert watch.changed() is False, f"reported while still changing (poll {i})"
    assert watch.changed() is True  # settled
    assert watch.changed() is False


def test_a_replaced_file_counts_as_a_change_and_settles_the_same_way(tmp_path: Path) -> None:
    """A rename over the file (same size, another inode) is a change too."""
    path = tmp_path / "subscriptions.yaml"
    path.write_text("applications: []\n")
    watch = FileWatch([str(path)])
    tmp = tmp_path / ".subscriptions.yaml.tmp"
    tmp.write_text("applications: []\n")
    os.replace(tmp, path)
    assert watch.changed() is False
    assert watch.changed() is True
    assert watch.changed() is False


def test_a_file_that_appears_or_disappears_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    watch = FileWatch([str(path)])
    assert watch.changed() is False  # missing, and still missing
    path.write_text("{}\n")
    assert [watch.changed(), watch.changed()] == [False, True]
    path.unlink()
    assert [watch.changed(), watch.changed()] == [False, True]


def test_retarget_watches_the_new_files_from_their_current_state(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("old\n")
    new.write_text("new\n")
    watch = FileWatch([str(old)])
    grow(old)
    assert watch.changed() is False  # settling on the old file's change ...
    watch.retarget([str(new)])
    assert watch.paths == [str(new)]
    # ... which the retarget dropped; the new file as it is now is the baseline.
    assert [watch.changed(), watch.changed()] == [False, False]
    grow(old)  # no longer watched
    assert [watch.changed(), watch.changed()] == [False, False]
    grow(new)
    assert [watch.changed(), watch.changed()] == [False, True]


def test_retarget_to_the_same_files_keeps_a_pending_change(tmp_path: Path) -> None:
    """Every reload retargets (most often to the same files): a change that is settling
    when it does must still be reported."""
    path = tmp_path / "wsgw.yaml"
    path.write_text("a\n")
    watch = FileWatch([str(path)])
    grow(path)
    assert watch.changed() is False
    watch.retarget([str(path)])
    assert watch.changed() is True


# ------------------------------------------------------------------ empty files


def write_deployment(directory: Path) -> Path:
    """wsgw.yaml, a signing key and a subscriptions file with one application."""
    raw = {
        "gateway": {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "subscriptions_file": "subscriptions.yaml",
        },
        "security": {"signing_key_file": "keys/signing.pem"},
        "tiers": {"Gold": {"messages_per_minute": 100}},
        "apis": [
            {
                "name": "Echo",
                "context": "/echo",
                "version": "1.0",
                "endpoints": {"production": "ws://127.0.0.1:1"},
                "tiers": ["Gold"],
            }
        ],
    }
    path = directory / "wsgw.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    generate_signing_key(config.security.signing_key_file)
    create_app(config, "App")
    return path


def test_load_files_reads_a_valid_set(tmp_path: Path) -> None:
    path = write_deployment(tmp_path)
    files = load_files(path, load_config(path))
    assert [app.name for app in files.subscriptions.applications] == ["App"]
    assert [api.name for api in files.config.apis] == ["Echo"]


def test_an_empty_subscriptions_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_deployment(tmp_path)
    config = load_config(path)
    subscriptions = Path(config.gateway.subscriptions_file)
    assert subscriptions.stat().st_size > 0
    subscriptions.write_text("")  # truncated in place, as an editor's write begins
    for config_path in (path, None):  # read through wsgw.yaml, or against the config given
        with pytest.raises(ConfigError) as refused:
            load_files(config_path, config)
        problems = refused.value.problems
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"{display_path(subscriptions)}:"), problems
        assert "empty" in problems[0]


def test_an_empty_wsgw_yaml_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_deployment(tmp_path)
    config = load_config(path)
    path.write_text("")
    with pytest.raises(ConfigError) as refused:
        load_files(path, config)
    problems = refused.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{display_path(path)}:"), problems
    assert "empty" in problems[0]


def test_not_empty_checks_only_emptiness(tmp_path: Path) -> None:
    empty, blank, missing = tmp_path / "empty.yaml", tmp_path / "blank.yaml", tmp_path / "no"
    empty.write_text("")
    blank.write_text("\n")
    with pytest.raises(ConfigError) as refused:
        _not_empty(empty)
    assert refused.value.problems == [f"{display_path(empty)}: empty file: not loaded"]
    _not_empty(blank)  # not empty: what it holds is the loader's to judge
    _not_empty(missing)  # the loader says a missing file is missing


# ------------------------------------------------------------------ restart-only


def test_keep_restart_only_lists_and_keeps_redis_prefix(tmp_path: Path) -> None:
    assert "redis_prefix" in RESTART_ONLY["gateway"]
    running = load_config(write_deployment(tmp_path))
    assert running.gateway.redis_prefix == "wsgw"
    new = msgspec.structs.replace(
        running,
        gateway=msgspec.structs.replace(
            running.gateway, redis_prefix="elsewhere", idle_timeout_s=42.0
        ),
    )
    kept, changed = keep_restart_only(running, new)
    assert changed == ["gateway.redis_prefix"]
    assert kept.gateway.redis_prefix == "wsgw"  # the running value
    assert kept.gateway.idle_timeout_s == 42.0  # not restart-only: taken
    same, none = keep_restart_only(running, running)
    assert none == [] and same == running
