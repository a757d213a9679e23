"""Developer-portal commands: the Python functions and `python -m wsgw ...` processes."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wsgw.config import GatewayConfig, load_config, load_subscriptions
from wsgw.errors import ConfigError
from wsgw.portal import create_app, generate_keys, hash_secret, subscribe

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
gateway:
  subscriptions_file: data/subscriptions.yaml
tiers:
  Gold: {messages_per_minute: 600}
  Silver: {messages_per_minute: 60}
  Unlimited: {}
apis:
  - name: Chat
    context: /chat
    version: "1.0"
    endpoints: {production: "ws://127.0.0.1:7001"}
    tiers: [Gold, Silver]
"""

STATUSES = ["CREATED", "BLOCKED", "DEPRECATED", "RETIRED"]
for i, status in enumerate(STATUSES):
    CONFIG += (
        f"  - {{name: S{i}, context: /s{i}, version: '1', status: {status},"
        f" tiers: [Gold], endpoints: {{production: 'ws://h'}}}}\n"
    )


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    (tmp_path / "data").mkdir()
    (tmp_path / "wsgw.yaml").write_text(CONFIG)
    return load_config(tmp_path / "wsgw.yaml")


def subs_path(config: GatewayConfig) -> Path:
    return Path(config.gateway.subscriptions_file)


def wsgw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgw", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )


# --- functions --------------------------------------------------------------------------


def test_create_app_creates_private_file(config: GatewayConfig) -> None:
    assert not subs_path(config).exists()
    create_app(config, "MyApp")
    assert stat.S_IMODE(subs_path(config).stat().st_mode) == 0o600
    subs = load_subscriptions(subs_path(config), config)
    assert [a.name for a in subs.applications] == ["MyApp"]
    create_app(config, "Other")
    assert [a.name for a in load_subscriptions(subs_path(config)).applications] == [
        "MyApp",
        "Other",
    ]


def test_create_app_twice_fails_and_leaves_file(config: GatewayConfig) -> None:
    create_app(config, "MyApp")
    before = subs_path(config).read_bytes()
    with pytest.raises(ValueError, match="application 'MyApp' already exists"):
        create_app(config, "MyApp")
    assert subs_path(config).read_bytes() == before


@pytest.mark.parametrize("name", ["my app", "a:b", "", "x" * 65])
def test_create_app_bad_name(config: GatewayConfig, name: str) -> None:
    with pytest.raises(ValueError, match="invalid application name"):
        create_app(config, name)
    assert not subs_path(config).exists()


def test_generate_keys_stores_only_the_hash(config: GatewayConfig) -> None:
    create_app(config, "MyApp")
    key, secret = generate_keys(config, "MyApp", "production")
    assert len(key) >= 20 and len(secret) >= 40
    text = subs_path(config).read_text()
    assert secret not in text
    assert hashlib.sha256(secret.encode()).hexdigest() in text
    keys = load_subscriptions(subs_path(config), config).applications[0].keys
    assert keys.production is not None and keys.sandbox is None
    assert keys.production.consumer_key == key
    assert keys.production.consumer_secret_sha256 == hash_secret(secret)


def test_regenerate_replaces_key_and_hash(config: GatewayConfig) -> None:
    create_app(config, "MyApp")
    sandbox = generate_keys(config, "MyApp", "sandbox")
    old_key, old_secret = generate_keys(config, "MyApp", "production")
    new_key, new_secret = generate_keys(config, "MyApp", "production")
    assert (new_key, new_secret) != (old_key, old_secret)
    text = subs_path(config).read_text()
    assert hash_secret(old_secret) not in text and old_key not in text
    keys = load_subscriptions(subs_path(config), config).applications[0].keys
    assert keys.production is not None and keys.sandbox is not None
    assert keys.production.consumer_secret_sha256 == hash_secret(new_secret)
    assert keys.sandbox.consumer_key == sandbox[0]  # the other key type is untouched
    assert keys.sandbox.consumer_secret_sha256 == hash_secret(sandbox[1])


def test_generate_keys_errors(config: GatewayConfig) -> None:
    with pytest.raises(ValueError, match="no application 'Ghost'"):
        generate_keys(config, "Ghost", "production")
    create_app(config, "MyApp")
    with pytest.raises(ValueError, match="key type must be one of production, sandbox"):
        generate_keys(config, "MyApp", "PRODUCTION")


def test_subscribe_then_change_tier(config: GatewayConfig) -> None:
    create_app(config, "MyApp")
    subscribe(config, "MyApp", "Chat", "1.0", "Gold")
    subscribe(config, "MyApp", "Chat", "1.0", "Silver")
    [sub] = load_subscriptions(subs_path(config), config).applications[0].subscriptions
    assert (sub.api, sub.version, sub.tier, sub.status) == ("Chat", "1.0", "Silver", "ACTIVE")


def test_resubscribe_keeps_blocked_status(config: GatewayConfig) -> None:
    create_app(config, "MyApp")
    subscribe(config, "MyApp", "Chat", "1.0", "Gold")
    path = subs_path(config)
    path.write_text(path.read_text().replace("status: ACTIVE", "status: BLOCKED"))
    subscribe(config, "MyApp", "Chat", "1.0", "Silver")
    [sub] = load_subscriptions(path, config).applications[0].subscriptions
    assert (sub.tier, sub.status) == ("Silver", "BLOCKED")


@pytest.mark.parametrize("index", range(len(STATUSES)))
def test_subscribe_only_to_published(config: GatewayConfig, index: int) -> None:
    create_app(config, "MyApp")
    before = subs_path(config).read_bytes()
    with pytest.raises(ValueError, match=f"API S{index}:1 is {STATUSES[index]}: only a PUBLISHED"):
        subscribe(config, "MyApp", f"S{index}", "1", "Gold")
    assert subs_path(config).read_bytes() == before


@pytest.mark.parametrize(
    ("app", "api", "version", "tier", "message"),
    [
        ("MyApp", "Chat", "1.0", "Unlimited", r"does not offer tier 'Unlimited' \(offers: Gold"),
        ("MyApp", "Chat", "2.0", "Gold", r"no API Chat:2.0 in the gateway config \(versions: 1.0"),
        ("MyApp", "Mail", "1.0", "Gold", r"no API Mail:1.0 in the gateway config$"),
        ("Ghost", "Chat", "1.0", "Gold", r"no application 'Ghost'"),
    ],
)
def test_subscribe_refused(
    config: GatewayConfig, app: str, api: str, version: str, tier: str, message: str
) -> None:
    create_app(config, "MyApp")
    before = subs_path(config).read_bytes()
    with pytest.raises(ValueError, match=message):
        subscribe(config, app, api, version, tier)
    assert subs_path(config).read_bytes() == before


def test_invalid_existing_file_is_not_edited(config: GatewayConfig) -> None:
    path = subs_path(config)
    path.write_text("applications:\n  - name: A\n    tier: Iron\n")
    with pytest.raises(ConfigError) as info:
        create_app(config, "B")
    assert info.value.problems == [
        f"{path}:3: tier 'Iron' is not defined in the gateway config"
        " (defined: Gold, Silver, Unlimited) - at $.applications[0].tier"
    ]
    assert path.read_text() == "applications:\n  - name: A\n    tier: Iron\n"


def test_write_failure_leaves_file_valid(
    config: GatewayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_app(config, "MyApp")
    before = subs_path(config).read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ConfigError, match="cannot write: Input/output error"):
        generate_keys(config, "MyApp", "production")
    assert subs_path(config).read_bytes() == before
    assert sorted(p.name for p in subs_path(config).parent.iterdir()) == ["subscriptions.yaml"]


# --- commands, as real processes ---------------------------------------------------------


def test_cli_flow(config: GatewayConfig, tmp_path: Path) -> None:
    done = wsgw("app", "create", "MyApp", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "created application 'MyApp' in data/subscriptions.yaml\n"

    done = wsgw("keys", "generate", "MyApp", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["consumer_key", "consumer_secret"]
    key, secret = (line.split(": ", 1)[1] for line in lines)
    assert "shown only this once" in done.stderr and secret not in done.stderr
    stored = yaml.safe_load(subs_path(config).read_text())["applications"][0]["keys"]
    assert stored == {
        "production": {"consumer_key": key, "consumer_secret_sha256": hash_secret(secret)}
    }
    assert secret not in subs_path(config).read_text()

    done = wsgw(
        "keys", "generate", "MyApp", "--key-type", "sandbox", "-c", "wsgw.yaml", cwd=tmp_path
    )
    assert done.returncode == 0
    assert set(yaml.safe_load(subs_path(config).read_text())["applications"][0]["keys"]) == {
        "production",
        "sandbox",
    }

    done = wsgw("subscribe", "MyApp", "Chat:1.0", "--tier", "Gold", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "subscribed 'MyApp' to Chat:1.0 at tier Gold\n")
    done = wsgw(
        "subscribe", "MyApp", "Chat:1.0", "--tier", "Silver", "-c", "wsgw.yaml", cwd=tmp_path
    )
    assert (done.returncode, done.stdout) == (
        0,
        "changed 'MyApp' subscription to Chat:1.0: tier Gold → Silver\n",
    )
    done = wsgw("validate", "-c", "wsgw.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 application, 1 subscription" in done.stdout


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["app", "create", "MyApp"], "error: application 'MyApp' already exists\n"),
        (
            ["keys", "generate", "Ghost"],
            "error: no application 'Ghost' (create it with: wsgw app create Ghost)\n",
        ),
        (
            ["subscribe", "MyApp", "Chat", "--tier", "Gold"],
            "error: expected API:VERSION, e.g. Chat:1.0, not 'Chat'\n",
        ),
        (
            ["subscribe", "MyApp", "S0:1", "--tier", "Gold"],
            "error: API S0:1 is CREATED: only a PUBLISHED API can be subscribed to\n",
        ),
        (
            ["subscribe", "MyApp", "Chat:1.0", "--tier", "Unlimited"],
            "error: API Chat:1.0 does not offer tier 'Unlimited' (offers: Gold, Silver)\n",
        ),
    ],
)
def test_cli_errors_exit_2_and_leave_file(
    config: GatewayConfig, tmp_path: Path, args: list[str], stderr: str
) -> None:
    create_app(config, "MyApp")
    before = subs_path(config).read_bytes()
    done = wsgw(*args, "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", stderr)
    assert subs_path(config).read_bytes() == before


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "wsgw.yaml").write_text("tiers: {Gold: {burst: -1}}\n")
    done = wsgw("app", "create", "MyApp", "-c", "wsgw.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "wsgw.yaml:1: Expected int >= 0 - at $.tiers.Gold.burst\n"
    assert not (tmp_path / "subscriptions.yaml").exists()


def test_concurrent_commands_lose_no_update(config: GatewayConfig, tmp_path: Path) -> None:
    """Each command reads, changes and replaces the file; the lock serialises them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    names = [f"App{i}" for i in range(8)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "wsgw", "app", "create", name, "-c", "wsgw.yaml"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    subs = load_subscriptions(subs_path(config), config)
    assert sorted(a.name for a in subs.applications) == names
