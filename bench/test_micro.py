"""Hot paths, one operation per round: accept and dispatch, handler setup, rfile readline,
wfile write. Each runs on stdlib / pure / compiled (the ``impl`` fixture)."""
import socket

import pytest

LINE = b"x" * 63 + b"\n"
KIB = b"y" * 1024


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


class _Server:
    """What a handler needs of its server."""


@pytest.mark.parametrize("server_class", ["TCPServer", "ThreadingTCPServer"])
def test_accept_and_dispatch(bench, impl, server_class):
    """connect; handle_request(): accept, verify, dispatch, no-op handler, close; client close."""
    class Noop(impl.BaseRequestHandler):
        def handle(self):
            pass

    with getattr(impl, server_class)(("127.0.0.1", 0), Noop) as server:
        server.request_queue_size = 128
        server.socket.listen(128)
        address = server.server_address

        def one():
            client = socket.create_connection(address)
            server.handle_request()
            client.close()

        bench(one)


def test_udp_dispatch(bench, impl):
    """sendto; handle_request() of a UDPServer with a DatagramRequestHandler echo; recv."""
    class Echo(impl.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())

    with impl.UDPServer(("127.0.0.1", 0), Echo) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect(server.server_address)

        def one():
            client.send(LINE)
            server.handle_request()
            client.recv(256)

        bench(one)


def test_handler_setup(bench, impl, pair):
    """StreamRequestHandler construction: setup (makefile, writer), no-op handle, finish."""
    class Noop(impl.StreamRequestHandler):
        def handle(self):
            pass

    conn, _ = pair
    server = _Server()
    bench(Noop, conn, ("127.0.0.1", 1), server)


def _stream_handler(impl, conn):
    class Keep(impl.StreamRequestHandler):
        def handle(self):
            pass

        def finish(self):   # keep rfile / wfile open for the benchmark
            pass

    return Keep(conn, ("127.0.0.1", 1), _Server())


def test_rfile_readline(bench, impl, pair):
    """peer sends a 64-byte line; handler.rfile.readline() reads it."""
    conn, peer = pair
    handler = _stream_handler(impl, conn)

    def one():
        peer.send(LINE)
        return handler.rfile.readline()

    assert bench(one) == LINE
    handler.rfile.close()
    handler.wfile.close()


def test_wfile_write(bench, impl, pair):
    """handler.wfile.write(1 KiB); the peer reads it."""
    conn, peer = pair
    handler = _stream_handler(impl, conn)

    def one():
        handler.wfile.write(KIB)
        return len(peer.recv(4096))

    bench(one)
    handler.rfile.close()
    handler.wfile.close()
