"""Running a service (fastsockserver only, pure and compiled): drain(), serve() and
`run --drain-timeout` on signals, ThreadingMixIn.max_threads, StreamRequestHandler.idle_timeout,
stats(). Every wait is bounded; each test checks that nothing is left running or open."""
import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from support import (
    SUBPROCESS_TIMEOUT,
    WAIT,
    bounded,
    fd_count,
    free_port,
    needs_fork,
    reset_close,
    subprocess_env,
    wait_for,
)


class LineEcho:
    """A keep-alive line protocol: one line in, one line out, until end-of-file."""

    @staticmethod
    def handler(mod, started=None, release=None):
        class Handler(mod.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    if started is not None:
                        started.set()
                    if release is not None:
                        release.wait(WAIT)
                    self.wfile.write(line.upper())
        return Handler


def ask(sock, line=b"ping\n"):
    sock.sendall(line)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(100)
        if not chunk:
            return reply
        reply += chunk
    return reply


@pytest.fixture
def threads_and_fds():
    """Asserts the test leaves no thread of its own and no descriptor behind."""
    threads, fds = threading.active_count(), fd_count()
    yield
    assert wait_for(lambda: threading.active_count() <= threads and fd_count() <= fds,
                    timeout=WAIT + 1), (threading.enumerate(), fd_count(), fds)


def stop_pool_threads(server):
    # handler threads are reused and would idle for 5 s: retire them now
    server.server_close()


# --------------------------------------------------------------- drain()

def test_drain_ends_idle_keepalive_and_lets_a_request_finish(fast_impl, harness):
    started, release = threading.Event(), threading.Event()
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl, started, release))
    loop = harness.serve(server)
    idle = harness.connect(server)
    release.set()
    assert ask(idle) == b"PING\n"  # now idle between requests
    release.clear()
    started.clear()
    busy = harness.connect(server)
    busy.sendall(b"slow\n")
    assert started.wait(WAIT)  # inside a request
    result = []
    drainer = threading.Thread(target=lambda: result.append(server.drain(WAIT)))
    drainer.start()
    assert idle.recv(10) == b""  # the idle connection reads end-of-file: closed
    assert wait_for(lambda: not loop.is_alive())  # serve_forever returned
    late = socket.create_connection(server.server_address, timeout=WAIT)  # backlog
    release.set()
    assert busy.recv(10) == b"SLOW\n"  # the request in progress finished
    assert busy.recv(10) == b""  # then, idle, it read end-of-file
    drainer.join(WAIT)
    assert result == [True]
    stats = server.stats()
    assert stats["draining"] is True and stats["drained"] >= 1 and stats["active"] == 0
    late.settimeout(0.2)
    with pytest.raises(socket.timeout):
        late.recv(10)  # never accepted: it waits in the backlog
    assert server.stats()["waiting"] in (1, None)
    server.server_close()
    late.settimeout(WAIT)
    with pytest.raises(ConnectionResetError):
        late.recv(10)  # the kernel resets it with the listener
    late.close()


def test_drain_before_serving_and_after_server_close(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    assert bounded(server.drain, 1.0) is True  # nothing to wait for
    start = time.monotonic()
    bounded(server.serve_forever)  # returns at once: a drained server does not serve
    assert time.monotonic() - start < WAIT
    other = harness.server(fast_impl.TCPServer, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    other.server_close()
    assert bounded(other.drain, 1.0) is True


def test_drain_twice_concurrently(fast_impl, harness):
    started, release = threading.Event(), threading.Event()
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl, started, release))
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"x\n")
    assert started.wait(WAIT)
    results = []
    drainers = [threading.Thread(target=lambda: results.append(server.drain(WAIT)))
                for _ in range(2)]
    for t in drainers:
        t.start()
    time.sleep(0.05)
    release.set()
    for t in drainers:
        t.join(WAIT * 2)
    assert results == [True, True]
    assert client.recv(10) == b"X\n"


def test_drain_gives_up_on_a_handler_that_ignores_end_of_file(fast_impl, harness):
    stop = threading.Event()

    class Stubborn(fast_impl.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())
            while not stop.is_set():  # ignores end-of-file and loops
                self.rfile.read()  # end-of-file at once while draining
                time.sleep(0.01)

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Stubborn)
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"hello\n")
    assert wait_for(lambda: server.stats()["active"] == 1)
    start = time.monotonic()
    assert bounded(server.drain, 0.3) is False
    assert 0.25 <= time.monotonic() - start < WAIT
    stop.set()
    assert wait_for(lambda: server.stats()["active"] == 0)


@pytest.mark.parametrize("attrs", [{"block_on_close": False}, {"daemon_threads": True},
                                   {"reuse_threads": False}])
def test_drain_with_thread_settings(fast_impl, harness, attrs):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    for name, value in attrs.items():
        setattr(server, name, value)
    harness.serve(server)
    clients = [harness.connect(server) for _ in range(3)]
    for client in clients:
        assert ask(client) == b"PING\n"
    assert bounded(server.drain, WAIT) is True
    for client in clients:
        assert client.recv(10) == b""


def test_drain_while_handlers_raise(fast_impl, harness, capfd):
    # capfd, not capsys: handler threads print to it, and CPython 3.13's io.BytesIO
    # (capsys's buffer) is not thread-safe in the free-threaded build (gh-132551).
    class Raising(fast_impl.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            raise RuntimeError("handler failed")

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Raising)
    harness.serve(server)
    clients = [harness.connect(server) for _ in range(4)]
    for client in clients:
        client.sendall(b"x\n")
    # (connections not accepted before drain() would wait in the backlog)
    assert wait_for(lambda: server.stats()["accepted"] == 4)
    assert bounded(server.drain, WAIT) is True
    for client in clients:
        assert client.recv(10) == b""
    assert server.stats()["errors"] == 4
    assert "handler failed" in capfd.readouterr().err


def test_drain_while_clients_reset(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    harness.serve(server)
    clients = [harness.connect(server) for _ in range(20)]
    for client in clients:
        assert ask(client) == b"PING\n"
    result = []
    drainer = threading.Thread(target=lambda: result.append(server.drain(WAIT)))
    drainer.start()
    for client in clients[::2]:
        reset_close(client)
    drainer.join(WAIT * 2)
    assert result == [True]
    assert server.stats()["active"] == 0


def test_drain_with_overridden_hooks_slow_path(fast_impl, harness):
    """verify_request and get_request overridden: the loop goes through the stdlib's steps."""
    class Server(fast_impl.ThreadingTCPServer):
        def get_request(self):
            return super().get_request()

        def verify_request(self, request, client_address):
            return True

    server = harness.server(Server, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    harness.serve(server)
    client = harness.connect(server)
    assert ask(client) == b"PING\n"
    assert bounded(server.drain, WAIT) is True
    assert client.recv(10) == b""


def test_drain_of_a_synchronous_server(fast_impl, harness):
    server = harness.server(fast_impl.TCPServer, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    loop = harness.serve(server)
    client = harness.connect(server)
    assert ask(client) == b"PING\n"  # the loop's own thread now waits in rfile
    assert bounded(server.drain, WAIT) is True
    assert client.recv(10) == b""
    assert wait_for(lambda: not loop.is_alive())


@needs_fork
def test_drain_waits_for_forked_children(fast_impl, harness):
    class Handler(fast_impl.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            time.sleep(0.2)
            self.wfile.write(b"done\n")

    server = harness.server(fast_impl.ForkingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"x\n")
    assert wait_for(lambda: server.stats()["active"] == 1)
    assert bounded(server.drain, WAIT) is True
    assert client.recv(10) == b"done\n"
    assert not server.active_children


def test_drain_from_the_serving_thread_is_an_error(fast_impl, harness):
    errors = []

    class Server(fast_impl.TCPServer):
        def service_actions(self):
            try:
                self.drain(0)
            except RuntimeError as exc:
                errors.append(str(exc))
            self._BaseServer__shutdown_request = True

    server = harness.server(Server, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    bounded(server.serve_forever, 0.01)
    assert errors and "wait for itself" in errors[0]


# --------------------------------------------------------------- max_threads

class PeakCounter:
    """A handler class that takes 50 ms a request and records how many ran at once."""

    def __init__(self, mod):
        self.running = self.peak = 0
        lock = threading.Lock()
        counter = self

        class Slow(mod.StreamRequestHandler):
            def handle(self):
                with lock:
                    counter.running += 1
                    counter.peak = max(counter.peak, counter.running)
                time.sleep(0.05)
                with lock:
                    counter.running -= 1
                self.wfile.write(self.rfile.readline())

        self.handler = Slow


def test_max_threads_caps_handlers_and_serves_everyone(fast_impl, harness):
    counter = PeakCounter(fast_impl)
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), counter.handler)
    server.max_threads = 3
    harness.serve(server)
    clients = [harness.connect(server) for _ in range(12)]
    for i, client in enumerate(clients):
        client.sendall(b"%d\n" % i)
    for i, client in enumerate(clients):
        assert client.recv(10) == b"%d\n" % i  # nobody dropped
    assert counter.peak <= 3
    assert wait_for(lambda: server.stats()["finished"] == 12)
    stats = server.stats()
    assert stats["backpressure_pauses"] >= 1 and stats["active"] == 0


def test_max_threads_with_process_request_overridden(fast_impl, harness):
    """The slow path: process_request overridden (calling super) is still capped."""
    counter = PeakCounter(fast_impl)

    class Server(fast_impl.ThreadingTCPServer):
        max_threads = 2

        def process_request(self, request, client_address):
            super().process_request(request, client_address)

    server = harness.server(Server, ("127.0.0.1", 0), counter.handler)
    harness.serve(server)
    clients = [harness.connect(server) for _ in range(6)]
    for client in clients:
        client.sendall(b"ok\n")
    for client in clients:
        assert client.recv(10) == b"ok\n"
    assert counter.peak <= 2


@pytest.mark.parametrize("name, value", [
    *(("max_threads", value) for value in (0, -1, 1.5, "2", True)),
    *(("first_byte_timeout", value)
      for value in (0, -1, True, "1", float("nan"), float("inf"))),
])
def test_limits_must_be_valid(fast_impl, harness, name, value):
    """max_threads: None or a positive int; first_byte_timeout: None or positive seconds."""
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    setattr(server, name, value)
    with pytest.raises(ValueError, match=name):
        bounded(server.serve_forever)


def test_max_threads_holds_silent_clients_in_the_backlog(fast_impl, harness):
    """Clients that never send hold at most max_threads threads; the rest wait."""
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.max_threads = 4
    before = threading.active_count()
    harness.serve(server)
    silent = [harness.connect(server) for _ in range(30)]
    assert wait_for(lambda: server.stats()["active"] == 4)
    time.sleep(0.1)
    assert server.stats()["active"] == 4
    assert threading.active_count() <= before + 1 + 4  # the loop and four handlers
    assert server.stats()["backpressured"] is True
    waiting = server.stats()["waiting"]
    if sys.platform.startswith("linux"):
        assert waiting == 26
    for client in silent:
        client.close()
    assert wait_for(lambda: server.stats()["active"] == 0 and server.stats()["accepted"] == 30)


# --------------------------------------------------------------- idle_timeout

def test_idle_timeout_closes_silent_and_idle_connections(fast_impl, harness):
    class Handler(LineEcho.handler(fast_impl)):
        idle_timeout = 0.5

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    silent = harness.connect(server)
    talker = harness.connect(server)
    start = time.monotonic()
    for _ in range(6):  # talking more often than the limit keeps it open
        assert ask(talker) == b"PING\n"
        time.sleep(0.1)
    assert silent.recv(10) == b""  # never sent: closed after the limit
    assert 0.45 < time.monotonic() - start < WAIT
    assert talker.recv(10) == b""  # idle after its last request: closed too
    assert wait_for(lambda: server.stats()["idle_timeouts"] == 2)


def test_idle_timeout_does_not_cut_a_request_in_progress(fast_impl, harness):
    class Handler(fast_impl.StreamRequestHandler):
        idle_timeout = 0.1

        def handle(self):
            first = self.rfile.readline()  # the request began: no idle limit now
            second = self.rfile.readline()
            self.wfile.write(first + second)

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"one\n")
    time.sleep(0.3)
    client.sendall(b"two\n")
    assert client.recv(20) == b"one\ntwo\n"


@needs_fork
def test_idle_timeout_in_a_forked_handler(fast_impl, harness):
    class Handler(LineEcho.handler(fast_impl)):
        idle_timeout = 0.2

    server = harness.server(fast_impl.ForkingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    assert ask(client) == b"PING\n"
    assert client.recv(10) == b""  # the child closed it after the limit


# --------------------------------------------------------------- stats()

def test_stats_counts(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    assert server.stats() == {
        "accepted": 0, "active": 0, "finished": 0, "errors": 0,
        "waiting": 0 if sys.platform.startswith("linux") else None,
        "backpressured": False, "backpressure_pauses": 0, "draining": False, "drained": 0,
        "idle_timeouts": 0, "awaiting_first_byte": 0, "first_byte_timeouts": 0,
        "headers_timeouts": 0, "tls_handshake_failures": 0, "proxy_header_failures": 0,
        "framing_rejections": 0}
    harness.serve(server)
    for _ in range(5):
        with harness.connect(server) as client:
            assert ask(client) == b"PING\n"
    assert wait_for(lambda: server.stats()["finished"] == 5)
    stats = server.stats()
    assert (stats["accepted"], stats["active"], stats["errors"]) == (5, 0, 0)


def test_stats_of_a_datagram_server(fast_impl, harness):
    class Handler(fast_impl.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())

    server = harness.server(fast_impl.UDPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.client(type=socket.SOCK_DGRAM)
    for _ in range(3):
        client.sendto(b"x", server.server_address)
        assert client.recv(10) == b"x"
    assert wait_for(lambda: server.stats()["finished"] == 3)
    assert server.stats()["waiting"] is None


# --------------------------------------------------------------- serve() and run

SERVE_SCRIPT = """
import sys, time
import fastsockserver as ss
assert ss.COMPILED == {compiled!r}

class Handler(ss.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line.startswith(b"slow"):
                time.sleep({slow})
            self.wfile.write(line.upper())

server = ss.ThreadingTCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
drained = ss.serve(server, drain_timeout={drain_timeout})
print("drained", drained, flush=True)
stats = server.stats()
print("accepted", stats["accepted"], "finished", stats["finished"], flush=True)
"""


@contextlib.contextmanager
def serve_script(fast_impl, slow=0.5, drain_timeout=5.0):
    """SERVE_SCRIPT in a subprocess: yields (process, port); killed at the end."""
    name = "c" if fast_impl.COMPILED else "py"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT.format(compiled=fast_impl.COMPILED, slow=slow,
                                                   drain_timeout=drain_timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(name))
    try:
        port = int(proc.stdout.readline())
        # One request answered: serve() has installed its signal handlers (and
        # counts one accepted connection).
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as first:
            assert ask(first, b"first\n") == b"FIRST\n"
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def slow_request(port):
    """A connection inside a slow request."""
    busy = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    busy.sendall(b"slow\n")
    time.sleep(0.2)
    return busy


def test_serve_drains_on_sigterm(fast_impl):
    with serve_script(fast_impl) as (proc, port):
        idle = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        assert ask(idle) == b"PING\n"
        busy = slow_request(port)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert idle.recv(10) == b""
        assert busy.recv(10) == b"SLOW\n"  # the request in flight was not lost
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert time.monotonic() - start < 5.0
        assert proc.returncode == 0, err
        assert out.splitlines() == ["drained True", "accepted 3 finished 3"]
        idle.close()
        busy.close()


def test_serve_second_signal_stops_at_once(fast_impl):
    with serve_script(fast_impl, slow=30, drain_timeout=60) as (proc, port):
        busy = slow_request(port)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        # serve() returns at once (the stuck handler's thread keeps the
        # process alive until it ends: not waited for here)
        assert proc.stdout.readline().strip() == "drained False"
        assert time.monotonic() - start < WAIT
        busy.close()


def test_serve_drain_timeout_with_a_stuck_handler(fast_impl):
    with serve_script(fast_impl, slow=30, drain_timeout=0.3) as (proc, port):
        busy = slow_request(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "drained False"
        busy.close()


def test_sigterm_during_a_burst_of_connects(fast_impl):
    """Every connection the server accepted is answered; the rest are refused or reset."""
    answered = 1  # serve_script's first request
    failed = 0
    with serve_script(fast_impl, slow=0) as (proc, port):
        clients = []
        for i in range(200):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                sock.sendall(b"x\n")
                clients.append(sock)
            except OSError:
                failed += 1
            if i == 100:
                proc.send_signal(signal.SIGTERM)
        for sock in clients:
            try:
                reply = sock.recv(10)
            except OSError:
                reply = b""
            if reply == b"X\n":
                answered += 1
            sock.close()
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 0, err
        lines = out.splitlines()
        assert lines[0] == "drained True"
        accepted = int(lines[1].split()[1])
        assert answered == accepted > 0  # no connection it took in went unanswered
        assert answered + failed <= 201


def test_run_drain_timeout_drains_an_unmodified_http_server(fast_impl, tmp_path):
    name = "c" if fast_impl.COMPILED else "py"
    port = free_port()
    (tmp_path / "index.html").write_text("hello")
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""
        import http.server, sys
        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
        with http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler) as s:
            print("serving", flush=True)
            s.serve_forever()
        print("returned", flush=True)
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsockserver", "run", "--drain-timeout", "5", str(script),
         str(port)], cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=subprocess_env(name))
    try:
        assert proc.stdout.readline().strip() == "serving"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/index.html")
        assert conn.getresponse().read() == b"hello"  # keep-alive: the connection stays
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert time.monotonic() - start < 5.0
        assert proc.returncode == 0, err
        assert out.strip() == "returned"
        conn.close()
    finally:
        proc.kill()
        proc.wait()


def test_run_rejects_a_bad_drain_timeout():
    for value in ("-1", "abc", "nan"):
        result = subprocess.run([sys.executable, "-m", "fastsockserver", "run",
                                 "--drain-timeout", value, "x.py"],
                                capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
        assert result.returncode == 2 and "--drain-timeout" in result.stderr


def test_nothing_left_behind(fast_impl, harness, threads_and_fds):
    server = fast_impl.ThreadingTCPServer(("127.0.0.1", 0), LineEcho.handler(fast_impl))
    server.max_threads = 2
    loop = threading.Thread(target=server.serve_forever, args=(0.02,))
    loop.start()
    clients = [socket.create_connection(server.server_address, timeout=WAIT) for _ in range(6)]
    for client in clients[:2]:
        assert ask(client) == b"PING\n"
    assert bounded(server.drain, WAIT) is True
    loop.join(WAIT)
    for client in clients:
        client.close()
    stop_pool_threads(server)


def test_run_drain_timeout_lets_a_daemon_handler_finish_its_response(fast_impl, tmp_path):
    # ThreadingHTTPServer's handler threads are daemons; the program ends as soon
    # as its serve_forever() returns: the process must still wait for the drain.
    name = "c" if fast_impl.COMPILED else "py"
    port = free_port()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""
        import http.server, sys, time
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.flush()
                time.sleep(0.5)
                self.wfile.write(b"done")
            def log_message(self, *args):
                pass
        s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
        print("serving", flush=True)
        s.serve_forever()
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsockserver", "run", "--drain-timeout", "5", str(script),
         str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(name))
    try:
        assert proc.stdout.readline().strip() == "serving"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/")
        response = conn.getresponse()  # the head is in; the body 0.5 s later
        proc.send_signal(signal.SIGTERM)
        assert response.read() == b"done"
        conn.close()
        _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()
