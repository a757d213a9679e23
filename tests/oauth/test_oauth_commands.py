"""`wsgw keys init` and `wsgw token`, through `wsgw.cli.main`, on real config files read by
the real loaders (written per test in tmp_path)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from wsgw.cli import main
from wsgw.config import GatewayConfig, Subscriptions, load_config, load_subscriptions
from wsgw.errors import ConfigError
from wsgw.oauth.commands import CommandError, issue_token_for
from wsgw.oauth.keys import generate_signing_key, load_signing_key
from wsgw.oauth.tokens import TokenVerifier

ISSUER = "https://gw.test"
SUBSCRIPTIONS = {
    "applications": [
        {
            "name": "weather",
            "keys": {
                "production": {"consumer_key": "ck-prod", "consumer_secret_sha256": "00" * 32}
            },
        },
        {"name": "bare"},
    ]
}


def _write_config(folder: Path, key_file: Path, ttl: int = 600) -> Path:
    """wsgw.yaml (with subscriptions.yaml beside it) signing with `key_file`."""
    raw = {"security": {"signing_key_file": str(key_file), "token_ttl_s": ttl, "issuer": ISSUER}}
    config = folder / "wsgw.yaml"
    config.write_text(yaml.safe_dump(raw))
    (folder / "subscriptions.yaml").write_text(yaml.safe_dump(SUBSCRIPTIONS))
    return config


def _config(key_file: Path, ttl: int = 600) -> GatewayConfig:
    return load_config(_write_config(key_file.parent.parent, key_file, ttl))


def _subs(config: GatewayConfig) -> Subscriptions:
    return load_subscriptions(config.gateway.subscriptions_file, config)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "signing.pem"


@pytest.fixture
def config_file(tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """wsgw.yaml in tmp_path, which is also the working directory (the default -c path)."""
    monkeypatch.chdir(tmp_path)
    return _write_config(tmp_path, key_file)


def _break(config_file: Path) -> str:
    config_file.write_text("security:\n  token_ttl_s: soon\n")
    return str(config_file)


# issue_token_for ---------------------------------------------------------------------


def test_issue_token_for(key_file: Path) -> None:
    generate_signing_key(key_file)
    config = _config(key_file, 321)
    token, expires_in = issue_token_for(config, _subs(config), "weather", "production")
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
        config = _config(key_file)
        issue_token_for(config, _subs(config), "nope", "production")


@pytest.mark.parametrize(("name", "kind"), [("weather", "sandbox"), ("bare", "production")])
def test_issue_token_for_missing_keys(key_file: Path, name: str, kind: str) -> None:
    generate_signing_key(key_file)
    with pytest.raises(CommandError, match=f"wsgw keys generate {name} --key-type {kind}"):
        config = _config(key_file)
        issue_token_for(config, _subs(config), name, kind)


def test_issue_token_for_without_signing_key(key_file: Path) -> None:
    with pytest.raises(CommandError, match="wsgw keys init"):
        config = _config(key_file)
        issue_token_for(config, _subs(config), "weather", "production")


def test_issue_token_for_bad_signing_key(key_file: Path) -> None:
    key_file.parent.mkdir()
    key_file.write_text("garbage")
    with pytest.raises(ConfigError) as info:
        config = _config(key_file)
        issue_token_for(config, _subs(config), "weather", "production")
    assert str(key_file) in str(info.value)


# wsgw keys init --------------------------------------------------------------------


def test_keys_init(config_file: Path, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init", "-c", "wsgw.yaml"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"created ed25519 signing key: {key_file}"
    assert err == ""
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_signing_key(key_file).algorithm == "EdDSA"


def test_keys_init_rsa(config_file: Path, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init", "--algorithm", "rsa"]) == 0
    assert "rsa" in capsys.readouterr().out
    assert load_signing_key(key_file).algorithm == "RS256"


def test_keys_init_is_idempotent(
    config_file: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["keys", "init"]) == 0
    before = key_file.read_bytes()
    capsys.readouterr()
    assert main(["keys", "init", "--algorithm", "rsa"]) == 0
    out, _ = capsys.readouterr()
    assert "already exists" in out and str(key_file) in out
    assert key_file.read_bytes() == before


def test_keys_init_force(config_file: Path, key_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init"]) == 0
    before = load_signing_key(key_file).key_id
    assert main(["keys", "init", "--force"]) == 0
    assert load_signing_key(key_file).key_id != before
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keys_init_bad_config(
    config_file: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    _break(config_file)
    assert main(["keys", "init", "-c", "wsgw.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["wsgw.yaml:2: Expected int, got str - at $.security.token_ttl_s"]
    assert not key_file.exists()


def test_keys_init_unwritable(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _write_config(tmp_path, blocker / "signing.pem")  # parent is a regular file
    assert main(["keys", "init"]) == 2
    assert "cannot write signing key" in capsys.readouterr().err


# wsgw token ------------------------------------------------------------------------


def test_token_prints_only_the_token(
    config_file: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    generate_signing_key(key_file)
    assert main(["token", "weather", "-c", "wsgw.yaml"]) == 0
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
    config_file: Path, key_file: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str
) -> None:
    generate_signing_key(key_file)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err


def test_token_without_signing_key(config_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["token", "weather"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "wsgw keys init" in err


def test_token_bad_config(config_file: Path, capsys: pytest.CaptureFixture) -> None:
    _break(config_file)
    assert main(["token", "weather"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("wsgw.yaml:2: ")


def test_token_with_unreadable_signing_key(
    config_file: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    key_file.parent.mkdir()
    key_file.write_text("garbage")
    assert main(["token", "weather"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(key_file) in err
