# The C-level masking contract, cimported by frames.pyx.
from libc.stdint cimport uint32_t

# XOR n bytes of src into dst with key repeated, starting at key byte (phase & 3).
# key holds the 4 mask bytes in wire order, loaded with memcpy (native byte order), so
# XOR-ing two such keys gives the key that turns one masking into the other.
# dst may equal src.
cdef void xor_mask(unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                   uint32_t key, Py_ssize_t phase) noexcept nogil

# A fresh key from the os.urandom pool, never equal to avoid. Needs the GIL (the pool is
# refilled from Python every POOL_SIZE / 4 keys).
cdef uint32_t fresh_key(uint32_t avoid) except? 0
