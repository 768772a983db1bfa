"""TCPServer.first_byte_timeout: a new connection waits in the loop, not on a
thread, until its client speaks.

With the limit set, the loop hands a connection it accepted to ``hold``
instead of to ``_verify_and_process``. If data (or an end) is already there,
it goes on at once. Otherwise it is held: registered with the room's own
selector, whose descriptor the loop waits on beside the listener. When it
becomes readable, the loop takes it (``take_ready``) and
``_verify_and_process`` runs as usual, so ``verify_request`` sees a connection
with its first bytes waiting. Only a connection still silent after
``first_byte_timeout`` seconds is closed through ``shutdown_request`` and
counted (``first_byte_timeouts``): one that spoke in time while the server
was at max_threads (the loop then does not watch the room) is found ready
when its time is up, and waits for a slot like any request in the backlog.
A connection that never speaks so never costs a thread, and silent ones are
capped in time, not in number (each costs a descriptor and a few hundred
bytes).

Only for protocols where the client speaks first: a server that greets first
(SMTP, an FTP control connection, a banner) would never hear from its
clients, and would close every one. That is why it is opt-in, per server.

The room is used by one thread at a time: the loop's while serve_forever()
runs, then drain()'s or server_close()'s once it has returned. A held
connection stays held between two serve_forever() calls.
"""
import select
import selectors
import socket
from collections import deque
from time import monotonic

from ._core_select import core

_poll_object = getattr(select, "poll", None)
_READY = getattr(select, "POLLIN", 1) | getattr(select, "POLLHUP", 0) | getattr(
    select, "POLLERR", 0)


def _speaks(sock):
    """True when data or an end is waiting on ``sock`` now. A poll, not a
    peeking recv: with a timeout (socket.setdefaulttimeout()) recv would wait
    for it first, whatever its flags."""
    fd = sock.fileno()
    if _poll_object is None:
        return bool(select.select([fd], [], [], 0)[0])
    poller = _poll_object()
    poller.register(fd, _READY)
    return bool(poller.poll(0))


def validate(timeout):
    """``first_byte_timeout`` as a float, or None; ValueError for anything else."""
    if timeout is None:
        return None
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")):
        raise ValueError(
            "first_byte_timeout must be None or a positive number of seconds, "
            "not {!r}".format(timeout))
    return float(timeout)


class WaitingRoom:
    """The connections accepted but not yet heard from (see the module's docstring)."""

    def __init__(self, server, state, timeout):
        self.timeout = timeout
        self._server = server
        self._state = state
        selector = selectors.DefaultSelector()
        if not hasattr(selector, "fileno"):  # select()/poll(): nothing to wait on from C
            selector.close()
            raise NotImplementedError(
                "first_byte_timeout needs epoll or kqueue (selectors.DefaultSelector "
                "is {} here)".format(type(selector).__name__))
        self._selector = selector
        self._held = {}          # fd: (request, client_address)
        self._order = deque()    # (deadline, fd, request), oldest first: deadlines in order
        self._ready = deque()    # (request, client_address) that spoke, not yet taken

    def __len__(self):
        return len(self._held) + len(self._ready)

    def fileno(self):
        return self._selector.fileno()

    def hold(self, request, client_address):
        """Keep ``request`` until it speaks; False when it should go on now
        (data or an end already there, or not a plain stream socket)."""
        if type(request) is not socket.socket:
            return False  # e.g. an SSLSocket: its fd's readiness is not its data's
        try:
            if _speaks(request):
                return False  # data, or the end: the handler reads it
        except (OSError, ValueError):
            return False  # gone already: the handler sees it, as the stdlib's would
        fd = request.fileno()
        self._selector.register(fd, selectors.EVENT_READ)
        self._held[fd] = (request, client_address)
        self._order.append((monotonic() + self.timeout, fd, request))
        return True

    def has_ready(self):
        """True when connections that spoke wait for a slot (found by expire)."""
        return bool(self._ready)

    def take_ready(self, limit):
        """Up to ``limit`` held connections that spoke, as (request, client_address)
        pairs, no longer held. The others stay (the selector reports them again)."""
        taken = []
        ready = self._ready
        while ready and len(taken) < limit:
            taken.append(ready.popleft())
        if len(taken) < limit:
            for key, _ in self._selector.select(0):
                if len(taken) >= limit:
                    break
                taken.append(self._release(key.fd))
        return taken

    def next_timeout(self):
        """Seconds until the oldest held connection's limit (0 if passed); None if none."""
        order = self._order
        while order:
            deadline, fd, request = order[0]
            held = self._held.get(fd)
            if held is not None and held[0] is request:
                return max(deadline - monotonic(), 0.0)
            order.popleft()  # taken meanwhile
        return None

    def expire(self):
        """Close the connections silent for ``timeout`` seconds; how many. One
        that spoke meanwhile is kept, ready, for take_ready."""
        order = self._order
        if not order:
            return 0
        now = monotonic()
        closed = 0
        while order and order[0][0] <= now:
            _, fd, request = order.popleft()
            held = self._held.get(fd)
            if held is None or held[0] is not request:
                continue  # taken meanwhile
            if not self._ready_if_it_spoke(fd, timed_out=True):
                closed += 1
        return closed

    def end_grace(self):
        """A drain's grace is over: close the held connections still silent;
        how many. Those that spoke wait, ready, for a slot (take_ready), as
        at capacity outside a drain: the loop hands them on before it ends."""
        closed = 0
        for fd in list(self._held):
            if not self._ready_if_it_spoke(fd, timed_out=False):
                closed += 1
        self._order.clear()
        return closed

    def close_all(self):
        """Close every held connection (server_close, or a drain's end); how many."""
        closed = 0
        for fd in list(self._held):
            self._close(*self._release(fd))
            closed += 1
        self._order.clear()
        while self._ready:
            self._close(*self._ready.popleft())
            closed += 1
        return closed

    def close(self):
        self.close_all()
        self._selector.close()

    def forget_in_child(self):
        """In a ForkingMixIn child: close this process's copies of the held
        connections (else each lives on until the child exits, whatever the
        parent does) and of the selector. Nothing is unregistered: the
        selector's kernel object is the parent's too."""
        for request, _ in list(self._held.values()) + list(self._ready):
            request.close()
        self._held.clear()
        self._ready.clear()
        self._order.clear()
        self._selector._selector.close()  # the epoll/kqueue object, without unregistering

    def _ready_if_it_spoke(self, fd, timed_out):
        """Release held ``fd``: ready for take_ready if it spoke (True), else
        closed (False), counted first as a first-byte timeout if ``timed_out``
        (before the close: a client that sees its end sees it counted)."""
        item = self._release(fd)
        try:
            spoke = _speaks(item[0])
        except (OSError, ValueError):
            spoke = True  # its handler sees what became of it
        if spoke:
            self._ready.append(item)
            return True
        if timed_out:
            core.first_byte_timed_out(self._state)
        self._close(*item)
        return False

    def _release(self, fd):
        self._selector.unregister(fd)  # before the descriptor can be closed and reused
        return self._held.pop(fd)

    def _close(self, request, client_address):
        try:
            self._server.shutdown_request(request)
        except Exception:  # a hook of the user's that raises must not stop the loop
            self._server.handle_error(request, client_address)
