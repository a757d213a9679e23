# The relay legs' per-chunk state: C fields read on every chunk, public to the Python
# subclasses (wsgw/pipeline/relay.py, backend.py) that own everything else. Each leg owns
# the close state of its own peer.
from libc.stdint cimport uint64_t

from wsgw._core.frames cimport FrameRelay


cdef class ClientLegCore:
    cdef public object transport           # the client's
    cdef public BackendLegCore backend
    cdef public FrameRelay c2b             # both set when the relay starts
    cdef public FrameRelay b2c
    cdef public bint client_close_sent     # close state towards the client (its own)
    cdef public bint client_close_received
    cdef public bint client_gone
    cdef public bint notice_pending        # a drop notice waits for a message boundary
    cdef public uint64_t drops_seen        # dropped messages both ways, as last handled
    cdef public uint64_t activity          # chunks either way; the idle check samples it


cdef class BackendLegCore:
    cdef public object transport           # the backend's
    cdef public ClientLegCore client
    cdef public FrameRelay relay           # the client leg's b2c, once the relay starts
    cdef public bint close_sent            # close state towards the backend (its own)
    cdef public bint close_received
