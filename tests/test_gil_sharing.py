"""The compiled core's GIL sharing: its fast paths (rfile/wfile calls that do not
block, take_pending) let a thread waiting for the GIL have it at most every 0.1 ms
(see _core.pyx, _share_gil).

On Linux with a GIL the core hands the GIL over to the threads it counts, those
coming back from its own waits, and does not yield the CPU: a sched_yield() gave the
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
# "loop": a second server's loop polling every 1 ms in the core (_poll);
# "reader": reads lines through the library's rfile (a blocking recv), which a
# child process sends every 0.5 ms.
# The last two want the GIL back after each wait. On two cores the giver is
# mostly asleep before the other thread has the GIL: a hand-over that its taker
# does not wake (or one that does not release the GIL) times out. (On one CPU
# the taker mostly runs before the giver sleeps: a lost wake-up would not show.)
# Prints the shares and the hand-overs that timed out while serving.
SERVER = r"""
import os, socket, sys, threading, time
import fastsockserver
from fastsockserver import _core
from fastsockserver._stream_io import make_reader

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
elif other == "reader":
    ours, theirs = socket.socketpair()
    if os.fork() == 0:  # (no thread yet) the sender: stops when the reader is gone, or in 5 s
        ours.close()
        try:
            for _ in range(10000):
                theirs.send(b"x\n")
                time.sleep(0.0005)
        finally:
            os._exit(0)
    theirs.close()
    rfile = make_reader(ours)
    threading.Thread(target=lambda: [None for _ in iter(rfile.readline, b"")],
                     daemon=True).start()
server = fastsockserver.TCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
shares, timeouts = _core.gil_shares(), _core.gil_hand_over_timeouts()
for _ in range(REQUESTS):
    server.handle_request()
print(_core.gil_shares() - shares, _core.gil_hand_over_timeouts() - timeouts, flush=True)
server.server_close()
if other == "reader":
    ours.shutdown(socket.SHUT_RDWR)  # the sender's next send fails: it ends
    os.wait()
"""


def _shares_while_serving(other):
    """(shares, hand-overs timed out) while the server served its requests."""
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
        shares, timeouts = map(int, proc.stdout.readline().split())
        assert proc.wait(WAIT) == 0
        return shares, timeouts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_process_with_one_thread_never_shares():
    assert _shares_while_serving("alone") == (0, 0)


@pytest.mark.parametrize("wait", ["loop", "reader"])
def test_a_thread_back_from_the_cores_wait_gets_the_gil(wait):
    """The same server with another thread that comes back from the core's
    poll, or from a blocking recv in rfile, shares between its writes (the
    test above would pass without any sharing at all: this one says there is
    sharing to leave out); where it hands over, the thread that took the GIL
    woke it (a hand-over times out only when none took it in 1 ms)."""
    shares, timeouts = _shares_while_serving(wait)
    assert shares > 0
    if HANDS_OVER:
        assert timeouts <= shares // 2, "hand-overs not ended by the taker"


@pytest.mark.skipif(not HANDS_OVER, reason="the core yields where it cannot hand over")
def test_a_thread_waiting_for_something_else_is_not_given_the_cpu():
    """A thread blocked on an Event is not the core's to hand the GIL to: the
    server keeps its CPU (a yield would give it to other processes)."""
    assert _shares_while_serving("event") == (0, 0)


# A daemon thread of the core's (a loop polling every 1 ms) that comes back from
# its poll once the interpreter finalizes is counted, then ends taking the GIL:
# its count stays. Writes made after that (a finaliser's) must not wait for it.
FINALIZING = r"""
import os, socket, threading, time
import fastsockserver
from fastsockserver import _core
from fastsockserver._stream_io import _SocketWriter

def writes(perf_counter=time.perf_counter, socketpair=socket.socketpair, core=_core,
           writer=_SocketWriter, write=os.write):
    ours, theirs = socketpair()
    out = writer(ours)
    timeouts = core.gil_hand_over_timeouts()
    for _ in range(100):
        until = perf_counter() + 0.0002
        while perf_counter() < until:
            pass
        out.write(b"x")
        theirs.recv(10)
    write(1, b"%d %d\n" % (core.gil_wanted(), core.gil_hand_over_timeouts() - timeouts))
    ours.close()
    theirs.close()

idle = fastsockserver.TCPServer(("127.0.0.1", 0), fastsockserver.BaseRequestHandler)
threading.Thread(target=idle.serve_forever, args=(0.001,), daemon=True).start()
time.sleep(0.05)

class AtFinalization:
    def __del__(self, sleep=time.sleep, writes=writes):
        sleep(0.02)  # the loop's thread comes back from its poll, counted, and ends
        writes()

kept_to_the_end = AtFinalization()
"""


def _two_counts(script):
    """The two numbers ``script`` prints, run in a new interpreter."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=WAIT)
    assert out.returncode == 0, out.stderr
    first, second = map(int, out.stdout.split())
    return first, second


@pytest.mark.skipif(not HANDS_OVER, reason="the core yields where it cannot hand over")
def test_a_thread_ended_by_finalization_is_not_waited_for():
    wanted, timeouts = _two_counts(FINALIZING)
    assert wanted >= 1, "the loop's thread was not left counted: nothing to test"
    assert timeouts == 0


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
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    time.sleep(0.005)  # (releases the GIL: the loop runs to its poll)
    until = time.monotonic() + 0.02
    while _core.gil_wanted() == 0 and time.monotonic() < until:
        pass  # holds the GIL while the loop's poll times out
    if _core.gil_wanted():
        break
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
    in_parent, in_child = _two_counts(FORK)
    assert in_parent >= 1, "the loop's thread was not counted: nothing to forget"
    assert in_child == 0
