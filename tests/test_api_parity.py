"""The API of fastsockserver (pure and compiled) against the stdlib
``socketserver`` of the running Python: names, class hierarchy, methods,
signatures, class attributes, and the private names real code touches.

Deliberate differences are asserted as differences (``DELIBERATE``), so that
changing one is a visible decision.
"""
import inspect
import socket
import socketserver as stdlib
import sys
import threading

import pytest

# Classes of the stdlib API, and the private helpers that real code uses.
PUBLIC_CLASSES = [name for name in stdlib.__all__]
PRIVATE_CLASSES = ["_SocketWriter", "_Threads", "_NoThreads"]
ALL_CLASSES = PUBLIC_CLASSES + PRIVATE_CLASSES

# Class attributes whose fastsockserver value differs on purpose:
# name -> check(value) for fastsockserver.
DELIBERATE = {
    # The maintainers raise the listen backlog to socket.SOMAXCONN (CPython
    # 3.15 makes the same change; test_python_versions checks each version's
    # value); only require a usable int.
    "request_queue_size": lambda v: isinstance(v, int) and v >= 5,
    # True in fastsockserver (applied to TCP only): no ~40 ms delayed-ACK
    # stall on responses written in two parts. Documented in _server.py.
    "disable_nagle_algorithm": lambda v: v in (True, False),
}
# Public names fastsockserver adds on purpose (opt-in, docs/migration.rst),
# by the class that defines them.
ADDED_PUBLIC = {
    "BaseServer": {"drain", "stats", "ssl_context", "ssl_handshake_timeout"},
    "TCPServer": {"first_byte_timeout", "proxy_protocol_from", "proxy_header_timeout"},
    "ThreadingMixIn": {"reuse_threads", "max_threads"},
    "StreamRequestHandler": {"idle_timeout", "headers_timeout"},
}


def added_public(cls):
    """The names fastsockserver adds to ``cls`` (its own or inherited)."""
    names = set()
    for base in cls.__mro__:
        names |= ADDED_PUBLIC.get(base.__name__, set())
    return names


def public_names(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def own_functions(cls):
    """Methods defined in the class body (public, dunder and private)."""
    return {name: value for name, value in vars(cls).items()
            if callable(value) and not isinstance(value, type)
            and name not in ("__init_subclass__", "_abc_impl")}


# --------------------------------------------------------------- names

def test_stdlib_all_exists_in_fastsockserver(fast_impl):
    for name in stdlib.__all__:
        assert hasattr(fast_impl, name), name
        assert name in fast_impl.__all__, name


def test_fastsockserver_all_is_exactly_its_public_names(fast_impl):
    defined = [name for name in dir(fast_impl)
               if not name.startswith("_")
               and getattr(getattr(fast_impl, name), "__module__", None) == fast_impl.__name__]
    assert sorted(fast_impl.__all__) == sorted(defined + ["COMPILED"])
    assert len(set(fast_impl.__all__)) == len(fast_impl.__all__)
    extra = set(fast_impl.__all__) - set(stdlib.__all__)
    assert extra == {"install", "serve", "COMPILED", "adopt_socket", "listen_fds"}
    assert isinstance(fast_impl.COMPILED, bool)


def test_fastsockserver_all_order_starts_like_stdlib(fast_impl):
    assert fast_impl.__all__[:len(stdlib.__all__)] == list(stdlib.__all__)


def test_public_objects_report_fastsockserver_module(fast_impl):
    for name in stdlib.__all__ + ["install"]:
        obj = getattr(fast_impl, name)
        assert obj.__module__ == fast_impl.__name__, name
        assert obj.__qualname__ == name


@pytest.mark.parametrize("attr", ["socket", "selectors", "os", "sys", "threading"])
def test_module_attributes_reached_through(fast_impl, attr):
    # code like ``socketserver.socket.AF_INET`` keeps working
    assert getattr(fast_impl, attr) is getattr(stdlib, attr)


# --------------------------------------------------------------- classes

@pytest.mark.parametrize("name", ALL_CLASSES)
def test_mro_shape(fast_impl, name):
    ours = [c.__name__ for c in getattr(fast_impl, name).__mro__]
    theirs = [c.__name__ for c in getattr(stdlib, name).__mro__]
    assert ours == theirs


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_bases_are_fastsockserver_classes(fast_impl, name):
    for base in getattr(fast_impl, name).__mro__:
        if base.__module__ in ("builtins", "_io", "io", "abc"):
            continue
        assert base.__module__.partition(".")[0] == fast_impl.__name__, base


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_same_public_names(fast_impl, name):
    ours = public_names(getattr(fast_impl, name))
    theirs = public_names(getattr(stdlib, name))
    assert theirs <= ours, theirs - ours
    assert ours - theirs == added_public(getattr(fast_impl, name))


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_same_methods_and_signatures(fast_impl, name):
    ours_cls, theirs_cls = getattr(fast_impl, name), getattr(stdlib, name)
    # every method the stdlib class defines or inherits, public or not (but
    # not the ones from object / io)
    checked = 0
    for attr in dir(theirs_cls):
        theirs = getattr(theirs_cls, attr)
        if not inspect.isfunction(theirs):
            continue
        if theirs.__module__ != "socketserver":
            continue
        ours = getattr(ours_cls, attr, None)
        assert ours is not None, attr
        assert callable(ours), attr
        assert inspect.signature(ours) == inspect.signature(theirs), attr
        checked += 1
    assert checked > 0
    # the methods defined in the class body are the same set (where a class
    # overrides a method, fastsockserver's does too)
    theirs_own = set(own_functions(theirs_cls))
    ours_own = set(own_functions(ours_cls))
    assert theirs_own <= ours_own, theirs_own - ours_own


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_no_extra_public_methods(fast_impl, name):
    ours_cls, theirs_cls = getattr(fast_impl, name), getattr(stdlib, name)
    extra = {attr for attr in own_functions(ours_cls)
             if not attr.startswith("_") and not hasattr(theirs_cls, attr)}
    assert extra == {"drain", "stats"} & ADDED_PUBLIC.get(name, set())


def test_some_signatures_spelled_out(fast_impl):
    """A few signatures written out, so the comparison above cannot be vacuous."""
    sig = inspect.signature
    assert str(sig(fast_impl.TCPServer.__init__)) == \
        "(self, server_address, RequestHandlerClass, bind_and_activate=True)"
    assert str(sig(fast_impl.BaseServer.serve_forever)) == "(self, poll_interval=0.5)"
    assert str(sig(fast_impl.ForkingMixIn.collect_children)) == "(self, *, blocking=False)"
    assert str(sig(fast_impl.BaseRequestHandler.__init__)) == \
        "(self, request, client_address, server)"
    assert str(sig(fast_impl.ThreadingMixIn.process_request_thread)) == \
        "(self, request, client_address)"


CLASS_ATTRIBUTES = ["request_queue_size", "allow_reuse_address", "allow_reuse_port",
                    "timeout", "max_children", "daemon_threads", "block_on_close",
                    "rbufsize", "wbufsize", "max_packet_size", "address_family",
                    "socket_type", "active_children", "disable_nagle_algorithm"]


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_class_attribute_values(fast_impl, name):
    ours_cls, theirs_cls = getattr(fast_impl, name), getattr(stdlib, name)
    compared = set()
    for attr in dir(theirs_cls):
        if attr.startswith("__") or attr == "_abc_impl":
            continue
        theirs = getattr(theirs_cls, attr)
        if callable(theirs) and not isinstance(theirs, (int, bool)):
            continue
        assert hasattr(ours_cls, attr), attr
        ours = getattr(ours_cls, attr)
        if attr == "_threads":
            assert type(ours).__name__ == type(theirs).__name__ == "_NoThreads"
        elif attr in DELIBERATE:
            assert DELIBERATE[attr](ours), (attr, ours)
        else:
            assert ours == theirs, attr
            assert type(ours) is type(theirs), attr
        compared.add(attr)
    # presence of the listed attributes follows the stdlib (allow_reuse_port: 3.11+)
    for attr in CLASS_ATTRIBUTES:
        assert hasattr(ours_cls, attr) == hasattr(theirs_cls, attr), attr


def test_class_attribute_values_spelled_out(fast_impl):
    f = fast_impl
    assert f.BaseServer.timeout is None
    assert f.TCPServer.address_family == socket.AF_INET
    assert f.TCPServer.socket_type == socket.SOCK_STREAM
    assert f.UDPServer.socket_type == socket.SOCK_DGRAM
    assert f.TCPServer.allow_reuse_address is False
    assert f.UDPServer.max_packet_size == 8192
    assert f.ForkingMixIn.timeout == 300
    assert f.ForkingMixIn.max_children == 40
    assert f.ForkingMixIn.active_children is None
    assert f.ForkingMixIn.block_on_close is True
    assert f.ThreadingMixIn.daemon_threads is False
    assert f.ThreadingMixIn.block_on_close is True
    assert f.StreamRequestHandler.rbufsize == -1
    assert f.StreamRequestHandler.wbufsize == 0
    assert f.StreamRequestHandler.timeout is None
    if hasattr(socket, "AF_UNIX"):
        assert f.UnixStreamServer.address_family == socket.AF_UNIX
        assert f.UnixDatagramServer.address_family == socket.AF_UNIX
    if hasattr(stdlib.TCPServer, "allow_reuse_port"):
        assert f.TCPServer.allow_reuse_port is False
        assert f.UDPServer.allow_reuse_port is False


def test_request_queue_size_deliberate_difference(fast_impl):
    # The maintainers change the default to socket.SOMAXCONN on purpose; the
    # stdlib's is 5 up to 3.14 (from 3.15 its own value: test_python_versions).
    value = fast_impl.TCPServer.request_queue_size
    assert isinstance(value, int) and value >= socket.SOMAXCONN
    if sys.version_info < (3, 15):
        assert stdlib.TCPServer.request_queue_size == 5


def test_disable_nagle_algorithm_deliberate_difference(fast_impl):
    # stdlib: False. fastsockserver: True (TCP only), see StreamRequestHandler.
    assert stdlib.StreamRequestHandler.disable_nagle_algorithm is False
    assert fast_impl.StreamRequestHandler.disable_nagle_algorithm is True


def test_reuse_threads_deliberate_addition(fast_impl):
    assert fast_impl.ThreadingMixIn.reuse_threads is True
    assert not hasattr(stdlib.ThreadingMixIn, "reuse_threads")


@pytest.mark.skipif(not hasattr(stdlib, "ForkingMixIn"), reason="no os.fork")
def test_forking_unix_classes_follow_python_version(fast_impl):
    for name in ("ForkingUnixStreamServer", "ForkingUnixDatagramServer"):
        assert hasattr(fast_impl, name) == hasattr(stdlib, name)
        assert (name in fast_impl.__all__) == (name in stdlib.__all__)


# --------------------------------------------------------------- private names

@pytest.fixture
def server(fast_impl):
    s = fast_impl.ThreadingTCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler)
    try:
        yield s
    finally:
        s.server_close()


def test_private_shutdown_names(fast_impl, server):
    assert server._BaseServer__shutdown_request is False
    event = server._BaseServer__is_shut_down
    assert isinstance(event, threading.Event)
    assert not event.is_set()  # as in the stdlib: set by serve_forever's end
    ref = stdlib.TCPServer(("127.0.0.1", 0), stdlib.BaseRequestHandler)
    try:
        assert ref._BaseServer__is_shut_down.is_set() == event.is_set()
    finally:
        ref.server_close()


def test_private_shutdown_request_flag_stops_serve_forever(fast_impl, server):
    """Code sets _BaseServer__shutdown_request directly (e.g. from a handler)."""
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        assert server._BaseServer__is_shut_down.wait(0.2) is False
        server._BaseServer__shutdown_request = True
        assert server._BaseServer__is_shut_down.wait(5)
    finally:
        # serve_forever clears the flag, then sets __is_shut_down, and only
        # then does its thread end: setting the flag again because the thread
        # is still alive would leave it set. Only stop a loop still running.
        if not server._BaseServer__is_shut_down.is_set():
            server._BaseServer__shutdown_request = True
        t.join(5)
    assert not t.is_alive()
    assert server._BaseServer__shutdown_request is False


def test_private_threads_names(fast_impl, server):
    assert isinstance(server._threads, fast_impl._NoThreads)
    assert isinstance(fast_impl._Threads(), list)
    for attr in ("append", "pop_all", "join", "reap"):
        assert callable(getattr(fast_impl._Threads, attr))
    for attr in ("append", "join"):
        assert callable(getattr(fast_impl._NoThreads, attr))


def test_handle_request_noblock_exists(fast_impl, server):
    assert inspect.signature(server._handle_request_noblock) == \
        inspect.signature(stdlib.BaseServer(None, None)._handle_request_noblock)


def test_socket_writer(fast_impl):
    import io
    a, b = socket.socketpair()
    try:
        w = fast_impl._SocketWriter(a)
        assert isinstance(w, io.BufferedIOBase)
        assert w.writable() and w.fileno() == a.fileno()
        assert w.write(b"abc") == 3
        assert w.write(memoryview(b"defg")) == 4
        b.settimeout(5)
        assert b.recv(10) == b"abcdefg"
    finally:
        a.close()
        b.close()
