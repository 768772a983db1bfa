"""The compiled core's GIL sharing: its fast paths (rfile/wfile calls that do not
block, take_pending) release the GIL and yield the CPU at most every 0.1 ms so
that threads waiting for the GIL get it (see _core.pyx, _share_gil). A yield
also hands the CPU to other processes; a process with one thread has no one to
share with, so it must not yield at all (issue 28: fair on a shared CPU). A
free-threaded build always assumes another thread (its GIL may be off)."""
import socket
import subprocess
import sys
import sysconfig

import pytest

import fastsockserver
from support import WAIT

pytestmark = [
    pytest.mark.c_extension,
    pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built"),
    pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                       reason="a free-threaded build: the core assumes another thread"),
]

# A server without ThreadingMixIn, serving REQUESTS requests in its main thread.
# Each reply is written in 20 pieces, 0.3 ms of work apart: far more than the
# 0.1 ms after which a fast path shares. With "thread", one more thread is
# alive, waiting (as a user's thread or a handler thread would).
SERVER = r"""
import sys, threading, time
import fastsockserver
from fastsockserver import _core

REQUESTS = 5

class Handler(fastsockserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        for _ in range(20):
            until = time.perf_counter() + 0.0003
            while time.perf_counter() < until:
                pass
            self.wfile.write(b"x" * 100)

if sys.argv[1] == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
server = fastsockserver.TCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
before = _core.gil_shares()
for _ in range(REQUESTS):
    server.handle_request()
print(_core.gil_shares() - before, flush=True)
server.server_close()
"""


def _shares_while_serving(kind):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
                client.sendall(b"go\n")
                received = b""
                while len(received) < 2000:
                    chunk = client.recv(4096)
                    assert chunk, "the server closed early"
                    received += chunk
        shares = int(proc.stdout.readline())
        assert proc.wait(WAIT) == 0
        return shares
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_process_with_one_thread_never_yields():
    assert _shares_while_serving("alone") == 0


def test_a_process_with_another_thread_shares():
    """The same server with one more thread alive yields between its writes
    (the test above would pass without any sharing at all: this one says
    there is sharing to leave out)."""
    assert _shares_while_serving("thread") > 0
