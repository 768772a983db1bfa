"""fastsockserver._loadgen: the compiled load generator of ``python -m fastsockserver bench``.

One thread, one epoll set, nonblocking sockets, a timeout on every request,
the GIL released for the whole run. Three modes (``run()``, closed loop: each
slot sends its next request when the last one is answered):

``connrate``
    each slot connects, sends the message, reads the response, closes, again.
    Source ports are bound explicitly (SO_REUSEADDR) from the ranges given,
    outside the kernel's ephemeral range, so TIME_WAIT never exhausts it.
``persistent``
    each slot keeps one connection and sends the message again as soon as
    the whole response is in (closed loop).
``udp``
    each slot has one connected UDP socket and one datagram outstanding.

A response is complete when as many bytes as were sent came back, or, with
``http=True``, when the headers and ``Content-Length`` bytes of body are in;
after an HTTP response with ``Connection: close`` the slot closes its socket
and opens a new one (not an error).
Per-request latencies (ns) go to a preallocated array; errors are counted by
kind. Loopback addresses only. Compiler directives live in setup.py.

``run_open(rate, seconds)`` is the open loop of the TCP modes: request k is due
at ``start + k / rate``, whatever happened to the others; it goes out on the
first free slot (a timerfd wakes the loop at the next due time) and its latency
is counted from its due time, so the time a request waited for a free slot,
behind a stalled server, is in its latency (no coordinated omission).
"""
import ipaddress

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport (errno, EINTR, EAGAIN, EINPROGRESS, ECONNREFUSED,
                         ECONNRESET, EPIPE, EADDRINUSE, EADDRNOTAVAIL, ETIMEDOUT)
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memcpy, memset

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    const int AF_INET
    const int AF_INET6
    const int SOCK_STREAM
    const int SOCK_DGRAM
    const int SOCK_NONBLOCK
    const int SOCK_CLOEXEC
    const int SOL_SOCKET
    const int SO_REUSEADDR
    const int SO_ERROR
    const int MSG_NOSIGNAL

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        unsigned int s_addr
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct in6_addr:
        pass
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
    const int IPPROTO_TCP
    unsigned short htons(unsigned short)

cdef extern from "<netinet/tcp.h>" nogil:
    const int TCP_NODELAY

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t n)

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t "epoll_data":
        void *ptr
        int fd
        unsigned int u32
        unsigned long long u64
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    const int EPOLL_CTL_ADD
    const int EPOLL_CTL_MOD
    const int EPOLL_CTL_DEL
    const int EPOLL_CLOEXEC
    const unsigned int EPOLLIN
    const unsigned int EPOLLOUT
    const unsigned int EPOLLERR
    const unsigned int EPOLLHUP

cdef extern from "<time.h>":  # clock_gettime's own header (posix.time includes <sys/time.h>)
    pass
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)
    const int TFD_NONBLOCK
    const int TFD_CLOEXEC
    const int TFD_TIMER_ABSTIME

cdef extern from "<sys/time.h>" nogil:
    struct timeval:
        long tv_sec
        long tv_usec

cdef extern from "<sys/resource.h>" nogil:
    struct rusage:
        timeval ru_utime
        timeval ru_stime
    int getrusage(int who, rusage *usage)
    const int RUSAGE_THREAD


# Modes
cdef enum:
    M_CONNRATE = 0
    M_PERSISTENT = 1
    M_UDP = 2

# Slot states
cdef enum:
    S_IDLE = 0        # no request in flight: start one
    S_CONNECTING = 1  # nonblocking connect in progress
    S_SENDING = 2     # request partly sent
    S_RECEIVING = 3   # waiting for (the rest of) the response
    S_BACKOFF = 4     # after an error: wait a little before trying again

# Error kinds (indexes into LoadGen.errors)
cdef enum:
    E_REFUSED = 0
    E_RESET = 1
    E_TIMEOUT = 2
    E_CLOSED = 3      # the peer closed before the whole response was in
    E_BAD = 4         # a response that does not parse, or more bytes than asked for
    E_ADDR = 5        # no source port could be bound / connected
    E_OTHER = 6
    N_ERRORS = 7

ERROR_KINDS = ("refused", "reset", "timeout", "closed", "bad_response", "no_source_port", "other")

cdef enum:
    BUFSIZE = 65536
    MAX_EVENTS = 256

cdef long long BACKOFF_NS = 10000000  # 10 ms after an error before the slot tries again
# open loop: a request sent this long after its due time counts as a late send
cdef long long LATE_SEND_NS = 1000000


cdef struct Slot:
    int fd
    int state
    int registered        # events currently registered with epoll (0: not registered)
    long long start_ns    # request start (connrate: before socket())
    long long deadline_ns  # the current operation's timeout, or the end of a back-off
    Py_ssize_t sent
    Py_ssize_t received
    Py_ssize_t expect     # total response bytes expected (-1: not known yet, HTTP)
    unsigned long long seq  # UDP: sequence number of the outstanding datagram
    long long served      # requests completed on the current socket
    int close_after       # HTTP: the response in progress says "Connection: close"
    long long idle_since_ns  # when the slot last became free (the open loop's lag split)
    char *buf


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000LL + ts.tv_nsec


cdef inline double _thread_cpu() noexcept nogil:
    cdef rusage ru
    getrusage(RUSAGE_THREAD, &ru)
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
            + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6)


cdef int _cmp_ll(const void *a, const void *b) noexcept nogil:
    cdef long long x = (<const long long *>a)[0]
    cdef long long y = (<const long long *>b)[0]
    return (x > y) - (x < y)


cdef inline int _lower(int c) noexcept nogil:
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef inline int _name_is(const char *buf, Py_ssize_t line, Py_ssize_t j,
                         const char *name, Py_ssize_t size) noexcept nogil:
    """1 if the header line buf[line:j] begins with ``name`` (lower case, with its colon)."""
    cdef Py_ssize_t k = 0
    if j - line <= size:
        return 0
    while k < size and _lower(buf[line + k]) == name[k]:
        k += 1
    return k == size


cdef int _has_close_token(const char *buf, Py_ssize_t k, Py_ssize_t j) noexcept nogil:
    """1 if the header value buf[k:j] lists the token "close" (any case), else 0."""
    cdef const char *word = b"close"
    cdef Py_ssize_t start, end, m
    while k < j:
        while k < j and (buf[k] == 32 or buf[k] == 9 or buf[k] == 44):
            k += 1
        start = k
        while k < j and buf[k] != 44:
            k += 1
        end = k
        while end > start and (buf[end - 1] == 32 or buf[end - 1] == 9):
            end -= 1
        if end - start == 5:
            m = 0
            while m < 5 and _lower(buf[start + m]) == word[m]:
                m += 1
            if m == 5:
                return 1
    return 0


cdef Py_ssize_t _http_expect(const char *buf, Py_ssize_t n, int *close_after) noexcept nogil:
    """Total length of the HTTP response at buf: -1 while the headers are incomplete, -2 if bad.

    Once the headers are in, ``close_after`` is set to 1 when a Connection header
    lists "close", else 0.
    """
    cdef Py_ssize_t i, end = -1, line, j, k
    cdef Py_ssize_t length = -1
    cdef const char *name = b"content-length:"
    cdef const char *conn = b"connection:"
    for i in range(n - 3):
        if buf[i] == 13 and buf[i + 1] == 10 and buf[i + 2] == 13 and buf[i + 3] == 10:
            end = i + 4
            break
    if end < 0:
        return -1
    # scan the header lines for Content-Length and Connection
    close_after[0] = 0
    line = 0
    while line < end - 4:
        # find end of this line
        j = line
        while j < end and buf[j] != 13:
            j += 1
        if _name_is(buf, line, j, name, 15):
            k = line + 15
            while k < j and (buf[k] == 32 or buf[k] == 9):
                k += 1
            length = 0
            while k < j and buf[k] >= 48 and buf[k] <= 57:
                length = length * 10 + (buf[k] - 48)
                k += 1
        elif _name_is(buf, line, j, conn, 11) and _has_close_token(buf, line + 11, j):
            close_after[0] = 1
        line = j + 2
    if length < 0:
        return -2
    return end + length


cdef class LoadGen:
    """A load generator: ``LoadGen(mode, host, port, message, ...)``, then ``run(seconds)``.

    ``run()`` may be called several times (warm-up, then measurement):
    connections and requests in flight carry over from one call to the next.
    ``close()`` closes every socket.
    """
    cdef int mode
    cdef int http
    cdef int nodelay
    cdef int nslots
    cdef Slot *slots
    cdef int epfd
    cdef sockaddr_storage addr
    cdef socklen_t addrlen
    cdef int family
    cdef bytes message_obj
    cdef char *message
    cdef Py_ssize_t msglen
    cdef Py_ssize_t expect_len
    cdef long long timeout_ns
    # source ports for connrate
    cdef int *ports
    cdef int nports
    cdef int port_cursor
    # results of the current run
    cdef long long *lat
    cdef Py_ssize_t lat_cap
    cdef Py_ssize_t lat_n
    cdef long long completed
    cdef long long errors[N_ERRORS]
    # the part of errors on sockets that had completed a request (s.served > 0)
    cdef long long errors_served[N_ERRORS]
    cdef long long close_responses
    cdef long long port_retries
    cdef long long stale
    cdef long long connects
    cdef unsigned long long seq
    cdef int closed
    # open loop (run_open): the schedule, and how far behind it requests went out
    cdef long long sched_start_ns
    cdef double sched_interval_ns
    cdef long long sched_total
    cdef long long sched_issued
    cdef long long late_sends
    cdef long long lag_max_ns
    # the part of the lag after a slot was free: this process's own lateness
    cdef long long loadgen_late_sends
    cdef long long loadgen_lag_max_ns
    cdef long long unfinished

    def __cinit__(self):
        self.slots = NULL
        self.ports = NULL
        self.lat = NULL
        self.epfd = -1
        self.closed = 1

    def __init__(self, str mode, str host, int port, bytes message, *, int concurrency=32,
                 double timeout=5.0, bint http=False, response_size=None,
                 source_ports=None, Py_ssize_t max_samples=2000000, bint nodelay=True):
        cdef int i
        cdef sockaddr_in *a4
        cdef sockaddr_in6 *a6
        if mode == "connrate":
            self.mode = M_CONNRATE
        elif mode == "persistent":
            self.mode = M_PERSISTENT
        elif mode == "udp":
            self.mode = M_UDP
        else:
            raise ValueError(
                "mode must be 'connrate', 'persistent' or 'udp', not {!r}".format(mode))
        ip = ipaddress.ip_address(host)
        if not ip.is_loopback:
            raise ValueError(
                "the load generator only targets loopback addresses, not {}".format(host))
        if not 0 < port < 65536:
            raise ValueError("bad port {}".format(port))
        if concurrency < 1 or concurrency > 4096:
            raise ValueError("concurrency must be 1..4096")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.mode == M_UDP and http:
            raise ValueError("http needs a TCP mode")
        if not message or len(message) > BUFSIZE:
            raise ValueError("message must be 1..{} bytes".format(BUFSIZE))
        if self.mode == M_UDP and len(message) < 8:
            raise ValueError("UDP messages carry an 8-byte sequence number: 8 bytes at least")
        self.http = http
        self.nodelay = nodelay
        self.message_obj = bytes(message)
        self.message = PyBytes_AS_STRING(self.message_obj)
        self.msglen = PyBytes_GET_SIZE(self.message_obj)
        self.expect_len = self.msglen if response_size is None else int(response_size)
        if self.expect_len < 1 or self.expect_len > BUFSIZE:
            raise ValueError("response_size must be 1..{}".format(BUFSIZE))
        self.timeout_ns = <long long>(timeout * 1e9)
        memset(&self.addr, 0, sizeof(self.addr))
        packed = str(ip).encode()
        if ip.version == 4:
            self.family = AF_INET
            a4 = <sockaddr_in *>&self.addr
            a4.sin_family = AF_INET
            a4.sin_port = htons(port)
            inet_pton(AF_INET, packed, &a4.sin_addr)
            self.addrlen = sizeof(sockaddr_in)
        else:
            self.family = AF_INET6
            a6 = <sockaddr_in6 *>&self.addr
            a6.sin6_family = AF_INET6
            a6.sin6_port = htons(port)
            inet_pton(AF_INET6, packed, &a6.sin6_addr)
            self.addrlen = sizeof(sockaddr_in6)
        port_list = []
        if self.mode == M_CONNRATE:
            for lo, hi in (source_ports if source_ports is not None else default_source_ports()):
                port_list.extend(range(int(lo), int(hi) + 1))
            port_list = [p for p in port_list if 0 < p < 65536 and p != port]
            if not port_list:
                raise ValueError("no source ports to bind")
        self.nports = len(port_list)
        if self.nports:
            self.ports = <int *>malloc(self.nports * sizeof(int))
            if self.ports == NULL:
                raise MemoryError()
            for i in range(self.nports):
                self.ports[i] = port_list[i]
        self.port_cursor = 0
        if max_samples < 1:
            max_samples = 1
        self.lat_cap = max_samples
        self.lat = <long long *>malloc(max_samples * sizeof(long long))
        self.nslots = concurrency
        self.slots = <Slot *>calloc(concurrency, sizeof(Slot))
        if self.lat == NULL or self.slots == NULL:
            raise MemoryError()
        for i in range(concurrency):
            self.slots[i].fd = -1
            self.slots[i].state = S_IDLE
            self.slots[i].buf = <char *>malloc(BUFSIZE)
            if self.slots[i].buf == NULL:
                raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")
        self.closed = 0
        self.seq = 1

    def __dealloc__(self):
        cdef int i
        if self.slots != NULL:
            for i in range(self.nslots):
                if self.slots[i].fd >= 0:
                    close(self.slots[i].fd)
                free(self.slots[i].buf)
            free(self.slots)
            self.slots = NULL
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        free(self.ports)
        free(self.lat)

    def close(self):
        """Close every socket; the generator cannot run afterwards."""
        cdef int i
        if self.closed:
            return
        for i in range(self.nslots):
            self._drop(&self.slots[i])
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        self.closed = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ slots

    cdef void _drop(self, Slot *s) noexcept nogil:
        if s.fd >= 0:
            close(s.fd)   # also leaves the epoll set
        s.fd = -1
        s.registered = 0
        s.state = S_IDLE

    cdef void _fail(self, Slot *s, int kind, long long now) noexcept nogil:
        self.errors[kind] += 1
        if s.served > 0:
            self.errors_served[kind] += 1
        self._drop(s)
        s.state = S_BACKOFF
        s.deadline_ns = now + BACKOFF_NS

    cdef int _errkind(self, int err) noexcept nogil:
        if err == ECONNREFUSED:
            return E_REFUSED
        if err == ECONNRESET or err == EPIPE:
            return E_RESET
        if err == ETIMEDOUT:
            return E_TIMEOUT
        return E_OTHER

    cdef int _want(self, Slot *s, int slot_index, unsigned int events) noexcept nogil:
        """Make epoll report ``events`` for the slot's socket."""
        cdef epoll_event ev
        cdef int r
        if s.registered == <int>events:
            return 0
        ev.events = events
        ev.data.u64 = slot_index
        if s.registered:
            r = epoll_ctl(self.epfd, EPOLL_CTL_MOD, s.fd, &ev)
        else:
            r = epoll_ctl(self.epfd, EPOLL_CTL_ADD, s.fd, &ev)
        s.registered = events
        return r

    cdef void _open(self, Slot *s, int idx, long long now) noexcept nogil:
        """Open the slot's socket (a TCP connect, or a connected UDP socket)."""
        cdef int fd, one = 1, _attempt, r, err, port
        cdef sockaddr_storage src
        cdef sockaddr_in *s4
        cdef sockaddr_in6 *s6
        s.start_ns = now
        s.deadline_ns = now + self.timeout_ns
        s.sent = 0
        s.received = 0
        s.served = 0
        s.expect = -1 if self.http else self.expect_len
        if self.mode == M_UDP:
            fd = socket(self.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
            if fd < 0:
                self._fail(s, E_OTHER, now)
                return
            if connect(fd, <sockaddr *>&self.addr, self.addrlen) < 0:
                err = errno
                close(fd)
                self._fail(s, self._errkind(err), now)
                return
            s.fd = fd
            s.registered = 0
            self._want(s, idx, EPOLLIN)
            self.connects += 1
            s.state = S_IDLE
            return
        for _attempt in range(64):
            fd = socket(self.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
            if fd < 0:
                self._fail(s, E_OTHER, now)
                return
            if self.nports:
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))
                port = self.ports[self.port_cursor]
                self.port_cursor += 1
                if self.port_cursor >= self.nports:
                    self.port_cursor = 0
                memset(&src, 0, sizeof(src))
                if self.family == AF_INET:
                    s4 = <sockaddr_in *>&src
                    memcpy(s4, &self.addr, sizeof(sockaddr_in))
                    s4.sin_port = htons(port)
                else:
                    s6 = <sockaddr_in6 *>&src
                    memcpy(s6, &self.addr, sizeof(sockaddr_in6))
                    s6.sin6_port = htons(port)
                if bind(fd, <sockaddr *>&src, self.addrlen) < 0:
                    close(fd)
                    self.port_retries += 1
                    continue
            if self.nodelay:
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            r = connect(fd, <sockaddr *>&self.addr, self.addrlen)
            if r < 0:
                err = errno
                if err == EADDRNOTAVAIL or err == EADDRINUSE:
                    close(fd)
                    self.port_retries += 1
                    continue
                if err != EINPROGRESS:
                    close(fd)
                    self._fail(s, self._errkind(err), now)
                    return
                s.fd = fd
                s.registered = 0
                s.state = S_CONNECTING
                self._want(s, idx, EPOLLOUT)
                self.connects += 1
                return
            s.fd = fd
            s.registered = 0
            self.connects += 1
            s.state = S_IDLE
            return
        self._fail(s, E_ADDR, now)

    cdef void _start(self, Slot *s, int idx, long long now) noexcept nogil:
        """Start a request on an open socket: send the message."""
        cdef int err
        if self.mode != M_CONNRATE:
            s.start_ns = now   # connrate's clock started before socket(), in _open()
        s.sent = 0
        s.received = 0
        s.expect = -1 if self.http else self.expect_len
        s.close_after = 0
        s.deadline_ns = now + self.timeout_ns
        if self.mode == M_UDP:
            self.seq += 1
            s.seq = self.seq
            memcpy(self.slots[idx].buf, self.message, self.msglen)
            memcpy(self.slots[idx].buf, &s.seq, 8)
            if send(s.fd, s.buf, self.msglen, 0) < 0:
                err = errno
                if err == EAGAIN:
                    s.state = S_RECEIVING  # counted lost after the timeout
                    return
                self._fail(s, self._errkind(err), now)
                return
            s.sent = self.msglen
            s.state = S_RECEIVING
            return
        s.state = S_SENDING
        self._send_more(s, idx, now)

    cdef void _send_more(self, Slot *s, int idx, long long now) noexcept nogil:
        cdef ssize_t n
        cdef int err
        while s.sent < self.msglen:
            n = send(s.fd, self.message + s.sent, self.msglen - s.sent, MSG_NOSIGNAL)
            if n < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN:
                    self._want(s, idx, EPOLLOUT)
                    return
                self._fail(s, self._errkind(err), now)
                return
            s.sent += n
        s.state = S_RECEIVING
        self._want(s, idx, EPOLLIN)

    cdef void _complete(self, Slot *s, int idx, long long now, bint record) noexcept nogil:
        s.served += 1
        s.idle_since_ns = now
        if record:
            self.completed += 1
            if self.lat_n < self.lat_cap:
                self.lat[self.lat_n] = now - s.start_ns
                self.lat_n += 1
        if self.mode == M_CONNRATE:
            self._drop(s)
            s.start_ns = 0
        elif s.close_after:
            # The server will close this connection: a new one for the next request.
            self.close_responses += 1
            self._drop(s)
            s.start_ns = 0
        else:
            s.state = S_IDLE
            s.start_ns = 0

    cdef void _on_readable(self, Slot *s, int idx, long long now, bint record) noexcept nogil:
        cdef ssize_t n
        cdef int err
        cdef unsigned long long got
        if self.mode == M_UDP:
            while True:
                n = recv(s.fd, s.buf, BUFSIZE, 0)
                if n < 0:
                    err = errno
                    if err == EINTR:
                        continue
                    if err == EAGAIN:
                        return
                    self._fail(s, self._errkind(err), now)
                    return
                if s.state != S_RECEIVING or n < 8:
                    self.stale += 1
                    continue
                memcpy(&got, s.buf, 8)
                if got != s.seq:
                    self.stale += 1   # a late answer to a request already timed out
                    continue
                if n != self.expect_len:
                    self._fail(s, E_BAD, now)
                    return
                self._complete(s, idx, now, record)
                return
        while True:
            if s.received >= BUFSIZE:
                self._fail(s, E_BAD, now)
                return
            n = recv(s.fd, s.buf + s.received, BUFSIZE - s.received, 0)
            if n < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN:
                    return
                self._fail(s, self._errkind(err), now)
                return
            if n == 0:
                self._fail(s, E_CLOSED, now)
                return
            if s.state != S_RECEIVING:
                self._fail(s, E_BAD, now)  # data nobody asked for
                return
            s.received += n
            if s.expect < 0:
                s.expect = _http_expect(s.buf, s.received, &s.close_after)
                if s.expect == -2:
                    self._fail(s, E_BAD, now)
                    return
                if s.expect == -1:
                    continue
            if s.received > s.expect:
                self._fail(s, E_BAD, now)
                return
            if s.received == s.expect:
                self._complete(s, idx, now, record)
                return

    cdef void _on_writable(self, Slot *s, int idx, long long now) noexcept nogil:
        cdef int err = 0
        cdef socklen_t errlen = sizeof(err)
        if s.state == S_CONNECTING:
            getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &errlen)
            if err != 0:
                self._fail(s, self._errkind(err), now)
                return
            s.state = S_SENDING
            s.sent = 0
            self._send_more(s, idx, now)
        elif s.state == S_SENDING:
            self._send_more(s, idx, now)

    cdef void _loop(self, long long end_ns, bint record, bint start_new) noexcept nogil:
        """Run until end_ns; without start_new, only finish what is in flight (drain)."""
        cdef epoll_event events[MAX_EVENTS]
        cdef int i, n, idx, timeout_ms, busy
        cdef long long now, wait_ns
        cdef Slot *s
        cdef unsigned int ev
        while True:
            now = _now_ns()
            if now >= end_ns:
                return
            # start what can start, expire what timed out
            busy = 0
            for i in range(self.nslots):
                s = &self.slots[i]
                if s.state == S_BACKOFF:
                    if now >= s.deadline_ns:
                        s.state = S_IDLE
                    else:
                        continue
                if s.state == S_CONNECTING and not start_new:
                    self._drop(s)   # draining: no server handler waits on a connect
                    continue
                if s.state == S_IDLE:
                    if not start_new:
                        continue
                    if s.fd < 0:
                        self._open(s, i, now)
                        if s.fd < 0 or s.state != S_IDLE:
                            continue
                    self._start(s, i, now)
                elif now >= s.deadline_ns:
                    if self.mode == M_UDP:
                        self.errors[E_TIMEOUT] += 1   # lost datagram: send another
                        if s.served > 0:
                            self.errors_served[E_TIMEOUT] += 1
                        s.state = S_IDLE
                        if start_new:
                            self._start(s, i, now)
                    else:
                        self._fail(s, E_TIMEOUT, now)
                if s.state == S_CONNECTING or s.state == S_SENDING or s.state == S_RECEIVING:
                    busy += 1
            if not start_new and busy == 0:
                return
            wait_ns = end_ns - now
            if wait_ns > 10000000:
                wait_ns = 10000000
            timeout_ms = <int>((wait_ns + 999999) // 1000000)
            n = epoll_wait(self.epfd, events, MAX_EVENTS, timeout_ms)
            if n <= 0:
                continue
            now = _now_ns()
            for i in range(n):
                idx = <int>events[i].data.u64
                s = &self.slots[idx]
                if s.fd < 0:
                    continue
                ev = events[i].events
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    if s.state == S_CONNECTING or (s.state == S_SENDING and not (ev & EPOLLIN)):
                        self._on_writable(s, idx, now)
                    else:
                        self._on_readable(s, idx, now, record)
                elif ev & EPOLLOUT:
                    self._on_writable(s, idx, now)

    cdef long long _due_ns(self, long long k) noexcept nogil:
        return self.sched_start_ns + <long long>(k * self.sched_interval_ns)

    cdef void _loop_open(self, int timer_fd, long long end_ns, bint record) noexcept nogil:
        """The open loop of run_open(): requests at their due times until sched_total have
        gone out, then until none is in flight, or end_ns."""
        cdef epoll_event events[MAX_EVENTS]
        cdef itimerspec when
        cdef int i, n, idx, busy, idle
        cdef long long now, wait_ns, due, lag, next_due
        cdef unsigned long long expirations
        cdef Slot *s
        cdef unsigned int ev
        cdef epoll_event tev
        tev.events = EPOLLIN
        tev.data.u64 = <unsigned long long>self.nslots   # not a slot: the timer
        epoll_ctl(self.epfd, EPOLL_CTL_ADD, timer_fd, &tev)
        memset(&when, 0, sizeof(when))
        while True:
            now = _now_ns()
            if now >= end_ns:
                break
            if now < self.sched_start_ns:
                due = 0
            else:
                due = <long long>((now - self.sched_start_ns) / self.sched_interval_ns) + 1
                if due > self.sched_total:
                    due = self.sched_total
            busy = 0
            idle = 0
            for i in range(self.nslots):
                s = &self.slots[i]
                if s.state == S_BACKOFF:
                    if now >= s.deadline_ns:
                        s.state = S_IDLE
                        s.idle_since_ns = s.deadline_ns
                    else:
                        continue
                if s.state == S_IDLE:
                    if self.sched_issued >= due:
                        idle += 1
                        continue
                    # the next due request goes out on this slot; its clock started
                    # at its due time, not now
                    next_due = self._due_ns(self.sched_issued)
                    self.sched_issued += 1
                    lag = now - next_due
                    if record:
                        if lag > self.lag_max_ns:
                            self.lag_max_ns = lag
                        if lag > LATE_SEND_NS:
                            self.late_sends += 1
                        # lag from the moment both the request and this slot were ready:
                        # not the server's doing
                        if s.idle_since_ns > next_due:
                            lag = now - s.idle_since_ns
                        if lag > self.loadgen_lag_max_ns:
                            self.loadgen_lag_max_ns = lag
                        if lag > LATE_SEND_NS:
                            self.loadgen_late_sends += 1
                    if s.fd < 0:
                        self._open(s, i, now)
                        if s.fd < 0:
                            continue   # failed (counted): that request is an error
                        s.start_ns = next_due
                        if s.state != S_IDLE:
                            busy += 1   # connecting: the request goes when connected
                            continue
                    self._start(s, i, now)
                    s.start_ns = next_due
                elif now >= s.deadline_ns:
                    self._fail(s, E_TIMEOUT, now)
                if s.state == S_CONNECTING or s.state == S_SENDING or s.state == S_RECEIVING:
                    busy += 1
            if self.sched_issued >= self.sched_total and busy == 0:
                break
            wait_ns = end_ns - now
            if wait_ns > 10000000:
                wait_ns = 10000000
            if self.sched_issued < self.sched_total and idle > 0:
                # a free slot waits for the next due time: the timer, to the nanosecond
                next_due = self._due_ns(self.sched_issued)
                when.it_value.tv_sec = next_due // 1000000000
                when.it_value.tv_nsec = next_due % 1000000000
                timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &when, NULL)
            n = epoll_wait(self.epfd, events, MAX_EVENTS,
                           <int>((wait_ns + 999999) // 1000000))
            if n <= 0:
                continue
            now = _now_ns()
            for i in range(n):
                idx = <int>events[i].data.u64
                if idx == self.nslots:
                    read(timer_fd, &expirations, sizeof(expirations))
                    continue
                s = &self.slots[idx]
                if s.fd < 0:
                    continue
                ev = events[i].events
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    if s.state == S_CONNECTING or (s.state == S_SENDING and not (ev & EPOLLIN)):
                        self._on_writable(s, idx, now)
                    else:
                        self._on_readable(s, idx, now, record)
                elif ev & EPOLLOUT:
                    self._on_writable(s, idx, now)
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, timer_fd, NULL)
        if not record:
            return
        # What is still waiting at the end counts with the time it has waited so far
        # (a lower bound of its latency), so a server that stopped answering shows.
        now = _now_ns()
        for i in range(self.nslots):
            s = &self.slots[i]
            if s.state == S_CONNECTING or s.state == S_SENDING or s.state == S_RECEIVING:
                self.unfinished += 1
                if self.lat_n < self.lat_cap:
                    self.lat[self.lat_n] = now - s.start_ns
                    self.lat_n += 1
        while self.sched_issued < self.sched_total:
            self.unfinished += 1
            if self.lat_n < self.lat_cap:
                self.lat[self.lat_n] = now - self._due_ns(self.sched_issued)
                self.lat_n += 1
            self.sched_issued += 1

    def run_open(self, double rate, double seconds, double max_wait=5.0, bint record=True):
        """Open loop: ``rate * seconds`` requests, request k due ``k / rate`` s after the
        start, each sent on the first free slot at or after its due time; then up to
        ``max_wait`` s for the last ones. Latency counts from the due time. Returns the
        figures of ``run()`` (``rps``: answered per second of the schedule) and
        ``offered_rate``, ``scheduled``, ``late_sends`` (sent more than 1 ms after their
        due time: every slot was busy, or this process was late), ``send_lag_max_ms``,
        ``loadgen_late_sends`` and ``loadgen_lag_max_ms`` (the same, counted from when
        both the request was due and a slot was free: this process's own lateness, as
        on a busy client core), ``unfinished`` (not answered by the end: in the
        percentiles with the time they had waited, a lower bound)."""
        cdef long long start, end_ns
        cdef double cpu0, cpu1
        cdef int timer_fd
        if self.closed:
            raise ValueError("run_open() on a closed LoadGen")
        if self.mode == M_UDP:
            raise ValueError("the open loop is for the TCP modes")
        if not seconds > 0 or seconds > 3600 or not 0 <= max_wait <= 600:
            raise ValueError("seconds must be in (0, 3600], max_wait in [0, 600]")
        if not 0 < rate <= 10000000 or rate * seconds < 1:
            raise ValueError("rate must be in (0, 1e7] and give at least one request")
        timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if timer_fd < 0:
            raise OSError(errno, "timerfd_create")
        self._reset_counts()
        self.sched_interval_ns = 1e9 / rate
        self.sched_total = <long long>(rate * seconds)
        self.sched_issued = 0
        self.late_sends = 0
        self.lag_max_ns = 0
        self.loadgen_late_sends = 0
        self.loadgen_lag_max_ns = 0
        self.unfinished = 0
        try:
            with nogil:
                cpu0 = _thread_cpu()
                start = _now_ns()
                self.sched_start_ns = start
                self._loop_open(timer_fd, start + <long long>((seconds + max_wait) * 1e9),
                                record)
                end_ns = _now_ns()
                cpu1 = _thread_cpu()
        finally:
            close(timer_fd)
        if not record:
            return {"elapsed": (end_ns - start) * 1e-9}
        result = self._figures(start, end_ns, cpu0, cpu1)
        result.update({
            "rps": self.completed / seconds,
            "offered_rate": rate,
            "schedule_s": seconds,
            "scheduled": self.sched_total,
            "late_sends": self.late_sends,
            "send_lag_max_ms": self.lag_max_ns * 1e-6,
            "loadgen_late_sends": self.loadgen_late_sends,
            "loadgen_lag_max_ms": self.loadgen_lag_max_ns * 1e-6,
            "unfinished": self.unfinished,
        })
        return result

    cdef void _reset_counts(self):
        cdef int k
        self.lat_n = 0
        self.completed = 0
        self.port_retries = 0
        self.stale = 0
        self.connects = 0
        self.close_responses = 0
        for k in range(N_ERRORS):
            self.errors[k] = 0
            self.errors_served[k] = 0

    def run(self, double seconds, bint record=True):
        """Drive the load for ``seconds``; return the figures of this run (a dict).

        With ``record=False`` (warm-up) nothing is counted.
        """
        cdef long long start, end_ns
        cdef double cpu0, cpu1
        if self.closed:
            raise ValueError("run() on a closed LoadGen")
        if not seconds > 0 or seconds > 3600:
            raise ValueError("seconds must be in (0, 3600]")
        self._reset_counts()
        with nogil:
            cpu0 = _thread_cpu()
            start = _now_ns()
            end_ns = start + <long long>(seconds * 1e9)
            self._loop(end_ns, record, True)
            end_ns = _now_ns()
            cpu1 = _thread_cpu()
        if not record:
            return {"elapsed": (end_ns - start) * 1e-9}
        return self._figures(start, end_ns, cpu0, cpu1)

    cdef dict _figures(self, long long start, long long end_ns, double cpu0, double cpu1):
        """The figures of the run that went from ``start`` to ``end_ns``."""
        cdef int k
        elapsed = (end_ns - start) * 1e-9
        inflight = 0
        oldest = 0
        for k in range(self.nslots):
            if (self.slots[k].state == S_CONNECTING or self.slots[k].state == S_SENDING
                    or self.slots[k].state == S_RECEIVING):
                inflight += 1
                if self.slots[k].start_ns and end_ns - self.slots[k].start_ns > oldest:
                    oldest = end_ns - self.slots[k].start_ns
        result = {
            "elapsed": elapsed,
            "requests": self.completed,
            "rps": self.completed / elapsed if elapsed > 0 else 0.0,
            "client_cpu": cpu1 - cpu0,
            "client_cpu_pct": 100.0 * (cpu1 - cpu0) / elapsed if elapsed > 0 else 0.0,
            "errors": {ERROR_KINDS[k]: self.errors[k] for k in range(N_ERRORS)},
            "errors_total": sum(self.errors[k] for k in range(N_ERRORS)),
            # the errors split: on sockets that had had a response (so the server had
            # accepted them), and on sockets that never had one (refused, reset in the
            # listen backlog, or accepted and then closed before a first response)
            "errors_on_served": {ERROR_KINDS[k]: self.errors_served[k]
                                 for k in range(N_ERRORS)},
            "errors_on_served_total": sum(self.errors_served[k] for k in range(N_ERRORS)),
            "errors_on_new": {ERROR_KINDS[k]: self.errors[k] - self.errors_served[k]
                              for k in range(N_ERRORS)},
            "errors_on_new_total": sum(self.errors[k] - self.errors_served[k]
                                       for k in range(N_ERRORS)),
            # HTTP responses with "Connection: close" (each followed by a new connection)
            "close_responses": self.close_responses,
            "connects": self.connects,
            "source_port_retries": self.port_retries,
            "stale_datagrams": self.stale,
            "samples": self.lat_n,
            "samples_truncated": self.completed > self.lat_n,
            # requests still waiting when the run ended: not in the percentiles
            "inflight_at_end": inflight,
            "oldest_inflight_ms": oldest * 1e-6,
        }
        result.update(self._percentiles())
        return result

    def warm_up(self, double seconds, double max_seconds):
        """Unrecorded load for ``seconds``, then on (up to ``max_seconds`` in all) until every
        persistent connection has completed a request: connection set-up stays out of the
        measurement."""
        cdef int i, cold
        if self.closed:
            raise ValueError("warm_up() on a closed LoadGen")
        total = 0.0
        step = seconds
        while True:
            total += self.run(step, record=False)["elapsed"]
            if self.mode == M_CONNRATE:
                return total
            cold = 0
            for i in range(self.nslots):
                if self.slots[i].served == 0:
                    cold += 1
            if cold == 0 or total >= max_seconds:
                return total
            step = min(0.05, max_seconds - total) if max_seconds > total else 0.01

    def drain(self, double max_seconds=1.0):
        """Start nothing new; wait (up to ``max_seconds``) for the requests in flight to finish,
        so that closing the sockets afterwards interrupts no request on the server."""
        cdef long long end_ns
        cdef int k
        if self.closed:
            return
        with nogil:
            end_ns = _now_ns() + <long long>(max_seconds * 1e9)
            self._loop(end_ns, False, False)
        for k in range(N_ERRORS):
            self.errors[k] = 0
            self.errors_served[k] = 0

    cdef dict _percentiles(self):
        cdef Py_ssize_t n = self.lat_n, idx
        cdef double total = 0
        cdef Py_ssize_t i
        out = {}
        if n == 0:
            for name in ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "lat_p999_ms",
                         "lat_max_ms", "lat_mean_ms"):
                out[name] = None
            return out
        with nogil:
            qsort(self.lat, n, sizeof(long long), _cmp_ll)
            for i in range(n):
                total += self.lat[i]
        for name, q in (("lat_p50_ms", 0.5), ("lat_p90_ms", 0.9), ("lat_p99_ms", 0.99),
                        ("lat_p999_ms", 0.999)):
            idx = <Py_ssize_t>(q * n + 0.999999999) - 1   # nearest rank
            if idx < 0:
                idx = 0
            if idx >= n:
                idx = n - 1
            out[name] = self.lat[idx] * 1e-6
        out["lat_max_ms"] = self.lat[n - 1] * 1e-6
        out["lat_mean_ms"] = total / n * 1e-6
        return out


def ephemeral_range():
    """The kernel's ephemeral port range (lo, hi), from /proc (32768-60999 if unreadable)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def default_source_ports():
    """Port ranges outside the ephemeral range (and above 1024) for connrate's source ports."""
    lo, hi = ephemeral_range()
    ranges = []
    if lo - 1 >= 1025:
        ranges.append((1025, lo - 1))
    if hi + 1 <= 65535:
        ranges.append((hi + 1, 65535))
    return ranges
