"""The compiled core's two sets of system calls: Linux's (epoll, accept4, MSG_NOSIGNAL, a
futex to hand the GIL over) and the portable ones macOS and the BSDs compile (poll, accept +
fcntl, no MSG_NOSIGNAL, sched_yield), which
``FASTSOCKSERVER_PORTABLE_CORE=1`` (setup.py) builds here. tools/run_tests.py runs the whole
suite once on such a build, with the variable set: these tests fail if the core in use is not
the build the run asked for, and check what differs between the two."""
import errno
import os
import signal
import socket
import sys
import sysconfig

import pytest

import fastsockserver
from fastsockserver import _core_api
from support import PORTABLE_RUN, import_line, run_code, subprocess_env

pytestmark = pytest.mark.c_extension

# (where there may be no GIL, the core yields instead of handing it over)
FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.fixture
def compiled_core(request):
    if request.config.getoption("--no-c-extensions") or not fastsockserver.COMPILED:
        pytest.skip("compiled core not available")
    from fastsockserver import _core
    return _core


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="both builds exist on Linux")
def test_the_core_is_the_build_the_run_asked_for(compiled_core):
    assert compiled_core.PORTABLE_CORE is PORTABLE_RUN
    if PORTABLE_RUN:
        assert compiled_core.SYSTEM_CALLS == {
            "wait": "poll", "accept": "accept+fcntl", "send": "no MSG_NOSIGNAL",
            "share": "sched_yield"}
        assert _core_api.EPOLL not in compiled_core.FEATURES
    else:
        assert compiled_core.SYSTEM_CALLS == {
            "wait": "epoll", "accept": "accept4", "send": "MSG_NOSIGNAL",
            "share": "sched_yield" if FREE_THREADED_BUILD else "futex hand-over"}
        assert _core_api.EPOLL in compiled_core.FEATURES
    assert {_core_api.RECEIVES, _core_api.HANDLERS_TAKE} <= compiled_core.FEATURES


# A handler that shuts its own connection's sending side, then writes through the
# library's wfile: send() fails with EPIPE, and raises SIGPIPE unless told not to
# (MSG_NOSIGNAL). With SIGPIPE back at SIG_DFL the signal ends the process.
SIGPIPE_SERVER = """
import signal, socket, sys, threading
{import_line}
signal.signal(signal.SIGPIPE, signal.{disposition})

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        self.connection.shutdown(socket.SHUT_WR)
        try:
            self.wfile.write(b"after the end\\n")
        except OSError as exc:
            print("raised", type(exc).__name__, exc.errno, flush=True)

with ss.TCPServer(("127.0.0.1", 0), Handler) as server:
    client = socket.create_connection(server.server_address, timeout=5)
    client.sendall(b"hello\\n")
    server.handle_request()
    client.close()
print("survived", flush=True)
"""


@pytest.mark.parametrize("disposition", ["SIG_IGN", "SIG_DFL"])
@pytest.mark.parametrize("name", ["stdlib", "c"])
def test_a_write_after_the_end_and_sigpipe(request, compiled_core, name, disposition):
    """Python starts with SIGPIPE ignored: every build then raises BrokenPipeError, as the
    stdlib does. A program that restores SIG_DFL dies of the signal in the stdlib's sendall;
    the Linux core's first try (a send with MSG_NOSIGNAL) raises instead, and the portable
    core's, with no MSG_NOSIGNAL, dies as the stdlib does."""
    result = run_code(SIGPIPE_SERVER.format(import_line=import_line(name),
                                            disposition=disposition),
                      env=subprocess_env(name), timeout=30)
    killed = -signal.SIGPIPE
    if disposition == "SIG_IGN":
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:2] == [
            "raised BrokenPipeError {}".format(errno.EPIPE), "survived"]
    elif name == "stdlib" or compiled_core.SYSTEM_CALLS["send"] != "MSG_NOSIGNAL":
        assert result.returncode == killed, (result.returncode, result.stdout, result.stderr)
        assert "raised" not in result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("raised BrokenPipeError")


def test_accepted_descriptors_are_close_on_exec_and_blocking(compiled_core, harness):
    """accept4(SOCK_CLOEXEC) on Linux; accept, then fcntl FD_CLOEXEC and O_NONBLOCK
    cleared on the portable path (BSDs pass the listener's O_NONBLOCK on)."""
    seen = {}

    class Handler(fastsockserver.BaseRequestHandler):
        def handle(self):
            seen["flags"] = (os.get_inheritable(self.request.fileno()),
                             os.get_blocking(self.request.fileno()),
                             self.request.gettimeout())
            self.request.sendall(self.request.recv(10))

    server = harness.server(fastsockserver.ThreadingTCPServer, ("127.0.0.1", 0), Handler)
    harness.serve(server)
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(10) == b"ping"
    assert seen["flags"] == (False, True, None)
