"""The serving core's interface: what the server classes call, and the state they share.

Two modules implement it with the same behaviour:

- ``fastsockserver._core`` (``src/_core.pyx``, declared in ``src/fastsockserver/_core.pxd``):
  compiled; waits with the GIL released (epoll on Linux) and may take
  requests in itself;
- ``fastsockserver._core_py``: its pure-Python twin, the stdlib's algorithm.

``_core_select`` picks one; ``_plan.plan_serving`` decides, once per
``serve_forever()``, which steps the chosen core runs itself (its
``FEATURES``). The functions below are the declaration: each core defines
every one of them with these parameters (``tests/test_core_contract.py``
checks it), and nothing here is ever called.
"""
import errno

# What a core can do beyond the stdlib's loop; ``plan_serving`` asks for
# nothing a core does not list in its FEATURES.
RECEIVES = "receive"              # accepts/receives on the listener itself, in batches
HANDLERS_TAKE = "handlers-take"   # handler threads take the next waiting request themselves
EPOLL = "epoll"                   # waits with epoll where the receive path is its own
ALL_FEATURES = frozenset((RECEIVES, HANDLERS_TAKE, EPOLL))

# Each core also says which system calls its own code makes, for
# `python -m fastsockserver info` and the tests: SYSTEM_CALLS, a dict with
# "wait", "accept", "send" and "share" (how a fast path that keeps the GIL
# lets other threads have it: _core.pyx, _share_gil); and PORTABLE_CORE,
# True where the compiled core was built with FASTSOCKSERVER_PORTABLE_CORE
# (setup.py): on Linux, the calls macOS and the BSDs make (poll, accept +
# fcntl, no MSG_NOSIGNAL, sched_yield).
SYSTEM_CALL_KINDS = ("wait", "accept", "send", "share")

# Requests taken per wake-up: enough to drain a burst of connects, few enough
# that service_actions() runs often (shutdown() ends a batch early).
MAX_BATCH = 64

# Accept errors that mean "out of resources": the listener stays readable, so
# retrying at once would spin the CPU. The loop stops watching it for
# BACKOFF_FIRST seconds, doubling up to BACKOFF_MAX while the error lasts.
RESOURCE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
    if hasattr(errno, name))
BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0

# drain(): a connection idle between requests may still begin one for LAST_CALL
# seconds (a closed-loop client's next request may be on its way); one accepted
# and silent so far gets NEW_CONNECTION_GRACE seconds to begin its first (as Go's
# Server.Shutdown does). Its handler then reads end-of-file (see _stream_io).
LAST_CALL = 0.25
NEW_CONNECTION_GRACE = 2.0

# A Ticket's status (the compiled core's enum in its .pxd has the same numbers).
TICKET_NEW = 0        # made, no slot yet
TICKET_RESERVED = 1   # a slot reserved by the dispatcher, not yet handed over
TICKET_CLAIMED = 2    # the thread (or child) running the request owns it
TICKET_RELEASED = 3   # the slot is back: released or abandoned, once

# What rfile raises (socket.timeout) when a request's head is not read within
# StreamRequestHandler.headers_timeout; http.server logs it as "Request timed out".
HEAD_TIMEOUT_MESSAGE = "request head not read within headers_timeout"


class ServingState:
    """Declaration of the state a server shares with its loop and handler threads.

    One per server (``BaseServer._serving_state``), made by the core in use
    (``core.ServingState()``). Who owns what: the fields marked *core* change
    only inside this module's functions (and Ticket's methods), under the
    state's section; everyone else reads them (the compiled core makes them
    read-only from Python). Fields:

    - ``accept_backoff``, ``accept_resume_at`` (float): the accept back-off;
      while ``accept_resume_at`` is in the future the loop does not watch the
      listener. 0.0: not backing off. (``accept_failed``/``accept_recovered``.)
    - ``handoff``: a ``collections.deque`` of ``(request, client_address,
      ticket)`` that the loop queued for handler threads inside
      ``take_pending``, while serve_forever() runs with handlers taking; else
      None (``_handler_threads.serving_begins``, ``withdraw_handoff``).
    - ``takers`` (int): handler threads inside ``take_pending`` now.
    - ``take_pending_from``: the listener handler threads may take from
      (set by the core only while it is non-blocking), or None.
    - ``waker``: the server's shutdown pipe (``wake()``), set by BaseServer.
    - *core* ``max_handlers`` (int): the loop takes no request while ``active``
      is at least this (ThreadingMixIn.max_threads); 0: no cap
      (``begin_serving``).
    - *core* ``active`` (int): tickets reserved and not yet released: requests
      dispatched and not ended; ``paused`` (bool): the loop is not taking
      requests because ``active`` reached ``max_handlers``, and a ticket
      released wakes it.
    - *core* ``serving`` (bool): a serve_forever() loop runs
      (``begin_serving``..``end_serving``); ``draining`` (bool): drain() began
      (``begin_drain``): the loop takes nothing more in and returns;
      ``idle_cut_at``, ``grace_ends`` (float, monotonic): from then a
      connection idle after a response, or silent since accepted, reads
      end-of-file; ``drain_fd`` (int): readable from drain()'s start on, what
      handlers between requests wait on beside their connection (-1: not
      made yet, ``drain_wait_fd``; -2: closed by server_close(),
      ``close_drain_fd``).
    - ``readers``: a WeakSet of the live rfile raw streams (_stream_io), for a
      drain that ran out of time (``_stream_io.end_all_readers``).
    - *core* ``waiting_room``: the server's ``_waiting_room.WaitingRoom`` while
      serve_forever() runs with first_byte_timeout; else None. New
      connections go there first (``hold``), and the loop waits on its
      ``fileno()`` too. The loop's thread alone uses it while it serves.
    - *core* counters (int): ``accepted``, ``finished``, ``errors``,
      ``backpressure_pauses``, ``drained``, ``idle_timeouts``,
      ``first_byte_timeouts``, ``headers_timeouts``, ``tls_handshake_failures``,
      ``proxy_header_failures``, ``framing_rejections``.

    Where there is no GIL (a free-threaded build) the section is the state's
    own lock (the compiled core: a critical section; the pure one:
    ``_lock``, replaced in a fork()ed child), so no count is lost and
    ``takers``/``handoff`` change together.
    """

    FIELDS = ("accept_backoff", "accept_resume_at", "handoff", "takers", "take_pending_from",
              "waker", "max_handlers", "active", "paused", "serving", "draining",
              "idle_cut_at", "grace_ends", "drain_fd", "readers", "accepted", "finished",
              "errors", "backpressure_pauses", "drained", "idle_timeouts", "waiting_room",
              "first_byte_timeouts", "headers_timeouts", "tls_handshake_failures",
              "proxy_header_failures", "framing_rejections")
    # Changed by the core's functions only (read-only from Python, compiled).
    CORE_OWNED = ("max_handlers", "active", "paused", "serving", "draining", "idle_cut_at",
                  "grace_ends", "drain_fd", "waiting_room", "accepted", "finished", "errors",
                  "backpressure_pauses", "drained", "idle_timeouts", "first_byte_timeouts",
                  "headers_timeouts", "tls_handshake_failures", "proxy_header_failures",
                  "framing_rejections")

    def accept_failed(self, error_number):
        """An accept/recvfrom failed with ``error_number`` (OSError.errno, may be None):
        start or double the back-off if it means out of resources."""

    def accept_recovered(self):
        """A request came in: end the back-off."""


class Ticket:
    """One request's slot among ``state.active``: the one owner of a dispatch.

    The dispatcher makes it (``Ticket(state)``), then ``reserve()``s a slot
    before it starts a thread or queues the request; the thread that runs
    the request ``claim()``s it first thing (False: the dispatcher gave it up,
    the thread does nothing) and ``release()``s it when the request ends. A
    dispatcher interrupted (a KeyboardInterrupt in Thread.start(), say)
    calls ``abandon()``: True when no thread claimed it, and the request is
    then the dispatcher's to close; False when a thread runs it (the
    dispatcher leaves it alone). Each transition is one step under the
    state's section, and a slot goes back exactly once, whoever calls what.
    ``status``: TICKET_NEW, _RESERVED, _CLAIMED or _RELEASED.
    """

    def __init__(self, state):
        pass

    def reserve(self):
        """NEW -> RESERVED: ``active += 1``."""

    def claim(self):
        """RESERVED -> CLAIMED; False from any other status."""

    def abandon(self):
        """RESERVED -> RELEASED (``active -= 1``): True; NEW: True, nothing to
        give back; CLAIMED or RELEASED: False."""

    def release(self):
        """RESERVED or CLAIMED -> RELEASED (``active -= 1``, ``finished += 1``);
        no-op once released. Wakes a loop paused at ``max_handlers``."""


def begin_serving(state, max_handlers, waiting_room):
    """serve_forever() starts its loop: ``serving``, ``max_handlers`` and
    ``waiting_room`` set in one step; False (nothing set) once draining, so a
    drain() that began first is never missed."""


def end_serving(state):
    """The loop returned: not serving, not paused, no waiting room."""


def begin_drain(state, last_call, grace):
    """drain() begins: ``draining``, ``idle_cut_at`` (now + last_call) and
    ``grace_ends`` (now + grace) set once, ``drain_fd`` made readable; returns
    ``serving`` as it was in that same step (True: that loop now returns)."""


def drain_wait_fd(state):
    """``state.drain_fd``, made on first use (a pipe's read end, closed with the state)."""


def close_drain_fd(state):
    """server_close(): ``drain_fd`` closed and -2 from then on (never made again)."""


def request_accepted(state):
    """A request was taken in: ``accepted += 1``; ends an accept back-off."""


def first_byte_timed_out(state):
    """The waiting room closed a silent connection: ``first_byte_timeouts += 1``."""


def serve(server, plan, state, wake_fd, poll_interval):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    ``plan`` is ``_plan.plan_serving(server, core)``'s ServingPlan; ``state``
    the server's ServingState; ``wake_fd`` becomes readable when shutdown()
    is called (the wait ends at once, not after ``poll_interval``). With
    ``plan.listener`` the core takes up to ``plan.batch`` requests in per
    wake-up and hands each to ``server._verify_and_process``; without, each
    wake-up calls ``server._handle_request_noblock()`` as the stdlib does.
    With ``state.waiting_room``, a connection taken in goes to its ``hold``
    first; the loop also waits on the room, hands on what ``take_ready``
    gives (up to max_handlers) and calls its ``expire`` after each wake-up.
    ``server.service_actions()`` runs after each wake-up. Once
    ``state.draining`` the loop takes nothing more from the listener; with a
    waiting room it goes on until ``state.grace_ends``, handing on held
    connections that speak (up to max_handlers, as any), then closes the
    silent rest (``connections_drained``) and returns: the one dispatcher,
    a drain() included.
    """


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd``; True if readable."""


def take_pending(server, state):
    """The next request for a handler thread whose request is done, as
    ``(request, client_address, ticket)`` with the ticket claimed, or None.

    First one the loop queued (``hand_to_taker``), then one waiting on
    ``state.take_pending_from`` while the loop publishes it.
    """


def hand_to_taker(state, request, client_address, ticket):
    """Queue a request, its ticket reserved, for a thread inside
    ``take_pending``; False when none would take it."""


def withdraw_handoff(state):
    """serving_ends: ``state.handoff`` becomes None; returns the queue it was
    (no taker pops from it afterwards)."""


def request_failed(state):
    """handle_error was called for a request: ``errors += 1``."""


def handshake_failed(state):
    """A TLS handshake of ssl_context failed or timed out: ``tls_handshake_failures += 1``."""


def proxy_header_failed(state):
    """A PROXY protocol header of proxy_protocol_from was missing or refused:
    ``proxy_header_failures += 1``."""


def framing_rejected(state):
    """A handler with strict_framing refused a request head (_framing):
    ``framing_rejections += 1``."""


def connections_drained(state, count):
    """The loop closed ``count`` held connections still silent when a drain's
    grace ended: ``drained += count``. Handler threads count theirs (rfile)."""


def begin_grace():
    """The calling handler thread, one that takes requests itself, begins a request."""


def socketio_readinto(self, b):
    """``socket.SocketIO.readinto`` for rfile's raw stream."""


def socket_writer_write(self, b):
    """``_SocketWriter.write``: ``sendall(b)``, returns the byte count."""


def shutdown_write(sock):
    """``TCPServer.shutdown_request``'s ``sock.shutdown(SHUT_WR)``, OSError ignored."""


def close_socket(sock):
    """``TCPServer.close_request``'s ``sock.close()``."""


FUNCTIONS = ("serve", "wait_readable", "take_pending", "hand_to_taker", "withdraw_handoff",
             "begin_serving", "end_serving", "begin_drain", "drain_wait_fd", "close_drain_fd",
             "request_accepted", "first_byte_timed_out", "request_failed", "handshake_failed",
             "proxy_header_failed", "framing_rejected", "connections_drained", "begin_grace",
             "socketio_readinto", "socket_writer_write", "shutdown_write", "close_socket")
CLASSES = ("ServingState", "Ticket")
