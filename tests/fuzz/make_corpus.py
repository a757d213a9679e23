"""Write the seed corpus of the fuzz harnesses: ``python tests/fuzz/make_corpus.py``.

Deterministic (fixed mask keys, zlib at fixed settings), so re-running it rewrites the same
files; files it does not write (regression reproducers, ``bug-*``) are left alone. Each
target's seeds are small, meaningful inputs: real requests and responses, the odd ones a
gateway meets, frame streams (compressed ones too), DEFLATE payloads and config files.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample key ...
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # ... and its accept value
MASK = b"\x37\xfa\x21\x3d"


def crlf(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


UPGRADE = [
    "GET /chat/1.0?room=7 HTTP/1.1",
    "Host: gw.example:9099",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
]


def upgrade(*extra: str, first: str | None = None, drop: tuple[str, ...] = ()) -> bytes:
    lines = [first or UPGRADE[0]]
    lines += [line for line in UPGRADE[1:] if line.split(":", 1)[0] not in drop]
    return crlf(*lines, *extra)


SWITCHING = [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Accept: {ACCEPT}",
]


def switching(*extra: str, drop: tuple[str, ...] = (), first: str | None = None) -> bytes:
    lines = [first or SWITCHING[0]]
    lines += [line for line in SWITCHING[1:] if line.split(":", 1)[0] not in drop]
    return crlf(*lines, *extra)


# --- frames ------------------------------------------------------------------------------


def apply_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i & 3] for i, b in enumerate(data))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = False,
    length: int | None = None,
    encoding: int | None = None,
) -> bytes:
    """One frame by hand; ``length`` lies about the payload length, ``encoding`` forces
    the 7, 16 or 64-bit length form."""
    n = len(payload) if length is None else length
    if encoding is None:
        encoding = 7 if n < 126 else 16 if n < 65536 else 64
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if encoding == 7:
        head.append(bit | n)
    elif encoding == 16:
        head.append(bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(bit | 127)
        head += n.to_bytes(8, "big")
    if mask:
        return bytes(head) + MASK + apply_mask(payload, MASK)
    return bytes(head) + payload


def deflated(message: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1): raw DEFLATE, sync flush, the
    trailing 00 00 ff ff removed."""
    c = compressor or zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def frame_streams(mask: bool) -> dict[str, bytes]:
    """Streams as one direction sends them (masked: the client's)."""

    def f(opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
        return frame(opcode, payload, mask=mask, **kw)

    text = b'{"op":"subscribe","channel":"prices","id":42}'
    ctx = zlib.compressobj(9, zlib.DEFLATED, -15)
    first, second = deflated(text, ctx), deflated(text.replace(b"42", b"43"), ctx)
    big = deflated(b"wsgw " * 4000)
    close_reason = (1000).to_bytes(2, "big") + b"bye"
    return {
        "text": f(1, b"hello"),
        "binary": f(2, bytes(range(64))),
        "empty-text": f(1),
        "fragmented": f(1, b"hel", fin=False) + f(0, b"lo ", fin=False) + f(0, b"world"),
        "ping-inside-fragments": f(2, b"ab", fin=False) + f(9, b"p") + f(0, b"cd"),
        "ping-pong": f(9, b"are you there") + f(10, b"are you there"),
        "close-code-reason": f(8, close_reason),
        "close-empty": f(8),
        "close-one-byte": f(8, b"\x03"),
        "close-then-more": f(8, close_reason) + f(1, b"after close"),
        "len16": f(2, bytes(300)),
        "len64-small": f(2, b"x" * 10, encoding=64),
        "len16-small": f(1, b"abc", encoding=16),
        "huge-announced": f(2, b"abc", length=(1 << 40)),
        "msb-length": f(2, b"", length=(1 << 63) + 5),
        "deflate-one": f(1, deflated(text), rsv=4),
        "deflate-context-takeover": f(1, first, rsv=4) + f(1, second, rsv=4),
        "deflate-fragmented": f(2, big[:40], rsv=4, fin=False) + f(0, big[40:]),
        "deflate-bomb": f(2, deflated(bytes(300_000)), rsv=4),
        "deflate-empty-final": f(1, deflated(text)[:10], rsv=4, fin=False) + f(0),
        "deflate-invalid": f(1, b"\xff\xfe\xfd\xfc", rsv=4),
        "deflate-stored-bad": f(1, deflated(b"hello") + bytes(4), rsv=4),
        "deflate-then-plain": f(1, deflated(text), rsv=4) + f(1, text),
        "rsv1-on-continuation": f(1, b"a", fin=False) + f(0, b"b", rsv=4),
        "rsv1-on-control": f(9, b"", rsv=4),
        "rsv2": f(1, b"x", rsv=2),
        "rsv3": f(1, b"x", rsv=1),
        "reserved-opcode": f(3, b"x") + f(11, b""),
        "control-too-long": f(9, bytes(126)),
        "fragmented-control": f(9, b"x", fin=False),
        "continuation-without-start": f(0, b"orphan"),
        "new-message-inside-fragments": f(1, b"a", fin=False) + f(1, b"b"),
        "many-pings": b"".join(f(9, bytes([i])) for i in range(12)),
        "invalid-utf8-text": f(1, b"\xff\xfe\xc3\x28"),
        "mixed": f(1, b"a")
        + f(9)
        + f(2, deflated(b"zzzz" * 50), rsv=4)
        + f(10, b"pong")
        + f(1, b"b" * 200)
        + f(8, close_reason),
        "wrong-masking": frame(1, b"hi", mask=not mask),
        "truncated-header": f(2, bytes(300))[:3],
    }


# --- inflate (raw DEFLATE payloads, permessage-deflate style) ------------------------------


def inflate_seeds() -> dict[str, bytes]:
    text = b"The quick brown fox jumps over the lazy dog. " * 20
    ctx = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated(text, ctx)
    refers_back = deflated(text, ctx)  # copies from the message before it
    fixed = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED)
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    full = zlib.compressobj(9, zlib.DEFLATED, -15)
    with_final = full.compress(text) + full.flush(zlib.Z_FINISH)
    small_window = zlib.compressobj(9, zlib.DEFLATED, -9)
    multi = zlib.compressobj(6, zlib.DEFLATED, -15)
    with_dict = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=b"wsgw-dictionary" * 4)
    blocks = multi.compress(b"a" * 100) + multi.flush(zlib.Z_FULL_FLUSH)
    blocks += multi.compress(bytes(range(256)) * 4) + multi.flush(zlib.Z_SYNC_FLUSH)
    return {
        "empty": b"",
        "hello": deflated(b"hello"),
        "text": deflated(text),
        "json": deflated(json.dumps({"a": list(range(50)), "b": "x" * 80}).encode()),
        "binary-random": deflated(bytes((i * 7919) & 0xFF for i in range(600))),
        "fixed-huffman": deflated(b"abcabcabcabc" * 30, fixed),
        "stored": deflated(b"stored block " * 10, stored),
        "final-block": with_final,
        "small-window": deflated(text, small_window),
        "multi-block": blocks[:-4],
        "refers-back": refers_back,
        "bomb-1m": deflated(bytes(1 << 20)),
        "bomb-64k-edge": deflated(bytes(65536)),
        "sync-tail-included": deflated(b"tail") + b"\x00\x00\xff\xff",
        "two-messages": deflated(b"one") + deflated(b"two"),
        "truncated": deflated(text)[:20],
        "invalid-block-type": b"\x07\x00",
        "invalid-bytes": b"\xff\xfe\xfd\xfc\xfb",
        "bad-stored-length": b"\x00\x05\x00\x00\x00hello",
        "zlib-header": zlib.compress(b"zlib, not raw deflate"),
        "gzip-like": b"\x1f\x8b\x08\x00" + deflated(b"gz"),
        "distance-too-far": deflated(b"wsgw-dictionary" * 3, with_dict),  # into the zdict
    }


# --- config ------------------------------------------------------------------------------

SHA = "ab" * 32

GOOD_CONFIG = f"""\
# wsgw.yaml
gateway:
  listen: "127.0.0.1:9099"
  admin_listen: "127.0.0.1:9901"
  max_message_bytes: 1048576
  max_pings_per_second: 50
security:
  signing_key_file: keys/signing.pem
  token_ttl_s: 3600
tiers:
  Gold: {{messages_per_minute: 600, burst: 10, count: client}}
  Silver: {{messages_per_minute: 60, on_limit: shape}}
  Bronze: {{messages_per_minute: 6, bytes_per_minute: 6000, backend_on_limit: drop}}
  Unlimited: {{}}
apis:
  - name: Chat
    context: /chat
    version: "1.0"
    default_version: true
    endpoints: {{production: "ws://127.0.0.1:7001/chat", sandbox: "ws://127.0.0.1:7002/chat"}}
    tiers: [Gold, Silver]
    throttle: Unlimited
  - name: Prices
    context: /prices
    version: "2"
    auth: none
    endpoints: {{production: "wss://prices.example:443/v2"}}
analytics:
  events_file: "-"
# consumer secret hashes look like {SHA}
"""

GOOD_SUBS = f"""\
applications:
  - name: MyApp
    tier: Gold
    keys:
      production: {{consumer_key: ck-prod, consumer_secret_sha256: "{SHA}"}}
      sandbox: {{consumer_key: ck-sand, consumer_secret_sha256: "{SHA}"}}
    subscriptions:
      - {{api: Chat, version: "1.0", tier: Gold}}
      - {{api: Prices, version: "2", tier: Unlimited, status: BLOCKED}}
"""

TOML_CONFIG = """\
[gateway]
listen = "127.0.0.1:9099"
redis_url = "redis://127.0.0.1:6379/0"

[tiers.Gold]
messages_per_minute = 600

[[apis]]
name = "Chat"
context = "/chat"
version = "1.0"
tiers = ["Gold"]
endpoints = { production = "ws://127.0.0.1:7001/chat" }

[analytics]
redis_stream = "wsgw:events"
"""


def config_seeds() -> dict[str, str | bytes]:
    as_data = {
        "tiers": {"Gold": {"messages_per_minute": 600}},
        "apis": [
            {
                "name": "Chat",
                "context": "/chat",
                "version": "1.0",
                "tiers": ["Gold"],
                "endpoints": {"production": "ws://127.0.0.1:7001/chat"},
            }
        ],
    }
    return {
        "config-good.yaml": GOOD_CONFIG,
        "config-minimal.yaml": "gateway: {listen: '0.0.0.0:0'}\n",
        "config-empty.yaml": "",
        "config-comment-only.yaml": "# nothing but a comment\n",
        "config-good.toml": TOML_CONFIG,
        "config-good.json": json.dumps(as_data, indent=2) + "\n",
        "config-anchors.yaml": (
            "tiers:\n  Gold: &gold {messages_per_minute: 600, burst: 5}\n"
            "  Platinum: *gold\n  Other: &o {messages_per_minute: 1}\n"
            "apis: []\n"
        ),
        "config-merge-key.yaml": (
            "tiers:\n  Base: &base {messages_per_minute: 10}\n  Gold: {<<: *base, burst: 3}\n"
        ),
        "config-tls.yaml": (
            "gateway:\n  tls: {listen: '127.0.0.1:9443', cert_file: c.pem, key_file: k.pem}\n"
            "  backend_tls: {ca_file: ca.pem, verify: false}\n"
        ),
        "config-bad-tab.yaml": "gateway:\n\tlisten: '127.0.0.1:1'\n",
        "config-bad-unknown-field.yaml": "gateway:\n  lisen: '127.0.0.1:9099'\n",
        "config-bad-type.yaml": "gateway:\n  max_message_bytes: lots\n",
        "config-bad-unquoted-version.yaml": (
            "apis:\n  - {name: A, context: /a, version: 1.0, "
            "endpoints: {production: 'ws://h:1/'}}\n"
        ),
        "config-bad-duplicate-key.yaml": "tiers:\n  Gold: {}\n  Gold: {burst: 1}\n",
        "config-bad-port.yaml": "gateway: {listen: '127.0.0.1:99999'}\n",
        "config-bad-same-address.yaml": (
            "gateway: {listen: '127.0.0.1:9000', admin_listen: '127.0.0.1:9000'}\n"
        ),
        "config-bad-url.yaml": (
            "apis:\n  - name: A\n    context: /a\n    version: '1'\n"
            "    endpoints: {production: 'ws://user:pw@h:70000/x'}\n"
        ),
        "config-bad-undefined-tier.yaml": (
            "tiers: {Gold: {}}\napis:\n  - {name: A, context: /a, version: '1', tiers: [Tin],"
            " endpoints: {production: 'ws://h:1/'}}\n"
        ),
        "config-bad-dict-key.yaml": "tiers:\n  'no spaces allowed': {}\n  ok: {}\n",
        "config-bad-list-root.yaml": "- gateway\n- tiers\n",
        "config-bad-scalar-root.yaml": "just a string\n",
        "config-bad-multi-doc.yaml": "gateway: {}\n---\ntiers: {}\n",
        "config-bad-non-string-key.yaml": "tiers:\n  ? [a, b]\n  : {}\n",
        "config-bad-redis-stream.yaml": "analytics: {redis_stream: events}\n",
        "config-bad-not-utf8.yaml": b"gateway:\n  listen: '\xff\xfe'\n",
        "config-bom.yaml": "\ufeffgateway: {listen: '127.0.0.1:9099'}\n",
        "config-bad-syntax.json": '{"tiers": {"Gold": {}},\n  "apis": [}\n',
        "config-bad-duplicate.json": '{"tiers": {"Gold": {}, "Gold": {"burst": 1}}}\n',
        "config-bad-syntax.toml": '[gateway]\nlisten = "127.0.0.1:9099\n',
        "config-bad-value.toml": "[tiers.Gold]\nmessages_per_minute = 0\n",
        "subs-good.yaml": GOOD_SUBS,
        "subs-empty.yaml": "applications: []\n",
        "subs-bad-sha.yaml": (
            "applications:\n  - name: A\n    keys:\n      production:\n"
            "        consumer_key: 'has:colon'\n        consumer_secret_sha256: XYZ\n"
        ),
        "subs-bad-duplicate-app.yaml": "applications:\n  - {name: A}\n  - {name: A}\n",
        "subs-bad-unknown-api.yaml": (
            "applications:\n  - name: A\n    subscriptions:\n"
            "      - {api: Nope, version: '9', tier: Gold}\n"
        ),
        "subs-good.json": json.dumps(
            {
                "applications": [
                    {
                        "name": "A",
                        "subscriptions": [{"api": "Chat", "version": "1.0", "tier": "Gold"}],
                    }
                ]
            }
        ),
    }


# --- HTTP --------------------------------------------------------------------------------


def http_seeds() -> dict[str, bytes]:
    token_body = b"grant_type=client_credentials"
    return {
        "get": crlf("GET / HTTP/1.1", "Host: gw.example"),
        "get-health": crlf(
            "GET /health?verbose=1 HTTP/1.1",
            "Host: 127.0.0.1:9901",
            "Accept: */*",
            "User-Agent: curl/8.5.0",
        ),
        "upgrade": upgrade(),
        "upgrade-token-query": upgrade(
            first="GET /chat/1.0?access_token=eyJhbGciOiJFUzI1NiJ9.e30.sig HTTP/1.1"
        ),
        "upgrade-bearer": upgrade(
            "Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig",
            "Sec-WebSocket-Protocol: chat, superchat",
        ),
        "upgrade-early-frames": upgrade("Origin: http://example.com")
        + frame(1, b"early", mask=True),
        "post-token": crlf(
            "POST /token HTTP/1.1",
            "Host: gw",
            "Authorization: Basic Y2s6Y3M=",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(token_body)}",
            body=token_body,
        ),
        "post-chunked": crlf(
            "POST /token HTTP/1.1",
            "Host: gw",
            "Transfer-Encoding: chunked",
            body=b"5;ext=1\r\ngrant\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        "pipelined-gets": crlf("GET /a HTTP/1.1", "Host: h") + crlf("GET /b HTTP/1.1", "Host: h"),
        "pipelined-get-upgrade": crlf("GET /health HTTP/1.1", "Host: h") + upgrade(),
        "pipelined-post-get": crlf(
            "POST /token HTTP/1.1", "Host: h", "Content-Length: 3", body=b"a=b"
        )
        + crlf("GET / HTTP/1.1", "Host: h"),
        "http10": crlf("GET / HTTP/1.0", "Host: h"),
        "http09": b"GET /\r\n",
        "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "absolute-target": crlf("GET http://gw.example/chat/1.0 HTTP/1.1", "Host: gw.example"),
        "asterisk-options": crlf("OPTIONS * HTTP/1.1", "Host: h"),
        "connect": crlf("CONNECT backend:7001 HTTP/1.1", "Host: backend:7001"),
        "obs-fold": crlf("GET / HTTP/1.1", "Host: h", "X-Long: first", "  continued"),
        "duplicate-host": crlf("GET / HTTP/1.1", "Host: a", "Host: b"),
        "no-host": crlf("GET / HTTP/1.1"),
        "header-no-colon": crlf("GET / HTTP/1.1", "Host h"),
        "header-space-before-colon": crlf("GET / HTTP/1.1", "Host : h"),
        "header-tab-value": crlf("GET / HTTP/1.1", "Host:\th\t"),
        "header-nul": crlf("GET / HTTP/1.1", "Host: h\x00x"),
        "header-latin1": crlf("GET / HTTP/1.1", "Host: h", "User-Agent: caf\xe9"),
        "lf-only": b"GET / HTTP/1.1\nHost: h\n\n",
        "leading-crlf": b"\r\n\r\n" + crlf("GET / HTTP/1.1", "Host: h"),
        "lowercase-method": crlf("get / HTTP/1.1", "Host: h"),
        "unknown-method": crlf("BREW /pot HTTP/1.1", "Host: h"),
        "cl-and-te": crlf(
            "POST / HTTP/1.1",
            "Host: h",
            "Content-Length: 4",
            "Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        "two-content-lengths": crlf(
            "POST / HTTP/1.1", "Host: h", "Content-Length: 1", "Content-Length: 2", body=b"ab"
        ),
        "negative-content-length": crlf("POST / HTTP/1.1", "Host: h", "Content-Length: -1"),
        "huge-content-length": crlf(
            "POST / HTTP/1.1", "Host: h", "Content-Length: 99999999999999999999"
        ),
        "body-over-limit-announced": crlf(
            "POST / HTTP/1.1", "Host: h", "Content-Length: 70000", body=b"x" * 64
        ),
        "expect-continue": crlf(
            "POST /token HTTP/1.1", "Host: h", "Expect: 100-continue", "Content-Length: 0"
        ),
        "percent-path": crlf("GET /chat%2F1.0/%00?q=%zz#frag HTTP/1.1", "Host: h"),
        "h2c-upgrade": crlf(
            "GET / HTTP/1.1",
            "Host: h",
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ),
        "many-headers": crlf(
            "GET / HTTP/1.1", "Host: h", *[f"X-H{i}: {'v' * i}" for i in range(60)]
        ),
        "tls-client-hello": bytes.fromhex("16030100a5010000a10303")
        + bytes(32)
        + b"\x00\x00\x02\x13\x01",
        "empty": b"",
        "only-crlf": b"\r\n",
    }


def response_seeds() -> dict[str, bytes]:
    return {
        "101": switching(),
        "101-deflate": switching("Sec-WebSocket-Extensions: permessage-deflate"),
        "101-deflate-params": switching(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
            "client_max_window_bits=10"
        ),
        "101-subprotocol": switching("Sec-WebSocket-Protocol: chat"),
        "101-early-frames": switching() + frame(1, b"hello from the backend") + frame(9),
        "101-lowercase": crlf(
            "HTTP/1.1 101 switching protocols",
            "upgrade: WebSocket",
            "connection: keep-alive, upgrade",
            f"sec-websocket-accept: {ACCEPT}",
        ),
        "101-no-reason": switching(first="HTTP/1.1 101"),
        "101-http10": switching(first="HTTP/1.0 101 Switching Protocols"),
        "101-duplicate-accept": switching(f"Sec-WebSocket-Accept: {ACCEPT}"),
        "101-obs-fold": switching("X-Folded: a", " b"),
        "101-lf-only": ("\n".join(SWITCHING) + "\n\n").encode(),
        "100-then-101": crlf("HTTP/1.1 100 Continue") + switching(),
        "200": crlf(
            "HTTP/1.1 200 OK", "Content-Type: text/plain", "Content-Length: 5", body=b"hello"
        ),
        "404-chunked": crlf(
            "HTTP/1.1 404 Not Found",
            "Transfer-Encoding: chunked",
            body=b"9\r\nnot found\r\n0\r\n\r\n",
        ),
        "302": crlf("HTTP/1.1 302 Found", "Location: /elsewhere", "Content-Length: 0"),
        "401": crlf(
            "HTTP/1.1 401 Unauthorized",
            'WWW-Authenticate: Bearer error="invalid_token"',
            "Content-Length: 0",
        ),
        "503-until-close": crlf(
            "HTTP/1.1 503 Service Unavailable", "Retry-After: 3", "Connection: close", body=b"busy"
        ),
        "204": crlf("HTTP/1.1 204 No Content"),
        "status-999": crlf("HTTP/1.1 999 Odd", "Content-Length: 0"),
        "status-2-digits": crlf("HTTP/1.1 42 Short"),
        "garbage-ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
        "tls-alert": b"\x15\x03\x01\x00\x02\x02\x46",
        "header-nul": switching("X-Bad: a\x00b"),
        "header-latin1": switching("Server: caf\xe9"),
        "empty": b"",
        "truncated-head": switching()[:40],
    }


def handshake_seeds() -> dict[str, bytes]:
    """``req-*``: client upgrade requests; ``resp-*``: backend answers (RFC sample key)."""
    pmd = "Sec-WebSocket-Extensions: "
    return {
        "req-valid": upgrade(),
        "req-subprotocols": upgrade(
            "Sec-WebSocket-Protocol: chat, superchat", "Sec-WebSocket-Protocol: v2.json"
        ),
        "req-deflate": upgrade(pmd + "permessage-deflate; client_max_window_bits"),
        "req-deflate-offers": upgrade(
            pmd + "permessage-deflate; server_no_context_takeover; client_max_window_bits=10, "
            "permessage-deflate, x-webkit-deflate-frame"
        ),
        "req-deflate-quoted": upgrade(pmd + 'permessage-deflate; x="a,b;c"'),
        "req-forwarded": upgrade(
            "X-Forwarded-For: 10.0.0.1, 10.0.0.2",
            "Origin: https://app",
            "User-Agent: Mozilla/5.0 (caf\xe9)",
        ),
        "req-upgrade-mixed-case": upgrade(
            first="GET /chat HTTP/1.1", drop=("Upgrade", "Connection")
        ).replace(
            b"\r\n\r\n", b"\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\r\n"
        ),
        "req-post": upgrade(first="POST /chat HTTP/1.1"),
        "req-no-upgrade": upgrade(drop=("Upgrade",)),
        "req-no-connection-upgrade": upgrade(drop=("Connection",)).replace(
            b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n"
        ),
        "req-version-8": upgrade(drop=("Sec-WebSocket-Version",)).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Version: 8\r\n\r\n"
        ),
        "req-no-key": upgrade(drop=("Sec-WebSocket-Key",)),
        "req-two-keys": upgrade(f"Sec-WebSocket-Key: {KEY}"),
        "req-short-key": upgrade(drop=("Sec-WebSocket-Key",)).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n\r\n"
        ),
        "req-key-not-base64": upgrade(drop=("Sec-WebSocket-Key",)).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n\r\n"
        ),
        "req-key-latin1": upgrade(drop=("Sec-WebSocket-Key",)).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\xe9=\r\n\r\n"
        ),
        "req-two-hosts": upgrade("Host: other"),
        "req-no-host": upgrade(drop=("Host",)),
        "req-absolute-target": upgrade(first="GET ws://gw.example/chat HTTP/1.1"),
        "req-early-frame": upgrade() + frame(1, b"hi", mask=True),
        "resp-valid": switching(),
        "resp-deflate": switching(pmd + "permessage-deflate"),
        "resp-deflate-snct": switching(pmd + "permessage-deflate; server_no_context_takeover"),
        "resp-deflate-twice": switching(pmd + "permessage-deflate, permessage-deflate"),
        "resp-unknown-extension": switching(pmd + "x-webkit-deflate-frame"),
        "resp-subprotocol": switching("Sec-WebSocket-Protocol: chat"),
        "resp-subprotocol-not-offered": switching("Sec-WebSocket-Protocol: mqtt"),
        "resp-wrong-accept": switching(drop=("Sec-WebSocket-Accept",)).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
        ),
        "resp-no-upgrade": switching(drop=("Upgrade",)),
        "resp-200": crlf("HTTP/1.1 200 OK", "Content-Length: 0"),
        "resp-403": crlf("HTTP/1.1 403 Forbidden", "Content-Length: 9", body=b"forbidden"),
        "resp-value-ctl": switching("Sec-WebSocket-Protocol: ch\x01at"),
    }


def write_target(target: str, seeds: Mapping[str, bytes | str], suffix: str = "") -> int:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        raw = data.encode("utf-8") if isinstance(data, str) else data
        (folder / f"{name}{suffix}").write_bytes(raw)
    return len(seeds)


def main() -> None:
    counts = {
        "http": write_target("http", http_seeds(), ".http"),
        "response": write_target("response", response_seeds(), ".http"),
        "handshake": write_target("handshake", handshake_seeds(), ".http"),
        "frames": write_target(
            "frames",
            {f"client-{k}": v for k, v in frame_streams(mask=True).items()}
            | {f"backend-{k}": v for k, v in frame_streams(mask=False).items()},
            ".bin",
        ),
        "inflate": write_target("inflate", inflate_seeds(), ".bin"),
        "config": write_target("config", config_seeds()),
    }
    for target, n in counts.items():
        print(f"{target}: {n} seeds in {CORPUS / target}")


if __name__ == "__main__":
    main()
