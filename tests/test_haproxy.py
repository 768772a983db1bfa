"""A real HAProxy (Debian's haproxy package; tools/run_tests.py installs it) in front of
fastsockserver on loopback: ``send-proxy`` and ``send-proxy-v2`` give the handler the
original client's address in every mode, and a rolling restart of two backends under a
steady keep-alive load fails no request. Each test starts its own haproxy in the
foreground (``-db``) with a generated configuration on free ports, and kills it."""
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from fastsockserver import _proxy
from support import (
    WAIT,
    fd_count,
    free_port,
    needs_fork,
    require_tool,
    subprocess_env,
    wait_for,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))
import rolling_restart  # noqa: E402  (tools/: the scenario, also run for 60 s from there)
from rolling_restart import HAProxy  # noqa: E402
from test_proxy_protocol import address_echo, recording_echo  # noqa: E402

# Clients connect from this loopback address, HAProxy to the backends from
# 127.0.0.1: the handler can tell the original client from the proxy.
CLIENT_HOST = "127.0.0.2"


@pytest.fixture(autouse=True)
def haproxy_command():
    """Every test here drives a real haproxy."""
    return require_tool("haproxy")


@pytest.fixture
def haproxy(tmp_path):
    started = []

    def start(config):
        proxy = HAProxy(str(tmp_path), config)
        started.append(proxy)
        return proxy
    try:
        yield start
    finally:
        for proxy in started:
            proxy.close()


def tcp_proxy(haproxy, backend_port, send_proxy):
    port = free_port()
    proxy = haproxy("""
        frontend fe
            mode tcp
            bind 127.0.0.1:{port}
            default_backend be
        backend be
            mode tcp
            server s1 127.0.0.1:{backend} {send_proxy}
        """.format(port=port, backend=backend_port, send_proxy=send_proxy))
    proxy.wait_ready()
    return port


def ask_from_client_host(port, data):
    """(what came back, the client socket's own address)."""
    with socket.socket() as sock:
        sock.settimeout(WAIT)
        sock.bind((CLIENT_HOST, 0))
        sock.connect(("127.0.0.1", port))
        me = sock.getsockname()
        sock.sendall(data)
        got = b""
        while True:
            chunk = sock.recv(300)
            if not chunk:
                return got, me
            got += chunk


SEND_PROXY = ["send-proxy", "send-proxy-v2"]


@pytest.mark.parametrize("send_proxy", SEND_PROXY)
@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer",
                                 pytest.param("ForkingTCPServer", marks=needs_fork)])
def test_the_handler_sees_the_client_behind_haproxy(fast_impl, harness, haproxy, cls,
                                                    send_proxy):
    server = harness.server(getattr(fast_impl, cls), ("127.0.0.1", 0), address_echo(fast_impl))
    server.proxy_protocol_from = "127.0.0.1"
    harness.serve(server)
    port = tcp_proxy(haproxy, server.server_address[1], send_proxy)
    for _ in range(3):
        got, me = ask_from_client_host(port, b"hello\n")
        assert got == repr(me).encode() + b" hello\n"
    assert server.stats()["proxy_header_failures"] == 0


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_haproxys_tlvs_reach_the_handler(fast_impl, harness, haproxy):
    seen = []
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            recording_echo(fast_impl, seen))
    server.proxy_protocol_from = "127.0.0.1"
    harness.serve(server)
    port = tcp_proxy(haproxy, server.server_address[1], "send-proxy-v2 proxy-v2-options crc32c")
    got, me = ask_from_client_host(port, b"hello\n")
    assert got == b"hello\n" and seen == [me]
    header = seen[0].proxy_header
    assert header.destination == ("127.0.0.1", port)  # HAProxy's frontend, as the client saw
    [(kind, checksum)] = header.tlvs  # PP2_TYPE_CRC32C: the header's, with it zeroed
    assert kind == 0x03
    rebuilt = (_proxy.V2_SIGNATURE + bytes([0x21, 0x11, 0, 12 + 7])
               + socket.inet_aton(me[0]) + socket.inet_aton("127.0.0.1")
               + me[1].to_bytes(2, "big") + port.to_bytes(2, "big") + b"\x03\x00\x04" + bytes(4))
    assert int.from_bytes(checksum, "big") == crc32c(rebuilt)


@pytest.mark.parametrize("send_proxy", SEND_PROXY)
def test_http_server_under_install_behind_haproxy(haproxy, tmp_path, send_proxy):
    program = tmp_path / "app.py"
    program.write_text(textwrap.dedent("""\
        import http.server, sys
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                body = repr(self.client_address).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.proxy_protocol_from = "127.0.0.1"
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """))
    proc = subprocess.Popen([sys.executable, "-m", "fastsockserver", "run", str(program)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env("c"))
    try:
        backend = int(proc.stdout.readline())
        port = tcp_proxy(haproxy, backend, send_proxy)
        got, me = ask_from_client_host(port, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                             b"Connection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(repr(me).encode())
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
    # http.server's log line names the original client; nothing else was reported
    assert err.startswith(CLIENT_HOST + " - - [") and err.count("\n") == 1, err


def test_haproxy_to_an_untrusting_server_is_refused_and_counted(fast_impl, harness, haproxy):
    server = harness.server(fast_impl.ThreadingTCPServer, ("127.0.0.1", 0),
                            address_echo(fast_impl))
    server.proxy_protocol_from = "10.0.0.0/8"  # not HAProxy's 127.0.0.1
    harness.serve(server)
    port = tcp_proxy(haproxy, server.server_address[1], "send-proxy-v2")
    before = fd_count()
    got, _ = ask_from_client_host(port, b"hello\n")
    assert got == b""
    # (HAProxy may try the server again after it closed the first connection: seen
    # once on a loaded machine, two failures)
    assert wait_for(lambda: server.stats()["proxy_header_failures"] >= 1)
    assert wait_for(lambda: server.stats()["active"] == 0 and fd_count() <= before)


# --------------------------------------------------------------- rolling restart

def test_rolling_restart_behind_haproxy_fails_no_request(tmp_path):
    result = rolling_restart.run(str(tmp_path), clients=4, restarts=2, settle=1.0,
                                 env=subprocess_env("c"))
    assert result.restarts == 2
    assert result.failed == [], (len(result.failed), result.ok, result.failed[:5])
    assert result.ok > 200
    # every backend process served: both first ones, and both started again
    assert set(result.served_by) <= result.pids and len(result.served_by) == 4


def test_sighup_reloads_behind_haproxy_fail_no_request(tmp_path):
    """Each backend runs `run --workers 2`; SIGHUP to one, then the other: every
    worker is replaced and no request through HAProxy fails."""
    result = rolling_restart.run(str(tmp_path), clients=4, restarts=2, settle=1.0,
                                 env=subprocess_env("c"), reload=True)
    assert result.restarts == 2
    assert result.failed == [], (len(result.failed), result.ok, result.failed[:5])
    assert result.ok > 200
    # the workers the reloads started (2 per backend; how HAProxy's connections
    # spread over a backend's two is the kernel's) served in each backend
    reloaded = result.served_by[2:]
    assert len(reloaded) == 4, reloaded
    assert set(reloaded[:2]) & result.pids and set(reloaded[2:]) & result.pids, (
        reloaded, result.pids)
