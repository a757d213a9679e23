"""What a reload reads and what it may change: the files as one consistent set, their
signatures on disk (the watch), and the settings only a restart can change.

A reload reads wsgw.yaml, the subscriptions file it names and the signing key together
(`load_files`), so that what the gateway runs is always a set that validated together: the
portal commands and `wsgw validate` read the same files the same way (config.loader).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import msgspec

from wsgw.config import load_config, load_subscriptions
from wsgw.config.loader import config_file_problems, display_path
from wsgw.config.models import GatewayConfig, Subscriptions
from wsgw.errors import ConfigError
from wsgw.oauth.keys import SigningKey, load_signing_key

# Settings read once, when the listeners and the long-lived parts are built: a reload that
# changes one says a restart is needed and keeps the running value (`keep_restart_only`).
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "gateway": (
        "listen",
        "admin_listen",
        "tls",
        "redis_url",
        "redis_failure",
        "redis_prefix",
        "max_admin_connections",
        "max_pending_per_address",
        "admin_token_file",
        "watch_files",
    ),
    "security": ("token_failures", "revocations_file"),
    "analytics": (
        "events_file",
        "redis_stream",
        "stream_maxlen",
        "buffer_events",
    ),
}


@dataclass(frozen=True, slots=True)
class Files:
    """One consistent read of the gateway's files."""

    config: GatewayConfig
    subscriptions: Subscriptions
    signing_key: SigningKey
    backend_tls: ssl.SSLContext


def backend_tls(config: GatewayConfig) -> ssl.SSLContext:
    """How the gateway verifies wss:// backends; ConfigError for a CA file that does not
    load (its existence alone is checked with the config)."""
    tls = config.gateway.backend_tls
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (ssl.SSLError, OSError) as exc:
        where = display_path(tls.ca_file) if tls.ca_file else "backend_tls"
        raise ConfigError([f"{where}: cannot load the backend CA file: {exc}"]) from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def signing_key(config: GatewayConfig) -> SigningKey:
    key_file = Path(config.security.signing_key_file)
    if not key_file.exists():
        raise ConfigError(
            [f"{key_file}: signing key not found: run `wsgw keys init -c <config>` first"]
        )
    try:
        return load_signing_key(key_file)
    except (ValueError, OSError) as exc:
        raise ConfigError([f"{key_file}: cannot load the signing key: {exc}"]) from None


def load_files(config_path: str | os.PathLike[str] | None, config: GatewayConfig) -> Files:
    """Read the files as the gateway runs them: `config_path` (or, without one, the config
    given), the subscriptions it names, checked against it, and the signing key."""
    if config_path is not None:
        _not_empty(config_path)
        config = load_config(config_path)
        problems = config_file_problems(config, config_path)
        if problems:
            raise ConfigError(problems)
    _not_empty(config.gateway.subscriptions_file)
    subscriptions = load_subscriptions(config.gateway.subscriptions_file, config)
    return Files(config, subscriptions, signing_key(config), backend_tls(config))


def _not_empty(path: str | os.PathLike[str]) -> None:
    """An empty file reads as "all defaults": no APIs, no applications, which would close
    every connection. Files being rewritten in place read empty for a moment."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        return  # the loader says what is wrong with it
    if empty:
        raise ConfigError([f"{display_path(path)}: empty file: not loaded"])


def keep_restart_only(
    running: GatewayConfig, new: GatewayConfig
) -> tuple[GatewayConfig, list[str]]:
    """`new` with the running value of every restart-only setting, and the names of those
    that differ (`gateway.listen`, ...)."""
    changed: list[str] = []
    sections = {}
    for section, names in RESTART_ONLY.items():
        old_part, new_part = getattr(running, section), getattr(new, section)
        kept = {}
        for name in names:
            if getattr(old_part, name) != getattr(new_part, name):
                changed.append(f"{section}.{name}")
                kept[name] = getattr(old_part, name)
        if kept:
            sections[section] = msgspec.structs.replace(new_part, **kept)
    return (msgspec.structs.replace(new, **sections) if sections else new), changed


Signature = tuple[int, int, int] | None


def signature(path: str | os.PathLike[str]) -> Signature:
    """What changes when a file is edited or replaced (a rename changes the inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileWatch:
    """The signatures of a set of files, compared on each poll. A change counts once the
    files have stayed as they are for one more poll: an editor that writes a file in place
    shows a half-written one for a moment, and a reload must not apply it."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._seen = [signature(p) for p in paths]
        self._settling: list[Signature] | None = None

    def changed(self) -> bool:
        now = [signature(p) for p in self.paths]
        if now == self._seen:
            self._settling = None
            return False
        if now != self._settling:
            self._settling = now  # changed since the last poll: wait for it to settle
            return False
        self._seen, self._settling = now, None
        return True

    def retarget(self, paths: list[str]) -> None:
        """A reload may name other files (subscriptions_file, signing_key_file)."""
        if paths != self.paths:
            self.paths = paths
            self._seen = [signature(p) for p in paths]
            self._settling = None
