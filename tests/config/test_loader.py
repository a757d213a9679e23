"""Loading the files: formats, error lines (file, line, path), paths, atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgspec
import pytest

from wsgw.config import (
    Application,
    GatewayConfig,
    Subscription,
    Subscriptions,
    check_subscriptions,
    dump_subscriptions,
    load_config,
    load_subscriptions,
)
from wsgw.config.models import AppKeys, Keys
from wsgw.errors import ConfigError

from .config_helpers import GOOD_CONFIG, GOOD_SUBSCRIPTIONS, write


def problems_of(path: str | Path, subs: bool = False, config: GatewayConfig | None = None):
    with pytest.raises(ConfigError) as info:
        if subs:
            load_subscriptions(path, config)
        else:
            load_config(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --- YAML: every kind of mistake names file, line and path -----------------------------


def test_good_yaml(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG)
    config = load_config("wsgw.yaml")
    assert list(config.tiers) == ["Gold", "Silver", "Bronze", "Unlimited"]
    assert config.tiers["Gold"].messages_per_minute == 600
    assert config.apis[0].tiers == ["Gold", "Silver"]


def test_yaml_bad_value_in_dict_entry(cwd: Path) -> None:
    write(
        cwd / "wsgw.yaml",
        """\
        tiers:
          Silver: {messages_per_minute: 60}
          Gold:
            burst: 5
            messages_per_minute: 0
        """,
    )
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:5: Expected int >= 1 - at $.tiers.Gold.messages_per_minute"
    ]


def test_yaml_bad_type(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "gateway:\n  listen: 127.0.0.1:1\n  idle_timeout_s: soon\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:3: Expected float, got str - at $.gateway.idle_timeout_s"
    ]


def test_yaml_unquoted_version_suggests_quotes(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG.replace('version: "1.0"', "version: 1.0"))
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:11: Expected str, got float (put the value in quotes) - at $.apis[0].version"
    ]


def test_yaml_unknown_field(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "gateway:\n  listen: 127.0.0.1:1\n  max_mesage_bytes: 10\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:3: unknown field 'max_mesage_bytes' (did you mean 'max_message_bytes'?)"
        " - at $.gateway"
    ]


def test_yaml_unknown_field_lists_the_known_ones(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "security:\n  zzz: 1\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:2: unknown field 'zzz' (expected one of: signing_key_file, token_ttl_s,"
        " issuer, token_failures, revocations_file) - at $.security"
    ]


def test_yaml_bad_enum(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "tiers:\n  Gold:\n    on_limit: queue\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:3: Invalid enum value 'queue' - at $.tiers.Gold.on_limit"
    ]


def test_yaml_bad_pattern_explained(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG.replace("context: /chat", "context: /chat/"))
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:10: Expected a path like /chat: starts with '/', no trailing '/', no '//',"
        " no query, no '%', ';' or '.'/'..' segment, got '/chat/' - at $.apis[0].context"
    ]


def test_yaml_bad_dict_key(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "tiers:\n  Gold: {}\n  Gold Plus: {}\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:3: Expected 1-64 letters, digits, '_', '.', '-', starting with a letter or"
        " digit, got 'Gold Plus' - at $.tiers[\"Gold Plus\"]"
    ]


def test_yaml_missing_required_field(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "apis:\n  - name: Chat\n    version: '1'\n    endpoints: {}\n")
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:2: Object missing required field 'context' - at $.apis[0]"
    ]


def test_yaml_missing_tier_reference(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG.replace("tiers: [Gold, Silver]", "tiers: [Gold, Iron]"))
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:13: tier 'Iron' is not defined in tiers (defined: Gold, Silver, Bronze,"
        " Unlimited) - at $.apis[0].tiers[1]"
    ]


def test_yaml_duplicate_api_each_problem_on_its_line(cwd: Path) -> None:
    write(
        cwd / "wsgw.yaml",
        GOOD_CONFIG
        + """\
  - name: Chat
    context: /chat
    version: "1.0"
    endpoints: {sandbox: "ws://127.0.0.1:7002"}
    tiers: [Gold]
    throttle: Nope
""",
    )
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:19: tier 'Nope' is not defined in tiers (defined: Gold, Silver, Bronze,"
        " Unlimited) - at $.apis[1].throttle",
        "wsgw.yaml:14: context /chat version 1.0 is already used by apis[0] - at $.apis[1]",
        "wsgw.yaml:14: API Chat:1.0 is already defined by apis[0] - at $.apis[1]",
    ]


def test_yaml_duplicate_subscription_in_app(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG)
    write(
        cwd / "subscriptions.yaml",
        GOOD_SUBSCRIPTIONS + '      - {api: Chat, version: "1.0", tier: Silver}\n',
    )
    assert problems_of("subscriptions.yaml", subs=True) == [
        "subscriptions.yaml:9: already subscribed to Chat:1.0 (subscriptions[0])"
        " - at $.applications[0].subscriptions[1]"
    ]


def test_yaml_duplicate_key(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "tiers:\n  Gold: {}\n  Silver: {}\n  Gold: {burst: 1}\n")
    assert problems_of("wsgw.yaml") == ["wsgw.yaml:4: duplicate key 'Gold' - at $.tiers"]


def test_yaml_syntax_error(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "gateway:\n  listen: 127.0.0.1:1\n admin_listen: x\n")
    [problem] = problems_of("wsgw.yaml")
    assert problem.startswith("wsgw.yaml:3: YAML syntax error: ")
    assert "(column 2)" in problem


def test_yaml_unclosed_flow_sequence(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "apis:\n  - tiers: [Gold\n\n")
    [problem] = problems_of("wsgw.yaml")
    assert problem.startswith("wsgw.yaml:4: YAML syntax error: ")


def test_yaml_unsafe_tag_refused(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "gateway: !!python/object:os.system {}\n")
    [problem] = problems_of("wsgw.yaml")
    assert problem.startswith("wsgw.yaml:1: YAML syntax error: could not determine a constructor")


def test_top_level_must_be_a_mapping(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "- a\n- b\n")
    assert problems_of("wsgw.yaml") == ["wsgw.yaml:1: Expected object, got array"]


def test_empty_file_is_all_defaults(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", "# nothing yet\n")
    config = load_config("wsgw.yaml")
    assert config.gateway.listen == "127.0.0.1:9099"
    assert config.gateway.subscriptions_file == str(cwd / "subscriptions.yaml")


# --- files that cannot be read ----------------------------------------------------------


def test_missing_file(cwd: Path) -> None:
    assert problems_of("nope.yaml") == ["nope.yaml: file not found"]


def test_unreadable_file(cwd: Path) -> None:
    (cwd / "dir.yaml").mkdir()
    assert problems_of("dir.yaml") == ["dir.yaml: cannot read: Is a directory"]


def test_unsupported_suffix(cwd: Path) -> None:
    write(cwd / "wsgw.ini", "[gateway]\n")
    assert problems_of("wsgw.ini") == [
        "wsgw.ini: unsupported file type '.ini' (use .yaml, .yml, .toml or .json)"
    ]


def test_not_utf8(cwd: Path) -> None:
    (cwd / "wsgw.yml").write_bytes(b"gateway:\n  listen: \xff\n")
    assert problems_of("wsgw.yml") == ["wsgw.yml:2: not UTF-8 text (byte 19)"]


def test_absolute_path_outside_cwd_is_named_in_full(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere" / "wsgw.yaml", "security: {token_ttl_s: 0}\n")
    assert problems_of(path) == [f"{path}:1: Expected int >= 1 - at $.security.token_ttl_s"]


# --- TOML and JSON ----------------------------------------------------------------------

TOML_CONFIG = """\
[gateway]
listen = "127.0.0.1:9099"

[tiers.Gold]
messages_per_minute = 600

[[apis]]
name = "Chat"
context = "/chat"
version = "1.0"
tiers = ["Gold"]
endpoints = { production = "ws://127.0.0.1:7001" }
"""


def test_toml(cwd: Path) -> None:
    write(cwd / "wsgw.toml", TOML_CONFIG)
    config = load_config("wsgw.toml")
    assert config.tiers["Gold"].messages_per_minute == 600
    assert config.apis[0].endpoints.production == "ws://127.0.0.1:7001"
    assert config == msgspec.convert(msgspec.to_builtins(config), GatewayConfig)


def test_toml_error_has_path_but_no_line(cwd: Path) -> None:
    write(cwd / "wsgw.toml", TOML_CONFIG.replace("= 600", "= 0"))
    assert problems_of("wsgw.toml") == [
        "wsgw.toml: Expected int >= 1 - at $.tiers.Gold.messages_per_minute"
    ]


def test_toml_syntax_error(cwd: Path) -> None:
    write(cwd / "wsgw.toml", '[gateway]\nlisten = "127.0.0.1:9099\n')
    [problem] = problems_of("wsgw.toml")
    assert problem.startswith("wsgw.toml:2: TOML syntax error: ")
    assert problem.endswith("(column 25)")


def test_json(cwd: Path) -> None:
    write(cwd / "wsgw.yaml", GOOD_CONFIG)
    as_dict = msgspec.to_builtins(load_config("wsgw.yaml"))
    (cwd / "wsgw.json").write_text(json.dumps(as_dict, indent=2))
    assert load_config("wsgw.json") == load_config("wsgw.yaml")


def test_json_error_has_line(cwd: Path) -> None:
    text = json.dumps({"tiers": {"Gold": {}, "Silver": {"burst": -1}}}, indent=2)
    (cwd / "wsgw.json").write_text(text)
    assert problems_of("wsgw.json") == ["wsgw.json:5: Expected int >= 0 - at $.tiers.Silver.burst"]


def test_json_syntax_error(cwd: Path) -> None:
    (cwd / "wsgw.json").write_text('{\n  "gateway": {\n    "listen": "x",\n  }\n}\n')
    [problem] = problems_of("wsgw.json")
    assert problem.startswith("wsgw.json:4: JSON syntax error: JSON is malformed")


# --- paths in the config are relative to the config file --------------------------------


def test_relative_paths_resolved_against_config_dir(cwd: Path) -> None:
    write(
        cwd / "conf" / "wsgw.yaml",
        """\
        gateway:
          subscriptions_file: subs/s.yaml
          tls: {listen: "0.0.0.0:443", cert_file: tls/cert.pem, key_file: ../k.pem}
          backend_tls: {ca_file: ca.pem}
        security:
          signing_key_file: /etc/wsgw/signing.pem
        """,
    )
    config = load_config("conf/wsgw.yaml")
    base = cwd / "conf"
    assert config.gateway.subscriptions_file == str(base / "subs" / "s.yaml")
    assert config.gateway.tls is not None
    assert config.gateway.tls.cert_file == str(base / "tls" / "cert.pem")
    assert config.gateway.tls.key_file == str(cwd / "k.pem")
    assert config.gateway.backend_tls.ca_file == str(base / "ca.pem")
    assert config.security.signing_key_file == "/etc/wsgw/signing.pem"


def test_default_paths_resolved_too(cwd: Path) -> None:
    write(cwd / "conf" / "wsgw.yaml", "{}\n")
    config = load_config(cwd / "conf" / "wsgw.yaml")
    assert config.gateway.subscriptions_file == str(cwd / "conf" / "subscriptions.yaml")
    assert config.security.signing_key_file == str(cwd / "conf" / "keys" / "signing.pem")
    assert config.gateway.backend_tls.ca_file is None and config.gateway.tls is None


# --- subscriptions file and cross-file checks -------------------------------------------


@pytest.fixture
def config(cwd: Path) -> GatewayConfig:
    write(cwd / "wsgw.yaml", GOOD_CONFIG)
    return load_config("wsgw.yaml")


def test_good_subscriptions(config: GatewayConfig, cwd: Path) -> None:
    write(cwd / "subscriptions.yaml", GOOD_SUBSCRIPTIONS)
    subs = load_subscriptions(config.gateway.subscriptions_file, config)
    app = subs.applications[0]
    assert app.keys.production == Keys(consumer_key="ck-prod", consumer_secret_sha256="ab" * 32)
    assert app.subscriptions == [Subscription(api="Chat", version="1.0", tier="Gold")]


def test_missing_subscriptions_file_is_named(config: GatewayConfig) -> None:
    assert problems_of(config.gateway.subscriptions_file, subs=True, config=config) == [
        "subscriptions.yaml: file not found (`wsgw app create NAME` creates it)"
    ]


def test_cross_file_problems(config: GatewayConfig, cwd: Path) -> None:
    write(
        cwd / "subscriptions.yaml",
        """\
        applications:
          - name: A
            tier: Platinum
            subscriptions:
              - {api: Chat, version: "2.0", tier: Gold}
              - {api: Mail, version: "1.0", tier: Gold}
          - name: B
            subscriptions:
              - api: Chat
                version: "1.0"
                tier: Bronze
        """,
    )
    assert problems_of("subscriptions.yaml", subs=True, config=config) == [
        "subscriptions.yaml:3: tier 'Platinum' is not defined in the gateway config"
        " (defined: Gold, Silver, Bronze, Unlimited) - at $.applications[0].tier",
        "subscriptions.yaml:5: API Chat:2.0 is not defined in the gateway config"
        " (defined versions: Chat:1.0) - at $.applications[0].subscriptions[0]",
        "subscriptions.yaml:6: API Mail:1.0 is not defined in the gateway config"
        " - at $.applications[0].subscriptions[1]",
        "subscriptions.yaml:11: API Chat:1.0 does not offer tier 'Bronze' (offers: Gold, Silver)"
        " - at $.applications[1].subscriptions[0].tier",
    ]
    # Without the config only the file's own rules apply.
    assert len(load_subscriptions("subscriptions.yaml").applications) == 2


def test_check_subscriptions(config: GatewayConfig) -> None:
    app = Application(
        name="A", subscriptions=[Subscription(api="Chat", version="1.0", tier="Unlimited")]
    )
    assert check_subscriptions(config, Subscriptions(applications=[app])) == [
        "API Chat:1.0 does not offer tier 'Unlimited' (offers: Gold, Silver)"
        " - at $.applications[0].subscriptions[0].tier"
    ]
    assert check_subscriptions(config, Subscriptions()) == []


# --- writing ---------------------------------------------------------------------------


def sample_subs() -> Subscriptions:
    return Subscriptions(
        applications=[
            Application(
                name="true",  # YAML would read it as a boolean unless quoted
                keys=AppKeys(sandbox=Keys(consumer_key="0123", consumer_secret_sha256="0" * 64)),
                subscriptions=[Subscription(api="Chat", version="1.0", tier="Gold")],
            ),
            Application(name="B", tier="Gold"),
        ]
    )


def test_dump_round_trip(cwd: Path) -> None:
    dump_subscriptions(sample_subs(), cwd / "s.yaml")
    assert load_subscriptions(cwd / "s.yaml") == sample_subs()
    text = (cwd / "s.yaml").read_text()
    assert "null" not in text  # unset fields are left out
    assert [p.name for p in cwd.iterdir()] == ["s.yaml"]  # no temp file left behind


def test_dump_new_file_is_private(cwd: Path) -> None:
    dump_subscriptions(Subscriptions(), cwd / "s.yaml")
    assert stat.S_IMODE((cwd / "s.yaml").stat().st_mode) == 0o600
    assert load_subscriptions(cwd / "s.yaml") == Subscriptions()


def test_dump_keeps_existing_mode(cwd: Path) -> None:
    (cwd / "s.yaml").write_text("applications: []\n")
    os.chmod(cwd / "s.yaml", 0o640)
    dump_subscriptions(sample_subs(), cwd / "s.yaml")
    assert stat.S_IMODE((cwd / "s.yaml").stat().st_mode) == 0o640


def test_dump_through_symlink_keeps_the_link(cwd: Path) -> None:
    (cwd / "real").mkdir()
    (cwd / "real" / "s.yaml").write_text("applications: []\n")
    (cwd / "s.yaml").symlink_to(cwd / "real" / "s.yaml")
    dump_subscriptions(sample_subs(), cwd / "s.yaml")
    assert (cwd / "s.yaml").is_symlink()
    assert load_subscriptions(cwd / "real" / "s.yaml") == sample_subs()


def test_dump_failure_leaves_old_file(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash before the rename (here: fsync fails) leaves the old file whole."""
    dump_subscriptions(Subscriptions(), cwd / "s.yaml")
    before = (cwd / "s.yaml").read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ConfigError) as info:
        dump_subscriptions(sample_subs(), cwd / "s.yaml")
    assert info.value.problems == ["s.yaml: cannot write: No space left on device"]
    assert (cwd / "s.yaml").read_bytes() == before
    assert [p.name for p in cwd.iterdir()] == ["s.yaml"]


def test_dump_refuses_invalid_content(cwd: Path) -> None:
    """Structs built in Python skip field constraints; the round trip catches them."""
    bad = Subscriptions(applications=[Application(name="has space")])
    with pytest.raises(ConfigError, match="refusing to write"):
        dump_subscriptions(bad, cwd / "s.yaml")
    assert not (cwd / "s.yaml").exists()


def test_nested_rule_path_joined_with_struct_path(cwd: Path) -> None:
    write(
        cwd / "wsgw.yaml",
        """\
        gateway:
          listen: 127.0.0.1:9000
          admin_listen: 127.0.0.1:9000
        """,
    )
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:3: address 127.0.0.1:9000 is already used by listen - at $.gateway.admin_listen"
    ]
    write(cwd / "wsgw.yaml", GOOD_CONFIG.replace("[Gold, Silver]", "[Gold,\n      Gold]"))
    assert problems_of("wsgw.yaml") == [
        "wsgw.yaml:14: tier 'Gold' is listed twice - at $.apis[0].tiers[1]"
    ]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("wsgw.yaml", "apis: &a [*a]\n", "wsgw.yaml:1: YAML alias refers to its own anchor"),
        ("wsgw.yaml", "gateway: &g {x: *g}\n", "wsgw.yaml:1: YAML alias refers to its own anchor"),
        ("wsgw.yaml", "[" * 5000 + "]" * 5000, "wsgw.yaml: nested too deeply"),
        ("wsgw.json", "[" * 5000 + "]" * 5000, "wsgw.json: nested too deeply"),
        ("wsgw.toml", "a = " + "[" * 5000 + "]" * 5000, "wsgw.toml: nested too deeply"),
    ],
)
def test_self_referring_and_deep_documents_are_config_errors(
    cwd: Path, name: str, text: str, expected: str
) -> None:
    # Both made the loaders recurse without end (RecursionError) before.
    write(cwd / name, text)
    assert problems_of(name) == [expected]
