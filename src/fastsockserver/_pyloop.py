"""Pure-Python twin of the compiled core (``fastsockserver._core``).

Both modules offer the same functions with the same behaviour; ``_impl``
picks one. This is the stdlib's algorithm: a poll selector on the server's
descriptor, ``_handle_request_noblock()`` when it is readable, then
``service_actions()``, until ``shutdown()`` sets the flag.
"""
import selectors

if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector


def serve(server, fd, poll_interval):
    """Run ``server``'s request loop until ``server.shutdown()`` is called."""
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not server._BaseServer__shutdown_request:
            ready = selector.select(poll_interval)
            # bpo-35017: shutdown() called during select(), exit immediately.
            if server._BaseServer__shutdown_request:
                break
            if ready:
                server._handle_request_noblock()
            server.service_actions()


def wait_readable(fd, timeout):
    """Wait up to ``timeout`` seconds (None: forever) for ``fd`` to be readable."""
    with _ServerSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))
