"""fastsockserver._core: the compiled serving core.

Implements fastsockserver/_core_api.py, as its pure-Python twin
fastsockserver/_core_py.py does, with the same behaviour: the wait runs in C
with the GIL released (epoll on Linux), requests are taken in batches, and
rfile/wfile first try system calls that cannot block. Declared in _core.pxd;
compiler directives live in setup.py.

Free-threaded builds (no GIL): the fields of a ServingState that the loop and
handler threads change are changed inside ``critical_section(state)`` (the
state's own lock there; nothing at all where the GIL is, so the GIL build's
hot path is unchanged). No such section calls code that could wait on another.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, errno
from libc.limits cimport INT_MAX
from libc.math cimport ceil
from libc.string cimport memset, strerror
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport close, read

from _socket import socket as _c_socket_class
from math import ceil as _ceil
from sys import modules as _sys_modules
from socket import SocketIO as _SocketIO
from socket import socket as _socket_class
from socket import timeout as _socket_timeout
from weakref import WeakSet as _WeakSet
import threading as _threading

from os import pipe as _os_pipe

from fastsockserver._core_api import (
    BACKOFF_FIRST, BACKOFF_MAX, EPOLL, HANDLERS_TAKE, HEAD_TIMEOUT_MESSAGE, RECEIVES,
    RESOURCE_ERRNOS,
)

# socket.socket's type/family properties convert to an IntEnum in Python
# code (~0.7 us each); _socket.socket's members are the same numbers.
_raw_type = _c_socket_class.type.__get__
_raw_family = _c_socket_class.family.__get__
_c_socket_init = _c_socket_class.__init__


cdef object _new_socket(int family, int type, int proto, int fd):
    """socket.socket(family, type, proto, fileno=fd), without its Python-level
    __init__: its state is the two __slots__ it sets (Python 3.9-3.13; a test compares)."""
    sock = _socket_class.__new__(_socket_class)
    _c_socket_init(sock, family, type, proto, fd)
    sock._io_refs = 0
    sock._closed = False
    return sock


cdef extern from *:
    """
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/un.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #include <netdb.h>
    #include <fcntl.h>
    #include <stddef.h>
    #include <errno.h>
    #include <unistd.h>
    #ifdef __linux__
    #define FSS_IS_LINUX 1
    #else
    #define FSS_IS_LINUX 0
    #endif
    /* The Linux-only calls (accept4, epoll, MSG_NOSIGNAL) are used on Linux
       unless setup.py's FASTSOCKSERVER_PORTABLE_CORE defines FSS_PORTABLE_CORE:
       then the core is the one macOS and the BSDs compile, run here. */
    #ifdef FSS_PORTABLE_CORE
    #define FSS_PORTABLE 1
    #else
    #define FSS_PORTABLE 0
    #endif
    #if defined(__linux__) && !FSS_PORTABLE
    #define FSS_LINUX_CALLS 1
    #else
    #define FSS_LINUX_CALLS 0
    #endif
    /* accept() whose new descriptor is close-on-exec, as Python's socket.accept() makes it. */
    static int fss_accept_cloexec(int fd, struct sockaddr *addr, socklen_t *len) {
    #if FSS_LINUX_CALLS
        return accept4(fd, addr, len, SOCK_CLOEXEC);
    #else
        /* As CPython's socket.accept() where there is no accept4. */
        int s = accept(fd, addr, len), flags;
        if (s < 0)
            return -1;
        /* BSDs pass the listener's O_NONBLOCK on (Linux does not); Python's
           socket object expects a blocking descriptor (its timeout is None). */
        flags = fcntl(s, F_GETFL);
        if (fcntl(s, F_SETFD, FD_CLOEXEC) < 0 || flags < 0
                || fcntl(s, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            int err = errno;
            close(s);
            errno = err;
            return -1;
        }
        return s;
    #endif
    }
    static size_t fss_offsetof_sun_path(void) { return offsetof(struct sockaddr_un, sun_path); }

    /* epoll where there is one; elsewhere the callers use poll() (ENOSYS). */
    #include <string.h>
    #if FSS_LINUX_CALLS
    #include <sys/epoll.h>
    static int fss_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
    static int fss_epoll_watch(int epfd, int fd, int add) {
        struct epoll_event event;
        memset(&event, 0, sizeof(event));
        event.events = EPOLLIN;
        event.data.fd = fd;
        return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &event);
    }
    /* Up to `max` ready descriptors into ready_fds; returns how many, or -1. */
    static int fss_epoll_wait(int epfd, int *ready_fds, int max, int timeout_ms) {
        struct epoll_event events[4];
        int i, n;
        if (max > 4) max = 4;
        n = epoll_wait(epfd, events, max, timeout_ms);
        for (i = 0; i < n; i++) ready_fds[i] = events[i].data.fd;
        return n;
    }
    #else
    static int fss_epoll_create(void) { errno = ENOSYS; return -1; }
    static int fss_epoll_watch(int epfd, int fd, int add) { errno = ENOSYS; return -1; }
    static int fss_epoll_wait(int epfd, int *ready_fds, int max, int timeout_ms) {
        errno = ENOSYS; return -1;
    }
    #endif
    """
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct in_addr:
        unsigned int s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    struct sockaddr_un:
        char sun_path[1]
    const int AF_INET, AF_INET6, AF_UNIX, SOCK_STREAM, MSG_DONTWAIT, NI_NUMERICHOST
    const int F_GETFL, F_SETFL, O_NONBLOCK
    int fcntl(int fd, int cmd, ...) nogil
    const bint IS_LINUX "FSS_IS_LINUX"
    const bint LINUX_CALLS "FSS_LINUX_CALLS"
    const bint PORTABLE "FSS_PORTABLE"
    const int EWOULDBLOCK
    object PyUnicode_DecodeFSDefault(const char *)
    int _accept_cloexec "fss_accept_cloexec"(int fd, sockaddr *addr, socklen_t *length) nogil
    size_t offsetof_sun_path "fss_offsetof_sun_path"()
    int _epoll_create "fss_epoll_create"() nogil
    int _epoll_watch "fss_epoll_watch"(int epfd, int fd, int add) nogil
    int _epoll_wait "fss_epoll_wait"(int epfd, int *ready_fds, int max, int timeout_ms) nogil
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int getnameinfo(const sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                    char *serv, socklen_t servlen, int flags)
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)
    ssize_t recvfrom(int fd, void *buf, size_t n, int flags, sockaddr *addr,
                     socklen_t *length) nogil

# What this core does beyond the stdlib's loop (_core_api): epoll only with the Linux calls.
FEATURES = frozenset((RECEIVES, HANDLERS_TAKE, EPOLL) if LINUX_CALLS
                     else (RECEIVES, HANDLERS_TAKE))
# The system calls this build makes (_core_api.SYSTEM_CALLS); PORTABLE_CORE:
# built with FASTSOCKSERVER_PORTABLE_CORE (setup.py), the macOS/BSD calls on Linux.
PORTABLE_CORE = PORTABLE
SYSTEM_CALLS = {
    "wait": "epoll" if LINUX_CALLS else "poll",
    "accept": "accept4" if LINUX_CALLS else "accept+fcntl",
    "send": "MSG_NOSIGNAL" if SEND_NOSIGNAL else "no MSG_NOSIGNAL",
}


cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    const short POLLIN

cdef extern from "<time.h>":  # clock_gettime's own header (posix.time includes <sys/time.h>)
    pass


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class ServingState:
    """What a server shares with its loop and handler threads (see _core_api.ServingState)."""

    def __init__(self):
        self.accept_backoff = self.accept_resume_at = 0.0
        self.handoff = None
        self.takers = 0
        self._take_pending_from = None
        self.take_pending_fd = -1
        self.waker = None
        self.max_handlers = self.active = 0
        self.paused = self.serving = self.draining = False
        self.idle_cut_at = self.grace_ends = 0.0
        self.drain_fd = self.drain_write_fd = -1
        self.readers = _WeakSet()  # a handler may drop its rfile unclosed
        self.accepted = self.finished = self.errors = self.backpressure_pauses = 0
        self.drained = self.idle_timeouts = 0
        self.first_byte_timeouts = self.headers_timeouts = self.tls_handshake_failures = 0
        self.proxy_header_failures = self.framing_rejections = 0
        self.waiting_room = None

    @property
    def take_pending_from(self):
        """The listener handler threads may take from (serve() publishes it while
        it keeps it non-blocking), or None."""
        return self._take_pending_from

    @take_pending_from.setter
    def take_pending_from(self, listener):
        cdef int fd = -1
        cdef bint stream = False
        if listener is not None:
            fd = listener.fileno()
            stream = _raw_type(listener) == SOCK_STREAM
        with cython.critical_section(self):
            self._take_pending_from = listener
            self.take_pending_fd = fd
            self.take_pending_stream = stream

    def __dealloc__(self):
        # server_close() closes the drain pipe (close_drain_fd); a state whose
        # server was never closed closes it here.
        if self.drain_fd >= 0:
            close(self.drain_fd)
            close(self.drain_write_fd)

    cpdef accept_failed(self, error_number):
        if error_number in RESOURCE_ERRNOS:
            with cython.critical_section(self):
                self.accept_backoff = min(max(self.accept_backoff * 2, BACKOFF_FIRST),
                                          BACKOFF_MAX)
                self.accept_resume_at = _now() + self.accept_backoff

    cpdef accept_recovered(self):
        with cython.critical_section(self):
            self.accept_backoff = self.accept_resume_at = 0.0


cdef extern from *:
    """
    #include <unistd.h>
    """
    ssize_t c_write "write"(int fd, const void *buf, size_t n) nogil


def drain_wait_fd(ServingState state not None):
    """The descriptor readable once the server drains (made on first use; -2
    once closed_drain_fd was called)."""
    cdef int drain_fd
    with cython.critical_section(state):  # close_drain_fd may write it meanwhile
        drain_fd = state.drain_fd
    if drain_fd == -1:
        read_fd, write_fd = _os_pipe()  # close-on-exec
        with cython.critical_section(state):
            if state.drain_fd == -1:
                state.drain_fd, state.drain_write_fd = read_fd, write_fd
                read_fd = write_fd = -1
                if state.draining:
                    c_write(state.drain_write_fd, b"d", 1)
            drain_fd = state.drain_fd
        if read_fd >= 0:  # another thread made it meanwhile
            close(read_fd)
            close(write_fd)
    return drain_fd


def close_drain_fd(ServingState state not None):
    """server_close(): the drain descriptor is closed, and none is made again.
    A handler still waiting on the old number is not misled if the OS reuses
    it: a drain descriptor readable while the server is not draining is
    dropped from its wait (see _ends_between_requests)."""
    cdef int read_fd, write_fd
    with cython.critical_section(state):
        read_fd, write_fd = state.drain_fd, state.drain_write_fd
        state.drain_fd = -2
        state.drain_write_fd = -1
    if read_fd >= 0:
        close(read_fd)
        close(write_fd)


def begin_serving(ServingState state not None, int max_handlers, waiting_room):
    """serve_forever() starts its loop; False (nothing changed) once drain() began."""
    with cython.critical_section(state):
        if state.draining:
            return False
        state.serving = True
        state.max_handlers = max_handlers
        state.waiting_room = waiting_room
        state.paused = False
    return True


def end_serving(ServingState state not None):
    """serve_forever()'s loop has returned."""
    with cython.critical_section(state):
        state.serving = False
        state.paused = False
        state.waiting_room = None


def begin_drain(ServingState state not None, double last_call, double grace):
    """drain() begins (once; a second call changes nothing): True when a loop
    was serving then, which now stops taking requests in and returns."""
    drain_wait_fd(state)
    cdef double now = _now()
    with cython.critical_section(state):
        if not state.draining:
            state.draining = True
            state.idle_cut_at = now + last_call
            state.grace_ends = now + grace
            if state.drain_write_fd >= 0:
                c_write(state.drain_write_fd, b"d", 1)  # level: stays readable
        serving = state.serving
    return serving


def request_accepted(ServingState state not None):
    """get_request() returned a request: ``accepted += 1``, the back-off ends."""
    cdef bint backing_off
    with cython.critical_section(state):
        state.accepted += 1
        backing_off = state.accept_backoff != 0
    if backing_off:
        state.accept_recovered()


def first_byte_timed_out(ServingState state not None):
    """The waiting room closed a connection silent for first_byte_timeout."""
    with cython.critical_section(state):
        state.first_byte_timeouts += 1


cdef class Ticket:
    """One request's slot among ``active`` (see _core_api.Ticket)."""

    def __cinit__(self, ServingState state not None):
        self.state = state
        self.status = TICKET_NEW

    def reserve(self):
        """The dispatcher takes a slot: ``active += 1``."""
        with cython.critical_section(self.state):
            if self.status == TICKET_NEW:
                self.state.active += 1
                self.status = TICKET_RESERVED

    def claim(self):
        """The thread (or child) that runs the request takes it over; False when
        the dispatcher gave it up first (abandon)."""
        with cython.critical_section(self.state):
            if self.status != TICKET_RESERVED:
                return False
            self.status = TICKET_CLAIMED
        return True

    def abandon(self):
        """The dispatcher gives the slot back before any thread claimed it; True
        when it did (the request is then the dispatcher's to close)."""
        with cython.critical_section(self.state):
            if self.status != TICKET_RESERVED:
                return self.status == TICKET_NEW
            self.status = TICKET_RELEASED
            self.state.active -= 1
        _wake_if_resumed(self.state)
        return True

    def release(self):
        """The request ended: the slot goes back, once (``finished += 1``)."""
        with cython.critical_section(self.state):
            if self.status != TICKET_RESERVED and self.status != TICKET_CLAIMED:
                return
            self.status = TICKET_RELEASED
            self.state.active -= 1
            self.state.finished += 1
        _wake_if_resumed(self.state)


cdef Ticket _claimed_ticket(ServingState state):
    """A ticket reserved and claimed in one step, by a thread that takes a
    request itself (take_pending). Called inside the state's section."""
    cdef Ticket ticket = Ticket.__new__(Ticket, state)
    state.active += 1
    ticket.status = TICKET_CLAIMED
    return ticket


cdef int _wake_if_resumed(ServingState state) except -1:
    """A slot came back: wake a loop paused at max_handlers."""
    cdef bint wake
    with cython.critical_section(state):
        wake = state.paused and state.active < state.max_handlers
        if wake:
            state.paused = False
    if wake:
        state.waker.wake()
    return 0


# The fast paths below keep the GIL across system calls that cannot block.
# A handler thread that goes from request to request (or read to write)
# that way would let go of the GIL only at the interpreter's switch
# interval (5 ms): with many threads waiting for it, a request handed to
# one of them waits several intervals. So at most every GIL_SHARE_SECONDS
# the fast paths let a waiting thread have the GIL.
#
# In rfile/wfile, where the core can tell (Linux, a build with a GIL), it
# hands the GIL over (_share_gil). The threads it counts are those coming
# back from its own waits (_poll, a blocking recv), between the end of the
# wait and taking the GIL (want_gil .. got_gil; a thread giving the GIL over
# counts too while it takes it back). When one is counted and this thread
# has had the GIL for a share interval since it got it back, the fast path
# releases it and sleeps until one of them has it (or HAND_OVER_NANOSECONDS
# pass), then takes it back in turn; otherwise it keeps the GIL. It does
# not yield the CPU: sched_yield() gave the core to any other process on it
# (a CPU-bound neighbour took a third of a shared core from the server,
# issue 28); the sleep lasts until a thread of its own has the GIL, and a
# process with nothing of its own to run has nothing to hand over. A
# thread that wants the GIL for reasons of its own (a user's thread, one
# back from a lock) gets it at the switch interval, as from any CPU-bound
# thread.
#
# take_pending, and rfile/wfile elsewhere (macOS, the BSDs, the portable
# build; a free-threaded build, where there may be no GIL), release the GIL
# and sched_yield() when threading knows of another thread (_yield_cpu).
cdef double GIL_SHARE_SECONDS = 0.0001
cdef long HAND_OVER_NANOSECONDS = 1000000
cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define FSS_FREE_THREADED_BUILD 1
    #else
    #define FSS_FREE_THREADED_BUILD 0
    #endif
    #if defined(__linux__) && !FSS_PORTABLE && !FSS_FREE_THREADED_BUILD
    #include <sys/syscall.h>
    #endif
    /* The futex's timeout is the kernel's timespec of longs: where time_t is
       wider than a pointer (32-bit systems with a 64-bit time_t) SYS_futex
       would misread it, and riscv32 has no SYS_futex: those yield. */
    #if defined(__linux__) && !FSS_PORTABLE && !FSS_FREE_THREADED_BUILD \
            && defined(SYS_futex) && __SIZEOF_POINTER__ == 8
    #define FSS_HANDS_OVER 1
    #include <limits.h>
    #include <pthread.h>
    #include <time.h>
    #ifndef FUTEX_WAIT_PRIVATE  /* linux/futex.h's values: not every C library ships it */
    #define FUTEX_WAIT_PRIVATE 128
    #define FUTEX_WAKE_PRIVATE 129
    #endif
    #else
    #define FSS_HANDS_OVER 0
    #endif
    #if PY_VERSION_HEX >= 0x030D0000
    #define FSS_FINALIZING() Py_IsFinalizing()
    #else
    #define FSS_FINALIZING() _Py_IsFinalizing()
    #endif

    /* Process-wide, read and written by every thread, some without the GIL:
       atomics. When a thread last shared (relaxed: a lost update only means
       one more or one fewer share) and how often (for tests). */
    static double fss_last_shared = 0;
    static unsigned long fss_shares = 0;
    static double fss_get_last_shared(void) {
        double when;
        __atomic_load(&fss_last_shared, &when, __ATOMIC_RELAXED);
        return when;
    }
    static void fss_set_last_shared(double when) {
        __atomic_store(&fss_last_shared, &when, __ATOMIC_RELAXED);
    }
    static void fss_count_share(void) {
        __atomic_add_fetch(&fss_shares, 1, __ATOMIC_RELAXED);
    }
    static unsigned long fss_get_shares(void) {
        return __atomic_load_n(&fss_shares, __ATOMIC_RELAXED);
    }

    /* The hand-over. gil_wanted: threads counted between want_gil and
       got_gil. gil_taken (a futex word): bumped by each got_gil. handing_over:
       threads asleep in fss_hand_over, for got_gil to wake (sequentially
       consistent on both sides: either got_gil sees the sleeper, or the
       sleeper sees gil_taken moved). timed_out_at: gil_taken + 1 as it was
       when a hand-over last timed out (0: never); none is tried again
       until gil_taken moves, so a count left by a thread that never took
       the GIL costs a timeout per move, not per share. */
    static int fss_gil_wanted = 0;
    static unsigned int fss_gil_taken = 0;
    static __thread double fss_gil_since = 0;  /* when this thread last got the GIL in got_gil */
    #if FSS_HANDS_OVER
    static int fss_handing_over = 0;
    #endif
    static unsigned long fss_hand_over_timeouts = 0;
    static unsigned int fss_timed_out_at = 0;
    static inline void fss_want_gil(void) {
    #if FSS_HANDS_OVER
        __atomic_add_fetch(&fss_gil_wanted, 1, __ATOMIC_SEQ_CST);
    #endif
    }
    static inline void fss_got_gil(double now) {
    #if FSS_HANDS_OVER
        fss_gil_since = now;
        __atomic_sub_fetch(&fss_gil_wanted, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&fss_gil_taken, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&fss_handing_over, __ATOMIC_SEQ_CST))
            syscall(SYS_futex, &fss_gil_taken, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    #endif
    }
    static inline int fss_gil_wanted_now(void) {
        return __atomic_load_n(&fss_gil_wanted, __ATOMIC_SEQ_CST);
    }
    static inline unsigned int fss_gil_taken_now(void) {
        return __atomic_load_n(&fss_gil_taken, __ATOMIC_SEQ_CST);
    }
    /* With the GIL released: sleep until a counted thread took it since
       ``taken`` was read, at most ``nanoseconds``. One wait: a signal or a
       spurious wake-up ends it early, which only makes the share shorter. */
    static void fss_hand_over(unsigned int taken, long nanoseconds) {
    #if FSS_HANDS_OVER
        struct timespec limit = {0, nanoseconds};
        __atomic_add_fetch(&fss_handing_over, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&fss_gil_taken, __ATOMIC_SEQ_CST) == taken
                && syscall(SYS_futex, &fss_gil_taken, FUTEX_WAIT_PRIVATE, taken,
                           &limit, NULL, 0) == -1 && errno == ETIMEDOUT) {
            __atomic_add_fetch(&fss_hand_over_timeouts, 1, __ATOMIC_RELAXED);
            __atomic_store_n(&fss_timed_out_at, taken + 1, __ATOMIC_RELAXED);
        }
        __atomic_sub_fetch(&fss_handing_over, 1, __ATOMIC_SEQ_CST);
    #endif
    }
    /* Whether a hand-over is worth trying: a thread is counted, the last
       one did not time out with gil_taken where it is now, and the
       interpreter is not finalizing (a daemon thread coming back from a
       wait then ends in PyEval_RestoreThread, still counted). */
    static int fss_hand_over_worth(unsigned int taken) {
        return __atomic_load_n(&fss_gil_wanted, __ATOMIC_SEQ_CST) > 0
            && __atomic_load_n(&fss_timed_out_at, __ATOMIC_RELAXED) != taken + 1
            && !FSS_FINALIZING();
    }
    static double fss_get_gil_since(void) {
        return fss_gil_since;
    }
    static unsigned long fss_get_hand_over_timeouts(void) {
        return __atomic_load_n(&fss_hand_over_timeouts, __ATOMIC_RELAXED);
    }
    /* A fork()ed child has only the forking thread, which holds the GIL:
       no other thread is coming back for it, and none is asleep. */
    #if FSS_HANDS_OVER
    static void fss_forget_gil_wanted(void) {
        __atomic_store_n(&fss_gil_wanted, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&fss_handing_over, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&fss_timed_out_at, 0, __ATOMIC_SEQ_CST);
    }
    #endif
    static int fss_forget_gil_wanted_in_child(void) {
    #if FSS_HANDS_OVER
        return pthread_atfork(NULL, NULL, fss_forget_gil_wanted);
    #else
        return 0;
    #endif
    }
    """
    double _get_last_shared "fss_get_last_shared"() noexcept nogil
    void _set_last_shared "fss_set_last_shared"(double when) noexcept nogil
    void _count_share "fss_count_share"() noexcept nogil
    unsigned long _get_shares "fss_get_shares"() noexcept nogil
    void _want_gil "fss_want_gil"() noexcept nogil
    void _got_gil "fss_got_gil"(double now) noexcept nogil
    double _gil_since "fss_get_gil_since"() noexcept nogil
    int _gil_wanted_now "fss_gil_wanted_now"() noexcept nogil
    unsigned int _gil_taken_now "fss_gil_taken_now"() noexcept nogil
    void _hand_over "fss_hand_over"(unsigned int taken, long nanoseconds) noexcept nogil
    bint _hand_over_worth "fss_hand_over_worth"(unsigned int taken) noexcept
    unsigned long _get_hand_over_timeouts "fss_get_hand_over_timeouts"() noexcept nogil
    int _forget_gil_wanted_in_child "fss_forget_gil_wanted_in_child"() noexcept nogil
    const bint FREE_THREADED_BUILD "FSS_FREE_THREADED_BUILD"
    const bint HANDS_OVER "FSS_HANDS_OVER"

if _forget_gil_wanted_in_child() != 0:
    raise MemoryError("pthread_atfork")  # its only error: ENOMEM
SYSTEM_CALLS["share"] = "futex hand-over" if HANDS_OVER else "sched_yield"


# threading's registries of its threads (the same dicts for the life of the
# process: a fork()ed child's threading empties and refills them in place).
_threads_active = getattr(_threading, "_active", None)
_threads_starting = getattr(_threading, "_limbo", None)
if type(_threads_active) is not dict or type(_threads_starting) is not dict:
    _threads_active = _threads_starting = None


cdef bint _other_threads() noexcept:
    """Whether a thread besides the caller may wait for the GIL: threading
    knows of another, running or starting (read with the GIL held). A thread
    made without threading (_thread.start_new_thread, C code) is not seen: it
    gets the GIL at the switch interval, as with the stdlib's server. On a
    free-threaded build, and where threading's registries are not dicts,
    assume there is one."""
    if FREE_THREADED_BUILD or _threads_active is None:
        return True
    return len(<dict>_threads_active) > 1 or len(<dict>_threads_starting) > 0


cdef inline void _took_gil_back() noexcept:
    """After a wait counted by _want_gil: this thread has the GIL again (the
    clock is read only where the core hands over)."""
    if HANDS_OVER:
        _got_gil(_now())


def gil_shares():
    """How many times a fast path of this process let another thread have the
    GIL (_share_gil): for tests and diagnostics."""
    return _get_shares()


def gil_wanted():
    """How many threads are counted as coming back from the core's waits for
    the GIL (want_gil .. got_gil; 0 where the core does not hand over): for
    tests and diagnostics."""
    return _gil_wanted_now()


def gil_hand_over_timeouts():
    """How many hand-overs of this process ended with no counted thread having
    taken the GIL in HAND_OVER_NANOSECONDS: for tests and diagnostics."""
    return _get_hand_over_timeouts()


# Where handler threads take the next request themselves (serve's
# handlers_take), such a thread skips the sharing in rfile/wfile for the
# first REQUEST_GRACE_SECONDS of each request (begin_grace): a
# connection-per-request handler mostly ends within it and shares between
# requests (take_pending) instead. Sharing in the middle of it sends the
# request to the back of the GIL queue, behind threads taking new ones
# (connrate: p99 ~11 ms instead of ~3 ms). A longer handler (keep-alive)
# shares as usual after the grace.
cdef double REQUEST_GRACE_SECONDS = 0.001
cdef extern from *:
    """
    static __thread double fss_grace_from = 0;  /* when this thread's request began; 0: none */
    """
    double _grace_from "fss_grace_from"


def begin_grace():
    """This handler thread, one that takes requests itself, begins a request."""
    global _grace_from
    _grace_from = _now()


cdef inline bint _share_gil_in_io() noexcept:
    """_share_gil from the middle of a request (rfile/wfile)."""
    cdef double now = _now()
    if _grace_from != 0 and now - _grace_from < REQUEST_GRACE_SECONDS:
        return False
    return _share_gil(now)


cdef bint _share_gil(double now) noexcept:
    """rfile/wfile: hand the GIL to a thread back from the core's waits if this
    one has had it for a while (a share interval since it got it back from a
    wait or a hand-over); True if it did. Where the core cannot hand over: _yield_cpu.

    ``now``: _now(), read by the caller."""
    cdef unsigned int taken
    if not HANDS_OVER:
        return _yield_cpu(now)
    if now - _gil_since() < GIL_SHARE_SECONDS:
        return False
    taken = _gil_taken_now()
    if not _hand_over_worth(taken):
        return False
    with nogil:
        _hand_over(taken, HAND_OVER_NANOSECONDS)
        _want_gil()
    _took_gil_back()
    _count_share()
    return True


cdef bint _yield_cpu(double now) noexcept:
    """Release the GIL and yield the CPU if no thread did for a share interval
    and threading knows of another thread; True if it did.

    take_pending's share on every platform: there the thread to let run is
    mostly the loop on its way to queue a request for a taker, and a
    hand-over (the giver asleep until the loop has the GIL, then woken) cost
    8-15 % more CPU per connection than a yield (connrate, http-close;
    2026-12-08). A connection-per-request server on a shared core still
    gives some of it to its neighbours there.

    ``now``: _now(), read by the caller."""
    if now - _get_last_shared() < GIL_SHARE_SECONDS or not _other_threads():
        return False
    with nogil:
        sched_yield()
    _set_last_shared(_now())
    _count_share()
    return True


cdef int _timeout_ms(object timeout) except -2:
    """A selector timeout in seconds as poll() milliseconds (-1: forever).

    Converted as selectors.PollSelector does, with the same errors for a
    value poll() cannot take (OverflowError, ValueError for NaN, TypeError).
    """
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    milliseconds = _ceil(timeout * 1e3)
    if milliseconds > INT_MAX:
        raise OverflowError("timeout is too large")
    return milliseconds


cdef int _poll(pollfd *fds, int nfds, int timeout_ms, int epfd=-1) except -1:
    """Wait with the GIL released; returns how many entries have revents.

    With an ``epfd`` (epoll, whose watch list the caller keeps equal to
    ``fds``) epoll_wait, else poll(). Like select.poll (PEP 475): on EINTR
    run the signal handlers, which may raise, then wait for the rest of the
    timeout. POLLERR/POLLHUP/POLLNVAL count as readable, as in selectors
    (epoll reports errors as readiness too): the caller's read then tells.
    """
    cdef int i, j, n, err
    cdef int ready_fds[4]
    cdef double deadline = 0
    if timeout_ms > 0:
        deadline = _now() + timeout_ms * 1e-3
    while True:
        for i in range(nfds):
            fds[i].revents = 0
        with nogil:
            if epfd >= 0:
                n = _epoll_wait(epfd, ready_fds, nfds, timeout_ms)
            else:
                n = poll(fds, nfds, timeout_ms)
            err = errno
            _want_gil()
        _took_gil_back()
        if n >= 0:
            if epfd >= 0:
                for j in range(n):
                    for i in range(nfds):
                        if fds[i].fd == ready_fds[j]:
                            fds[i].revents = POLLIN
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


cdef str _dotted_quad(unsigned int address):
    """An IPv4 address as inet_ntop writes it (glibc's goes through sprintf, ~0.5 us)."""
    cdef char text[16]
    cdef int shift, part, n = 0
    for shift in range(24, -8, -8):
        part = (address >> shift) & 0xff
        if part >= 100:
            text[n] = c'0' + part // 100
            n += 1
        if part >= 10:
            text[n] = c'0' + part // 10 % 10
            n += 1
        text[n] = c'0' + part % 10
        text[n + 1] = c'.'
        n += 2
    return text[:n - 1].decode("ascii")


cdef object _sockaddr_to_python(sockaddr_storage *addr, socklen_t length):
    """A peer address as socket.accept()/recvfrom() report it."""
    cdef char host[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef sockaddr_un *unix_addr
    cdef Py_ssize_t path_length
    cdef int family = addr.ss_family
    if length == 0:
        return None  # no address: a datagram from an unbound AF_UNIX socket (as CPython)
    if family == AF_INET:
        v4 = <sockaddr_in *>addr
        return (_dotted_quad(ntohl(v4.sin_addr.s_addr)), ntohs(v4.sin_port))
    if family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        # getnameinfo, as CPython does: it adds the %scope of link-local addresses.
        if getnameinfo(<sockaddr *>addr, length, host, sizeof(host), NULL, 0, NI_NUMERICHOST):
            inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    if family == AF_UNIX:
        unix_addr = <sockaddr_un *>addr
        path_length = <Py_ssize_t>length - <Py_ssize_t>offsetof_sun_path()
        if path_length <= 0:
            return ""  # an unbound client
        if unix_addr.sun_path[0] == 0 and IS_LINUX:
            return PyBytes_FromStringAndSize(unix_addr.sun_path, path_length)  # abstract name
        return PyUnicode_DecodeFSDefault(unix_addr.sun_path)
    raise OSError("unsupported address family {}".format(family))


cdef object _take_one(server, int fd, listener, bint stream, int *failure):
    """One connection or datagram, as (request, client_address); None when none waits.

    Never blocks: during serve_forever the listener is O_NONBLOCK, datagrams
    use MSG_DONTWAIT. So it keeps the GIL: releasing it would hand it to a
    handler thread and cost a context switch. An error is what get_request()
    raising OSError is to the stdlib: nothing taken, its errno in ``failure``
    (else 0), for _count_take.
    """
    cdef sockaddr_storage addr
    cdef socklen_t length
    cdef int client_fd = -1, err
    cdef Py_ssize_t n, max_size = 0
    cdef int flags
    cdef bytes data
    failure[0] = 0
    if stream:
        # The listener's O_NONBLOCK belongs to its open file description,
        # which other processes may share (a pre-forked server) and clear
        # when their serve_forever() ends. Set it again rather than block
        # in accept() holding the GIL.
        flags = fcntl(fd, F_GETFL)
        if flags >= 0 and not flags & O_NONBLOCK:
            fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    else:
        max_size = server.max_packet_size  # per datagram, as get_request reads it
        if max_size < 0:
            raise ValueError("negative buffersize in recvfrom")  # socket.recvfrom's error
    while True:
        length = sizeof(addr)
        memset(&addr, 0, sizeof(addr))
        if stream:
            client_fd = _accept_cloexec(fd, <sockaddr *>&addr, &length)
            n = client_fd
        else:
            data = PyBytes_FromStringAndSize(NULL, max_size)
            n = recvfrom(fd, <char *>data, max_size, MSG_DONTWAIT, <sockaddr *>&addr, &length)
        err = errno
        if n >= 0:
            break
        if err == EINTR:
            PyErr_CheckSignals()
            continue
        if err != EAGAIN and err != EWOULDBLOCK:
            failure[0] = err
        return None
    if stream:
        try:
            address = _sockaddr_to_python(&addr, length)
            request = _new_socket(_raw_family(listener), _raw_type(listener),
                                  listener.proto, client_fd)
        except BaseException:
            close(client_fd)
            raise
    else:
        address = _sockaddr_to_python(&addr, length)
        request = (data[:n] if n < max_size else data, listener)
    return (request, address)


cdef int _count_take(ServingState state, item, int failure) except -1:
    """_take_one's outcome in ``state``: a failure (resource errors start the
    accept back-off), or one more accepted (the back-off ends)."""
    if item is None:
        if failure:
            state.accept_failed(failure)
        return 0
    request_accepted(state)
    return 0


def take_pending(server, ServingState state not None):
    """The next request for a handler thread whose request is done, as
    (request, client_address, ticket) with the ticket claimed, or None.

    Taking the next waiting request itself saves two context switches per
    request (the loop's wake-up and the hand-over). First a request the
    loop handed to takers (hand_to_taker), then one waiting on the listener
    while serve() publishes it in ``state.take_pending_from`` (checked and
    taken from inside the state's section, which serve() enters to withdraw
    it: server_close() after serve_forever() cannot close the descriptor in
    between).
    """
    cdef int failure = 0
    cdef Ticket ticket = None
    # While this thread lets others run it counts as a taker: the loop may
    # then queue a request for it instead of starting a thread. Leaving the
    # takers and looking at the queue are one step (hand_to_taker's check
    # and append are another), so the loop sees this thread either as a
    # taker still to look at the queue, or gone.
    with cython.critical_section(state):
        state.takers += 1
    _yield_cpu(_now())
    item = handoff = None
    with cython.critical_section(state):
        state.takers -= 1
        if state.handoff:
            handoff = state.handoff
    if handoff is not None:
        # Seen non-empty as this thread left the takers: it pops one (the
        # deque's own operations are atomic). Every queued request had a taker
        # counted when it was queued, so none is stranded; one popped by
        # another taker meanwhile leaves this one with nothing.
        try:
            item = handoff.popleft()  # its ticket reserved when it was queued
        except IndexError:
            pass
    if item is not None:
        if (<Ticket>item[2]).claim():
            return item
        return None  # (never: only takers claim queued tickets, and withdraw_handoff empties it)
    with cython.critical_section(state):
        listener = state._take_pending_from
        # (never published under max_threads: see _plan); while backing off
        # after an out-of-resources error the loop retries, not takers.
        if listener is not None and not state.draining and not state.accept_resume_at:
            item = _take_one(server, state.take_pending_fd, listener,
                             state.take_pending_stream, &failure)
            if item is not None:
                ticket = _claimed_ticket(state)  # this thread's next request
    if item is not None or failure:
        _count_take(state, item, failure)
    if item is None:
        return None
    return (item[0], item[1], ticket)


cdef bint _at_capacity(ServingState state) noexcept:
    """True while ``active`` is at ``max_handlers``: no request is taken (they
    wait in the listen backlog) until a handler ends (handler_finished).
    Called inside the state's section (handler threads change ``active``)."""
    return state.max_handlers > 0 and state.active >= state.max_handlers


def request_failed(ServingState state not None):
    """handle_error was called for a request."""
    with cython.critical_section(state):
        state.errors += 1


def handshake_failed(ServingState state not None):
    """A TLS handshake of ssl_context failed or timed out."""
    with cython.critical_section(state):
        state.tls_handshake_failures += 1


def proxy_header_failed(ServingState state not None):
    """A PROXY protocol header of proxy_protocol_from was missing or refused."""
    with cython.critical_section(state):
        state.proxy_header_failures += 1


def framing_rejected(ServingState state not None):
    """A handler with strict_framing refused a request head."""
    with cython.critical_section(state):
        state.framing_rejections += 1


def connections_drained(ServingState state not None, long long count):
    """drain() ended ``count`` connections."""
    with cython.critical_section(state):
        state.drained += count


def hand_to_taker(ServingState state not None, request, client_address, Ticket ticket not None):
    """Queue a request, its ticket reserved, for a thread inside take_pending;
    False when none would take it.

    Each queued request has its own taker still to look at the queue, so it
    never waits for a handler to finish. Without this, under sustained load
    the loop finds no idle thread (they are all waiting for the GIL on their
    way to take the next request) and starts new ones: hundreds, measured.
    """
    # The tuple first: on Python <= 3.11 allocating may run the garbage
    # collector, whose finalizers may let the GIL go between check and append.
    item = (request, client_address, ticket)
    with cython.critical_section(state):
        handoff = state.handoff
        queued = handoff is not None and state.takers > len(handoff)
        if queued:
            handoff.append(item)
    return queued


def withdraw_handoff(ServingState state not None):
    """serving_ends: ``state.handoff`` becomes None; returns the queue it was.
    Takers pop from it only inside the state's section: none does afterwards."""
    with cython.critical_section(state):
        handoff = state.handoff
        state.handoff = None
    return handoff


def serve(server, plan, ServingState state not None, int wake_fd, poll_interval):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    ``wake_fd`` becomes readable when shutdown() is called: the wait ends at
    once instead of after ``poll_interval``. With a ``plan.listener`` (see
    _plan) connections or datagrams are taken in here, up to ``plan.batch``
    per wake-up, and handed to ``server._verify_and_process``; without one
    each wake-up calls ``server._handle_request_noblock()`` as the stdlib
    does. With ``state.waiting_room`` (first_byte_timeout) new connections
    go there first, and the loop also waits on the room. While the server
    backs off after an out-of-resources accept error, the listener is not
    watched; at max_handlers, neither is the room.
    """
    cdef int fd = plan.fd, batch = plan.batch
    cdef bint handlers_take = plan.handlers_take
    cdef int interval_ms = _timeout_ms(poll_interval), wait_ms, taken, flags = -1
    cdef int epfd = -1, room_fd = -1, listener_at = 1, nfds, i, failure = 0, room_left
    cdef double pause
    cdef pollfd fds[3]
    cdef bint stream = False, listener_watched = False, room_watched = False, at_capacity
    cdef bint want_listener, want_room, draining
    cdef double grace_left
    room = state.waiting_room
    # The wait's entries, in this order so that each wait is a prefix:
    # the wake-up pipe, the waiting room (if any), the listener.
    fds[0].fd = wake_fd
    if room is not None:
        room_fd = room.fileno()
        fds[1].fd = room_fd
        listener_at = 2
    fds[listener_at].fd = fd
    for i in range(3):
        fds[i].events = POLLIN
        fds[i].revents = 0
    listener = plan.listener
    dispatch = None
    if listener is not None:
        dispatch = server._verify_and_process
        stream = listener.type == SOCK_STREAM
        if stream:
            # Non-blocking accepts without touching the socket object's own
            # mode (gettimeout() stays None); restored when serving ends.
            flags = fcntl(fd, F_GETFL)
            if flags < 0 or fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0:
                raise OSError(errno, strerror(errno).decode())
        # epoll on Linux, for the compiled receive path only: with hooks
        # overridden the wait stays the stdlib's poll(), whose view of odd
        # descriptors (regular files, one closed or reused meanwhile) the
        # overrides may see. Where epoll cannot be had, poll() as well.
        epfd = _epoll_create()
        if epfd >= 0 and _epoll_watch(epfd, wake_fd, True) < 0:
            close(epfd)
            epfd = -1
    try:
        if handlers_take:
            # Published only now that the listener is non-blocking, withdrawn
            # before it blocks again: take_pending accepts holding the GIL.
            state.take_pending_from = listener
        while not server._BaseServer__shutdown_request:
            # At max_handlers the loop pauses like the back-off; a handler
            # that ends (Ticket.release) wakes it.
            # (One step with release's: a handler ending meanwhile finds
            # ``paused`` set, and wakes the loop.)
            with cython.critical_section(state):
                pause = state.accept_resume_at  # a taker's accept error sets it too
                at_capacity = _at_capacity(state)
                if at_capacity != state.paused:
                    state.paused = at_capacity
                    if at_capacity:
                        state.backpressure_pauses += 1
                draining = state.draining
                grace_left = state.grace_ends - _now()
            if draining:
                # drain() began: nothing more from the listener; held connections
                # that speak within the grace are served (within max_handlers,
                # however long they wait for a slot), the silent rest closed.
                if room is None:
                    break
                if grace_left <= 0:
                    closed = room.end_grace()
                    if closed:
                        connections_drained(state, closed)
                    if not room.has_ready():
                        break
            if pause:
                pause -= _now()
            want_room = room is not None and not at_capacity
            want_listener = not at_capacity and pause <= 0 and not draining
            if epfd >= 0 and want_room != room_watched:
                if _epoll_watch(epfd, room_fd, want_room) == 0:
                    room_watched = want_room
                else:
                    close(epfd)
                    epfd = -1
            if epfd >= 0 and want_listener != listener_watched:
                if _epoll_watch(epfd, fd, want_listener) == 0:
                    listener_watched = want_listener
                else:  # e.g. closed meanwhile: poll() reports it as the stdlib's does
                    close(epfd)
                    epfd = -1
            nfds = listener_at + 1 if want_listener else (2 if want_room else 1)
            wait_ms = interval_ms
            if not at_capacity and pause > 0:
                wait_ms = <int>ceil(pause * 1e3)
                if 0 <= interval_ms < wait_ms:
                    wait_ms = interval_ms
            if room is not None:
                if want_room and room.has_ready():
                    wait_ms = 0  # spoke while the server was at capacity: a slot is free
                wait_ms = _sooner_ms(wait_ms, room.next_timeout())
                if draining and grace_left > 0:
                    wait_ms = _sooner_ms(wait_ms, grace_left)
            _poll(fds, nfds, wait_ms, epfd)
            # bpo-35017: shutdown() called during the wait, exit immediately.
            if server._BaseServer__shutdown_request:
                break
            if fds[0].revents:
                fds[0].revents = 0
                _drain(wake_fd)
            if room is not None:
                if fds[1].revents or (want_room and room.has_ready()):
                    fds[1].revents = 0
                    with cython.critical_section(state):
                        room_left = _room_for(state, batch)
                    for item in room.take_ready(room_left):
                        server._verify_and_process(*item)
                        item = None
                room.expire()
            if fds[listener_at].revents:
                fds[listener_at].revents = 0
                if dispatch is None:
                    server._handle_request_noblock()
                else:
                    for taken in range(batch):
                        if taken and server._BaseServer__shutdown_request:
                            break  # shutdown() waits for the request in progress only
                        with cython.critical_section(state):
                            at_capacity = _at_capacity(state) or state.draining
                        if at_capacity:
                            break
                        item = _take_one(server, fd, listener, stream, &failure)
                        if item is None:
                            if failure:
                                _count_take(state, item, failure)
                            break
                        _count_take(state, item, 0)
                        if room is None or not room.hold(*item):
                            dispatch(*item)
                        item = None
            server.service_actions()
    finally:
        state.take_pending_from = None  # (under the section: no taker is in _take_one after)
        if epfd >= 0:
            close(epfd)
        if flags >= 0 and listener.fileno() == fd:  # not closed (and reused) meanwhile
            fcntl(fd, F_SETFL, flags)


cdef int _sooner_ms(int wait_ms, seconds) except -2:
    """The sooner of a wait (ms, -1: forever) and ``seconds`` (None: never)."""
    cdef int ms
    if seconds is None:
        return wait_ms
    ms = _timeout_ms(seconds)
    return ms if wait_ms < 0 or ms < wait_ms else wait_ms


cdef int _room_for(ServingState state, int batch) noexcept:
    """How many requests the loop may hand on now: up to max_handlers, at most a batch.
    Called inside the state's section."""
    cdef int room = batch
    if state.max_handlers > 0 and state.max_handlers - state.active < room:
        room = state.max_handlers - state.active
    return room if room > 0 else 0


def wait_readable(int fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    cdef pollfd entry
    entry.fd = fd
    entry.events = POLLIN
    return _poll(&entry, 1, _timeout_ms(timeout)) > 0


# ---------------------------------------------------------------- rfile / wfile
# A handler thread that releases the GIL for every recv/send hands it to
# another handler thread, a context switch per call under load. Data is
# usually there already (or the send buffer has room), so each call first
# tries a recv/send that cannot block, keeping the GIL; only when it would
# block does it take the stdlib's path, which waits with the GIL released
# and applies the socket's timeout.

cdef extern from *:
    """
    #include <sys/socket.h>
    /* Where send() has no MSG_NOSIGNAL (older macOS; and the portable build,
       to run that path here), a send to a closed connection raises SIGPIPE,
       which Python ignores from startup: send() fails with EPIPE, as in the
       stdlib's sendall(). A program that restores SIG_DFL dies of it there,
       as it would in sendall(). Not SO_NOSIGPIPE: that would change the
       socket the handler gets, its own sends too. */
    #if defined(MSG_NOSIGNAL) && !FSS_PORTABLE
    #define FSS_SEND_NOSIGNAL MSG_NOSIGNAL
    #else
    #define FSS_SEND_NOSIGNAL 0
    #endif
    """
    ssize_t recv(int fd, void *buf, size_t n, int flags) nogil
    ssize_t send(int fd, const void *buf, size_t n, int flags) nogil
    const int SEND_NOSIGNAL "FSS_SEND_NOSIGNAL"
    const int MSG_PEEK


def socketio_readinto(self, b):
    """socket.SocketIO.readinto, trying a non-blocking recv first."""
    cdef Py_buffer view
    cdef ssize_t n
    cdef int fd, err
    if self.closed:
        return _SocketIO.readinto(self, b)  # raises as the stdlib does
    if self._timeout_occurred:
        raise OSError("cannot read from timed out object")
    sock = self._sock
    if type(sock) is not _socket_class:  # e.g. an ssl.SSLSocket: decrypt through it
        return _readinto_through(self, sock, b)
    fd = sock.fileno()
    if fd < 0:
        return _SocketIO.readinto(self, b)
    try:
        PyObject_GetBuffer(b, &view, PyBUF_WRITABLE)
    except (BufferError, TypeError):  # not writable, or no buffer at all
        return _SocketIO.readinto(self, b)  # raises the stdlib's TypeError
    try:
        if view.len == 0:
            # socket.recv_into makes no system call for an empty buffer: it
            # neither waits nor reports a pending error (a reset) here.
            return 0
        if self._expect_wait:
            # The last non-blocking try found nothing and the reads since have
            # not filled the buffer: a request/response turn, where the next
            # read waits too. Wait at once (one recv instead of two), until a
            # read fills the buffer (data streaming in: try first again).
            waited = _wait_readinto(self, sock, fd, &view, b)
            if waited is not None and waited >= view.len:
                self._expect_wait = False
            return waited
        n = recv(fd, view.buf, view.len, MSG_DONTWAIT)
        err = errno
        if n >= 0:
            if n and self._request_open is not True:
                _request_opens(self)
            _share_gil_in_io()
            return n
        if err == EAGAIN or err == EWOULDBLOCK or err == EINTR:
            self._expect_wait = True
            return _wait_readinto(self, sock, fd, &view, b)
        raise OSError(err, strerror(err).decode())
    finally:
        PyBuffer_Release(&view)


cdef object _readinto_through(self, sock, b):
    """socket.SocketIO.readinto through the socket object's own recv_into (an
    ssl.SSLSocket decrypts), with the rules between requests and for a head's
    deadline. Bytes it has decrypted already (``pending()``) are data there."""
    cdef int fd = sock.fileno()
    cdef bint pending
    sslobj = _tls_object(sock)
    if sslobj is not None:
        pending = sslobj.pending() > 0
    else:
        pending = _decrypted_pending(sock)
    if fd >= 0 and not pending:
        if self._request_open is not True:
            if _ends_between_requests(self, fd, True):
                return 0
        elif self._head_deadline:
            _wait_for_head(self, fd)
        sslobj = _tls_object(sock)  # (unwrapped meanwhile, perhaps)
    if sslobj is not None:
        got = _tls_readinto(self, sock, sslobj, b)
    else:
        got = _SocketIO.readinto(self, b)
    if got and self._request_open is not True:
        _request_opens(self)
    return got


cdef bint _decrypted_pending(sock) except -1:
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


# ssl.SSLSocket, SSLError, SSL_ERROR_EOF: taken from the ssl module once a
# connection is seen that is not a plain socket (its class came from there).
cdef object _SSLSocket = None, _SSLError = None, _SSL_ERROR_EOF = None


# Set once, by the first thread to read from a socket after ``ssl`` is imported;
# read by every thread's reads after that. With the GIL off, threads may do both
# at once: set under _TLS_NAMES_GUARD's section, then published by a release
# store of the flag that the readers load with acquire (ThreadSanitizer found
# the plain check racing the writes).
cdef object _TLS_NAMES_GUARD = object()
cdef extern from *:
    """
    static int fss_tls_names_set = 0;
    static int fss_get_tls_names_set(void) {
        return __atomic_load_n(&fss_tls_names_set, __ATOMIC_ACQUIRE);
    }
    static void fss_publish_tls_names(void) {
        __atomic_store_n(&fss_tls_names_set, 1, __ATOMIC_RELEASE);
    }
    """
    bint _tls_names_set "fss_get_tls_names_set"() noexcept nogil
    void _publish_tls_names "fss_publish_tls_names"() noexcept nogil


cdef bint _set_tls_names() except -1:
    """Reads ssl's names once it is imported; False if it is not."""
    global _SSLSocket, _SSLError, _SSL_ERROR_EOF
    ssl = _sys_modules.get("ssl")
    if ssl is None:
        return False
    error, error_eof, ssl_socket = ssl.SSLError, ssl.SSL_ERROR_EOF, ssl.SSLSocket
    with cython.critical_section(_TLS_NAMES_GUARD):
        if not _tls_names_set():
            _SSLError, _SSL_ERROR_EOF, _SSLSocket = error, error_eof, ssl_socket
            _publish_tls_names()
    return True


cdef object _tls_object(sock):
    """The _ssl._SSLSocket under an ssl.SSLSocket (exactly that class, not
    unwrapped), whose read/write rfile and wfile call directly: the stdlib's
    calls through SocketIO.readinto, recv_into, read (sendall, send) add only
    Python frames around them. None: take the stdlib's path."""
    if not _tls_names_set() and not _set_tls_names():
        return None
    if type(sock) is not _SSLSocket:
        return None
    return sock._sslobj


cdef object _tls_readinto(self, sock, sslobj, b):
    """SocketIO.readinto -> SSLSocket.recv_into -> read, in one call."""
    cdef Py_buffer view
    cdef Py_ssize_t nbytes
    try:
        PyObject_GetBuffer(b, &view, PyBUF_WRITABLE)
    except (BufferError, TypeError):
        return _SocketIO.readinto(self, b)  # raises the stdlib's error
    nbytes = view.len
    fits = view.ndim <= 1 and view.itemsize == 1  # then len(b) == its bytes, as 3.9 counts
    PyBuffer_Release(&view)
    if nbytes == 0 or not fits:
        return _SocketIO.readinto(self, b)  # recv_into's own sizes for these
    try:
        try:
            return sslobj.read(nbytes, b)
        except _SSLError as exc:  # SSLSocket.read's rule for an end without close_notify
            if exc.args[0] == _SSL_ERROR_EOF and sock.suppress_ragged_eofs:
                return 0
            raise
    except _socket_timeout:  # SocketIO.readinto's rules
        self._timeout_occurred = True
        raise
    except OSError as exc:
        if exc.errno == EAGAIN or exc.errno == EWOULDBLOCK:
            return None
        raise


cdef object _tls_write(self, sslobj, b):
    """_SocketWriter.write -> SSLSocket.sendall -> send, in one call (bytes and
    bytearray: the buffers whose len() is their size)."""
    cdef Py_ssize_t count, total = len(b)
    count = sslobj.write(b)
    if count < total:
        with memoryview(b) as view:
            while count < total:
                count += sslobj.write(view[count:])
    reader = self._reader
    if reader is not None:
        reader._request_open = False
    return total


cdef object _wait_readinto(self, sock, int fd, Py_buffer *view, b):
    """socket.SocketIO.readinto's wait for data. On a blocking socket (no
    timeout) that is one recv with the GIL released, as sock.recv_into does,
    without SocketIO.readinto's Python frame."""
    cdef ssize_t n
    cdef int err
    if self._request_open is not True:
        if _ends_between_requests(self, fd):
            return 0
    elif self._head_deadline:
        _wait_for_head(self, fd)
    if sock.gettimeout() is not None:
        got = _SocketIO.readinto(self, b)  # timeouts and non-blocking: the stdlib's (or None)
        if got and self._request_open is not True:
            _request_opens(self)
        return got
    while True:
        with nogil:
            n = recv(fd, view.buf, view.len, 0)
            err = errno
            _want_gil()
        _took_gil_back()
        if n >= 0:
            if n and self._request_open is not True:
                _request_opens(self)
            return n
        if err == EAGAIN or err == EWOULDBLOCK:  # SO_RCVTIMEO set by hand
            return None
        if err != EINTR:
            raise OSError(err, strerror(err).decode())
        PyErr_CheckSignals()  # PEP 475: retry unless a signal handler raised


cdef void _request_opens(raw) except *:
    """A read returned a request's first bytes: its head's deadline starts."""
    raw._request_open = True
    timeout = raw._headers_timeout
    if timeout is not None:
        raw._head_deadline = _now() + timeout


cdef int _wait_for_head(raw, int fd) except -1:
    """Wait for more of a request's head until its deadline; raise socket.timeout
    (as a timed-out recv does, marking the stream) when it passes first."""
    cdef pollfd entry
    cdef double left = raw._head_deadline - _now()
    entry.fd = fd
    entry.events = POLLIN
    if left > 0 and _poll(&entry, 1, <int>ceil(left * 1e3)) > 0:
        return 0
    if _poll(&entry, 1, 0) > 0:
        return 0  # it came just in time
    state = raw._state
    if isinstance(state, ServingState):  # (not the pure twin's, loaded beside it in tests)
        with cython.critical_section(state):
            (<ServingState>state).headers_timeouts += 1
    raw._timeout_occurred = True
    raise _socket_timeout(HEAD_TIMEOUT_MESSAGE)


cdef bint _ends_between_requests(raw, int fd, bint through_object=False) except -1:
    """A read between requests would wait: True when it should read end-of-file
    instead: the server drains and this connection's cut passed with nothing
    to read (idle after a response: the last call's end; new, nothing read
    yet: the grace's end), or ``_idle_timeout`` passed with nothing to read.

    The handler decides for its own connection: it waits on the connection
    and on the server's drain descriptor together, and no other thread
    touches the connection. A request that arrives, in part or whole,
    before the handler is back here is read, whatever the time.

    ``through_object``: the connection is read through its socket object (an
    ssl.SSLSocket): its handler waits here, in poll(), not inside the
    object's read, whose wait would not see the drain descriptor."""
    cdef pollfd entries[2]
    cdef int timeout_ms, nfds
    cdef double now, idle_deadline = 0, cut
    cdef bint draining
    cdef int drain_fd = -1
    state = raw._state
    cdef ServingState own = state if isinstance(state, ServingState) else None
    if own is not None:
        with cython.critical_section(own):  # (server_close() may close it meanwhile)
            drain_fd = own.drain_fd
    timeout = raw._idle_timeout
    sock = raw._sock
    if sock is None:
        return False  # closed (by another thread, meanwhile): the stdlib's readinto raises
    sock_timeout = sock.gettimeout()
    if sock_timeout is not None and not through_object and not (
            own is not None and own.draining):
        # The socket's own timeout governs its wait (the stdlib's recv raises
        # when it passes; a non-blocking one never waits): a drain is seen
        # at its next read, at most that timeout later.
        drain_fd = -1
    if drain_fd < 0 and timeout is None and not through_object:
        # No descriptor to wait on (server_close() closed it, or none was made):
        # a drain that began already still applies its cut.
        if own is None:
            return False
        with cython.critical_section(own):
            draining = own.draining
        if not draining:
            return False
    if timeout is not None:
        idle_deadline = _now() + max(<double>timeout, 0.0)
    cdef bint after_response = raw._request_open is False  # (else new: nothing read yet)
    entries[0].fd = fd
    entries[0].events = POLLIN
    entries[1].fd = drain_fd
    entries[1].events = POLLIN
    while True:
        draining = False
        if own is not None:
            with cython.critical_section(own):
                draining = own.draining
                cut = own.idle_cut_at if after_response else own.grace_ends
        now = _now()
        if draining:
            nfds = 1  # the drain is known: only this connection and its cut
            if timeout is not None and idle_deadline < cut:
                cut = idle_deadline
            timeout_ms = <int>ceil((cut - now) * 1e3) if cut > now else 0
        else:
            nfds = 2 if drain_fd >= 0 else 1
            timeout_ms = -1
            if timeout is not None:
                timeout_ms = <int>ceil((idle_deadline - now) * 1e3) if idle_deadline > now else 0
        if _poll(entries, nfds, timeout_ms) == 0:
            break  # nothing came in time
        if entries[0].revents:
            return False  # data (or an end) is there: read it
        if not draining and own is not None:
            with cython.critical_section(own):
                draining = own.draining
            if not draining:
                # The descriptor is readable but this server is not draining:
                # a fork()ed child sees its parent's drain (or server_close()
                # closed it and the OS gave the number to another file). Not ours.
                drain_fd = -1
    if own is not None:
        with cython.critical_section(own):
            if draining and (timeout is None or _now() < idle_deadline):
                own.drained += 1
            else:
                own.idle_timeouts += 1
    return True


cdef object _stdlib_write(self, sock, b):
    sock.sendall(b)
    reader = self._reader
    if reader is not None:
        reader._request_open = False
    with memoryview(b) as view:
        return view.nbytes


def socket_writer_write(self, b):
    """_SocketWriter.write: sendall(b), trying a non-blocking send first."""
    cdef Py_buffer view
    cdef ssize_t n, total
    cdef int fd, err
    sock = self._sock
    # The stdlib's own path for: a socket object of another kind (its sendall;
    # an ssl.SSLSocket's SSL object is called directly), a socket with a timeout
    # (sendall polls for room first, and times out where a send would have gone
    # through), and b"" (one send of 0 bytes, which reports a pending error).
    if type(sock) is not _socket_class:
        if type(b) is bytes or type(b) is bytearray:
            sslobj = _tls_object(sock)
            if sslobj is not None and len(b):
                return _tls_write(self, sslobj, b)
        return _stdlib_write(self, sock, b)
    if sock.gettimeout() is not None:
        return _stdlib_write(self, sock, b)
    fd = sock.fileno()
    PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
    try:
        total = view.len
        if total == 0:
            return _stdlib_write(self, sock, b)
        n = 0
        if fd >= 0:
            n = send(fd, view.buf, total, MSG_DONTWAIT | SEND_NOSIGNAL)
            err = errno
            if n < 0:
                if err != EAGAIN and err != EWOULDBLOCK and err != EINTR:
                    raise OSError(err, strerror(err).decode())
                n = 0
        if n < total or fd < 0:
            # The rest, or all of it: sendall waits and raises as the stdlib does.
            with memoryview(b) as rest:
                sock.sendall(rest.cast("B")[n:])
        else:
            _share_gil_in_io()
        reader = self._reader
        if reader is not None:
            reader._request_open = False  # a response went out
        return total
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------- end of a request
# TCPServer.shutdown_request/close_request: shutdown(SHUT_WR) and close()
# cannot block on a plain socket without SO_LINGER, so they keep the GIL too.

cdef extern from *:
    """
    #include <sys/socket.h>
    #include <unistd.h>
    """
    int c_shutdown "shutdown"(int fd, int how) nogil
    int getsockopt(int fd, int level, int name, void *value, socklen_t *length) nogil
    const int SHUT_WR, SOL_SOCKET, SO_LINGER, ECONNRESET
    struct linger:
        int l_onoff
        int l_linger


def shutdown_write(sock):
    """TCPServer.shutdown_request's sock.shutdown(SHUT_WR), OSError ignored."""
    cdef int fd
    if type(sock) is _socket_class:
        fd = sock.fileno()
        if fd >= 0:
            c_shutdown(fd, SHUT_WR)  # errors ignored, as the stdlib ignores OSError
            return
    try:
        sock.shutdown(SHUT_WR)
    except OSError:
        pass


def close_socket(sock):
    """TCPServer.close_request's sock.close()."""
    cdef linger value
    cdef socklen_t length = sizeof(value)
    cdef int fd, err
    # socket.close() closes the descriptor only once no makefile() object
    # holds it; with SO_LINGER set, close() may wait: both left to the stdlib.
    if type(sock) is not _socket_class or sock._io_refs > 0:
        sock.close()
        return
    fd = sock.fileno()
    if fd < 0 or getsockopt(fd, SOL_SOCKET, SO_LINGER, &value, &length) != 0 or value.l_onoff:
        sock.close()
        return
    fd = sock.detach()  # marks the object closed, as close() does
    if close(fd) != 0:
        err = errno
        if err != ECONNRESET:  # as socket.close() ignores it
            raise OSError(err, strerror(err).decode())
