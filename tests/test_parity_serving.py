"""Serving, the same on the stdlib, pure and compiled (``impl``): echo over every
server class, handle_error, verify_request, handle_request() and its timeouts,
serve_forever() and shutdown(), what is particular to datagrams."""
import os
import queue
import socket
import socketserver as stdlib
import sys
import threading
import time

import pytest

from support import (
    FAMILY,
    HAS_UNIX,
    POLL,
    STREAM,
    TCP_KINDS,
    UDP_KINDS,
    WAIT,
    Harness,
    base_datagram_echo,
    base_stream_echo,
    bounded,
    datagram_echo,
    make_server,
    raising_handler,
    roundtrip,
    roundtrip_udp,
    server_class,
    stream_echo,
    wait_for,
)

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


# ----------------------------------------------------- verify_request and hooks set on the instance

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


# --------------------------------------------------------------- handle_request() and timeouts

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
            wait_for(lambda: outcome_box or client_has_reply(client), timeout=WAIT)
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


# --------------------------------------------------------------- serve_forever() and shutdown()

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


# --------------------------------------------------------------- datagrams

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
