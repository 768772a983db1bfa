"""fastsockserver's ThreadingMixIn gives a request to an idle handler thread of an
earlier one (reuse_threads): reuse, retirement, no request kept waiting, fork()."""
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import pytest

from support import (
    IMPLS,
    WAIT,
    Serving,
    blocking_handler,
    bounded,
    echo_once,
    fork_then_threads,
    import_line,
    needs_fork,
    require_c,
    stream_echo,
    subprocess_env,
    wait_for,
)


def test_reused_handler_threads(fast_impl, harness, blocking):
    """Deliberate difference: by default fastsockserver's ThreadingMixIn hands a
    request to an idle handler thread of an earlier request (reuse_threads);
    ``_threads`` holds the threads it started, server_close() still joins them."""
    assert fast_impl.ThreadingMixIn.reuse_threads is True
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            blocking_handler(fast_impl, blocking.started, blocking.release,
                                             blocking.finished))
    harness.connect(server)
    server.handle_request()
    first = blocking.started.get(timeout=WAIT)
    threads = vars(server)["_threads"]
    assert list(threads) == [first]
    blocking.release.set()
    assert wait_for(lambda: blocking.finished == [first])
    time.sleep(0.1)  # let the worker park as idle
    blocking.release.clear()
    harness.connect(server)
    server.handle_request()
    second = blocking.started.get(timeout=WAIT)
    assert second is first  # the same thread served both requests
    assert first.is_alive()
    blocking.release.set()
    bounded(server.server_close)
    assert not first.is_alive()
    assert list(threads) == []


@needs_fork
@fork_then_threads
def test_threading_server_serves_in_a_forked_child(impl, harness):
    """Threads do not survive fork(): a server whose handler thread of an
    earlier request waits idle for the next (fastsockserver reuses them)
    still serves after a fork, in the child, on a thread of the child's."""
    server = harness.server(impl.ThreadingTCPServer, ("127.0.0.1", 0), stream_echo(impl))
    client = harness.connect(server)
    server.handle_request()
    client.sendall(b"parent\n")
    assert client.recv(100) == b"parent\n"
    time.sleep(0.1)  # let the handler thread park as idle
    pid = os.fork()
    if pid == 0:  # every wait below times out after WAIT: the child always ends
        code = 1
        try:
            child_client = socket.create_connection(server.server_address, timeout=WAIT)
            server.handle_request()
            child_client.sendall(b"child\n")
            if child_client.recv(100) == b"child\n":
                code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + WAIT * 3
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@needs_fork
@fork_then_threads
def test_child_forked_in_a_handler_ends_with_its_request(impl, harness):
    """A handler that fork()s: in the child, the thread that forked ends when
    the handler returns, as the stdlib's per-request thread does, so the child
    exits then (a reused thread waiting idle for the next request would keep
    it alive, holding copies of the server's descriptors)."""
    children = queue.Queue()

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"forking")
            pid = os.fork()
            if pid:
                children.put(pid)
            # the child returns too: its request ends, then its only thread

    server = harness.server(impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    assert client.recv(10) == b"forking"
    pid = children.get(timeout=WAIT)
    started = time.monotonic()
    done = 0
    while not done and time.monotonic() - started < WAIT:
        done, _ = os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done, "the child was still alive after {} s".format(WAIT)


def recording_server(mod, reuse_threads=True, address=("127.0.0.1", 0), bind=True):
    seen = []

    class Handler(mod.StreamRequestHandler):
        def handle(self):
            seen.append(threading.current_thread())  # kept alive: ids stay distinct
            self.wfile.write(self.rfile.readline())

    class Server(mod.ThreadingTCPServer):
        pass
    Server.reuse_threads = reuse_threads
    return Server(address, Handler, bind_and_activate=bind), seen


def test_threads_are_reused(fast_impl):
    """A request that comes while a handler thread is idle goes to it. (The slot
    goes back once the thread is idle again: "active" back at 0 says so. Without
    that wait, on a loaded machine the next request can come before the thread
    is back, and gets a new thread: requests never wait for one.)"""
    n = 50
    server, seen = recording_server(fast_impl)
    serving = Serving(server)
    try:
        for _ in range(n):
            assert echo_once(server.server_address) == b"ping\n"
            assert wait_for(lambda: server.stats()["active"] == 0)
    finally:
        serving.stop()
    assert len(seen) == n
    assert len({id(t) for t in seen}) == 1


@pytest.mark.parametrize("reuse_threads", [False])
def test_reuse_threads_false_gives_a_new_thread_per_request(impl, reuse_threads):
    """reuse_threads = False: one new thread per request, as the stdlib (always)."""
    n = 30
    server, seen = recording_server(impl, reuse_threads)
    serving = Serving(server)
    try:
        for _ in range(n):
            assert echo_once(server.server_address) == b"ping\n"
    finally:
        serving.stop()
    assert len({id(t) for t in seen}) == len(seen) == n


@pytest.mark.parametrize("reuse_threads", [True, False])
def test_request_never_waits_for_a_blocked_handler(impl, reuse_threads):
    """A handler blocked on an Event does not delay the next request."""
    release = threading.Event()
    entered = threading.Event()

    class Handler(impl.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            if line == b"block\n":
                entered.set()
                release.wait(WAIT * 2)
            self.wfile.write(line)

    cls = type("Server", (impl.ThreadingTCPServer,), {"reuse_threads": reuse_threads})
    server = cls(("127.0.0.1", 0), Handler)
    serving = Serving(server)
    blocked = socket.create_connection(server.server_address, timeout=WAIT)
    try:
        # Warm up so that an idle pooled thread exists (the case to get right).
        assert echo_once(server.server_address) == b"ping\n"
        blocked.sendall(b"block\n")
        assert entered.wait(WAIT)
        assert echo_once(server.server_address) == b"ping\n"
        assert not release.is_set()
        release.set()
        assert blocked.recv(16) == b"block\n"
    finally:
        release.set()
        blocked.close()
        serving.stop()


def test_threads_list_stays_bounded(fast_impl):
    n = 200
    server, seen = recording_server(fast_impl)
    serving = Serving(server)
    try:
        for _ in range(n):
            assert echo_once(server.server_address) == b"ping\n"
        distinct = len({id(t) for t in seen})
        assert len(server._threads) <= distinct, (len(server._threads), distinct)
        # Reused: far fewer threads than requests. A client has its reply a
        # moment before its handler thread is idle again, so now and then the
        # next request finds none idle and starts one (more often where the
        # loop runs in parallel with it: a free-threaded build, a loaded machine).
        assert distinct < n // 4, distinct
    finally:
        serving.stop()


def test_idle_threads_retire(fast_impl, monkeypatch):
    """An idle pooled thread ends after IDLE_SECONDS (shortened here)."""
    pool_module = sys.modules[fast_impl.__name__ + "._handler_threads"]
    monkeypatch.setattr(pool_module, "IDLE_SECONDS", 0.2)
    server, seen = recording_server(fast_impl)
    serving = Serving(server)
    try:
        assert echo_once(server.server_address) == b"ping\n"
        assert wait_for(lambda: len(seen) == 1)
        worker = seen[0]
        assert worker is not threading.current_thread()
        worker.join(WAIT)
        assert not worker.is_alive(), "idle handler thread did not retire"
        assert echo_once(server.server_address) == b"ping\n"  # a new one is started
    finally:
        serving.stop()


def _drain_and_close(server, thread):
    """A restart's first half: drain, keep the listener, close. Returns the
    listening socket and how long server_close() took."""
    assert server.drain(WAIT) is True
    thread.join(WAIT)
    listener = server.socket.detach()
    start = time.monotonic()
    server.server_close()
    return listener, time.monotonic() - start


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


def test_a_drained_servers_idle_threads_serve_its_successor(fast_impl):
    """A restart in one process (drain(), server_close(), a new server on the same
    listener): the new server's requests go to the idle handler threads of the
    old one, not to new threads (with the GIL off, new threads would leave the
    old ones' allocator pages behind: RSS steps up at each restart).
    server_close() does not wait for them: their requests are done."""
    old, seen_old = recording_server(fast_impl)
    loop = _serve(old)
    assert echo_once(old.server_address) == b"ping\n"
    # (A thread that takes requests itself gives its slot back only once it is
    # idle too: before, one closed on its way there retired.)
    assert wait_for(lambda: old.stats()["active"] == 0)
    listener, close_seconds = _drain_and_close(old, loop)
    assert close_seconds < 1.0
    worker = seen_old[0]
    assert worker.is_alive()  # left for a successor
    new, seen_new = recording_server(fast_impl, address=old.server_address, bind=False)
    fast_impl.adopt_socket(new, listener)
    loop = _serve(new)
    try:
        assert echo_once(new.server_address) == b"ping\n"
    finally:
        new.shutdown()
        loop.join(WAIT)
        new.server_close()  # not drained: its idle threads retire, joined here
    assert seen_new == [worker]
    worker.join(WAIT)
    assert not worker.is_alive()


def test_threads_left_without_a_successor_retire(fast_impl, monkeypatch):
    """Threads a drained server left retire after IDLE_SECONDS (shortened here)
    when no server takes them; one closed without a drain leaves none."""
    pool_module = sys.modules[fast_impl.__name__ + "._handler_threads"]
    monkeypatch.setattr(pool_module, "IDLE_SECONDS", 0.2)
    for drained in (True, False):
        server, seen = recording_server(fast_impl)
        loop = _serve(server)
        assert echo_once(server.server_address) == b"ping\n"
        assert wait_for(lambda: server.stats()["active"] == 0)
        if drained:
            listener, _ = _drain_and_close(server, loop)
            os.close(listener)
        else:
            server.shutdown()
            loop.join(WAIT)
            server.server_close()
            assert not seen[0].is_alive()  # joined by server_close(), as before
        seen[0].join(WAIT)
        assert not seen[0].is_alive(), "a left thread did not retire"


EXIT_SCRIPT = r"""
import socket, sys, threading, time
{import_line}

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

server = ss.ThreadingTCPServer(("127.0.0.1", 0), Handler)
assert server.daemon_threads is False
reply = []
def client():
    with socket.create_connection(server.server_address, timeout=5) as c:
        c.sendall(b"x\n")
        reply.append(c.recv(16))
t = threading.Thread(target=client)
t.start()
server.handle_request()
t.join(5)
assert reply == [b"x\n"], reply
time.sleep(0.2)  # the handler thread has finished its request and is idle
print(time.monotonic(), flush=True)
# main ends here, without server_close()
"""


@pytest.mark.parametrize("name", IMPLS)
def test_idle_non_daemon_threads_do_not_keep_interpreter_alive(name, request):
    require_c(request, name)
    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT.format(import_line=import_line(name))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(name))
    try:
        line = proc.stdout.readline()
        end_of_main = time.monotonic()
        assert line.strip(), proc.stderr.read()
        try:
            proc.wait(WAIT * 2)
        except subprocess.TimeoutExpired:
            pytest.fail("the interpreter did not exit: an idle handler thread keeps it alive")
        exit_delay = time.monotonic() - end_of_main
        assert proc.returncode == 0, proc.stderr.read()
        # IDLE_SECONDS is 5: waiting for the idle timeout would take > 4 s.
        assert exit_delay < 2.5, exit_delay
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)
