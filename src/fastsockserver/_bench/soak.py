"""``python -m fastsockserver bench --soak SECONDS``: a long mixed run under faults, with a verdict.

One server process (``python -m fastsockserver._bench.soak serve``) runs four
servers of the installed fastsockserver, configured as a service would be
(``max_threads``, ``first_byte_timeout``, ``headers_timeout``, ``idle_timeout``,
``ssl_context``): HTTP keep-alive (``http.server`` under ``install()``), a line
echo for connection churn, TLS and UDP. This process drives them for SECONDS:

- well-behaved clients, every request carrying a number of its own (an id);
- faulty ones: resets mid-request and after it, garbage, silent connections,
  trickled heads, idle keep-alive connections, half-closes, plaintext and resets
  on the TLS port;
- at 35 % a spell of descriptor exhaustion (the server's RLIMIT_NOFILE lowered
  to what it has open), at 60 % a drain and restart of every server, the new
  servers taking over the old ones' listening sockets (``adopt_socket``), as a
  restart that must lose nothing does;

and reads the server's RSS, descriptors and threads from /proc every second.

The server keeps a ledger, one byte per id (0: not read, 1: read, 2: answered),
allocated before the baseline is read. A request is **lost** when the server
read it and its client got no complete, correct answer; a request the server
never read whose client saw a refusal, a reset or an end before any answer is
**closed cleanly** (a client may send it again). The verdict: no request lost,
the descriptor and thread counts back to their values before the first client
once the clients are gone, and the RSS growth after the warm-up (a least-squares
line through the samples) under 5 %. The warm-up is 15 % of the run, at least 20 s
(at most half of it).
"""
import argparse
import ctypes
import gc
import json
import os
import queue
import random
import re
import resource
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
IDS_PER_SECOND = 25000       # the ledger's size: far above what the clients reach here
CLIENT_TIMEOUT = 10.0        # a well-behaved client's wait for an answer
RSS_GROWTH_LIMIT_PCT = 5.0
SETTLE_SECONDS = 20.0        # after the clients: idle threads retire after 5 s, timeouts 5 s
# The servers' limits (what a service would set); the faults run into them.
MAX_THREADS = 64
FIRST_BYTE_TIMEOUT = 5.0
HEADERS_TIMEOUT = 2.0
IDLE_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 3.0
DRAIN_TIMEOUT = 5.0
# stats() keys that count events (summed over restarts; the others say what is now)
COUNTERS = ("accepted", "finished", "errors", "backpressure_pauses", "drained",
            "idle_timeouts", "first_byte_timeouts", "headers_timeouts",
            "tls_handshake_failures", "proxy_header_failures", "framing_rejections")


# ================================================================ the server process

def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _request_id(text):
    """The id in b"/id-123" or b"id-123": an int, or None (then the request is not
    ledgered: the faulty clients' garbage is not taken for an id)."""
    _, marker, digits = text.rpartition(b"id-")
    return int(digits) if marker and digits.isdigit() and len(digits) < 12 else None


class SoakServers:
    """The four servers, their ledger, and the control commands (restart, exhaust)."""

    def __init__(self, ledger_size, tls_dir, lose_one=False):
        import fastsockserver
        fastsockserver.install()   # before http.server is imported
        import http.server

        from .tlsclients import server_context
        self.fss = fastsockserver
        self.ledger = bytearray(ledger_size)   # zero-filled now: its pages are in the baseline
        self.beyond_ledger = 0
        self.lose_one = lose_one
        self.lost_on_purpose = None
        ledger = self.ledger
        soak = self

        def mark(request_id, state):
            if request_id is None:
                return
            if request_id < len(ledger):
                ledger[request_id] = state
            elif state == 1:
                soak.beyond_ledger += 1

        def drop_this_one(request_id):
            """The self-test's one request that is read and not answered."""
            if soak.lose_one and soak.lost_on_purpose is None and request_id is not None \
                    and request_id >= 1000:
                soak.lost_on_purpose = request_id
                return True
            return False

        class Http(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            headers_timeout = HEADERS_TIMEOUT
            idle_timeout = IDLE_TIMEOUT

            def do_GET(self):
                request_id = _request_id(self.path.encode("latin-1"))
                mark(request_id, 1)
                if drop_this_one(request_id):
                    self.close_connection = True
                    return
                body = b"id-%d\n" % request_id if request_id is not None else b"?\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                mark(request_id, 2)

            def log_message(self, *args):   # one line per request would flood stderr
                pass

        class LineEcho(fastsockserver.StreamRequestHandler):
            """Line after line until the client closes; a line that is a number is ledgered."""
            headers_timeout = HEADERS_TIMEOUT
            idle_timeout = IDLE_TIMEOUT

            def handle(self):
                while True:
                    line = self.rfile.readline(65536)
                    if not line:
                        return
                    request_id = _request_id(line.strip())
                    mark(request_id, 1)
                    self.wfile.write(line)
                    mark(request_id, 2)

        class DatagramEcho(fastsockserver.DatagramRequestHandler):
            def handle(self):
                data = self.rfile.read()
                request_id = _request_id(data.strip())
                mark(request_id, 1)
                self.wfile.write(data)
                # (the reply is sent in finish(), after handle(): a send error
                # there reaches handle_error, and the client's count shows it)
                mark(request_id, 2)

        def http_server(address, bind):
            server = http.server.ThreadingHTTPServer(address, Http, bind_and_activate=bind)
            server.first_byte_timeout = FIRST_BYTE_TIMEOUT
            return server

        def echo_server(address, bind):
            server = fastsockserver.ThreadingTCPServer(address, LineEcho,
                                                       bind_and_activate=False)
            server.allow_reuse_address = True
            server.first_byte_timeout = FIRST_BYTE_TIMEOUT
            if bind:
                server.server_bind()
                server.server_activate()
            return server

        def tls_server(address, bind):
            server = echo_server(address, bind)
            server.ssl_context = server_context(tls_dir)
            server.ssl_handshake_timeout = HANDSHAKE_TIMEOUT
            return server

        def udp_server(address, bind):
            return fastsockserver.ThreadingUDPServer(address, DatagramEcho,
                                                     bind_and_activate=bind)

        self.makers = {"http": http_server, "echo": echo_server, "tls": tls_server,
                       "udp": udp_server}
        self.servers = {}
        self.retired_counts = {}   # the counters of the servers a restart replaced
        # Each service has two threads for the whole soak, as a service's process
        # would: one serves its servers in turn (after a restart, the new one),
        # one drains on command. New threads at each restart would be this
        # harness's churn, which with the GIL off steps RSS up, not the library's.
        self.loop_ended = {}
        self.to_serve = {name: queue.SimpleQueue() for name in self.makers}
        self.to_drain = {name: queue.SimpleQueue() for name in self.makers}
        self.drained = queue.SimpleQueue()
        self.threads = []
        for name in self.makers:
            self.threads += [
                threading.Thread(target=self._serving, args=(name,), name="serve-" + name),
                threading.Thread(target=self._draining, args=(name,), name="drain-" + name)]
        for thread in self.threads:
            thread.start()
        for name, make in self.makers.items():
            self._start(name, make((HOST, 0), True))

    def _start(self, name, server):
        server.max_threads = MAX_THREADS
        self.servers[name] = server
        self.loop_ended[name] = ended = threading.Event()
        self.to_serve[name].put((server, ended))

    def _serving(self, name):
        while True:
            item = self.to_serve[name].get()
            if item is None:
                return
            server, ended = item
            try:
                server.serve_forever()
            finally:
                ended.set()

    def _draining(self, name):
        while True:
            server = self.to_drain[name].get()
            if server is None:
                return
            self.drained.put((name, server.drain(DRAIN_TIMEOUT)))

    def ports(self):
        return {name: server.server_address[1] for name, server in self.servers.items()}

    def restart(self):
        """Drain every server; new ones take over their listening sockets."""
        started = time.monotonic()
        for name, server in self.servers.items():
            self.to_drain[name].put(server)
        drained = dict(self.drained.get() for _ in self.servers)
        for name in list(self.servers):
            old = self.servers[name]
            self.loop_ended[name].wait()
            listener = old.socket.detach()   # kept open: the backlog stays for the new server
            old.server_close()               # (joins its handler threads)
            retired = self.retired_counts.setdefault(name, {})
            for key, value in old.stats().items():
                if key in COUNTERS:
                    retired[key] = retired.get(key, 0) + value
            new = self.makers[name](old.server_address, False)
            self.fss.adopt_socket(new, listener)
            self._start(name, new)
        return {"drained": drained, "seconds": time.monotonic() - started}

    def exhaust(self, seconds):
        """Lower the open-files limit to what is open now, for ``seconds``: every
        accept() and socket() in the process fails with EMFILE until a descriptor
        closes below the limit."""
        open_now = len(os.listdir("/proc/self/fd")) - 1   # (listdir's own)
        accepted = self._accepted()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now, hard))
        try:
            time.sleep(seconds)
            waiting = sum(server.stats()["waiting"] or 0 for server in self.servers.values())
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return {"limit": open_now, "seconds": seconds,
                "accepted_during": self._accepted() - accepted, "waiting_at_end": waiting}

    def _accepted(self):
        return sum(server.stats()["accepted"] for name, server in self.servers.items()
                   if name != "udp")

    def stats(self):
        """Each service's stats(), its counters summed over the servers restarts replaced."""
        figures = {}
        for name, server in self.servers.items():
            figures[name] = stats = server.stats()
            for key, value in self.retired_counts.get(name, {}).items():
                stats[key] += value
        figures["beyond_ledger"] = self.beyond_ledger
        figures["lost_on_purpose"] = self.lost_on_purpose
        return figures

    def heap(self):
        """What a growing RSS could be: Python's allocated blocks, objects the
        collector tracks, sessions in the TLS context's cache."""
        from fastsockserver import _handler_threads
        figures = {"python_blocks": sys.getallocatedblocks(),
                   "gc_objects": len(gc.get_objects()),
                   "tls_sessions": self.servers["tls"].ssl_context.session_stats()["number"],
                   "threads_started": _handler_threads.WorkerPool.threads_started}
        figures.update(_malloc_figures())
        return figures

    def close(self):
        for name, server in self.servers.items():
            server.shutdown()
            self.loop_ended[name].wait()
            server.server_close()
        for name in self.servers:
            self.to_serve[name].put(None)
            self.to_drain[name].put(None)
        for thread in self.threads:
            thread.join()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_figures():
    """glibc's malloc: bytes in use (``uordblks`` + mmapped ``hblkhd``) and bytes held
    (``arena`` + ``hblkhd``), every arena; {} where there is no mallinfo2 (glibc < 2.33,
    other C libraries). In use flat while held grows: fragmentation, not a leak."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"malloc_in_use": info.uordblks + info.hblkhd, "malloc_held": info.arena + info.hblkhd}


def serve(argv):
    parser = argparse.ArgumentParser(prog="python -m fastsockserver._bench.soak serve")
    parser.add_argument("--ledger-size", type=int, required=True)
    parser.add_argument("--tls-dir", required=True)
    parser.add_argument("--lose-one", action="store_true")
    args = parser.parse_args(argv)
    try:
        servers = SoakServers(args.ledger_size, args.tls_dir, args.lose_one)
    except Exception as exc:
        _emit({"error": "{}: {}".format(type(exc).__name__, exc)})
        return 1
    import fastsockserver
    _emit({"ports": servers.ports(), "pid": os.getpid(), "compiled": fastsockserver.COMPILED})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "restart":
            _emit(servers.restart())
        elif command[0] == "exhaust":
            _emit(servers.exhaust(float(command[1])))
        elif command[0] == "stats":
            _emit(servers.stats())
        elif command[0] == "heap":
            _emit(servers.heap())
        elif command[0] == "ledger":
            with open(command[1], "wb") as f:
                f.write(servers.ledger)
            _emit({"written": len(servers.ledger)})
        else:
            _emit({"error": "unknown command {!r}".format(command[0])})
    servers.close()
    return 0


# ================================================================ the clients

class Tally:
    """What the clients saw; well-behaved requests by id, faults by kind."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 0
        self.answered = {}       # service -> count
        self.unanswered = []     # (id, service, how): no complete answer
        self.wrong = []          # (id, service, what came back)
        self.faults = {}         # kind -> count

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def answer(self, service):
        with self.lock:
            self.answered[service] = self.answered.get(service, 0) + 1

    def no_answer(self, request_id, service, how):
        with self.lock:
            self.unanswered.append((request_id, service, how))

    def bad(self, request_id, service, got):
        with self.lock:
            self.wrong.append((request_id, service, repr(got[:80])))

    def outcome(self, request_id, service, got, expected):
        """Count a reply as answered, closed (empty) or wrong; True when answered."""
        if not got:
            self.no_answer(request_id, service, "closed")
        elif got != expected:
            self.bad(request_id, service, got)
        else:
            self.answer(service)
            return True
        return False

    def fault(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1


def _how(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, socket.timeout):
        return "timeout"
    return type(exc).__name__


def _connect(port, timeout=CLIENT_TIMEOUT):
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _reset(sock):
    """Close with an RST (SO_LINGER 0), as a client that crashed or timed out does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def _read_line(sock):
    """Bytes up to a line feed, or to the end of the stream."""
    got = b""
    while not got.endswith(b"\n"):
        data = sock.recv(100)
        if not data:
            break
        got += data
    return got


def _read_http_response(reader):
    """(status, headers dict, body) from a file over the socket; raises EOFError on an
    end before a whole response."""
    status = reader.readline(1000)
    if not status:
        raise EOFError("no response")
    headers = {}
    while True:
        line = reader.readline(1000)
        if not line:
            raise EOFError("end inside the head")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    body = reader.read(length)
    if len(body) < length:
        raise EOFError("end inside the body")
    return status, headers, body


class Clients:
    """The client threads: each loops until ``stop`` is set."""

    def __init__(self, ports, tls_dir, tally, stop):
        from .tlsclients import client_context
        self.ports = ports
        self.tls_context = client_context(tls_dir)
        self.tally = tally
        self.stop = stop
        self.held = []             # silent connections, closed at the end
        self.held_lock = threading.Lock()
        plan = [(self.http_keepalive, 3), (self.churn, 2), (self.tls, 1), (self.udp, 1),
                (self.faults, 2)]
        self.threads = [threading.Thread(target=self._forever, args=(target,),
                                         name=target.__name__)
                        for target, count in plan for _ in range(count)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.held_lock:
            for sock in self.held:
                sock.close()
            self.held.clear()
        return [thread.name for thread in self.threads if thread.is_alive()]

    def _forever(self, target):
        rng = random.Random()
        while not self.stop.is_set():
            target(rng)

    def _pause_after_refusal(self):
        self.stop.wait(0.05)

    # ---------------------------------------------------------------- well-behaved
    def http_keepalive(self, rng):
        """Requests on one connection until the server closes it (or 200 of them)."""
        tally = self.tally
        try:
            sock = _connect(self.ports["http"])
        except OSError as exc:
            tally.fault("client connect failed: " + _how(exc))
            self._pause_after_refusal()
            return
        reader = sock.makefile("rb")
        try:
            for _ in range(200):
                if self.stop.is_set():
                    return
                request_id = tally.new_id()
                try:
                    sock.sendall(b"GET /id-%d HTTP/1.1\r\nHost: soak\r\n\r\n" % request_id)
                    status, headers, body = _read_http_response(reader)
                except (OSError, EOFError, ValueError) as exc:
                    tally.no_answer(request_id, "http", _how(exc))
                    return
                if not status.startswith(b"HTTP/1.1 200") or body != b"id-%d\n" % request_id:
                    tally.bad(request_id, "http", status + body)
                    return
                tally.answer("http")
                if headers.get(b"connection", b"").lower() == b"close":
                    return
        finally:
            reader.close()
            sock.close()

    def churn(self, rng):
        """A connection per request: connect, one line, its echo, close."""
        request_id = self.tally.new_id()
        self._one_line(request_id, "echo", self.ports["echo"])

    def _one_line(self, request_id, service, port, half_close=False):
        tally = self.tally
        try:
            sock = _connect(port)
        except OSError as exc:
            tally.no_answer(request_id, service, _how(exc))
            self._pause_after_refusal()
            return
        try:
            line = b"id-%d\n" % request_id
            sock.sendall(line)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            got = _read_line(sock)
        except OSError as exc:
            tally.no_answer(request_id, service, _how(exc))
            return
        finally:
            sock.close()
        tally.outcome(request_id, service, got, line)

    def tls(self, rng):
        """A TLS connection, a handshake, then a few lines echoed."""
        tally = self.tally
        request_id = tally.new_id()
        try:
            sock = self.tls_context.wrap_socket(_connect(self.ports["tls"]),
                                                server_hostname=HOST)
        except (OSError, ssl.SSLError) as exc:
            tally.no_answer(request_id, "tls", _how(exc))
            self._pause_after_refusal()
            return
        try:
            for n in range(rng.randint(1, 8)):
                if n:
                    request_id = tally.new_id()
                line = b"id-%d\n" % request_id
                try:
                    sock.sendall(line)
                    got = _read_line(sock)
                except (OSError, ssl.SSLError) as exc:
                    tally.no_answer(request_id, "tls", _how(exc))
                    return
                if not tally.outcome(request_id, "tls", got, line):
                    return
        finally:
            sock.close()

    def udp(self, rng):
        """One datagram at a time, each waited for (so none is dropped for space)."""
        tally = self.tally
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(CLIENT_TIMEOUT)   # (a drain pauses the reading of datagrams)
        try:
            for _ in range(500):
                if self.stop.is_set():
                    return
                request_id = tally.new_id()
                message = b"id-%d" % request_id
                try:
                    sock.sendto(message, (HOST, self.ports["udp"]))
                    while True:   # a late answer to an earlier datagram is skipped
                        got = sock.recv(100)
                        if _request_id(got) is None or _request_id(got) >= request_id:
                            break
                except OSError as exc:
                    tally.no_answer(request_id, "udp", _how(exc))
                    return
                if not tally.outcome(request_id, "udp", got, message):
                    return
        finally:
            sock.close()

    # ---------------------------------------------------------------- faulty
    def faults(self, rng):
        """One fault of a kind chosen at random, then a short pause."""
        kind = rng.choice(("reset-mid-request", "reset-after-request", "garbage-http",
                           "garbage-echo", "garbage-tls", "silent", "trickle", "half-close",
                           "reset-in-handshake", "udp-garbage", "idle-keep-alive"))
        self.tally.fault(kind)
        try:
            getattr(self, "_" + kind.replace("-", "_"))(rng)
        except OSError:
            pass   # the server may cut a faulty client off in any way
        self.stop.wait(0.01)

    def _reset_mid_request(self, rng):
        sock = _connect(self.ports[rng.choice(("http", "echo"))])
        sock.sendall(b"GET /x HTTP/1.1\r\nHo")
        _reset(sock)

    def _reset_after_request(self, rng):
        sock = _connect(self.ports["http"])
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: soak\r\n\r\n")
        _reset(sock)

    def _garbage(self, port, rng):
        sock = _connect(port, timeout=3.0)
        try:
            sock.sendall(rng.randbytes(rng.randint(1, 3000)) + b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        finally:
            sock.close()

    def _garbage_http(self, rng):
        self._garbage(self.ports["http"], rng)

    def _garbage_echo(self, rng):
        self._garbage(self.ports["echo"], rng)

    def _garbage_tls(self, rng):
        self._garbage(self.ports["tls"], rng)

    def _silent(self, rng):
        """A connection that never sends: held until the server closes it (or the end)."""
        self._on_thread(_connect(self.ports[rng.choice(("http", "echo", "tls"))]),
                        self._hold)

    def _on_thread(self, sock, target):
        """``target(sock)`` on a thread of its own, the socket held (at most 30 are)."""
        with self.held_lock:
            self.held = [s for s in self.held if s.fileno() != -1]
            if len(self.held) >= 30:
                sock.close()
                return
            self.held.append(sock)
        threading.Thread(target=target, args=(sock,), daemon=True).start()

    def _hold(self, sock):
        try:
            select.select([sock], [], [], FIRST_BYTE_TIMEOUT + HEADERS_TIMEOUT + 5)
        except (OSError, ValueError):
            return
        with self.held_lock:
            if sock in self.held:
                self.held.remove(sock)
                sock.close()

    def _trickle(self, rng):
        """A request head a byte every 0.3 s (on a thread of its own): cut by
        headers_timeout."""
        self._on_thread(_connect(self.ports["http"], timeout=HEADERS_TIMEOUT + 5),
                        self._trickle_on)

    def _trickle_on(self, sock):
        try:
            for byte in b"GET /x HTTP/1.1\r\nHost: soak\r\n\r\n":
                if self.stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
        except (OSError, ValueError):
            pass   # cut off by the server (or closed at the end)
        finally:
            with self.held_lock:
                if sock in self.held:
                    self.held.remove(sock)
            sock.close()

    def _idle_keep_alive(self, rng):
        """One request answered, then nothing (on a thread of its own): cut by
        idle_timeout."""
        sock = _connect(self.ports["http"])
        try:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: soak\r\n\r\n")
            with sock.makefile("rb") as reader:
                _read_http_response(reader)
        except (OSError, EOFError, ValueError):
            sock.close()
            return
        self._on_thread(sock, self._hold)

    def _half_close(self, rng):
        """A whole request, then shutdown(SHUT_WR): it is answered (and ledgered)."""
        self._one_line(self.tally.new_id(), "echo-half-close", self.ports["echo"],
                       half_close=True)

    def _reset_in_handshake(self, rng):
        sock = _connect(self.ports["tls"])
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40))
        _reset(sock)

    def _udp_garbage(self, rng):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.sendto(rng.randbytes(rng.randint(1, 1400)), (HOST, self.ports["udp"]))
        finally:
            sock.close()


# ================================================================ the driver

def read_proc(pid):
    """{"rss_kib", "threads", "fds"} of a live process, read from /proc."""
    figures = {}
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                figures["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                figures["threads"] = int(line.split()[1])
    figures["fds"] = len(os.listdir("/proc/{}/fd".format(pid)))
    return figures


def rss_growth_pct(samples, after):
    """RSS growth (percent) over the samples taken at ``after`` seconds or later: the
    rise of the least-squares line through them, over its value at ``after``.
    None with fewer than 3 such samples."""
    points = [(s["t"], s["rss_kib"]) for s in samples if s["t"] >= after]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0:
        return None
    slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / var_t
    start = mean_r + slope * (points[0][0] - mean_t)
    return 100.0 * slope * (points[-1][0] - points[0][0]) / start if start > 0 else None


def judge(ledger, tally, samples, baseline, final, warmup, server_ok):
    """The verdict: {"passed": bool, "checks": [(name, ok, text)], ...figures}."""
    lost, closed_cleanly = [], {}
    for request_id, service, how in tally.unanswered:
        state = ledger[request_id] if request_id < len(ledger) else None
        if state:   # the server read it: its client had to get the answer
            lost.append({"id": request_id, "service": service, "client_saw": how,
                         "server": "answered" if state == 2 else "read, not answered"})
        else:
            closed_cleanly[how] = closed_cleanly.get(how, 0) + 1
    answered = sum(tally.answered.values())
    ledger_answered = ledger.count(2)
    growth = rss_growth_pct(samples, warmup)
    warm = [s["rss_kib"] for s in samples if s["t"] >= warmup]
    checks = [
        ("lost requests", not lost and not tally.wrong,
         "{} lost, {} wrong answers, of {:,} answered and {:,} closed cleanly".format(
             len(lost), len(tally.wrong), answered, sum(closed_cleanly.values()))),
        ("ledger agrees", ledger_answered >= answered,
         "the server answered {:,} ids, the clients got {:,}".format(ledger_answered,
                                                                      answered)),
        ("descriptors", final["fds"] == baseline["fds"],
         "{} at the start, {} peak, {} at the end".format(
             baseline["fds"], max(s["fds"] for s in samples), final["fds"])),
        ("threads", final["threads"] == baseline["threads"],
         "{} at the start, {} peak, {} at the end".format(
             baseline["threads"], max(s["threads"] for s in samples), final["threads"])),
        ("RSS growth after warm-up", growth is not None and growth < RSS_GROWTH_LIMIT_PCT,
         "{} (limit {:.0f} %); {:,} KiB at the start, {:,}-{:,} after the warm-up, {:,} "
         "at the end".format(
             "{:+.2f} %".format(growth) if growth is not None else "not measured",
             RSS_GROWTH_LIMIT_PCT, baseline["rss_kib"],
             min(warm or [0]), max(warm or [0]), final["rss_kib"])),
        ("server still serves", server_ok, "a last request after the clients"
         + (" was answered" if server_ok else " was NOT answered")),
    ]
    return {"passed": all(ok for _, ok, _ in checks), "checks": checks, "lost": lost,
            "wrong": tally.wrong, "closed_cleanly": closed_cleanly,
            "answered": dict(tally.answered), "faults": dict(tally.faults),
            "rss_growth_pct": growth}


class ServerProcess:
    def __init__(self, ledger_size, tls_dir, stderr, lose_one):
        cmd = [sys.executable, "-m", "fastsockserver._bench.soak", "serve",
               "--ledger-size", str(ledger_size), "--tls-dir", tls_dir]
        if lose_one:
            cmd.append("--lose-one")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr)
        self.lock = threading.Lock()
        self.info = self._reply(60.0)
        if "error" in self.info:
            raise RuntimeError("the soak server did not start: " + self.info["error"])
        self.pid = self.proc.pid

    def _reply(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            try:
                status = self.proc.wait(5 if not ready else 1)
            except subprocess.TimeoutExpired:
                status = None
            raise RuntimeError("the soak server did not answer (exit status {}; its "
                               "stderr is kept with --json)".format(status))
        return json.loads(line)

    def command(self, text, timeout=60.0, wait=True):
        """The server's reply; None when ``wait`` is False and another command is
        under way (an exhaustion spell lasts seconds)."""
        if not self.lock.acquire(blocking=wait):
            return None
        try:
            self.proc.stdin.write(text.encode() + b"\n")
            self.proc.stdin.flush()
            return self._reply(timeout)
        finally:
            self.lock.release()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _one_http_request(port):
    try:
        with _connect(port, timeout=5.0) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            with sock.makefile("rb") as reader:
                status, _, body = _read_http_response(reader)
        return status.startswith(b"HTTP/1.1 200") and body == b"?\n"
    except (OSError, EOFError, ValueError):
        return False


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _traceback_kinds(path):
    """{exception line: count} of the tracebacks the server printed (handle_error; the
    lines of tracebacks printed at once by two threads may mix, their last lines not)."""
    kinds = {}
    with open(path, errors="replace") as f:
        for line in f:
            if _EXCEPTION_LINE.match(line):
                kind = line.strip()[:100]
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def run_soak(seconds, say=print, lose_one=False):
    """Run the soak; returns the report document (``verdict["passed"]``)."""
    from .tlsclients import make_certificates
    # The warm-up (RSS is judged after it): the allocator's arenas and the threads'
    # stacks grow for the first 10-20 s of load, whatever the run's length.
    warmup = min(0.5 * seconds, max(0.15 * seconds, 20.0))
    phases = {"warm-up ends": warmup, "descriptor exhaustion": 0.35 * seconds,
              "drain and restart": 0.6 * seconds}
    spell = min(10.0, max(2.0, 0.05 * seconds))
    with tempfile.TemporaryDirectory(prefix="fastsockserver-soak-") as work:
        problem = make_certificates(work)
        if problem:
            raise RuntimeError(problem)
        stderr_path = os.path.join(work, "server-stderr")
        with open(stderr_path, "wb") as stderr:
            server = ServerProcess(int(max(10.0, seconds) * IDS_PER_SECOND), work, stderr, lose_one)
        samples, events = [], []
        tally, stop = Tally(), threading.Event()
        try:
            time.sleep(0.5)
            baseline = read_proc(server.pid)
            say("soak: {:.0f} s against pid {} ({} core), ports {}; at the start {} "
                "descriptors, {} threads, {:,} KiB RSS".format(
                    seconds, server.pid, "compiled" if server.info["compiled"] else "pure",
                    server.info["ports"], baseline["fds"], baseline["threads"],
                    baseline["rss_kib"]))
            clients = Clients(server.info["ports"], work, tally, stop)
            start = time.monotonic()
            clients.start()
            exhausted = restarted = False
            control = []
            next_sample = start
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    sample = read_proc(server.pid)
                    sample["t"] = round(now - start, 3)
                    samples.append(sample)
                    if len(samples) % 10 == 1:
                        sample.update(server.command("heap", wait=False) or {})
                    if len(samples) % 10 == 0:
                        say("{:5.0f}s  answered {:,}  {} descriptors, {} threads, {:,} KiB "
                            "RSS".format(now - start, sum(tally.answered.values()),
                                         sample["fds"], sample["threads"],
                                         sample["rss_kib"]))
                    next_sample += 1.0
                if now - start >= seconds:
                    break
                if not exhausted and now - start >= phases["descriptor exhaustion"]:
                    exhausted = True
                    t0 = now - start
                    thread = threading.Thread(target=lambda: control.append(
                        ("exhaust", t0, server.command("exhaust {}".format(spell)))))
                    thread.start()
                if not restarted and now - start >= phases["drain and restart"]:
                    restarted = True
                    t0 = now - start
                    thread = threading.Thread(target=lambda: control.append(
                        ("restart", t0, server.command("restart"))))
                    thread.start()
                time.sleep(min(0.05, max(0.0, next_sample - time.monotonic())))
            stop.set()
            stuck = clients.join(CLIENT_TIMEOUT + 5)
            for kind, t0, reply in sorted(control, key=lambda c: c[1]):
                events.append({"event": kind, "at_s": round(t0, 1), **reply})
            settle_start = time.monotonic()
            while True:   # until the counts are back, or SETTLE_SECONDS
                final = read_proc(server.pid)
                final["t"] = round(time.monotonic() - start, 3)
                samples.append(final)
                if (final["fds"] == baseline["fds"] and final["threads"] == baseline["threads"]) \
                        or time.monotonic() - settle_start > SETTLE_SECONDS:
                    break
                time.sleep(1.0)
            settled_s = time.monotonic() - settle_start
            server_ok = _one_http_request(server.info["ports"]["http"])
            # the last request's own descriptor is closed, its thread idle (not retired)
            server_stats = server.command("stats")
            ledger_path = os.path.join(work, "ledger")
            server.command("ledger " + ledger_path)
            with open(ledger_path, "rb") as f:
                ledger = f.read()
        finally:
            # On an error above too (a server that stopped answering): the client
            # threads end by themselves, within a request's timeout.
            stop.set()
            server.close()
        verdict = judge(ledger, tally, [s for s in samples if s["t"] <= seconds] or samples,
                        baseline, final, phases["warm-up ends"], server_ok)
        verdict["stuck_clients"] = stuck
        if stuck:
            verdict["checks"].append(("clients ended", False, "still running: " +
                                      ", ".join(stuck)))
            verdict["passed"] = False
        tracebacks = _traceback_kinds(stderr_path)
    return {"seconds": seconds, "phases": phases, "exhaustion_s": spell, "events": events,
            "baseline": baseline, "final": final, "settled_s": settled_s,
            "samples": samples, "server_stats": server_stats,
            "server_tracebacks": tracebacks, "verdict": verdict}


def format_report(document):
    verdict = document["verdict"]
    lines = ["", "soak: {:.0f} s, mixed load under faults".format(document["seconds"])]
    answered = verdict["answered"]
    lines.append("  answered: {:,} ({})".format(
        sum(answered.values()), ", ".join("{} {:,}".format(k, v)
                                          for k, v in sorted(answered.items()))))
    if verdict["closed_cleanly"]:
        lines.append("  closed before the server read them (a client may retry): {}".format(
            ", ".join("{} {:,}".format(k, v)
                      for k, v in sorted(verdict["closed_cleanly"].items()))))
    lines.append("  faults sent: {}".format(", ".join(
        "{} {:,}".format(k, v) for k, v in sorted(verdict["faults"].items()))))
    for event in document["events"]:
        if event["event"] == "exhaust":
            lines.append("  at {:.0f} s: RLIMIT_NOFILE lowered to {} for {:.0f} s: {} "
                         "connections accepted in it, {} waiting in the backlogs at its "
                         "end".format(event["at_s"], event["limit"], event["seconds"],
                                      event["accepted_during"], event["waiting_at_end"]))
        else:
            lines.append("  at {:.0f} s: drain and restart in {:.2f} s (drained: {})".format(
                event["at_s"], event["seconds"], ", ".join(
                    "{} {}".format(k, "all" if v else "NOT ALL")
                    for k, v in sorted(event["drained"].items()))))
    totals = {}
    for name, stats in document["server_stats"].items():
        if isinstance(stats, dict):
            for key in ("accepted", "idle_timeouts", "first_byte_timeouts",
                        "headers_timeouts", "tls_handshake_failures", "errors", "drained"):
                totals[key] = totals.get(key, 0) + (stats.get(key) or 0)
    lines.append("  the servers counted: {}".format(", ".join(
        "{} {:,}".format(k, v) for k, v in totals.items())))
    if document["server_tracebacks"]:
        lines.append("  handle_error tracebacks: {}".format(", ".join(
            "{} {:,}".format(k, v) for k, v in sorted(document["server_tracebacks"].items()))))
    heap = [s for s in document["samples"] if "python_blocks" in s
            and s["t"] >= document["phases"]["warm-up ends"]]
    if len(heap) >= 2:   # what RSS is made of, after the warm-up: informational
        first, last = heap[0], heap[-1]
        lines.append("  after the warm-up (at {:.0f} s, then {:.0f} s): Python's allocated blocks "
                     "{:,} -> {:,}, objects tracked {:,} -> {:,}, handler threads started "
                     "{:,} -> {:,}{}".format(
                         first["t"], last["t"], first["python_blocks"], last["python_blocks"],
                         first["gc_objects"], last["gc_objects"],
                         first.get("threads_started", 0), last.get("threads_started", 0),
                         ", malloc in use {:,} -> {:,} KiB, held {:,} -> {:,} KiB".format(
                             first["malloc_in_use"] // 1024, last["malloc_in_use"] // 1024,
                             first["malloc_held"] // 1024, last["malloc_held"] // 1024)
                         if "malloc_in_use" in first else ""))
    for request in verdict["lost"][:10]:
        lines.append("  LOST: id {id} ({service}): the client saw {client_saw}, the server "
                     "had it {server}".format(**request))
    for request_id, service, got in verdict["wrong"][:10]:
        lines.append("  WRONG ANSWER: id {} ({}): {}".format(request_id, service, got))
    for name, ok, text in verdict["checks"]:
        lines.append("  {:4} {}: {}".format("ok" if ok else "FAIL", name, text))
    lines.append("verdict: {}".format("PASS" if verdict["passed"] else "FAIL"))
    return "\n".join(lines)


def main(seconds, json_path=None, quiet=False):
    """``bench --soak SECONDS``: 0 when the verdict passes, 1 when it does not."""
    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr,
                                                                  flush=True))
    try:
        document = run_soak(seconds, say)
    except RuntimeError as exc:
        print("fastsockserver bench --soak: {}".format(exc), file=sys.stderr)
        return 1
    print(format_report(document), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(document, f, indent=1)
    return 0 if document["verdict"]["passed"] else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve(sys.argv[2:]))
    print("usage: python -m fastsockserver bench --soak SECONDS", file=sys.stderr)
    sys.exit(2)
