"""Failure paths: running out of descriptors, connections reset before or
after accept, misbehaving clients, threads or processes that cannot be started,
Ctrl-C, a listener made blocking by another process, many connections with random
resets (no descriptor or thread leaks), oversized datagrams.

Tests take ``impl`` (stdlib, py, c) where the stdlib behaves the same and is
cheap to include, ``fast_impl`` (py, c) where fastsockserver differs on
purpose. Every wait is bounded; servers, threads and subprocesses are
cleaned up in ``finally`` blocks.
"""
import errno
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from support import (
    IMPLS,
    TCP_KINDS,
    TSAN_RUN,
    WAIT,
    Harness,
    Serving,
    bounded,
    echo_once,
    fd_count,
    import_line,
    make_server,
    require_c,
    reset_close,
    roundtrip,
    stream_echo,
    subprocess_env,
    wait_for,
)


def impl_name(mod):
    if mod.__name__ == "socketserver":
        return "stdlib"
    return "c" if mod.COMPILED else "py"


def echo_handler(mod):
    class EchoHandler(mod.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)
    return EchoHandler


def quiet_errors(cls):
    """A subclass whose handle_error counts (and keeps the exception type) instead of printing."""
    class Quiet(cls):
        def __init__(self, *args, **kwargs):
            self.errors = []
            self.error_event = threading.Event()
            super().__init__(*args, **kwargs)

        def handle_error(self, request, client_address):
            self.errors.append(sys.exc_info()[0])
            self.error_event.set()
    return Quiet


def read_until_eof(sock, timeout=WAIT):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


# --------------------------------------------------------------- out of descriptors

EMFILE_SCRIPT = r"""
import os, resource, sys, threading
{import_line}

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"hi\n")
        self.rfile.read()          # hold the descriptor until the client closes

class Server(ss.ThreadingTCPServer):
    daemon_threads = True

# accept() calls made in Python (the stdlib's get_request; the compiled core's are in C)
import socket
accepts = [0]
_accept = socket.socket.accept
def counting_accept(self):
    accepts[0] += 1
    return _accept(self)
socket.socket.accept = counting_accept

server = Server(("127.0.0.1", 0), Handler)
t = threading.Thread(target=server.serve_forever, daemon=True)
t.start()
# A first request, so the worker machinery exists before the limit is lowered.
import socket
with socket.create_connection(server.server_address, timeout=5) as c:
    assert c.recv(3) == b"hi\n"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + {spare}, hard))
print(server.server_address[1], flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "cpu":
        r = resource.getrusage(resource.RUSAGE_SELF)
        print(r.ru_utime + r.ru_stime, accepts[0], flush=True)
    else:
        break
"""


@pytest.mark.parametrize("name", IMPLS)
def test_out_of_descriptors_does_not_spin_and_recovers(name, request):
    """EMFILE from accept: fastsockserver backs off (no busy loop) and serves again
    once descriptors are free. The stdlib spins a core meanwhile: asserted as the
    documented difference."""
    require_c(request, name)
    proc = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SCRIPT.format(import_line=import_line(name), spare=4)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=subprocess_env(name))
    held, pending = [], []
    try:
        port = int(proc.stdout.readline())
        address = ("127.0.0.1", port)
        # Connect until one connection is not served: the server is out of fds.
        for _ in range(64):
            c = socket.create_connection(address, timeout=WAIT)
            c.settimeout(1.0)
            try:
                if c.recv(3) == b"hi\n":
                    held.append(c)
                    continue
            except socket.timeout:
                pass
            pending.append(c)
            break
        assert pending, "the server never ran out of descriptors"
        assert held, "no connection was served before the limit"
        for _ in range(3):  # more connections waiting in the backlog
            pending.append(socket.create_connection(address, timeout=WAIT))

        def cpu():
            proc.stdin.write("cpu\n")
            proc.stdin.flush()
            seconds, accepts = proc.stdout.readline().split()
            return float(seconds), int(accepts)

        time.sleep(0.3)
        (before, accepts_before), start = cpu(), time.monotonic()
        time.sleep(1.0)
        after, accepts_after = cpu()
        used = (after - before) / (time.monotonic() - start)
        if name == "stdlib":
            # Documented difference: the stdlib retries accept() at once, forever.
            # Counted in calls, not CPU share: a loaded machine gave it 17 % of a core.
            assert accepts_after - accepts_before > 1000, (
                "stdlib expected to spin while out of descriptors ({} accept() calls in "
                "1 s, {:.2f} s CPU)".format(accepts_after - accepts_before, used))
        else:
            assert used < 0.3, "busy loop while out of descriptors: {:.2f} s CPU per s".format(used)

        for c in held:
            c.close()
        held.clear()
        # The backlog is served once descriptors are free (back-off <= 1 s).
        pending[0].settimeout(WAIT)
        assert pending[0].recv(3) == b"hi\n"
        with socket.create_connection(address, timeout=WAIT) as c:
            assert c.recv(3) == b"hi\n"
        assert proc.poll() is None, proc.stderr.read()
    finally:
        for c in held + pending:
            c.close()
        try:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        except OSError:
            pass
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


# --------------------------------------------------------------- resets

@pytest.mark.parametrize("class_name", ["TCPServer", "ThreadingTCPServer"])
def test_connections_reset_before_and_during_serving(impl, class_name):
    """Connections reset before accept (queued in the backlog) and while serving:
    the server survives and serves the next client."""
    server = quiet_errors(getattr(impl, class_name))(("127.0.0.1", 0), echo_handler(impl))
    serving = None
    try:
        # Reset while still in the backlog (accepted dead); the stdlib's backlog is 5.
        for _ in range(min(100, server.request_queue_size - 1)):
            reset_close(socket.create_connection(server.server_address, timeout=WAIT))
        serving = Serving(server)
        # The stdlib's 5-deep backlog fills with reset connections faster than
        # it accepts them, and each overflow costs a 1 s SYN retransmit: fewer there.
        for i in range(40 if impl_name(impl) == "stdlib" else 300):
            c = socket.create_connection(server.server_address, timeout=WAIT)
            if i % 2:
                c.sendall(b"x\n")
            reset_close(c)
        assert echo_once(server.server_address) == b"ping\n"
        assert serving.thread.is_alive()
        assert set(server.errors) <= {ConnectionResetError, BrokenPipeError}, server.errors
    finally:
        if serving:
            serving.stop()
        else:
            server.server_close()


# --------------------------------------------------------------- misbehaving clients

@pytest.mark.parametrize("name", TCP_KINDS)
@pytest.mark.parametrize("behaviour", ["reset_before_send", "reset_after_send",
                                       "close_without_send", "connect_idle"])
def test_misbehaving_client_does_not_break_server(impl, capfd, name, behaviour):
    if not hasattr(impl, name):
        pytest.skip("no os.fork")
    fds_before = fd_count()
    threads_before = threading.active_count()
    harness = Harness()
    try:
        attrs = {}
        handler = stream_echo(impl)
        if (behaviour == "connect_idle" and name == "TCPServer") or name.startswith("Forking"):
            # a synchronous server is blocked by an idle client until the
            # handler's timeout fires; a forked child holds a copy of the
            # client's socket, so closing it here does not end its request
            handler = type("ShortTimeout", (handler,), {"timeout": 0.3})
        server = make_server(harness, impl, name, "tcp", handler, **attrs)
        harness.serve(server)
        bad = harness.connect(server)
        if behaviour == "reset_before_send":
            reset_close(bad)
        elif behaviour == "reset_after_send":
            bad.sendall(b"partial line without newline")
            reset_close(bad)
        elif behaviour == "close_without_send":
            bad.close()
        # connect_idle: stays connected, sends nothing, until the end
        assert roundtrip(harness, server, "tcp", b"next\n") == b"next\n"
        assert roundtrip(harness, server, "tcp", b"after\n") == b"after\n"
        bad.close()
        harness.stop(server)
        bounded(server.server_close)
    finally:
        harness.close()
    capfd.readouterr()
    assert wait_for(lambda: threading.active_count() <= threads_before)
    assert threading.active_count() == threads_before
    assert fd_count() == fds_before


def test_no_fd_or_thread_leak_after_many_requests(impl):
    fds_before = fd_count()
    threads_before = threading.active_count()
    harness = Harness()
    try:
        server = make_server(harness, impl, "ThreadingTCPServer", "tcp", stream_echo(impl))
        harness.serve(server)
        for i in range(20):
            payload = "n{}\n".format(i).encode()
            assert roundtrip(harness, server, "tcp", payload) == payload
        harness.stop(server)
        bounded(server.server_close)
        assert list(server._threads) == []
    finally:
        harness.close()
    assert threading.active_count() == threads_before
    assert fd_count() == fds_before


# --------------------------------------------------------------- thread / fork failures

@pytest.mark.parametrize("reuse_threads", [True, False])
def test_thread_start_failure_closes_request_and_reports(impl, reuse_threads, monkeypatch):
    """threading.Thread.start raising: the request is closed (client sees EOF),
    handle_error gets the RuntimeError, the server carries on (as the stdlib)."""
    cls = quiet_errors(impl.ThreadingTCPServer)
    cls.reuse_threads = reuse_threads  # no effect on the stdlib
    server = cls(("127.0.0.1", 0), echo_handler(impl))
    serving = Serving(server)  # started before the patch
    try:
        def failing_start(self):
            raise RuntimeError("can't start new thread")
        monkeypatch.setattr(threading.Thread, "start", failing_start)
        with socket.create_connection(server.server_address, timeout=WAIT) as c:
            c.sendall(b"lost\n")
            assert read_until_eof(c) == b""
        assert server.error_event.wait(WAIT)
        assert server.errors == [RuntimeError]
        monkeypatch.undo()
        assert echo_once(server.server_address) == b"ping\n"
        assert server.errors == [RuntimeError]
    finally:
        monkeypatch.undo()
        serving.stop()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_fork_failure_closes_request_and_reports(impl, monkeypatch):
    """os.fork raising EAGAIN: request closed, handle_error called, server keeps serving."""
    class OneLine(impl.StreamRequestHandler):
        # One line, not until EOF: the forked child inherits the test's own
        # client socket, so it would never see EOF. Bounded regardless.
        timeout = WAIT

        def handle(self):
            self.wfile.write(self.rfile.readline())

    server = quiet_errors(impl.ForkingTCPServer)(("127.0.0.1", 0), OneLine)
    serving = Serving(server)
    try:
        def failing_fork():
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        monkeypatch.setattr(os, "fork", failing_fork)
        with socket.create_connection(server.server_address, timeout=WAIT) as c:
            c.sendall(b"lost\n")
            assert read_until_eof(c) == b""
        assert server.error_event.wait(WAIT)
        assert server.errors == [BlockingIOError]  # OSError(EAGAIN)
        monkeypatch.undo()
        assert echo_once(server.server_address) == b"ping\n"
        assert server.errors == [BlockingIOError]
    finally:
        monkeypatch.undo()
        serving.stop()


# --------------------------------------------------------------- Ctrl-C

SIGINT_SCRIPT = r"""
import socket, sys, threading
{import_line}

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

class Server(ss.{cls}):
    ready = False
    def service_actions(self):
        super().service_actions()
        if not self.ready:
            self.ready = True
            print("ready", flush=True)

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer"])
@pytest.mark.parametrize("name", IMPLS)
def test_ctrl_c_stops_serve_forever(name, cls, request):
    """SIGINT while serve_forever() runs in the main thread: KeyboardInterrupt
    ends the process promptly (with an idle handler thread around, too)."""
    require_c(request, name)
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT.format(import_line=import_line(name), cls=cls)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(name),
        # A shell runs background jobs with SIGINT ignored, and Python keeps
        # an ignored SIGINT ignored: give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        port = int(proc.stdout.readline())
        # One request first: for ThreadingTCPServer a handler thread now exists
        # (idle in fastsockserver's pool), so SIGINT may land on it.
        assert echo_once(("127.0.0.1", port)) == b"ping\n"
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=WAIT)
        assert time.monotonic() - start < WAIT
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)


# ----------------------------------------------------------- a listener shared with other processes

SHARED_LISTENER_SCRIPT = """
{import_line}
import fcntl, os, socket, threading, time

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

def echo(address):
    with socket.create_connection(address, timeout=5) as c:
        c.sendall(b"ping\\n")
        return c.recv(16)

server = ss.ThreadingTCPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
assert echo(server.server_address) == b"ping\\n"
# What another process sharing the listener's open file description (a
# pre-forked server) does when its serve_forever() ends: O_NONBLOCK cleared.
fd = server.socket.fileno()
fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
assert echo(server.server_address) == b"ping\\n"
time.sleep(0.2)  # the handler thread is done with its request
started = time.monotonic()
time.sleep(0.1)
print("slept %.2f" % (time.monotonic() - started), flush=True)
assert echo(server.server_address) == b"ping\\n"
server.shutdown()
server.server_close()
print("served", flush=True)
"""


@pytest.mark.parametrize("name", IMPLS)
def test_listener_made_blocking_by_another_process(name, request):
    """The listener's O_NONBLOCK is shared with every process that shares its
    open file description, and one may clear it while this one serves: the
    server must neither freeze (an accept blocking with the GIL held) nor stop
    serving."""
    require_c(request, name)
    proc = subprocess.Popen(
        [sys.executable, "-c", SHARED_LISTENER_SCRIPT.format(import_line=import_line(name))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(name))
    try:
        stdout, stderr = proc.communicate(timeout=WAIT * 2)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=WAIT)
    lines = stdout.split()
    assert proc.returncode == 0, (stdout, stderr)
    assert lines[0] == "slept" and float(lines[1]) < 1.0, stdout
    assert lines[2] == "served", stdout


# --------------------------------------------------------------- many connections

def _client_worker(address, ops, deadline, failures, done):
    for op in ops:
        if time.monotonic() > deadline:
            return
        try:
            c = socket.create_connection(address, timeout=WAIT)
        except OSError as exc:
            failures.append(("connect", repr(exc)))
            continue
        try:
            if op == "normal":
                c.sendall(b"hello\n")
                got = b""
                while not got.endswith(b"\n"):
                    data = c.recv(64)
                    if not data:
                        break
                    got += data
                if got != b"hello\n":
                    failures.append(("normal", got))
                c.close()
            elif op == "reset_before_send":
                reset_close(c)
            elif op == "reset_after_send":
                c.sendall(b"hello\n")
                reset_close(c)
            elif op == "connect_close":
                c.close()
            else:  # never send, then close
                time.sleep(0.0005)
                c.close()
        except OSError as exc:
            failures.append((op, repr(exc)))
            c.close()
        done.append(op)


OPS = ["normal", "reset_before_send", "reset_after_send", "connect_close", "idle_close"]


@pytest.mark.parametrize("class_name", ["ThreadingTCPServer", "TCPServer"])
def test_many_connections_with_random_resets_leak_nothing(impl, class_name):
    """10,000 connections (2,000 on the stdlib) mixing normal requests and resets;
    afterwards no descriptor and no thread is left behind."""
    total = 2000 if impl_name(impl) == "stdlib" else 10000
    n_clients = 4
    rng = random.Random(1234)
    ops = [rng.choice(OPS) for _ in range(total)]
    gc.collect()
    fds_before = fd_count()
    threads_before = threading.active_count()

    server = quiet_errors(getattr(impl, class_name))(("127.0.0.1", 0), echo_handler(impl))
    serving = Serving(server)
    failures, done = [], []
    clients = []
    start = time.monotonic()
    try:
        deadline = start + 60
        for i in range(n_clients):
            t = threading.Thread(target=_client_worker, daemon=True,
                                 args=(server.server_address, ops[i::n_clients],
                                       deadline, failures, done))
            t.start()
            clients.append(t)
        for t in clients:
            t.join(max(0.0, deadline + 2 * WAIT - time.monotonic()))
        assert not any(t.is_alive() for t in clients), "clients did not finish"
        assert echo_once(server.server_address) == b"ping\n"
    finally:
        serving.stop()
    elapsed = time.monotonic() - start
    assert not failures, failures[:10]
    # Every operation ran, unless the 60 s budget stopped the clients early.
    if elapsed < 60:
        assert len(done) == total, (len(done), elapsed)
    if not TSAN_RUN:  # (there every access is checked: ~1,900 in the 60 s)
        assert len(done) >= min(total, 2000), (len(done), elapsed)
    assert set(server.errors) <= {ConnectionResetError, BrokenPipeError}, set(server.errors)
    del server, serving

    def settled():
        gc.collect()
        return fd_count() <= fds_before and threading.active_count() <= threads_before
    assert wait_for(settled, timeout=5.0, interval=0.05), (
        "fds {} -> {}, threads {} -> {}".format(fds_before, fd_count(),
                                                threads_before, threading.active_count()))


# --------------------------------------------------------------- datagrams

@pytest.mark.parametrize("class_name", ["UDPServer", "ThreadingUDPServer"])
def test_datagrams_bigger_than_max_packet_size(impl, class_name):
    """A burst of oversized datagrams: each is truncated to max_packet_size
    (as the stdlib's recvfrom does) and the server keeps serving."""
    sizes = []

    class Handler(impl.DatagramRequestHandler):
        def handle(self):
            data = self.rfile.read()
            sizes.append(len(data))
            self.wfile.write(str(len(data)).encode())

    cls = type("Server", (getattr(impl, class_name),), {"max_packet_size": 1024})
    server = cls(("127.0.0.1", 0), Handler)
    serving = Serving(server)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(WAIT)
    try:
        burst = 200
        for i in range(burst):
            client.sendto(bytes([i % 256]) * 5000, server.server_address)
        replies = []
        client.settimeout(1.0)
        try:
            while len(replies) < burst:
                replies.append(client.recv(64))
        except socket.timeout:
            pass  # loopback may drop some of the burst
        assert replies, "no reply to the burst"
        assert set(replies) == {b"1024"}, set(replies)
        client.settimeout(WAIT)
        got = None
        for _ in range(3):  # the small datagram is not dropped in practice; bounded retries
            client.sendto(b"small", server.server_address)
            try:
                got = client.recv(64)
                while got != b"5":
                    got = client.recv(64)
                break
            except socket.timeout:
                continue
        assert got == b"5"
        assert set(sizes) <= {1024, 5}
    finally:
        client.close()
        serving.stop()


NEGATIVE_PACKET_SCRIPT = r"""
import socket, sys
{import_line}

class Handler(ss.DatagramRequestHandler):
    def handle(self):
        print("handled", len(self.packet), flush=True)

class Server(ss.UDPServer):
    max_packet_size = {size}
    iterations = 0
    def service_actions(self):
        self.iterations += 1
        if self.iterations > 20:
            raise SystemExit("serve_forever kept going")

server = Server(("127.0.0.1", 0), Handler)
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    client.sendto(b"x" * 30000, server.server_address)
try:
    server.serve_forever(poll_interval=0.01)
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
    raise
"""


@pytest.mark.parametrize("size", [0, -1])
@pytest.mark.parametrize("name", IMPLS)
def test_max_packet_size_zero_or_negative_as_stdlib(name, size, request):
    """max_packet_size 0: empty datagrams handled; negative: recvfrom's ValueError
    leaves serve_forever, as in the stdlib (never a read into a too-small buffer).
    Run in a subprocess: a memory error must not take the test run down."""
    require_c(request, name)
    proc = subprocess.run(
        [sys.executable, "-c",
         NEGATIVE_PACKET_SCRIPT.format(import_line=import_line(name), size=size)],
        capture_output=True, text=True, timeout=30, env=subprocess_env(name))
    lines = proc.stdout.split("\n")
    if size == 0:
        assert lines.count("handled 0") == 3, (proc.stdout, proc.stderr)
        assert "raised SystemExit" in lines, (proc.stdout, proc.stderr)
    else:
        assert not any(line.startswith("handled") for line in lines), proc.stdout
        assert "raised ValueError" in lines, (proc.stdout, proc.stderr[-2000:])
        assert "negative buffersize" in proc.stderr, proc.stderr[-2000:]
