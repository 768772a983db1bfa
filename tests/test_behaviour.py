"""Behaviour of every server class and hook, on stdlib / pure / compiled.

Each test takes ``impl`` (the module under test) and builds its servers from
it, so one assertion runs against ``socketserver`` and both fastsockserver
modes. Where the exact sequence of hook calls matters, the scenario is run
on the stdlib too and the two recordings are compared.

Every wait is bounded: sockets time out after at most 5 s, threads are joined
with a timeout, and the ``harness`` fixture shuts down and closes every server
even when an assertion fails.
"""
import array
import errno
import io
import os
import queue
import select
import shutil
import socket
import socketserver as stdlib
import struct
import sys
import tempfile
import threading
import time

import pytest
from support import wait_for

WAIT = 5.0          # upper bound of any single wait
POLL = 0.02         # poll_interval for serve_forever in tests
HAS_FORK = hasattr(os, "fork")
HAS_UNIX = hasattr(socket, "AF_UNIX")


# --------------------------------------------------------------- helpers

def fd_count():
    return len(os.listdir("/proc/self/fd"))


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




def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


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


@pytest.fixture
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.close()


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


HANDLERS = {
    "stream": stream_echo, "base_stream": base_stream_echo,
    "datagram": datagram_echo, "base_datagram": base_datagram_echo,
}


# --------------------------------------------------------------- echo over every class

# (class name, transport)
SERVER_CLASSES = [
    ("TCPServer", "tcp"), ("ThreadingTCPServer", "tcp"), ("ForkingTCPServer", "tcp"),
    ("UDPServer", "udp"), ("ThreadingUDPServer", "udp"), ("ForkingUDPServer", "udp"),
    ("UnixStreamServer", "unix_stream"), ("ThreadingUnixStreamServer", "unix_stream"),
    ("ForkingUnixStreamServer", "unix_stream"),
    ("UnixDatagramServer", "unix_dgram"), ("ThreadingUnixDatagramServer", "unix_dgram"),
    ("ForkingUnixDatagramServer", "unix_dgram"),
    ("TCPServer", "tcp6"), ("ThreadingTCPServer", "tcp6"),
    ("UDPServer", "udp6"), ("ThreadingUDPServer", "udp6"),
]
STREAM = {"tcp", "tcp6", "unix_stream"}
FAMILY = {"tcp": socket.AF_INET, "udp": socket.AF_INET,
          "tcp6": getattr(socket, "AF_INET6", None), "udp6": getattr(socket, "AF_INET6", None),
          "unix_stream": getattr(socket, "AF_UNIX", None),
          "unix_dgram": getattr(socket, "AF_UNIX", None)}


def server_class(mod, name, transport):
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


@pytest.mark.parametrize("mode", ["serve_forever", "handle_request"])
@pytest.mark.parametrize("handler_kind", ["typed", "base"])
@pytest.mark.parametrize("name,transport", SERVER_CLASSES,
                         ids=["{}-{}".format(n, t) for n, t in SERVER_CLASSES])
def test_echo(impl, harness, name, transport, handler_kind, mode):
    if transport in STREAM:
        handler = (stream_echo if handler_kind == "typed" else base_stream_echo)(impl)
    else:
        handler = (datagram_echo if handler_kind == "typed" else base_datagram_echo)(impl)
    server = make_server(harness, impl, name, transport, handler)
    payload = "echo {} {}\n".format(name, transport).encode()
    if mode == "serve_forever":
        harness.serve(server)
        assert roundtrip(harness, server, transport, payload) == payload
        assert roundtrip(harness, server, transport, payload) == payload
        harness.stop(server)
    else:
        result = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "reply", roundtrip(harness, server, transport, payload)), daemon=True)
        t.start()
        assert server.handle_request() is None
        t.join(WAIT)
        assert result.get("reply") == payload
    if transport.startswith("tcp") or transport.startswith("udp"):
        assert server.socket.family == FAMILY[transport]


# --------------------------------------------------------------- handle_error

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


TCP_KINDS = ["TCPServer", "ThreadingTCPServer", "ForkingTCPServer"]
UDP_KINDS = ["UDPServer", "ThreadingUDPServer", "ForkingUDPServer"]


@pytest.mark.parametrize("name", TCP_KINDS + UDP_KINDS)
def test_handler_error_calls_handle_error_with_request_and_address(impl, harness, name):
    transport = "tcp" if "TCP" in name else "udp"
    base = "StreamRequestHandler" if transport == "tcp" else "DatagramRequestHandler"
    calls = []

    attrs = {}
    if name.startswith("Forking"):
        # the child's calls are not visible here: report them through a pipe
        r, w = os.pipe()

        def handle_error(self, request, client_address):
            data = "{}|{}".format(type(request).__name__, client_address).encode()
            os.write(w, data)
            if transport == "udp":
                request[1].sendto(b"error\n", client_address)
    else:
        def handle_error(self, request, client_address):
            calls.append((request, client_address, sys.exc_info()[0]))
            if transport == "udp":
                request[1].sendto(b"error\n", client_address)
    attrs["handle_error"] = handle_error
    server = make_server(harness, impl, name, transport, raising_handler(impl, base), **attrs)
    harness.serve(server)
    try:
        if transport == "tcp":
            # the connection is closed (shutdown_request) after the error
            assert roundtrip(harness, server, transport, b"boom\n") == b""
        else:
            # finish() still runs: it sends the (empty) reply, then handle_error
            # sends its own datagram
            sock = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"boom\n", server.server_address)
            assert sock.recv(100) == b""
            assert sock.recv(100) == b"error\n"
        # the server keeps serving afterwards
        assert roundtrip(harness, server, transport, b"fine\n") == b"fine\n"
        if name.startswith("Forking"):
            os.close(w)
            w = None
            reported = os.read(r, 1024).decode()
            if transport == "tcp":
                assert reported.startswith("socket|('127.0.0.1', ")
            else:
                assert reported.startswith("tuple|('127.0.0.1', ")
        else:
            assert len(calls) == 1
            request, client_address, exc_type = calls[0]
            assert exc_type is ValueError
            assert client_address[0] == "127.0.0.1"
            if transport == "tcp":
                assert isinstance(request, socket.socket)
            else:
                assert request[0] == b"boom\n" and request[1] is server.socket
    finally:
        if name.startswith("Forking"):
            os.close(r)
            if w is not None:
                os.close(w)


@pytest.mark.parametrize("name", TCP_KINDS)
def test_default_handle_error_output(impl, harness, capfd, name):
    server = make_server(harness, impl, name, "tcp", raising_handler(impl))
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"boom\n")
    assert client.recv(100) == b""
    client_port = client.getsockname()[1]
    assert roundtrip(harness, server, "tcp", b"again\n") == b"again\n"
    harness.stop(server)
    bounded(server.server_close)  # joins threads / waits for children
    err = capfd.readouterr().err
    assert "-" * 40 + "\n" in err
    assert ("Exception occurred during processing of request from ('127.0.0.1', {})"
            .format(client_port)) in err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: handler failed on purpose" in err
    assert err.count("Exception occurred during processing") == 1


def test_handle_error_udp_default_output(impl, harness, capfd):
    server = make_server(harness, impl, "UDPServer", "udp",
                         raising_handler(impl, "DatagramRequestHandler"))
    sock = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"boom\n", server.server_address)
    server.handle_request()
    err = capfd.readouterr().err
    assert ("Exception occurred during processing of request from {!r}"
            .format(sock.getsockname())) in err
    assert "ValueError: handler failed on purpose" in err


# --------------------------------------------------------------- misbehaving clients

def reset_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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


# --------------------------------------------------------------- verify_request

@pytest.mark.parametrize("name", ["TCPServer", "ThreadingTCPServer", "UDPServer"])
def test_verify_request_false_shuts_request_down_without_handler(impl, harness, name):
    transport = "tcp" if "TCP" in name else "udp"
    calls = []

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            calls.append("handle")

    class Server(server_class(impl, name, transport)):
        def verify_request(self, request, client_address):
            calls.append(("verify", client_address[0]))
            return False

        def shutdown_request(self, request):
            calls.append(("shutdown_request", type(request).__name__))
            super().shutdown_request(request)

    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    if transport == "tcp":
        client = harness.connect(server)
        server.handle_request()
        assert client.recv(10) == b""  # closed by the server, nothing sent
        expected_type = "socket"
    else:
        client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
        client.sendto(b"x", server.server_address)
        server.handle_request()
        expected_type = "tuple"
    server.server_close()
    assert calls == [("verify", "127.0.0.1"), ("shutdown_request", expected_type)]


def test_verify_request_assigned_on_instance_is_honoured(impl, harness):
    handled = []

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            handled.append(1)

    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), Handler)
    seen = []
    server.verify_request = lambda request, address: seen.append(address) or False
    harness.serve(server)
    client = harness.connect(server)
    assert client.recv(10) == b""
    harness.stop(server)
    assert len(seen) == 1 and handled == []


def test_instance_hooks_honoured_by_serve_forever(impl, harness):
    """Hooks set on the instance, not the class, are used by the serving loop."""
    actions = []
    handled = []
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    server.service_actions = lambda: actions.append(1)
    original = server.process_request

    def process_request(request, client_address):
        handled.append(client_address)
        original(request, client_address)
    server.process_request = process_request
    harness.serve(server)
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    assert wait_for(lambda: len(actions) >= 2)
    harness.stop(server)
    assert len(handled) == 1


def test_handle_request_noblock_on_instance_is_used(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    calls = []
    original = server._handle_request_noblock
    server._handle_request_noblock = lambda: (calls.append(1), original())[1]
    harness.serve(server)
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    harness.stop(server)
    client = harness.connect(server)
    client.sendall(b"x\n")
    server.handle_request()
    assert calls == [1, 1]


# --------------------------------------------------------------- timeouts

class TimeoutRecorder:
    def __init__(self):
        self.calls = 0


def timeout_server(impl, harness, cls_name="TCPServer"):
    rec = TimeoutRecorder()

    class Server(getattr(impl, cls_name)):
        def handle_timeout(self):
            rec.calls += 1
            return "timed out"
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    return server, rec


@pytest.mark.parametrize("server_timeout,socket_timeout", [
    (0.2, None), (None, 0.2), (0.2, 30.0), (30.0, 0.2), (0, None)])
def test_handle_request_timeout_calls_handle_timeout(impl, harness, server_timeout,
                                                       socket_timeout):
    server, rec = timeout_server(impl, harness)
    server.timeout = server_timeout
    if socket_timeout is not None:
        server.socket.settimeout(socket_timeout)
    expected = min(t for t in (server_timeout, socket_timeout) if t is not None)
    start = time.monotonic()
    result = bounded(server.handle_request)
    elapsed = time.monotonic() - start
    assert result == "timed out"
    assert rec.calls == 1
    assert elapsed >= expected * 0.9
    assert elapsed < WAIT


def test_handle_request_negative_timeout(impl, harness):
    server, rec = timeout_server(impl, harness)
    server.timeout = -1
    assert bounded(server.handle_request) == "timed out"
    assert rec.calls == 1


def test_handle_request_with_timeout_serves_a_waiting_client(impl, harness):
    server, rec = timeout_server(impl, harness)
    server.timeout = WAIT
    client = harness.connect(server)
    client.sendall(b"hi\n")
    assert bounded(server.handle_request) is None
    assert client.recv(10) == b"hi\n"
    assert rec.calls == 0


def test_handle_request_uses_class_timeout(impl, harness):
    rec = TimeoutRecorder()

    class Server(impl.UDPServer):
        timeout = 0.1

        def handle_timeout(self):
            rec.calls += 1
    server = harness.server(Server, ("127.0.0.1", 0), datagram_echo(impl))
    assert bounded(server.handle_request) is None
    assert rec.calls == 1


# The wait of handle_request() / serve_forever() follows selectors.PollSelector:
# a timeout too large for poll(), infinite or NaN is an error raised before
# waiting, even when a client is already waiting.

def _bad_timeout_outcome(mod, value):
    harness = Harness()
    try:
        server = harness.server(mod.TCPServer, ("127.0.0.1", 0), stream_echo(mod))
        server.timeout = value
        client = harness.connect(server)
        client.sendall(b"hi\n")
        try:
            bounded(server.handle_request)
        except Exception as exc:
            return type(exc)
        return None
    finally:
        harness.close()


@pytest.mark.parametrize("value", [1e10, float("inf"), float("nan")],
                         ids=["huge", "inf", "nan"])
def test_handle_request_unrepresentable_timeout_like_stdlib(impl, request, value):
    expected = _bad_timeout_outcome(stdlib, value)
    assert expected is not None  # the stdlib refuses these
    assert _bad_timeout_outcome(impl, value) is expected


def test_serve_forever_huge_poll_interval_like_stdlib(impl, request, harness):
    def outcome(mod):
        h = Harness()
        try:
            server = h.server(mod.TCPServer, ("127.0.0.1", 0), stream_echo(mod))
            client = h.connect(server)
            client.sendall(b"hi\n")
            # serve_forever raises at once, or serves the waiting client
            t = threading.Thread(target=lambda: outcome_box.append(
                _call(server.serve_forever, 1e10)), daemon=True)
            outcome_box = []
            t.start()
            ok = wait_for(lambda: outcome_box or client_has_reply(client), timeout=WAIT)
            if not outcome_box:
                server._BaseServer__shutdown_request = True
                # the loop now waits up to INT_MAX ms: wake it with a client
                socket.create_connection(server.server_address, timeout=WAIT).close()
                t.join(WAIT)
            return outcome_box[0] if outcome_box else "served"
        finally:
            h.close()

    def client_has_reply(client):
        try:
            client.settimeout(0.05)
            return client.recv(10, socket.MSG_PEEK) != b""
        except OSError:
            return False

    expected = outcome(stdlib)
    assert expected is OverflowError
    assert outcome(impl) is expected


def _call(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return type(exc)
    return None


def test_handle_request_after_server_close_raises_valueerror(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    server.server_close()
    with pytest.raises(ValueError):
        server.handle_request()
    with pytest.raises(ValueError):
        server.serve_forever(POLL)


def test_fileno_returning_garbage_raises_valueerror(impl, harness):
    class Server(impl.TCPServer):
        def fileno(self):
            return "not a descriptor"
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    with pytest.raises(ValueError):
        server.handle_request()
    with pytest.raises(ValueError):
        server.serve_forever(POLL)


# --------------------------------------------------------------- shutdown / serve_forever

def test_shutdown_from_another_thread_and_serve_again(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    t = harness.serve(server, poll_interval=0.5)
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    bounded(server.shutdown)
    t.join(WAIT)
    assert not t.is_alive()
    assert server._BaseServer__is_shut_down.is_set()
    assert server._BaseServer__shutdown_request is False
    # a second serve_forever after shutdown works
    harness.serving = [(s, th) for s, th in harness.serving if th is not t]
    t2 = harness.serve(server, poll_interval=0.5)
    assert roundtrip(harness, server, "tcp", b"second\n") == b"second\n"
    harness.stop(server)
    assert not t2.is_alive()


def test_shutdown_before_serve_forever_starts(impl, harness):
    """shutdown() blocks until a serve_forever() runs; that one returns at once."""
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (server.shutdown(), done.set()), daemon=True)
    stopper.start()
    assert not done.wait(0.2)
    assert wait_for(lambda: server._BaseServer__shutdown_request is True)
    bounded(server.serve_forever, 60)  # returns without waiting 60 s
    assert done.wait(WAIT)
    stopper.join(WAIT)
    assert server._BaseServer__shutdown_request is False


def test_serve_forever_calls_service_actions_while_idle(impl, harness):
    calls = []

    class Server(impl.TCPServer):
        def service_actions(self):
            calls.append(threading.current_thread().name)

    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    harness.serve(server, poll_interval=0.01)
    assert wait_for(lambda: len(calls) >= 5)
    harness.stop(server)
    assert set(calls) == {"serve_forever"}
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n  # not called after serve_forever returned


def test_service_actions_exception_propagates_from_serve_forever(impl, harness):
    class Server(impl.TCPServer):
        def service_actions(self):
            raise RuntimeError("from service_actions")
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    with pytest.raises(RuntimeError, match="from service_actions"):
        bounded(server.serve_forever, 0.01)
    # the loop state was reset: shutdown() does not block
    assert server._BaseServer__is_shut_down.is_set()
    bounded(server.shutdown)


def test_serve_forever_zero_poll_interval(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    harness.serve(server, poll_interval=0)
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    harness.stop(server)


def test_serve_forever_default_poll_interval_signature(impl):
    import inspect
    sig = inspect.signature(impl.BaseServer.serve_forever)
    assert sig.parameters["poll_interval"].default == 0.5


# --------------------------------------------------------------- ThreadingMixIn

def blocking_handler(mod, started, release, finished):
    class Blocking(mod.BaseRequestHandler):
        def handle(self):
            started.put(threading.current_thread())
            release.wait(WAIT)
            finished.append(threading.current_thread())
    return Blocking


@pytest.fixture
def blocking():
    import queue
    ns = type("NS", (), {})()
    ns.started = queue.Queue()
    ns.release = threading.Event()
    ns.finished = []
    try:
        yield ns
    finally:
        ns.release.set()


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

needs_fork = pytest.mark.skipif(not HAS_FORK, reason="no os.fork")


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


# --------------------------------------------------------------- UDP specifics

@pytest.mark.parametrize("name", ["UDPServer", "ThreadingUDPServer"])
def test_udp_request_is_data_and_socket(impl, harness, name):
    seen = []

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            seen.append((self.request, self.client_address, self.server))

    server = harness.server(getattr(impl, name), ("127.0.0.1", 0), Handler)
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"payload", server.server_address)
    server.handle_request()
    server.server_close() if name == "UDPServer" else bounded(server.server_close)
    assert len(seen) == 1
    request, address, srv = seen[0]
    assert isinstance(request, tuple) and len(request) == 2
    assert request[0] == b"payload" and request[1] is server.socket
    assert address == client.getsockname() and srv is server


def test_udp_max_packet_size_truncates(impl, harness):
    seen = []

    class Handler(impl.DatagramRequestHandler):
        def handle(self):
            seen.append(self.packet)
            self.wfile.write(self.rfile.read())

    class Server(impl.UDPServer):
        max_packet_size = 4

    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"abcdefgh", server.server_address)
    server.handle_request()
    assert client.recv(100) == b"abcd"
    assert seen == [b"abcd"]
    # the rest of the truncated datagram is gone, not served as a new request
    client.sendto(b"12", server.server_address)
    server.handle_request()
    assert seen == [b"abcd", b"12"]


def test_udp_default_max_packet_size(impl, harness):
    server = harness.server(impl.UDPServer, ("127.0.0.1", 0), datagram_echo(impl))
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    big = bytes(range(256)) * 40  # 10240 bytes
    client.sendto(big, server.server_address)
    server.handle_request()
    assert client.recv(65536) == big[:8192]


def test_udp_close_request_does_not_close_server_socket(impl, harness):
    server = harness.server(impl.UDPServer, ("127.0.0.1", 0), datagram_echo(impl))
    for i in range(3):
        assert roundtrip_udp(harness, server, b"n%d" % i) == b"n%d" % i
    assert server.socket.fileno() >= 0


def roundtrip_udp(harness, server, payload):
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(payload, server.server_address)
    server.handle_request()
    return client.recv(100)


# --------------------------------------------------------------- construction / closing

def test_context_manager_closes_socket(impl):
    fds = fd_count()
    with impl.TCPServer(("127.0.0.1", 0), stream_echo(impl)) as server:
        assert server.socket.fileno() >= 0
        assert fd_count() == fds + 1
    assert server.socket.fileno() == -1
    assert server.socket._closed
    assert fd_count() == fds


def test_context_manager_closes_on_exception(impl):
    with pytest.raises(KeyError):
        with impl.UDPServer(("127.0.0.1", 0), datagram_echo(impl)) as server:
            raise KeyError
    assert server.socket.fileno() == -1


def test_context_manager_returns_self_and_does_not_swallow(impl):
    server = impl.TCPServer(("127.0.0.1", 0), stream_echo(impl))
    try:
        assert server.__enter__() is server
        assert server.__exit__(ValueError, ValueError(), None) is None
        assert server.socket.fileno() == -1
    finally:
        server.server_close()


def _constructor_error(mod, address, cls_name="TCPServer"):
    closed = []

    class Server(getattr(mod, cls_name)):
        def server_close(self):
            closed.append(True)
            super().server_close()
    fds = fd_count()
    with pytest.raises(Exception) as info:
        Server(address, mod.BaseRequestHandler)
    assert closed == [True], "server_close was not called on constructor failure"
    assert fd_count() == fds, "the socket was left open"
    exc = info.value
    return type(exc), getattr(exc, "errno", None)


@pytest.mark.parametrize("address", [
    ("256.1.2.3", 0), ("127.0.0.1", -1), ("127.0.0.1", 70000), "not a tuple",
    ("127.0.0.1",)], ids=["bad_host", "negative_port", "port_too_big", "string", "short_tuple"])
def test_constructor_failure_closes_socket_same_exception(impl, address):
    expected = _constructor_error(stdlib, address)
    assert _constructor_error(impl, address) == expected


@pytest.mark.parametrize("cls_name", ["TCPServer", "UDPServer"])
def test_constructor_port_in_use(impl, cls_name):
    kind = socket.SOCK_STREAM if cls_name == "TCPServer" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        address = taken.getsockname()
        expected = _constructor_error(stdlib, address, cls_name)
        assert expected == (OSError, errno.EADDRINUSE)
        assert _constructor_error(impl, address, cls_name) == expected


def test_constructor_activate_failure_closes_socket(impl):
    class Server(impl.TCPServer):
        def server_activate(self):
            raise KeyboardInterrupt  # BaseException: still closed, re-raised
    fds = fd_count()
    with pytest.raises(KeyboardInterrupt):
        Server(("127.0.0.1", 0), impl.BaseRequestHandler)
    assert fd_count() == fds


def test_bind_and_activate_false(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl),
                            bind_and_activate=False)
    assert server.server_address == ("127.0.0.1", 0)
    assert server.socket.getsockname() == ("0.0.0.0", 0)
    server.allow_reuse_address = True
    server.server_bind()
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert server.server_address[1] != 0
    server.server_activate()
    client = harness.connect(server)
    client.sendall(b"manual\n")
    server.handle_request()
    assert client.recv(100) == b"manual\n"


def test_reuse_address_default_off(impl, harness):
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_on_tcp(impl, harness):
    if not hasattr(impl.TCPServer, "allow_reuse_port"):
        pytest.skip("allow_reuse_port is Python 3.11+")

    class Server(impl.TCPServer):
        allow_reuse_port = True
    server = harness.server(Server, ("127.0.0.1", 0), stream_echo(impl))
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
    # a second server on the same port
    other = harness.server(Server, server.server_address, stream_echo(impl))
    assert other.server_address == server.server_address


@pytest.mark.skipif(not (HAS_UNIX and hasattr(socket, "SO_REUSEPORT")),
                    reason="needs AF_UNIX and SO_REUSEPORT")
def test_reuse_port_on_unix_socket(fast_impl, harness):
    """Deliberate difference: fastsockserver sets SO_REUSEPORT on INET sockets
    only (the fix CPython made in 2025), so allow_reuse_port on a Unix server
    does not fail on kernels that reject SO_REUSEPORT for AF_UNIX."""
    if not hasattr(fast_impl.TCPServer, "allow_reuse_port"):
        pytest.skip("allow_reuse_port is Python 3.11+")

    class Server(fast_impl.UnixStreamServer):
        allow_reuse_port = True
    server = harness.server(Server, harness.unix_address(), stream_echo(fast_impl))
    assert server.socket.family == socket.AF_UNIX


def test_server_close_twice(impl):
    server = impl.ThreadingTCPServer(("127.0.0.1", 0), stream_echo(impl))
    server.server_close()
    server.server_close()
    assert server.socket.fileno() == -1


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_unix_server_address_is_path(impl, harness):
    path = harness.unix_address()
    server = harness.server(impl.UnixStreamServer, path, stream_echo(impl))
    assert server.server_address == path
    assert os.path.exists(path)
    server.server_close()
    assert os.path.exists(path)  # neither implementation unlinks the path


# --------------------------------------------------------------- StreamRequestHandler

def attribute_handler(mod, seen, **attrs):
    class Handler(mod.StreamRequestHandler):
        def handle(self):
            seen["handler"] = self
            seen["timeout"] = self.connection.gettimeout()
            seen["nodelay"] = self.connection.getsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY)
            seen["wfile_type"] = type(self.wfile)
            seen["write"] = self.wfile.write(b"hello")
            seen["write_array"] = self.wfile.write(array.array("i", [1, 2, 3]))
            seen["connection_is_request"] = self.connection is self.request
            seen["rfile_closed_during"] = self.rfile.closed
            seen["line"] = self.rfile.readline()
    for key, value in attrs.items():
        setattr(Handler, key, value)
    return Handler


def run_attribute_handler(impl, harness, **attrs):
    seen = {}
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0),
                            attribute_handler(impl, seen, **attrs))
    client = harness.connect(server)
    client.sendall(b"line\n")
    server.handle_request()
    data = b""
    while True:
        chunk = client.recv(100)
        if not chunk:
            break
        data += chunk
    seen["received"] = data
    return seen


def test_stream_handler_defaults(impl, harness):
    assert impl.StreamRequestHandler.rbufsize == -1
    assert impl.StreamRequestHandler.wbufsize == 0
    assert impl.StreamRequestHandler.timeout is None
    # disable_nagle_algorithm: see test_api_parity (fastsockserver's default differs)
    seen = run_attribute_handler(impl, harness, disable_nagle_algorithm=False)
    assert seen["timeout"] is None
    assert seen["nodelay"] == 0
    assert seen["wfile_type"].__name__ == "_SocketWriter"
    assert issubclass(seen["wfile_type"], io.BufferedIOBase)
    assert seen["write"] == 5
    assert seen["write_array"] == 12  # bytes, not items
    assert seen["connection_is_request"] is True
    assert seen["rfile_closed_during"] is False
    assert seen["line"] == b"line\n"
    assert seen["received"] == b"hello" + array.array("i", [1, 2, 3]).tobytes()
    handler = seen["handler"]
    assert handler.rfile.closed and handler.wfile.closed
    assert handler.wfile.writable()
    # the writer's fileno() is the connection's (closed by now: -1)
    assert handler.wfile.fileno() == handler.connection.fileno()


def test_stream_handler_timeout(impl, harness):
    seen = run_attribute_handler(impl, harness, timeout=2.5)
    assert seen["timeout"] == 2.5


def test_stream_handler_timeout_expires(impl, harness, capfd):
    class Handler(impl.StreamRequestHandler):
        timeout = 0.2

        def handle(self):
            self.rfile.readline()

    errors = []

    class Server(impl.TCPServer):
        def handle_error(self, request, client_address):
            errors.append(sys.exc_info()[0])
    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    harness.connect(server)  # never sends
    bounded(server.handle_request)
    assert errors == [socket.timeout]


def test_stream_handler_disable_nagle(impl, harness):
    seen = run_attribute_handler(impl, harness, disable_nagle_algorithm=True)
    assert seen["nodelay"] != 0


def test_stream_handler_buffered_writer(impl, harness):
    seen = run_attribute_handler(impl, harness, wbufsize=1024)
    assert issubclass(seen["wfile_type"], io.BufferedWriter)
    assert seen["write"] == 5
    # flushed by finish()
    assert seen["received"] == b"hello" + array.array("i", [1, 2, 3]).tobytes()
    assert seen["handler"].wfile.closed and seen["handler"].rfile.closed


def test_stream_handler_unbuffered_reader(impl, harness):
    seen = run_attribute_handler(impl, harness, rbufsize=0)
    assert seen["line"] == b"line\n"


def _flush_error_outcome(mod, wbufsize):
    seen = {}

    class Handler(mod.StreamRequestHandler):
        def handle(self):
            seen["handler"] = self
            self.wfile.write(b"x" * 100)
            self.connection.shutdown(socket.SHUT_WR)  # the final flush fails

    Handler.wbufsize = wbufsize
    errors = []

    class Server(mod.TCPServer):
        def handle_error(self, request, client_address):
            errors.append(sys.exc_info()[0])
    harness = Harness()
    try:
        server = harness.server(Server, ("127.0.0.1", 0), Handler)
        client = harness.connect(server)
        server.handle_request()
        data = client.recv(1000)
    finally:
        harness.close()
    return (errors, seen["handler"].wfile.closed, seen["handler"].rfile.closed, data)


@pytest.mark.parametrize("wbufsize", [1 << 16, 0])
def test_stream_handler_finish_with_failing_flush(impl, wbufsize):
    """finish() swallows the flush() error, but close() of a buffered writer
    flushes again and raises: the stdlib reports it through handle_error."""
    expected = _flush_error_outcome(stdlib, wbufsize)
    if wbufsize:
        assert expected[0] == [BrokenPipeError]
    else:
        # unbuffered: write() itself sends; nothing left for finish() to fail on
        assert expected == ([], True, True, b"x" * 100)
    assert _flush_error_outcome(impl, wbufsize) == expected


def test_handler_setup_handle_finish_order(impl, harness):
    order = []

    class Handler(impl.BaseRequestHandler):
        def setup(self):
            order.append(("setup", self.client_address[0], self.server is server))

        def handle(self):
            order.append("handle")
            raise ValueError

        def finish(self):
            order.append("finish")

    class Server(impl.TCPServer):
        def handle_error(self, request, client_address):
            order.append(("handle_error", sys.exc_info()[0]))
    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    harness.connect(server)
    server.handle_request()
    assert order == [("setup", "127.0.0.1", True), "handle", "finish",
                     ("handle_error", ValueError)]


def test_datagram_handler(impl, harness):
    seen = {}

    class Handler(impl.DatagramRequestHandler):
        def handle(self):
            seen["packet"] = self.packet
            seen["socket"] = self.socket
            seen["rfile"] = type(self.rfile)
            self.wfile.write(b"a")
            self.wfile.write(b"b")

    server = harness.server(impl.UDPServer, ("127.0.0.1", 0), Handler)
    assert roundtrip_udp(harness, server, b"in") == b"ab"
    assert seen == {"packet": b"in", "socket": server.socket, "rfile": io.BytesIO}


# --------------------------------------------------------------- hook sequences

HOOKS = ["get_request", "verify_request", "process_request", "finish_request",
         "shutdown_request", "close_request", "handle_error", "service_actions",
         "handle_timeout", "fileno", "server_activate", "server_bind",
         "process_request_thread", "collect_children", "server_close"]


class Stop(BaseException):
    pass


def recording_server(mod, cls_name, log, overrides=None):
    """A subclass of mod.<cls_name> whose every hook logs (thread, name)."""
    base = getattr(mod, cls_name)
    overrides = overrides or {}
    main = threading.get_ident()
    ns = {}

    def make(name):
        def hook(self, *args, **kwargs):
            who = "main" if threading.get_ident() == main else "worker"
            log.append((who, name))
            if name in overrides:
                return overrides[name](self, *args, **kwargs)
            return getattr(super(cls, self), name)(*args, **kwargs)
        hook.__name__ = name
        return hook

    for name in HOOKS:
        if hasattr(base, name):
            ns[name] = make(name)
    cls = type("Recording" + cls_name, (base,), ns)
    return cls


def recording_handler(mod, log, action):
    class Handler(mod.StreamRequestHandler):
        timeout = WAIT

        def handle(self):
            who = "main" if threading.current_thread() is threading.main_thread() else "worker"
            log.append((who, "handle"))
            line = self.rfile.readline()
            if action == "raise":
                raise ValueError("boom")
            if action == "stop":
                raise Stop
            self.wfile.write(line)

    class DHandler(mod.DatagramRequestHandler):
        def handle(self):
            log.append(("worker" if threading.current_thread() is not threading.main_thread()
                        else "main", "handle"))
            if action == "raise":
                raise ValueError("boom")
            self.wfile.write(self.rfile.read())
    return Handler, DHandler


def run_scenario(mod, scenario):
    """Run ``scenario`` on ``mod``; return the normalised hook log."""
    log = []
    cls_name = scenario.get("cls", "TCPServer")
    udp = "UDP" in cls_name
    overrides = {}
    action = scenario.get("action", "echo")
    if scenario.get("verify") is False:
        overrides["verify_request"] = lambda self, r, a: False
    if scenario.get("get_request_fails"):
        def get_request(self):
            super(type(self), self).get_request()[0].close()
            raise OSError("get_request failed")
        overrides["get_request"] = get_request
    if scenario.get("process_fails"):
        def process_request(self, request, address):
            raise ValueError("process failed")
        overrides["process_request"] = process_request
    if scenario.get("handle_error_quiet", True):
        overrides["handle_error"] = lambda self, request, address: None
    cls = recording_server(mod, cls_name, log, overrides)
    if cls_name.startswith("Forking"):
        cls.timeout = scenario.get("timeout", 300)
    elif "timeout" in scenario:
        cls.timeout = scenario["timeout"]
    handler, dhandler = recording_handler(mod, log, action)
    server = cls(("127.0.0.1", 0), dhandler if udp else handler)
    clients = []
    try:
        for _ in range(scenario.get("clients", 1)):
            if udp:
                c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                c.settimeout(WAIT)
                c.sendto(b"dgram", server.server_address)
            else:
                c = socket.create_connection(server.server_address, timeout=WAIT)
                c.sendall(b"line\n")
            clients.append(c)
        if scenario.get("clients", 1) == 0:
            pass
        how = scenario.get("how", "handle_request")
        raised = None
        try:
            if how == "handle_request":
                for _ in range(scenario.get("requests", 1)):
                    log.append(("main", "handle_request->%r" % (server.handle_request(),)))
            else:
                # the client is already waiting: the first poll is ready
                done = threading.Event()
                main_ident = threading.get_ident()

                def stop_when_done():
                    # after the request and one service_actions, stop the loop
                    wait_for(lambda: sum(1 for e in log if e[1] == "close_request") >= 1
                             and log[-1][1] == "service_actions")
                    server._BaseServer__shutdown_request = True
                    done.set()
                stopper = threading.Thread(target=stop_when_done, daemon=True)
                stopper.start()
                server.serve_forever(POLL)
                stopper.join(WAIT)
        except BaseException as exc:
            raised = type(exc).__name__
            log.append(("main", "raised " + raised))
        for c in clients:
            try:
                c.recv(100)
            except OSError:
                pass
        if scenario.get("reap"):
            wait_for(lambda: (server.collect_children(), not server.active_children)[1])
    finally:
        for c in clients:
            c.close()
        server.server_close()
    log = normalise(log)
    main = [name for who, name in log if who == "main"]
    worker = [name for who, name in log if who == "worker"]
    return main, worker


def normalise(log):
    out = []
    for entry in log:
        # consecutive service_actions are timing-dependent in number
        if entry[1] == "service_actions" and out and out[-1] == entry:
            continue
        if entry[1] == "collect_children" and out and out[-1] == entry:
            continue
        out.append(entry)
    return out


SCENARIOS = {
    "tcp_ok": {},
    "tcp_handler_raises": {"action": "raise"},
    "tcp_handler_baseexception": {"action": "stop"},
    "tcp_verify_false": {"verify": False},
    "tcp_get_request_oserror": {"get_request_fails": True},
    "tcp_process_request_raises": {"process_fails": True},
    "tcp_timeout": {"clients": 0, "timeout": 0.05},
    "tcp_serve_forever": {"how": "serve_forever"},
    "tcp_serve_forever_raises": {"how": "serve_forever", "action": "raise"},
    "threading_tcp_ok": {"cls": "ThreadingTCPServer"},
    "threading_tcp_raises": {"cls": "ThreadingTCPServer", "action": "raise"},
    "threading_tcp_verify_false": {"cls": "ThreadingTCPServer", "verify": False},
    "udp_ok": {"cls": "UDPServer"},
    "udp_raises": {"cls": "UDPServer", "action": "raise"},
    "udp_timeout": {"cls": "UDPServer", "clients": 0, "timeout": 0.05},
    "threading_udp_ok": {"cls": "ThreadingUDPServer"},
    "forking_tcp_ok": {"cls": "ForkingTCPServer", "reap": True},
    "forking_tcp_timeout": {"cls": "ForkingTCPServer", "clients": 0, "timeout": 0.05},
    "forking_udp_ok": {"cls": "ForkingUDPServer", "reap": True},
}

EXPECTED_STDLIB = {
    # construction, then what handle_request() does for one request
    "tcp_ok": ["server_bind", "server_activate", "fileno", "get_request",
               "verify_request", "process_request", "finish_request", "handle",
               "shutdown_request", "close_request", "handle_request->None",
               "server_close"],
    "tcp_verify_false": ["server_bind", "server_activate", "fileno", "get_request",
                         "verify_request", "shutdown_request", "close_request",
                         "handle_request->None", "server_close"],
    "tcp_handler_raises": ["server_bind", "server_activate", "fileno", "get_request",
                           "verify_request", "process_request", "finish_request",
                           "handle", "handle_error", "shutdown_request", "close_request",
                           "handle_request->None", "server_close"],
    "tcp_timeout": ["server_bind", "server_activate", "handle_timeout",
                    "handle_request->None", "server_close"],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_hook_sequence_matches_stdlib(impl, scenario):
    spec = SCENARIOS[scenario]
    cls = spec.get("cls", "TCPServer")
    if not hasattr(impl, cls):
        pytest.skip("no " + cls)
    expected = run_scenario(stdlib, spec)
    got = run_scenario(impl, spec)
    # guard against a vacuous comparison: the stdlib recording is what we think
    if scenario in EXPECTED_STDLIB:
        want = EXPECTED_STDLIB[scenario]
        if scenario == "tcp_timeout":
            want = want[:2] + ["fileno"] + want[2:]
        assert expected[0] == want
    assert "server_close" in expected[0]
    assert got == expected


def test_hook_sequence_threading_worker_side(impl):
    main, worker = run_scenario(impl, {"cls": "ThreadingTCPServer", "action": "raise"})
    assert main == ["server_bind", "server_activate", "fileno", "get_request",
                    "verify_request", "process_request", "handle_request->None",
                    "server_close"]
    assert worker == ["process_request_thread", "finish_request", "handle",
                      "handle_error", "shutdown_request", "close_request"]


def test_hook_sequence_serve_forever(impl):
    main, worker = run_scenario(impl, {"how": "serve_forever"})
    assert main == ["server_bind", "server_activate", "fileno", "get_request",
                    "verify_request", "process_request", "finish_request", "handle",
                    "shutdown_request", "close_request", "service_actions",
                    "server_close"]
    assert worker == []


def test_hook_sequence_base_exception(impl):
    main, _ = run_scenario(impl, {"action": "stop"})
    # shutdown_request runs, handle_error does not, the exception propagates
    assert main == ["server_bind", "server_activate", "fileno", "get_request",
                    "verify_request", "process_request", "finish_request", "handle",
                    "shutdown_request", "close_request", "raised Stop", "server_close"]


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
            # As if three threads were on their way to take a request.
            server._BaseServer__takers += 3
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                state = (server._BaseServer__take_pending_from is None,
                         server._BaseServer__takers, len(server._BaseServer__handoff))
                os.write(write_fd, repr(state).encode())
                os._exit(0)
            server._BaseServer__takers -= 3
            os.close(write_fd)
            with os.fdopen(read_fd, "rb") as pipe:
                reports.put((server._BaseServer__take_pending_from is server.socket,
                             pipe.read().decode()))
            os.waitpid(pid, 0)
            self.request.sendall(b"done")

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.connect(server)
    assert client.recv(10) == b"done"
    # in the parent the listener is published; in the child it is not
    assert reports.get(timeout=WAIT) == (True, "(True, 0, 0)")


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
@pytest.mark.parametrize("cls_name", ["UnixDatagramServer", "ThreadingUnixDatagramServer"])
@pytest.mark.parametrize("how", ["serve_forever", "handle_request"])
def test_datagram_from_an_unbound_unix_client(impl, harness, cls_name, how):
    """A datagram from an unbound AF_UNIX socket has no sender address:
    client_address is None, as in the stdlib, and serving goes on."""
    seen = queue.Queue()

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            seen.put((self.request[0], self.client_address))

    server = harness.server(getattr(impl, cls_name), harness.unix_address(), Handler)
    if how == "serve_forever":
        harness.serve(server)
    client = harness.client(socket.AF_UNIX, socket.SOCK_DGRAM)  # not bound
    for data in (b"one", b"two"):
        client.sendto(data, server.server_address)
        if how == "handle_request":
            server.handle_request()
        assert seen.get(timeout=WAIT) == (data, None)
    harness.stop(server)


def test_shutdown_waits_for_the_request_in_progress_only(impl, harness):
    """Connections waiting when shutdown() is called stay unserved, as in the
    stdlib: the loop does not finish a batch of them first."""
    handled = []
    started = threading.Event()

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            handled.append(self.client_address)
            started.set()
            time.sleep(0.2)

    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), Handler)
    for _ in range(5):  # within the stdlib's listen backlog of 5
        harness.connect(server)
    harness.serve(server)
    assert started.wait(WAIT)
    bounded(server.shutdown)
    assert len(handled) == 1


# --------------------------------------------------------------- serve_forever's own paths
#
# serve_forever() may take requests in by itself when get_request() is the
# library's own; what the handler and the hooks see must not change.

def _address_shape(address, client_name):
    """client_address with the client's own name replaced by a marker."""
    if address == client_name:
        return "CLIENT-NAME"
    return address


CLIENT_KINDS = ["tcp", "tcp6", "udp", "udp6", "unix_stream_unnamed", "unix_stream_named",
                "unix_stream_abstract", "unix_dgram_named", "unix_dgram_abstract"]


def _request_view(mod, kind, how):
    """What the handler sees for one request of a client of ``kind``."""
    seen = {}
    stream = kind.startswith("tcp") or kind.startswith("unix_stream")

    class Handler(mod.BaseRequestHandler):
        def handle(self):
            seen["address"] = self.client_address
            if stream:
                req = self.request
                seen["request"] = (type(req), req.family, req.type, req.proto,
                                   req.gettimeout(),
                                   req.getsockname() == self.server.socket.getsockname(),
                                   os.get_inheritable(req.fileno()),
                                   req.getblocking())
                data = req.recv(100)
                req.sendall(data)
            else:
                data, sock = self.request
                seen["request"] = (type(data), data, sock is self.server.socket)
                sock.sendto(data, self.client_address)

    harness = Harness()
    try:
        if kind in ("tcp", "udp"):
            cls, address, family = (mod.TCPServer if stream else mod.UDPServer), ("127.0.0.1", 0), socket.AF_INET
        elif kind in ("tcp6", "udp6"):
            if not ipv6_available():
                pytest.skip("IPv6 loopback unavailable")
            base = mod.TCPServer if stream else mod.UDPServer
            cls = type("V6", (base,), {"address_family": socket.AF_INET6})
            address, family = ("::1", 0), socket.AF_INET6
        else:
            if not HAS_UNIX:
                pytest.skip("no AF_UNIX")
            cls = mod.UnixStreamServer if stream else mod.UnixDatagramServer
            address, family = harness.unix_address(), socket.AF_UNIX
        server = harness.server(cls, address, Handler)
        client = harness.client(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
        if kind.endswith("_named"):
            client.bind(os.path.join(harness.tempdir(), "c"))
        elif kind.endswith("_abstract"):
            client.bind("\0fss-test-{}-{}".format(os.getpid(), id(seen)))
        if how == "serve_forever":
            harness.serve(server)
        if stream:
            client.connect(server.server_address)
            client.sendall(b"data")
        else:
            client.sendto(b"data", server.server_address)
        if how == "handle_request":
            server.handle_request()
        assert client.recv(100) == b"data"
        name = client.getsockname()
        harness.stop(server)
    finally:
        harness.close()
    seen["address"] = _address_shape(seen["address"], name)
    return seen


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_request_and_client_address_like_stdlib(impl, kind):
    expected = _request_view(stdlib, kind, "serve_forever")
    if kind in ("tcp", "tcp6", "udp", "udp6"):
        assert expected["address"] == "CLIENT-NAME"
    assert _request_view(impl, kind, "serve_forever") == expected
    assert _request_view(impl, kind, "handle_request") == expected


def test_accepted_socket_follows_default_timeout(impl, harness):
    seen = []

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            seen.append(self.request.gettimeout())

    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), Handler)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(3.5)
    try:
        harness.serve(server)
        client = harness.connect(server)
        assert client.recv(10) == b""
        harness.stop(server)
    finally:
        socket.setdefaulttimeout(old)
    assert seen == [3.5]


def _batch_log(mod, cls_name, n_clients):
    """process_request / service_actions as seen by serve_forever with
    ``n_clients`` already waiting (only these two hooks overridden)."""
    log = []

    class Server(getattr(mod, cls_name)):
        def process_request(self, request, client_address):
            log.append("process_request")
            super().process_request(request, client_address)

        def service_actions(self):
            if not log or log[-1] != "service_actions":
                log.append("service_actions")
            super().service_actions()

    udp = "UDP" in cls_name
    handler = datagram_echo(mod) if udp else stream_echo(mod)
    harness = Harness()
    try:
        server = harness.server(Server, ("127.0.0.1", 0), handler)
        clients = []
        for i in range(n_clients):
            if udp:
                c = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
                c.sendto(b"x%d\n" % i, server.server_address)
            else:
                c = harness.connect(server)
                c.sendall(b"x%d\n" % i)
            clients.append(c)
        harness.serve(server)
        for i, c in enumerate(clients):
            assert c.recv(100) == b"x%d\n" % i
        assert wait_for(lambda: log.count("process_request") == n_clients
                        and log[-1] == "service_actions")
        harness.stop(server)
    finally:
        harness.close()
    return log


@pytest.mark.parametrize("cls_name", ["TCPServer", "UDPServer", "ThreadingTCPServer"])
def test_service_actions_after_every_request(impl, request, cls_name):
    """The stdlib calls service_actions() after each request it takes in."""
    expected = _batch_log(stdlib, cls_name, 4)
    assert expected == ["process_request", "service_actions"] * 4
    assert _batch_log(impl, cls_name, 4) == expected


@needs_fork
def test_forking_max_children_with_clients_already_waiting(impl, request, harness):
    """collect_children() runs after every fork, so no more than max_children
    children exist even when many clients are waiting at once."""
    class Server(impl.ForkingTCPServer):
        max_children = 2

    server = harness.server(Server, ("127.0.0.1", 0),
                            type("H", (stream_echo(impl),), {"timeout": 2.0}))
    clients = [harness.connect(server) for _ in range(5)]
    peak = []
    original = server.process_request

    def process_request(request, client_address):
        original(request, client_address)
        peak.append(len(server.active_children))
    server.process_request = process_request
    harness.serve(server)
    assert wait_for(lambda: len(peak) >= 2)
    time.sleep(0.3)  # room for a wrong implementation to fork more
    assert max(peak) <= 2, "more children than max_children: {}".format(peak)
    for i, c in enumerate(clients):
        c.sendall(b"c%d\n" % i)
    for i, c in enumerate(clients):
        assert c.recv(100) == b"c%d\n" % i
    assert max(peak) <= 2
    harness.stop(server)


def test_udp_truncation_and_empty_datagram_in_serve_forever(impl, harness):
    seen = []

    class Handler(impl.DatagramRequestHandler):
        def handle(self):
            seen.append(self.packet)
            self.wfile.write(b"<" + self.packet + b">")

    class Server(impl.UDPServer):
        max_packet_size = 4
    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"abcdefgh", server.server_address)
    assert client.recv(100) == b"<abcd>"
    client.sendto(b"", server.server_address)
    assert client.recv(100) == b"<>"
    harness.stop(server)
    assert seen == [b"abcd", b""]


def test_udp_max_packet_size_changed_while_serving(impl, request, harness):
    """get_request() reads self.max_packet_size for every datagram: a handler
    that lowers it affects the very next datagram, even one already queued."""

    class Handler(impl.DatagramRequestHandler):
        def handle(self):
            self.server.max_packet_size = 2
            self.wfile.write(self.rfile.read())
    server = harness.server(impl.UDPServer, ("127.0.0.1", 0), Handler)
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"abcdef", server.server_address)
    client.sendto(b"xyz", server.server_address)
    harness.serve(server)
    assert client.recv(100) == b"abcdef"
    assert client.recv(100) == b"xy"
    harness.stop(server)


def test_get_request_assigned_on_instance_in_serve_forever(impl, harness):
    calls = []
    server = harness.server(impl.TCPServer, ("127.0.0.1", 0), stream_echo(impl))
    original = server.get_request

    def get_request():
        calls.append(1)
        return original()
    server.get_request = get_request
    harness.serve(server)
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    assert roundtrip(harness, server, "tcp") == b"ping\n"
    harness.stop(server)
    assert calls == [1, 1]


def test_get_request_overridden_in_serve_forever(impl, harness):
    calls = []

    class Server(impl.UDPServer):
        def get_request(self):
            (data, sock), address = super().get_request()
            calls.append(data)
            return (data.upper(), sock), address
    server = harness.server(Server, ("127.0.0.1", 0), datagram_echo(impl))
    harness.serve(server)
    client = harness.client(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"abc", server.server_address)
    assert client.recv(10) == b"ABC"
    harness.stop(server)
    assert calls == [b"abc"]


# CPython's test certificate: Lib/test/certdata/ from 3.12 (and late 3.11), Lib/test/ before.
CERTFILE = next((path for path in (
    os.path.join(os.path.dirname(stdlib.__file__), "test", "certdata", "keycert.pem"),
    os.path.join(os.path.dirname(stdlib.__file__), "test", "keycert.pem")) if os.path.exists(path)),
    "keycert.pem (not found)")


@pytest.mark.skipif(not os.path.exists(CERTFILE), reason="no CPython test certificate")
def test_tls_wrapped_listener(impl, request, harness):
    """The common HTTPS pattern: server.socket replaced by an SSLSocket."""
    import ssl
    server = harness.server(impl.ThreadingTCPServer, ("127.0.0.1", 0), stream_echo(impl))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERTFILE)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    harness.serve(server)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    for _ in range(2):
        raw = socket.create_connection(server.server_address, timeout=WAIT)
        with cctx.wrap_socket(raw) as tls:
            tls.sendall(b"secret\n")
            assert tls.recv(100) == b"secret\n"
    harness.stop(server)


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_disable_nagle_on_unix_stream(impl, harness):
    """TCP_NODELAY cannot be set on a Unix socket: the stdlib's setup() fails
    (handle_error); fastsockserver applies the option to TCP only, on purpose,
    since its default is disable_nagle_algorithm = True."""
    errors = []

    class Server(impl.UnixStreamServer):
        def handle_error(self, request, client_address):
            errors.append(sys.exc_info()[0])
    handler = type("Nodelay", (stream_echo(impl),), {"disable_nagle_algorithm": True})
    server = harness.server(Server, harness.unix_address(), handler)
    client = harness.client(socket.AF_UNIX)
    client.connect(server.server_address)
    client.sendall(b"u\n")
    server.handle_request()
    try:
        reply = client.recv(10)
    except ConnectionResetError:
        reply = b""
    if impl is stdlib:
        assert len(errors) == 1 and issubclass(errors[0], OSError) and reply == b""
    else:
        assert errors == [] and reply == b"u\n"


# ---------------------------------------------------------------- end of a request
# TCPServer.shutdown_request/close_request take a compiled path on plain
# sockets; these are the cases it must leave to the socket object.

def _end_of_request_outcome(impl, harness, setup_request):
    """Serve one request whose socket setup_request() prepares; return what the
    client then reads, and the request socket's fileno() after close_request."""
    seen = {}

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            setup_request(self.request, seen)
            self.request.sendall(b"reply")

    class Server(impl.TCPServer):
        def close_request(self, request):
            super().close_request(request)
            seen["fileno_after_close"] = request.fileno()

    server = harness.server(Server, ("127.0.0.1", 0), Handler)
    client = harness.connect(server)
    harness.serve(server)
    data = b""
    try:
        while True:
            chunk = client.recv(100)
            if not chunk:
                break
            data += chunk
        outcome = data
    except ConnectionResetError:
        outcome = data + b"<reset>"
    assert wait_for(lambda: "fileno_after_close" in seen)
    harness.stop(server)
    return outcome, seen


def test_close_request_plain_socket(impl, harness):
    outcome, seen = _end_of_request_outcome(impl, harness, lambda sock, seen: None)
    assert outcome == b"reply"
    assert seen["fileno_after_close"] == -1


def test_close_request_with_so_linger_zero(impl, harness):
    """SO_LINGER {1, 0}: close() resets the connection; the stdlib's path does it."""
    def linger(sock, seen):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    outcome, seen = _end_of_request_outcome(impl, harness, linger)
    # shutdown(SHUT_WR) sent the FIN first: the reply and EOF (or a reset) arrive.
    expected, _ = _end_of_request_outcome(stdlib, harness, linger)
    assert outcome == expected
    assert seen["fileno_after_close"] == -1


def test_close_request_while_makefile_object_open(impl, harness):
    """A makefile() object still open keeps the descriptor: socket.close() does
    not release it until the file is closed too."""
    def keep_file(sock, seen):
        seen["file"] = sock.makefile("wb", buffering=0)
    outcome, seen = _end_of_request_outcome(impl, harness, keep_file)
    assert outcome == b"reply"  # shutdown(SHUT_WR) still ended the stream
    assert seen["fileno_after_close"] >= 0  # not released yet
    kept = seen["file"]
    assert kept.fileno() == seen["fileno_after_close"]
    kept.close()


def test_shutdown_request_on_non_socket_objects(impl):
    """Anything that is not a plain socket gets request.shutdown()/close() calls."""
    calls = []

    class Fake:
        def shutdown(self, how):
            calls.append(("shutdown", how))
            raise OSError(errno.ENOTCONN, "not connected")  # ignored, as in the stdlib

        def close(self):
            calls.append(("close",))

    server = impl.TCPServer(("127.0.0.1", 0), impl.BaseRequestHandler, bind_and_activate=False)
    try:
        server.shutdown_request(Fake())
    finally:
        server.server_close()
    assert calls == [("shutdown", socket.SHUT_WR), ("close",)]


# Loopback addresses whose parts cover 1, 2 and 3 digits and 0: the compiled
# core formats IPv4 peer addresses itself.
PEER_ADDRESSES = ["127.0.0.1", "127.1.10.100", "127.255.0.99", "127.9.200.255"]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_client_address_as_socket_reports_it(impl, harness, transport):
    seen = []
    states = []

    class Handler(impl.BaseRequestHandler):
        def handle(self):
            seen.append(self.client_address)
            if transport == "tcp":  # the accepted socket is socket.accept()'s
                with socket.socket() as fresh:
                    request = self.request
                    states.append((type(request), (request._io_refs, request._closed) == (fresh._io_refs, fresh._closed),
                                   request.family, request.type, request.proto,
                                   request.gettimeout(), request.getblocking(),
                                   request.get_inheritable()))
            if transport == "udp":
                self.request[1].sendto(b"ok", self.client_address)
            else:
                self.request.sendall(b"ok")

    cls = impl.ThreadingTCPServer if transport == "tcp" else impl.ThreadingUDPServer
    server = harness.server(cls, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    expected = []
    for host in PEER_ADDRESSES:
        client = harness.client()  # a TCP socket, not bound yet
        if transport == "udp":
            client.close()
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.settimeout(WAIT)
            harness.clients.append(client)
        client.bind((host, 0))
        if transport == "tcp":
            client.connect(server.server_address)
        else:
            client.sendto(b"hi", server.server_address)
        assert client.recv(16) == b"ok"
        expected.append(client.getsockname())
    assert seen == expected
    if transport == "tcp":
        assert states == [(socket.socket, True, socket.AF_INET, socket.SOCK_STREAM, 0,
                           None, True, False)] * len(PEER_ADDRESSES)


# --------------------------------------------------------------- the wait itself

def eventpoll_fds():
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + name) == "anon_inode:[eventpoll]":
                fds.append(int(name))
        except OSError:  # closed meanwhile
            pass
    return fds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll is Linux's")
@pytest.mark.parametrize("override", [None, "get_request"])
def test_compiled_loop_waits_with_epoll_on_its_own_receive_path(fast_impl, harness, override):
    """epoll for the compiled receive path; poll() (the stdlib's selector) once a
    hook is overridden; the epoll descriptor is closed when serving ends."""
    compiled = fast_impl.COMPILED
    attrs = {}
    if override == "get_request":
        attrs["get_request"] = lambda self: fast_impl.TCPServer.get_request(self)
    cls = type("Server", (fast_impl.ThreadingTCPServer,), attrs)
    before = eventpoll_fds()
    server = harness.server(cls, ("127.0.0.1", 0), stream_echo(fast_impl))
    harness.serve(server)
    with harness.connect(server) as client:
        client.sendall(b"ping\n")
        assert client.recv(16) == b"ping\n"
    during = eventpoll_fds()
    harness.stop(server)
    assert eventpoll_fds() == before
    expected = 1 if compiled and override is None else 0
    assert len(during) - len(before) == expected


@pytest.mark.parametrize("name", ["TCPServer", "ThreadingTCPServer", "UDPServer"])
def test_server_close_while_serving_then_shutdown(impl, harness, name):
    """Closing the listener under serve_forever neither raises out of it nor
    keeps shutdown() from returning (the stdlib spins meanwhile; the compiled
    loop's epoll simply stops watching the closed descriptor)."""
    server = harness.server(getattr(impl, name), ("127.0.0.1", 0), impl.BaseRequestHandler)
    t = harness.serve(server)
    time.sleep(0.05)
    server.socket.close()
    time.sleep(0.1)
    assert t.is_alive()
    harness.stop(server)


# --------------------------------------------------------------- requests queued for takers

def test_hand_to_taker_queues_one_request_per_taker(fast_impl, harness):
    """The loop queues a request only for a handler thread inside take_pending
    that has yet to look at the queue: never more requests than such threads."""
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    from fastsockserver import _core
    import collections
    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0),
                            fast_impl.BaseRequestHandler)
    item = ((b"x", server.socket), ("127.0.0.1", 9))
    assert _core.hand_to_taker(server, *item) is False  # not serving: no queue
    server._BaseServer__handoff = collections.deque()
    assert _core.hand_to_taker(server, *item) is False  # no taker
    server._BaseServer__takers = 2
    assert _core.hand_to_taker(server, *item) is True
    assert _core.hand_to_taker(server, *item) is True
    assert _core.hand_to_taker(server, *item) is False  # both takers have one
    assert list(server._BaseServer__handoff) == [item, item]
    # take_pending serves the queue first, even once serving has ended
    assert _core.take_pending(server, None) == item
    assert server._BaseServer__takers == 2  # its own count came and went
    server._BaseServer__takers = 0


def test_requests_queued_for_takers_are_handled_when_serving_ends(fast_impl, harness):
    """Requests still queued when serve_forever() returns go to process_request."""
    import collections
    handled = []

    class Handler(fast_impl.BaseRequestHandler):
        def handle(self):
            handled.append((self.request[0], self.client_address))

    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0), Handler)
    server._BaseServer__handoff = collections.deque(
        [((b"one", server.socket), ("127.0.0.1", 1)), ((b"two", server.socket), ("127.0.0.1", 2))])
    server._BaseServer__hand_over_queued()
    bounded(server.server_close)
    assert sorted(handled) == [(b"one", ("127.0.0.1", 1)), (b"two", ("127.0.0.1", 2))]
    assert server._BaseServer__handoff is None


def test_take_pending_only_while_the_listener_is_non_blocking(fast_impl, harness):
    """Handler threads take from a listener holding the GIL: it is published
    only while serve_forever keeps it non-blocking (a stream listener's
    O_NONBLOCK; datagrams are taken with MSG_DONTWAIT)."""
    import fcntl
    seen = []

    def record(server):
        flags = fcntl.fcntl(server.socket.fileno(), fcntl.F_GETFL)
        seen.append((type(server).__name__, server._BaseServer__take_pending_from is server.socket,
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
        assert server._BaseServer__take_pending_from is None
        assert server.socket.getblocking()
        assert not fcntl.fcntl(server.socket.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK


def test_take_pending_leaves_the_listener_alone_while_accepts_back_off(fast_impl, harness):
    if not fast_impl.COMPILED:
        pytest.skip("handler threads take requests themselves only on the compiled core")
    from fastsockserver import _core
    server = harness.server(fast_impl.ThreadingUDPServer, ("127.0.0.1", 0),
                            fast_impl.BaseRequestHandler)
    listener = server.socket
    server._BaseServer__take_pending_from = listener
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.sendto(b"ping", server.server_address)
            assert wait_for(lambda: select.select([listener], [], [], 0)[0])
            server._BaseServer__accept_resume_at = time.monotonic() + 60
            assert _core.take_pending(server, listener) is None
            server._BaseServer__accept_resume_at = 0.0
            (data, sock), address = _core.take_pending(server, listener)
            assert (data, sock, address) == (b"ping", listener, client.getsockname())
            assert _core.take_pending(server, listener) is None  # nothing else waits
    finally:
        server._BaseServer__take_pending_from = None


def test_queued_requests_are_closed_when_an_exception_ends_serving(fast_impl, harness):
    import collections
    pairs = [socket.socketpair() for _ in range(3)]

    class Server(fast_impl.ThreadingUnixStreamServer if HAS_UNIX else fast_impl.ThreadingTCPServer):
        def process_request(self, request, client_address):
            raise KeyboardInterrupt

    address = harness.unix_address() if HAS_UNIX else ("127.0.0.1", 0)
    server = harness.server(Server, address, fast_impl.BaseRequestHandler)
    server._BaseServer__handoff = collections.deque((ours, "peer") for ours, _ in pairs)
    with pytest.raises(KeyboardInterrupt):
        server._BaseServer__hand_over_queued()
    for ours, theirs in pairs:
        theirs.settimeout(WAIT)
        try:
            assert theirs.recv(8) == b""  # shut down and closed
            assert ours.fileno() == -1
        finally:
            theirs.close()
            ours.close()
