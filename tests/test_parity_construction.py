"""Constructing and closing servers, the same on the stdlib, pure and compiled:
the context manager, constructor failures, bind/activate, SO_REUSEADDR/SO_REUSEPORT."""
import errno
import os
import socket
import socketserver as stdlib

import pytest

from support import HAS_UNIX, datagram_echo, fd_count, stream_echo


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
