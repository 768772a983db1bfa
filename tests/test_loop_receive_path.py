"""serve_forever()'s own receive path (the loop accepts / receives by itself when
get_request() is the library's): what handlers and hooks see, compared with the
stdlib, requests taken in a row, the wait (epoll) and a listener closed under it."""
import os
import socket
import socketserver as stdlib
import sys
import time

import pytest

from fastsockserver._core_api import EPOLL
from support import (
    CERTFILE,
    HAS_UNIX,
    WAIT,
    Harness,
    datagram_echo,
    ipv6_available,
    needs_fork,
    races_on_purpose,
    roundtrip,
    stream_echo,
    wait_for,
)

# --------------------------------------------------------------- what the handler sees

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
            cls, address, family = ((mod.TCPServer if stream else mod.UDPServer),
                                    ("127.0.0.1", 0), socket.AF_INET)
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
                    fresh_state = (fresh._io_refs, fresh._closed)
                    states.append((type(request),
                                   (request._io_refs, request._closed) == fresh_state,
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


# --------------------------------------------------------------- requests taken in a row

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


# ----------------------------------------------------------- get_request overridden, a TLS listener

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
    """epoll for the compiled receive path (the Linux build; the portable one polls);
    poll() (the stdlib's selector) once a hook is overridden; the epoll descriptor is
    closed when serving ends."""
    compiled = fast_impl.COMPILED and EPOLL in fast_impl._core_select.core.FEATURES
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


@races_on_purpose
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
