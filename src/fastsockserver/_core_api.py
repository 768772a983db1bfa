"""The serving core's interface: what the server classes call, and the state they share.

Two modules implement it with the same behaviour:

- ``fastsockserver._core`` (``src/_core.pyx``, declared in ``src/_core.pxd``):
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
# "wait", "accept" and "send"; and PORTABLE_CORE, True where the compiled core
# was built with FASTSOCKSERVER_PORTABLE_CORE (setup.py): on Linux, the calls
# macOS and the BSDs make (poll, accept + fcntl, no MSG_NOSIGNAL).
SYSTEM_CALL_KINDS = ("wait", "accept", "send")

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

# What rfile raises (socket.timeout) when a request's head is not read within
# StreamRequestHandler.headers_timeout; http.server logs it as "Request timed out".
HEAD_TIMEOUT_MESSAGE = "request head not read within headers_timeout"


class ServingState:
    """Declaration of the state a server shares with its loop and handler threads.

    One per server (``BaseServer._serving_state``), made by the core in use
    (``core.ServingState()``). Fields:

    - ``accept_backoff``, ``accept_resume_at`` (float): the accept back-off;
      while ``accept_resume_at`` is in the future the loop does not watch the
      listener. 0.0: not backing off.
    - ``handoff``: a ``collections.deque`` of ``(request, client_address)``
      that the loop queued for handler threads inside ``take_pending``, while
      serve_forever() runs with handlers taking; else None.
    - ``takers`` (int): handler threads inside ``take_pending`` now.
    - ``take_pending_from``: the listener handler threads may take from
      (set by the core only while it is non-blocking), or None.
    - ``waker``: the server's shutdown pipe (``wake()``), set by BaseServer.
    - ``max_handlers`` (int): the loop takes no request while ``active`` is
      at least this (ThreadingMixIn.max_threads); 0: no cap.
    - ``active`` (int): requests the library's process_request has begun and
      not yet ended; ``paused`` (bool): the loop is not taking requests because
      ``active`` reached ``max_handlers``, and a handler that ends wakes it.
    - ``draining`` (bool): drain() began: nothing more is taken in, and a
      connection idle between requests reads end-of-file from ``idle_cut_at``
      (float, monotonic time: drain()'s start plus its last call) on.
    - ``readers``: a WeakSet of the live rfile raw streams (_stream_io), for drain().
    - ``waiting_room``: the server's ``_waiting_room.WaitingRoom`` while
      serve_forever() runs with first_byte_timeout; else None. New connections
      go there first (``hold``), and the loop waits on its ``fileno()`` too.
    - counters (int): ``accepted``, ``finished``, ``errors``,
      ``backpressure_pauses``, ``drained``, ``idle_timeouts``,
      ``first_byte_timeouts``, ``headers_timeouts``, ``tls_handshake_failures``,
      ``proxy_header_failures``, ``framing_rejections``.

    The loop and handler threads change these at once. Where there is no GIL
    (a free-threaded build) the functions below change them under the state's
    own lock (the compiled core: a critical section; the pure one:
    ``_lock``), so no count is lost and ``takers``/``handoff`` change together.
    """

    FIELDS = ("accept_backoff", "accept_resume_at", "handoff", "takers", "take_pending_from",
              "waker", "max_handlers", "active", "paused", "draining", "idle_cut_at", "readers",
              "accepted", "finished", "errors", "backpressure_pauses", "drained",
              "idle_timeouts", "waiting_room", "first_byte_timeouts", "headers_timeouts",
              "tls_handshake_failures", "proxy_header_failures", "framing_rejections")

    def accept_failed(self, error_number):
        """An accept/recvfrom failed with ``error_number`` (OSError.errno, may be None):
        start or double the back-off if it means out of resources."""

    def accept_recovered(self):
        """A request came in: end the back-off."""


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
    ``server.service_actions()`` runs after each wake-up.
    """


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd``; True if readable."""


def take_pending(server, state):
    """The next request for a handler thread whose request is done, or None.

    First one the loop queued (``hand_to_taker``), then one waiting on
    ``state.take_pending_from`` while the loop publishes it.
    """


def hand_to_taker(state, request, client_address):
    """Queue a request for a thread inside ``take_pending``; False when none would take it."""


def withdraw_handoff(state):
    """serving_ends: ``state.handoff`` becomes None; returns the queue it was
    (no taker pops from it afterwards)."""


def handler_started(state):
    """A request was given to the library's process_request: ``state.active += 1``."""


def handler_finished(state):
    """That request ended: ``active`` down, ``finished`` up; wakes a loop paused
    at ``max_handlers``."""


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
    """drain() ended ``count`` connections (idle, or held silent): ``drained += count``.
    Handler threads count theirs at the same time."""


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
             "handler_started", "handler_finished", "request_failed", "handshake_failed",
             "proxy_header_failed", "framing_rejected", "connections_drained", "begin_grace",
             "socketio_readinto", "socket_writer_write", "shutdown_write", "close_socket")
