# Declarations of fastsockserver._core (src/_core.pyx), the compiled serving core. Named
# with the module's dotted name: Cython looks for a .pxd beside a module compiled from
# outside its package (src/) under that name.
# Its Python-level interface is declared in fastsockserver/_core_api.py; its
# pure-Python twin is fastsockserver/_core_py.py.

cdef class ServingState:
    """What a server shares with its loop and handler threads (_core_api.ServingState)."""
    cdef public double accept_backoff     # seconds of the current accept back-off; 0: none
    cdef public double accept_resume_at   # monotonic time the listener is watched again
    cdef public object handoff            # deque of (request, client_address) for takers, or None
    cdef public int takers                # handler threads inside take_pending now
    cdef public object take_pending_from  # the listener takers may accept on, or None
    cdef public object waker              # the server's shutdown pipe: wake()
    cdef public int max_handlers          # no request is taken while active >= this; 0: no cap
    cdef public int active                # requests in the library's process_request
    cdef public bint paused               # not taking: active reached max_handlers
    cdef public bint draining             # drain() began
    cdef public double idle_cut_at        # draining: from then, idle connections read EOF
    cdef public object readers            # WeakSet of live rfile raw streams (drain)
    cdef public long long accepted, finished, errors, backpressure_pauses
    cdef public long long drained, idle_timeouts, first_byte_timeouts, headers_timeouts
    cdef public long long tls_handshake_failures, proxy_header_failures, framing_rejections
    cdef public object waiting_room       # _waiting_room.WaitingRoom while serving with one
    cdef object __weakref__

    cpdef accept_failed(self, error_number)
    cpdef accept_recovered(self)
