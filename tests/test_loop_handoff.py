"""Requests the loop queues for handler threads that take the next one themselves
(compiled core). Every test here uses the state a server shares with its core
(``server._serving_state``: ``takers``, ``handoff``, ``take_pending_from``,
``accept_resume_at``), ``_handler_threads.serving_ends`` and the core's
``take_pending`` and ``hand_to_taker``."""
import collections
import os
import queue
import select
import socket
import sys
import time

import pytest

from fastsockserver import _core_api
from support import HAS_UNIX, WAIT, bounded, needs_fork, wait_for


@needs_fork
def test_forked_child_takes_nothing_for_the_parent(fast_impl, harness):
    """Handler threads that take the next request themselves stay in the
    parent at a fork: in the child nothing is queued for them and no thread
    of the child takes from the listener the parent serves."""
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    reports = queue.Queue()

    class Handler(fast_impl.BaseRequestHandler):
        def handle(self):
            server = self.server
            state = server._serving_state
            # As if three threads were on their way to take a request.
            state.takers += 3
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                seen = (state.take_pending_from is None, state.takers, len(state.handoff))
                os.write(write_fd, repr(seen).encode())
                os._exit(0)
            state.takers -= 3
            os.close(write_fd)
            with os.fdopen(read_fd, "rb") as pipe:
                reports.put((state.take_pending_from is server.socket, pipe.read().decode()))
            os.waitpid(pid, 0)
            self.request.sendall(b"done")

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    assert client.recv(10) == b"done"
    # in the parent the listener is published; in the child it is not
    assert reports.get(timeout=WAIT) == (True, "(True, 0, 0)")


def test_hand_to_taker_queues_one_request_per_taker(fast_impl, harness):
    """The loop queues a request only for a handler thread inside take_pending
    that has yet to look at the queue: never more requests than such threads."""
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    from fastsockserver import _core
    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0),
                            fast_impl.BaseRequestHandler)
    state = server._serving_state
    item = ((b"x", server.socket), ("127.0.0.1", 9))

    def reserved():
        ticket = _core.Ticket(state)
        ticket.reserve()
        return ticket

    first, second, third = reserved(), reserved(), reserved()
    assert _core.hand_to_taker(state, *item, first) is False  # not serving: no queue
    state.handoff = collections.deque()
    assert _core.hand_to_taker(state, *item, first) is False  # no taker
    state.takers = 2
    assert _core.hand_to_taker(state, *item, first) is True
    assert _core.hand_to_taker(state, *item, second) is True
    assert _core.hand_to_taker(state, *item, third) is False  # both takers have one
    assert list(state.handoff) == [item + (first,), item + (second,)]
    # take_pending serves the queue first, even once serving has ended; the
    # ticket comes claimed: the taker owns the request from then on
    assert _core.take_pending(server, state) == item + (first,)
    assert first.status == _core_api.TICKET_CLAIMED
    assert state.takers == 2  # its own count came and went
    state.takers = 0
    for ticket in (first, second, third):
        ticket.release()
    assert state.active == 0
    with pytest.raises(TypeError):
        _core.hand_to_taker(None, *item, first)  # a state is required, never read through None
    with pytest.raises(TypeError):
        _core.hand_to_taker(state, *item, None)  # and a ticket


def test_requests_queued_for_takers_are_handled_when_serving_ends(fast_impl, harness):
    """Requests still queued when serve_forever() returns go to process_request."""
    handler_threads = sys.modules[fast_impl.__name__ + "._handler_threads"]
    handled = []

    class Handler(fast_impl.BaseRequestHandler):
        def handle(self):
            handled.append((self.request[0], self.client_address))

    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0), Handler)
    state = server._serving_state
    core = sys.modules[fast_impl.__name__ + "._core_select"].core
    tickets = [core.Ticket(state), core.Ticket(state)]
    for ticket in tickets:
        ticket.reserve()
    state.handoff = collections.deque(
        [((b"one", server.socket), ("127.0.0.1", 1), tickets[0]),
         ((b"two", server.socket), ("127.0.0.1", 2), tickets[1])])
    handler_threads.serving_ends(server, state, server._BaseServer__process)
    bounded(server.server_close)
    assert sorted(handled) == [(b"one", ("127.0.0.1", 1)), (b"two", ("127.0.0.1", 2))]
    assert state.handoff is None
    # the queued tickets were given back, process_request took new ones: all back
    assert state.active == 0 and state.finished == 2


def test_take_pending_only_while_the_listener_is_non_blocking(fast_impl, harness):
    """Handler threads take from a listener holding the GIL: it is published
    only while serve_forever keeps it non-blocking (a stream listener's
    O_NONBLOCK; datagrams are taken with MSG_DONTWAIT)."""
    import fcntl
    seen = []

    def record(server):
        flags = fcntl.fcntl(server.socket.fileno(), fcntl.F_GETFL)
        seen.append((type(server).__name__,
                     server._serving_state.take_pending_from is server.socket,
                     bool(flags & os.O_NONBLOCK)))

    class StreamHandler(fast_impl.BaseRequestHandler):
        def handle(self):
            record(self.server)
            self.request.sendall(b"ok")

    class DatagramHandler(fast_impl.BaseRequestHandler):
        def handle(self):
            record(self.server)
            self.request[1].sendto(b"ok", self.client_address)

    tcp = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), StreamHandler)
    udp = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0), DatagramHandler)
    for server in (tcp, udp):
        harness.serve(server)
    with harness.connect(tcp) as client:
        assert client.recv(8) == b"ok"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(b"hi", udp.server_address)
        assert client.recv(8) == b"ok"
    for server in (tcp, udp):
        harness.stop(server)
    compiled = fast_impl.COMPILED
    assert seen == [("ThreadingTCPServer", compiled, compiled),
                    ("ThreadingUDPServer", compiled, False)]
    for server in (tcp, udp):
        assert server._serving_state.take_pending_from is None
        assert server.socket.getblocking()
        assert not fcntl.fcntl(server.socket.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK


def test_take_pending_leaves_the_listener_alone_while_accepts_back_off(fast_impl, harness):
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    from fastsockserver import _core
    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0),
                            fast_impl.BaseRequestHandler)
    listener = server.socket
    state = server._serving_state
    state.take_pending_from = listener
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.sendto(b"ping", server.server_address)
            assert wait_for(lambda: select.select([listener], [], [], 0)[0])
            state.accept_resume_at = time.monotonic() + 60
            assert _core.take_pending(server, state) is None
            state.accept_resume_at = 0.0
            (data, sock), address, ticket = _core.take_pending(server, state)
            assert (data, sock, address) == (b"ping", listener, client.getsockname())
            assert state.active == 1 and ticket.status == _core_api.TICKET_CLAIMED
            ticket.release()
            assert _core.take_pending(server, state) is None  # nothing else waits
    finally:
        state.take_pending_from = None


def test_queued_requests_are_closed_when_an_exception_ends_serving(fast_impl, harness):
    handler_threads = sys.modules[fast_impl.__name__ + "._handler_threads"]
    pairs = [socket.socketpair() for _ in range(3)]

    class Server(fast_impl.ThreadingUnixStreamServer if HAS_UNIX else fast_impl.ThreadingTCPServer):
        def process_request(self, request, client_address):
            raise KeyboardInterrupt

    address = harness.unix_address() if HAS_UNIX else ("127.0.0.1", 0)
    server = harness.server(Server, address, fast_impl.BaseRequestHandler)
    state = server._serving_state
    core = sys.modules[fast_impl.__name__ + "._core_select"].core
    tickets = [core.Ticket(state) for _ in pairs]
    for ticket in tickets:
        ticket.reserve()
    state.handoff = collections.deque(
        (ours, "peer", ticket) for (ours, _), ticket in zip(pairs, tickets))
    with pytest.raises(KeyboardInterrupt):
        handler_threads.serving_ends(server, state, server._BaseServer__process)
    for ours, theirs in pairs:
        theirs.settimeout(WAIT)
        try:
            assert theirs.recv(8) == b""  # shut down and closed
            assert ours.fileno() == -1
        finally:
            theirs.close()
            ours.close()
