"""The end of a request: TCPServer.shutdown_request/close_request take a compiled
path on plain sockets; these are the cases it must leave to the socket object."""
import errno
import socket
import socketserver as stdlib
import struct

from support import wait_for


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
