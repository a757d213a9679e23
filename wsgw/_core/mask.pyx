"""WebSocket payload masking (RFC 6455 §5.3) and masking keys; twin of mask_py.py.

Keys come from a pool of os.urandom bytes refilled when used up: one system call per 1024
keys, not per frame. A forked child discards the pool so it never repeats its parent's keys.
"""

import os

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release

POOL_SIZE = 4096

cdef enum:
    _POOL_SIZE = 4096
    _NOGIL_MIN = 65536

cdef unsigned char _pool[_POOL_SIZE]
cdef Py_ssize_t _pool_pos = _POOL_SIZE
cdef object _urandom = os.urandom


def _discard_pool():
    global _pool_pos
    _pool_pos = _POOL_SIZE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_discard_pool)


cdef void xor_mask(unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                   uint32_t key, Py_ssize_t phase) noexcept nogil:
    cdef unsigned char raw[4]
    cdef unsigned char rot[8]
    cdef uint64_t k8, a, b, c, d
    cdef Py_ssize_t i = 0, j
    memcpy(raw, &key, 4)
    for j in range(8):
        rot[j] = raw[(j + phase) & 3]
    memcpy(&k8, rot, 8)
    # 8 bytes at a time through memcpy: unaligned-safe loads the compiler turns into movs.
    while i + 32 <= n:
        memcpy(&a, src + i, 8)
        memcpy(&b, src + i + 8, 8)
        memcpy(&c, src + i + 16, 8)
        memcpy(&d, src + i + 24, 8)
        a ^= k8
        b ^= k8
        c ^= k8
        d ^= k8
        memcpy(dst + i, &a, 8)
        memcpy(dst + i + 8, &b, 8)
        memcpy(dst + i + 16, &c, 8)
        memcpy(dst + i + 24, &d, 8)
        i += 32
    while i + 8 <= n:
        memcpy(&a, src + i, 8)
        a ^= k8
        memcpy(dst + i, &a, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ rot[i & 7]
        i += 1


cdef int _refill() except -1:
    global _pool_pos
    cdef bytes fresh = _urandom(_POOL_SIZE)
    memcpy(_pool, PyBytes_AS_STRING(fresh), _POOL_SIZE)
    _pool_pos = 0
    return 0


cdef inline uint32_t _next_key() except? 0:
    global _pool_pos
    cdef uint32_t key
    if _pool_pos + 4 > _POOL_SIZE:
        _refill()
    memcpy(&key, _pool + _pool_pos, 4)
    _pool_pos += 4
    return key


cdef uint32_t fresh_key(uint32_t avoid) except? 0:
    cdef uint32_t key = _next_key()
    while key == avoid:  # probability 2**-32 per draw
        key = _next_key()
    return key


def random_key() -> bytes:
    """Four bytes from the strong random pool."""
    cdef uint32_t key = _next_key()
    return PyBytes_FromStringAndSize(<char*>&key, 4)


def apply_mask(data, key, Py_ssize_t phase=0) -> bytes:
    """XOR ``data`` with ``key`` repeated, starting at key byte ``phase % 4``.

    ``phase`` is the offset of ``data[0]`` within the frame payload, so a payload masked in
    pieces gives the same bytes as one masked whole. Masking twice with one key unmasks.
    """
    cdef Py_buffer dview, kview
    cdef uint32_t k
    cdef bytes out
    cdef unsigned char* dst
    cdef const unsigned char* src
    PyObject_GetBuffer(key, &kview, PyBUF_SIMPLE)
    try:
        if kview.len != 4:
            raise ValueError("mask key must be 4 bytes")
        memcpy(&k, kview.buf, 4)
    finally:
        PyBuffer_Release(&kview)
    PyObject_GetBuffer(data, &dview, PyBUF_SIMPLE)
    try:
        if dview.len == 0:
            return b""
        out = PyBytes_FromStringAndSize(NULL, dview.len)
        dst = <unsigned char*>PyBytes_AS_STRING(out)
        src = <const unsigned char*>dview.buf
        if dview.len >= _NOGIL_MIN:  # let other threads run during long XORs only
            with nogil:
                xor_mask(dst, src, dview.len, k, phase)
        else:
            xor_mask(dst, src, dview.len, k, phase)
        return out
    finally:
        PyBuffer_Release(&dview)
