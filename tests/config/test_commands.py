"""`wsgw validate` and `wsgw schema`, run as real processes."""

from __future__ import annotations

import json
from pathlib import Path

from wsgw.oauth.keys import generate_signing_key

from .config_helpers import GOOD_CONFIG, GOOD_SUBSCRIPTIONS, run_wsgw, write


def test_validate_ok(tmp_path: Path) -> None:
    write(tmp_path / "wsgw.yaml", GOOD_CONFIG)
    write(tmp_path / "subscriptions.yaml", GOOD_SUBSCRIPTIONS)
    generate_signing_key(tmp_path / "keys" / "signing.pem")
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "wsgw.yaml: OK — 1 API (1 published), 4 tiers, 1 application, 1 subscription\n"
    )


def test_validate_refuses_what_the_gateway_would_refuse(tmp_path: Path) -> None:
    """The signing key and the revocation list are read as a reload reads them."""
    write(tmp_path / "wsgw.yaml", GOOD_CONFIG)
    write(tmp_path / "subscriptions.yaml", GOOD_SUBSCRIPTIONS)
    write(tmp_path / "keys" / "signing.pem", "not a key\n")
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "signing.pem: not a PEM private key" in done.stderr
    generate_signing_key(tmp_path / "keys" / "signing.pem", force=True)
    write(tmp_path / "revocations.json", '{"revocations": [{"kind": "jti"}]}')
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "revocations.json" in done.stderr


def test_validate_ok_counts_and_missing_files_to_create(tmp_path: Path) -> None:
    config = GOOD_CONFIG + (
        "  - name: Old\n"
        "    context: /old\n"
        '    version: "0.9"\n'
        "    status: DEPRECATED\n"
        '    endpoints: {production: "ws://127.0.0.1:7001"}\n'
    )
    write(tmp_path / "conf" / "wsgw.yaml", config)
    done = run_wsgw("validate", "-c", "conf/wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "conf/wsgw.yaml: OK — 2 APIs (1 published), 4 tiers, 0 applications, 0 subscriptions;"
        " conf/subscriptions.yaml missing: run wsgw app create NAME;"
        " signing key missing: run wsgw keys init\n"
    )


def test_validate_config_error(tmp_path: Path) -> None:
    write(tmp_path / "wsgw.yaml", GOOD_CONFIG.replace("messages_per_minute: 6}", "burst: -1}"))
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "wsgw.yaml:6: Expected int >= 0 - at $.tiers.Bronze.burst\n"


def test_validate_subscriptions_error(tmp_path: Path) -> None:
    write(tmp_path / "wsgw.yaml", GOOD_CONFIG)
    write(tmp_path / "subscriptions.yaml", GOOD_SUBSCRIPTIONS.replace("tier: Gold", "tier: Bronze"))
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "subscriptions.yaml:8: API Chat:1.0 does not offer tier 'Bronze' (offers: Gold, Silver)"
        " - at $.applications[0].subscriptions[0].tier\n"
    )


def test_validate_missing_tls_files_and_bad_subscriptions_together(tmp_path: Path) -> None:
    write(
        tmp_path / "wsgw.yaml",
        GOOD_CONFIG.replace(
            'gateway:\n  listen: "127.0.0.1:9099"\n',
            "gateway:\n  tls:\n    listen: 0.0.0.0:9443\n    cert_file: cert.pem\n"
            "    key_file: key.pem\n",
        ),
    )
    write(tmp_path / "key.pem", "present\n")
    write(tmp_path / "subscriptions.yaml", "applications:\n  - name: A\n    tier: Iron\n")
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "wsgw.yaml:4: file not found: cert.pem - at $.gateway.tls.cert_file",
        "subscriptions.yaml:3: tier 'Iron' is not defined in the gateway config"
        " (defined: Gold, Silver, Bronze, Unlimited) - at $.applications[0].tier",
    ]


def test_validate_missing_config(tmp_path: Path) -> None:
    done = run_wsgw("validate", cwd=tmp_path)  # default -c wsgw.yaml
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "wsgw.yaml: file not found\n")


def test_validate_syntax_error_is_not_a_traceback(tmp_path: Path) -> None:
    write(tmp_path / "wsgw.yaml", "gateway: [\n")
    done = run_wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("wsgw.yaml:2: YAML syntax error:")
    assert "Traceback" not in done.stderr


def test_schema(tmp_path: Path) -> None:
    done = run_wsgw("schema", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert "\n  " in done.stdout  # pretty-printed
    schema = json.loads(done.stdout)
    assert list(schema) == ["wsgw.yaml", "subscriptions.yaml"]
    config, subs = schema["wsgw.yaml"], schema["subscriptions.yaml"]
    assert config["$ref"] == "#/$defs/GatewayConfig"
    assert subs["$ref"] == "#/$defs/Subscriptions"
    tier = config["$defs"]["Tier"]["properties"]
    assert tier["on_limit"]["enum"] == ["close", "drop", "shape"]
    assert config["$defs"]["Api"]["required"] == ["name", "context", "version", "endpoints"]
    assert "pattern" in subs["$defs"]["Keys"]["properties"]["consumer_secret_sha256"]
    assert config["$defs"]["Gateway"]["additionalProperties"] is False
