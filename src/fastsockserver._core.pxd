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
    cdef object __weakref__

    cpdef accept_failed(self, error_number)
    cpdef accept_recovered(self)
