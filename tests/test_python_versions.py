"""What fastsockserver mirrors of the stdlib's changes in Python 3.14 and 3.15.

Where the change is a decision taken per version, the decision is a function of the
version, tested here for every version; where it is the stdlib's own code running on
top of fastsockserver (http.server's classes under install()), the test compares it
with the stdlib on the running Python, and the 3.14+ ones run in CI (docs/compatibility.rst:
"in CI and the wheel matrix; not run here")."""
import http.client
import http.server
import json
import socket
import socketserver as stdlib
import subprocess
import sys

import pytest
from test_tls import client_context, pki  # noqa: F401 (pki: the fixture)

from support import (
    SOCKET_TYPE_HTTP_HANDLER,
    SUBPROCESS_TIMEOUT,
    WAIT,
    run_code,
    subprocess_env,
)

IMPLS = ["py", pytest.param("c", marks=pytest.mark.c_extension)]


# --------------------------------------------------------------- request_queue_size (3.15)

@pytest.mark.parametrize("version, stdlib_value, expected", [
    ((3, 9, 18), 5, socket.SOMAXCONN),
    ((3, 14, 0), 5, socket.SOMAXCONN),
    ((3, 15, 0), socket.SOMAXCONN, socket.SOMAXCONN),
    ((3, 15, 0), socket.SOMAXCONN * 2, socket.SOMAXCONN * 2),  # the stdlib's own
    ((3, 15, 0), 5, socket.SOMAXCONN),  # never the old 5 again
    ((3, 16), socket.SOMAXCONN * 2, socket.SOMAXCONN * 2),
])
def test_request_queue_size_for_each_version(fast_impl, version, stdlib_value, expected):
    assert fast_impl._server.request_queue_size_for(version, stdlib_value) == expected


def test_request_queue_size_on_this_python(fast_impl):
    value = fast_impl.TCPServer.request_queue_size
    assert value == fast_impl._server.request_queue_size_for(
        sys.version_info, stdlib.TCPServer.request_queue_size)
    if sys.version_info < (3, 15):
        assert (stdlib.TCPServer.request_queue_size, value) == (5, socket.SOMAXCONN)


def test_the_stdlib_value_is_not_ours_after_install(fast_impl):
    """Read again with install() in place (the module run anew), the stdlib's value is
    not taken from fastsockserver itself."""
    code = """
import sys, fastsockserver
fastsockserver.install()
from fastsockserver import _server
print(_server._stdlib_request_queue_size())
"""
    name = "c" if fast_impl.COMPILED else "py"
    result = run_code(code, env=subprocess_env(name))
    assert result.returncode == 0, result.stderr
    # Up to 3.14 the number is known without an import; from 3.15 the stdlib's module,
    # replaced by install(), is not consulted (None: SOMAXCONN is used).
    expected = "5" if sys.version_info < (3, 15) else "None"
    assert result.stdout.strip() == expected


# --------------------------------------------------------------- allow_reuse_port (3.14)

# The servers of the stdlib built on socketserver.TCPServer, which set
# allow_reuse_address / allow_reuse_port themselves (3.14 turned allow_reuse_port on for
# them, then off again, gh-127319): under install() their listener gets the same socket
# options as in the stdlib.
REUSE_SCRIPT = """
import json, socket, sys
if sys.argv[1] != "stdlib":
    import fastsockserver
    fastsockserver.install()
import http.server, xmlrpc.server, socketserver
classes = [http.server.HTTPServer, http.server.ThreadingHTTPServer,
           xmlrpc.server.SimpleXMLRPCServer, socketserver.TCPServer, socketserver.UDPServer]
seen = {}
for cls in classes:
    server = cls(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    options = [getattr(cls, "allow_reuse_address", None), getattr(cls, "allow_reuse_port", None),
               bool(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))]
    if hasattr(socket, "SO_REUSEPORT"):
        options.append(bool(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)))
    seen[cls.__name__] = options
    server.server_close()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("name", IMPLS)
def test_stdlib_servers_reuse_options_under_install(name):
    def options(which):
        result = run_code(REUSE_SCRIPT.replace("sys.argv[1]", repr(which)),
                          env=subprocess_env(which))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert options(name) == options("stdlib")


def test_reuse_port_only_on_inet_sockets(fast_impl, tmp_path):
    """The SO_REUSEPORT family guard of 3.14's server_bind (and of 3.13.2 and 3.12.9):
    on a Unix socket allow_reuse_port is ignored, where Linux 6.12.9+ would refuse it."""
    if not hasattr(fast_impl.TCPServer, "allow_reuse_port"):
        pytest.skip("allow_reuse_port is Python 3.11+")

    class Unix(fast_impl.UnixStreamServer):
        allow_reuse_port = True

    class Inet(fast_impl.TCPServer):
        allow_reuse_port = True

    with Unix(str(tmp_path / "sock"), fast_impl.BaseRequestHandler) as unix:
        if hasattr(socket, "SO_REUSEPORT"):
            assert not unix.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    with Inet(("127.0.0.1", 0), fast_impl.BaseRequestHandler) as inet:
        if hasattr(socket, "SO_REUSEPORT"):
            assert inet.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


# --------------------------------------------------------------- HTTPSServer (3.14)

HTTPS_SCRIPT = """
import sys, threading
import fastsockserver
fastsockserver.install()
import http.server

""" + SOCKET_TYPE_HTTP_HANDLER + """

server = http.server.ThreadingHTTPSServer(("127.0.0.1", 0), Hello, certfile=sys.argv[1],
                                          keyfile=sys.argv[2])
if sys.argv[3] == "ssl_context":
    server.ssl_context = server.socket.context  # docs/tls.rst's one line
    server.ssl_handshake_timeout = 1.0
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.readline()
print(server.stats()["tls_handshake_failures"], flush=True)
"""


@pytest.mark.skipif(not hasattr(http.server, "HTTPSServer"),
                    reason="http.server.HTTPSServer is Python 3.14+ (runs in CI)")
@pytest.mark.parametrize("mode", ["as the stdlib", "ssl_context"])
@pytest.mark.parametrize("name", IMPLS)
def test_https_server_under_install(pki, name, mode):  # noqa: F811 (pki: the fixture)
    """3.14's ThreadingHTTPSServer wraps the listener in server_activate(): under
    install() it serves as in the stdlib (handshakes in get_request(), on the loop);
    with ``server.ssl_context = server.socket.context`` on the handler threads, so a
    client that never starts TLS stalls nobody and is counted."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HTTPS_SCRIPT, str(pki / "server.pem"), str(pki / "server.key"),
         mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=subprocess_env(name))
    try:
        port = int(proc.stdout.readline())
        idle = None
        if mode == "ssl_context":
            idle = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        https = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki),
                                            timeout=WAIT)
        https.request("GET", "/")
        assert https.getresponse().read() == b"SSLSocket"
        https.close()
        if idle is not None:
            assert idle.recv(10) == b""  # closed after ssl_handshake_timeout
            idle.close()
        out, err = proc.communicate("\n", timeout=SUBPROCESS_TIMEOUT)
        assert out.split() == ["1" if idle is not None else "0"], err
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------- CGIHTTPRequestHandler (3.15)

@pytest.mark.parametrize("name", IMPLS)
def test_http_server_names_under_install_are_the_stdlibs(name):
    """install() adds no name to http.server and removes none: 3.15 removed
    CGIHTTPRequestHandler, and under install() it is absent there too (and present
    before 3.15, as in the stdlib)."""
    code = """
import json, sys
if sys.argv[1] != "stdlib":
    import fastsockserver
    fastsockserver.install()
import http.server
print(json.dumps(sorted(n for n in dir(http.server) if not n.startswith("_"))))
"""
    def names(which):
        result = run_code(code.replace("sys.argv[1]", repr(which)), env=subprocess_env(which))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    ours, theirs = names(name), names("stdlib")
    assert ours == theirs
    assert ("CGIHTTPRequestHandler" in theirs) == (sys.version_info < (3, 15))
