"""Limits on clients that are silent or slow (fastsockserver only, pure and compiled):
TCPServer.first_byte_timeout (the loop holds a new connection, without a thread,
until it speaks) and StreamRequestHandler.headers_timeout (a total deadline on a
request's head). idle_timeout, the limit between requests, is in test_service.py.
Every wait is bounded."""
import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_service import LineEcho, ask

from support import (
    SUBPROCESS_TIMEOUT,
    WAIT,
    bounded,
    fd_count,
    needs_fork,
    reset_close,
    subprocess_env,
    wait_for,
)


def held(server):
    return server.stats()["awaiting_first_byte"]


# --------------------------------------------------------------- first_byte_timeout

def test_silent_connections_take_no_thread_and_time_out(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.first_byte_timeout = 0.5
    before = threading.active_count()
    harness.serve(server)
    silent = [harness.connect(server) for _ in range(40)]
    assert wait_for(lambda: held(server) == 40)
    assert threading.active_count() == before + 1  # the loop alone
    talker = harness.connect(server)
    assert ask(talker) == b"PING\n"  # served while the others wait
    start = time.monotonic()
    for client in silent:
        assert client.recv(10) == b""  # closed by the server
    assert time.monotonic() - start < WAIT
    assert ask(talker) == b"PING\n"  # once it spoke, the limit no longer applies
    stats = server.stats()
    assert (stats["first_byte_timeouts"], stats["awaiting_first_byte"]) == (40, 0)
    assert stats["accepted"] == 41


def test_a_connection_that_speaks_late_is_served_with_its_data_waiting(fast_impl, harness):
    seen = []

    class Server(fast_impl.ThreadingTCPServer):
        first_byte_timeout = 2.0

        def verify_request(self, request, client_address):
            # the loop hands it on once it spoke: its first bytes are there now
            seen.append(request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            return True

    server = harness.server(Server, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    harness.serve(server)
    client = harness.connect(server)
    assert wait_for(lambda: held(server) == 1)
    time.sleep(0.2)
    assert ask(client, b"late\n") == b"LATE\n"
    assert seen == [b"l"]
    assert server.stats()["first_byte_timeouts"] == 0


def test_silent_connections_do_not_count_against_max_threads(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.first_byte_timeout = WAIT
    server.max_threads = 2
    harness.serve(server)
    silent = [harness.connect(server) for _ in range(20)]
    assert wait_for(lambda: held(server) == 20)
    talkers = [harness.connect(server) for _ in range(6)]
    for client in talkers:  # more than max_threads, one after another
        assert ask(client) == b"PING\n"
        client.close()
    assert server.stats()["active"] <= 2
    for client in silent:
        client.close()
    assert wait_for(lambda: held(server) == 0)


def test_at_max_threads_new_connections_wait_in_the_backlog(fast_impl, harness):
    release = threading.Event()
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl, release=release))
    server.first_byte_timeout = 0.3
    server.max_threads = 1
    harness.serve(server)
    busy = harness.connect(server)
    busy.sendall(b"one\n")
    assert wait_for(lambda: server.stats()["active"] == 1)
    second = harness.connect(server)  # not taken in at all: no first-byte clock runs
    time.sleep(0.5)
    assert held(server) == 0 and server.stats()["first_byte_timeouts"] == 0
    second.sendall(b"two\n")
    release.set()
    assert busy.recv(10) == b"ONE\n"
    busy.close()
    assert second.recv(10) == b"TWO\n"


@pytest.mark.parametrize("hook", ["get_request", "verify_request", "service_actions"])
def test_first_byte_timeout_with_hooks_overridden(fast_impl, harness, hook):
    calls = []
    base = fast_impl.ThreadingTCPServer

    def override(self, *args):
        calls.append(hook)
        return getattr(base, hook)(self, *args)

    Server = type("Server", (base,), {hook: override, "first_byte_timeout": 0.3})
    server = harness.server(Server, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    harness.serve(server, poll_interval=0.05)
    silent = harness.connect(server)
    talker = harness.connect(server)
    assert ask(talker) == b"PING\n"
    assert silent.recv(10) == b""
    assert server.stats()["first_byte_timeouts"] == 1
    assert hook in calls


@needs_fork
def test_first_byte_timeout_with_forking(fast_impl, harness):
    class Handler(fast_impl.StreamRequestHandler):
        idle_timeout = WAIT  # the child holds the test's client sockets too: bounded

        def handle(self):
            self.wfile.write(self.rfile.readline().upper())
            time.sleep(1.0)  # a child that outlives the silent connections' limit

    server = harness.server(fast_impl.ForkingTCPServer, ("127.0.0.1", 0), Handler)
    server.first_byte_timeout = 0.3
    harness.serve(server, poll_interval=0.05)
    silent = [harness.connect(server) for _ in range(5)]
    assert wait_for(lambda: held(server) == 5)
    assert not server.active_children  # nobody forked for them
    talker = harness.connect(server)
    assert ask(talker) == b"PING\n"
    start = time.monotonic()
    for client in silent:  # closed while the child runs: it kept no copy
        assert client.recv(10) == b""
    assert time.monotonic() - start < 0.9
    assert server.stats()["first_byte_timeouts"] == 5


def test_held_connections_that_reset_are_survived(fast_impl, harness, capfd):
    # capfd, not capsys: handler threads print to it, and CPython 3.13's io.BytesIO
    # (capsys's buffer) is not thread-safe in the free-threaded build (gh-132551).
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.first_byte_timeout = WAIT
    harness.serve(server)
    for _ in range(10):
        reset_close(harness.connect(server))
    assert wait_for(lambda: held(server) == 0)  # a reset is readable: handed on
    assert ask(harness.connect(server)) == b"PING\n"


def test_expiry_survives_a_shutdown_request_that_raises(fast_impl, harness, capfd):
    class Server(fast_impl.ThreadingTCPServer):
        first_byte_timeout = 0.2
        fail = True

        def shutdown_request(self, request):
            if self.fail and held(self):
                self.fail = False
                request.close()
                raise RuntimeError("hook failed")
            super().shutdown_request(request)

    server = harness.server(Server, ("127.0.0.1", 0), LineEcho.handler(fast_impl))
    harness.serve(server)
    silent = [harness.connect(server) for _ in range(3)]
    for client in silent:
        assert client.recv(10) == b""
    assert ask(harness.connect(server)) == b"PING\n"
    assert "hook failed" in capfd.readouterr().err


def test_held_connections_stay_held_across_serve_forever_calls(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.first_byte_timeout = WAIT
    harness.serve(server)
    client = harness.connect(server)
    assert wait_for(lambda: held(server) == 1)
    harness.stop(server)
    assert held(server) == 1
    client.sendall(b"again\n")
    harness.serve(server)
    assert client.recv(10) == b"AGAIN\n"


def test_server_close_closes_held_connections(fast_impl, harness):
    fds = fd_count()
    server = fast_impl.ThreadingTCPServer(("127.0.0.1", 0), LineEcho.handler(fast_impl))
    server.first_byte_timeout = WAIT
    loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    loop.start()
    clients = [socket.create_connection(server.server_address, timeout=WAIT) for _ in range(5)]
    assert wait_for(lambda: held(server) == 5)
    bounded(server.shutdown)
    loop.join(WAIT)
    server.server_close()
    for client in clients:
        assert client.recv(10) == b""
        client.close()
    assert wait_for(lambda: fd_count() <= fds)


def test_drain_serves_held_connections_that_speak_in_the_grace(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    server.first_byte_timeout = WAIT * 2
    harness.serve(server)
    late, silent = harness.connect(server), harness.connect(server)
    assert wait_for(lambda: held(server) == 2)
    outcome = []
    drainer = threading.Thread(target=lambda: outcome.append(server.drain(WAIT)))
    start = time.monotonic()
    drainer.start()
    time.sleep(0.3)
    late.sendall(b"late\n")
    assert late.recv(10) == b"LATE\n"
    assert silent.recv(10) == b""  # after the 2 s grace
    late.close()
    drainer.join(WAIT + 1)
    assert outcome == [True]
    assert 1.9 < time.monotonic() - start < WAIT
    assert server.stats()["drained"] >= 1 and held(server) == 0


def test_first_byte_timeout_is_for_stream_servers(fast_impl, harness):
    # (its valid values: test_service.py's test_limits_must_be_valid)
    server = harness.server(fast_impl.UDPServer, ("127.0.0.1", 0),
                            fast_impl.DatagramRequestHandler)
    server.first_byte_timeout = 1.0
    with pytest.raises(ValueError, match="stream servers"):
        bounded(server.serve_forever)


# --------------------------------------------------------------- headers_timeout

def trickling_handler(mod, limit, outcome):
    class Handler(mod.StreamRequestHandler):
        headers_timeout = limit

        def handle(self):
            start = time.monotonic()
            try:
                line = self.rfile.readline()
            except socket.timeout as exc:
                outcome.append(("timeout", time.monotonic() - start, str(exc)))
                return
            outcome.append(("line", line))
            self.wfile.write(line)
    return Handler


def test_headers_timeout_is_a_total_deadline_trickling_does_not_extend(fast_impl, harness):
    outcome = []
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            trickling_handler(fast_impl, 0.5, outcome))
    harness.serve(server)
    client = harness.connect(server)
    start = time.monotonic()
    for _ in range(30):  # a byte every 0.05 s: never idle long, never done
        try:
            client.sendall(b"x")
        except OSError:
            break
        if outcome:
            break
        time.sleep(0.05)
    assert wait_for(lambda: outcome)
    kind, took, message = outcome[0]
    assert kind == "timeout" and "headers_timeout" in message
    assert 0.4 < took and time.monotonic() - start < 1.4
    assert server.stats()["headers_timeouts"] == 1


def test_headers_timeout_lets_a_prompt_request_through_after_an_idle_wait(fast_impl, harness):
    outcome = []
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            trickling_handler(fast_impl, 0.3, outcome))
    harness.serve(server)
    client = harness.connect(server)
    time.sleep(0.5)  # idle before the request: not part of its head's time
    client.sendall(b"GET")
    time.sleep(0.1)
    client.sendall(b" /\n")
    assert client.recv(10) == b"GET /\n"
    assert outcome == [("line", b"GET /\n")]
    assert server.stats()["headers_timeouts"] == 0


HTTP_SCRIPT = """
import sys, threading
import fastsockserver
fastsockserver.install()
import http.server

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    headers_timeout = 0.5

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.readline()
print(server.stats()["headers_timeouts"], flush=True)
"""


@contextlib.contextmanager
def script_server(fast_impl, script):
    """``script`` in a subprocess of ``fast_impl``'s kind: (process, the port it printed)."""
    name = "c" if fast_impl.COMPILED else "py"
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(name))
    try:
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def test_headers_timeout_in_http_server_ends_at_the_headers(fast_impl):
    with script_server(fast_impl, HTTP_SCRIPT) as (proc, port):
        # A head trickled a byte at a time: closed after the limit, logged.
        trickler = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        start = time.monotonic()
        closed = False
        for byte in b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 60:
            try:
                trickler.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            trickler.settimeout(0.05)
            try:
                if trickler.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        assert closed and time.monotonic() - start < 1.5
        trickler.close()
        # A prompt head with a body slower than the limit: served (the
        # deadline ended at the headers).
        conn = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.8)
        conn.sendall(b"cd")
        response = http.client.HTTPResponse(conn)
        response.begin()
        assert response.status == 200 and response.read() == b"abcd"
        conn.close()
        out, err = proc.communicate("\n", timeout=SUBPROCESS_TIMEOUT)
        assert out.strip() == "1"
        assert "Request timed out" in err and "headers_timeout" in err
        assert "Traceback" not in err


def test_nothing_left_behind_by_slow_clients(fast_impl, harness):
    threads, fds = threading.active_count(), fd_count()

    class Handler(LineEcho.handler(fast_impl)):
        headers_timeout = 0.2

    server = fast_impl.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.first_byte_timeout = 0.2
    loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    loop.start()
    clients = [socket.create_connection(server.server_address, timeout=WAIT)
               for _ in range(10)]
    for client in clients[:5]:
        client.sendall(b"partial")  # never a whole line
    for client in clients:
        assert client.recv(10) == b""
        client.close()
    assert bounded(server.drain, WAIT) is True
    loop.join(WAIT)
    server.server_close()
    stats = server.stats()
    assert (stats["first_byte_timeouts"], stats["headers_timeouts"]) == (5, 5)
    assert wait_for(lambda: threading.active_count() <= threads and fd_count() <= fds,
                    timeout=WAIT + 1), (threading.enumerate(), fd_count(), fds)


# --------------------------------------------------------------- drain's last call

def test_drain_answers_a_request_that_begins_in_its_last_call(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    harness.serve(server)
    client = harness.connect(server)
    assert ask(client) == b"PING\n"  # idle between requests from here
    outcome = []
    drainer = threading.Thread(target=lambda: outcome.append(server.drain(WAIT)))
    start = time.monotonic()
    drainer.start()
    time.sleep(0.1)  # inside the last call (0.25 s)
    assert ask(client, b"next\n") == b"NEXT\n"
    assert client.recv(10) == b""  # then end-of-file
    assert time.monotonic() - start < 1.0
    drainer.join(WAIT)
    assert outcome == [True]


def test_drain_ends_a_busy_keepalive_connection_after_its_last_call(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            LineEcho.handler(fast_impl))
    harness.serve(server)
    client = harness.connect(server)
    outcome = []
    drainer = threading.Thread(target=lambda: outcome.append(server.drain(WAIT)))
    start = time.monotonic()
    answered = 0
    for _ in range(200):  # a request every 20 ms: never idle for the whole last call
        reply = ask(client)
        if reply != b"PING\n":
            break
        answered += 1
        if answered == 3:
            drainer.start()
        time.sleep(0.02)
    assert reply == b""  # ended between two requests, not inside one
    assert time.monotonic() - start < 2.0
    drainer.join(WAIT)
    assert outcome == [True]


DRAIN_HTTP_SCRIPT = """
import sys, threading, time
import fastsockserver
fastsockserver.install()
import http.server

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(float(self.path[1:]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.readline()
print(server.drain(5), flush=True)
"""


def test_http_responses_say_connection_close_while_draining(fast_impl):
    with script_server(fast_impl, DRAIN_HTTP_SCRIPT) as (proc, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/0")
        response = conn.getresponse()
        assert response.read() == b"ok" and response.getheader("Connection") is None
        conn.request("GET", "/0.5")  # in progress when the drain begins
        time.sleep(0.2)
        proc.stdin.write("\n")
        proc.stdin.flush()
        response = conn.getresponse()
        assert response.read() == b"ok"
        assert response.getheader("Connection") == "close"
        assert proc.stdout.readline().strip() == "True"
        conn.close()
        proc.communicate(timeout=SUBPROCESS_TIMEOUT)
