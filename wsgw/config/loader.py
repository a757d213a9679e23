"""Read, check and write the two config files.

Every failure becomes a :class:`~wsgw.errors.ConfigError` whose lines read
``FILE:LINE: MESSAGE - at $.json.path``: msgspec's ``ValidationError`` gives the message
and a path, the YAML node tree (``yaml.compose``) gives the line. msgspec writes dict
entries as ``[...]`` (it does not name the key), so the key is found again by validating
each entry of that dict on its own: the first one that fails is the one msgspec hit.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import re
import stat
import tempfile
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import yaml

from wsgw.config.models import PATTERN_HELP, GatewayConfig, Subscriptions
from wsgw.errors import ConfigError

__all__ = [
    "check_subscriptions",
    "config_file_problems",
    "display_path",
    "dump_subscriptions",
    "load_config",
    "load_subscriptions",
    "locked_directory",
]

T = TypeVar("T")
Segment = str | int  # a mapping key or a list index
_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
_SUBSCRIPTIONS_HEADER = (
    "# wsgw subscriptions: written by `wsgw app create`, `wsgw keys generate` and\n"
    "# `wsgw subscribe`. It holds SHA-256 hashes of consumer secrets, never the secrets.\n"
)


# --- reading ----------------------------------------------------------------------------


@dataclass
class _Document:
    """A parsed file: its data, and what is needed to point at a line in it."""

    display: str
    data: Any
    root: yaml.Node | None = None  # node tree for line numbers (YAML, and JSON best effort)
    problems: list[str] = field(default_factory=list)  # e.g. duplicate keys

    def problem(self, message: str, path: list[Segment], *, key_line: bool = True) -> str:
        line = _line_of(self.root, path, key_line=key_line)
        where = f"{self.display}:{line}" if line else self.display
        at = f" - at {_render(path)}" if path else ""
        return f"{where}: {message}{at}"

    def convert(self, type_: type[T]) -> T:
        data = {} if self.data is None else self.data  # an empty file means all defaults
        try:
            value = msgspec.convert(data, type_)
        except msgspec.ValidationError as exc:
            raise ConfigError(self.problems + _explain(self, type_, data, str(exc))) from None
        if self.problems:
            raise ConfigError(self.problems)
        return value


def display_path(path: str | os.PathLike[str]) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    text = os.fspath(path)
    if os.path.isabs(text):
        rel = os.path.relpath(text)
        if not rel.startswith(os.pardir):
            return rel
    return text


def _read_document(path: str | os.PathLike[str], missing_hint: str = "") -> _Document:
    display = display_path(path)
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            [
                f"{display}: unsupported file type {suffix or '(none)'!r} "
                f"(use {', '.join(_SUFFIXES[:-1])} or {_SUFFIXES[-1]})"
            ]
        )
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError([f"{display}: file not found{missing_hint}"]) from None
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return _parse(display, suffix, raw)
    except RecursionError:  # every parser recurses once per level of nesting
        raise ConfigError([f"{display}: nested too deeply"]) from None


def _parse(display: str, suffix: str, raw: bytes) -> _Document:
    if suffix == ".json":
        return _parse_json(display, raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{display}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    if suffix == ".toml":
        return _parse_toml(display, text)
    return _parse_yaml(display, text)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse YAML once, keeping the node tree (for line numbers) and the data."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _parse_yaml(display: str, text: str) -> _Document:
    try:
        root, data = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{display}:{mark.line + 1}" if mark else display
        column = f" (column {mark.column + 1})" if mark else ""
        context = f", {exc.context}" if exc.context else ""
        raise ConfigError([f"{where}: YAML syntax error: {exc.problem}{context}{column}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{display}: YAML syntax error: {exc}"]) from None
    _refuse_recursive_aliases(display, root)
    doc = _Document(display, data, root)
    doc.problems = _duplicate_keys(doc)
    return doc


def _refuse_recursive_aliases(display: str, root: yaml.Node | None) -> None:
    """An alias inside its own anchor (``a: &x [*x]``) makes the data contain itself, which
    no field can hold; walking it would never end. Found without recursion."""
    if root is None:
        return
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    done: set[int] = set()
    while stack:
        node, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            done.add(id(node))
            continue
        if id(node) in on_path:
            line = node.start_mark.line + 1
            raise ConfigError([f"{display}:{line}: YAML alias refers to its own anchor"])
        if id(node) in done or isinstance(node, yaml.ScalarNode):
            continue
        on_path.add(id(node))
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((value, False), (key, False)))
        else:
            stack.extend((item, False) for item in node.value)


def _parse_toml(display: str, text: str) -> _Document:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if found:
            message = message[: found.start()]
            raise ConfigError(
                [f"{display}:{found[1]}: TOML syntax error: {message} (column {found[2]})"]
            ) from None
        raise ConfigError([f"{display}: TOML syntax error: {message}"]) from None
    return _Document(display, data)


def _parse_json(display: str, raw: bytes) -> _Document:
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(byte (\d+)\)$", message)
        if found:
            line = raw[: int(found[1])].count(b"\n") + 1
            message = message[: found.start()]
            raise ConfigError([f"{display}:{line}: JSON syntax error: {message}"]) from None
        raise ConfigError([f"{display}: JSON syntax error: {message}"]) from None
    doc = _Document(display, data)
    # JSON is (nearly) YAML, so the YAML node tree gives line numbers; best effort only.
    try:
        doc.root, _ = _compose(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        doc.root = None
    if doc.root is not None:
        doc.problems = _duplicate_keys(doc)
    return doc


def _duplicate_keys(doc: _Document) -> list[str]:
    """YAML loaders keep the last of two equal keys silently; an operator wants to know."""
    problems: list[str] = []

    def walk(node: yaml.Node, path: list[Segment]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None:
                    if name in seen:
                        line = key.start_mark.line + 1
                        problems.append(
                            f"{doc.display}:{line}: duplicate key {name!r} - at {_render(path)}"
                        )
                    seen.add(name)
                    walk(value, [*path, name])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, [*path, i])

    if doc.root is not None:
        walk(doc.root, [])
    return problems


# --- paths and lines --------------------------------------------------------------------

_SEGMENT_RE = re.compile(r'\.([^.\[\]`]+)|\[(\d+)\]|\[(\.\.\.)\]|\[("(?:[^"\\]|\\.)*")\]')
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_ELLIPSIS = "[...]"  # msgspec's placeholder for a dict key it does not name


def _parse_path(text: str) -> list[Segment] | None:
    """``$.a.b[0][...]`` → ``["a", "b", 0, _ELLIPSIS]``; None if it is not a path."""
    if not text.startswith("$"):
        return None
    segments: list[Segment] = []
    pos = 1
    while pos < len(text):
        m = _SEGMENT_RE.match(text, pos)
        if m is None:
            return None
        if m[1] is not None:
            segments.append(m[1])
        elif m[2] is not None:
            segments.append(int(m[2]))
        elif m[3] is not None:
            segments.append(_ELLIPSIS)
        else:
            segments.append(msgspec.json.decode(m[4]))
        pos = m.end()
    return segments


def _render(path: list[Segment]) -> str:
    out = ["$"]
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif seg == _ELLIPSIS or _PLAIN_KEY_RE.match(seg):
            out.append(seg if seg == _ELLIPSIS else f".{seg}")
        else:
            out.append(f"[{msgspec.json.encode(seg).decode()}]")
    return "".join(out)


def _line_of(root: yaml.Node | None, path: list[Segment], *, key_line: bool = True) -> int | None:
    """1-based line of ``path`` in the node tree: the key's line when the path ends at a
    mapping key, else the node's; the deepest node found when the path runs out."""
    if root is None:
        return None
    node = root
    line = node.start_mark.line + 1
    for seg in path:
        if isinstance(node, yaml.MappingNode) and isinstance(seg, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == seg:
                    line = (key if key_line else value).start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int):
            if seg >= len(node.value):
                return line
            node = node.value[seg]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# --- explaining msgspec errors ----------------------------------------------------------

_AT_RE = re.compile(r"^(?P<message>.*?)(?: - at `(?P<key>key` in `)?(?P<path>\$[^`]*)`)?$", re.S)
_LINE_AT_RE = re.compile(r"^(?P<message>.*) - at (?P<path>\$\S*)$")
_UNKNOWN_FIELD_RE = re.compile(r"^Object contains unknown field `([^`]*)`$")
_REGEX_RE = re.compile(r"^Expected `str` matching regex (?P<pattern>'.*'|\".*\")$")
# msgspec quotes the pattern with repr(), so look the help up by that spelling.
_HELP_BY_REPR = {repr(pattern): help for pattern, help in PATTERN_HELP.items()}


def _explain(doc: _Document, root_type: type, data: Any, error: str) -> list[str]:
    """Turn one msgspec ValidationError message into ``FILE:LINE: ... - at PATH`` lines."""
    m = _AT_RE.match(error)
    assert m is not None  # the pattern matches any string
    base = _parse_path(m["path"] or "$") or []
    base, value, tp = _resolve(base, data, root_type)
    if m["key"]:
        # The dict *key* failed: find the first key that fails the key type on its own.
        args = _dict_args(tp)
        bad = _first_failing(list(value), args[0]) if args and isinstance(value, dict) else None
        if bad is not None:
            return [_explain_one(doc, m["message"], [*base, bad], bad, None)]
        return [doc.problem(_plain(m["message"]), base)]
    problems = []
    # A __post_init__ may report several problems, each with a path relative to its struct.
    for line in m["message"].split("\n"):
        sub = _LINE_AT_RE.match(line)
        if sub and (rel := _parse_path(sub["path"])) is not None:
            problems.append(doc.problem(_plain(sub["message"]), [*base, *rel]))
            continue
        problems.append(_explain_one(doc, line, base, value, tp))
    return problems


def _explain_one(doc: _Document, message: str, path: list[Segment], value: Any, tp: Any) -> str:
    unknown = _UNKNOWN_FIELD_RE.match(message)
    if unknown:
        name = unknown[1]
        text = f"unknown field {name!r}"
        fields = _field_names(tp)
        close = difflib.get_close_matches(name, fields, n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
        elif fields:
            text += f" (expected one of: {', '.join(fields)})"
        line = _line_of(doc.root, [*path, name])
        where = f"{doc.display}:{line}" if line else doc.display
        return f"{where}: {text} - at {_render(path)}"
    regex = _REGEX_RE.match(message)
    if regex and regex["pattern"] in _HELP_BY_REPR:
        text = f"Expected {_HELP_BY_REPR[regex['pattern']]}, got {_shown(value)}"
        return doc.problem(text, path)
    text = _plain(message)
    if re.match(r"^Expected `str[^`]*`, got `(int|float|bool)`$", message):
        text += " (put the value in quotes)"
    return doc.problem(text, path)


_USERINFO_RE = re.compile(r"(://)[^/@\s]*@")


def _shown(value: Any) -> str:
    """A refused value as an error line quotes it: a URL's credentials hidden (a Redis URL
    may carry a password, and the errors go to logs and the admin port)."""
    text = repr(value)
    return _USERINFO_RE.sub(r"\1***@", text) if isinstance(value, str) else text


def _plain(message: str) -> str:
    """msgspec quotes type names and fields in backticks; read as prose without them."""
    message = re.sub(r"\b(Expected|got) `([^`]*)`", r"\1 \2", message)
    return re.sub(r"`([^`]*)`", r"'\1'", message)


def _resolve(path: list[Segment], data: Any, tp: Any) -> tuple[list[Segment], Any, Any]:
    """Walk ``path`` through the data and the type together, naming ``[...]`` keys.
    Returns the resolved path, the value there and its type (None when lost)."""
    resolved: list[Segment] = []
    for i, seg in enumerate(path):
        tp = _unwrap(tp)
        try:
            if seg == _ELLIPSIS:
                args = _dict_args(tp)
                key = _first_failing_value(data, args[1]) if args else None
                if key is None or args is None:
                    return resolved + path[i:], None, None
                resolved.append(key)
                data, tp = data[key], args[1]
            elif isinstance(seg, int):
                data = data[seg]
                tp = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
                resolved.append(seg)
            else:
                data = data[seg]
                tp = _field_types(tp).get(seg)
                resolved.append(seg)
        except (KeyError, IndexError, TypeError):
            return resolved + path[i:], None, None
    return resolved, data, _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` → X and ``X | None`` → X (the models use no other unions)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = arms[0] if len(arms) == 1 else None
        else:
            return tp


def _dict_args(tp: Any) -> tuple[Any, Any] | None:
    if typing.get_origin(tp) is dict:
        key, value = typing.get_args(tp)
        return key, value
    return None


def _field_types(tp: Any) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
    return {}


def _field_names(tp: Any) -> list[str]:
    return list(_field_types(tp))


def _first_failing(values: list[Any], tp: Any) -> Any:
    for value in values:
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError:
            return value
    return None


def _first_failing_value(mapping: dict[Any, Any], tp: Any) -> Any:
    for key, value in mapping.items():
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError:
            return key
    return None


# --- public API -------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Load ``wsgw.yaml`` (or .toml/.json). File paths inside come back absolute,
    resolved against the config file's directory."""
    config = _read_document(path).convert(GatewayConfig)
    return _absolute_paths(config, os.path.dirname(os.path.abspath(path)))


def _absolute_paths(config: GatewayConfig, base: str) -> GatewayConfig:
    def absolute(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    replace = msgspec.structs.replace
    gateway = config.gateway
    tls = gateway.tls
    if tls is not None:
        tls = replace(tls, cert_file=absolute(tls.cert_file), key_file=absolute(tls.key_file))
    backend_tls = gateway.backend_tls
    if backend_tls.ca_file is not None:
        backend_tls = replace(backend_tls, ca_file=absolute(backend_tls.ca_file))
    admin_token_file = gateway.admin_token_file
    gateway = replace(
        gateway,
        subscriptions_file=absolute(gateway.subscriptions_file),
        tls=tls,
        backend_tls=backend_tls,
        admin_token_file=absolute(admin_token_file) if admin_token_file is not None else None,
    )
    security = replace(
        config.security,
        signing_key_file=absolute(config.security.signing_key_file),
        revocations_file=absolute(config.security.revocations_file),
    )
    analytics = config.analytics
    if analytics.events_file not in (None, "-"):
        analytics = replace(analytics, events_file=absolute(analytics.events_file))
    return replace(config, gateway=gateway, security=security, analytics=analytics)


def load_subscriptions(
    path: str | os.PathLike[str], config: GatewayConfig | None = None
) -> Subscriptions:
    """Load ``subscriptions.yaml``; with ``config``, also check it against the gateway
    config (APIs, versions and tiers it names must exist)."""
    doc = _read_document(path, missing_hint=" (`wsgw app create NAME` creates it)")
    subs = doc.convert(Subscriptions)
    if config is not None:
        problems = [doc.problem(message, at) for message, at in _cross_file(config, subs)]
        if problems:
            raise ConfigError(problems)
    return subs


def check_subscriptions(config: GatewayConfig, subs: Subscriptions) -> list[str]:
    """Problems between the two files, each ``MESSAGE - at $.path`` (in subscriptions)."""
    return [f"{message} - at {_render(at)}" for message, at in _cross_file(config, subs)]


def _cross_file(config: GatewayConfig, subs: Subscriptions) -> list[tuple[str, list[Segment]]]:
    problems: list[tuple[str, list[Segment]]] = []
    defined = ", ".join(config.tiers) or "none"
    for i, app in enumerate(subs.applications):
        if app.tier is not None and app.tier not in config.tiers:
            problems.append(
                (
                    f"tier {app.tier!r} is not defined in the gateway config (defined: {defined})",
                    ["applications", i, "tier"],
                )
            )
        for j, sub in enumerate(app.subscriptions):
            at: list[Segment] = ["applications", i, "subscriptions", j]
            api = config.api(sub.api, sub.version)
            if api is None:
                known = sorted({a.ref for a in config.apis if a.name == sub.api})
                hint = f" (defined versions: {', '.join(known)})" if known else ""
                problems.append(
                    (f"API {sub.api}:{sub.version} is not defined in the gateway config{hint}", at)
                )
            elif sub.tier not in api.tiers:
                offered = ", ".join(api.tiers) or "none"
                problems.append(
                    (
                        f"API {api.ref} does not offer tier {sub.tier!r} (offers: {offered})",
                        [*at, "tier"],
                    )
                )
    return problems


def config_file_problems(config: GatewayConfig, path: str | os.PathLike[str]) -> list[str]:
    """Files the config names that the operator must provide (TLS certificate and key,
    backend CA) but which do not exist. Files wsgw creates itself are not checked."""
    needed: list[tuple[list[Segment], str]] = []
    if config.gateway.tls is not None:
        needed.append((["gateway", "tls", "cert_file"], config.gateway.tls.cert_file))
        needed.append((["gateway", "tls", "key_file"], config.gateway.tls.key_file))
    if config.gateway.backend_tls.ca_file is not None:
        needed.append((["gateway", "backend_tls", "ca_file"], config.gateway.backend_tls.ca_file))
    if config.gateway.admin_token_file is not None:
        needed.append((["gateway", "admin_token_file"], config.gateway.admin_token_file))
    missing = [(at, p) for at, p in needed if not os.path.isfile(p)]
    if not missing:
        return []
    doc = _read_document(path)
    return [doc.problem(f"file not found: {display_path(p)}", at) for at, p in missing]


def dump_subscriptions(subs: Subscriptions, path: str | os.PathLike[str]) -> None:
    """Write ``subs`` as YAML, atomically: readers see the old file or the new one, never
    half of one. An existing file keeps its mode; a new one is 0600 (it holds hashes)."""
    data = _without_none(msgspec.to_builtins(subs))
    text = _SUBSCRIPTIONS_HEADER + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    # Prove the text reads back as the same value before it replaces a good file.
    try:
        back = msgspec.convert(yaml.safe_load(text), Subscriptions)
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError([f"{display_path(path)}: refusing to write: {exc}"]) from None
    if back != subs:
        raise ConfigError([f"{display_path(path)}: refusing to write: YAML round trip differs"])
    try:
        atomic_write(os.path.realpath(path), text.encode("utf-8"), default_mode=0o600)
    except OSError as exc:
        raise ConfigError([f"{display_path(path)}: cannot write: {exc.strerror or exc}"]) from None


def _without_none(value: Any) -> Any:
    """Drop ``None`` fields: they are the defaults, and the file reads better without."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


@contextlib.contextmanager
def locked_directory(directory: str) -> Iterator[None]:
    """Exclusive lock on a directory, held across a read-modify-write of a file in it.
    Locking the directory (not the file) survives the rename that replaces the file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, default_mode: int) -> None:
    directory = os.path.dirname(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = default_mode
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry itself is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
