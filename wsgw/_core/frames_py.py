"""Pure-Python twin of frames.pyx: the sans-I/O WebSocket frame relay codec (RFC 6455 §5).

This module is the specification: frames.pyx must behave identically (the tests in
tests/core run both). No asyncio, sockets or logging here; the relay owns all I/O.

A ``FrameRelay`` handles one direction of a relayed connection. It checks every frame
header against the protocol, streams data payloads through as they arrive (never
buffering a whole frame), holds control frames until complete, and re-masks frames that
go from the client to the backend with a fresh key. Between calls it retains at most an
incomplete header (14 bytes) or an incomplete control frame (14 + 125 bytes), or, after
THROTTLED, the unconsumed rest of the input.

permessage-deflate (``allow_rsv1``): a compressed message (RSV1 on its first frame) that
needs it is inflated as it streams by an InflateMeter (inflate_py), which keeps nothing of
it: ``max_message_bytes`` then bounds its inflated size too (1009), and invalid DEFLATE data
is 1007. With ``self_contained`` (no context takeover was agreed), a message that starts
within 32 KiB of inflated output after a dropped compressed message and refers back before
its own start is 1002. A message is inflated only when the limit or that check can be
decided by it (see _start_compressed); others pass without inflating, and then invalid data
is left to the receiver, as without the gateway. The meter runs as the payload streams
through (so the outcome never depends on how the input is cut): such a refusal ends the
output inside the frame (``in_frame`` stays true), and no byte past the limit goes out.

Control frames: ``max_control_per_second`` limits pings and pongs (a bucket of one
second's worth); past it, ERROR with 1008 before the frame goes out.

Throttling (``set_gate``): the first frame of every data message asks the gate
(``Gate.admit``); its continuation frames are counted with ``Gate.force`` (a message is
never cut). Control frames never count and are never held back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .gate_py import ACTION_DROP, Gate
from .inflate_py import OK as METER_OK
from .inflate_py import REFERS_BACK as METER_REFERS_BACK
from .inflate_py import TOO_BIG as METER_TOO_BIG
from .inflate_py import InflateMeter, acquire_meter, release_meter
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
THROTTLED = 3

MAX_HEADER = 14
MAX_CONTROL_PAYLOAD = 125
MAX_RETAINED = MAX_HEADER + MAX_CONTROL_PAYLOAD

# Close codes that mark a missing or abnormal close; RFC 6455 §7.4.1 forbids sending them.
_UNSENDABLE_CODES = frozenset((1005, 1006, 1015))
_MAX_CLOSE_REASON = 123

_S_HEADER = 0  # expecting (the rest of) a frame header
_S_PAYLOAD = 1  # streaming a data frame's payload
_S_CONTROL = 2  # collecting a control frame's payload
_S_SKIP = 3  # consuming the payload of a dropped data frame

# _admit verdicts
_V_FORWARD = 0
_V_DROP = 1
_V_THROTTLE = 2

_PROTOCOL_ERROR = 1002
_INVALID_DATA = 1007
_POLICY_VIOLATION = 1008
_MESSAGE_TOO_BIG = 1009

_SECOND_NS = 1_000_000_000
_MAX_CONTROL_RATE = 1_000_000
_MAX_EXPANSION = 1032  # DEFLATE's largest output per input byte
_WINDOW = 32768  # how far back a compressed message may refer


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

    With a gate (``set_gate``), the first frame of each data message is admitted by it:
    - ACTION_DROP: the whole message (this frame and its continuations, also in later
      calls) is consumed and not output; control frames in between still go through.
      ``dropped_messages``/``dropped_frames`` count it, ``drop_scope`` names the limit.
    - ACTION_CLOSE / ACTION_SHAPE: process() returns THROTTLED, stopping BEFORE the frame:
      nothing of it is output or consumed, the rest of the input is retained (one chunk)
      and ``throttle_action``, ``throttle_scope``, ``retry_after_ns`` say why. A later
      process(b"") (or with more data, which is appended) retries from there.
    ``retry_after_ns`` is that of the latest refusal (drop or throttle).
    ``data_frames``/``data_bytes`` count forwarded data frames only. The clock
    (time.monotonic_ns) is read at most once per process() call, when a gate needs it.
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
        "_gate",
        "_dropping",
        "_pending",
        "_throttle_action",
        "_throttle_scope",
        "_retry_after_ns",
        "_dropped_messages",
        "_dropped_frames",
        "_drop_scope",
        "_self_contained",
        "_max_control",
        "_ctl_level",
        "_ctl_last",
        "_meter",
        "_ckey",
        "_final",
        "_compressed",
        "_verify_left",
        "_compressed_messages",
        "_compressed_bytes",
        "_metered_bytes",
        "_inflated_bytes",
    )

    def __init__(
        self,
        *,
        from_client: bool,
        allow_rsv1: bool = False,
        max_message_bytes: int = 0,
        self_contained: bool = False,
        max_control_per_second: int = 0,
    ) -> None:
        if max_message_bytes < 0:
            raise ValueError("max_message_bytes must be >= 0 (0 = no limit)")
        if not 0 <= max_control_per_second <= _MAX_CONTROL_RATE:
            raise ValueError("max_control_per_second must be in 0..1000000 (0 = no limit)")
        self._self_contained = bool(self_contained)
        self._max_control = max_control_per_second
        self._ctl_level = max_control_per_second * _SECOND_NS  # ns x tokens, one second's
        self._ctl_last = 0
        self._meter: InflateMeter | None = None  # the compressed message in flight
        self._ckey = b"\0\0\0\0"  # client direction: the peer's key of the frame
        self._final = False  # the frame being streamed ends its message
        self._compressed = False  # the message in flight is compressed
        self._verify_left = 0  # inflated bytes after a drop still to be checked
        self._compressed_messages = 0
        self._compressed_bytes = 0  # their payload bytes as sent
        self._metered_bytes = 0  # the payload bytes the meter inflated
        self._inflated_bytes = 0  # and what they inflated to
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
        self._gate: Gate | None = None
        self._dropping = False  # the current message was refused with ACTION_DROP
        self._pending: bytes | None = None  # input kept unconsumed after THROTTLED
        self._throttle_action = 0
        self._throttle_scope = 0
        self._retry_after_ns = 0
        self._dropped_messages = 0
        self._dropped_frames = 0
        self._drop_scope = 0

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
    gate = property(lambda self: self._gate)
    throttle_action = property(lambda self: self._throttle_action)
    throttle_scope = property(lambda self: self._throttle_scope)
    retry_after_ns = property(lambda self: self._retry_after_ns)
    dropped_messages = property(lambda self: self._dropped_messages)
    dropped_frames = property(lambda self: self._dropped_frames)
    drop_scope = property(lambda self: self._drop_scope)
    self_contained = property(lambda self: self._self_contained)
    max_control_per_second = property(lambda self: self._max_control)
    compressed_messages = property(lambda self: self._compressed_messages)
    compressed_bytes = property(lambda self: self._compressed_bytes)
    metered_bytes = property(lambda self: self._metered_bytes)
    inflated_bytes = property(lambda self: self._inflated_bytes)

    @property
    def in_frame(self) -> bool:
        """The output so far ends inside a data frame's payload: no other frame fits now."""
        return self._state == _S_PAYLOAD

    @property
    def in_message(self) -> bool:
        """The output so far ends inside a data message (a frame, or between fragments):
        only control frames may be inserted now."""
        return self._state == _S_PAYLOAD or (self._fragmented and not self._dropping)

    def set_gate(self, gate: Gate | None) -> None:
        """Admit data messages through ``gate`` from the next frame on (None: no throttling).

        Both relays of a connection share one gate, so both directions count together.
        """
        if gate is not None and not isinstance(gate, Gate):
            raise TypeError("gate must be a Gate or None")
        self._gate = gate

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
        """Protocol checks at header time; changes nothing but the error (process accepts)."""
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
        return NEED_DATA

    def _start_compressed(self, h: FrameHeader) -> None:
        """The first frame of a compressed message: inflate it only where that can matter.

        - Size: DEFLATE inflates at most 1032 bytes per byte (a 1-bit length 258 and a 1-bit
          distance in 2 bits), so a one-frame message of n payload bytes (+ the 4-byte tail)
          with (n + 4) * 1032 <= max_message_bytes cannot exceed it.
        - Self-containment: only a message that starts within the 32 KiB window after a
          dropped one can refer into what the receiver never saw; those are checked.
        """
        verify = self._self_contained and self._verify_left > 0
        limit = self._max_message
        self._compressed_messages += 1
        self._compressed = True
        if verify or (limit and not (h.fin and h.payload_length + 4 <= limit // _MAX_EXPANSION)):
            self._meter = acquire_meter(verify)

    def _meter_payload(self, payload: bytes | memoryview, phase: int, last: bool) -> int:
        """Measure payload bytes of the compressed message in flight (unmasked first in the
        client direction); with ``last`` the message ends here. NEED_DATA or ERROR."""
        meter = self._meter
        assert meter is not None
        if self._from_client:
            payload = apply_mask(payload, self._ckey, phase)
        before = meter.inflated
        limit = self._max_message
        status = meter.feed(payload, limit)
        if status == METER_OK and last:
            status = meter.finish(limit)
        self._inflated_bytes += meter.inflated - before
        if last and meter.self_contained:
            self._verify_left -= min(self._verify_left, meter.inflated)
        if last or status != METER_OK:
            self._meter = None
            release_meter(meter)
        if status == METER_OK:
            return NEED_DATA
        if status == METER_TOO_BIG:
            return self._fail(_MESSAGE_TOO_BIG, "message too big once inflated")
        if status == METER_REFERS_BACK:
            return self._fail(
                _PROTOCOL_ERROR,
                "compressed message refers to an earlier message (no context takeover agreed)",
            )
        return self._fail(_INVALID_DATA, "invalid compressed data")

    def _control_allowed(self, now: int) -> bool:
        """Take a token for a ping or pong: the bucket holds one second's worth."""
        rate = self._max_control
        if now > self._ctl_last:
            elapsed = min(now - self._ctl_last, _SECOND_NS)
            self._ctl_level = min(self._ctl_level + elapsed * rate, rate * _SECOND_NS)
            self._ctl_last = now
        if self._ctl_level < _SECOND_NS:
            return False
        self._ctl_level -= _SECOND_NS
        return True

    def _admit(self, h: FrameHeader, clock: list[int]) -> int:
        """The gate's verdict on a data frame that passed _check.

        ``clock`` holds this process() call's time once read (read on first need).
        """
        gate = self._gate
        if h.opcode == OP_CONT:
            if self._dropping:  # the rest of a dropped message
                return _V_DROP
            if gate is not None:
                if not clock:
                    clock.append(time.monotonic_ns())
                gate.force(h.payload_length, clock[0])
            return _V_FORWARD
        if gate is None:
            return _V_FORWARD
        if not clock:
            clock.append(time.monotonic_ns())
        action = gate.admit(h.payload_length, clock[0])
        if action == 0:
            return _V_FORWARD
        self._retry_after_ns = gate.retry_after_ns
        if action == ACTION_DROP:
            self._drop_scope = gate.last_scope
            self._dropped_messages += 1
            return _V_DROP
        self._throttle_action = action
        self._throttle_scope = gate.last_scope
        return _V_THROTTLE

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

    def _flush_whole(self) -> None:
        """Turn a zero-copy pending output into owned bytes, so more can follow it."""
        if self._whole is not None:
            self._out += self._whole
            self._whole = None

    def process(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            return NEED_DATA
        if self._pending is not None:  # input kept by THROTTLED comes first
            data, self._pending = self._pending + data, None
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        client = self._from_client
        out = self._out
        hbuf = self._hbuf
        old_hlen = len(hbuf)
        # Server direction: the output of one call is the retained bytes (once their frame
        # completes) followed by data[seg:end], verbatim; nothing is copied until the end,
        # unless a dropped frame cuts the verbatim run (what came before goes out at once).
        pre = bytes(hbuf) if old_hlen and not client else b""
        emitted = False
        seg = 0
        end = 0
        pos = 0
        before = 0
        clock: list[int] = []
        result = NEED_DATA
        while True:
            if self._state == _S_PAYLOAD:
                avail = n - pos
                if not avail:
                    break
                take = min(self._remaining, avail)
                if self._meter is not None:
                    last = self._final and take == self._remaining
                    if self._meter_payload(mv[pos : pos + take], self._phase, last) == ERROR:
                        result = ERROR  # inside the frame: in_frame stays true
                        break
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
            if self._state == _S_SKIP:
                avail = n - pos
                if not avail:
                    break
                take = min(self._remaining, avail)
                pos += take
                self._remaining -= take
                seg = end = pos
                if not self._remaining:
                    self._state = _S_HEADER
                continue
            # _S_HEADER
            avail = n - pos
            head_pos = pos
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
                if self._max_control and h.opcode != OP_CLOSE:
                    if not clock:
                        clock.append(time.monotonic_ns())
                    if not self._control_allowed(clock[0]):
                        self._fail(_POLICY_VIOLATION, "too many control frames")
                        hbuf.clear()
                        result = ERROR
                        break
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
            # data frame
            verdict = _V_FORWARD
            if self._gate is not None or self._dropping:
                verdict = self._admit(h, clock)
                if verdict == _V_THROTTLE:
                    # Stop before this frame: nothing of it is consumed or output. A header
                    # begun in an earlier call stays retained; the rest of the input is kept.
                    if from_hbuf:
                        del hbuf[before:]
                    if head_pos < n:
                        if head_pos == 0 and type(data) is bytes:
                            self._pending = data
                        else:
                            self._pending = bytes(mv[head_pos:])
                    result = THROTTLED
                    break
            if self._max_message:
                so_far = self._message_bytes if h.opcode == OP_CONT else 0
                self._message_bytes = so_far + h.payload_length
            self._fragmented = not h.fin
            self._remaining = h.payload_length
            if verdict == _V_DROP:
                if h.rsv1 and h.opcode != OP_CONT and self._self_contained:
                    self._verify_left = _WINDOW  # what follows may refer into it
                hbuf.clear()
                self._dropping = not h.fin
                self._dropped_frames += 1
                if not client:
                    # What came before this frame goes out now; the frame never does.
                    if not from_hbuf and (pre or frame_start > seg):
                        self._flush_whole()
                        out += pre
                        out += mv[seg:frame_start]
                    pre = b""
                    seg = end = pos
                if self._remaining:
                    self._state = _S_SKIP
                continue
            # permessage-deflate: the message is measured as its payload streams through.
            if h.opcode != OP_CONT:
                self._compressed = False
                if h.rsv1:
                    self._start_compressed(h)
            if self._compressed:
                self._compressed_bytes += h.payload_length
            if self._meter is not None:
                self._metered_bytes += h.payload_length
                self._final = h.fin
                # An empty last frame: the payload path will not see it.
                empty_end = h.payload_length == 0 and h.fin
                if empty_end and self._meter_payload(b"", 0, True) == ERROR:
                    hbuf.clear()
                    self._fragmented = False
                    result = ERROR
                    break
            self._data_frames += 1
            self._data_bytes += h.payload_length
            # forward the header now, then stream the payload
            head = bytes(hbuf) if from_hbuf else mv[frame_start:pos]
            hbuf.clear()
            if client:
                assert h.mask_key is not None
                key = fresh_key(h.mask_key)
                out += head[: hl - 4]
                out += key
                self._ckey = h.mask_key
                self._xkey = xor_keys(h.mask_key, key)
                self._phase = 0
            end = pos
            emitted = True
            if self._remaining:
                self._state = _S_PAYLOAD
        if result in (CLOSE, ERROR):
            self._closed = True
            if self._state != _S_PAYLOAD:
                self._state = _S_HEADER
        if emitted and not client:
            if (
                not out
                and self._whole is None
                and not pre
                and seg == 0
                and end == n
                and type(data) is bytes
            ):
                self._whole = data
            elif pre or end > seg:
                self._flush_whole()
                out += pre
                out += mv[seg:end]
        return result
