"""The fuzz oracles: what must hold for ANY input, shared by the hypothesis tests
(test_fuzz_*.py) and the atheris scripts (fuzz_*.py).

Each ``check_*`` takes one input and the options it runs with, runs the code under test and
asserts its documented contract:

- HTTP readers and handshake checks: a result or a ``GatewayError`` (never another exception).
- The frame codec (compiled and pure twins): results NEED_DATA / CLOSE / ERROR (THROTTLED
  with a shaping gate), ERROR with a close code in {1002, 1007, 1008, 1009}, never an
  exception; both twins give the same results, output and counters, and the outcome does
  not depend on how the input is cut.
- The inflate meter (both twins): a status, never an exception; the twins agree.
- The config loader: a config or a ``ConfigError`` whose every line is ``FILE[:LINE]: ...``.

A broken contract raises :class:`Violation`; an exception the contract does not allow is
wrapped in :class:`Unexpected` (with the original as ``__cause__``). Findings that are
known, reported and tracked by a strict xfail test (test_fuzz_findings.py) are listed in
``KNOWN_BUGS``: the fuzz tests note them and go on (``WSGW_FUZZ_STRICT=1`` fails on them
too), so the suite stays green until they are fixed, and the xfail test says when.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import random
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from wsgw._core import frames_py, gate_py, inflate_py
from wsgw.config.loader import display_path, load_config, load_subscriptions
from wsgw.config.models import GatewayConfig, Subscriptions
from wsgw.errors import ConfigError, GatewayError
from wsgw.http import (
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    error_response,
)
from wsgw.pipeline import compression, handshake
from wsgw.pipeline.compression import SelfContained

CORPUS = Path(__file__).resolve().parent / "corpus"
TARGETS = ("http", "response", "handshake", "frames", "inflate", "config")

# The RFC 6455 §1.3 sample key: the handshake seeds carry its accept value.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
# An input that takes this long is treated as a hang (the inputs are a few KiB at most).
HANG_SECONDS = float(os.environ.get("WSGW_FUZZ_HANG_SECONDS", "10"))
STRICT = os.environ.get("WSGW_FUZZ_STRICT") == "1"

# The compiled twins, when built (tests skip their comparisons otherwise).
frames_c: ModuleType | None
gate_c: ModuleType | None
inflate_c: ModuleType | None
try:
    frames_c = importlib.import_module("wsgw._core.frames")
    gate_c = importlib.import_module("wsgw._core.gate")
    inflate_c = importlib.import_module("wsgw._core.inflate")
except ImportError:  # pragma: no cover - the suite builds the core first
    frames_c = gate_c = inflate_c = None


class Violation(AssertionError):
    """The code under test broke its contract on this input. ``kind`` and ``details`` say
    how, for matching known findings: "twins" (compiled != pure; details: what differs,
    as (compiled, pure)), "cuts" (the outcome depends on how the input is cut; details:
    (whole, chunked)), "unexpected" (an exception the contract does not allow), "contract"."""

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        kind: str = "contract",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.target = target
        self.kind = kind
        self.details = details or {}


class Unexpected(Violation):
    """An exception the contract does not allow (``__cause__`` is the original)."""

    def __init__(self, target: str, where: str, exc: BaseException) -> None:
        message = f"{target}: {where} raised {type(exc).__name__}: {exc}"[:2000]
        super().__init__(message, target=target, kind="unexpected")
        self.exc = exc


def unexpected(target: str, where: str, exc: BaseException) -> Unexpected:
    """Unexpected(...) for ``exc``, whose traceback is cut to its innermost frames: the
    traceback of a RecursionError is a thousand frames, slow for pytest to print."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    if len(frames) > 40:
        exc = exc.with_traceback(frames[-30])
    err = Unexpected(target, where, exc)
    err.__cause__ = exc
    return err


def expect(condition: object, message: str) -> None:
    if not condition:
        raise Violation(message)


@dataclass(frozen=True)
class KnownBug:
    id: str
    summary: str
    matches: Callable[[Violation], bool]


_LIMIT_VS_ERROR = ({1009, 1007}, {1009, 1002})


def _undercount_before_error(v: Violation) -> bool:
    """The pure inflate meter counts fewer bytes than the compiled one (which counts what
    zlib's inflate wrote before it failed) for an error that follows a full output in
    the same byte (inflate_py._written_before_error says so): a refused message's
    inflated count differs, and when the limit falls in between, the status too: pure
    INVALID / REFERS_BACK (1007 / 1002), compiled TOO_BIG (1009), pure's also by the cuts."""
    d = v.details
    if v.target == "inflate" and v.kind == "twins":
        (cs, ps), (ci, pi) = d["statuses"], d["inflated"]
        if cs[:-1] != ps[:-1] or not cs or not ps:
            return False
        if cs[-1] == 1 and ps[-1] in (2, 3):
            return True
        return cs == ps and cs[-1] == 1 and ci > pi and d["ended"][0] == d["ended"][1]
    if v.target == "frames" and v.kind in ("twins", "cuts"):
        if not set(d) - {"impl"} <= {"error_code", "error_reason", "inflated_bytes"}:
            return False
        codes = d.get("error_code")
        if v.kind == "cuts":
            return d["impl"] == "python" and codes is not None and set(codes) in _LIMIT_VS_ERROR
        if codes is None:  # the count alone: the compiled twin counted more
            compiled, pure = d["inflated_bytes"]
            return pure is not None and compiled > pure
        return codes in ((1009, 1007), (1009, 1002))
    return False


# Reported findings still open, each with a reproducer in the corpus (*bug-*) and a
# strict xfail test in test_fuzz_findings.py. (Fixed ones leave a regression test there.)
KNOWN_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "inflate-undercount-before-error",
        "the pure inflate meter counts fewer inflated bytes than the compiled one before "
        "an error that follows a full output: close code 1007/1002 (pure) vs 1009 "
        "(compiled) when the limit falls in between",
        _undercount_before_error,
    ),
)


def matching_bug(err: BaseException) -> KnownBug | None:
    """The known finding ``err`` is, else None."""
    if isinstance(err, Violation):
        for bug in KNOWN_BUGS:
            if bug.matches(err):
                return bug
    return None


def known_bug(err: BaseException) -> KnownBug | None:
    """The known finding ``err`` is, to be let through (never with WSGW_FUZZ_STRICT=1)."""
    return None if STRICT else matching_bug(err)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (clipped, sorted, deduplicated); at least one piece."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def timed(target: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Fails an input on which the oracle ran longer than HANG_SECONDS (checked when it
    returns: a real hang is left to pytest-timeout, or libFuzzer's -timeout)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed_fn(*args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args, **kw)
            took = time.perf_counter() - start
            expect(took < HANG_SECONDS, f"{target}: took {took:.1f}s (a hang)")
            return result

        return timed_fn

    return wrap


# --- HTTP --------------------------------------------------------------------------------


def _check_error(target: str, err: GatewayError) -> None:
    """A GatewayError must be renderable as the HTTP refusal the gateway sends."""
    expect(isinstance(err.message, str) and err.message, f"{target}: empty error message")
    expect(400 <= err.http_status <= 599, f"{target}: http_status {err.http_status}")
    wire = error_response(err)
    try:
        back = ResponseReader().feed(wire)
    except GatewayError as exc:
        raise Violation(f"{target}: the refusal for {err!r} does not parse: {exc}") from exc
    expect(back is not None and back.status == err.http_status, f"{target}: refusal {wire!r}")


def _check_headers(target: str, headers: Headers) -> None:
    expect(isinstance(headers, Headers), f"{target}: headers {headers!r}")
    for name, value in headers.items:
        expect(isinstance(name, str) and isinstance(value, str), f"{target}: header types")
        expect(name == name.lower(), f"{target}: header name {name!r} not lower-cased")
        expect("\r" not in value and "\n" not in value, f"{target}: CR/LF in {value!r}")


@timed("http")
def check_request(data: bytes, cuts: Sequence[int] = ()) -> Request | GatewayError | None:
    """RequestReader fed ``data`` in pieces, as a connection would: each feed returns None
    (more needed), a Request, or raises a GatewayError; the gateway stops at either."""
    reader = RequestReader()
    fed = b""
    try:
        for chunk in split(data, cuts):
            fed += chunk
            try:
                request = reader.feed(chunk)
            except GatewayError as err:
                _check_error("http", err)
                return err
            if request is not None:
                _check_request(request, fed)
                return request
        return None
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("http", "RequestReader.feed", exc) from exc


def _check_request(request: Request, fed: bytes) -> None:
    expect(isinstance(request, Request), f"http: feed returned {request!r}")
    for name in ("method", "target", "path", "query"):
        expect(isinstance(getattr(request, name), str), f"http: Request.{name} not a str")
    expect(request.method != "", "http: empty method")
    expect(isinstance(request.body, bytes), "http: body not bytes")
    expect(isinstance(request.trailing, bytes), "http: trailing not bytes")
    expect(fed.endswith(request.trailing), "http: trailing is not the end of the input")
    expect(isinstance(request.is_upgrade, bool), "http: is_upgrade not a bool")
    _check_headers("http", request.headers)


@timed("response")
def check_response(data: bytes, cuts: Sequence[int] = ()) -> Response | GatewayError | None:
    """ResponseReader, as the backend leg feeds it: None, a Response or a GatewayError."""
    reader = ResponseReader()
    fed = b""
    try:
        for chunk in split(data, cuts):
            fed += chunk
            try:
                response = reader.feed(chunk)
            except GatewayError as err:
                _check_error("response", err)
                return err
            if response is not None:
                expect(isinstance(response, Response), f"response: feed gave {response!r}")
                expect(isinstance(response.status, int), "response: status not an int")
                expect(isinstance(response.reason, str), "response: reason not a str")
                expect(fed.endswith(response.trailing), "response: trailing not the input's end")
                _check_headers("response", response.headers)
                return response
        return None
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("response", "ResponseReader.feed", exc) from exc


# --- handshake ---------------------------------------------------------------------------

SUBPROTOCOLS = ("chat", "superchat", "v2.json", "mqtt")
OFFERS = (
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
)
NEEDS = (
    SelfContained(),
    SelfContained(client=True),
    SelfContained(backend=True),
    SelfContained(client=True, backend=True),
)


def _backend() -> Any:
    from wsgw.pipeline.route import Backend  # route.py is edited elsewhere: imported late

    return Backend.parse("ws://127.0.0.1:7001/chat")


@timed("handshake")
def check_client_handshake(data: bytes, need: SelfContained = NEEDS[0]) -> object:
    """A client's request through RequestReader, check_client_upgrade and, when accepted,
    backend_upgrade_request: GatewayErrors only, and what the gateway sends the backend is
    itself a valid upgrade request carrying the same offer."""
    request = check_request(data)
    if not isinstance(request, Request):
        return request
    try:
        try:
            offer = handshake.check_client_upgrade(request)
        except GatewayError as err:
            _check_error("handshake", err)
            return err
        expect(isinstance(offer, handshake.ClientOffer), f"handshake: offer {offer!r}")
        expect(request.headers.get("sec-websocket-key") == offer.key, "handshake: key")
        for ext in offer.extensions:
            expect(handshake._extension_name(ext) == "permessage-deflate", f"offer {ext!r}")
        try:
            wire, key = handshake.backend_upgrade_request(
                _backend(), request.target, offer, request, "192.0.2.1", False, need
            )
        except GatewayError as err:
            _check_error("handshake", err)
            return err
        expect(key != offer.key, "handshake: the client's key was forwarded")
        forwarded = RequestReader().feed(wire)
        expect(forwarded is not None, f"handshake: incomplete backend request {wire!r}")
        assert forwarded is not None
        expect(forwarded.is_upgrade, "handshake: the backend request is not an upgrade")
        again = handshake.check_client_upgrade(forwarded)
        expect(again.key == key, "handshake: backend request key")
        expect(again.subprotocols == offer.subprotocols, "handshake: subprotocols changed")
        expect(len(again.extensions) == len(offer.extensions), "handshake: offers changed")
        if need.backend:
            for ext in again.extensions:
                names = compression.parameter_names(ext)
                expect("server_no_context_takeover" in names, f"handshake: offer {ext!r}")
        expect(forwarded.headers.get("authorization") is None, "handshake: Authorization sent")
        return offer
    except Violation:
        raise
    except GatewayError as exc:  # from the re-check of our own request
        raise Violation(f"handshake: the gateway's backend request is refused: {exc}") from exc
    except Exception as exc:
        raise unexpected("handshake", "the client handshake", exc) from exc


@timed("handshake")
def check_backend_handshake(
    data: bytes,
    subprotocols: tuple[str, ...] = ("chat",),
    extensions: tuple[str, ...] = ("permessage-deflate",),
    need: SelfContained = NEEDS[0],
) -> object:
    """A backend's answer through ResponseReader and check_backend_answer (the client
    offered ``subprotocols``/``extensions``; the gateway sent SAMPLE_KEY): GatewayErrors
    only, and the 101 the client then gets passes the same checks from its side."""
    response = check_response(data)
    if not isinstance(response, Response):
        return response
    offer = handshake.ClientOffer(SAMPLE_KEY, subprotocols, extensions)
    try:
        try:
            answer = handshake.check_backend_answer(response, SAMPLE_KEY, offer, need)
        except GatewayError as err:
            _check_error("handshake", err)
            return err
        expect(response.status == 101, "handshake: accepted a non-101 answer")
        expect(
            answer.subprotocol is None or answer.subprotocol in subprotocols,
            f"handshake: subprotocol {answer.subprotocol!r} was not offered",
        )
        expect(answer.permessage_deflate == (answer.extensions is not None), "handshake: pmd")
        if answer.extensions is not None:
            names = compression.parameter_names(answer.extensions)
            expect(extensions, "handshake: an extension nobody offered")
            if need.client:
                expect("client_no_context_takeover" in names, "handshake: client ctx takeover")
            if need.backend:
                expect("server_no_context_takeover" in names, "handshake: server ctx takeover")
        to_client = handshake.client_switching_protocols(offer, answer)
        seen = ResponseReader().feed(to_client)
        expect(seen is not None and seen.status == 101, f"handshake: our 101 {to_client!r}")
        assert seen is not None
        handshake.check_backend_answer(seen, offer.key, offer)  # the client's own check
        return answer
    except Violation:
        raise
    except GatewayError as exc:  # from the checks of our own 101
        raise Violation(f"handshake: the gateway's 101 is not a valid answer: {exc}") from exc
    except Exception as exc:
        raise unexpected("handshake", "the backend handshake", exc) from exc


def check_compression(text: str, need: SelfContained) -> None:
    """compression.py on any extension text: BadGateway (answer_for_client) or a result
    that carries the parameters the directions need."""
    try:
        names = compression.parameter_names(text)
        expect(all(isinstance(n, str) for n in names), "compression: parameter names")
        for name in ("server_no_context_takeover", "client_no_context_takeover"):
            once = compression.with_parameter(text, name)
            expect(name in compression.parameter_names(once), f"compression: {once!r}")
            expect(compression.with_parameter(once, name) == once, "compression: not idempotent")
        for offer in compression.offers_for_backend((text,), need):
            if need.backend:
                names = compression.parameter_names(offer)
                expect("server_no_context_takeover" in names, f"compression: offer {offer!r}")
        try:
            answer = compression.answer_for_client(text, need)
        except GatewayError as err:
            expect(need.backend, "compression: refused an answer nothing was asked of")
            _check_error("compression", err)
            return
        if need.client:
            names = compression.parameter_names(answer)
            expect("client_no_context_takeover" in names, f"compression: answer {answer!r}")
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("handshake", "compression", exc) from exc


# --- frames ------------------------------------------------------------------------------

ERROR_CODES = frozenset((1002, 1007, 1008, 1009))
MESSAGE_LIMITS = (0, 1, 2, 125, 126, 1000, 12 * 1032, 65536, 1 << 20)
# Ping rates small enough that the clock cannot refill a token during one input (each
# run is timed; see _clock_safe): the outcome then does not depend on timing.
CONTROL_RATES = (0, 1, 2, 3)
GATES = ("none", "drop", "shape")


@dataclass(frozen=True)
class FrameCase:
    stream: bytes
    client: bool = False
    allow_rsv1: bool = True
    max_message_bytes: int = 0
    max_control_per_second: int = 0
    self_contained: bool = False
    gate: str = "none"  # a leased limit (no clock) that drops or shapes once out of tokens
    tokens: int = 1  # message tokens it starts with
    grants: tuple[int, ...] = (0,)  # message tokens granted before each chunk (cycled)
    cuts: tuple[int, ...] = ()


@dataclass
class RelayRun:
    impl: str
    calls: list[tuple[int, int]] = field(default_factory=list)  # (result, output size)
    out: bytes = b""
    counters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


COUNTERS = (
    "data_frames",
    "data_bytes",
    "control_frames",
    "closed",
    "close_code",
    "close_reason",
    "error_code",
    "error_reason",
    "compressed_messages",
    "compressed_bytes",
    "metered_bytes",
    "inflated_bytes",
    "dropped_messages",
    "dropped_frames",
    "drop_scope",
    "throttle_action",
    "throttle_scope",
    "retry_after_ns",
    "in_frame",
    "in_message",
)


def run_relay(
    frames: ModuleType, gates: ModuleType, case: FrameCase, chunks: list[bytes]
) -> RelayRun:
    impl = "cython" if frames is frames_c else "python"
    run = RelayRun(impl)
    start = time.perf_counter()
    where = f"{impl} FrameRelay"
    try:
        relay = frames.FrameRelay(
            from_client=case.client,
            allow_rsv1=case.allow_rsv1,
            max_message_bytes=case.max_message_bytes,
            self_contained=case.self_contained,
            max_control_per_second=case.max_control_per_second,
        )
        limit = None
        if case.gate != "none":
            limit = gates.Limit(60, 0, 0, 0)
            limit.set_leased(True, 0)
            limit.grant(case.tokens, 0)
            action = gates.ACTION_DROP if case.gate == "drop" else gates.ACTION_SHAPE
            relay.set_gate(gates.Gate([(limit, action, 7)]))
        out = bytearray()
        # A last empty call: retries after THROTTLED, and must be harmless otherwise.
        for i, chunk in enumerate([*chunks, b""]):
            if limit is not None:
                limit.grant(case.grants[i % len(case.grants)], 0)
            result = relay.process(chunk)
            piece = relay.take_output()
            expect(piece is None or (isinstance(piece, bytes) and piece), f"{where}: output")
            run.calls.append((result, len(piece) if piece else 0))
            if piece:
                out += piece
        run.out = bytes(out)
        run.counters = {name: getattr(relay, name) for name in COUNTERS}
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("frames", f"{where}.process", exc) from exc
    run.seconds = time.perf_counter() - start
    return run


def _clock_safe(case: FrameCase, *runs: RelayRun) -> bool:
    """Whether no ping token can have been refilled by the clock during the runs: a token
    is a second's worth / rate, so runs well under that cannot differ by timing."""
    rate = case.max_control_per_second
    return not rate or all(run.seconds < 0.25 / rate for run in runs)


def _frames_of(data: bytes) -> tuple[list[tuple[bytes, bool, bytes]], bool]:
    """(header without key, masked, unmasked payload) per frame, and whether the last one
    is cut short (header or payload)."""
    frames: list[tuple[bytes, bool, bytes]] = []
    pos = 0
    while pos < len(data):
        h = frames_py.parse_header(data, pos)
        if h is None:
            return frames, True
        hl = h.header_length
        head = data[pos : pos + hl - (4 if h.masked else 0)]
        payload = data[pos + hl : pos + hl + h.payload_length]
        key = h.mask_key
        if key is not None:
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        frames.append((head, h.masked, payload))
        if len(payload) < h.payload_length:
            return frames, True
        pos += hl + h.payload_length
    return frames, False


def _check_run(case: FrameCase, run: RelayRun) -> None:
    where = f"frames ({run.impl})"
    allowed = {frames_py.NEED_DATA, frames_py.CLOSE, frames_py.ERROR}
    if case.gate == "shape":
        allowed.add(frames_py.THROTTLED)
    ended = False
    for result, size in run.calls:
        expect(result in allowed, f"{where}: process returned {result}")
        if ended:
            expect((result, size) == (frames_py.NEED_DATA, 0), f"{where}: output after the end")
        ended = ended or result in (frames_py.CLOSE, frames_py.ERROR)
    c = run.counters
    results = [r for r, _ in run.calls]
    if frames_py.ERROR in results:
        code = c["error_code"]
        expect(code in ERROR_CODES, f"{where}: ERROR with close code {code}")
        expect(isinstance(c["error_reason"], str) and c["error_reason"], f"{where}: reason")
        expect(code != 1008 or case.max_control_per_second, f"{where}: 1008 without a rate")
        expect(code != 1009 or case.max_message_bytes, f"{where}: 1009 without a limit")
        expect(code != 1007 or case.allow_rsv1, f"{where}: 1007 without compression")
    else:
        expect(c["error_code"] == 0, f"{where}: error_code {c['error_code']} without ERROR")
    expect(c["closed"] == ended, f"{where}: closed={c['closed']} after {results}")
    if frames_py.CLOSE in results:
        expect(0 <= c["close_code"] <= 0xFFFF, f"{where}: close code {c['close_code']}")
    frames, cut = _frames_of(run.out)
    expect(not cut or c["in_frame"], f"{where}: output ends inside a frame, in_frame false")
    for _head, masked, _payload in frames:
        expect(masked == case.client, f"{where}: output frame masked={masked}")
    if case.gate == "none":  # nothing dropped or held: the output is the input's start
        if case.client:
            sent, _ = _frames_of(case.stream[: len(run.out)])
            expect(len(run.out) <= len(case.stream), f"{where}: more output than input")
            expect(frames == sent[: len(frames)], f"{where}: output is not the input re-masked")
        else:
            expect(case.stream.startswith(run.out), f"{where}: output is not the input's start")


def _comparable(run: RelayRun) -> dict[str, Any]:
    counters = dict(run.counters)
    if counters["in_frame"] and counters["error_code"] in (1002, 1007):
        # The meter refused inside a frame: how far it inflated depends on how the twins
        # slice the payload (the compiled one unmasks in slices). What goes out does not.
        counters["inflated_bytes"] = None
    return counters


def _unmasked(run: RelayRun, client: bool) -> object:
    return _frames_of(run.out) if client else run.out


@timed("frames")
def check_frames(case: FrameCase) -> RelayRun:
    """The relay on ``case``: the contract for both twins, compiled == pure, and (without a
    gate, whose grants follow the chunks) chunking independence."""
    chunks = split(case.stream, case.cuts)
    pure = run_relay(frames_py, gate_py, case, chunks)
    _check_run(case, pure)
    if frames_c is not None and gate_c is not None:
        compiled = run_relay(frames_c, gate_c, case, chunks)
        _check_run(case, compiled)
        if _clock_safe(case, pure, compiled):
            expect(
                compiled.calls == pure.calls,
                f"frames: compiled {compiled.calls} != pure {pure.calls}",
            )
            a, b = _comparable(compiled), _comparable(pure)
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            if diff:
                raise Violation(
                    f"frames: compiled != pure (compiled, pure): {diff}",
                    target="frames",
                    kind="twins",
                    details=diff,
                )
            expect(
                _unmasked(compiled, case.client) == _unmasked(pure, case.client),
                "frames: compiled output != pure output",
            )
    if case.gate == "none" and len(chunks) > 1:
        for frames, gates in ((frames_py, gate_py), (frames_c, gate_c)):
            if frames is None or gates is None:
                continue
            chunked = pure if frames is frames_py else run_relay(frames, gates, case, chunks)
            whole = run_relay(frames, gates, case, [case.stream])
            if not _clock_safe(case, whole, chunked):
                continue
            _check_chunking(case, whole, chunked)
    return pure


def _check_chunking(case: FrameCase, whole: RelayRun, chunked: RelayRun) -> None:
    where = f"frames ({whole.impl})"
    events = [r for r, _ in chunked.calls if r]
    expect(events == [r for r, _ in whole.calls if r], f"{where}: events depend on the cuts")
    a, b = dict(whole.counters), dict(chunked.counters)
    refused = a["in_frame"] and a["error_code"] in (1002, 1007, 1009)
    for name in ("inflated_bytes", "metered_bytes", "in_frame", "in_message"):
        if refused:  # where a refusal stops streaming depends on the cuts (documented)
            a.pop(name)
            b.pop(name)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        raise Violation(
            f"{where}: counters depend on the cuts (whole, chunked): {diff}",
            target="frames",
            kind="cuts",
            details={**diff, "impl": whole.impl},
        )
    wf, wcut = _frames_of(whole.out)
    cf, ccut = _frames_of(chunked.out)
    if refused:  # streamed: a chunk before the refused one is out already
        expect([h for h, _, _ in wf] == [h for h, _, _ in cf], f"{where}: frames differ")
        for (_, _, w), (_, _, c) in zip(wf, cf, strict=True):
            expect(c.startswith(w), f"{where}: output differs before a refusal")
    else:
        expect((wf, wcut) == (cf, ccut), f"{where}: output depends on the cuts")


# --- inflate -----------------------------------------------------------------------------

INFLATE_LIMITS = (0, 1, 100, 1000, 65535, 65536, 65537, 200_000)
SLICE = 65536  # the meters inflate in 64 KiB slices: a refusal overshoots by at most this


@dataclass(frozen=True)
class InflateCase:
    payload: bytes
    self_contained: bool = False
    limit: int = 0
    finish: bool = True
    cuts: tuple[int, ...] = ()


def run_meter(mod: ModuleType, case: InflateCase) -> tuple[list[int], int, bool]:
    """Statuses of each feed (and finish) up to the first refusal, inflated, ended."""
    name = "cython" if mod is inflate_c else "python"
    try:
        meter = mod.InflateMeter(self_contained=case.self_contained)
        meter.start()
        statuses = []
        for chunk in split(case.payload, case.cuts):
            statuses.append(meter.feed(chunk, case.limit))
            if statuses[-1] != mod.OK:
                break
        else:
            if case.finish:
                statuses.append(meter.finish(case.limit))
        result = statuses, meter.inflated, meter.ended
        # Restarted after anything, a meter measures the next message exactly.
        meter.start()
        fresh = zlib.compressobj(6, zlib.DEFLATED, -15)
        probe = fresh.compress(b"probe " * 100) + fresh.flush(zlib.Z_SYNC_FLUSH)
        status = meter.feed(probe[:-4], 0), meter.finish(0), meter.inflated
        expect(status == (mod.OK, mod.OK, 600), f"inflate ({name}): after a restart: {status}")
        return result
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("inflate", f"{name} InflateMeter", exc) from exc


@timed("inflate")
def check_inflate(case: InflateCase) -> tuple[list[int], int, bool]:
    pure = run_meter(inflate_py, case)
    runs = [("python", pure)]
    if inflate_c is not None:
        runs.append(("cython", run_meter(inflate_c, case)))
    for name, (statuses, inflated, _ended) in runs:
        where = f"inflate ({name})"
        expect(set(statuses) <= {0, 1, 2, 3}, f"{where}: statuses {statuses}")
        last = statuses[-1] if statuses else inflate_py.OK
        if last == inflate_py.REFERS_BACK:
            expect(case.self_contained, f"{where}: REFERS_BACK with a preset window")
        if last == inflate_py.TOO_BIG:
            expect(case.limit, f"{where}: TOO_BIG without a limit")
            expect(case.limit < inflated <= case.limit + SLICE, f"{where}: overshoot {inflated}")
        elif last == inflate_py.OK and case.limit:
            expect(inflated <= case.limit, f"{where}: OK at {inflated} > {case.limit}")
    if len(runs) == 2:
        (_, (ps, pi, pe)), (_, (cs, ci, ce)) = runs
        # How far a refused message got inflated may differ by a slice at most; on the way
        # to a refusal for TOO_BIG the twins still inflate the same input the same way.
        same_count = not ps or ps[-1] in (inflate_py.OK, inflate_py.TOO_BIG)
        if cs != ps or (same_count and (ci, ce) != (pi, pe)):
            raise Violation(
                f"inflate: compiled != pure (compiled, pure): statuses {cs}, {ps}; "
                f"inflated {ci}, {pi}; ended {ce}, {pe}",
                target="inflate",
                kind="twins",
                details={"statuses": (cs, ps), "inflated": (ci, pi), "ended": (ce, pe)},
            )
    return pure


# --- config ------------------------------------------------------------------------------

CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
_WORKDIR: str | None = None


def _workdir() -> str:
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="wsgw-fuzz-config-")
        atexit.register(shutil.rmtree, _WORKDIR, True)
    return _WORKDIR


@functools.cache
def good_config() -> GatewayConfig:
    return load_config(CORPUS / "config" / "config-good.yaml")


@timed("config")
def check_config(
    data: bytes, suffix: str = ".yaml", kind: str = "config", cross: bool = False
) -> object:
    """The loader on a file holding ``data``: a config or ConfigError, whose every line
    names the file (and, where given, a line within it)."""
    path = os.path.join(_workdir(), ("wsgw" if kind == "config" else "subscriptions") + suffix)
    with open(path, "wb") as f:
        f.write(data)
    display = display_path(path)
    try:
        try:
            if kind == "config":
                result: object = load_config(path)
                expect(isinstance(result, GatewayConfig), f"config: loaded {result!r}")
            else:
                result = load_subscriptions(path, good_config() if cross else None)
                expect(isinstance(result, Subscriptions), f"config: loaded {result!r}")
            return result
        except ConfigError as err:
            _check_config_error(err, display, data)
            return err
    except Violation:
        raise
    except Exception as exc:
        raise unexpected("config", f"load_{kind}", exc) from exc


def _check_config_error(err: ConfigError, display: str, data: bytes) -> None:
    expect(err.problems and str(err) == "\n".join(err.problems), "config: problems vs str")
    pattern = re.compile(re.escape(display) + r"(?::(\d+))?: \S")
    # YAML also breaks lines at a lone CR, NEL, LS and PS; a mark may sit past the end.
    text = data.decode("utf-8", "replace")
    lines = sum(text.count(c) for c in "\r\n\x85\u2028\u2029") + 2
    for problem in err.problems:
        m = pattern.match(problem)
        expect(m, f"config: {problem!r} does not start with {display}[:LINE]: ")
        assert m is not None
        if m[1] is not None:
            expect(1 <= int(m[1]) <= lines, f"config: line {m[1]} of a {lines}-line file")


# --- one input, options from its bytes (atheris, corpus replay) ----------------------------


def options_rng(data: bytes) -> random.Random:
    """Options for an input that carries none (atheris, replays): a function of its bytes,
    so an input always runs the same way and a mutation may run it differently."""
    return random.Random(zlib.crc32(data))


def cuts(rng: random.Random, n: int) -> tuple[int, ...]:
    """Where an input of ``n`` bytes is cut into reads: whole, a few cuts, byte by byte."""
    if n < 2 or rng.random() < 0.3:
        return ()
    if rng.random() < 0.1:
        return tuple(range(1, n))
    return tuple(sorted(rng.randrange(1, n) for _ in range(rng.randrange(1, 8))))


INTERESTING = (
    b"\x00", b"\xff", b"\r\n", b"\n", b"\r\n\r\n", b":", b" ", b",", b";", b"=", b"\x7f",
    b"\x80", b'"', b"&a ", b"*a", b"{", b"[", b"- ", b"\t", b"\x81\x80", b"\x7e\x00",
)  # fmt: skip


def mutate(rng: random.Random, pool: Sequence[bytes], max_ops: int = 4) -> bytes:
    """A seed from ``pool`` with 1..max_ops byte-level mutations: bit flips, overwrites,
    random or interesting inserts, deletes, duplications, truncation, splices."""
    data = bytearray(rng.choice(pool))
    for _ in range(rng.randint(1, max_ops)):
        op = rng.choice(
            ("flip", "set", "insert", "interesting", "delete", "dup", "truncate", "splice")
        )
        n = len(data)
        at = rng.randint(0, n)
        if op == "flip" and n:
            data[min(at, n - 1)] ^= 1 << rng.randrange(8)
        elif op == "set" and n:
            data[min(at, n - 1)] = rng.randrange(256)
        elif op == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == "interesting":
            data[at:at] = rng.choice(INTERESTING)
        elif op == "delete" and n:
            del data[at : at + rng.randint(1, 16)]
        elif op == "dup" and n:
            data[at:at] = data[at : min(n, at + rng.randint(1, 64))] * rng.randint(1, 4)
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = rng.choice(pool)
            data[at:] = other[rng.randint(0, len(other)) :]
    return bytes(data)


def frame_case(data: bytes, rng: random.Random, client: bool | None = None) -> FrameCase:
    return FrameCase(
        stream=data,
        client=rng.random() < 0.5 if client is None else client,
        allow_rsv1=rng.random() < 0.8,
        max_message_bytes=rng.choice(MESSAGE_LIMITS),
        max_control_per_second=rng.choice(CONTROL_RATES),
        self_contained=rng.random() < 0.5,
        gate=rng.choice(GATES),
        tokens=rng.randrange(3),
        grants=tuple(rng.randrange(3) for _ in range(rng.randrange(1, 4))),
        cuts=cuts(rng, len(data)),
    )


def inflate_case(data: bytes, rng: random.Random) -> InflateCase:
    return InflateCase(
        payload=data,
        self_contained=rng.random() < 0.5,
        limit=rng.choice(INFLATE_LIMITS),
        finish=rng.random() < 0.8,
        cuts=cuts(rng, len(data)),
    )


def _sniff_config(data: bytes) -> tuple[str, str]:
    head = data.lstrip()[:1]
    suffix = ".json" if head in (b"{", b"[") else ".toml" if b" = " in data else ".yaml"
    kind = "subscriptions" if b"applications" in data else "config"
    return suffix, kind


def run_one(target: str, data: bytes, name: str = "") -> object:
    """Run one input through ``target``'s oracle, options derived from the bytes (and the
    corpus file name, when it says which way the input goes)."""
    rng = options_rng(data)
    if target == "http":
        return check_request(data, cuts(rng, len(data)))
    if target == "response":
        return check_response(data, cuts(rng, len(data)))
    if target == "handshake":
        if name.startswith("resp-") or (not name and data.startswith(b"HTTP/")):
            subs = tuple(s for s in SUBPROTOCOLS if rng.random() < 0.5)
            exts = tuple(o for o in OFFERS if rng.random() < 0.4)
            return check_backend_handshake(data, subs, exts, rng.choice(NEEDS))
        check_compression(data.decode("latin-1")[:200], rng.choice(NEEDS))
        return check_client_handshake(data, rng.choice(NEEDS))
    if target == "frames":
        client = (
            True if name.startswith("client-") else False if name.startswith("backend-") else None
        )
        return check_frames(frame_case(data, rng, client))
    if target == "inflate":
        return check_inflate(inflate_case(data, rng))
    if target == "config":
        suffix, kind = _sniff_config(data)
        if name:
            suffix = os.path.splitext(name)[1]
            kind = "subscriptions" if name.startswith("subs-") else "config"
        elif rng.random() < 0.1:
            suffix = rng.choice(CONFIG_SUFFIXES)
        return check_config(data, suffix, kind, cross=rng.random() < 0.5)
    raise ValueError(f"unknown target {target!r}")


def seeds(target: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of ``target``'s corpus, sorted by name."""
    folder = CORPUS / target
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
