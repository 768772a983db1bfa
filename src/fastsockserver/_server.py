"""The socketserver class hierarchy: the public API and the stdlib's algorithm.

Names, signatures, class attributes, hook order, messages and exceptions
follow the ``socketserver`` module of the running Python (3.9-3.13). The
waiting in ``serve_forever()`` and ``handle_request()`` is delegated to
``_impl.loop``: the compiled core, or its pure-Python twin.
"""
import collections
import errno
import os
import socket
import _socket
import sys
import threading
import io
import weakref
from io import BufferedIOBase
from time import monotonic as _time

from ._impl import loop as _loop
from ._pool import WorkerPool

_HAS_FORK = hasattr(os, "fork")
_HAS_UNIX = hasattr(socket, "AF_UNIX")
_PY311 = sys.version_info >= (3, 11)  # allow_reuse_port, SO_REUSE* guards
_PY312 = sys.version_info >= (3, 12)  # ForkingUnixStreamServer / ForkingUnixDatagramServer


def _server_fd(server):
    """The descriptor to wait on, resolved as ``selectors`` resolves ``register(server)``."""
    try:
        fd = int(server.fileno())
    except (AttributeError, TypeError, ValueError):
        raise ValueError("Invalid file object: {!r}".format(server)) from None
    if fd < 0:
        raise ValueError("Invalid file descriptor: {}".format(fd))
    return fd


_RESOURCE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
    if hasattr(errno, name))
_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 1.0


class _Waker:
    """A self-pipe: shutdown() interrupts serve_forever's wait at once.

    The stdlib only notices shutdown() after up to ``poll_interval``. The
    pipe exists only while serve_forever() runs; the lock keeps wake() from
    writing to a descriptor that close() has released (and the OS reused).
    """

    __slots__ = ("_lock", "_read_fd", "_write_fd")

    def __init__(self):
        self._lock = threading.Lock()
        self._read_fd = self._write_fd = -1

    def open(self):
        """Create the pipe; returns the descriptor to wait on."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._lock:
            self._read_fd, self._write_fd = read_fd, write_fd
        return read_fd

    def wake(self):
        with self._lock:
            if self._write_fd >= 0:
                try:
                    os.write(self._write_fd, b"\0")
                except OSError:  # pipe full: a wake-up is pending anyway
                    pass

    def close(self):
        with self._lock:
            read_fd, write_fd = self._read_fd, self._write_fd
            self._read_fd = self._write_fd = -1
        if read_fd >= 0:
            os.close(read_fd)
            os.close(write_fd)


def _uses_own(server, name, function):
    """True when ``server.<name>`` is the library's ``function``: neither
    overridden in a subclass nor assigned on the instance."""
    return (name not in getattr(server, "__dict__", ())
            and getattr(type(server), name, None) is function)


def _own_receive_path(server, fd):
    """The listening socket, if the compiled core may accept/receive on it itself.

    That is when taking a request in is the library's own code: get_request,
    _handle_request_noblock and _verify_and_process neither overridden nor
    assigned on the instance, a plain blocking socket.socket behind fileno().
    The core then calls _verify_and_process(request, client_address), so
    verify_request, process_request and every later hook run as usual.
    Otherwise None: the core calls _handle_request_noblock() as the stdlib does.
    """
    if not (_uses_own(server, "_handle_request_noblock", BaseServer._handle_request_noblock)
            and _uses_own(server, "_verify_and_process", BaseServer._verify_and_process)):
        return None
    listener = getattr(server, "socket", None)
    if (type(listener) is not socket.socket or listener.gettimeout() is not None
            or listener.fileno() != fd or listener.family not in _CORE_FAMILIES):
        return None
    if listener.type == socket.SOCK_STREAM and _uses_own(server, "get_request", TCPServer.get_request):
        return listener
    if listener.type == socket.SOCK_DGRAM and _uses_own(server, "get_request", UDPServer.get_request):
        return listener
    return None


def _own_service_actions(server):
    """True when service_actions is the library's no-op.

    Only then may requests be taken in batches (and by handler threads):
    the stdlib calls service_actions() after every request, and ForkingMixIn
    relies on it to keep below max_children.
    """
    return _uses_own(server, "service_actions", BaseServer.service_actions)


# Requests taken per wake-up: enough to drain a burst of connects, few enough
# that service_actions() runs often (shutdown() ends a batch early).
_MAX_BATCH = 64
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# socket.socket's family property converts to an IntEnum through Python code
# (~0.7 us); the C-level member of _socket.socket gives the same number.
_raw_family = _socket.socket.family.__get__
_CORE_FAMILIES = tuple(getattr(socket, name) for name in ("AF_INET", "AF_INET6", "AF_UNIX")
                       if hasattr(socket, name))


class BaseServer:
    """Base class for server classes.

    Methods for the caller: ``__init__``, ``serve_forever``, ``shutdown``,
    ``handle_request``, ``server_close``, ``fileno``. Methods that may be
    overridden: ``server_bind``, ``server_activate``, ``get_request``,
    ``handle_timeout``, ``verify_request``, ``process_request``,
    ``shutdown_request``, ``close_request``, ``service_actions``,
    ``handle_error``.
    """

    timeout = None

    def __init__(self, server_address, RequestHandlerClass):
        """Constructor.  May be extended, do not override."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self.__is_shut_down = threading.Event()
        self.__shutdown_request = False
        self.__waker = _Waker()

    def server_activate(self):
        """Called by constructor to activate the server.  May be overridden."""
        pass

    def serve_forever(self, poll_interval=0.5):
        """Handle requests until shutdown() is called.

        shutdown() interrupts the wait at once; service_actions() runs at
        least every poll_interval seconds. Ignores self.timeout.
        """
        self.__is_shut_down.clear()
        try:
            fd = _server_fd(self)
            receive_path = _own_receive_path(self, fd)
            batch = _MAX_BATCH if _own_service_actions(self) else 1
            handlers_take = receive_path is not None and _handlers_take_pending(self)
            if handlers_take:
                self.__handoff = collections.deque()
                _serving_with_takers[id(self)] = self
            wake_fd = self.__waker.open()
            try:
                _loop.serve(self, fd, poll_interval, wake_fd, receive_path, batch, handlers_take)
            finally:
                _serving_with_takers.pop(id(self), None)
                self.__waker.close()
                self.__hand_over_queued()
        finally:
            self.__shutdown_request = False
            self.__is_shut_down.set()

    def shutdown(self):
        """Stops the serve_forever loop.

        Blocks until the loop has finished. This must be called while
        serve_forever() is running in another thread, or it will
        deadlock.
        """
        self.__shutdown_request = True
        self.__waker.wake()
        self.__is_shut_down.wait()

    def service_actions(self):
        """Called by the serve_forever() loop.

        May be overridden by a subclass / Mixin to implement any code that
        needs to be run during the loop.
        """
        pass

    def handle_request(self):
        """Wait for one request (up to self.timeout, or the socket's timeout) and handle it."""
        # The smaller of the socket's timeout and self.timeout, as in the stdlib.
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        if timeout is not None:
            deadline = _time() + timeout
        fd = _server_fd(self)
        while True:
            if _loop.wait_readable(fd, timeout):
                return self._handle_request_noblock()
            if timeout is not None:
                timeout = deadline - _time()
                if timeout < 0:
                    return self.handle_timeout()

    def _handle_request_noblock(self):
        """Take one request in and process it; called once the socket is readable."""
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            self.__accept_failed(exc)
            return
        if self.__accept_backoff:
            self.__accept_recovered()
        self._verify_and_process(request, client_address)

    # After an accept error that means "out of resources" (EMFILE...), the
    # listener stays readable: retrying at once would spin the CPU. The loop
    # stops waiting on it until __accept_resume_at; the pause doubles from
    # 10 ms to 1 s while the error lasts, and a successful accept ends it.
    __accept_backoff = 0.0
    __accept_resume_at = 0.0
    # The listener handler threads may take the next waiting request from
    # themselves (see _handlers_take_pending). Set by the compiled core only
    # while the listener is non-blocking: their accept must never block.
    __take_pending_from = None
    # Requests the loop queued for handler threads already on their way to
    # take the next one, and how many such threads there are (the core's
    # take_pending / hand_to_taker).
    __handoff = None
    __takers = 0

    def __hand_over_queued(self):
        """After serving: requests still queued for takers go to process_request
        (each had a taker on its way, so normally none is left)."""
        handoff, self.__handoff = self.__handoff, None
        try:
            while handoff:
                self.__process(*handoff.popleft())
        finally:
            while handoff:  # left by an exception that ends serve_forever()
                self.shutdown_request(handoff.popleft()[0])

    def __accept_failed(self, exc):
        if exc.errno in _RESOURCE_ERRNOS:
            backoff = min(max(self.__accept_backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
            self.__accept_backoff = backoff
            self.__accept_resume_at = _time() + backoff

    def __accept_recovered(self):
        self.__accept_backoff = self.__accept_resume_at = 0.0

    def _verify_and_process(self, request, client_address):
        """verify_request, then process_request, as the stdlib does once a request is in."""
        if self.verify_request(request, client_address):
            self.__process(request, client_address)
        else:
            self.shutdown_request(request)

    def __process(self, request, client_address):
        """process_request, its errors handled as _handle_request_noblock does."""
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        except:
            self.shutdown_request(request)
            raise

    def handle_timeout(self):
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """
        pass

    def verify_request(self, request, client_address):
        """Verify the request.  May be overridden.

        Return True if we should proceed with this request.
        """
        return True

    def process_request(self, request, client_address):
        """Call finish_request.

        Overridden by ForkingMixIn and ThreadingMixIn.
        """
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self):
        """Called to clean-up the server.

        May be overridden.
        """
        pass

    def finish_request(self, request, client_address):
        """Finish one request by instantiating RequestHandlerClass."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        pass

    def handle_error(self, request, client_address):
        """Handle an error gracefully.  May be overridden.

        The default is to print a traceback and continue.
        """
        print('-' * 40, file=sys.stderr)
        print('Exception occurred during processing of request from',
              client_address, file=sys.stderr)
        import traceback
        traceback.print_exc()
        print('-' * 40, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.server_close()


class TCPServer(BaseServer):
    """Base class for various socket-based server classes.

    Defaults to synchronous IP stream (i.e., TCP).
    """

    address_family = socket.AF_INET

    socket_type = socket.SOCK_STREAM

    # The stdlib's 5 overflows under a few dozen concurrent connects and sends
    # clients into 1-3 s SYN retransmits; CPython 3.15 makes the same change.
    request_queue_size = socket.SOMAXCONN

    allow_reuse_address = False

    if _PY311:
        allow_reuse_port = False

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True):
        """Constructor.  May be extended, do not override."""
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.socket = socket.socket(self.address_family,
                                    self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except:
                self.server_close()
                raise

    def server_bind(self):
        """Called by constructor to bind the socket.

        May be overridden.
        """
        if _PY311:
            if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # SO_REUSEPORT only on INET sockets: Linux 6.12.9+ rejects it on
            # Unix sockets with EOPNOTSUPP (the fix CPython made in Jan 2025).
            if (self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT")
                    and self.address_family in (socket.AF_INET, socket.AF_INET6)):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        elif self.allow_reuse_address:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Called by constructor to activate the server.

        May be overridden.
        """
        self.socket.listen(self.request_queue_size)

    def server_close(self):
        """Called to clean-up the server.

        May be overridden.
        """
        self.socket.close()

    def fileno(self):
        """Return socket file number.

        Interface required by selector.
        """
        return self.socket.fileno()

    def get_request(self):
        """Get the request and client address from the socket.

        May be overridden.
        """
        return self.socket.accept()

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        # request.shutdown(SHUT_WR), OSError ignored (ENOTCONN on some
        # platforms): close() alone may leave the connection open while
        # other references live.
        _loop.shutdown_write(request)
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        _loop.close_socket(request)


class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False

    if _PY311:
        allow_reuse_port = False

    socket_type = socket.SOCK_DGRAM

    max_packet_size = 8192

    def get_request(self):
        data, client_addr = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_addr

    def server_activate(self):
        pass

    def shutdown_request(self, request):
        self.close_request(request)

    def close_request(self, request):
        pass


if _HAS_FORK:
    class ForkingMixIn:
        """Mix-in class to handle each request in a new process."""

        timeout = 300
        active_children = None
        max_children = 40
        block_on_close = True

        def collect_children(self, *, blocking=False):
            """Internal routine to wait for children that have exited."""
            if self.active_children is None:
                return

            # At max_children, block in waitpid(-1) until below it again; -1
            # may reap a child we did not fork, so only here.
            while len(self.active_children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.active_children.discard(pid)
                except ChildProcessError:
                    self.active_children.clear()
                except OSError:
                    break

            # Reap the children that have exited.
            for pid in self.active_children.copy():
                try:
                    flags = 0 if blocking else os.WNOHANG
                    pid, _ = os.waitpid(pid, flags)
                    # pid is 0 while the child runs: discard(0) is a no-op
                    self.active_children.discard(pid)
                except ChildProcessError:
                    self.active_children.discard(pid)
                except OSError:
                    pass

        def handle_timeout(self):
            """Wait for zombies after self.timeout seconds of inactivity.

            May be extended, do not override.
            """
            self.collect_children()

        def service_actions(self):
            """Collect the zombie child processes regularly in the ForkingMixIn.

            service_actions is called in the BaseServer's serve_forever loop.
            """
            self.collect_children()

        def process_request(self, request, client_address):
            """Fork a new subprocess to process the request."""
            pid = os.fork()
            if pid:
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                self.close_request(request)
                return
            else:
                # The child never returns into the server loop.
                status = 1
                try:
                    self.finish_request(request, client_address)
                    status = 0
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    try:
                        self.shutdown_request(request)
                    finally:
                        os._exit(status)

        def server_close(self):
            super().server_close()
            self.collect_children(blocking=self.block_on_close)


class _Threads(list):
    """Joinable list of all non-daemon threads."""

    def append(self, thread):
        self.reap()
        if thread.daemon:
            return
        super().append(thread)

    def pop_all(self):
        self[:], result = [], self[:]
        return result

    def join(self):
        for thread in self.pop_all():
            thread.join()

    def reap(self):
        self[:] = (thread for thread in self if thread.is_alive())


class _NoThreads:
    """Degenerate version of _Threads."""

    def append(self, thread):
        pass

    def join(self):
        pass


# Servers whose handler threads take requests (serve_forever running with
# handlers_take), by id: a subclass may define __eq__ and so be unhashable.
_serving_with_takers = weakref.WeakValueDictionary()


def _forget_takers_after_fork():
    """In a fork()ed child the handler threads taking requests stayed in the
    parent: queue nothing for them, and let no thread of the child take from
    the listener the parent serves."""
    for server in list(_serving_with_takers.values()):
        server._BaseServer__take_pending_from = None
        server._BaseServer__takers = 0
        queued = server._BaseServer__handoff
        if queued is not None:
            server._BaseServer__handoff = collections.deque()
            for request, _ in queued:  # the parent serves them; close the child's copies
                if isinstance(request, socket.socket):
                    request.close()
    _serving_with_takers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_takers_after_fork)


class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread."""

    daemon_threads = False
    block_on_close = True
    # Replaced per instance by a _Threads when block_on_close is true.
    _threads = _NoThreads()
    # Handler threads are reused (see _pool). A reused thread keeps its
    # threading.local() state from one request to the next; False restores
    # the stdlib's one new thread per request.
    reuse_threads = True
    __pool = None

    def process_request_thread(self, request, client_address):
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here.
        """
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """Run process_request_thread on a thread: a reused idle one, or a new one."""
        if self.block_on_close and '_threads' not in vars(self):
            self._threads = _Threads()  # the stdlib's setdefault, without a _Threads per call
        if not self.reuse_threads:
            t = threading.Thread(target=self.process_request_thread,
                                 args=(request, client_address))
            t.daemon = self.daemon_threads
            self._threads.append(t)
            t.start()
            return
        pool = self.__pool
        if (pool is None or pool.daemon != self.daemon_threads
                or pool.generation != WorkerPool.process_generation):  # forked since
            if pool is not None:
                pool.close()
            pool = self.__pool = WorkerPool(self.daemon_threads)
        listener = self._BaseServer__take_pending_from
        if listener is not None:
            if _loop.hand_to_taker(self, request, client_address):
                return
            t = pool.submit(self.__process_then_take_pending,
                            (request, client_address, listener))
        else:
            t = pool.submit(self.process_request_thread, (request, client_address))
        if t is not None:
            self._threads.append(t)

    def __process_then_take_pending(self, request, client_address, listener):
        """process_request_thread, then the requests waiting on listener, in this thread."""
        take_pending = _loop.take_pending
        begin_grace = _loop.begin_grace
        while True:
            begin_grace()
            self.process_request_thread(request, client_address)
            request = client_address = None
            item = take_pending(self, listener)
            if item is None:
                return
            request, client_address = item

    def server_close(self):
        super().server_close()
        pool = self.__pool
        if pool is not None:
            self.__pool = None
            pool.close()
        self._threads.join()


def _handlers_take_pending(server):
    """True when ThreadingMixIn's handler threads may take the next waiting request.

    Only where skipping the loop is invisible: the core's take_pending
    exists, and verify_request, process_request and service_actions are the
    library's own (the loop would call them in serve_forever's thread).
    Decided when serve_forever() starts, as _own_receive_path is.
    """
    return (_loop.take_pending is not None
            and _own_service_actions(server)
            and _uses_own(server, "verify_request", BaseServer.verify_request)
            and _uses_own(server, "process_request", ThreadingMixIn.process_request))


if _HAS_FORK:
    class ForkingUDPServer(ForkingMixIn, UDPServer): pass
    class ForkingTCPServer(ForkingMixIn, TCPServer): pass

class ThreadingUDPServer(ThreadingMixIn, UDPServer): pass
class ThreadingTCPServer(ThreadingMixIn, TCPServer): pass

if _HAS_UNIX:

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): pass

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): pass

    if _HAS_FORK and _PY312:
        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): pass

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): pass


class BaseRequestHandler:
    """Base class for request handler classes.

    This class is instantiated for each request to be handled.  The
    constructor sets the instance variables request, client_address
    and server, and then calls the handle() method.  To implement a
    specific service, all you need to do is to derive a class which
    defines a handle() method.
    """

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self):
        pass

    def handle(self):
        pass

    def finish(self):
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets."""

    # rfile buffered, wfile unbuffered (each write goes out at once).
    rbufsize = -1
    wbufsize = 0

    timeout = None

    # True here (False in the stdlib): with Nagle on, a response written in
    # two parts (http.server: headers, then body) waits for the client's
    # delayed ACK, ~40 ms per response. TCP_NODELAY holds nothing back: each
    # write goes to the kernel and onto the wire at once. Set it False to
    # restore the stdlib's behaviour. Applied to TCP connections only.
    disable_nagle_algorithm = True

    def setup(self):
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm and _is_tcp(self.connection):
            self.connection.setsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY, True)
        if self.rbufsize == -1 and type(self.connection) is socket.socket:
            self.rfile = _make_reader(self.connection)
        else:
            self.rfile = self.connection.makefile('rb', self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile('wb', self.wbufsize)

    def finish(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except socket.error:
                # e.g. ECONNABORTED: the peer is gone, nothing to flush to
                pass
        self.wfile.close()
        self.rfile.close()


def _is_tcp(connection):
    if type(connection) is socket.socket:
        return _raw_family(connection) in _TCP_FAMILIES
    return getattr(connection, "family", None) in _TCP_FAMILIES


class _SocketReaderIO(socket.SocketIO):
    """The raw stream under rfile: socket.SocketIO with the core's readinto."""

    readinto = _loop.socketio_readinto
    # Set by the core's readinto when it should wait at once rather than try
    # a non-blocking recv first.
    _expect_wait = False


def _make_reader(sock):
    """What sock.makefile('rb') returns, over _SocketReaderIO."""
    # SocketIO(sock, "rb")'s state, set without its Python-level __init__
    # (mode checks, RawIOBase.__init__): ~1 us per connection. The same
    # five attributes on Python 3.9-3.13; test_stream_io compares the result
    # with makefile('rb') on every version.
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

    write = _loop.socket_writer_write

    def fileno(self):
        return self._sock.fileno()


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets."""

    def setup(self):
        from io import BytesIO
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
