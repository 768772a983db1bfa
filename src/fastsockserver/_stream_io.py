"""StreamRequestHandler's rfile and wfile over a plain socket.

rfile is what ``sock.makefile('rb')`` returns, a BufferedReader over a
socket.SocketIO, whose ``readinto`` is the core's; wfile is the stdlib's
``_SocketWriter`` (unbuffered: each write goes out at once) whose ``write``
is the core's. The compiled core's versions first try a system call that
cannot block, keeping the GIL; the pure core's call the stdlib's code.

Between requests. The raw reader knows whether its connection is inside a
request: ``_request_open`` is None on a new connection (nothing read yet),
becomes True when a read returns data and False when wfile writes (the
response went out). While it is True and the handler has a headers_timeout,
a read that would wait past the request's head deadline (its first byte's
time plus headers_timeout; ``head_read`` ends it) raises socket.timeout, as
a recv with a timeout does. A read that would wait while it is not True reads
end-of-file instead once ``idle_timeout`` seconds pass with nothing to read,
and, once the server drains, when the connection's cut has passed with
nothing to read: LAST_CALL after drain() began for a connection idle after a
response (a closed-loop client's next request may be on its way: it is
answered, and http.server tells it ``Connection: close``, install()'s
end_headers), NEW_CONNECTION_GRACE for one that has sent nothing yet (as Go's
Server.Shutdown does). The handler decides this itself, only when it is back
in rfile and would wait: it waits on its connection and on the server's
drain descriptor (``state.drain_fd``) together. No other thread shuts its
connection down (but ``end_all_readers``, when a drain ran out of time), so
a request that arrived while the handler was still busy is read whole.
"""
import _socket
import io
import socket
import sys
import weakref
from io import BufferedIOBase

from ._core_select import core

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# socket.socket's family property converts to an IntEnum through Python code
# (~0.7 us); the C-level member of _socket.socket gives the same number.
_raw_family = _socket.socket.family.__get__


def is_tcp(connection):
    """True for a TCP connection (where TCP_NODELAY applies)."""
    if type(connection) is socket.socket:
        return _raw_family(connection) in _TCP_FAMILIES
    return getattr(connection, "family", None) in _TCP_FAMILIES


class _SocketReaderIO(socket.SocketIO):
    """The raw stream under rfile: socket.SocketIO with the core's readinto."""

    readinto = core.socketio_readinto
    # Set by the compiled readinto when it should wait at once rather than
    # try a non-blocking recv first.
    _expect_wait = False
    # See the module's docstring. _state: the server's ServingState (drain,
    # counters), or None.
    _request_open = None
    _idle_timeout = None
    _state = None
    # _headers_timeout: StreamRequestHandler.headers_timeout, or None;
    # _head_deadline: when the open request's head must be in (monotonic), 0.0: none.
    _headers_timeout = None
    _head_deadline = 0.0

    def close(self):
        state = self._state
        if state is not None:
            state.readers.discard(self)
        super().close()


def snapshot(weak_collection):
    """A list of a WeakSet's items (or a WeakValueDictionary's values) that
    other threads add to and remove from meanwhile (iterating may then raise)."""
    while True:
        try:
            if hasattr(weak_collection, "values"):
                return list(weak_collection.values())
            return list(weak_collection)
        except RuntimeError:  # changed size during iteration: again
            continue


def end_all_readers(state):
    """After a drain that ran out of time: every connection read by the library's
    rfile is shut both ways (its handler sees end-of-file or EPIPE)."""
    for raw in snapshot(state.readers):
        sock = raw._sock  # None once closed
        try:
            if sock is not None and sock.fileno() >= 0:
                _shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def head_read(rfile):
    """http.client.parse_headers has read a request's head from ``rfile``: its
    headers_timeout no longer applies (the body is the handler's business)."""
    raw = getattr(rfile, "raw", None)
    if type(raw) is _SocketReaderIO:
        raw._head_deadline = 0.0


class _ReadCounter:
    """The ``readinto`` and ``tell`` of one _SocketReaderIO that counts what it
    reads (instance attributes: other readers pay nothing). Counted from a base
    far from 0: counting may begin with bytes already in rfile's buffer, which
    BufferedReader.tell() subtracts, so only differences between two tell()s
    mean anything. Holds its reader weakly (the reader holds it)."""

    __slots__ = ("_raw", "_received")

    def __init__(self, raw):
        self._raw = weakref.ref(raw)
        self._received = 1 << 48

    def readinto(self, b):
        n = _SocketReaderIO.readinto(self._raw(), b)
        if n:
            self._received += n
        return n

    def tell(self):
        return self._received


def reader_position(rfile):
    """How far the handler has read ``rfile`` (its tell()), the library's
    rfile only: comparable with another reader_position of the same rfile,
    from the first call on; None for another rfile or a closed one."""
    raw = getattr(rfile, "raw", None)
    if type(raw) is not _SocketReaderIO or raw.closed:
        return None
    if "tell" not in vars(raw):
        counter = _ReadCounter(raw)
        raw.readinto, raw.tell = counter.readinto, counter.tell
    return rfile.tell()


# The descriptor's shutdown(), also for an ssl.SSLSocket: its own shutdown()
# drops its TLS state first, under a handler thread that may be inside a read.
_shutdown = socket.socket.shutdown


def readable_by_library(connection):
    """True for a connection the library's rfile reads: a plain socket.socket, or
    an ssl.SSLSocket (through its recv_into; ssl is loaded if one exists)."""
    kind = type(connection)
    if kind is socket.socket:
        return True
    ssl = sys.modules.get("ssl")
    return ssl is not None and kind is ssl.SSLSocket


def make_reader(sock, state=None, idle_timeout=None, headers_timeout=None):
    """What sock.makefile('rb') returns, over _SocketReaderIO; ``state``: the
    server's ServingState, or None (a server not of this library)."""
    # SocketIO(sock, "rb")'s state, set without its Python-level __init__
    # (mode checks, RawIOBase.__init__): ~1 us per connection. The same
    # five attributes on Python 3.9-3.13; a test compares the result with
    # makefile('rb') on every version.
    raw = _SocketReaderIO.__new__(_SocketReaderIO)
    raw._sock = sock
    raw._mode = "rb"
    raw._reading = True
    raw._writing = False
    raw._timeout_occurred = False
    sock._io_refs += 1
    if idle_timeout is not None:
        raw._idle_timeout = idle_timeout
    if headers_timeout is not None:
        raw._headers_timeout = headers_timeout
    if state is not None:
        raw._state = state
        state.readers.add(raw)
        core.drain_wait_fd(state)  # (made once per server; waited on between requests)
    return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


class _SocketWriter(BufferedIOBase):
    """Simple writable BufferedIOBase implementation for a socket.

    Does not hold data in a buffer, avoiding any need to call flush().
    """

    # The rfile raw stream of the same connection, told when a response goes
    # out (see the module's docstring); None: not tracked.
    _reader = None

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    write = core.socket_writer_write

    def fileno(self):
        return self._sock.fileno()
