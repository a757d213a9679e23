"""`wsgw keys init` and `wsgw token`, through `wsgw.cli.main`.

The config loaders are replaced by stand-ins returning objects of the documented shape, so
these tests exercise the commands before (and independently of) the config package;
test_oauth_cli_config.py runs the same commands on real files through the real loaders.
"""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

import wsgw.config
from wsgw.cli import main
from wsgw.errors import ConfigError
from wsgw.oauth.commands import CommandError, issue_token_for
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.tokens import TokenVerifier

ISSUER = "https://gw.test"


def _config(key_file: Path, ttl: int = 600) -> SimpleNamespace:
    return SimpleNamespace(
        security=SimpleNamespace(signing_key_file=str(key_file), token_ttl_s=ttl, issuer=ISSUER),
        gateway=SimpleNamespace(subscriptions_file="/nonexistent/subscriptions.yaml"),
    )


def _subs() -> SimpleNamespace:
    keys = SimpleNamespace(consumer_key="ck-prod", consumer_secret_sha256="00" * 32)
    return SimpleNamespace(
        applications=[
            SimpleNamespace(name="weather", keys=SimpleNamespace(production=keys, sandbox=None)),
            SimpleNamespace(name="bare", keys=SimpleNamespace(production=None, sandbox=None)),
        ]
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "signing.pem"


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> dict:
    """Stand-ins for wsgw.config.load_config / load_subscriptions; `calls` records args."""
    state: dict = {"config": _config(key_file), "error": None, "calls": []}

    def load_config(path):
        state["calls"].append(("config", str(path)))
        if state["error"]:
            raise ConfigError(state["error"])
        return state["config"]

    def load_subscriptions(path, config):
        state["calls"].append(("subscriptions", str(path)))
        assert config is state["config"]
        return _subs()

    monkeypatch.setattr(wsgw.config, "load_config", load_config, raising=False)
    monkeypatch.setattr(wsgw.config, "load_subscriptions", load_subscriptions, raising=False)
    return state


# issue_token_for ---------------------------------------------------------------------


def test_issue_token_for(key_file: Path) -> None:
    generate_signing_key(key_file)
    token, expires_in = issue_token_for(_config(key_file, 321), _subs(), "weather", "production")
    assert expires_in == 321
    claims = TokenVerifier(load_signing_key(key_file), ISSUER).verify(token)
    assert (claims.application, claims.key_type, claims.consumer_key) == (
        "weather",
        "PRODUCTION",
        "ck-prod",
    )
    assert claims.expires_at - claims.issued_at == 321


def test_issue_token_for_unknown_application(key_file: Path) -> None:
    generate_signing_key(key_file)
    with pytest.raises(CommandError, match="unknown application 'nope'.*wsgw app create nope"):
        issue_token_for(_config(key_file), _subs(), "nope", "production")


@pytest.mark.parametrize(("name", "kind"), [("weather", "sandbox"), ("bare", "production")])
def test_issue_token_for_missing_keys(key_file: Path, name: str, kind: str) -> None:
    generate_signing_key(key_file)
    with pytest.raises(CommandError, match=f"wsgw keys generate {name} --key-type {kind}"):
        issue_token_for(_config(key_file), _subs(), name, kind)


def test_issue_token_for_without_signing_key(key_file: Path) -> None:
    with pytest.raises(CommandError, match="wsgw keys init"):
        issue_token_for(_config(key_file), _subs(), "weather", "production")


def test_issue_token_for_bad_signing_key(key_file: Path) -> None:
    key_file.parent.mkdir()
    key_file.write_text("garbage")
    with pytest.raises(ConfigError) as info:
        issue_token_for(_config(key_file), _subs(), "weather", "production")
    assert str(key_file) in str(info.value)


# wsgw keys init --------------------------------------------------------------------


def test_keys_init(loaders: dict, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init", "-c", "gw.yaml"]) == 0
    assert loaders["calls"] == [("config", "gw.yaml")]
    out, err = capsys.readouterr()
    assert out.strip() == f"created ed25519 signing key: {key_file}"
    assert err == ""
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_signing_key(key_file).algorithm == "EdDSA"


def test_keys_init_rsa(loaders: dict, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init", "--algorithm", "rsa"]) == 0
    assert "rsa" in capsys.readouterr().out
    assert load_signing_key(key_file).algorithm == "RS256"


def test_keys_init_is_idempotent(
    loaders: dict, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["keys", "init"]) == 0
    before = key_file.read_bytes()
    capsys.readouterr()
    assert main(["keys", "init", "--algorithm", "rsa"]) == 0
    out, _ = capsys.readouterr()
    assert "already exists" in out and str(key_file) in out
    assert key_file.read_bytes() == before


def test_keys_init_force(loaders: dict, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init"]) == 0
    before = load_signing_key(key_file).key_id
    assert main(["keys", "init", "--force"]) == 0
    assert load_signing_key(key_file).key_id != before
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keys_init_bad_config(loaders: dict, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    loaders["error"] = ["gw.yaml:3: Expected int - at $.security.token_ttl_s", "second"]
    assert main(["keys", "init", "-c", "gw.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == loaders["error"]
    assert not key_file.exists()


def test_keys_init_unwritable(loaders: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    loaders["config"] = _config(blocker / "signing.pem")  # parent is a regular file
    assert main(["keys", "init"]) == 2
    assert "cannot write signing key" in capsys.readouterr().err


# wsgw token ------------------------------------------------------------------------


def test_token_prints_only_the_token(
    loaders: dict, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    generate_signing_key(key_file)
    assert main(["token", "weather", "-c", "gw.yaml"]) == 0
    assert loaders["calls"] == [
        ("config", "gw.yaml"),
        ("subscriptions", "/nonexistent/subscriptions.yaml"),
    ]
    out, err = capsys.readouterr()
    token = out.removesuffix("\n")
    assert "\n" not in token and " " not in token  # TOKEN=$(wsgw token …) gets just this
    claims = TokenVerifier(load_signing_key(key_file), ISSUER).verify(token)
    assert (claims.application, claims.key_type) == ("weather", "PRODUCTION")
    assert "expires in 600s" in err
    assert token not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["token", "nope"], "wsgw app create nope"),
        (
            ["token", "weather", "--key-type", "sandbox"],
            "wsgw keys generate weather --key-type sandbox",
        ),
        (["token", "bare"], "wsgw keys generate bare --key-type production"),
    ],
)
def test_token_errors(
    loaders: dict, key_file: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str
) -> None:
    generate_signing_key(key_file)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err


def test_token_without_signing_key(loaders: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["token", "weather"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "wsgw keys init" in err


def test_token_bad_config(loaders: dict, capsys: pytest.CaptureFixture) -> None:
    loaders["error"] = ["gw.yaml: broken"]
    assert main(["token", "weather"]) == 2
    assert capsys.readouterr() == ("", "gw.yaml: broken\n")


def test_token_with_unreadable_signing_key(
    loaders: dict, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    key_file.parent.mkdir()
    key_file.write_text("garbage")
    assert main(["token", "weather"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(key_file) in err
