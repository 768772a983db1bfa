# Declarations of fastsockserver._core (src/_core.pyx), the compiled serving core. Named
# with the module's dotted name: Cython looks for a .pxd beside a module compiled from
# outside its package (src/) under that name.
# Its Python-level interface is declared in fastsockserver/_core_api.py; its
# pure-Python twin is fastsockserver/_core_py.py.

# A Ticket's status (_core_api.TICKET_*, the same numbers).
cdef enum:
    TICKET_NEW = 0        # made, no slot yet
    TICKET_RESERVED = 1   # a slot reserved by the dispatcher, not yet handed over
    TICKET_CLAIMED = 2    # the thread (or child) running the request owns it
    TICKET_RELEASED = 3   # the slot is back: released or abandoned, once


cdef class ServingState:
    """What a server shares with its loop and handler threads (_core_api.ServingState).

    Read-only from Python where only the core's functions may change a field
    (under the state's section): see _core_api for who owns which."""
    cdef public double accept_backoff     # seconds of the current accept back-off; 0: none
    cdef public double accept_resume_at   # monotonic time the listener is watched again
    cdef public object handoff            # deque of (request, client_address, ticket), or None
    cdef public int takers                # handler threads inside take_pending now
    cdef object _take_pending_from        # take_pending_from: the listener takers accept on,
    cdef int take_pending_fd              # its descriptor and whether it is a stream, set
    cdef bint take_pending_stream         # together (no Python call inside the section)
    cdef public object waker              # the server's shutdown pipe: wake()
    cdef readonly int max_handlers        # no request is taken while active >= this; 0: no cap
    cdef readonly int active              # tickets reserved and not yet released
    cdef readonly bint paused             # not taking: active reached max_handlers
    cdef readonly bint serving            # a serve_forever() loop runs (begin_serving)
    cdef readonly bint draining           # drain() began (begin_drain)
    cdef readonly double idle_cut_at      # draining: from then, idle connections read EOF
    cdef readonly double grace_ends       # draining: from then, silent new ones read EOF too
    cdef readonly int drain_fd            # readable once draining (a pipe's read end); -1: none
    cdef int drain_write_fd
    cdef public object readers            # WeakSet of live rfile raw streams (drain)
    cdef readonly long long accepted, finished, errors, backpressure_pauses
    cdef readonly long long drained, idle_timeouts, first_byte_timeouts, headers_timeouts
    cdef readonly long long tls_handshake_failures, proxy_header_failures, framing_rejections
    cdef readonly object waiting_room     # _waiting_room.WaitingRoom while serving with one
    cdef object __weakref__

    cpdef accept_failed(self, error_number)
    cpdef accept_recovered(self)


cdef class Ticket:
    """One request's slot among ``active``: reserved by the dispatcher, claimed
    by the thread that runs it, released once (_core_api.Ticket)."""
    cdef readonly ServingState state
    cdef readonly int status              # _core_api.TICKET_*
