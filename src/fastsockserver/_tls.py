"""TCPServer.ssl_context: the TLS handshake on the thread (or child) that
handles the connection, not on the loop's thread.

The stdlib's way, a wrapped listener (``server.socket =
ctx.wrap_socket(server.socket, server_side=True)``), runs each handshake in
``get_request()``, on the loop's thread: one client that connects and never
starts TLS stops every other. With ``ssl_context`` set, the loop takes plain
connections in; ``handshake`` wraps each and completes its handshake where
the request is handled, within ``ssl_handshake_timeout`` seconds, just
before ``finish_request``. The handler then gets the ``ssl.SSLSocket``, as
with a wrapped listener. A failed or timed-out handshake is reported through
``handle_error``, counted (``tls_handshake_failures``) and closed by the
usual ``shutdown_request``; nobody else waits for it.

For an already-wrapped listener the one line is ``server.ssl_context =
server.socket.context``: connections are then accepted from it as plain
sockets (``socket.socket.accept``) and wrapped as above, with the listener's
``suppress_ragged_eofs``.

``verify_request`` runs on the loop before the handshake: it sees the plain
connection and the client's address, not a certificate.
"""
import socket
import ssl

from ._core_select import core


def validate(server):
    """The server's ssl_context, checked (None: off)."""
    context = getattr(server, "ssl_context", None)
    if context is None:
        return None
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("ssl_context must be an ssl.SSLContext or None, not {}".format(
            type(context).__name__))
    if getattr(server, "socket_type", None) != socket.SOCK_STREAM:
        raise ValueError("ssl_context applies to stream servers, not {}".format(
            type(server).__name__))
    timeout = server.ssl_handshake_timeout
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        raise ValueError("ssl_handshake_timeout must be None or a positive number of "
                         "seconds, not {!r}".format(timeout))
    return context


def accept(listener):
    """TCPServer.get_request with ssl_context: a wrapped listener's accept()
    without its handshake (that is ``handshake``'s, later)."""
    if isinstance(listener, ssl.SSLSocket):
        return socket.socket.accept(listener)
    return listener.accept()


def handshake(server, request, client_address):
    """(connection, ok): ``request`` wrapped in ``server.ssl_context`` after a
    completed handshake, ok True; or, ok False, what to shut down after a
    failure that was reported (handle_error) and counted."""
    if isinstance(request, ssl.SSLSocket):
        return request, True  # wrapped already (a get_request of the user's)
    listener = getattr(server, "socket", None)
    suppress = getattr(listener, "suppress_ragged_eofs", True)
    connection = request
    try:
        timeout = request.gettimeout()
        connection = server.ssl_context.wrap_socket(
            request, server_side=True, do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress)
        connection.settimeout(server.ssl_handshake_timeout)
        connection.do_handshake()
        connection.settimeout(timeout)
    except Exception:
        core.handshake_failed(server._serving_state)
        server.handle_error(connection, client_address)
        return connection, False
    return connection, True
