"""What each way of making drops safe under permessage-deflate costs, on two message streams.

The gateway may drop a message only if the receiver's inflater does not depend on it. Three
ways to get there (RFC 7692): negotiate no context takeover for that direction, strip the
extension, or inflate every message and deflate it again towards the receiver. This prints,
per stream, the bytes on the wire for each (relative to the peers' own context takeover)
and the gateway CPU per message: metering (what wsgw does) against inflate + re-deflate.

    python bench/deflate_choice.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
import zlib

from wsgw._core import inflate

TAIL = b"\x00\x00\xff\xff"


def ticker(n: int, rng: random.Random) -> list[bytes]:
    """Small JSON updates with the same keys: where context takeover helps most."""
    symbols = ["".join(rng.choices(string.ascii_uppercase, k=4)) for _ in range(50)]
    return [
        json.dumps(
            {
                "type": "ticker",
                "symbol": rng.choice(symbols),
                "price": round(rng.uniform(1, 1000), 2),
                "volume": rng.randint(1, 10**6),
                "seq": i,
            }
        ).encode()
        for i in range(n)
    ]


def documents(n: int, rng: random.Random) -> list[bytes]:
    """2.5 KB texts sharing runs at shifting offsets (as tests/integration uses)."""
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(300)]
    text = " ".join(rng.choices(words, k=400))
    return [
        (f"{i}:" + text[(i * 97) % len(text) :] + text[: (i * 97) % len(text)]).encode()
        for i in range(n)
    ]


def wire(messages: list[bytes], takeover: bool) -> tuple[int, list[bytes]]:
    """Total payload bytes as permessage-deflate (window 15), and the payloads."""
    payloads = []
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    for m in messages:
        if not takeover:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
        payloads.append(data[:-4])
    return sum(map(len, payloads)), payloads


def per_message_us(fn, payloads: list[bytes]) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for p in payloads:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return best / len(payloads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    print("stream     raw  takeover  self-contained  stripped | meter µs  re-deflate µs")
    for name, messages in (
        ("ticker", ticker(args.messages, rng)),
        ("documents", documents(args.messages, rng)),
    ):
        raw = sum(map(len, messages))
        with_ctx, ctx_payloads = wire(messages, True)
        alone, alone_payloads = wire(messages, False)
        meter = inflate.InflateMeter(self_contained=False)

        def measure(p: bytes, meter: inflate.InflateMeter = meter) -> None:
            meter.start()
            meter.feed(p)
            meter.finish()

        def reinflate(p: bytes) -> None:  # what a re-compressing gateway must do
            d = zlib.decompressobj(-15)
            plain = d.decompress(p + TAIL)
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            c.compress(plain)
            c.flush(zlib.Z_SYNC_FLUSH)

        print(
            f"{name:<9} {1.0:4.2f}  {with_ctx / raw:8.3f}  {alone / raw:14.3f}  {1.0:8.2f}"
            f" | {per_message_us(measure, ctx_payloads):8.2f}"
            f"  {per_message_us(reinflate, alone_payloads):13.2f}"
        )
    print("(bytes on the wire as a fraction of the raw messages; CPU per message, best of 5)")


if __name__ == "__main__":
    main()
