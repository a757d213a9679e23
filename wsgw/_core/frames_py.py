"""Pure-Python twin of frames.pyx: the sans-I/O WebSocket frame relay codec (RFC 6455 §5).

This module is the specification: frames.pyx must behave identically (the tests in
tests/core run both). No asyncio, sockets or logging here; the relay owns all I/O.

A ``FrameRelay`` handles one direction of a relayed connection. It checks every frame
header against the protocol, streams data payloads through as they arrive (never
buffering a whole frame), holds control frames until complete, and re-masks frames that
go from the client to the backend with a fresh key. Between calls it retains at most an
incomplete header (14 bytes) or an incomplete control frame (14 + 125 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from .mask_py import apply_mask, fresh_key, random_key, xor_keys

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

# process() results
NEED_DATA = 0
CLOSE = 1
ERROR = 2

MAX_HEADER = 14
MAX_CONTROL_PAYLOAD = 125
MAX_RETAINED = MAX_HEADER + MAX_CONTROL_PAYLOAD

# Close codes that mark a missing or abnormal close; RFC 6455 §7.4.1 forbids sending them.
_UNSENDABLE_CODES = frozenset((1005, 1006, 1015))
_MAX_CLOSE_REASON = 123

_S_HEADER = 0  # expecting (the rest of) a frame header
_S_PAYLOAD = 1  # streaming a data frame's payload
_S_CONTROL = 2  # collecting a control frame's payload

_PROTOCOL_ERROR = 1002
_MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class FrameHeader:
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    mask_key: bytes | None
    payload_length: int
    header_length: int


def _parse(buf: bytes | bytearray | memoryview, offset: int) -> FrameHeader | None:
    n = len(buf) - offset
    if n < 2:
        return None
    b0 = buf[offset]
    b1 = buf[offset + 1]
    length = b1 & 0x7F
    masked = bool(b1 & 0x80)
    header_length = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
    if n < header_length:
        return None
    if length == 126:
        length = int.from_bytes(buf[offset + 2 : offset + 4], "big")
    elif length == 127:
        length = int.from_bytes(buf[offset + 2 : offset + 10], "big")
    key_start = offset + header_length - 4
    return FrameHeader(
        fin=bool(b0 & 0x80),
        rsv1=bool(b0 & 0x40),
        rsv2=bool(b0 & 0x20),
        rsv3=bool(b0 & 0x10),
        opcode=b0 & 0x0F,
        masked=masked,
        mask_key=bytes(buf[key_start : key_start + 4]) if masked else None,
        payload_length=length,
        header_length=header_length,
    )


def parse_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader | None:
    """Parse the frame header at ``buf[offset:]``; None when more bytes are needed.

    Parsing only: no protocol policy is checked (reserved bits, opcodes, lengths).
    """
    if offset < 0 or offset > len(buf):
        raise ValueError("offset out of range")
    return _parse(buf, offset)


def build_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bool = False,
) -> bytes:
    """One frame with the shortest length encoding; ``mask=True`` uses a fresh random key.

    No policy is checked (a 200-byte ping is built as asked), so tests can build bad frames.
    """
    if not 0 <= opcode <= 15:
        raise ValueError("opcode must be in 0..15")
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += n.to_bytes(8, "big")
    if not mask:
        return bytes(head) + bytes(payload)
    key = random_key()
    return bytes(head) + key + apply_mask(payload, key)


def build_close_payload(code: int, reason: str | bytes = b"") -> bytes:
    """The payload of a close frame: 2-byte code + reason of at most 123 bytes.

    1005, 1006 and 1015 must never be sent, so they give an empty payload (a close frame
    without a code). A str reason is cut at a UTF-8 character boundary.
    """
    if not 0 <= code <= 0xFFFF:
        raise ValueError("close code must be in 0..65535")
    if code in _UNSENDABLE_CODES:
        return b""
    if isinstance(reason, str):
        raw = reason.encode("utf-8")
        cut = min(len(raw), _MAX_CLOSE_REASON)
        if cut < len(raw):
            while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # continuation byte
                cut -= 1
    else:
        raw = bytes(reason)
        cut = min(len(raw), _MAX_CLOSE_REASON)
    return code.to_bytes(2, "big") + raw[:cut]


class FrameRelay:
    """Validates and forwards the frames of one direction of a WebSocket connection.

    ``process(data)`` consumes bytes and returns NEED_DATA, CLOSE (a close frame went
    through; it is the last thing in the output) or ERROR (``error_code``/``error_reason``
    say why; the output holds what came before the offending frame). ``take_output()``
    hands over everything produced since the last call as one bytes object.
    """

    __slots__ = (
        "_from_client",
        "_allow_rsv1",
        "_max_message",
        "_state",
        "_hbuf",
        "_ctl",
        "_remaining",
        "_xkey",
        "_phase",
        "_fragmented",
        "_message_bytes",
        "_out",
        "_whole",
        "_close_code",
        "_close_reason",
        "_error_code",
        "_error_reason",
        "_data_frames",
        "_data_bytes",
        "_control_frames",
        "_closed",
    )

    def __init__(
        self, *, from_client: bool, allow_rsv1: bool = False, max_message_bytes: int = 0
    ) -> None:
        if max_message_bytes < 0:
            raise ValueError("max_message_bytes must be >= 0 (0 = no limit)")
        self._from_client = bool(from_client)
        self._allow_rsv1 = bool(allow_rsv1)
        self._max_message = max_message_bytes
        self._state = _S_HEADER
        self._hbuf = bytearray()  # retained bytes: partial header, or control frame so far
        self._ctl: FrameHeader | None = None  # header of the control frame being collected
        self._remaining = 0  # payload bytes of the current data frame still to come
        self._xkey = b"\0\0\0\0"  # client key XOR relay key, for the frame being streamed
        self._phase = 0  # payload offset mod 4 of the next streamed byte
        self._fragmented = False
        self._message_bytes = 0
        self._out = bytearray()
        self._whole: bytes | None = None  # an input passed through unchanged (zero copy)
        self._close_code = 0
        self._close_reason = b""
        self._error_code = 0
        self._error_reason = ""
        self._data_frames = 0
        self._data_bytes = 0
        self._control_frames = 0
        self._closed = False

    from_client = property(lambda self: self._from_client)
    allow_rsv1 = property(lambda self: self._allow_rsv1)
    max_message_bytes = property(lambda self: self._max_message)
    close_code = property(lambda self: self._close_code)
    close_reason = property(lambda self: self._close_reason)
    error_code = property(lambda self: self._error_code)
    error_reason = property(lambda self: self._error_reason)
    data_frames = property(lambda self: self._data_frames)
    data_bytes = property(lambda self: self._data_bytes)
    control_frames = property(lambda self: self._control_frames)
    closed = property(lambda self: self._closed)

    def take_output(self) -> bytes | None:
        whole = self._whole
        if whole is not None:
            self._whole = None
            return whole
        if not self._out:
            return None
        out = bytes(self._out)
        self._out.clear()
        return out

    def _fail(self, code: int, reason: str) -> int:
        self._error_code = code
        self._error_reason = reason
        return ERROR

    def _check(self, h: FrameHeader) -> int:
        """Protocol checks at header time; accepts the frame (state, counters) if it passes."""
        if self._from_client:
            if not h.masked:
                return self._fail(_PROTOCOL_ERROR, "frame not masked")
        elif h.masked:
            return self._fail(_PROTOCOL_ERROR, "frame masked")
        if h.rsv2 or h.rsv3:
            return self._fail(_PROTOCOL_ERROR, "reserved bit RSV2 or RSV3 set")
        op = h.opcode
        if 3 <= op <= 7 or op >= 11:
            return self._fail(_PROTOCOL_ERROR, "reserved opcode")
        length = h.payload_length
        if length >> 63:
            return self._fail(_PROTOCOL_ERROR, "payload length has the most significant bit set")
        if op >= OP_CLOSE:
            if length > MAX_CONTROL_PAYLOAD:
                return self._fail(_PROTOCOL_ERROR, "control frame payload too long")
            if not h.fin:
                return self._fail(_PROTOCOL_ERROR, "fragmented control frame")
            if h.rsv1:
                return self._fail(_PROTOCOL_ERROR, "RSV1 set on a control frame")
            if op == OP_CLOSE and length == 1:
                return self._fail(_PROTOCOL_ERROR, "close frame payload of 1 byte")
            return NEED_DATA
        if op == OP_CONT:
            if not self._fragmented:
                return self._fail(_PROTOCOL_ERROR, "continuation frame without a message")
            if h.rsv1:
                return self._fail(_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
        else:
            if self._fragmented:
                return self._fail(_PROTOCOL_ERROR, "new message inside a fragmented message")
            if h.rsv1 and not self._allow_rsv1:
                return self._fail(_PROTOCOL_ERROR, "RSV1 set without an extension")
        if self._max_message:
            so_far = self._message_bytes if op == OP_CONT else 0
            if so_far + length > self._max_message:
                return self._fail(_MESSAGE_TOO_BIG, "message too big")
            self._message_bytes = so_far + length
        self._fragmented = not h.fin
        self._data_frames += 1
        self._data_bytes += length
        return NEED_DATA

    def _emit_control(self, frame: bytes | memoryview, h: FrameHeader) -> int:
        """Forward a complete control frame; returns CLOSE for a close frame."""
        hl = h.header_length
        payload = frame[hl:]
        if self._from_client:
            assert h.mask_key is not None
            key = fresh_key(h.mask_key)
            self._out += frame[: hl - 4]
            self._out += key
            self._out += apply_mask(payload, xor_keys(h.mask_key, key))
            payload = apply_mask(payload, h.mask_key)
        self._control_frames += 1
        if h.opcode != OP_CLOSE:
            return NEED_DATA
        if len(payload) >= 2:
            self._close_code = int.from_bytes(payload[:2], "big")
            self._close_reason = bytes(payload[2:])
        else:
            self._close_code = 1005
            self._close_reason = b""
        return CLOSE

    def process(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            return NEED_DATA
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        client = self._from_client
        out = self._out
        hbuf = self._hbuf
        old_hlen = len(hbuf)
        # Server direction: the output of one call is the retained bytes (once their frame
        # completes) followed by data[:end], verbatim; nothing is copied until the end.
        pre = bytes(hbuf) if old_hlen and not client else b""
        emitted = False
        end = 0
        pos = 0
        result = NEED_DATA
        while True:
            if self._state == _S_PAYLOAD:
                avail = n - pos
                if not avail:
                    break
                take = min(self._remaining, avail)
                if client:
                    out += apply_mask(mv[pos : pos + take], self._xkey, self._phase)
                    self._phase = (self._phase + take) & 3
                pos += take
                self._remaining -= take
                end = pos
                emitted = True
                if not self._remaining:
                    self._state = _S_HEADER
                continue
            if self._state == _S_CONTROL:
                ctl = self._ctl
                assert ctl is not None
                total = ctl.header_length + ctl.payload_length
                take = min(total - len(hbuf), n - pos)
                hbuf += mv[pos : pos + take]
                pos += take
                if len(hbuf) < total:
                    break
                frame = bytes(hbuf)
                hbuf.clear()
                self._state = _S_HEADER
                result = self._emit_control(frame, ctl)
                end = pos
                emitted = True
                if result == CLOSE:
                    break
                continue
            # _S_HEADER
            avail = n - pos
            if not hbuf:
                if not avail:
                    break
                h = _parse(mv, pos)
                if h is None:
                    hbuf += mv[pos:]
                    pos = n
                    break
                hl = h.header_length
                frame_start = pos
                pos += hl
                from_hbuf = False
            else:
                before = len(hbuf)
                take = min(MAX_HEADER - before, avail)
                hbuf += mv[pos : pos + take]
                h = _parse(hbuf, 0)
                if h is None:
                    pos += take
                    break
                hl = h.header_length
                del hbuf[hl:]  # give back what belongs to the payload
                pos += hl - before
                frame_start = 0
                from_hbuf = True
            if self._check(h) == ERROR:
                hbuf.clear()
                result = ERROR
                break
            if h.opcode >= OP_CLOSE:
                if not from_hbuf and n - pos >= h.payload_length:
                    pos += h.payload_length
                    result = self._emit_control(mv[frame_start:pos], h)
                    end = pos
                    emitted = True
                    if result == CLOSE:
                        break
                else:
                    if not from_hbuf:
                        hbuf += mv[frame_start:pos]
                    self._ctl = h
                    self._state = _S_CONTROL
                continue
            # data frame: forward the header now, then stream the payload
            head = bytes(hbuf) if from_hbuf else mv[frame_start:pos]
            hbuf.clear()
            if client:
                assert h.mask_key is not None
                key = fresh_key(h.mask_key)
                out += head[: hl - 4]
                out += key
                self._xkey = xor_keys(h.mask_key, key)
                self._phase = 0
            end = pos
            emitted = True
            self._remaining = h.payload_length
            if self._remaining:
                self._state = _S_PAYLOAD
        if result != NEED_DATA:
            self._closed = True
            self._state = _S_HEADER
        if emitted and not client:
            if not out and self._whole is None and not pre and end == n and type(data) is bytes:
                self._whole = data
            else:
                if self._whole is not None:
                    out += self._whole
                    self._whole = None
                out += pre
                out += mv[:end]
        return result
