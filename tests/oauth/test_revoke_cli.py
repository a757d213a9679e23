"""`wsgw revoke`, through `wsgw.cli.main` and once as `python -m wsgw`, on real config files,
a real signing key and real tokens."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import redis
import yaml

from wsgw.cli import main
from wsgw.config import load_config
from wsgw.oauth import commands
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.revocation import Revocation, RevocationList, load_revocations
from wsgw.oauth.tokens import TokenClaims, TokenIssuer, TokenVerifier

ISSUER = "https://gw.test"
TTL = 600
SUBSCRIPTIONS = {
    "applications": [
        {
            "name": "weather",
            "keys": {
                "production": {"consumer_key": "ck-prod", "consumer_secret_sha256": "00" * 32}
            },
        },
    ]
}
EVENTS_MODULE = "wsgw.pipeline.cluster.events"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """wsgw.yaml with subscriptions.yaml and a signing key beside it."""
    generate_signing_key(tmp_path / "keys" / "signing.pem")
    (tmp_path / "subscriptions.yaml").write_text(yaml.safe_dump(SUBSCRIPTIONS))
    return _write_config(tmp_path)


def _write_config(folder: Path, **gateway: object) -> Path:
    raw: dict[str, object] = {
        "security": {"signing_key_file": "keys/signing.pem", "token_ttl_s": TTL, "issuer": ISSUER}
    }
    if gateway:
        raw["gateway"] = gateway
    path = folder / "wsgw.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def issuer(tmp_path: Path, config_file: Path) -> TokenIssuer:
    return TokenIssuer(load_signing_key(tmp_path / "keys" / "signing.pem"), ISSUER, TTL)


def _revoke(config_file: Path, *args: str) -> int:
    return main(["revoke", "-c", str(config_file), *args])


def _entries(config_file: Path) -> list[Revocation]:
    return load_revocations(load_config(config_file).security.revocations_file)


def _claims(config_file: Path, token: str) -> TokenClaims:
    key = load_signing_key(config_file.parent / "keys" / "signing.pem")
    claims = TokenVerifier(key, ISSUER).claims_for_revocation(token)
    assert claims is not None
    return claims


# --- each mode --------------------------------------------------------------------------


def test_jti(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time())
    assert _revoke(config_file, "--jti", "abc123") == 0
    out, err = capsys.readouterr()
    [entry] = _entries(config_file)
    assert (entry.kind, entry.value, entry.issued_before) == ("jti", "abc123", 0)
    assert before + TTL <= entry.expires_at <= int(time.time()) + TTL
    assert out.startswith("revoked token 'abc123' (kept until ") and out.count("\n") == 1
    assert err == ""


def test_token(config_file: Path, issuer: TokenIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    token, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")
    claims = _claims(config_file, token)
    assert _revoke(config_file, "--token", token) == 0
    out, err = capsys.readouterr()
    assert _entries(config_file) == [Revocation("jti", claims.jti, claims.expires_at)]
    assert f"revoked token '{claims.jti}' of application 'weather'" in out
    assert token not in out + err
    # Again: nothing new, said so, still 0.
    assert _revoke(config_file, "--token", token) == 0
    assert capsys.readouterr().out.startswith("already revoked: token ")


def test_token_from_stdin(
    config_file: Path,
    issuer: TokenIssuer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert _revoke(config_file, "--token", "-") == 0
    assert [e.value for e in _entries(config_file)] == [_claims(config_file, token).jti]
    assert token not in "".join(capsys.readouterr())


def test_invalid_token_is_refused(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_signing_key(tmp_path / "other.pem")
    other = TokenIssuer(load_signing_key(tmp_path / "other.pem"), ISSUER, TTL)
    forged, _ = other.issue("weather", "PRODUCTION", "ck-prod")
    for token in (forged, "not-a-token"):
        assert _revoke(config_file, "--token", token) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "--token is not a token of this gateway" in err
        assert token not in err
    assert not (tmp_path / "revocations.json").exists()


def test_expired_token_needs_no_revocation(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = load_signing_key(tmp_path / "keys" / "signing.pem")
    old = TokenIssuer(key, ISSUER, TTL, clock=lambda: time.time() - 2 * TTL)
    token, _ = old.issue("weather", "PRODUCTION", "ck-prod")
    assert _revoke(config_file, "--token", token) == 0
    out, _ = capsys.readouterr()
    assert "expired already" in out and "nothing to revoke" in out
    assert _entries(config_file) == []


def test_app_revokes_tokens_up_to_now_and_waits_for_the_next_second(
    config_file: Path, issuer: TokenIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")
    started = time.time()
    assert _revoke(config_file, "--app", "weather") == 0
    returned = time.time()
    right_after, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")

    [entry] = _entries(config_file)
    assert (entry.kind, entry.value) == ("application", "weather")
    assert int(started) <= entry.issued_before <= int(returned)
    assert entry.expires_at == entry.issued_before + TTL
    # It returned in a later second than the one it revoked up to, and without dawdling.
    assert returned >= entry.issued_before + 1
    assert returned - started < 2.0  # the wait is under one second; the rest is slack
    revocations = RevocationList(_entries(config_file))
    assert revocations.revokes(_claims(config_file, earlier)) is not None
    assert revocations.revokes(_claims(config_file, right_after)) is None
    out = capsys.readouterr().out
    assert out.startswith("revoked tokens of application 'weather' issued up to ")
    assert "(kept until " in out and out.count("\n") == 1


def test_app_must_exist(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert _revoke(config_file, "--app", "nosuch") == 2
    assert time.monotonic() - started < 1  # a refusal does not wait
    out, err = capsys.readouterr()
    assert out == ""
    assert "unknown application 'nosuch'" in err and "subscriptions.yaml" in err
    assert not (tmp_path / "revocations.json").exists()


def test_consumer_key_need_not_be_current(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key replaced by `wsgw keys generate` is not in the file, and its tokens still live."""
    started = time.time()
    assert _revoke(config_file, "--consumer-key", "ck-replaced-long-ago") == 0
    returned = time.time()
    [entry] = _entries(config_file)
    assert (entry.kind, entry.value) == ("consumer_key", "ck-replaced-long-ago")
    assert int(started) <= entry.issued_before
    assert returned >= entry.issued_before + 1  # waited for the next second, as --app does
    assert capsys.readouterr().out.startswith(
        "revoked tokens of consumer key 'ck-replaced-long-ago' issued up to "
    )


def test_wait_past_second_sleeps_until_the_next_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.25]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds - 0.1 if len(naps) == 1 else seconds  # the first nap wakes early

    monkeypatch.setattr(commands.time, "sleep", sleep)
    commands.wait_past_second(1000, clock=lambda: now[0])
    assert now[0] >= 1001
    assert naps == pytest.approx([0.75, 0.1])
    commands.wait_past_second(999, clock=lambda: now[0])  # past already: no nap
    assert len(naps) == 2


def test_jti_and_token_do_not_wait(config_file: Path) -> None:
    started = time.monotonic()
    for i in range(3):
        assert _revoke(config_file, "--jti", f"j{i}") == 0
    assert time.monotonic() - started < 1.5  # three waits would take at least ~2 s


# --- arguments, files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["--jti", "a", "--app", "weather"], ["--consumer-key", "k", "--token", "t"]],
)
def test_exactly_one_target(config_file: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _revoke(config_file, *args)
    assert caught.value.code == 2


@pytest.mark.parametrize("option", ["--jti", "--consumer-key", "--token"])
def test_empty_value_is_refused(
    config_file: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _revoke(config_file, option, "") == 2
    assert "must not be empty" in capsys.readouterr().err


def test_file_is_0600_and_merges_with_what_is_there(config_file: Path, tmp_path: Path) -> None:
    assert _revoke(config_file, "--jti", "one") == 0
    assert _revoke(config_file, "--jti", "two") == 0
    path = tmp_path / "revocations.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(e.value for e in load_revocations(path)) == ["one", "two"]


def test_revocations_file_from_the_config(tmp_path: Path, config_file: Path) -> None:
    raw = yaml.safe_load(config_file.read_text())
    raw["security"]["revocations_file"] = "state/revoked.json"
    config_file.write_text(yaml.safe_dump(raw))
    (tmp_path / "state").mkdir()
    assert _revoke(config_file, "--jti", "abc") == 0
    assert [e.value for e in load_revocations(tmp_path / "state" / "revoked.json")] == ["abc"]


def test_malformed_revocations_file(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "revocations.json").write_text('{"revocations": [{"kind": "jti"}]}')
    assert _revoke(config_file, "--jti", "abc") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "revocations.json: invalid revocation list: " in err and "$.revocations[0]" in err


# --- the cluster ------------------------------------------------------------------------


def _fake_events(monkeypatch: pytest.MonkeyPatch, publish) -> None:
    module = types.ModuleType(EVENTS_MODULE)
    module.publish_revocations_sync = publish  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, EVENTS_MODULE, module)


def test_published_to_the_cluster_with_redis(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "redis://127.0.0.1:6399/0"
    _write_config(tmp_path, redis_url=url)
    calls: list[tuple[str, list[Revocation], str]] = []

    def publish(redis_url: str, entries: list[Revocation], prefix: str) -> None:
        calls.append((redis_url, entries, prefix))

    _fake_events(monkeypatch, publish)
    assert _revoke(config_file, "--jti", "abc") == 0
    assert calls == [(url, _entries(config_file), "wsgw")]  # gateway.redis_prefix


def test_unreachable_redis_is_a_warning(
    tmp_path: Path,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write_config(tmp_path, redis_url="redis://:hunter2@127.0.0.1:6399/0")

    def unreachable(redis_url: str, entries: list[Revocation], prefix: str) -> None:
        raise redis.ConnectionError(f"Error 111 connecting to {redis_url}. Connection refused.")

    _fake_events(monkeypatch, unreachable)
    assert _revoke(config_file, "--app", "weather") == 0
    out, err = capsys.readouterr()
    assert out.startswith("revoked tokens of application 'weather'")
    assert err.startswith("warning: not published to the cluster (")
    assert "revocations.json" in err and "reconnects" in err
    assert "hunter2" not in err
    assert [e.value for e in _entries(config_file)] == ["weather"]


def test_unreachable_real_redis(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real publisher, against a port where nothing listens: a warning, exit 0."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _write_config(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    assert _revoke(config_file, "--jti", "abc") == 0
    _, err = capsys.readouterr()
    assert err.startswith("warning: not published to the cluster (")
    assert [e.value for e in _entries(config_file)] == ["abc"]


def test_without_redis_nothing_is_published(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def publish(redis_url: str, entries: list[Revocation], prefix: str) -> None:
        raise AssertionError("published without gateway.redis_url")

    _fake_events(monkeypatch, publish)
    assert _revoke(config_file, "--jti", "abc") == 0


# --- a real process ---------------------------------------------------------------------


def test_python_m_wsgw_revoke(config_file: Path, issuer: TokenIssuer) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    earlier, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")
    done = subprocess.run(
        [sys.executable, "-m", "wsgw", "revoke", "-c", str(config_file), "--app", "weather"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    returned = time.time()
    right_after, _ = issuer.issue("weather", "PRODUCTION", "ck-prod")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("revoked tokens of application 'weather' issued up to ")
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    [entry] = _entries(config_file)
    assert returned >= entry.issued_before + 1
    revocations = RevocationList([entry])
    assert revocations.revokes(_claims(config_file, earlier)) is not None
    assert revocations.revokes(_claims(config_file, right_after)) is None
