"""The revocation list: tokens refused before their `exp`.

Three kinds of entry: one token (its `jti`), every token of an application, or every token
of a consumer key, issued at or before a second (`issued_before`). Each entry lives until
every token it can match has expired (`expires_at`), then it is pruned: the list never
grows past what is still dangerous. Checked at every handshake (three dict lookups) and,
when it grows, against every open connection.

On disk (``security.revocations_file``) the list is one JSON document,
``{"revocations": [{"kind", "value", "issued_before", "expires_at"}, ...]}``, written by
`wsgw revoke` and the revocation endpoint and watched by every gateway. Each change is
read → merge → prune → atomic write under an exclusive lock on the file's directory, so
two writers at once (two commands, a command and a gateway) cannot lose each other's entry.
The file holds jtis, application names and consumer keys: identifiers, never tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from wsgw.config.loader import atomic_write, display_path, locked_directory
from wsgw.errors import ConfigError
from wsgw.oauth.tokens import TokenClaims

Kind = Literal["jti", "application", "consumer_key"]
KINDS: tuple[Kind, ...] = ("jti", "application", "consumer_key")


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: Kind
    value: str  # the jti, the application's name or the consumer key
    expires_at: int  # Unix time after which no token it matches is valid anyway
    issued_before: int = 0  # application, consumer_key: tokens with iat <= this

    def to_builtins(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "value": self.value,
            "issued_before": self.issued_before,
            "expires_at": self.expires_at,
        }


class RevocationList:
    def __init__(self, entries: Iterable[Revocation] = ()) -> None:
        self._by_kind: dict[str, dict[str, Revocation]] = {kind: {} for kind in KINDS}
        self._any = False  # every handshake asks: an empty list answers without a lookup
        self.merge(entries)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_kind.values())

    def __bool__(self) -> bool:
        return self._any

    def _recount(self) -> None:
        self._any = any(self._by_kind.values())

    def revokes(self, claims: TokenClaims) -> Revocation | None:
        """The entry that revokes a token with these claims, if any."""
        if not self._any:
            return None
        by_kind = self._by_kind
        entry = by_kind["jti"].get(claims.jti)
        if entry is not None:
            return entry
        entry = by_kind["application"].get(claims.application)
        if entry is not None and claims.issued_at <= entry.issued_before:
            return entry
        entry = by_kind["consumer_key"].get(claims.consumer_key)
        if entry is not None and claims.issued_at <= entry.issued_before:
            return entry
        return None

    def add(self, entry: Revocation) -> bool:
        """True if the list now revokes more than before."""
        entries = self._by_kind[entry.kind]
        known = entries.get(entry.value)
        if known is not None and not _wider(entry, known):
            return False
        if known is not None:  # keep the wider of both on each bound
            entry = Revocation(
                entry.kind,
                entry.value,
                max(entry.expires_at, known.expires_at),
                max(entry.issued_before, known.issued_before),
            )
        entries[entry.value] = entry
        self._any = True
        return True

    def merge(self, entries: Iterable[Revocation]) -> list[Revocation]:
        """Add each; the ones that revoke more than before."""
        return [entry for entry in entries if self.add(entry)]

    def prune(self, now: float) -> int:
        """Forget entries whose tokens have all expired; how many were forgotten."""
        forgotten = 0
        for entries in self._by_kind.values():
            for value in [v for v, e in entries.items() if e.expires_at < now]:
                del entries[value]
                forgotten += 1
        self._recount()
        return forgotten

    def entries(self) -> list[Revocation]:
        return [entry for entries in self._by_kind.values() for entry in entries.values()]


def _wider(new: Revocation, known: Revocation) -> bool:
    return new.expires_at > known.expires_at or new.issued_before > known.issued_before


# --- entries ----------------------------------------------------------------------------


def revoke_token(claims: TokenClaims) -> Revocation:
    """One token, kept until the token itself expires."""
    return Revocation("jti", claims.jti, claims.expires_at)


def revoke_jti(jti: str, now: float, ttl_s: int) -> Revocation:
    """A token known only by its jti: issued at ``now`` at the latest, so expired by
    ``now + ttl_s`` (a token issued under a longer, since lowered ttl outlives the entry)."""
    return Revocation("jti", jti, int(now) + ttl_s)


def revoke_application(name: str, now: float, ttl_s: int) -> Revocation:
    """Every token of application ``name`` issued up to the second of ``now``."""
    return _issued_up_to("application", name, now, ttl_s)


def revoke_consumer_key(key: str, now: float, ttl_s: int) -> Revocation:
    """Every token issued to consumer key ``key`` up to the second of ``now``."""
    return _issued_up_to("consumer_key", key, now, ttl_s)


def _issued_up_to(kind: Kind, value: str, now: float, ttl_s: int) -> Revocation:
    # `iat` has whole seconds: a token issued later in this second is revoked too.
    issued_before = int(now)
    return Revocation(kind, value, issued_before + ttl_s, issued_before)


# --- the file ---------------------------------------------------------------------------

_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    # Every field required and no unknown one: a hand edit that misspells `issued_before`
    # must be refused, not read as 0 (which revokes nothing).
    kind: Kind
    value: Annotated[str, msgspec.Meta(min_length=1)]
    issued_before: _Count
    expires_at: _Count


class _File(msgspec.Struct, forbid_unknown_fields=True):
    revocations: list[_Entry]


_DECODER = msgspec.json.Decoder(_File)


def load_revocations(path: str | os.PathLike[str]) -> list[Revocation]:
    """The entries of the file at ``path``; [] when it does not exist (nothing revoked yet)
    or is empty. ConfigError, one line naming the file (and the entry), when malformed."""
    display = display_path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    if not raw.strip():  # `touch revocations.json`
        return []
    try:
        document = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:  # "... - at `$.revocations[3].expires_at`"
        raise ConfigError([f"{display}: invalid revocation list: {exc}"]) from None
    except msgspec.DecodeError as exc:
        raise ConfigError([f"{display}: not a JSON revocation list: {exc}"]) from None
    return [
        Revocation(e.kind, e.value, e.expires_at, e.issued_before) for e in document.revocations
    ]


def record_revocations(
    path: str | os.PathLike[str], entries: Iterable[Revocation], now: float
) -> list[Revocation]:
    """Add ``entries`` to the file at ``path`` and forget the ones expired before ``now``;
    the given entries that revoke more than the file did (and are not expired already).

    Read-merge-write under an exclusive lock on the file's directory (the lock of
    the portal commands, shared with the subscriptions edits when both files share a directory: do
    not call this while holding it). The file is replaced atomically: a gateway reading it
    sees the old list or the new one. A new file is born 0600; an existing one keeps its
    mode. Unchanged contents are not rewritten (a rewrite would wake every watcher).
    """
    real = os.path.realpath(path)
    display = display_path(path)
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise ConfigError([f"{display}: directory {directory} does not exist"])
    with locked_directory(directory):
        before = load_revocations(real)
        current = RevocationList(before)
        new = current.merge(entries)
        current.prune(now)
        after = current.entries()
        if after != before:
            try:
                atomic_write(real, _encode(after), default_mode=0o600)
            except OSError as exc:
                raise ConfigError([f"{display}: cannot write: {exc.strerror or exc}"]) from None
    return [entry for entry in new if entry.expires_at >= now]


def _encode(entries: list[Revocation]) -> bytes:
    document = {"revocations": [entry.to_builtins() for entry in entries]}
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"
