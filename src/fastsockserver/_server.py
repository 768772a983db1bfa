"""The socketserver class hierarchy: the public API, and the stdlib's algorithm.

Names, signatures, class attributes, hook order, messages and exceptions
follow the ``socketserver`` module of the running Python (3.9-3.15): read
this file beside its ``Lib/socketserver.py``. What is not here:

- ``_core_select``: the serving core in use (compiled ``_core`` or its pure
  twin ``_core_py``; their interface is declared in ``_core_api``);
- ``_plan``: which steps the core runs itself, decided per serve_forever();
- ``_handler_threads``: ThreadingMixIn's reused threads and the hand-off;
- ``_stream_io``: StreamRequestHandler's rfile and wfile.

The request flow, and where the fast path joins it::

    serve_forever()                       handle_request()
      plan = plan_serving(server, ...)      core.wait_readable(fd, timeout)
      core.serve(server, plan, state, ...)   -> _handle_request_noblock()
        wait (GIL released; epoll or poll)      or handle_timeout()
        plan.listener is None:
          _handle_request_noblock()
            get_request()               [stdlib: socket.accept / recvfrom]
            _verify_and_process()
        plan.listener:                  [core: batched accept / recvfrom,
          _verify_and_process()           up to plan.batch per wake-up]
            verify_request()
            process_request()           [ThreadingMixIn: on a pool thread;
              finish_request()             with plan.handlers_take that thread
                RequestHandlerClass()      then takes the next request itself]
                  setup() handle() finish()
              shutdown_request()        [TCPServer: core.shutdown_write]
                close_request()         [TCPServer: core.close_socket]
        service_actions()               [after each wake-up]
      handle_error() for an exception of process_request (or its thread)

Who owns what (the contract is _core_api's): the loop's thread is the one
dispatcher. A request's slot among ``active`` is a Ticket, reserved before a
thread gets the request, claimed by that thread, released once by it; a
dispatch interrupted (a signal) gives the slot back only if no thread has
claimed it. drain() asks the loop to stop (core.begin_drain) and waits; the
loop hands on held connections within max_threads, and each handler decides
for its own connection when it reads end-of-file (_stream_io). A forked
child reports its counts through shared memory (_child_counts). The service
layer (_service, _workers) uses this module, never the other way round.

Every hook is called through the instance, where the stdlib calls it, so an
override or an instance attribute runs at its usual place: the plan keeps a
step in the core only while the hook it replaces is the library's own.
"""
import _socket
import os
import socket
import sys
import threading
import time
import weakref

from . import _handler_threads
from ._at_fork import forget_in_child
from ._child_counts import COUNTS as CHILD_COUNTS
from ._child_counts import ChildCounts, counts_of
from ._core_api import LAST_CALL, NEW_CONNECTION_GRACE
from ._core_select import core
from ._handler_threads import WorkerPool
from ._listeners import adopt_pending
from ._plan import plan_serving, server_fd
from ._stream_io import _SocketWriter, is_tcp, make_reader, readable_by_library
from ._waiting_room import WaitingRoom

_HAS_FORK = hasattr(os, "fork")

# Servers inside serve_forever(), by id (a subclass may define __eq__ and so be
# unhashable): what the service layer (`run --drain-timeout`, _service) drains.
serving_servers = weakref.WeakValueDictionary()
_NO_CHILD_COUNTS = dict.fromkeys(CHILD_COUNTS, 0)
# This module, for _plan: the hooks that are the library's own, to compare with.
_library = sys.modules[__name__]


def _tls():
    """The _tls module, imported when first needed (it imports ssl, ~10 ms)."""
    from . import _tls
    return _tls


def _before_finish(server, request, client_address):
    """(request, client_address, ok): the connection as finish_request gets it.

    On the thread (or child) that handles it: the PROXY protocol header of
    proxy_protocol_from read (the original client's address), then the TLS
    handshake of ssl_context (the header precedes TLS). ok False: a failure
    was reported and counted; ``request`` is to be shut down.
    """
    if getattr(server, "proxy_protocol_from", None) is not None:
        from . import _proxy
        client_address, ok = _proxy.read_header(server, request, client_address)
        if not ok:
            return request, client_address, False
    if server.ssl_context is not None:
        request, ok = _tls().handshake(server, request, client_address)
        return request, client_address, ok
    return request, client_address, True


_HAS_UNIX = hasattr(socket, "AF_UNIX")
_socketpair = getattr(_socket, "socketpair", None) or socket.socketpair
_PY311 = sys.version_info >= (3, 11)  # allow_reuse_port, SO_REUSE* guards
_PY312 = sys.version_info >= (3, 12)  # ForkingUnixStreamServer / ForkingUnixDatagramServer


def request_queue_size_for(version, stdlib_value):
    """TCPServer.request_queue_size on Python ``version``, the stdlib's there being
    ``stdlib_value``: up to 3.14 the stdlib listens with 5, which overflows under a
    few dozen concurrent connects and sends clients into 1-3 s SYN retransmits, so
    socket.SOMAXCONN; from 3.15, which raised its own, the stdlib's (never below
    SOMAXCONN, should a 3.15 say less)."""
    if version >= (3, 15):
        return max(stdlib_value, socket.SOMAXCONN)
    return socket.SOMAXCONN


def _stdlib_request_queue_size():
    """The stdlib's TCPServer.request_queue_size; None where only ours is at hand
    (install() has put this package in its place, and this module is run again)."""
    if sys.version_info < (3, 15):
        return 5  # (not imported for a number known)
    import socketserver
    if socketserver.__name__ != "socketserver":
        return None
    return socketserver.TCPServer.request_queue_size


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# struct tcp_info: tcpi_unacked, the accept queue's length on a listening socket (Linux).
_TCPI_UNACKED = 24


def listen_backlog(sock):
    """Connections waiting in a TCP listener's accept queue (Linux); None where unknown."""
    if (type(sock) is not socket.socket or not hasattr(socket, "TCP_INFO")
            or not is_tcp(sock) or sock.fileno() < 0):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCPI_UNACKED + 4 or info[0] != 10:  # tcpi_state: TCP_LISTEN
        return None
    return int.from_bytes(info[_TCPI_UNACKED:_TCPI_UNACKED + 4], sys.byteorder)


class _Waker:
    """A self-pipe: shutdown() interrupts serve_forever's wait at once.

    The stdlib only notices shutdown() after up to ``poll_interval``. The
    pipe exists only while serve_forever() runs; each serve_forever() opens
    one of its own (a _Pipe). No lock is held across the write (a thread that
    fork()s meanwhile would leave its child waiting on a lock no one
    releases): wake() counts itself in on the pipe it writes to, and close()
    leaves that pipe's last writer to close its descriptors, so none is
    closed (and reused by the OS) under a write, and a pipe closed while a
    writer was still on it is closed by that writer even after the next
    serve_forever() has opened another. In a fork()ed child the waker forgets
    the parent's pipes (the child never serves the parent's loop) and gets a
    lock of its own.
    """

    __slots__ = ("_lock", "_pipe", "_closing_pipes", "__weakref__")

    def __init__(self):
        self._lock = threading.Lock()
        self._pipe = None           # the open pipe, or None
        self._closing_pipes = []    # closed with a writer still on them: it closes them
        forget_in_child(_after_fork_in_child)  # (first: a fork after the add has it)
        _wakers.add(self)

    def open(self):
        """Create the pipe; returns the descriptor to wait on. A pipe still
        open (its serve_forever() interrupted before its close()) is closed."""
        pipe = _Pipe()
        with self._lock:
            previous, self._pipe = self._pipe, pipe
        if previous is not None:
            self._close_pipe(previous)
        return pipe.read_fd

    def wake(self):
        with self._lock:
            pipe = self._pipe
            if pipe is None:
                return
            pipe.writers += 1
        try:
            os.write(pipe.write_fd, b"\0")
        except OSError:  # pipe full: a wake-up is pending anyway
            pass
        finally:
            with self._lock:
                pipe.writers -= 1
                last = pipe.writers == 0 and pipe in self._closing_pipes
                if last:
                    self._closing_pipes.remove(pipe)
            if last:
                pipe.close_fds()

    def close(self):
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            self._close_pipe(pipe)

    def _close_pipe(self, pipe):
        """Close ``pipe`` now, or leave it to its last writer."""
        with self._lock:
            if pipe.writers:
                self._closing_pipes.append(pipe)
                return
        pipe.close_fds()

    def _forget_in_child(self):
        self._lock = threading.Lock()
        pipes = self._closing_pipes + ([self._pipe] if self._pipe is not None else [])
        self._pipe = None
        self._closing_pipes = []
        for pipe in pipes:
            pipe.writers = 0
            pipe.close_fds()


class _Pipe:
    """One serve_forever()'s wake-up channel, a connected socket pair (not an
    os.pipe(): socket objects own their descriptors, so a pair an interrupt
    takes from its owner, as the call that made it returns, is closed by
    their finalizers, where a pipe's two numbers would leak), and how many
    wake() calls are writing to it (changed under its _Waker's lock)."""

    __slots__ = ("_reader", "_writer", "read_fd", "write_fd", "writers")

    def __init__(self):
        self.writers = 0
        # _socket's own pair: socket.socketpair() wraps each end with Python
        # code (detach(), then socket()), between which an interrupt loses one.
        self._reader, self._writer = _socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.read_fd, self.write_fd = self._reader.fileno(), self._writer.fileno()

    def close_fds(self):
        """Close both ends (again: nothing)."""
        self.read_fd = self.write_fd = -1
        self._reader.close()
        self._writer.close()


_wakers = weakref.WeakSet()


class _ShutDownEvent(threading.Event):
    """serve_forever()'s "is shut down" event, which only its thread sets and
    clears. Both hold the event's lock in a ``with`` of the lock itself, not of
    its Condition: Condition's __enter__ and __exit__ are Python functions, and
    a KeyboardInterrupt landing on their first lines left the lock held, so the
    next serve_forever() of a server restarted after Ctrl-C waited for ever in
    clear() (1 in a few hundred interrupts under ThreadSanitizer's slower
    interpreter; the stdlib's serve_forever has the same exposure). shutdown()'s
    wait() too, or a Ctrl-C there left serve_forever() unable to set it."""

    def wait(self, timeout=None):
        cond = self._cond
        with cond._lock:
            # Condition.wait releases and retakes the lock itself, and an
            # interrupt in it leaves through this with, which lets it go.
            return self._flag or cond.wait(timeout)

    def set(self):
        cond = self._cond
        with cond._lock:
            self._flag = True
            cond.notify_all()

    def clear(self):
        with self._cond._lock:
            self._flag = False


def _after_fork_in_child():
    for waker in list(_wakers):
        waker._forget_in_child()


class BaseServer:
    """Base class for server classes.

    Methods for the caller: ``__init__``, ``serve_forever``, ``shutdown``,
    ``handle_request``, ``server_close``, ``fileno``. Methods that may be
    overridden: ``server_bind``, ``server_activate``, ``get_request``,
    ``handle_timeout``, ``verify_request``, ``process_request``,
    ``shutdown_request``, ``close_request``, ``service_actions``,
    ``handle_error``.

    Beyond the stdlib, for the caller: ``drain`` and ``stats``. And
    ``_serving_state``, what the server shares with the core and handler
    threads (see _core_api.ServingState).
    """

    timeout = None
    # The Ticket of the request ThreadingMixIn.process_request is handing to a
    # thread, while it does (on the loop's thread): see __process.
    _dispatch_ticket = None
    # The connections held for TCPServer.first_byte_timeout (a
    # _waiting_room.WaitingRoom), made by the first serve_forever() with it.
    _waiting_room = None
    # An ssl.SSLContext: the loop takes plain connections in and each is
    # wrapped, with its handshake, by the thread or child that handles it,
    # within ssl_handshake_timeout seconds, before finish_request (see _tls).
    # None: as the stdlib (wrap the listener, or the connections, yourself).
    ssl_context = None
    ssl_handshake_timeout = 5.0
    # The _workers.Supervisor of serve(workers=N), in the parent: stats() rolls its workers up.
    _workers = None

    def __init__(self, server_address, RequestHandlerClass):
        """Constructor.  May be extended, do not override."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self.__is_shut_down = _ShutDownEvent()
        self.__shutdown_request = False
        self.__waker = _Waker()
        self.__serving_thread = None  # the thread in serve_forever(), while it runs
        self._serving_state = state = core.ServingState()
        state.waker = self.__waker

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
            plan = plan_serving(self, core, _library)
            state = self._serving_state
            # Made with the loop, not by the first connection: a server's
            # descriptors are the same from its first request to its last.
            core.drain_wait_fd(state)
            # One step with drain()'s begin_drain: a drain that began first
            # stops this loop before it starts; one after, the loop sees.
            if not core.begin_serving(state, plan.max_handlers,
                                      self.__waiting_room_for(plan, state)):
                return  # drain() began: nothing more is taken in
            self.__serving_thread = threading.get_ident()
            serving_servers[id(self)] = self
            try:
                if plan.handlers_take:
                    _handler_threads.serving_begins(state)
                wake_fd = self.__waker.open()
                try:
                    core.serve(self, plan, state, wake_fd, poll_interval)
                finally:
                    self.__waker.close()
                    if plan.handlers_take:
                        _handler_threads.serving_ends(self, state, self.__process)
            finally:
                self.__serving_thread = None
                serving_servers.pop(id(self), None)
                core.end_serving(state)
        finally:
            self.__shutdown_request = False
            self.__is_shut_down.set()

    def __waiting_room_for(self, plan, state):
        if plan.first_byte_timeout is None:
            return None
        room = self._waiting_room
        if room is None:
            room = self._waiting_room = WaitingRoom(self, state, plan.first_byte_timeout)
        room.timeout = plan.first_byte_timeout  # for connections held from now on
        return room

    def drain(self, timeout=None):
        """Stop taking requests, end idle connections, wait for handlers to finish.

        serve_forever() returns once its loop has nothing more to hand on,
        and does not serve again; connections not yet accepted stay in the
        listen backlog until server_close() (the kernel then resets them).
        A handler inside a request finishes it. Between requests the
        library's rfile decides for its own connection: one idle after a
        response may still begin a request until LAST_CALL (0.25 s) is over,
        and reads end-of-file if nothing has arrived by then (one that
        arrived, in part or whole, while its handler was still busy is read
        and answered, with ``Connection: close`` under install()); one
        accepted and silent gets NEW_CONNECTION_GRACE (2 s). Connections
        held for first_byte_timeout are handed on by the loop, within
        max_threads, if they speak within the grace (however long they then
        wait for a slot); the silent ones are closed after it.
        Returns True when every handler ended within ``timeout`` seconds
        (None: no limit), False otherwise (they keep running). Call it from a
        thread other than serve_forever's and the handlers'.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._serving_state
        if self.__serving_thread == threading.get_ident():
            raise RuntimeError("drain() called from serve_forever()'s own thread "
                               "would wait for itself")
        if core.begin_drain(state, LAST_CALL, NEW_CONNECTION_GRACE):
            self.__waker.wake()  # the loop sees draining, finishes its room, returns
        # serve_forever() returns once the request its thread handles (if any)
        # is done; then the handlers of other threads and processes.
        while True:
            if not self.__is_shut_down.is_set() and state.serving:
                loop_running = True
            else:
                loop_running = False
                room = self._waiting_room
                if room:  # held by a loop that has returned: nobody hands them on
                    core.connections_drained(state, room.close_all())
            if not (loop_running or self.__handlers_running()):
                # No handler waits on the drain descriptor any more: closed now, not
                # at server_close(), which a server whose listener is handed on to
                # another (adopt_socket) may never see.
                core.close_drain_fd(state)
                return True
            left = _remaining(deadline)
            if left is not None and left <= 0:
                return False
            time.sleep(0.01 if left is None else min(0.01, left))

    def __handlers_running(self):
        if self._serving_state.active > 0:
            return True
        children = getattr(self, "active_children", None)  # ForkingMixIn
        if children:
            for pid in list(children):  # never blocks, unlike collect_children at max_children
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        children.discard(pid)
                except ChildProcessError:
                    children.discard(pid)
                except OSError:
                    pass
            return bool(children)
        return False

    def stats(self):
        """Counters and gauges of this server, as a new dict (see the README)."""
        state = self._serving_state
        children = getattr(self, "active_children", None) or ()
        room = self._waiting_room
        counts = getattr(self, "_child_counts", None)  # ForkingMixIn's children
        children_did = counts.totals() if counts is not None else _NO_CHILD_COUNTS
        figures = {
            "accepted": state.accepted,
            "active": state.active + len(children),
            "finished": state.finished + children_did["finished"],
            "errors": state.errors + children_did["errors"],
            "waiting": listen_backlog(getattr(self, "socket", None)),
            "backpressured": bool(state.paused),
            "backpressure_pauses": state.backpressure_pauses,
            "draining": bool(state.draining),
            "drained": state.drained,
            "idle_timeouts": state.idle_timeouts,
            "awaiting_first_byte": len(room) if room is not None else 0,
            "first_byte_timeouts": state.first_byte_timeouts,
            "headers_timeouts": state.headers_timeouts,
            "tls_handshake_failures": (state.tls_handshake_failures
                                       + children_did["tls_handshake_failures"]),
            "proxy_header_failures": (state.proxy_header_failures
                                      + children_did["proxy_header_failures"]),
            "framing_rejections": (state.framing_rejections
                                   + children_did["framing_rejections"]),
        }
        return figures if self._workers is None else self._workers.roll_up(figures)

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
            deadline = time.monotonic() + timeout
        fd = server_fd(self)
        while True:
            if core.wait_readable(fd, timeout):
                return self._handle_request_noblock()
            if timeout is not None:
                timeout = deadline - time.monotonic()
                if timeout < 0:
                    return self.handle_timeout()

    def _handle_request_noblock(self):
        """Take one request in and process it; called once the socket is readable."""
        state = self._serving_state
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            state.accept_failed(exc.errno)
            return
        core.request_accepted(state)
        room = state.waiting_room
        if room is not None and room.hold(request, client_address):
            return  # the loop hands it on once it speaks
        self._verify_and_process(request, client_address)

    def _verify_and_process(self, request, client_address):
        """verify_request, then process_request, as the stdlib does once a request is in.

        Where the core takes requests in itself, it calls this for each."""
        if self.verify_request(request, client_address):
            self.__process(request, client_address)
        else:
            self.shutdown_request(request)

    def __process(self, request, client_address):
        """process_request, its errors handled as _handle_request_noblock does;
        but a request a handler thread has already claimed (see Ticket) is
        that thread's: it is not shut down here under it."""
        try:
            self.process_request(request, client_address)
        except Exception:
            core.request_failed(self._serving_state)
            self.handle_error(request, client_address)
            if self.__still_ours():
                self.shutdown_request(request)
        except:
            if self.__still_ours():
                self.shutdown_request(request)
            raise
        finally:
            self._dispatch_ticket = None

    def __still_ours(self):
        ticket = self._dispatch_ticket
        return ticket is None or ticket.abandon()

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
        ticket = core.Ticket(self._serving_state)  # for stats() and drain()
        try:
            ticket.reserve()
            # The header and handshake here, on the loop's thread: there is no other.
            request, client_address, ok = _before_finish(self, request, client_address)
            if not ok:
                self.shutdown_request(request)
                return
            self.finish_request(request, client_address)
            self.shutdown_request(request)
        finally:
            ticket.release()

    def server_close(self):
        """Called to clean-up the server.

        May be overridden.
        """
        core.close_drain_fd(self._serving_state)

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

    # SOMAXCONN, not the stdlib's 5 (up to 3.14): see request_queue_size_for.
    request_queue_size = request_queue_size_for(
        sys.version_info, _stdlib_request_queue_size() or socket.SOMAXCONN)

    allow_reuse_address = False

    if _PY311:
        allow_reuse_port = False

    # Seconds a new connection may stay silent: until its first byte arrives
    # the loop holds it itself, without a thread, and closes it when the time
    # is up (see _waiting_room). None: handed on at once, as in the stdlib.
    # Only for protocols where the client speaks first: a server that greets
    # first (SMTP, FTP, a banner) would close every connection.
    first_byte_timeout = None

    # Addresses or networks (one, or a list) of load balancers that begin
    # each connection with a PROXY protocol header: the handler's
    # client_address is then the original client's (see _proxy). None: off.
    proxy_protocol_from = None
    proxy_header_timeout = 3.0

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
        if adopt_pending(self):  # an inherited listener (run --fd, systemd, adopt_socket)
            return
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
        room = self._waiting_room
        if room is not None:  # connections held for first_byte_timeout
            self._waiting_room = None
            room.close()
        core.close_drain_fd(self._serving_state)
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
        if self.ssl_context is not None:  # a wrapped listener: no handshake here
            return _tls().accept(self.socket)
        return self.socket.accept()

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        # request.shutdown(SHUT_WR), OSError ignored (ENOTCONN on some
        # platforms): close() alone may leave the connection open while
        # other references live.
        core.shutdown_write(request)
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        core.close_socket(request)


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
        _child_counts = None  # a _child_counts.ChildCounts, from the first fork on

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
            """Fork a new subprocess to process the request.

            The child reports its counts (finished, errors, TLS and PROXY
            failures) in a row of shared memory reserved for it before the
            fork: see _child_counts."""
            counts = self._child_counts
            if counts is None:
                counts = self._child_counts = ChildCounts()
            row = counts.reserve(self.active_children or ())
            pid = os.fork()
            if pid:
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                counts.held_by(row, pid)
                self.close_request(request)
                return
            else:
                # The child never returns into the server loop.
                status = 1
                state = self._serving_state
                before = counts_of(state)
                room = self._waiting_room
                if room is not None:
                    room.forget_in_child()
                try:
                    request, client_address, ok = _before_finish(
                        self, request, client_address)
                    if ok:
                        self.finish_request(request, client_address)
                        status = 0
                except Exception:
                    core.request_failed(state)
                    self.handle_error(request, client_address)
                finally:
                    try:
                        self.shutdown_request(request)
                    finally:
                        try:
                            grown = {name: value - before[name]
                                     for name, value in counts_of(state).items()}
                            grown["finished"] = 1
                            counts.write(row, grown)
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


class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread."""

    daemon_threads = False
    block_on_close = True
    # Replaced per instance by a _Threads when block_on_close is true.
    _threads = _NoThreads()
    # Handler threads are reused (see _handler_threads). A reused thread keeps its
    # threading.local() state from one request to the next; False restores
    # the stdlib's one new thread per request.
    reuse_threads = True
    # At most this many requests are handled at once; while they are, the
    # loop takes no new one (connections wait in the listen backlog, as the
    # kernel holds them). None: no limit, as in the stdlib.
    max_threads = None
    __pool = None

    def process_request_thread(self, request, client_address):
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here.
        """
        try:
            request, client_address, ok = _before_finish(self, request, client_address)
            if not ok:
                return  # reported and counted; shut down below
            self.finish_request(request, client_address)
        except Exception:
            core.request_failed(self._serving_state)
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """Run process_request_thread on a thread: a reused idle one, or a new one.

        The request's slot (a Ticket) is reserved before the thread gets it and
        claimed by that thread; if this is interrupted (a KeyboardInterrupt in
        Thread.start(), say), the slot is given back only if no thread has
        claimed it, and the request is shut down only then (see __process)."""
        if self.block_on_close and '_threads' not in vars(self):
            self._threads = _Threads()  # the stdlib's setdefault, without a _Threads per call
        state = self._serving_state
        self._dispatch_ticket = ticket = core.Ticket(state)
        ticket.reserve()
        if not self.reuse_threads:
            t = threading.Thread(target=_handler_threads.run_request_alone,
                                 args=(self, ticket, request, client_address))
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
        if state.take_pending_from is not None:  # plan.handlers_take, the listener non-blocking
            if core.hand_to_taker(state, request, client_address, ticket):
                return
            job = _handler_threads.run_then_take_pending
        else:
            job = _handler_threads.run_request
        t = pool.submit(job, (self, ticket, request, client_address))
        if t is not None:
            self._threads.append(t)

    def server_close(self):
        super().server_close()
        pool = self.__pool
        if pool is not None:
            self.__pool = None
            # Drained: a restart, most likely; idle threads wait for the successor.
            left = pool.close(leave=self._serving_state.draining)
            threads = vars(self).get('_threads')
            if left and isinstance(threads, _Threads):
                threads[:] = [t for t in threads if t not in left]  # their requests are done
        self._threads.join()


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

    # Seconds a connection may sit idle between requests (or before its
    # first) with nothing to read: then rfile reads end-of-file, so the
    # handler ends as if the client had closed. None: no limit, as in the
    # stdlib. Applies to the library's rfile (rbufsize -1, no setup() of
    # your own that replaces it).
    idle_timeout = None

    # Seconds from a request's first byte until its head is read: the request
    # line and headers for http.server and its kin (when install()'s
    # http.client.parse_headers returns), for other handlers until their first
    # write. Trickling bytes do not extend it. When it passes, rfile raises
    # socket.timeout, which http.server logs ("Request timed out") before it
    # closes the connection. None: no limit, as in the stdlib. Applies to the
    # library's rfile, as idle_timeout does.
    headers_timeout = None

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
        if self.disable_nagle_algorithm and is_tcp(self.connection):
            self.connection.setsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY, True)
        reader = None
        if self.rbufsize == -1 and readable_by_library(self.connection):
            self.rfile = make_reader(self.connection,
                                     getattr(self.server, "_serving_state", None),
                                     self.idle_timeout, self.headers_timeout)
            reader = self.rfile.raw
        else:
            self.rfile = self.connection.makefile('rb', self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
            self.wfile._reader = reader
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


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets."""

    def setup(self):
        from io import BytesIO
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
