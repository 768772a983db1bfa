"""ThreadingMixIn and ForkingMixIn, the same on the stdlib, pure and compiled:
block_on_close, daemon_threads, _threads; children tracked, reaped, limited."""
import os
import socket
import threading

import pytest

from support import (
    WAIT,
    blocking_handler,
    bounded,
    make_server,
    needs_fork,
    raising_handler,
    roundtrip,
    stream_echo,
    wait_for,
)

# --------------------------------------------------------------- ThreadingMixIn

def test_server_close_joins_threads_when_block_on_close(impl, harness, blocking):
    server = harness.server(impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            blocking_handler(impl, blocking.started, blocking.release,
                                             blocking.finished))
    assert server.block_on_close is True
    harness.connect(server)
    server.handle_request()
    worker = blocking.started.get(timeout=WAIT)
    closer = threading.Thread(target=server.server_close, daemon=True)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "server_close returned while a handler still ran"
    assert blocking.finished == []
    blocking.release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert blocking.finished == [worker]
    assert not worker.is_alive()


def test_server_close_returns_at_once_without_block_on_close(impl, harness, blocking):
    class Server(impl.ThreadingTCPServer):
        block_on_close = False
    server = harness.server(Server, ("127.0.0.1", 0),
                            blocking_handler(impl, blocking.started, blocking.release,
                                             blocking.finished))
    harness.connect(server)
    server.handle_request()
    worker = blocking.started.get(timeout=WAIT)
    assert "_threads" not in vars(server)
    assert isinstance(server._threads, impl._NoThreads)
    bounded(server.server_close, timeout=WAIT)
    assert worker.is_alive() and blocking.finished == []
    blocking.release.set()
    worker.join(WAIT)
    assert blocking.finished == [worker]


def test_daemon_threads_not_kept(impl, harness, blocking):
    class Server(impl.ThreadingTCPServer):
        daemon_threads = True
    server = harness.server(Server, ("127.0.0.1", 0),
                            blocking_handler(impl, blocking.started, blocking.release,
                                             blocking.finished))
    harness.connect(server)
    server.handle_request()
    worker = blocking.started.get(timeout=WAIT)
    assert worker.daemon
    assert "_threads" in vars(server)  # block_on_close is still true
    assert list(server._threads) == []
    bounded(server.server_close, timeout=WAIT)  # nothing to join
    assert worker.is_alive()
    blocking.release.set()
    worker.join(WAIT)


def test_threads_attribute_semantics(impl, harness, blocking):
    """The stdlib's one thread per request (fastsockserver: reuse_threads = False)."""
    assert type(impl.ThreadingMixIn.__dict__["_threads"]) is impl._NoThreads
    assert type(impl.ThreadingMixIn.__dict__["_threads"]).__name__ == "_NoThreads"

    class Server(impl.ThreadingTCPServer):
        reuse_threads = False  # fastsockserver's switch; meaningless to the stdlib
    server = harness.server(Server, ("127.0.0.1", 0),
                            blocking_handler(impl, blocking.started, blocking.release,
                                             blocking.finished))
    assert "_threads" not in vars(server)
    assert isinstance(server._threads, impl._NoThreads)
    harness.connect(server)
    server.handle_request()
    first = blocking.started.get(timeout=WAIT)
    threads = vars(server)["_threads"]
    assert isinstance(threads, list) and isinstance(threads, impl._Threads)
    assert callable(threads.reap) and callable(threads.join)
    assert list(threads) == [first]
    blocking.release.set()
    first.join(WAIT)
    assert not first.is_alive()
    blocking.release.clear()
    # the next append reaps the finished thread
    harness.connect(server)
    server.handle_request()
    second = blocking.started.get(timeout=WAIT)
    assert server._threads is threads
    assert list(threads) == [second]
    blocking.release.set()
    second.join(WAIT)
    threads.reap()
    assert list(threads) == []
    server.server_close()
    assert list(threads) == []


def test_threads_join_and_pop_all(impl):
    threads = impl._Threads()
    ev = threading.Event()
    t = threading.Thread(target=ev.wait, args=(WAIT,))
    threads.append(t)
    t.start()
    d = threading.Thread(target=ev.wait, args=(WAIT,), daemon=True)
    threads.append(d)  # daemon threads are not kept
    d.start()
    assert list(threads) == [t]
    ev.set()
    threads.join()
    assert not t.is_alive() and list(threads) == []
    d.join(WAIT)
    assert threads.pop_all() == []
    no = impl._NoThreads()
    assert no.append(t) is None and no.join() is None


def test_threading_handler_error_keeps_serving(impl, harness, capfd):
    server = make_server(harness, impl, "ThreadingTCPServer", "tcp", raising_handler(impl))
    harness.serve(server)
    for _ in range(3):
        assert roundtrip(harness, server, "tcp", b"boom\n") == b""
        assert roundtrip(harness, server, "tcp", b"ok\n") == b"ok\n"
    harness.stop(server)
    bounded(server.server_close)
    assert capfd.readouterr().err.count("Exception occurred during processing of request from") == 3


# --------------------------------------------------------------- ForkingMixIn

@needs_fork
def test_forking_children_tracked_and_reaped(impl, harness):
    server = harness.server(impl.ForkingTCPServer, ("127.0.0.1", 0), stream_echo(impl))
    assert server.active_children is None
    clients = [harness.connect(server) for _ in range(3)]
    for c in clients:
        server.handle_request()
    assert isinstance(server.active_children, set)
    assert len(server.active_children) == 3
    pids = set(server.active_children)
    for c in clients:
        c.sendall(b"x\n")
        assert c.recv(10) == b"x\n"
    # service_actions (called by serve_forever) reaps the exited children
    assert wait_for(lambda: (server.service_actions(), not server.active_children)[1])
    assert server.active_children == set()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@needs_fork
def test_forking_collect_children_blocking(impl, harness):
    server = harness.server(impl.ForkingTCPServer, ("127.0.0.1", 0), stream_echo(impl))
    c = harness.connect(server)
    server.handle_request()
    c.sendall(b"x\n")
    assert c.recv(10) == b"x\n"
    bounded(lambda: server.collect_children(blocking=True))
    assert server.active_children == set()


@needs_fork
def test_forking_handle_timeout_collects_children(impl, harness):
    calls = []

    class Server(impl.ForkingTCPServer):
        timeout = 0.05

        def collect_children(self, **kwargs):
            calls.append(kwargs)
            return super().collect_children(**kwargs)
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    c = harness.connect(server)
    server.handle_request()
    c.sendall(b"x\n")
    assert c.recv(10) == b"x\n"
    c.close()
    calls.clear()
    assert wait_for(lambda: (server.handle_request(), not server.active_children)[1])
    assert calls and all(kw == {} for kw in calls)


@needs_fork
def test_forking_max_children_blocks_then_proceeds(impl, harness):
    class Server(impl.ForkingTCPServer):
        max_children = 1
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    first = harness.connect(server)
    harness.serve(server)
    assert wait_for(lambda: server.active_children and len(server.active_children) == 1)
    # the loop is now blocked in collect_children: a second client is not served
    second = harness.connect(server)
    second.sendall(b"second\n")
    second.settimeout(0.5)
    with pytest.raises(socket.timeout):
        second.recv(10)
    second.settimeout(WAIT)
    # the first child finishes: the server proceeds with the second client
    first.sendall(b"first\n")
    assert first.recv(10) == b"first\n"
    assert second.recv(10) == b"second\n"
    harness.stop(server)


@needs_fork
@pytest.mark.parametrize("block_on_close", [True, False])
def test_forking_server_close_waits_for_children(impl, harness, block_on_close):
    class Server(impl.ForkingTCPServer):
        pass
    Server.block_on_close = block_on_close
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    client = harness.connect(server)
    server.handle_request()
    (pid,) = server.active_children
    closer = threading.Thread(target=server.server_close, daemon=True)
    closer.start()
    try:
        closer.join(0.3)
        if block_on_close:
            assert closer.is_alive(), "server_close did not wait for the child"
        else:
            closer.join(WAIT)
            assert not closer.is_alive()
            assert server.active_children == {pid}
    finally:
        client.sendall(b"bye\n")
        assert client.recv(10) == b"bye\n"
        closer.join(WAIT)
    assert not closer.is_alive()
    if block_on_close:
        assert server.active_children == set()
    else:
        os.waitpid(pid, 0)


@needs_fork
def test_forking_child_exit_status(impl, harness, capfd):
    statuses = []

    class Server(impl.ForkingTCPServer):
        def collect_children(self, *, blocking=False):
            for pid in list(self.active_children or ()):
                _, status = os.waitpid(pid, 0)
                statuses.append(os.waitstatus_to_exitcode(status))
                self.active_children.discard(pid)
    server = harness.server(Server, ("127.0.0.1", 0), raising_handler(impl))
    for payload in (b"fine\n", b"boom\n"):
        c = harness.connect(server)
        c.sendall(payload)
        server.handle_request()
        c.recv(10)
        server.collect_children()
    assert statuses == [0, 1]
    assert "Exception occurred during processing of request from" in capfd.readouterr().err
