"""Helpers shared by the tests, and by bench/conftest.py (which imports this file):
the pure-Python copy of the package, bounded waits, subprocesses, servers, handlers."""
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import fastsockserver
from fastsockserver import _env

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))
import rolling_restart  # noqa: E402  (free_port)

PURE_COPY_NAME = "_fastsockserver_pure"
WAIT = 5.0  # upper bound of any single wait in the tests
POLL = 0.02  # poll_interval for serve_forever in tests
HAS_FORK = hasattr(os, "fork")
HAS_UNIX = hasattr(socket, "AF_UNIX")
HERE = os.path.dirname(os.path.abspath(__file__))  # tests/
# Subprocesses import the fastsockserver this test run imports (installed or
# editable), never the source tree, which may hold no compiled core.
SRC = os.path.dirname(os.path.dirname(fastsockserver.__file__))
# The implementations by name, for tests that run one in a subprocess.
IMPLS = ["stdlib", "py", pytest.param("c", marks=pytest.mark.c_extension)]
SUBPROCESS_TIMEOUT = 60
# This run tests a core built with FASTSOCKSERVER_PORTABLE_CORE (setup.py): the macOS/BSD
# system calls, on Linux (tools/run_tests.py sets the variable for the build and the tests).
PORTABLE_RUN = _env.is_set(os.environ.get("FASTSOCKSERVER_PORTABLE_CORE"))
# CPython's test certificate: Lib/test/certdata/ from 3.12 (and late 3.11), Lib/test/ before.
CERTFILE = next((path for path in (
    os.path.join(os.path.dirname(socket.__file__), "test", "certdata", "keycert.pem"),
    os.path.join(os.path.dirname(socket.__file__), "test", "keycert.pem"))
    if os.path.exists(path)), "keycert.pem (not found)")

needs_fork = pytest.mark.skipif(not HAS_FORK, reason="no os.fork")

# The real components some tests drive: the command, and the Debian package that has it.
# tools/run_tests.py installs them (the full run) and sets REQUIRE_TOOLS_VAR there, so
# a missing one fails that run; anywhere else (plain pytest, the quick run) the tests
# that need it are skipped, with the reason, and listed in pytest's summary.
TOOLS = {"openssl": "openssl", "haproxy": "haproxy",
         "systemd-socket-activate": "systemd"}
REQUIRE_TOOLS_VAR = "FASTSOCKSERVER_REQUIRE_TOOLS"


def require_tool(name):
    """The path of command ``name`` (one of TOOLS); skips the test where it is
    missing, or fails it where REQUIRE_TOOLS_VAR is set."""
    path = shutil.which(name)
    if path:
        return path
    why = "the {} command is needed (Debian package {})".format(name, TOOLS[name])
    if _env.is_set(os.environ.get(REQUIRE_TOOLS_VAR)):
        pytest.fail(why + "; {} is set".format(REQUIRE_TOOLS_VAR), pytrace=False)
    pytest.skip(why)
# The ThreadSanitizer run (tools/run_tests.py --only tsan): the core and the
# free-threaded interpreter are both built with -fsanitize=thread.
TSAN_RUN = os.environ.get("FASTSOCKSERVER_SANITIZE") == "thread"
# The sanitizer runs (tools/run_tests.py --only asan / tsan): ASan holds freed memory
# in quarantine and TSan keeps shadow memory and access history, so a process's RSS
# says nothing about leaks there.
SANITIZED = bool(os.environ.get("SANITIZER_PRELOAD")) or TSAN_RUN
# ThreadSanitizer cannot follow a child fork()ed from a multi-threaded process that
# then runs threads: it ends the child ("starting new threads after multi-threaded
# fork is not supported") or crashes in it. Tests of exactly that are not run there.
fork_then_threads = pytest.mark.skipif(
    TSAN_RUN, reason="ThreadSanitizer does not support threads after a multi-threaded fork")
# A test whose subject is a race the caller makes (a descriptor closed by one thread
# while another serves on it; the stdlib has it too): TSan reports exactly that race.
races_on_purpose = pytest.mark.skipif(
    TSAN_RUN, reason="the test's subject is a race the caller makes, which TSan reports")
# A test whose subject is a time (a latency, a worker that dies within a second): an
# instrumented interpreter runs 5-15x slower, so the time no longer means it.
timing_is_the_subject = pytest.mark.skipif(
    SANITIZED, reason="the test's subject is a time, which a sanitizer's slowdown changes")
# Wall-clock bounds of a whole bench run are multiplied by this under a sanitizer.
WALL_SCALE = 4 if SANITIZED else 1


# --------------------------------------------------------------- the pure-Python copy, waits

def load_pure_copy():
    """fastsockserver imported again, under another name, in pure-Python mode."""
    if PURE_COPY_NAME in sys.modules:
        return sys.modules[PURE_COPY_NAME]
    package_dir = os.path.dirname(fastsockserver.__file__)
    spec = importlib.util.spec_from_file_location(
        PURE_COPY_NAME, os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir])
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get(_env.ENV_VAR)
    os.environ[_env.ENV_VAR] = "1"
    sys.modules[PURE_COPY_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PURE_COPY_NAME]
        raise
    finally:
        if saved is None:
            del os.environ[_env.ENV_VAR]
        else:
            os.environ[_env.ENV_VAR] = saved
    assert not module.COMPILED
    return module


def wait_for(predicate, timeout=WAIT, interval=0.01):
    """Poll predicate() until it is true (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def bounded(fn, *args, timeout=WAIT * 2):
    """Run fn(*args) in a daemon thread; fail (not hang) if it does not return."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError("{} did not return within {} s".format(fn, timeout))
    if "error" in result:
        raise result["error"]
    return result.get("value")


def fd_count():
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def outcome(func):
    """What func() returned, or the exception's type, errno and message."""
    try:
        return ("ok", func())
    except Exception as e:  # noqa: BLE001 - we record every Python exception
        return ("raise", type(e).__name__, getattr(e, "errno", None), str(e))


# --------------------------------------------------------------- subprocesses

def subprocess_env(name):
    """os.environ for a subprocess running implementation ``name`` (stdlib, py, c)."""
    env = dict(os.environ)
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    if name == "py":
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return env


def import_line(name):
    """Source that binds ``ss`` to the implementation in a subprocess."""
    if name == "stdlib":
        return "import socketserver as ss"
    return ("import fastsockserver as ss\n"
            "assert ss.COMPILED == {!r}, ss.COMPILED".format(name == "c"))


def require_c(request, name):
    """Skip the ``c`` run when the compiled core is off or not built."""
    if name == "c":
        if request.config.getoption("--no-c-extensions") or not fastsockserver.COMPILED:
            pytest.skip("compiled core not available")


def run_python(args, cwd=None, timeout=SUBPROCESS_TIMEOUT, env=None):
    """sys.executable with ``args``; output captured as text."""
    return subprocess.run([sys.executable] + list(args), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(env or os.environ))


def run_code(code, **kwargs):
    """run_python() of ``python -c code`` (dedented)."""
    return run_python(["-c", textwrap.dedent(code)], **kwargs)


def code_result(code, pure=False):
    """The JSON that ``code`` prints last, run in pure Python mode or not."""
    env = dict(os.environ)
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    if pure:
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    out = run_code(code, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# Source of an http.server handler for scripts run in a subprocess (after they import
# http.server): GET answers with the type of the connection's socket (SSLSocket over TLS).
SOCKET_TYPE_HTTP_HANDLER = """
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = type(self.connection).__name__.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
"""


# --------------------------------------------------------------- sockets

def ipv6_available():
    """Whether a socket can be bound to the IPv6 loopback address."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 that was free when asked, for another process to bind:
    tools/rolling_restart.py's choice (below the ephemeral range, where the
    source ports of client connections, this run's and any other's, come from;
    a port from bind(0) may be one of those by the time the process binds it)."""
    return rolling_restart.free_port(kind)


def set_linger_zero(sock):
    """SO_LINGER {1, 0}: close() then sends an RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_close(sock):
    """Close with an RST instead of a FIN."""
    set_linger_zero(sock)
    sock.close()


def recv_to_end(sock):
    """All that ``sock`` receives until the peer's end."""
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


# --------------------------------------------------------------- handlers

def stream_echo(mod):
    class StreamEcho(mod.StreamRequestHandler):
        timeout = WAIT

        def handle(self):
            line = self.rfile.readline()
            self.wfile.write(line)
    return StreamEcho


def base_stream_echo(mod):
    class BaseStreamEcho(mod.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(WAIT)
            data = b""
            while not data.endswith(b"\n"):
                chunk = self.request.recv(1024)
                if not chunk:
                    break
                data += chunk
            self.request.sendall(data)
    return BaseStreamEcho


def datagram_echo(mod):
    class DatagramEcho(mod.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())
    return DatagramEcho


def base_datagram_echo(mod):
    class BaseDatagramEcho(mod.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(data, self.client_address)
    return BaseDatagramEcho


def raising_handler(mod, base="StreamRequestHandler"):
    class Raising(getattr(mod, base)):
        def handle(self):
            if base == "StreamRequestHandler":
                line = self.rfile.readline()
            else:
                line = self.rfile.read()
            if line.startswith(b"boom"):
                raise ValueError("handler failed on purpose")
            self.wfile.write(line)
    return Raising


def blocking_handler(mod, started, release, finished):
    class Blocking(mod.BaseRequestHandler):
        def handle(self):
            started.put(threading.current_thread())
            release.wait(WAIT)
            finished.append(threading.current_thread())
    return Blocking


def make_handler(mod, sock, timeout=None, rbufsize=-1, wbufsize=0):
    """impl.StreamRequestHandler.setup() on ``sock``, as the server runs it."""

    class Handler(mod.StreamRequestHandler):
        def handle(self):
            pass

        def finish(self):  # the test closes rfile/wfile itself
            pass

    Handler.timeout = timeout
    Handler.rbufsize = rbufsize
    Handler.wbufsize = wbufsize
    return Handler(sock, ("test", 0), None)


# --------------------------------------------------------------- servers and their clients

class Harness:
    """Creates servers, serving threads, client sockets, socket directories;
    ``close()`` undoes all of it, whatever state the test left."""

    def __init__(self):
        self.servers = []
        self.serving = []
        self.clients = []
        self.dirs = []

    def server(self, cls, address, handler, **kwargs):
        server = cls(address, handler, **kwargs)
        self.servers.append(server)
        return server

    def serve(self, server, poll_interval=POLL):
        t = threading.Thread(target=server.serve_forever, args=(poll_interval,),
                             name="serve_forever", daemon=True)
        t.start()
        self.serving.append((server, t))
        return t

    def stop(self, server):
        """shutdown() the serve_forever thread of ``server`` (bounded)."""
        for entry in list(self.serving):
            s, t = entry
            if s is server:
                if t.is_alive():
                    bounded(s.shutdown)
                t.join(WAIT)
                assert not t.is_alive(), "serve_forever did not return"
                self.serving.remove(entry)

    def client(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        sock = socket.socket(family, type)
        sock.settimeout(WAIT)
        self.clients.append(sock)
        if type == socket.SOCK_DGRAM and family == socket.AF_INET:
            sock.bind(("127.0.0.1", 0))
        elif type == socket.SOCK_DGRAM and family == getattr(socket, "AF_INET6", None):
            sock.bind(("::1", 0))
        return sock

    def connect(self, server, family=socket.AF_INET):
        sock = self.client(family)
        sock.connect(server.server_address)
        return sock

    def tempdir(self):
        # short path: AF_UNIX addresses are limited to ~107 bytes
        path = tempfile.mkdtemp(prefix="fss", dir="/tmp")
        self.dirs.append(path)
        return path

    def unix_address(self, name="srv"):
        return os.path.join(self.tempdir(), name)

    def close(self):
        errors = []
        for sock in self.clients:
            try:
                sock.close()
            except OSError:
                pass
        for server, t in self.serving:
            if t.is_alive():
                # shutdown() would block forever if the loop never started
                server._BaseServer__shutdown_request = True
                t.join(WAIT * 2)
                if t.is_alive():
                    errors.append("serve_forever thread still running")
        self.serving = []
        for server in self.servers:
            try:
                bounded(server.server_close)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)
        assert not errors, errors


class Serving:
    """serve_forever() in a thread; stop() shuts down and closes (bounded)."""

    def __init__(self, server, poll_interval=POLL):
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever,
                                       kwargs={"poll_interval": poll_interval},
                                       name="robustness-loop", daemon=True)
        self.thread.start()

    def stop(self):
        closer = threading.Thread(target=self._stop, daemon=True)
        closer.start()
        closer.join(WAIT * 3)
        assert not closer.is_alive(), "shutdown()/server_close() did not return"

    def _stop(self):
        self.server.shutdown()
        self.thread.join(WAIT)
        self.server.server_close()


# Transports as make_server() and roundtrip() name them; server classes by transport.
STREAM = {"tcp", "tcp6", "unix_stream"}
FAMILY = {"tcp": socket.AF_INET, "udp": socket.AF_INET,
          "tcp6": getattr(socket, "AF_INET6", None), "udp6": getattr(socket, "AF_INET6", None),
          "unix_stream": getattr(socket, "AF_UNIX", None),
          "unix_dgram": getattr(socket, "AF_UNIX", None)}
TCP_KINDS = ["TCPServer", "ThreadingTCPServer", "ForkingTCPServer"]
UDP_KINDS = ["UDPServer", "ThreadingUDPServer", "ForkingUDPServer"]


def server_class(mod, name, transport):
    """mod.<name> for ``transport`` (an IPv6 subclass for tcp6/udp6), or skip the test."""
    if not hasattr(mod, name):
        if name.startswith("Forking") and "Unix" in name:
            pytest.skip("{} only on Python 3.12+".format(name))
        if name.startswith("Forking"):
            pytest.skip("no os.fork")
        pytest.skip("no AF_UNIX")
    cls = getattr(mod, name)
    if transport in ("tcp6", "udp6"):
        if not ipv6_available():
            pytest.skip("IPv6 loopback unavailable")
        cls = type(name + "6", (cls,), {"address_family": socket.AF_INET6})
    return cls


def make_server(harness, mod, name, transport, handler, **attrs):
    """A server of class mod.<name> (subclassed with ``attrs``) on a loopback address."""
    cls = server_class(mod, name, transport)
    if attrs:
        cls = type(cls.__name__, (cls,), attrs)
    if transport in ("tcp", "udp"):
        address = ("127.0.0.1", 0)
    elif transport in ("tcp6", "udp6"):
        address = ("::1", 0)
    else:
        address = harness.unix_address()
    return harness.server(cls, address, handler)


def roundtrip(harness, server, transport, payload=b"ping\n"):
    """Send payload as a client of ``server``; return what came back."""
    family = FAMILY[transport]
    if transport in STREAM:
        sock = harness.client(family)
        sock.connect(server.server_address)
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
        sock.close()
        return data
    sock = harness.client(family, socket.SOCK_DGRAM)
    if transport == "unix_dgram":
        sock.bind(os.path.join(harness.tempdir(), "cli"))
    sock.sendto(payload, server.server_address)
    data = sock.recv(1024)
    sock.close()
    return data


def roundtrip_udp(harness, server, payload):
    """Send one datagram, serve it with handle_request(), return the reply."""
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(payload, server.server_address)
    server.handle_request()
    return client.recv(100)


def echo_once(address, payload=b"ping\n", timeout=WAIT):
    """Connect, send ``payload``, return the reply up to its first newline."""
    with socket.create_connection(address, timeout=timeout) as c:
        c.sendall(payload)
        got = b""
        while not got.endswith(b"\n"):
            data = c.recv(4096)
            if not data:
                break
            got += data
        return got
