"""Pure-Python twin of mask.pyx: WebSocket payload masking (RFC 6455 §5.3) and masking keys.

Masking keys come from a pool of ``os.urandom`` bytes, refilled when used up, so there is
no system call per frame. The pool is discarded in a forked child: parent and child must
never hand out the same keys.
"""

from __future__ import annotations

import os

POOL_SIZE = 4096

_pool = b""
_pool_pos = POOL_SIZE


def _discard_pool() -> None:
    global _pool, _pool_pos
    _pool = b""
    _pool_pos = POOL_SIZE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_discard_pool)


def random_key() -> bytes:
    """Four bytes from the strong random pool."""
    global _pool, _pool_pos
    if _pool_pos + 4 > POOL_SIZE:
        _pool = os.urandom(POOL_SIZE)
        _pool_pos = 0
    key = _pool[_pool_pos : _pool_pos + 4]
    _pool_pos += 4
    return key


def fresh_key(avoid: bytes) -> bytes:
    """A random key different from ``avoid`` (a relayed frame never keeps the client's key)."""
    key = random_key()
    while key == avoid:  # probability 2**-32 per draw
        key = random_key()
    return key


def apply_mask(data: bytes | bytearray | memoryview, key: bytes, phase: int = 0) -> bytes:
    """XOR ``data`` with ``key`` repeated, starting at key byte ``phase % 4``.

    ``phase`` is the offset of ``data[0]`` within the frame payload, so a payload masked in
    pieces gives the same bytes as one masked whole. Masking twice with one key unmasks.
    """
    if len(key) != 4:
        raise ValueError("mask key must be 4 bytes")
    n = len(data)
    if n == 0:
        return b""
    phase &= 3
    rotated = bytes(key[phase:]) + bytes(key[:phase])
    stream = (rotated * ((n >> 2) + 1))[:n]
    # One big-int XOR is the fastest pure-Python way to XOR two long byte strings.
    mixed = int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")
    return mixed.to_bytes(n, "little")


def xor_keys(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two 4-byte keys: masking with it turns a-masked bytes into b-masked."""
    return bytes([a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]])
