"""StreamRequestHandler's rfile and wfile over a plain socket.

rfile is what ``sock.makefile('rb')`` returns, a BufferedReader over a
socket.SocketIO, whose ``readinto`` is the core's; wfile is the stdlib's
``_SocketWriter`` (unbuffered: each write goes out at once) whose ``write``
is the core's. The compiled core's versions first try a system call that
cannot block, keeping the GIL; the pure core's are the stdlib's code.
"""
import _socket
import io
import socket
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


def make_reader(sock):
    """What sock.makefile('rb') returns, over _SocketReaderIO."""
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
    return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


class _SocketWriter(BufferedIOBase):
    """Simple writable BufferedIOBase implementation for a socket.

    Does not hold data in a buffer, avoiding any need to call flush().
    """

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    write = core.socket_writer_write

    def fileno(self):
        return self._sock.fileno()
