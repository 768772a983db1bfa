"""fastsockserver: a drop-in, Cython-accelerated replacement for ``socketserver``.

Use it as ``import fastsockserver as socketserver``, or call
``fastsockserver.install()`` before importing ``http.server``,
``xmlrpc.server`` or ``wsgiref``. ``COMPILED`` tells whether the compiled
core is in use (False with ``FASTSOCKSERVER_NO_EXTENSIONS=1`` or when it
could not be built).
"""
# The stdlib module exposes these as attributes; code that reaches through
# them (``socketserver.socket.AF_INET``) keeps working.
import os
import selectors
import socket
import sys
import threading
from io import BufferedIOBase
from time import monotonic as time

from . import _server
from ._core_py import _ServerSelector
from ._core_select import COMPILED
from ._install import install
from ._listeners import adopt_socket, listen_fds
from ._server import (
    BaseRequestHandler,
    BaseServer,
    DatagramRequestHandler,
    StreamRequestHandler,
    TCPServer,
    ThreadingMixIn,
    ThreadingTCPServer,
    ThreadingUDPServer,
    UDPServer,
    _NoThreads,
    _SocketWriter,
    _Threads,
)
from ._workers import serve

__version__ = "0.1.0"

__all__ = ["BaseServer", "TCPServer", "UDPServer",
           "ThreadingUDPServer", "ThreadingTCPServer",
           "BaseRequestHandler", "StreamRequestHandler",
           "DatagramRequestHandler", "ThreadingMixIn"]
if hasattr(os, "fork"):
    from ._server import ForkingMixIn, ForkingTCPServer, ForkingUDPServer
    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]
if hasattr(socket, "AF_UNIX"):
    from ._server import (
        ThreadingUnixDatagramServer,
        ThreadingUnixStreamServer,
        UnixDatagramServer,
        UnixStreamServer,
    )
    __all__ += ["UnixStreamServer", "UnixDatagramServer",
                "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer"]
    if hasattr(_server, "ForkingUnixStreamServer"):  # Python 3.12+
        from ._server import ForkingUnixDatagramServer, ForkingUnixStreamServer
        __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]
# Our own additions (PEP 399: the same in pure and compiled mode).
__all__ += ["install", "serve", "COMPILED", "adopt_socket", "listen_fds"]

# Public objects report the module users import them from.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj
