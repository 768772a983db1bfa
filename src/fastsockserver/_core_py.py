"""fastsockserver._core_py: the serving core in pure Python, twin of ``_core``.

Implements ``_core_api`` with the stdlib's algorithm: a poll selector on the
server's descriptor (and on the shutdown pipe), ``_handle_request_noblock()``
when it is readable, then ``service_actions()``, until ``shutdown()`` sets
the flag. It lists no FEATURES: requests always go through
``_handle_request_noblock()``, so nothing is ever queued for or taken by
handler threads here, and rfile/wfile are the stdlib's own code.
"""
import math
import os
import select
import selectors
import socket
import threading
import weakref
from time import monotonic

from ._at_fork import forget_in_child
from ._core_api import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    HEAD_TIMEOUT_MESSAGE,
    MAX_BATCH,
    RESOURCE_ERRNOS,
    TICKET_CLAIMED,
    TICKET_NEW,
    TICKET_RELEASED,
    TICKET_RESERVED,
)

FEATURES = frozenset()

if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector

# The stdlib's calls, on every platform (_core_api.SYSTEM_CALLS).
PORTABLE_CORE = False
SYSTEM_CALLS = {"wait": _ServerSelector.__name__, "accept": "socket.accept()",
                "send": "socket.sendall()", "share": "none"}


class ServingState:
    """What a server shares with its loop and handler threads (see _core_api.ServingState)."""

    __slots__ = ("accept_backoff", "accept_resume_at", "handoff", "takers",
                 "take_pending_from", "waker", "max_handlers", "active", "paused",
                 "serving", "draining", "idle_cut_at", "grace_ends", "drain_fd",
                 "_drain_write_fd", "readers", "accepted", "finished", "errors",
                 "backpressure_pauses", "drained", "idle_timeouts", "first_byte_timeouts",
                 "headers_timeouts", "tls_handshake_failures", "proxy_header_failures",
                 "framing_rejections", "waiting_room", "_lock", "__weakref__")

    def __init__(self):
        self.accept_backoff = self.accept_resume_at = 0.0
        self.handoff = None
        self.takers = 0
        self.take_pending_from = None
        self.waker = None
        self.max_handlers = self.active = 0
        self.paused = self.serving = self.draining = False
        self.idle_cut_at = self.grace_ends = 0.0
        self.drain_fd = self._drain_write_fd = -1
        self.readers = weakref.WeakSet()  # a handler may drop its rfile unclosed
        self.accepted = self.finished = self.errors = self.backpressure_pauses = 0
        self.drained = self.idle_timeouts = 0
        self.first_byte_timeouts = self.headers_timeouts = self.tls_handshake_failures = 0
        self.proxy_header_failures = self.framing_rejections = 0
        self.waiting_room = None
        # Fields handler threads change: `+=` in Python is not atomic, and
        # without the GIL nothing else makes takers/handoff change together
        # (the compiled core: critical sections). Replaced in a fork()ed child
        # (_after_fork_in_child): a thread of the parent may have held it.
        self._lock = threading.Lock()
        forget_in_child(_after_fork_in_child)  # (first: a fork after the add has it)
        _states.add(self)

    def __del__(self):
        close_drain_fd(self)  # (server_close() does it first, normally)

    def accept_failed(self, error_number):
        if error_number in RESOURCE_ERRNOS:
            with self._lock:
                backoff = min(max(self.accept_backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                self.accept_backoff = backoff
                self.accept_resume_at = monotonic() + backoff

    def accept_recovered(self):
        with self._lock:
            self.accept_backoff = self.accept_resume_at = 0.0


_states = weakref.WeakSet()


def _after_fork_in_child():
    for state in list(_states):
        state._lock = threading.Lock()


def drain_wait_fd(state):
    """The descriptor readable once the server drains (made on first use; -2
    once close_drain_fd was called)."""
    if state.drain_fd == -1:
        read_fd, write_fd = os.pipe()
        with state._lock:
            if state.drain_fd == -1:
                state.drain_fd, state._drain_write_fd = read_fd, write_fd
                read_fd = write_fd = -1
                if state.draining:
                    os.write(state._drain_write_fd, b"d")
        if read_fd >= 0:  # another thread made it meanwhile
            os.close(read_fd)
            os.close(write_fd)
    return state.drain_fd


def close_drain_fd(state):
    """server_close(): the drain descriptor is closed, and none is made again."""
    with state._lock:
        read_fd, write_fd = state.drain_fd, state._drain_write_fd
        state.drain_fd, state._drain_write_fd = -2, -1
    if read_fd >= 0:
        os.close(read_fd)
        os.close(write_fd)


def begin_serving(state, max_handlers, waiting_room):
    """serve_forever() starts its loop; False (nothing changed) once drain() began."""
    with state._lock:
        if state.draining:
            return False
        state.serving = True
        state.max_handlers = max_handlers
        state.waiting_room = waiting_room
        state.paused = False
    return True


def end_serving(state):
    """serve_forever()'s loop has returned."""
    with state._lock:
        state.serving = False
        state.paused = False
        state.waiting_room = None


def begin_drain(state, last_call, grace):
    """drain() begins (once): True when a loop was serving then."""
    drain_wait_fd(state)
    now = monotonic()
    with state._lock:
        if not state.draining:
            state.draining = True
            state.idle_cut_at = now + last_call
            state.grace_ends = now + grace
            if state._drain_write_fd >= 0:
                os.write(state._drain_write_fd, b"d")  # level: stays readable
        return state.serving


def request_accepted(state):
    """get_request() returned a request: ``accepted += 1``, the back-off ends."""
    with state._lock:
        state.accepted += 1
        backing_off = state.accept_backoff != 0
    if backing_off:
        state.accept_recovered()


def first_byte_timed_out(state):
    """The waiting room closed a connection silent for first_byte_timeout."""
    with state._lock:
        state.first_byte_timeouts += 1


class Ticket:
    """One request's slot among ``active`` (see _core_api.Ticket)."""

    __slots__ = ("state", "status")

    def __init__(self, state):
        self.state = state
        self.status = TICKET_NEW

    def reserve(self):
        with self.state._lock:
            if self.status == TICKET_NEW:
                self.state.active += 1
                self.status = TICKET_RESERVED

    def claim(self):
        with self.state._lock:
            if self.status != TICKET_RESERVED:
                return False
            self.status = TICKET_CLAIMED
        return True

    def abandon(self):
        state = self.state
        with state._lock:
            if self.status != TICKET_RESERVED:
                return self.status == TICKET_NEW
            self.status = TICKET_RELEASED
            state.active -= 1
        _wake_if_resumed(state)
        return True

    def release(self):
        state = self.state
        with state._lock:
            if self.status not in (TICKET_RESERVED, TICKET_CLAIMED):
                return
            self.status = TICKET_RELEASED
            state.active -= 1
            state.finished += 1
        _wake_if_resumed(state)


def _wake_if_resumed(state):
    with state._lock:
        wake = state.paused and state.active < state.max_handlers
        if wake:
            state.paused = False
    if wake:
        state.waker.wake()


def serve(server, plan, state, wake_fd, poll_interval):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    Every request goes through ``_handle_request_noblock()``, as in the
    stdlib (this core has no receive path of its own: plan.listener is None).
    With ``state.waiting_room`` the loop also waits on the room and hands on
    the connections in it that spoke. While the server backs off after an
    out-of-resources accept error, the listener is not watched; at
    max_handlers, neither is the room.
    """
    room = state.waiting_room
    room_fd = room.fileno() if room is not None else None
    with _ServerSelector() as everything, _ServerSelector() as no_listener, \
            _ServerSelector() as wake_only:
        for selector in (everything, no_listener, wake_only):
            selector.register(wake_fd, selectors.EVENT_READ)
        if room is not None:
            everything.register(room_fd, selectors.EVENT_READ)
            no_listener.register(room_fd, selectors.EVENT_READ)
        everything.register(plan.fd, selectors.EVENT_READ)
        while not server._BaseServer__shutdown_request:
            with state._lock:
                draining, grace_left = state.draining, state.grace_ends - monotonic()
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
            pause = state.accept_resume_at
            if pause:
                pause -= monotonic()
            timeout = poll_interval
            at_capacity = _at_capacity(state)
            if at_capacity:
                selector = wake_only  # a handler that ends wakes us
            elif pause > 0 or draining:
                selector = no_listener
                if pause > 0:
                    timeout = pause if poll_interval is None else min(pause, poll_interval)
            else:
                selector = everything
            if room is not None:
                if not at_capacity and room.has_ready():
                    timeout = 0  # spoke while the server was at capacity: a slot is free
                timeout = _sooner(timeout, room.next_timeout())
                if draining and grace_left > 0:
                    timeout = _sooner(timeout, grace_left)
            ready = selector.select(timeout)
            # bpo-35017: shutdown() called during select(), exit immediately.
            if server._BaseServer__shutdown_request:
                break
            room_spoke = room is not None and not at_capacity and room.has_ready()
            for key, _ in ready:
                if key.fd == wake_fd:
                    _drain(wake_fd)
                elif key.fd == room_fd:
                    room_spoke = True
                elif not state.draining:  # (it may have begun during the wait)
                    server._handle_request_noblock()
            if room_spoke:
                for request, client_address in room.take_ready(_room_for(state)):
                    server._verify_and_process(request, client_address)
            if room is not None:
                room.expire()
            server.service_actions()


def _sooner(timeout, seconds):
    """The sooner of a wait (None: forever) and ``seconds`` (None: never)."""
    if seconds is None:
        return timeout
    return seconds if timeout is None or seconds < timeout else timeout


def _room_for(state):
    """How many requests the loop may hand on now (up to max_handlers)."""
    with state._lock:
        if state.max_handlers:
            return max(state.max_handlers - state.active, 0)
    return MAX_BATCH


def _at_capacity(state):
    """True while ``active`` is at ``max_handlers``: the loop stops taking requests
    (they wait in the listen backlog) until a handler ends. ``paused`` changes in
    one step with Ticket.release's look at it."""
    with state._lock:
        at_capacity = bool(state.max_handlers) and state.active >= state.max_handlers
        if at_capacity != state.paused:
            state.paused = at_capacity
            if at_capacity:
                state.backpressure_pauses += 1
    return at_capacity


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _readable_within(fd, timeout):
    """wait_readable for the rfile rules, per request: one poll() object, not a
    selector (~4 us less). select.poll where there is one."""
    if _poll_object is None:
        return wait_readable(fd, timeout)
    poller = _poll_object()
    poller.register(fd, _POLLIN)
    if timeout is not None:
        timeout = max(math.ceil(timeout * 1e3), 0)
    return bool(poller.poll(timeout))


_poll_object = getattr(select, "poll", None)
_POLLIN = getattr(select, "POLLIN", 1)


def take_pending(server, state):
    """A request the loop queued for a taker, as (request, client_address,
    ticket) with the ticket claimed, or None (this core never queues one, and
    never publishes its listener to handler threads)."""
    with state._lock:
        handoff = state.handoff
        item = handoff.popleft() if handoff else None
    if item is not None and item[2].claim():
        return item
    return None


def hand_to_taker(state, request, client_address, ticket):
    """Queue a request, its ticket reserved, for a thread inside take_pending;
    False when none would take it (always, in practice: without HANDLERS_TAKE
    no thread waits there)."""
    with state._lock:
        handoff = state.handoff
        if handoff is not None and state.takers > len(handoff):
            handoff.append((request, client_address, ticket))
            return True
    return False


def withdraw_handoff(state):
    """serving_ends: ``state.handoff`` becomes None; returns the queue it was."""
    with state._lock:
        handoff, state.handoff = state.handoff, None
    return handoff


def request_failed(state):
    with state._lock:
        state.errors += 1


def handshake_failed(state):
    with state._lock:
        state.tls_handshake_failures += 1


def proxy_header_failed(state):
    with state._lock:
        state.proxy_header_failures += 1


def framing_rejected(state):
    with state._lock:
        state.framing_rejections += 1


def connections_drained(state, count):
    with state._lock:
        state.drained += count


def begin_grace():
    """Nothing to time: this core's rfile/wfile never hold the GIL across system calls."""


# rfile / wfile and the end of a request: the stdlib's own code (the compiled
# core's versions first try a system call that cannot block, keeping the GIL),
# and the between-requests rules of _stream_io.
_stdlib_readinto = socket.SocketIO.readinto


def socketio_readinto(self, b):
    """socket.SocketIO.readinto; between requests, end-of-file instead of a wait
    once the server drains or ``_idle_timeout`` passes; inside one, socket.timeout
    once its head's deadline (``_headers_timeout``) passes."""
    sock = self._sock
    through_object = type(sock) is not socket.socket
    if through_object and _decrypted_pending(sock):
        pass  # an ssl.SSLSocket has bytes decrypted already: data there
    elif self._request_open is not True:
        if _ends_between_requests(self, b, through_object):
            return 0
    elif self._head_deadline and (through_object or not _empty_buffer(b)):
        _wait_for_head(self)
    n = _stdlib_readinto(self, b)
    if n and self._request_open is not True:
        self._request_open = True
        timeout = self._headers_timeout
        if timeout is not None:
            self._head_deadline = monotonic() + timeout
    return n


def _decrypted_pending(sock):
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


def _empty_buffer(b):
    """True for a buffer of no bytes: socket.recv_into makes no system call for
    one (nothing to wait for, no error reported), as the compiled core."""
    try:
        with memoryview(b) as view:
            return view.nbytes == 0
    except TypeError:
        return False  # not a buffer: the stdlib's readinto raises


def _wait_for_head(raw):
    if raw.closed or raw._timeout_occurred or raw._sock.fileno() < 0:
        return  # the stdlib's readinto raises
    fd = raw._sock.fileno()
    if _readable_within(fd, max(raw._head_deadline - monotonic(), 0.0)) or _readable_within(fd, 0):
        return
    state = raw._state
    if state is not None:
        with state._lock:
            state.headers_timeouts += 1
    raw._timeout_occurred = True
    raise socket.timeout(HEAD_TIMEOUT_MESSAGE)


def _ends_between_requests(raw, b, through_object=False):
    """See the compiled core's docstring of the same name."""
    state = raw._state
    drain_fd = state.drain_fd if state is not None else -1
    timeout = raw._idle_timeout
    sock = raw._sock
    if raw.closed or sock is None or raw._timeout_occurred or sock.fileno() < 0:
        return False  # the stdlib's readinto raises
    if sock.gettimeout() is not None and not through_object and not (
            state is not None and state.draining):
        # The socket's own timeout governs its wait (see the compiled core's).
        drain_fd = -1
    if drain_fd < 0 and timeout is None and not through_object and not (
            state is not None and state.draining):
        return False  # (a drain that began already still applies its cut)
    if not through_object and _empty_buffer(b):
        return False  # the stdlib's readinto returns 0 at once
    try:
        memoryview(b).release()
    except TypeError:
        return False  # not a buffer: the stdlib's readinto raises
    fd = sock.fileno()
    idle_deadline = None if timeout is None else monotonic() + max(timeout, 0.0)
    while True:
        draining = False
        if state is not None:
            with state._lock:
                draining = state.draining
                cut = state.idle_cut_at if raw._request_open is False else state.grace_ends
        if draining:
            if idle_deadline is not None and idle_deadline < cut:
                cut = idle_deadline
            if _readable_within(fd, max(cut - monotonic(), 0.0)):
                return False  # data (or an end) is there: read it
            break
        wait = None if idle_deadline is None else max(idle_deadline - monotonic(), 0.0)
        ready = _readable_of(fd, drain_fd, wait)
        if ready is None:
            break  # nothing came in time
        if ready == fd:
            return False
        if not state.draining:
            drain_fd = -1  # a fork()ed child sees its parent's drain: not ours
    if state is not None:
        with state._lock:
            if draining and (idle_deadline is None or monotonic() < idle_deadline):
                state.drained += 1
            else:
                state.idle_timeouts += 1
    return True


def _readable_of(fd, other_fd, timeout):
    """``fd`` if readable within ``timeout`` seconds (None: forever), else
    ``other_fd`` if that is (-1: none), else None."""
    if other_fd < 0:
        return fd if _readable_within(fd, timeout) else None
    if _poll_object is None:
        ready = select.select([fd, other_fd], [], [], timeout)[0]
    else:
        poller = _poll_object()
        poller.register(fd, _POLLIN)
        poller.register(other_fd, _POLLIN)
        if timeout is not None:
            timeout = max(math.ceil(timeout * 1e3), 0)
        ready = [entry for entry, _ in poller.poll(timeout)]
    if fd in ready:
        return fd
    return other_fd if ready else None


def socket_writer_write(self, b):
    """_SocketWriter.write."""
    self._sock.sendall(b)
    reader = self._reader
    if reader is not None:
        reader._request_open = False  # a response went out
    with memoryview(b) as view:
        return view.nbytes


def shutdown_write(sock):
    """TCPServer.shutdown_request's sock.shutdown(SHUT_WR), OSError ignored."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def close_socket(sock):
    """TCPServer.close_request's sock.close()."""
    sock.close()
