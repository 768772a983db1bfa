"""Without the GIL: the compiled core keeps a free-threaded CPython's GIL off,
and what the loop and handler threads share holds up when they run at once.

The stress tests run on every build (stdlib, py, c, as ``impl`` gives them);
on a free-threaded CPython (tools/run_tests.py's "3.13t" run) the threads
really run at the same time, which is where they matter. Each is bounded to
a few seconds of work and every wait has a timeout.
"""
import collections
import os
import socket
import sysconfig
import threading
import time

import pytest

import fastsockserver
from support import WAIT, Harness, Serving, bounded, echo_once, run_code, wait_for

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
HAMMER_SECONDS = 2.0
CLIENTS = 8


def impl_name(mod):
    if mod.__name__ == "socketserver":
        return "stdlib"
    return "c" if mod.COMPILED else "py"


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded CPython (3.13t+): "
                    "on a GIL build there is no GIL to keep off")
def test_gil_stays_off_after_import_and_install():
    if not fastsockserver.COMPILED:
        pytest.skip("a pure install has no extension module that could switch the GIL on")
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)  # the interpreter's default: GIL off unless a module asks
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    out = run_code("""
        import sys, warnings
        warnings.simplefilter("error")  # the GIL switched on at import is a RuntimeWarning
        import fastsockserver
        assert fastsockserver.COMPILED, "the compiled core is not built"
        after_import = sys._is_gil_enabled()
        fastsockserver.install()
        import socketserver, http.server, xmlrpc.server, wsgiref.simple_server
        assert socketserver is fastsockserver
        print(after_import, sys._is_gil_enabled())
    """, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], out.stdout


def echo_handler(mod):
    class Echo(mod.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            self.wfile.write(line)
    return Echo


def hammer(address, deadline, failures, done):
    """One client: a connection per request until ``deadline``."""
    n = 0
    while time.monotonic() < deadline and not failures:
        payload = b"%d\n" % n
        try:
            reply = echo_once(address, payload)
        except OSError as exc:
            failures.append(repr(exc))
            return
        if reply != payload:
            failures.append((payload, reply))
            return
        n += 1
    done.append(n)


def run_clients(address, seconds=HAMMER_SECONDS, clients=CLIENTS):
    """``clients`` threads hammering ``address``; returns how many requests were answered."""
    failures, done = [], []
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=hammer, args=(address, deadline, failures, done),
                                daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * WAIT)
    assert not any(t.is_alive() for t in threads), "a client hung (a request was never answered)"
    assert not failures, failures[:5]
    assert len(done) == clients
    return sum(done)


@pytest.mark.parametrize("max_threads", [None, 2])
def test_handoff_and_thread_reuse_lose_no_request_and_no_count(impl, max_threads):
    """Connections from many clients at once, through the hand-off to handler
    threads that take requests themselves (compiled core) and reused threads;
    with ``max_threads`` the loop pauses and is woken by finishing handlers
    over and over. Every request is answered, and the counters that the loop
    and handler threads change at once add up."""
    if max_threads is not None and impl_name(impl) == "stdlib":
        pytest.skip("max_threads is fastsockserver's")
    cls = type("Server", (impl.ThreadingTCPServer,), {"daemon_threads": True})
    server = cls(("127.0.0.1", 0), echo_handler(impl))
    if max_threads is not None:
        server.max_threads = max_threads
    serving = Serving(server)
    try:
        answered = run_clients(server.server_address)
    finally:
        serving.stop()
    assert answered > 0
    if impl_name(impl) != "stdlib":
        stats = server.stats()
        assert wait_for(lambda: server.stats()["active"] == 0), server.stats()
        stats = server.stats()
        assert stats["accepted"] == stats["finished"] == answered, stats
        assert stats["errors"] == 0, stats


def test_shutdown_from_many_threads_while_requests_arrive(impl):
    """Rounds of a server under load, each ended by shutdown() called from
    several threads at once: every call returns and the loop stops (clients
    then see the server close; what they were answered before is checked)."""
    deadline = time.monotonic() + HAMMER_SECONDS
    rounds = 0
    while time.monotonic() < deadline:
        server = impl.ThreadingTCPServer(("127.0.0.1", 0), echo_handler(impl))
        server.daemon_threads = True
        loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        loop.start()
        stop, answered, wrong = threading.Event(), [], []

        def client(address=server.server_address):
            while not stop.is_set():
                try:
                    with socket.create_connection(address, timeout=WAIT) as sock:
                        sock.sendall(b"x\n")
                        reply = sock.makefile("rb").readline()
                except OSError:
                    return  # the server closed under it
                (answered if reply == b"x\n" else wrong).append(reply)

        clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        try:
            for t in clients:
                t.start()
            assert wait_for(lambda: len(answered) >= 20), "not serving"
            callers = [threading.Thread(target=server.shutdown, daemon=True) for _ in range(4)]
            for t in callers:
                t.start()
            for t in callers:
                t.join(3 * WAIT)
            assert not any(t.is_alive() for t in callers), "shutdown() did not return"
            loop.join(WAIT)
            assert not loop.is_alive(), "serve_forever() did not stop"
        finally:
            stop.set()
            server._BaseServer__shutdown_request = True  # (a failed test's loop ends too)
            loop.join(WAIT)
            bounded(server.server_close)  # resets connections left in the backlog
            for t in clients:
                t.join(2 * WAIT)
        assert not any(t.is_alive() for t in clients), "a client hung"
        assert not wrong, wrong[:5]
        rounds += 1
    assert rounds >= 2


def test_server_close_from_many_threads_after_load(fast_impl):
    """server_close() called from several threads at once, right after serving
    under load (handler threads still finishing, idle ones parked in the pool):
    every call returns without error and no handler thread is left running."""
    harness = Harness()
    try:
        server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                                echo_handler(fast_impl))
        before = threading.active_count()
        serving = Serving(server)
        run_clients(server.server_address, seconds=1.0)
        server.shutdown()
        serving.thread.join(WAIT)
        errors = []

        def close():
            try:
                server.server_close()
            except Exception as exc:  # reported below
                errors.append(exc)

        closers = [threading.Thread(target=close, daemon=True) for _ in range(4)]
        for t in closers:
            t.start()
        for t in closers:
            t.join(3 * WAIT)
        assert not any(t.is_alive() for t in closers), "server_close() did not return"
        assert not errors, errors
        # Pool threads retire at once on close (busy ones after their request).
        assert wait_for(lambda: threading.active_count() <= before), threading.enumerate()
    finally:
        harness.close()


def test_takers_and_loop_share_the_handoff_without_losing_a_request(fast_impl):
    """The core's hand-off itself, from many threads at once: takers leave
    (take_pending) while the loop's side queues (hand_to_taker); every queued
    request is taken by exactly one taker, none is left behind or taken twice."""
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    from fastsockserver import _core as core
    state = core.ServingState()
    server = object()  # take_pending touches it only to accept, and nothing is published
    state.handoff = collections.deque()
    queued, taken, stop = [], [], threading.Event()
    lock = threading.Lock()

    def taker():
        while not stop.is_set():
            item = core.take_pending(server, state)
            if item is not None:
                with lock:
                    taken.append(item[0])

    def loop():
        n = 0
        ticket = core.Ticket(state)
        ticket.reserve()
        while not stop.is_set():
            if core.hand_to_taker(state, n, None, ticket):
                queued.append(n)
                n += 1
                ticket = core.Ticket(state)
                ticket.reserve()
        ticket.abandon()

    threads = [threading.Thread(target=taker, daemon=True) for _ in range(4)]
    threads.append(threading.Thread(target=loop, daemon=True))
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    left = list(core.withdraw_handoff(state))
    assert state.handoff is None
    assert len(queued) > 0
    # Each queued request had a taker on its way: none is left in the queue.
    assert left == []
    assert sorted(taken) == queued
    assert state.takers == 0
    assert state.active == len(taken)  # each taker claimed its ticket (released elsewhere)


def _tool():
    """tools/free_threaded_python.py, loaded by path (it is not in the package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tools", "free_threaded_python.py")
    if not os.path.exists(path):
        pytest.skip("run from a source tree: tools/ is not installed")
    spec = importlib.util.spec_from_file_location("free_threaded_python", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_trusts_only_a_build_that_finished(tmp_path):
    tool = _tool()
    binary = tmp_path / "bin" / "python3.13t"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert tool.installed_python(str(tmp_path)) is None  # interrupted: no marker written
    (tmp_path / tool.COMPLETE_MARKER).write_text(tool.DEBIAN_VERSION)
    assert tool.installed_python(str(tmp_path)) == str(binary)


def test_tool_says_why_without_a_debian_entry(tmp_path, monkeypatch):
    tool = _tool()
    (tmp_path / "other.sources").write_text(
        "Types: deb\nURIs: https://example.invalid/apt\nSuites: nodistro\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://example.invalid/debian-security\nSuites: stable-security\n"
        "Components: main\n")
    monkeypatch.setattr(tool, "SOURCES_DIR", str(tmp_path))
    with pytest.raises(tool.Unavailable, match="no Debian deb822 entry"):
        tool.add_source_entry()
    assert os.listdir(tmp_path) == ["other.sources"]  # nothing written
