"""Which steps of serving stay in the core: decided once per ``serve_forever()``.

A step stays in the core only where skipping the Python hook is invisible:
the hook it replaces is the library's own, neither overridden in a subclass
nor assigned on the instance. Everything else runs where the stdlib runs
it, through the slow path. Each later capability (limits, drain, TLS) adds
its field to ServingPlan and its rule here, and nowhere else.
"""
import collections
import socket

from . import _waiting_room
from ._core_api import HANDLERS_TAKE, MAX_BATCH, RECEIVES

_CORE_FAMILIES = tuple(getattr(socket, name) for name in ("AF_INET", "AF_INET6", "AF_UNIX")
                       if hasattr(socket, name))


# (collections.namedtuple, not typing.NamedTuple: `import fastsockserver` should not
# cost typing's import, a third of the package's import time.)
class ServingPlan(collections.namedtuple("ServingPlan", (
        "fd", "listener", "batch", "handlers_take", "max_handlers", "first_byte_timeout"))):
    """What the core does itself while serve_forever() runs.

    fd (int): the descriptor the loop waits on, ``server.fileno()``.
    listener (socket or None): the socket the core accepts/receives on itself,
    handing each request to ``_verify_and_process``; None: ``_handle_request_noblock()``
    per wake-up.
    batch (int): requests taken per wake-up (1 where service_actions must run after each).
    handlers_take (bool): ThreadingMixIn's handler threads take the next waiting
    request themselves.
    max_handlers (int): ThreadingMixIn.max_threads: no request is taken while that
    many are handled (0: no limit).
    first_byte_timeout (float or None): TCPServer.first_byte_timeout: new connections
    wait in the server's waiting room until they speak (see _waiting_room); None:
    handed on at once.
    """

    __slots__ = ()


def server_fd(server):
    """The descriptor to wait on, resolved as ``selectors`` resolves ``register(server)``."""
    try:
        fd = int(server.fileno())
    except (AttributeError, TypeError, ValueError):
        raise ValueError("Invalid file object: {!r}".format(server)) from None
    if fd < 0:
        raise ValueError("Invalid file descriptor: {}".format(fd))
    return fd


def plan_serving(server, core, library):
    """The ServingPlan for ``server`` on ``core`` (an implementation of _core_api);
    ``library``: the class hierarchy (_server) whose hooks are the library's own."""
    _server = library
    fd = server_fd(server)
    own_service_actions = _uses_own(server, "service_actions", _server.BaseServer.service_actions)
    listener = None
    tls_listener_type = _tls_listener_type(server)
    if RECEIVES in core.FEATURES:
        listener = _own_receive_path(server, fd, _server, tls_listener_type)
    # Only with the library's no-op service_actions may requests be taken in
    # batches (or by handler threads): the stdlib calls it after every
    # request, and ForkingMixIn relies on it to keep below max_children.
    batch = MAX_BATCH if listener is not None and own_service_actions else 1
    max_handlers = _max_handlers(server, _server.ThreadingMixIn)
    first_byte_timeout = _first_byte_timeout(server)
    if getattr(server, "proxy_protocol_from", None) is not None:
        from . import _proxy  # (read per connection, off the loop; checked here, once)
        _proxy.validate(server)
    # Handler threads may take the next request only where the loop would
    # have called nothing but the library's own code on it, and without a
    # cap: then only the loop takes requests in, so a check of the count and
    # the take that follows cannot interleave with another thread's. Nor
    # with a waiting room: they would take silent connections past it.
    handlers_take = (listener is not None and own_service_actions and not max_handlers
                     and first_byte_timeout is None
                     and HANDLERS_TAKE in core.FEATURES
                     and _uses_own(server, "verify_request", _server.BaseServer.verify_request)
                     and _uses_own(server, "process_request",
                                   _server.ThreadingMixIn.process_request))
    return ServingPlan(fd=fd, listener=listener, batch=batch, handlers_take=handlers_take,
                       max_handlers=max_handlers, first_byte_timeout=first_byte_timeout)


def _max_handlers(server, threading_mixin):
    limit = getattr(server, "max_threads", None) if isinstance(server, threading_mixin) else None
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit < 2 ** 31:
        raise ValueError("max_threads must be None or a positive int, not {!r}".format(limit))
    return limit


def _first_byte_timeout(server):
    timeout = _waiting_room.validate(getattr(server, "first_byte_timeout", None))
    if timeout is not None and getattr(server, "socket_type", None) != socket.SOCK_STREAM:
        raise ValueError("first_byte_timeout applies to stream servers, not {}".format(
            type(server).__name__))
    return timeout


def _uses_own(server, name, function):
    """True when ``server.<name>`` is the library's ``function``: neither
    overridden in a subclass nor assigned on the instance."""
    return (name not in getattr(server, "__dict__", ())
            and getattr(type(server), name, None) is function)


def _tls_listener_type(server):
    """With a valid ssl_context, ssl.SSLSocket (a wrapped listener is then
    accepted from as a plain one); else None."""
    if getattr(server, "ssl_context", None) is None:
        return None
    from . import _tls  # (imports ssl: only for servers that use it)
    _tls.validate(server)
    return _tls.ssl.SSLSocket


def _own_receive_path(server, fd, library, tls_listener_type=None):
    """The listening socket, if taking a request in is the library's own code.

    That is: get_request, _handle_request_noblock and _verify_and_process
    neither overridden nor assigned on the instance, and a plain blocking
    socket.socket of a family the core knows behind fileno() (or one of
    ``tls_listener_type``: see _tls). The core then
    calls _verify_and_process(request, client_address), so verify_request,
    process_request and every later hook run as usual.
    """
    base = library.BaseServer
    if not (_uses_own(server, "_handle_request_noblock", base._handle_request_noblock)
            and _uses_own(server, "_verify_and_process", base._verify_and_process)):
        return None
    listener = getattr(server, "socket", None)
    # With ssl_context, a wrapped listener's connections are taken in plain
    # (TCPServer.get_request then does the same), and handshaken later.
    plain = type(listener) is socket.socket or type(listener) is tls_listener_type
    if (not plain or listener.gettimeout() is not None
            or listener.fileno() != fd or listener.family not in _CORE_FAMILIES):
        return None
    if listener.type == socket.SOCK_STREAM:
        own_get_request = library.TCPServer.get_request
    elif listener.type == socket.SOCK_DGRAM:
        own_get_request = library.UDPServer.get_request
    else:
        return None
    return listener if _uses_own(server, "get_request", own_get_request) else None
