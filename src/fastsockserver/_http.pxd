# C types for fastsockserver._http, the compiled build of _http_py.py (an
# augmenting .pxd, found as the module's on the include path, as _core.pxd is).
# The .py stays Python; these make its byte loops C loops where compiled.
cimport cython


@cython.locals(line=bytes, size=Py_ssize_t, end=Py_ssize_t, colon=Py_ssize_t,
               start=Py_ssize_t, index=Py_ssize_t, char=cython.uchar, ended=bint)
cpdef list pairs_by_scan(lines)


# (a C call where compiled: the fast methods ask it several times per request)
cdef bint is_own(dict own, handler, str name) except -1
