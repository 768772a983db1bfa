"""Pure-Python twin of the compiled core (``fastsockserver._core``).

Both modules offer the same functions with the same behaviour; ``_impl``
picks one. This is the stdlib's algorithm: a poll selector on the server's
descriptor, ``_handle_request_noblock()`` when it is readable, then
``service_actions()``, until ``shutdown()`` sets the flag.
"""
import os
import selectors
import socket
from time import monotonic

if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector


def serve(server, fd, poll_interval, wake_fd, listener, batch, handlers_take):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    ``wake_fd`` becomes readable when shutdown() is called: the wait ends at
    once instead of after ``poll_interval``. ``listener``, ``batch`` and
    ``handlers_take`` are for the compiled core's own receive path (and
    always false here: take_pending is None); here every request goes through
    ``_handle_request_noblock()``, as in the stdlib. While the server backs
    off after an out-of-resources accept error, only ``wake_fd`` is watched.
    """
    with _ServerSelector() as selector, _ServerSelector() as wake_only:
        selector.register(fd, selectors.EVENT_READ)
        selector.register(wake_fd, selectors.EVENT_READ)
        wake_only.register(wake_fd, selectors.EVENT_READ)
        while not server._BaseServer__shutdown_request:
            pause = server._BaseServer__accept_resume_at
            if pause:
                pause -= monotonic()
            if pause > 0:
                ready = wake_only.select(
                    pause if poll_interval is None else min(pause, poll_interval))
            else:
                ready = selector.select(poll_interval)
            # bpo-35017: shutdown() called during select(), exit immediately.
            if server._BaseServer__shutdown_request:
                break
            for key, _ in ready:
                if key.fd == wake_fd:
                    _drain(wake_fd)
                else:
                    server._handle_request_noblock()
            server.service_actions()


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


# Handler threads taking the next waiting request themselves (see
# _core.take_pending, _core.hand_to_taker, _core.begin_grace) is a
# compiled-only saving; here each request goes through the loop as in the stdlib.
take_pending = hand_to_taker = begin_grace = None


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


# rfile / wfile: the stdlib's own code (the core's versions first try a
# recv/send that cannot block, keeping the GIL).
socketio_readinto = socket.SocketIO.readinto


def socket_writer_write(self, b):
    """_SocketWriter.write."""
    self._sock.sendall(b)
    with memoryview(b) as view:
        return view.nbytes


def shutdown_write(sock):
    """TCPServer.shutdown_request's sock.shutdown(SHUT_WR), OSError ignored."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def close_socket(sock):
    """TCPServer.close_request's sock.close()."""
    sock.close()
