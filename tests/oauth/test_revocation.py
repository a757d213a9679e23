"""The revocation list (wsgw/oauth/revocation.py): its semantics, the helpers building its
entries, and its file: round trip, locking across processes, errors, mode."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from wsgw.errors import ConfigError
from wsgw.oauth.revocation import (
    Revocation,
    RevocationList,
    load_revocations,
    record_revocations,
    revoke_application,
    revoke_consumer_key,
    revoke_jti,
    revoke_token,
)
from wsgw.oauth.tokens import TokenClaims

NOW = 1_700_000_000


def claims(
    *,
    application: str = "weather",
    consumer_key: str = "ck-prod",
    jti: str = "jti-1",
    issued_at: int = NOW - 100,
    ttl: int = 600,
) -> TokenClaims:
    return TokenClaims(application, "PRODUCTION", consumer_key, jti, issued_at, issued_at + ttl)


# --- the list ---------------------------------------------------------------------------


def test_jti_entry_revokes_that_token_only() -> None:
    revocations = RevocationList([Revocation("jti", "jti-1", NOW + 500)])
    assert revocations.revokes(claims()) == Revocation("jti", "jti-1", NOW + 500)
    assert revocations.revokes(claims(jti="jti-2")) is None


@pytest.mark.parametrize(
    ("kind", "field"), [("application", "application"), ("consumer_key", "consumer_key")]
)
def test_issued_before_is_inclusive(kind: str, field: str) -> None:
    entry = Revocation(kind, "x", NOW + 600, NOW)  # type: ignore[arg-type]
    revocations = RevocationList([entry])
    assert revocations.revokes(claims(**{field: "x"}, issued_at=NOW - 1)) == entry
    assert revocations.revokes(claims(**{field: "x"}, issued_at=NOW)) == entry  # same second
    assert revocations.revokes(claims(**{field: "x"}, issued_at=NOW + 1)) is None  # later
    assert revocations.revokes(claims(**{field: "y"}, issued_at=NOW - 1)) is None  # another


def test_kinds_do_not_mix() -> None:
    """An application named like a consumer key (or a jti) is not that key."""
    revocations = RevocationList([Revocation("application", "ck-prod", NOW + 600, NOW)])
    assert revocations.revokes(claims(application="weather", consumer_key="ck-prod")) is None
    assert revocations.revokes(claims(application="ck-prod")) is not None


def test_prune_forgets_only_entries_past_their_expiry() -> None:
    revocations = RevocationList(
        [
            Revocation("jti", "gone", NOW - 1),
            Revocation("jti", "last-second", NOW),  # a token with exp == now is expired,
            Revocation("application", "weather", NOW + 10, NOW - 590),  # kept while it can
        ]
    )
    assert revocations.prune(NOW) == 1
    assert sorted(e.value for e in revocations.entries()) == ["last-second", "weather"]
    assert revocations.prune(NOW) == 0
    assert revocations.prune(NOW + 11) == 2
    assert len(revocations) == 0


def test_merge_widens_and_reports_only_what_revokes_more() -> None:
    revocations = RevocationList([Revocation("application", "weather", NOW + 600, NOW)])
    narrower = Revocation("application", "weather", NOW + 500, NOW - 10)
    later = Revocation("application", "weather", NOW + 610, NOW + 10)
    longer_only = Revocation("application", "weather", NOW + 700, NOW - 50)
    assert revocations.merge([narrower]) == []
    assert revocations.merge([later, narrower]) == [later]
    assert revocations.merge([longer_only]) == [longer_only]
    # Each bound is the widest seen.
    assert revocations.entries() == [Revocation("application", "weather", NOW + 700, NOW + 10)]
    assert revocations.add(Revocation("application", "weather", NOW + 700, NOW + 10)) is False


# --- building entries -------------------------------------------------------------------


def test_revoke_token_lives_as_long_as_the_token() -> None:
    c = claims()
    assert revoke_token(c) == Revocation("jti", c.jti, c.expires_at, 0)


def test_revoke_jti_outlives_any_token_issued_up_to_now() -> None:
    entry = revoke_jti("abc", NOW + 0.9, 600)
    assert entry == Revocation("jti", "abc", NOW + 600, 0)
    # A token with that jti issued at the latest now expires at NOW + 600 at the latest.
    assert entry.expires_at >= claims(jti="abc", issued_at=NOW).expires_at


def test_revoke_application_and_consumer_key() -> None:
    assert revoke_application("weather", NOW + 0.7, 600) == Revocation(
        "application", "weather", NOW + 600, NOW
    )
    assert revoke_consumer_key("ck", NOW + 0.7, 600) == Revocation(
        "consumer_key", "ck", NOW + 600, NOW
    )
    revocations = RevocationList([revoke_application("weather", NOW + 0.7, 600)])
    assert revocations.revokes(claims(issued_at=NOW)) is not None
    assert revocations.revokes(claims(issued_at=NOW + 1)) is None


# --- the file ---------------------------------------------------------------------------


def test_missing_or_empty_file_is_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    assert load_revocations(path) == []
    path.write_text("  \n")
    assert load_revocations(path) == []


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    entries = [
        Revocation("jti", "jti-1", NOW + 600),
        Revocation("application", "weather", NOW + 600, NOW),
        Revocation("consumer_key", "ck:odd/+ é", NOW + 300, NOW - 300),
    ]
    assert record_revocations(path, entries, NOW) == entries
    assert sorted(load_revocations(path), key=repr) == sorted(entries, key=repr)
    document = json.loads(path.read_text("utf-8"))
    assert {"kind": "jti", "value": "jti-1", "issued_before": 0, "expires_at": NOW + 600} in (
        document["revocations"]
    )


def test_record_returns_only_what_is_new_and_merges_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    first = Revocation("application", "weather", NOW + 600, NOW)
    assert record_revocations(path, [first], NOW) == [first]
    assert record_revocations(path, [first], NOW) == []
    wider = Revocation("application", "weather", NOW + 601, NOW + 1)
    other = Revocation("jti", "jti-9", NOW + 50)
    assert record_revocations(path, [wider, other], NOW + 1) == [wider, other]
    assert sorted(load_revocations(path), key=repr) == sorted([wider, other], key=repr)


def test_record_prunes_expired_entries(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    record_revocations(path, [Revocation("jti", "old", NOW + 10)], NOW)
    expired_already = Revocation("jti", "older", NOW + 5)
    fresh = Revocation("jti", "fresh", NOW + 600)
    # At NOW + 20 both "old" and the newly given "older" are past: neither is written, and
    # "older" is not reported as revoked.
    assert record_revocations(path, [expired_already, fresh], NOW + 20) == [fresh]
    assert load_revocations(path) == [fresh]


def test_unchanged_list_is_not_rewritten(tmp_path: Path) -> None:
    """Every gateway watches the file: a write that changes nothing must not wake them."""
    path = tmp_path / "revocations.json"
    entry = Revocation("jti", "jti-1", NOW + 600)
    record_revocations(path, [entry], NOW)
    before = os.stat(path)
    assert record_revocations(path, [entry], NOW + 1) == []
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_new_file_is_0600_and_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    record_revocations(path, [Revocation("jti", "a", NOW + 600)], NOW)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    record_revocations(path, [Revocation("jti", "b", NOW + 600)], NOW)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name != "revocations.json"]  # no temp left


def test_record_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "revocations.json"
    link = tmp_path / "revocations.json"
    link.symlink_to(target)
    record_revocations(link, [Revocation("jti", "a", NOW + 600)], NOW)
    assert link.is_symlink()
    assert load_revocations(target) == [Revocation("jti", "a", NOW + 600)]


def test_record_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "revocations.json"
    with pytest.raises(ConfigError) as caught:
        record_revocations(path, [Revocation("jti", "a", NOW + 600)], NOW)
    assert "revocations.json" in str(caught.value) and "does not exist" in str(caught.value)


def _writer(path: str, prefix: str, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(10)
    for i in range(count):
        record_revocations(path, [Revocation("jti", f"{prefix}-{i}", NOW + 600)], NOW)


def test_two_processes_recording_at_once_lose_nothing(tmp_path: Path) -> None:
    """Without the directory lock, each read-modify-write would overwrite the other's."""
    path = str(tmp_path / "revocations.json")
    count = 60
    context = multiprocessing.get_context("fork")
    start = context.Event()
    writers = [
        context.Process(target=_writer, args=(path, prefix, count, start)) for prefix in "ab"
    ]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(60)
    for writer in writers:
        if writer.is_alive():
            writer.kill()
    assert [writer.exitcode for writer in writers] == [0, 0]
    values = {entry.value for entry in load_revocations(path)}
    assert values == {f"{prefix}-{i}" for prefix in "ab" for i in range(count)}


# --- a malformed file -------------------------------------------------------------------


def _entry(**changes: object) -> dict[str, object]:
    return {"kind": "jti", "value": "x", "issued_before": 0, "expires_at": NOW, **changes}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "JSON"),
        ("[]", "object"),
        ("{}", "revocations"),
        (json.dumps({"revocations": [_entry(), _entry(expires_at="soon")]}), "[1].expires_at"),
        (json.dumps({"revocations": [_entry(kind="user")]}), "[0].kind"),
        (json.dumps({"revocations": [_entry(value="")]}), "[0].value"),
        (json.dumps({"revocations": [_entry(issued_before=-1)]}), "[0].issued_before"),
        (json.dumps({"revocations": [{"kind": "jti", "value": "x", "expires_at": 1}]}), "issued"),
        (json.dumps({"revocations": [_entry(issued_befor=NOW)]}), "issued_befor"),
        (json.dumps({"revocations": [], "extra": 1}), "extra"),
    ],
)
def test_malformed_file_is_one_line_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "revocations.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_revocations(path)
    [line] = caught.value.problems
    assert "revocations.json" in line
    assert expected in line


def test_record_refuses_to_replace_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError):
        record_revocations(path, [Revocation("jti", "a", NOW + 600)], NOW)
    assert path.read_text() == "{not json"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    path.mkdir()  # reading a directory fails with an OSError other than "not found"
    with pytest.raises(ConfigError) as caught:
        load_revocations(path)
    assert "revocations.json: cannot read" in str(caught.value)
