"""Running a server as a service in this process: SIGTERM or SIGINT drains it
(serve_here, run --drain-timeout). fastsockserver.serve() is in _workers, which
uses this module (and this one imports nothing of the service layer)."""
import os
import signal
import sys
import threading
import time

from ._server import _NoThreads, serving_servers
from ._stream_io import end_all_readers, snapshot

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name))


class _StopNow(BaseException):
    """A second signal while draining."""


def serve_here(server, drain_timeout, poll_interval, signals=SIGNALS, close=True,
               unblock=False):
    """serve() in this process, drained on the first of ``signals`` (which
    ``unblock`` unblocks once they are handled: a worker's, see _workers)."""
    outcome = []
    drainer = []

    def drain():
        outcome.append(server.drain(drain_timeout))

    def on_signal(signum, frame):
        if drainer:
            raise _StopNow(signum)
        thread = threading.Thread(target=drain, name="fastsockserver-drain", daemon=True)
        drainer.append(thread)
        thread.start()

    previous = {number: signal.signal(number, on_signal) for number in signals}
    if unblock:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    drained = True
    try:
        try:
            server.serve_forever(poll_interval)
            if drainer:
                drainer[0].join()  # a second signal interrupts it
                drained = outcome[0] if outcome else False
        except _StopNow:
            drained = False
        if not drained:
            for number in signals:  # a third signal: nothing more to stop
                signal.signal(number, signal.SIG_IGN)
            end_all_readers(server._serving_state)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if not drained:
            # server_close() must not wait for handlers that outlived the drain
            server.block_on_close = False  # ForkingMixIn: no blocking waitpid
            if hasattr(server, "_threads"):  # ThreadingMixIn: joins what it lists
                server._threads = _NoThreads()
        if close:
            server.server_close()
    return drained


def install_drain_on_signals(drain_timeout, stderr=sys.stderr):
    """For ``python -m fastsockserver run --drain-timeout``: the first SIGTERM or
    SIGINT drains every server in serve_forever(), the program then goes on
    (its serve_forever() returns); a second signal, or handlers still running
    2 s after the deadline, end the process at once."""
    started = []

    def drain_all(servers):
        results = []
        drains = [threading.Thread(target=lambda s=server: results.append(s.drain(drain_timeout)),
                                   daemon=True) for server in servers]
        for thread in drains:  # all at once: none takes new connections meanwhile
            thread.start()
        for thread in drains:
            thread.join()
        if all(results):
            return
        for server in servers:
            end_all_readers(server._serving_state)
        time.sleep(2.0)
        print("fastsockserver: handlers still running {:g} s after the drain began; "
              "exiting".format(drain_timeout), file=stderr, flush=True)
        os._exit(1)

    def on_signal(signum, frame):
        if started:
            print("fastsockserver: second signal; exiting now", file=stderr, flush=True)
            os._exit(128 + signum)
        servers = snapshot(serving_servers)
        if not servers:  # nothing serving yet (or any more): the signal's usual effect
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT
                          else signal.default_int_handler)
            signal.raise_signal(signum)
            return
        started.append(True)
        # Not a daemon: the program's serve_forever() returns at once, and the
        # interpreter's exit must wait for the drain (handler threads, daemons
        # in ThreadingHTTPServer, would be cut mid-response).
        threading.Thread(target=drain_all, args=(servers,), name="fastsockserver-drain",
                         daemon=False).start()

    for number in SIGNALS:
        signal.signal(number, on_signal)
