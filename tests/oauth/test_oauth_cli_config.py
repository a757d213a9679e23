"""`wsgw keys init` and `wsgw token` on real config files, through the real loaders."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wsgw.config.loader")

from wsgw.cli import main  # noqa: E402
from wsgw.oauth.endpoint import ClientRecord, handle_token_request  # noqa: E402
from wsgw.oauth.keys import load_signing_key  # noqa: E402
from wsgw.oauth.tokens import TokenIssuer, TokenVerifier  # noqa: E402

ISSUER = "https://gw.test"
SECRET = "s3cret"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    config = tmp_path / "wsgw.yaml"
    config.write_text(
        "gateway:\n"
        "  subscriptions_file: subscriptions.yaml\n"
        "security:\n"
        "  signing_key_file: private/signing.pem\n"  # relative to the config file
        "  token_ttl_s: 120\n"
        f"  issuer: {ISSUER}\n"
    )
    (tmp_path / "subscriptions.yaml").write_text(
        "applications:\n"
        "  - name: weather\n"
        "    keys:\n"
        "      production:\n"
        "        consumer_key: ck-prod\n"
        f"        consumer_secret_sha256: {hashlib.sha256(SECRET.encode()).hexdigest()}\n"
    )
    return config


def test_keys_init_then_token(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    key_file = tmp_path / "private" / "signing.pem"
    assert main(["keys", "init", "-c", str(config_file)]) == 0
    assert str(key_file) in capsys.readouterr().out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700

    assert main(["token", "weather", "-c", str(config_file)]) == 0
    out, err = capsys.readouterr()
    claims = TokenVerifier(load_signing_key(key_file), ISSUER).verify(out.strip())
    assert (claims.application, claims.key_type, claims.consumer_key) == (
        "weather",
        "PRODUCTION",
        "ck-prod",
    )
    assert claims.expires_at - claims.issued_at == 120
    assert "expires in 120s" in err


def test_token_errors_on_real_files(config_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "init", "-c", str(config_file)]) == 0
    capsys.readouterr()
    assert main(["token", "weather", "--key-type", "sandbox", "-c", str(config_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "wsgw keys generate weather --key-type sandbox" in err
    assert main(["token", "nobody", "-c", str(config_file)]) == 2
    assert "wsgw app create nobody" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "wsgw.yaml"
    config.write_text("security:\n  token_ttl_s: zero\n")
    assert main(["keys", "init", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "wsgw.yaml" in err and "token_ttl_s" in err
    assert not (tmp_path / "keys").exists()


def test_token_stdout_is_only_the_token(config_file: Path, tmp_path: Path) -> None:
    """What `TOKEN=$(wsgw token weather)` captures, in a real process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = [sys.executable, "-m", "wsgw"]
    subprocess.run(
        [*run, "keys", "init", "-c", str(config_file)],
        check=True,
        env=env,
        capture_output=True,
        timeout=30,
    )
    done = subprocess.run(
        [*run, "token", "weather", "-c", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    token = done.stdout.strip()
    key = load_signing_key(tmp_path / "private" / "signing.pem")
    assert TokenVerifier(key, ISSUER).verify(token).application == "weather"
    assert token not in done.stderr


def test_endpoint_with_records_from_real_subscriptions(config_file: Path) -> None:
    """The consumer secret hash format of subscriptions.yaml is what the endpoint checks."""
    import base64

    from wsgw.config import load_config, load_subscriptions

    assert main(["keys", "init", "-c", str(config_file)]) == 0
    config = load_config(config_file)
    subs = load_subscriptions(config.gateway.subscriptions_file, config)
    records = {
        keys.consumer_key: ClientRecord(app.name, kind.upper(), keys.consumer_secret_sha256)
        for app in subs.applications
        for kind in ("production", "sandbox")
        if (keys := getattr(app.keys, kind)) is not None
    }
    issuer = TokenIssuer(
        load_signing_key(config.security.signing_key_file),
        config.security.issuer,
        config.security.token_ttl_s,
    )
    auth = "Basic " + base64.b64encode(f"ck-prod:{SECRET}".encode()).decode()
    status, _, body = handle_token_request(
        "POST",
        {"content-type": "application/x-www-form-urlencoded", "authorization": auth},
        b"grant_type=client_credentials",
        records.get,
        issuer,
    )
    assert status == 200, body
