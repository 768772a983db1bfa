"""Pure-Python twin of the compiled core (``fastsockserver._core``).

Both modules offer the same functions with the same behaviour; ``_impl``
picks one. This is the stdlib's algorithm: a poll selector on the server's
descriptor, ``_handle_request_noblock()`` when it is readable, then
``service_actions()``, until ``shutdown()`` sets the flag.
"""
import os
import selectors

if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector


def serve(server, fd, poll_interval, wake_fd):
    """Run ``server``'s request loop until ``server.shutdown()`` is called.

    ``wake_fd`` becomes readable when shutdown() is called: the wait ends at
    once instead of after ``poll_interval``.
    """
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        selector.register(wake_fd, selectors.EVENT_READ)
        while not server._BaseServer__shutdown_request:
            ready = selector.select(poll_interval)
            # bpo-35017: shutdown() called during select(), exit immediately.
            if server._BaseServer__shutdown_request:
                break
            if any(key.fd == fd for key, _ in ready):
                server._handle_request_noblock()
            if any(key.fd == wake_fd for key, _ in ready):
                _drain(wake_fd)
            server.service_actions()


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))
