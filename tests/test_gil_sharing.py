"""The compiled core's GIL sharing: its fast paths (rfile/wfile calls that do not
block, take_pending) let a thread waiting for the GIL have it at most every 0.1 ms
(see _core.pyx, _share_gil).

On Linux with a GIL the core hands the GIL over to the threads it counts, those
coming back from its own waits, and never yields the CPU: a sched_yield() gave the
core to other processes (issue 28: fair on a shared CPU). A process with one thread
has no one to share with; one whose other thread waits for something else (a lock,
an event) is left to the interpreter's switch interval, as with any CPU-bound
thread. Elsewhere the core yields when threading knows of another thread."""
import os
import socket
import subprocess
import sys
import sysconfig

import pytest

import fastsockserver
from fastsockserver import _core_select
from support import WAIT

pytestmark = [
    pytest.mark.c_extension,
    pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built"),
    pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                       reason="a free-threaded build: the core assumes another thread"),
]

HANDS_OVER = _core_select.core.SYSTEM_CALLS["share"] == "futex hand-over"

# A server without ThreadingMixIn, serving REQUESTS requests in its main thread.
# Each reply is written in 20 pieces, 0.3 ms of work apart: far more than the
# 0.1 ms after which a fast path shares. The other thread, if any:
# "event": waits for an Event (a lock: not one of the core's waits);
# "loop": a second server's loop polling every 1 ms in the core, which wants
# the GIL back after each poll.
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

other = sys.argv[1]
if other == "event":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
elif other == "loop":
    idle = fastsockserver.TCPServer(("127.0.0.1", 0), fastsockserver.BaseRequestHandler)
    threading.Thread(target=idle.serve_forever, args=(0.001,), daemon=True).start()
server = fastsockserver.TCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
before = _core.gil_shares()
for _ in range(REQUESTS):
    server.handle_request()
print(_core.gil_shares() - before, flush=True)
server.server_close()
"""


def _shares_while_serving(other):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, other], stdout=subprocess.PIPE,
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


def test_a_process_with_one_thread_never_shares():
    assert _shares_while_serving("alone") == 0


def test_a_thread_back_from_the_cores_wait_gets_the_gil():
    """The same server with a loop in another thread, which comes back from its
    poll every 1 ms, hands the GIL over between its writes (the test above would
    pass without any sharing at all: this one says there is sharing to leave out)."""
    assert _shares_while_serving("loop") > 0


@pytest.mark.skipif(not HANDS_OVER, reason="the core yields where it cannot hand over")
def test_a_thread_waiting_for_something_else_is_not_given_the_cpu():
    """A thread blocked on an Event is not the core's to hand the GIL to: the
    server keeps its CPU (a yield would give it to other processes)."""
    assert _shares_while_serving("event") == 0


# A thread that came back from the core's poll waits for the GIL, which the
# main thread holds (a long switch interval keeps it there); the main thread
# forks. The child has that count from its parent's memory, but not the thread:
# it must start from 0, or each of its fast paths would sleep waiting for a
# thread that is not there.
FORK = r"""
import os, sys, threading, time
import fastsockserver
from fastsockserver import _core

sys.setswitchinterval(30)
idle = fastsockserver.TCPServer(("127.0.0.1", 0), fastsockserver.BaseRequestHandler)
threading.Thread(target=idle.serve_forever, args=(0.001,), daemon=True).start()
time.sleep(0.05)  # (releases the GIL: the loop starts polling)
deadline = time.monotonic() + 10
while _core.gil_wanted() == 0 and time.monotonic() < deadline:
    pass  # holds the GIL while the loop's poll times out
in_parent = _core.gil_wanted()
reading, writing = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(writing, str(_core.gil_wanted()).encode())
    os._exit(0)
os.close(writing)
in_child = int(os.read(reading, 100))
os.waitpid(pid, 0)
print(in_parent, in_child, flush=True)
os._exit(0)  # (the loop thread still waits for the GIL)
"""


@pytest.mark.skipif(not HANDS_OVER, reason="the core yields where it cannot hand over")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_a_forked_child_counts_no_thread_of_its_parent():
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True,
                         timeout=WAIT)
    assert out.returncode == 0, out.stderr
    in_parent, in_child = map(int, out.stdout.split())
    assert in_parent >= 1, "the loop's thread was not counted: nothing to forget"
    assert in_child == 0
