"""TCPServer.proxy_protocol_from (fastsockserver only, pure and compiled): the PROXY
protocol parser against hand-built headers, truncations and garbage (hypothesis, bounded
examples), the reader on real sockets (exactly the header's bytes), and servers in each
mode with their failure paths: every wait bounded, descriptors counted. HAProxy itself
is in test_haproxy.py."""
import ipaddress
import pickle
import socket
import struct
import sys
import time

import pytest
import test_tls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsockserver import _proxy
from support import WAIT, fd_count, needs_fork, recv_to_end, wait_for

SIG = _proxy.V2_SIGNATURE
pki = test_tls.pki  # its certificates fixture, for the PROXY header before TLS
BOUNDED = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def v1(family, source, destination):
    name = "TCP4" if family == socket.AF_INET else "TCP6"
    return "PROXY {} {} {} {} {}\r\n".format(
        name, source[0], destination[0], source[1], destination[1]).encode()


def v2(command=1, family=0x1, protocol=0x1, block=b"", tlvs=b"", length=None):
    body = block + tlvs
    return SIG + struct.pack("!BBH", 0x20 | command, family << 4 | protocol,
                             len(body) if length is None else length) + body


def v2_inet(source, destination, tlvs=b"", command=1):
    family = socket.AF_INET if ":" not in source[0] else socket.AF_INET6
    code = 0x1 if family == socket.AF_INET else 0x2
    block = (socket.inet_pton(family, source[0]) + socket.inet_pton(family, destination[0])
             + struct.pack("!HH", source[1], destination[1]))
    return v2(command, code, 0x1, block, tlvs)


def encode_tlvs(items):
    return b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in items)


tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def same_address(got, host, port, family):
    """``got`` is (host, port) for AF_INET, (host, port, 0, 0) for AF_INET6, as accept()
    gives them; the host in any spelling of the same address."""
    tail = () if family == socket.AF_INET else (0, 0)
    return (ipaddress.ip_address(got[0]) == ipaddress.ip_address(host)
            and tuple(got[1:]) == (port,) + tail)


# --------------------------------------------------------------- the parser

@BOUNDED
@given(st.sampled_from([4, 6]), st.data())
def test_valid_v1_headers_give_their_addresses(version, data):
    hosts = ipv4 if version == 4 else ipv6
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    source = (data.draw(hosts), data.draw(ports))
    destination = (data.draw(hosts), data.draw(ports))
    header = _proxy.parse(v1(family, source, destination))
    assert header.version == 1 and not header.local and header.family == family
    assert same_address(header.source, *source, family)
    assert same_address(header.destination, *destination, family)


@BOUNDED
@given(st.sampled_from([4, 6]), st.data(), tlv_lists)
def test_valid_v2_headers_give_their_addresses_and_tlvs(version, data, tlvs):
    hosts = ipv4 if version == 4 else ipv6
    source = (data.draw(hosts), data.draw(ports))
    destination = (data.draw(hosts), data.draw(ports))
    header = _proxy.parse(v2_inet(source, destination, encode_tlvs(tlvs)))
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    assert header.version == 2 and not header.local and header.family == family
    assert same_address(header.source, *source, family)
    assert same_address(header.destination, *destination, family)
    assert header.tlvs == tuple((kind, value) for kind, value in tlvs)


def test_headers_that_keep_the_peers_address():
    unix = b"/run/client".ljust(108, b"\0") + b"/run/server".ljust(108, b"\0")
    local = _proxy.parse(v2_inet(("10.0.0.1", 1), ("10.0.0.2", 2), command=0))
    assert local.local and local.source is None  # a health check of the proxy's own
    assert _proxy.parse(v2(0, 0, 0)).local  # LOCAL, UNSPEC: HAProxy's check
    unspec = _proxy.parse(v2(1, 0, 0, tlvs=b"\x04\x00\x01x"))
    assert unspec.source is None and unspec.tlvs == ((4, b"x"),)
    over_unix = _proxy.parse(v2(1, 0x3, 0x1, unix))
    assert over_unix.family == socket.AF_UNIX
    assert (over_unix.source, over_unix.destination) == (b"/run/client", b"/run/server")
    assert _proxy.parse(b"PROXY UNKNOWN\r\n").source is None
    assert _proxy.parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None


@pytest.mark.parametrize("bad", [
    b"", b"GET / HTTP/1.1\r\n", b"PROXY\r\n", b"PROXY TCP4\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",              # no CR
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",           # a field too many
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",           # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",                # v6 address in TCP4
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET",        # more than the header
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + b"0" * 80 + b"\r\n",  # over 107 bytes
    SIG, v2()[:-1], v2(length=5),
    v2(2), SIG + b"\x11\x11\x00\x00",                 # command 2; version 1
    v2(1, 0x4, 0x1), v2(1, 0x1, 0x3),                 # family 4; protocol 3
    v2(1, 0x1, 0x1, b"\0" * 11),                      # INET block too short
    v2(1, 0x2, 0x1, b"\0" * 35),
    v2(1, 0, 0, b"\0" * (_proxy.V2_MAX - 15)),        # over the bound
    v2(1, 0, 0, tlvs=b"\x04\x00"),                    # a TLV cut short
    v2(1, 0, 0, tlvs=b"\x04\x00\x02x"),                # one longer than the header
])
def test_malformed_headers_are_refused(bad):
    with pytest.raises(_proxy.ProxyHeaderError):
        _proxy.parse(bad)


valid_headers = st.one_of(
    st.builds(lambda s, d: v1(socket.AF_INET, s, d),
              st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.builds(lambda s, d: v1(socket.AF_INET6, s, d),
              st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
    st.builds(v2_inet, st.tuples(ipv4, ports), st.tuples(ipv4, ports), tlv_lists.map(encode_tlvs)),
    st.builds(v2_inet, st.tuples(ipv6, ports), st.tuples(ipv6, ports), tlv_lists.map(encode_tlvs)),
    st.just(v2(0, 0, 0)), st.just(b"PROXY UNKNOWN\r\n"))


@BOUNDED
@given(valid_headers, st.data())
def test_a_truncated_header_is_refused_and_still_wanted(header, data):
    cut = data.draw(st.integers(0, len(header) - 1))
    with pytest.raises(_proxy.ProxyHeaderError):
        _proxy.parse(header[:cut])
    total = _proxy._header_length(header[:cut])
    assert total is None or total > cut  # the reader would go on (within its deadline)
    assert _proxy._header_length(header) == len(header)
    assert _proxy._header_length(header + b"GET / HTTP/1.1\r\n") == len(header)


@BOUNDED
@given(st.one_of(st.binary(max_size=200),
                 st.binary(max_size=200).map(lambda b: b"PROXY " + b),
                 st.binary(max_size=200).map(lambda b: SIG + b)))
def test_garbage_raises_only_proxy_header_error(garbage):
    try:
        _proxy.parse(garbage)
    except _proxy.ProxyHeaderError:
        pass
    try:
        total = _proxy._header_length(garbage)
    except _proxy.ProxyHeaderError:
        return
    assert total is None or 0 < total <= _proxy.V2_MAX  # never more than the bound


# --------------------------------------------------------------- the reader

@BOUNDED
@given(valid_headers, st.binary(max_size=50), st.booleans())
def test_the_reader_takes_exactly_the_header(header, after, trickle):
    a, b = socket.socketpair()
    with a, b:
        if trickle:  # one byte at a time, the rest in one go
            for i in range(len(header)):
                a.sendall(header[i:i + 1])
            a.sendall(after)
        else:
            a.sendall(header + after)
        a.shutdown(socket.SHUT_WR)
        b.settimeout(WAIT)
        assert _proxy._receive_header(b, time.monotonic() + WAIT) == header
        assert recv_to_end(b) == after


@pytest.mark.parametrize("sent, error", [
    (b"PROXY TCP4 1.2.3.4", _proxy.ProxyHeaderError),        # then closed
    (b"PROXY " + b"x" * 120, _proxy.ProxyHeaderError),       # no line feed in 107
    (v2(length=60000), _proxy.ProxyHeaderError),              # declared too long
    (b"SSH-2.0-OpenSSH\r\n", _proxy.ProxyHeaderError),
])
def test_the_reader_stops_at_bad_input(sent, error):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(sent)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(error):
            _proxy._receive_header(b, time.monotonic() + WAIT)


def test_the_reader_stops_at_its_deadline():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"PROXY TCP4 1.2.3.4 ")  # and nothing more, never closed
        start = time.monotonic()
        with pytest.raises(_proxy.ProxyHeaderError, match="within proxy_header_timeout"):
            _proxy._receive_header(b, start + 0.3)
        assert time.monotonic() - start < 0.3 + 1.0


# --------------------------------------------------------------- servers

def address_echo(mod):
    class Handler(mod.StreamRequestHandler):
        """One line in; out: the client_address the handler was given, and the line."""
        def handle(self):
            line = self.rfile.readline()
            self.wfile.write(repr(self.client_address).encode() + b" " + line)
    return Handler


MODES = ["TCPServer", "ThreadingTCPServer",
         pytest.param("ForkingTCPServer", marks=needs_fork)]


def proxied_server(harness, mod, cls="ThreadingTCPServer", family=socket.AF_INET, **attrs):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    server_class = getattr(mod, cls)
    if family != socket.AF_INET:
        server_class = type("V6" + cls, (server_class,), {"address_family": family})
    server = harness.server(server_class, (host, 0), address_echo(mod))
    server.proxy_protocol_from = attrs.pop("proxy_protocol_from", "127.0.0.1/32")
    server.proxy_header_timeout = attrs.pop("proxy_header_timeout", 1.0)
    for name, value in attrs.items():
        setattr(server, name, value)
    harness.serve(server)
    return server


def ask(address, data, family=socket.AF_INET, timeout=WAIT):
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(data)
        return recv_to_end(sock)


@pytest.mark.parametrize("cls", MODES)
def test_the_handler_sees_the_original_client(fast_impl, harness, cls):
    server = proxied_server(harness, fast_impl, cls)
    address = server.server_address
    assert ask(address, v1(socket.AF_INET, ("192.0.2.7", 5555), ("198.51.100.1", 80))
               + b"one\n") == b"('192.0.2.7', 5555) one\n"
    assert ask(address, v2_inet(("2001:db8::5", 6666), ("2001:db8::1", 443), b"\x01\x00\x02h2")
               + b"two\n") == b"('2001:db8::5', 6666, 0, 0) two\n"
    # HAProxy's health check (LOCAL) and v1 UNKNOWN: the peer's own address
    assert ask(address, v2(0, 0, 0) + b"three\n").startswith(b"('127.0.0.1', ")
    assert ask(address, b"PROXY UNKNOWN\r\nfour\n").startswith(b"('127.0.0.1', ")
    assert server.stats()["proxy_header_failures"] == 0


def recording_echo(mod, seen):
    class Handler(mod.StreamRequestHandler):
        """Appends its client_address to ``seen``; echoes one line."""
        def handle(self):
            seen.append(self.client_address)
            self.wfile.write(self.rfile.readline())
    return Handler


def test_the_header_rides_on_client_address(fast_impl, harness):
    seen = []
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            recording_echo(fast_impl, seen))
    server.proxy_protocol_from = ["127.0.0.1"]
    harness.serve(server)
    tlvs = encode_tlvs([(0x01, b"h2"), (0xE1, b"tenant-7")])
    assert ask(server.server_address,
               v2_inet(("192.0.2.7", 5555), ("198.51.100.1", 443), tlvs) + b"x\n") == b"x\n"
    assert ask(server.server_address, v2(0, 0, 0, tlvs=tlvs) + b"y\n") == b"y\n"
    assert wait_for(lambda: len(seen) == 2)
    proxied, local = seen
    assert proxied == ("192.0.2.7", 5555) and repr(proxied) == "('192.0.2.7', 5555)"
    header = proxied.proxy_header
    assert (header.version, header.local, header.destination) == (2, False, ("198.51.100.1", 443))
    assert header.tlvs == ((0x01, b"h2"), (0xE1, b"tenant-7"))
    assert local[0] == "127.0.0.1" and local.proxy_header.local
    assert local.proxy_header.tlvs == header.tlvs
    again = pickle.loads(pickle.dumps(proxied))
    assert again == proxied and again.proxy_header == header


def test_an_ipv6_listener_trusts_networks_of_both_families(fast_impl, harness):
    try:
        server = proxied_server(harness, fast_impl, family=socket.AF_INET6,
                                proxy_protocol_from=["10.0.0.0/8", "::1"])
    except OSError:
        pytest.skip("no IPv6 loopback")
    assert ask(server.server_address[:2], v1(socket.AF_INET, ("192.0.2.7", 1), ("192.0.2.8", 2))
               + b"x\n", family=socket.AF_INET6) == b"('192.0.2.7', 1) x\n"


def test_untrusted_peers_are_served_as_they_are_unless_they_send_a_header(
        fast_impl, harness, capsys):
    server = proxied_server(harness, fast_impl, proxy_protocol_from=["10.0.0.0/8"])
    address = server.server_address
    assert ask(address, b"plain\n").startswith(b"('127.0.0.1', ")
    spoofed = v1(socket.AF_INET, ("192.0.2.7", 5555), ("198.51.100.1", 80))
    assert ask(address, spoofed + b"x\n") == b""  # closed, nothing handled
    assert ask(address, v2(0, 0, 0) + b"y\n") == b""
    assert wait_for(lambda: server.stats()["proxy_header_failures"] == 2)
    assert "not a trusted proxy" in capsys.readouterr().err  # through handle_error


FAILURES = {
    "garbage": b"GET / HTTP/1.1\r\n\r\n",
    "truncated": b"PROXY TCP4 192.0.2.7 198.51.100.1 5555",
    "oversized v1": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "oversized v2": v2(length=65535) + b"\0" * 100,
    "malformed v2": v2(1, 0x1, 0x1, b"\0" * 5),
    "closed at once": b"",
}


@pytest.mark.parametrize("cls", MODES)
def test_bad_headers_are_closed_counted_and_leak_nothing(fast_impl, harness, cls, capsys):
    server = proxied_server(harness, fast_impl, cls)
    address = server.server_address
    good = v1(socket.AF_INET, ("192.0.2.7", 5555), ("198.51.100.1", 80)) + b"ok\n"
    assert ask(address, good) == b"('192.0.2.7', 5555) ok\n"  # warm: threads, imports
    before = fd_count()
    for sent in FAILURES.values():
        assert ask(address, sent) == b""
    # A forked child counts its failure in its own copy of the server and
    # reports it to the parent on exit (_child_counts): counted all the same.
    counted = len(FAILURES)
    assert wait_for(lambda: server.stats()["proxy_header_failures"] == counted)
    assert wait_for(lambda: server.stats()["active"] == 0)
    assert ask(address, good) == b"('192.0.2.7', 5555) ok\n"
    assert wait_for(lambda: fd_count() <= before)
    # (a forked child prints its traceback into its own copy of capsys's buffer)
    printed = 0 if cls == "ForkingTCPServer" else counted
    assert capsys.readouterr().err.count("Exception occurred during processing") == printed


@pytest.mark.parametrize("cls", ["ThreadingTCPServer",
                                 pytest.param("ForkingTCPServer", marks=needs_fork)])
def test_a_header_that_never_arrives_holds_only_its_own_connection(fast_impl, harness, cls):
    server = proxied_server(harness, fast_impl, cls, proxy_header_timeout=2.0)
    address = server.server_address
    silent = socket.create_connection(address, timeout=WAIT)
    slow = socket.create_connection(address, timeout=WAIT)
    with silent, slow:
        slow.sendall(b"PROXY TCP4 192.0.2.7")  # and no more
        start = time.monotonic()
        for _ in range(3):
            assert ask(address, b"PROXY UNKNOWN\r\nx\n").endswith(b" x\n")
        assert time.monotonic() - start < 1.5  # nobody waited for the two
        assert silent.recv(10) == b"" and slow.recv(10) == b""  # closed at the timeout
        assert time.monotonic() - start < 2.0 + 2.5
    counted = 2  # the forked children's too (see above)
    assert wait_for(lambda: server.stats()["proxy_header_failures"] == counted)


def test_the_sync_server_is_bounded_by_the_header_timeout(fast_impl, harness):
    # One thread for everything (as the stdlib's TCPServer): a silent proxy holds
    # the others back for proxy_header_timeout at most, then is closed.
    server = proxied_server(harness, fast_impl, "TCPServer", proxy_header_timeout=0.5)
    with socket.create_connection(server.server_address, timeout=WAIT) as silent:
        start = time.monotonic()
        assert ask(server.server_address, b"PROXY UNKNOWN\r\nx\n").endswith(b" x\n")
        assert 0.3 < time.monotonic() - start < 0.5 + 2.0
        assert silent.recv(10) == b""
    assert server.stats()["proxy_header_failures"] == 1


def test_the_header_comes_before_tls(fast_impl, harness, pki):
    class Handler(fast_impl.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            self.wfile.write("{} {!r} ".format(type(self.connection).__name__,
                                               self.client_address).encode() + line)

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    server.ssl_context = test_tls.server_context(pki)
    server.proxy_protocol_from = "127.0.0.1"
    harness.serve(server)
    with socket.create_connection(server.server_address, timeout=WAIT) as raw:
        raw.sendall(v2_inet(("192.0.2.7", 5555), ("198.51.100.1", 443)))
        with test_tls.client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"hello\n")
            assert recv_to_end(tls) == b"SSLSocket ('192.0.2.7', 5555) hello\n"
    assert server.stats()["tls_handshake_failures"] == 0


def test_verify_request_sees_the_proxy(fast_impl, harness):
    seen = []

    class Server(fast_impl.ThreadingTCPServer):
        def verify_request(self, request, client_address):
            seen.append(client_address[0])
            return True

    server = harness.server(Server, ("127.0.0.1", 0), address_echo(fast_impl))
    server.proxy_protocol_from = "127.0.0.1"
    harness.serve(server)
    assert ask(server.server_address, v1(socket.AF_INET, ("192.0.2.7", 1), ("192.0.2.8", 2))
               + b"x\n") == b"('192.0.2.7', 1) x\n"
    assert seen == ["127.0.0.1"]


@pytest.mark.parametrize("attrs, message", [
    ({"proxy_protocol_from": "10.0.0.1/8"}, "proxy_protocol_from"),   # host bits set
    ({"proxy_protocol_from": ["localhost"]}, "proxy_protocol_from"),
    ({"proxy_protocol_from": 5}, "proxy_protocol_from"),
    ({"proxy_protocol_from": "::1", "proxy_header_timeout": 0}, "proxy_header_timeout"),
    ({"proxy_protocol_from": "::1", "proxy_header_timeout": None}, "proxy_header_timeout"),
])
def test_bad_settings_fail_serve_forever(fast_impl, harness, attrs, message):
    server = harness.server(fast_impl.TCPServer, ("127.0.0.1", 0), address_echo(fast_impl))
    for name, value in attrs.items():
        setattr(server, name, value)
    with pytest.raises(ValueError, match=message):
        server.serve_forever()


def test_datagram_servers_refuse_it(fast_impl, harness):
    server = harness.server(fast_impl.UDPServer, ("127.0.0.1", 0),
                            fast_impl.DatagramRequestHandler)
    server.proxy_protocol_from = "127.0.0.1"
    with pytest.raises(ValueError, match="TCP servers"):
        server.serve_forever()


def test_off_by_default(fast_impl, harness):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            address_echo(fast_impl))
    assert server.proxy_protocol_from is None and server.proxy_header_timeout == 3.0
    harness.serve(server)
    # a header is then the request's own bytes, as in the stdlib
    assert ask(server.server_address, b"PROXY UNKNOWN\r\n").startswith(b"('127.0.0.1', ")
    assert "proxy_header_failures" in server.stats()


def test_http_server_logs_the_original_client(harness, tmp_path):
    code = (
        "import fastsockserver, sys\n"
        "fastsockserver.install()\n"
        "import http.server\n"
        "class Handler(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Length', '2')\n"
        "        self.end_headers(); self.wfile.write(b'ok')\n"
        # set on the class: what an unmodified program can be given (see docs/workers.rst)
        "fastsockserver.TCPServer.proxy_protocol_from = '127.0.0.1'\n"
        "server = http.server.HTTPServer(('127.0.0.1', 0), Handler)\n"
        "print(server.server_address[1], flush=True)\n"
        "server.handle_request()\n")
    import subprocess
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        reply = ask(("127.0.0.1", port), v1(socket.AF_INET, ("192.0.2.7", 5555),
                                             ("198.51.100.1", 80))
                    + b"GET / HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ok")
        _, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert err.startswith("192.0.2.7 - - [")  # the log line names the original client
