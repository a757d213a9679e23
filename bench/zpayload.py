"""Compressed messages for the load generator's `--deflate` scenarios (small-z, bulk-z).

Each message is JSON-like text (newline-delimited records), sent as one binary frame with
RSV1 set (permessage-deflate, RFC 7692): self-contained, so it inflates without any earlier
message, as `client_no_context_takeover` requires.

Deflating every message in the load generator would make it the bottleneck: zlib costs
~10 µs for 200 B and 100-300 µs for 16 KiB (levels 1-6, measured on the 2-core bench
machine), against the 80,000 and 45,000 messages per second the uncompressed scenarios
reach. So messages are *composed* from precompressed pieces, for ~1 µs each:

- A DEFLATE stream is a sequence of blocks. A piece deflated on its own and ended with a
  sync flush (an empty stored block: byte aligned, `00 00 ff ff`) may be followed by any
  other such piece; inflating the concatenation gives the concatenation of the texts.
- A pool of pieces (one record each for small messages, ~4 KiB of records each for large
  ones) is deflated once at start, each with a fresh compressor (level 6, 32 KiB window):
  a piece refers to nothing outside itself.
- Message n is `pieces[a] + pieces[b] + ...` drawn at random from the pool, with the
  sequence record `{"seq":n,"conn":c}` put in at a random place among them as a stored
  (uncompressed) block: 5 bytes of header, no compressor call. The `00 00 ff ff` of the
  last piece is removed (RFC 7692 §7.2.1), or, when the stored block is last, the 3 header
  bits of the removed empty block (one 00 byte) are appended.

So every message has its own sequence number, messages differ from each other throughout
(pieces drawn at random, the sequence record at a shifting offset; never identical, never
periodic), and each one's compressed bytes are known exactly, for the byte-for-byte check
of its echo. `Composer.self_check` inflates a sample with zlib at start, so a composition
bug cannot pass for a proxy's.
"""

from __future__ import annotations

import random
import struct
import zlib

SYNC_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with
# The records: a trading feed's fields, values drawn at random (compressible as JSON is:
# repeated keys, a few symbols and venues, digits).
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX", "ORCL", "INTC"]
VENUES = ["XNAS", "XNYS", "ARCX", "BATS", "IEXG"]
LARGE_PIECE = 4096  # raw bytes per piece in large messages (small ones: one piece)
POOL_BITS_SMALL, POOL_BITS_LARGE = 10, 8  # pool of 1024 small or 256 large pieces
_STORED = struct.Struct("<BHH")


def record(rng: random.Random) -> bytes:
    return (
        f'{{"id":{rng.randrange(10**7)},"sym":"{rng.choice(SYMBOLS)}",'
        f'"px":{rng.uniform(5, 900):.2f},"qty":{rng.randrange(1, 5000)},'
        f'"side":"{rng.choice(("buy", "sell"))}","venue":"{rng.choice(VENUES)}",'
        f'"ts":{1_700_000_000_000 + rng.randrange(10**9)}}}\n'
    ).encode()


def deflate_piece(text: bytes) -> bytes:
    """`text` deflated on its own, ending with a sync flush (so ending byte aligned)."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(SYNC_TAIL)
    return out


def stored_block(data: bytes) -> bytes:
    """`data` as one stored (uncompressed) DEFLATE block, not the last: BFINAL=0 and
    BTYPE=00 in 3 bits padded to a byte, then LEN and its complement, little-endian."""
    n = len(data)
    return _STORED.pack(0, n, n ^ 0xFFFF) + data


def seq_record(seq: int, conn: int) -> bytes:
    return b'{"seq":%d,"conn":%d}\n' % (seq, conn)


class Composer:
    """Messages of about `size` raw bytes, composed from a pool of precompressed pieces:
    one piece of records (~size) for small messages, pieces of ~LARGE_PIECE for large."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.rng = rng
        body = max(size - len(seq_record(10**6, 10)), 1)
        self.count = max(1, round(body / LARGE_PIECE))
        self.bits = POOL_BITS_LARGE if self.count > 1 else POOL_BITS_SMALL
        target = body / self.count
        texts: list[bytes] = []
        for _ in range(1 << self.bits):
            text = record(rng)
            while len(text) < target:
                # the last record goes in when that leaves the piece nearer its target
                extra = record(rng)
                if len(text) + len(extra) - target > target - len(text):
                    break
                text += extra
            texts.append(text)
        self.texts = texts
        self.raw_lengths = [len(t) for t in texts]
        self.pieces = [deflate_piece(t) for t in texts]
        self.last = [p[: -len(SYNC_TAIL)] for p in self.pieces]  # as the message's end

    def compose(self, seq: int, conn: int) -> tuple[bytes, int]:
        """(compressed payload, raw length) of message `seq`: the per-message path."""
        count, bits = self.count, self.bits
        r = self.rng.getrandbits(bits * count + 8)
        seq_text = b'{"seq":%d,"conn":%d}\n' % (seq, conn)  # seq_record, inlined
        n = len(seq_text)
        if count == 1:  # small messages: the same draws as below, ~2.5 times faster
            k = r >> 8
            if r & 1:
                return (
                    b"".join((self.pieces[k], _STORED.pack(0, n, n ^ 0xFFFF), seq_text, b"\x00")),
                    n + self.raw_lengths[k],
                )
            return _STORED.pack(0, n, n ^ 0xFFFF) + seq_text + self.last[k], n + self.raw_lengths[k]
        mask = (1 << bits) - 1
        at = (r & 0xFF) % (count + 1)  # where the sequence record goes
        r >>= 8
        raw_len = n
        parts = []
        for i in range(count):
            if i == at:
                parts.append(stored_block(seq_text))
            k = r & mask
            r >>= bits
            parts.append(self.pieces[k] if i < count - 1 or at == count else self.last[k])
            raw_len += self.raw_lengths[k]
        if at == count:
            parts.append(stored_block(seq_text) + b"\x00")  # + the removed block's header
        return b"".join(parts), raw_len

    def compose_with_text(self, seq: int, conn: int) -> tuple[bytes, int, bytes]:
        """`compose`, and the raw text the payload inflates to (the same draw, replayed)."""
        state = self.rng.getstate()
        payload, raw_len = self.compose(seq, conn)
        self.rng.setstate(state)
        count, bits = self.count, self.bits
        r = self.rng.getrandbits(bits * count + 8)
        at = (r & 0xFF) % (count + 1)
        r >>= 8
        chunks = []
        for i in range(count):
            if i == at:
                chunks.append(seq_record(seq, conn))
            chunks.append(self.texts[r & ((1 << bits) - 1)])
            r >>= bits
        if at == count:
            chunks.append(seq_record(seq, conn))
        return payload, raw_len, b"".join(chunks)

    def self_check(self, samples: int = 64) -> None:
        """Inflate `samples` composed messages as a receiver would (fresh inflater, the
        removed tail appended): each must give its text. AssertionError otherwise."""
        for seq in range(1, samples + 1):
            payload, raw_len, text = self.compose_with_text(seq, 0)
            inflated = zlib.decompressobj(-15).decompress(payload + SYNC_TAIL)
            assert inflated == text and len(text) == raw_len, f"composed message {seq} is wrong"
            assert seq_record(seq, 0) in text
