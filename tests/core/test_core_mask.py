"""apply_mask against a byte-by-byte reference, and the random key pool."""

from __future__ import annotations

import os

import pytest

from .core_support import Impl


def reference_mask(data: bytes, key: bytes, phase: int = 0) -> bytes:
    return bytes(b ^ key[(i + phase) % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("phase", range(8))
def test_apply_mask_matches_reference(impl: Impl, phase: int) -> None:
    key = b"\x9a\x01\xff\x5c"
    for n in range(0, 80):  # every tail length around the 8- and 32-byte loops
        data = bytes((i * 31 + 7) % 256 for i in range(n))
        assert impl.mask.apply_mask(data, key, phase) == reference_mask(data, key, phase)


def test_apply_mask_large_and_in_pieces(impl: Impl) -> None:
    key = b"\x12\x34\x56\x78"
    data = os.urandom((1 << 20) + 3)
    whole = impl.mask.apply_mask(data, key)
    assert whole == reference_mask(data[:1000], key) + whole[1000:]
    assert whole[-5:] == reference_mask(data, key)[-5:]
    # Masking in pieces at the right phase equals masking whole.
    cuts = [0, 1, 6, 7, 8, 100, 65537, len(data)]
    pieces = [impl.mask.apply_mask(data[a:b], key, a) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert b"".join(pieces) == whole
    assert impl.mask.apply_mask(whole, key) == data  # an involution


def test_apply_mask_inputs(impl: Impl) -> None:
    key = b"abcd"
    for kind in (bytes, bytearray, memoryview):
        assert impl.mask.apply_mask(kind(b"hello"), kind(key)) == reference_mask(b"hello", key)
    assert impl.mask.apply_mask(b"", key) == b""
    assert type(impl.mask.apply_mask(bytearray(b"x"), key)) is bytes
    for bad in (b"abc", b"abcde", b""):
        with pytest.raises(ValueError):
            impl.mask.apply_mask(b"data", bad)


def test_random_key(impl: Impl) -> None:
    keys = [impl.mask.random_key() for _ in range(3000)]  # crosses pool refills
    assert all(type(k) is bytes and len(k) == 4 for k in keys)
    assert len(set(keys)) > 2990


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_repeat_parent_keys(impl: Impl) -> None:
    impl.mask.random_key()  # make sure a pool is loaded before forking
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next keys, then leave without running pytest code
        try:
            os.write(write_end, b"".join(impl.mask.random_key() for _ in range(8)))
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child = b""
        for _ in range(100):  # bounded: 32 bytes arrive in one or a few reads
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            child += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    parent = b"".join(impl.mask.random_key() for _ in range(8))
    assert len(child) == 32
    assert child != parent


def test_fresh_key_never_returns_the_key_to_avoid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure twin only: the compiled fresh_key is C-level (same loop, see mask.pyx)."""
    from wsgw._core import mask_py

    drawn = iter([b"AAAA", b"AAAA", b"BBBB"])
    monkeypatch.setattr(mask_py, "random_key", lambda: next(drawn))
    assert mask_py.fresh_key(b"AAAA") == b"BBBB"
