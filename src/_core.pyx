"""fastsockserver._core: the compiled request loop.

The same functions as ``fastsockserver._pyloop``, with the same behaviour;
the wait runs in C with the GIL released. Compiler directives live in setup.py.
"""
from libc.errno cimport errno, EINTR
from libc.limits cimport INT_MAX
from libc.math cimport ceil
from libc.string cimport strerror
from posix.unistd cimport read
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    const short POLLIN

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    const int CLOCK_MONOTONIC


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef int _timeout_ms(object timeout) except -2:
    """A selector timeout in seconds as poll() milliseconds (-1: forever), rounded up."""
    if timeout is None:
        return -1
    cdef double seconds = timeout
    if seconds <= 0:
        return 0
    if seconds * 1e3 >= INT_MAX:
        return INT_MAX
    return <int>ceil(seconds * 1e3)


cdef int _poll(pollfd *fds, int nfds, int timeout_ms) except -1:
    """poll() with the GIL released; returns how many entries have revents.

    Like select.poll (PEP 475): on EINTR run the signal handlers, which may
    raise, then wait for the rest of the timeout. POLLERR/POLLHUP/POLLNVAL
    count as readable, as in selectors: the caller's read then tells.
    """
    cdef int i, n, err
    cdef double deadline = 0
    if timeout_ms > 0:
        deadline = _now() + timeout_ms * 1e-3
    while True:
        for i in range(nfds):
            fds[i].revents = 0
        with nogil:
            n = poll(fds, nfds, timeout_ms)
            err = errno
        if n >= 0:
            return n
        if err != EINTR:
            raise OSError(err, strerror(err).decode())
        if PyErr_CheckSignals() < 0:
            return -1
        if timeout_ms > 0:
            timeout_ms = <int>ceil((deadline - _now()) * 1e3)
            if timeout_ms < 0:
                timeout_ms = 0


cdef void _drain(int fd) noexcept nogil:
    cdef char buf[512]
    while read(fd, buf, sizeof(buf)) > 0:
        pass


def serve(server, int fd, poll_interval, int wake_fd):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    ``wake_fd`` becomes readable when shutdown() is called: the wait ends at
    once instead of after ``poll_interval``.
    """
    cdef int interval_ms = _timeout_ms(poll_interval)
    cdef pollfd fds[2]
    fds[0].fd = fd
    fds[0].events = POLLIN
    fds[1].fd = wake_fd
    fds[1].events = POLLIN
    while not server._BaseServer__shutdown_request:
        _poll(fds, 2, interval_ms)
        # bpo-35017: shutdown() called during the wait, exit immediately.
        if server._BaseServer__shutdown_request:
            break
        if fds[0].revents:
            server._handle_request_noblock()
        if fds[1].revents:
            _drain(wake_fd)
        server.service_actions()


def wait_readable(int fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    cdef pollfd entry
    entry.fd = fd
    entry.events = POLLIN
    return _poll(&entry, 1, _timeout_ms(timeout)) > 0
