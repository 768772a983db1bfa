"""TLS with the handshake off the loop: BaseServer.ssl_context (fastsockserver only, pure
and compiled), against real OpenSSL handshakes. The certificates are made by the openssl
command line tool for each run (a CA, a server and a client certificate). Every wait is
bounded."""
import http.client
import socket
import ssl
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest
from test_service import ask

from support import (
    SANITIZED,
    SOCKET_TYPE_HTTP_HANDLER,
    SUBPROCESS_TIMEOUT,
    WAIT,
    fd_count,
    needs_fork,
    require_tool,
    reset_close,
    subprocess_env,
    wait_for,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Paths of a CA, a server certificate (127.0.0.1) and a client certificate."""
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    # The extensions a strict verifier wants (Python 3.13's default client context
    # sets VERIFY_X509_STRICT): keyUsage on the CA, key identifiers on the leaves.
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=fastsockserver test CA",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaf = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1\n"
                                       "extendedKeyUsage=serverAuth"),
                            ("client", "extendedKeyUsage=clientAuth")):
        run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + name)
        (d / (name + ".ext")).write_text(extension + "\n" + leaf)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", name + ".pem", "-extfile", name + ".ext")
    return d


def server_context(pki, require_client=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(pki / "ca.pem"))
    return ctx


def client_context(pki, with_certificate=False):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_certificate:
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return ctx


def tls_echo(mod):
    class Handler(mod.StreamRequestHandler):
        """One line in; out: the line, upper-cased, and what the handler saw."""
        def handle(self):
            line = self.rfile.readline()
            peer = self.connection.getpeercert()
            subject = dict(part[0] for part in peer["subject"]) if peer else {}
            seen = "{} {}".format(type(self.connection).__name__, subject.get("commonName"))
            self.wfile.write(line.upper() + seen.encode() + b"\n")
    return Handler


def ask_tls(pki, address, line=b"hello\n", timeout=WAIT, with_certificate=False):
    ctx = client_context(pki, with_certificate)
    with socket.create_connection(address, timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(line)
            data = b""
            while data.count(b"\n") < 2:
                chunk = tls.recv(200)
                if not chunk:
                    break
                data += chunk
            return data


def tls_server(harness, mod, pki, cls="ThreadingTCPServer", **attrs):
    server = harness.server(getattr(mod, cls), ("127.0.0.1", 0), tls_echo(mod))
    server.ssl_context = server_context(pki)
    for name, value in attrs.items():
        setattr(server, name, value)
    return server


def test_a_client_that_never_starts_tls_stalls_nobody(fast_impl, harness, pki, capsys):
    server = tls_server(harness, fast_impl, pki, ssl_handshake_timeout=0.5)
    harness.serve(server)
    idle = harness.connect(server)  # TCP only, never a ClientHello
    start = time.monotonic()
    for _ in range(3):
        assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    assert time.monotonic() - start < 0.5  # none waited for the idle one
    assert idle.recv(10) == b""  # closed when its handshake time ran out
    assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 1)
    assert "timed out" in capsys.readouterr().err  # through handle_error


def test_by_default_a_wrapped_listener_handshakes_on_the_loop_as_in_the_stdlib(
        fast_impl, harness, pki):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), tls_echo(fast_impl))
    server.socket = server_context(pki).wrap_socket(server.socket, server_side=True)
    harness.serve(server)
    idle = harness.connect(server)
    time.sleep(0.1)  # the loop is now inside accept()'s handshake with it
    with pytest.raises((socket.timeout, ssl.SSLError, OSError)):
        ask_tls(pki, server.server_address, timeout=0.5)
    idle.close()  # the loop's handshake fails, and it goes on
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"


def test_one_line_moves_a_wrapped_listeners_handshakes_off_the_loop(fast_impl, harness, pki):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), tls_echo(fast_impl))
    server.socket = server_context(pki).wrap_socket(server.socket, server_side=True)
    server.ssl_context = server.socket.context  # the one line
    harness.serve(server)
    harness.connect(server)
    time.sleep(0.1)
    assert ask_tls(pki, server.server_address, timeout=1.0) == b"HELLO\nSSLSocket None\n"


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x00\x05hello",
                                     b""])
def test_failed_handshakes_are_closed_counted_and_reported(fast_impl, harness, pki, capsys,
                                                           garbage):
    reported = []

    class Server(fast_impl.ThreadingTCPServer):
        def handle_error(self, request, client_address):
            reported.append((type(request).__name__, client_address))

    server = harness.server(Server, ("127.0.0.1", 0), tls_echo(fast_impl))
    server.ssl_context = server_context(pki)
    harness.serve(server)
    bad = harness.connect(server)
    bad.sendall(garbage)
    if not garbage:
        bad.shutdown(socket.SHUT_WR)  # end-of-file before any ClientHello
    for _ in range(10):  # perhaps an alert first, then the end
        if bad.recv(100) == b"":
            break
    else:
        pytest.fail("the connection stayed open")
    assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 1)
    assert reported == [("SSLSocket", bad.getsockname())]
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    assert server.stats()["errors"] == 0


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer",
                                 pytest.param("ForkingTCPServer", marks=needs_fork)])
def test_mutual_tls_the_handler_sees_the_client_certificate(fast_impl, harness, pki, capsys,
                                                            cls):
    server = tls_server(harness, fast_impl, pki, cls)
    server.ssl_context = server_context(pki, require_client=True)
    harness.serve(server, poll_interval=0.05)
    assert (ask_tls(pki, server.server_address, with_certificate=True)
            == b"HELLO\nSSLSocket client\n")
    with pytest.raises((ssl.SSLError, OSError)):  # no certificate: refused in the handshake
        ask_tls(pki, server.server_address, with_certificate=False)
    # (a forked child reports its count to the parent: _child_counts)
    assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 1)
    assert (ask_tls(pki, server.server_address, with_certificate=True)
            == b"HELLO\nSSLSocket client\n")


def test_verify_request_runs_before_the_handshake(fast_impl, harness, pki):
    seen = []

    class Server(fast_impl.ThreadingTCPServer):
        def verify_request(self, request, client_address):
            seen.append(type(request).__name__)
            return True

    server = harness.server(Server, ("127.0.0.1", 0), tls_echo(fast_impl))
    server.ssl_context = server_context(pki)
    harness.serve(server)
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    assert seen == ["socket"]


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer"])
def test_get_request_overridden_slow_path(fast_impl, harness, pki, cls):
    calls = []
    base = getattr(fast_impl, cls)

    class Server(base):
        def get_request(self):
            calls.append(1)
            return super().get_request()

    server = harness.server(Server, ("127.0.0.1", 0), tls_echo(fast_impl))
    server.ssl_context = server_context(pki)
    harness.serve(server)
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    assert calls


@needs_fork
def test_forking_server_handshakes_in_the_child(fast_impl, harness, pki):
    class Handler(tls_echo(fast_impl)):
        def setup(self):
            super().setup()
            self.connection.settimeout(WAIT)  # the child holds the test's sockets too

    server = harness.server(fast_impl.ForkingTCPServer, ("127.0.0.1", 0), Handler)
    server.ssl_context = server_context(pki)
    server.ssl_handshake_timeout = 1.0
    harness.serve(server, poll_interval=0.05)
    harness.connect(server)  # never starts TLS: its child waits, the parent does not
    time.sleep(0.1)
    assert ask_tls(pki, server.server_address, timeout=1.0) == b"HELLO\nSSLSocket None\n"


def test_tls_with_first_byte_timeout_keeps_silent_clients_off_threads(fast_impl, harness,
                                                                      pki):
    server = tls_server(harness, fast_impl, pki, first_byte_timeout=0.3)
    before = threading.active_count()
    harness.serve(server)
    silent = [harness.connect(server) for _ in range(10)]
    assert wait_for(lambda: server.stats()["awaiting_first_byte"] == 10)
    assert threading.active_count() == before + 1
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    for client in silent:
        assert client.recv(10) == b""
    assert server.stats()["tls_handshake_failures"] == 0


@pytest.mark.parametrize("attrs, error", [
    ({"ssl_context": "not a context"}, TypeError),
    ({"ssl_handshake_timeout": 0}, ValueError),
    ({"ssl_handshake_timeout": float("nan")}, ValueError),
    ({"ssl_handshake_timeout": True}, ValueError),
])
def test_ssl_settings_are_checked(fast_impl, harness, pki, attrs, error):
    server = tls_server(harness, fast_impl, pki, **attrs)
    with pytest.raises(error, match="ssl_"):
        server.serve_forever()


def test_ssl_context_is_for_stream_servers(fast_impl, harness, pki):
    server = harness.server(fast_impl.UDPServer, ("127.0.0.1", 0),
                            fast_impl.DatagramRequestHandler)
    server.ssl_context = server_context(pki)
    with pytest.raises(ValueError, match="stream servers"):
        server.serve_forever()


def test_nothing_left_behind_by_tls_clients(fast_impl, pki, capsys):
    threads, fds = threading.active_count(), fd_count()
    server = fast_impl.ThreadingTCPServer(("127.0.0.1", 0), tls_echo(fast_impl))
    server.ssl_context = server_context(pki)
    server.ssl_handshake_timeout = 0.3
    loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    loop.start()
    idle = [socket.create_connection(server.server_address, timeout=WAIT) for _ in range(5)]
    for _ in range(5):
        assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    for client in idle:
        assert client.recv(10) == b""
        client.close()
    assert server.drain(WAIT) is True
    loop.join(WAIT)
    server.server_close()
    assert wait_for(lambda: threading.active_count() <= threads and fd_count() <= fds,
                    timeout=WAIT + 1), (threading.enumerate(), fd_count(), fds)


INSTALLED_SERVERS_SCRIPT = """
import socket, ssl, sys, threading
import fastsockserver
fastsockserver.install()
import http.server, xmlrpc.server, wsgiref.simple_server

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])

""" + SOCKET_TYPE_HTTP_HANDLER + """

class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]

class ThreadingWSGIServer(fastsockserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    pass

servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello),
           xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False),
           ThreadingWSGIServer(("127.0.0.1", 0), Quiet)]
servers[1].register_function(lambda a, b: a + b, "add")
servers[2].set_app(app)
for server in servers:
    server.ssl_context = ctx
    server.ssl_handshake_timeout = 1.0
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(" ".join(str(s.server_address[1]) for s in servers), flush=True)
sys.stdin.readline()
print(" ".join(str(s.stats()["tls_handshake_failures"]) for s in servers), flush=True)
"""


def test_http_xmlrpc_and_wsgiref_servers_with_ssl_context_under_install(fast_impl, pki):
    """install()'s http.server, xmlrpc.server and wsgiref servers take ssl_context too:
    HTTPS, XML-RPC over TLS and a WSGI app, each with a client that never starts TLS."""
    name = "c" if fast_impl.COMPILED else "py"
    proc = subprocess.Popen(
        [sys.executable, "-c", INSTALLED_SERVERS_SCRIPT, str(pki / "server.pem"),
         str(pki / "server.key")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=subprocess_env(name))
    try:
        http_port, xmlrpc_port, wsgi_port = map(int, proc.stdout.readline().split())
        idle = [socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                for port in (http_port, xmlrpc_port, wsgi_port)]
        ctx = client_context(pki)
        https = http.client.HTTPSConnection("127.0.0.1", http_port, context=ctx, timeout=0.8)
        https.request("GET", "/")
        assert https.getresponse().read() == b"SSLSocket"
        https.close()
        proxy = xmlrpc.client.ServerProxy("https://127.0.0.1:{}".format(xmlrpc_port),
                                          context=ctx)
        assert proxy.add(2, 3) == 5
        proxy("close")()
        wsgi = http.client.HTTPSConnection("127.0.0.1", wsgi_port, context=ctx, timeout=0.8)
        wsgi.request("GET", "/")
        assert wsgi.getresponse().read() == b"wsgi"
        wsgi.close()
        for sock in idle:
            assert sock.recv(10) == b""  # each closed after its handshake time
            sock.close()
        out, err = proc.communicate("\n", timeout=SUBPROCESS_TIMEOUT)
        assert out.split() == ["1", "1", "1"], err
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------- limits and drain over TLS

def keepalive_tls_echo(mod, **attrs):
    class Handler(mod.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line.upper())
    for name, value in attrs.items():
        setattr(Handler, name, value)
    return Handler


def tls_client(pki, server):
    raw = socket.create_connection(server.server_address, timeout=WAIT)
    return client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def test_idle_timeout_and_headers_timeout_over_tls(fast_impl, harness, pki):
    handler = keepalive_tls_echo(fast_impl, idle_timeout=0.4, headers_timeout=0.4)
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), handler)
    server.ssl_context = server_context(pki)
    harness.serve(server)
    idle, trickler = tls_client(pki, server), tls_client(pki, server)
    assert ask(idle) == b"PING\n"
    start = time.monotonic()
    for _ in range(20):  # a byte every 0.1 s, each in its own TLS record
        try:
            trickler.sendall(b"x")
        except OSError:
            break
        time.sleep(0.1)
        if server.stats()["headers_timeouts"]:
            break
    assert idle.recv(10) == b""  # idle past the limit after its request: closed
    assert wait_for(lambda: server.stats()["headers_timeouts"] == 1)
    assert time.monotonic() - start < 1.5
    assert wait_for(lambda: server.stats()["idle_timeouts"] == 1)


def test_drain_ends_idle_tls_keepalive_and_lets_a_request_finish(fast_impl, harness, pki):
    started, release = threading.Event(), threading.Event()

    class Handler(fast_impl.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                if line == b"slow\n":
                    started.set()
                    release.wait(WAIT)
                self.wfile.write(line.upper())

    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    server.ssl_context = server_context(pki)
    harness.serve(server)
    idle, busy = tls_client(pki, server), tls_client(pki, server)
    assert ask(idle) == b"PING\n"
    busy.sendall(b"slow\n")
    assert started.wait(WAIT)
    outcome = []
    drainer = threading.Thread(target=lambda: outcome.append(server.drain(WAIT)))
    drainer.start()
    assert idle.recv(10) == b""  # idle between requests: ended after the last call
    release.set()
    assert ask(busy, b"") == b"SLOW\n"  # the request in progress finished
    drainer.join(WAIT + 1)
    assert outcome == [True]
    assert server.stats()["drained"] >= 1


# --------------------------------------------------------------- more failure paths

def quiet_tls_server(harness, mod, pki, **attrs):
    """A tls_server whose handle_error counts instead of printing."""
    class Server(mod.ThreadingTCPServer):
        reported = 0
        errors = []
        counting = threading.Lock()  # handler threads run at once without a GIL

        def handle_error(self, request, client_address):
            with self.counting:
                type(self).reported += 1
            self.errors.append(str(sys.exc_info()[1]))

    server = harness.server(Server, ("127.0.0.1", 0), tls_echo(mod))
    server.ssl_context = server_context(pki)
    for name, value in attrs.items():
        setattr(server, name, value)
    return server


def test_a_client_that_resets_mid_handshake(fast_impl, harness, pki):
    server = quiet_tls_server(harness, fast_impl, pki)
    harness.serve(server)
    client = harness.connect(server)
    client.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    time.sleep(0.05)
    reset_close(client)
    assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 1)
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"


def refused_client_certificate(pki, directory, kind):
    """(certificate, key) paths: one from a CA the server does not trust, or one from the
    server's CA that expired in 2020."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    if kind == "untrusted":
        run("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
            "-subj", "/CN=rogue")
        return directory / "rogue.pem", directory / "rogue.key"
    # `openssl ca` is the tool that takes explicit validity dates (OpenSSL 3.0's x509 has none)
    run("req", *ec, "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired")
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("01\n")
    (directory / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n"
        "serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n")
    (directory / "expired.ext").write_text((pki / "client.ext").read_text())
    run("ca", "-batch", "-config", "ca.cnf", "-cert", str(pki / "ca.pem"),
        "-keyfile", str(pki / "ca.key"), "-in", "expired.csr", "-out", "expired.pem",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
        "-extfile", "expired.ext")
    return directory / "expired.pem", directory / "expired.key"


@pytest.mark.parametrize("kind", ["untrusted", "expired"])
def test_a_refused_client_certificate_closes_only_its_connection(fast_impl, harness, pki,
                                                                 tmp_path, kind):
    certificate, key = refused_client_certificate(pki, tmp_path, kind)
    server = quiet_tls_server(harness, fast_impl, pki)
    server.ssl_context = server_context(pki, require_client=True)
    harness.serve(server)
    ctx = client_context(pki)
    ctx.load_cert_chain(str(certificate), str(key))
    with socket.create_connection(server.server_address, timeout=WAIT) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"hello\n")
                tls.recv(100)  # TLS 1.3: the refusal arrives after the client's side is done
    assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 1)
    assert server.reported == 1
    assert ("certificate has expired" if kind == "expired" else "self-signed certificate"
            ) in server.errors[0], server.errors
    assert (ask_tls(pki, server.server_address, with_certificate=True)
            == b"HELLO\nSSLSocket client\n")


def test_shutdown_and_drain_during_handshakes(fast_impl, harness, pki):
    server = quiet_tls_server(harness, fast_impl, pki, ssl_handshake_timeout=0.5)
    harness.serve(server)
    stalled = [harness.connect(server) for _ in range(3)]  # handshakes that never end
    assert wait_for(lambda: server.stats()["active"] == 3)
    start = time.monotonic()
    bounded_shutdown = threading.Thread(target=server.shutdown)
    bounded_shutdown.start()
    bounded_shutdown.join(WAIT)
    assert time.monotonic() - start < 0.4  # the loop never waited for them
    harness.serve(server)
    assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    assert server.drain(WAIT) is True  # they end with their handshake's time
    assert time.monotonic() - start < 2.0
    for client in stalled:
        assert client.recv(10) == b""
    assert server.stats()["tls_handshake_failures"] == 3


def test_thousands_of_failed_handshakes_leak_nothing(fast_impl, pki):
    threads, fds = threading.active_count(), fd_count()

    class Server(fast_impl.ThreadingTCPServer):
        reported = 0
        counting = threading.Lock()  # handler threads run at once without a GIL

        def handle_error(self, request, client_address):
            with self.counting:
                type(self).reported += 1

    server = Server(("127.0.0.1", 0), tls_echo(fast_impl))
    server.ssl_context = server_context(pki)
    loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    loop.start()
    count = 2000

    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    def fail_some(n):
        for _ in range(n):
            with socket.create_connection(server.server_address, timeout=WAIT) as client:
                client.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while client.recv(100):
                    pass

    try:
        fail_some(200)  # warm up: reused threads, caches
        assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 200)
        before = rss_kib()
        workers = [threading.Thread(target=fail_some, args=(count // 4,)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert wait_for(lambda: server.stats()["tls_handshake_failures"] == 200 + count,
                        timeout=WAIT * 2)
        assert Server.reported == 200 + count
        if not SANITIZED:
            assert rss_kib() - before < 8 * 1024  # no per-failure growth (2,000 of them)
        assert ask_tls(pki, server.server_address) == b"HELLO\nSSLSocket None\n"
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    assert wait_for(lambda: threading.active_count() <= threads and fd_count() <= fds,
                    timeout=WAIT + 1), (threading.enumerate(), fd_count(), fds)
