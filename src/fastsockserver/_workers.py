"""``serve()``, and its worker processes: ``serve(server, workers=N)`` and ``run --workers N``.

The parent has bound and listens (the server's constructor did); it never
accepts. It forks N workers that each run ``serve_forever()`` on the one
listening socket they all inherit (or, with reuse_port, on the SO_REUSEPORT
socket of their slot), and supervises them:

    parent: signals (TERM/INT drain all, HUP replace one by one, TTIN/TTOU
            one more/less), fork, reap, back-off, stats roll-up
    worker: _service.serve_here(server) (the loop, handler threads or forked
            children, the drain on SIGTERM) and a thread that reports
            stats() over a pipe and watches for the parent's death

Why one shared listener by default rather than a SO_REUSEPORT socket per
worker: the connections queued on a SO_REUSEPORT socket are reset when it
closes; the shared listener stays open in the parent, and whatever waits in
its backlog is taken by the other workers. It balances worse (whichever
worker is awake takes a burst), so reuse_port is offered: its sockets belong
to slots the parent keeps open, and a worker's replacement (SIGHUP, a death)
serves the same one; only SIGTTOU closes a slot. (docs/workers.rst has figures.)
"""
import os
import select
import signal
import socket
import sys
import threading
import time

from ._service import SIGNALS, serve_here

REPORT_EVERY = 0.25        # seconds between a worker's stats() reports
QUICK_DEATH = 1.0          # a worker that dies sooner counts towards the back-off
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0
# A worker's exit status: what its drain returned, or an exception.
DRAINED, NOT_DRAINED, CRASHED = 0, 1, 2
# stats() keys that are not summed over the workers.
_GAUGES_ANY = ("backpressured", "draining")
_PARENT_OWN = ("waiting",)  # the shared listener's backlog: the parent reads it itself
_NOW_ONLY = ("active", "awaiting_first_byte")  # gauges: a worker that exited has none


class _Worker:
    __slots__ = ("pid", "started", "pipe", "buffer", "stats", "ready", "retiring", "ended",
                 "slot")

    def __init__(self, pid, pipe, slot):
        self.pid, self.pipe, self.started, self.slot = pid, pipe, time.monotonic(), slot
        self.buffer, self.stats, self.ready, self.retiring = b"", None, False, False
        self.ended = False  # its pipe reached end-of-file: the process is exiting


def _describe(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return "killed by " + signal.Signals(number).name
        except ValueError:
            return "killed by signal {}".format(number)
    return "exit status {}".format(os.WEXITSTATUS(status))


def threads_besides_main():
    main = threading.main_thread()
    return [thread for thread in threading.enumerate() if thread is not main]


def serve(server, *, drain_timeout=30.0, poll_interval=0.5, workers=None, reuse_port=False):
    """Serve ``server`` in this (the main) thread until SIGTERM or SIGINT, then drain it.

    The first signal begins ``server.drain(drain_timeout)``: no new
    connections are taken, requests in progress finish, idle keep-alive
    connections end. A second signal stops at once: the connections still
    open are shut. Then ``server.server_close()`` (without waiting for
    handlers that outlived the drain). Returns True when every handler ended
    within ``drain_timeout``; a ``shutdown()`` from elsewhere returns True
    after server_close(). The previous signal handlers are restored.

    ``workers=N`` (N > 1): N forked worker processes serve the listening
    socket, this process supervises them (see the README); True when every
    worker drained within ``drain_timeout``. ``reuse_port``: each worker
    serves a SO_REUSEPORT listening socket of its own (TCP; see the README).
    """
    if workers is not None and workers != 1:
        try:
            return Supervisor(server, workers, drain_timeout, poll_interval,
                              reuse_port=reuse_port).run()
        finally:
            server.server_close()
    return serve_here(server, drain_timeout, poll_interval)


class Supervisor:
    """The parent of ``count`` workers serving ``server`` (see the module's doc)."""

    def __init__(self, server, count, drain_timeout, poll_interval, stderr=None,
                 reuse_port=False):
        if count < 1:
            raise ValueError("workers must be >= 1, not {!r}".format(count))
        if reuse_port and not (
                hasattr(socket, "SO_REUSEPORT") and server.socket.type == socket.SOCK_STREAM
                and server.socket.family in (socket.AF_INET, socket.AF_INET6)):
            raise ValueError("reuse_port is for TCP servers, where SO_REUSEPORT exists")
        if reuse_port and getattr(server, "_inherited_socket", False):
            raise ValueError("reuse_port binds sockets of its own: not for an inherited "
                             "listening socket (its owner keeps it open)")
        if not hasattr(os, "fork"):
            raise RuntimeError("worker processes need os.fork()")
        self.server, self.target = server, count
        self.drain_timeout, self.poll_interval = drain_timeout, poll_interval
        self.stderr = stderr if stderr is not None else sys.stderr
        self.workers = {}           # pid -> _Worker
        self.retired = {}           # counters of workers that have exited, summed
        self.pending = []           # signals received, handled by the loop in order
        self.stop_signals = 0       # TERM/INT received
        self.reload_queue = []      # pids SIGHUP replaces, one at a time
        self.reload_new = None      # the pid started to replace reload_queue[0]
        self.quick_deaths = 0
        self.next_spawn = 0.0
        # reuse_port: a SO_REUSEPORT listening socket per slot, held open here
        # while a worker may serve it (one socket shared by all otherwise)
        self.slots = {} if reuse_port else None
        self.all_drained = True

    def log(self, text):
        print("fastsockserver: " + text, file=self.stderr, flush=True)

    # ------------------------------------------------------------ stats
    def roll_up(self, own):
        """The parent's stats(): each worker's last report summed, and the
        counters of workers that have exited."""
        figures = dict(own)
        for key, value in self.retired.items():
            figures[key] = figures.get(key, 0) + value
        for worker in self.workers.values():
            for key, value in (worker.stats or {}).items():
                if key in _PARENT_OWN:
                    continue
                if key in _GAUGES_ANY:
                    figures[key] = bool(figures.get(key)) or bool(value)
                elif isinstance(value, int):
                    figures[key] = figures.get(key, 0) + value
        if self.slots:  # reuse_port: the server's own socket is closed; the slots' backlogs
            from ._server import listen_backlog
            backlogs = [listen_backlog(listener) for listener in self.slots.values()]
            figures["waiting"] = None if None in backlogs else sum(backlogs)
        if self.stop_signals:
            figures["draining"] = True
        figures["workers"] = sum(not w.retiring for w in self.workers.values())
        return figures

    def _read_reports(self, worker):
        """True while more may come."""
        try:
            chunk = os.read(worker.pipe, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            worker.ended = True
            return False
        worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines[-1:]:  # only the newest report matters
            import json  # (not on `import fastsockserver`: most never run workers)
            worker.stats = json.loads(line)
            worker.ready = True
        return True

    def _retire_counters(self, worker):
        while self._read_reports(worker):
            pass
        os.close(worker.pipe)
        for key, value in (worker.stats or {}).items():
            if isinstance(value, int) and not isinstance(value, bool) \
                    and key not in _PARENT_OWN + _NOW_ONLY:
                self.retired[key] = self.retired.get(key, 0) + value

    # ------------------------------------------------------------ processes
    def _free_slot(self):
        """reuse_port: an open slot no serving worker has, else a new one."""
        taken = {w.slot for w in self.workers.values() if not w.retiring}
        for slot in sorted(self.slots):
            if slot not in taken:
                return slot
        slot = max(self.slots, default=-1) + 1
        listener = socket.socket(self.server.socket.family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(self.server.server_address)
            listener.listen(self.server.request_queue_size)
        except BaseException:
            listener.close()
            raise
        self.slots[slot] = listener
        return slot

    def _close_unused_slots(self):
        """reuse_port: a slot beyond the count, once no worker serves it (the
        connections still queued on it are reset: SIGTTOU's cost)."""
        used = {w.slot for w in self.workers.values()}
        for slot in sorted(self.slots, reverse=True):
            if len(self.slots) <= self.target:
                return
            if slot not in used:
                self.slots.pop(slot).close()

    def _spawn(self, slot=None):
        if self.slots is not None and slot is None:
            slot = self._free_slot()
        read_end, write_end = os.pipe()
        parent = os.getpid()
        # SIGTERM stays blocked in the worker until serve_here() handles it:
        # one sent at once (a drain, SIGHUP) must not reach the parent's handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = None
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if pid == 0:  # the worker: never returns into the caller's code
            status = CRASHED
            try:
                os.close(read_end)
                status = self._worker_main(write_end, parent, slot)
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.workers[pid] = _Worker(pid, read_end, slot)
        return pid

    def _worker_main(self, report_fd, parent, slot):
        signal.set_wakeup_fd(-1)
        for worker in self.workers.values():  # the other workers' pipes are the parent's
            os.close(worker.pipe)
        if self.slots is not None:
            # other slots stay the parent's: a copy here would keep one open
            # (and its queued connections waiting) after the parent closed it
            self.server.socket = self.slots.pop(slot)
            for listener in self.slots.values():
                listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        # The parent relays TERM and INT (a terminal's Ctrl-C reaches the
        # whole group: each worker would take it as a second signal).
        for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        die_with_parent()
        if os.getppid() != parent:  # it died before prctl (pending until serve_here)
            os.kill(os.getpid(), signal.SIGTERM)
        if not _is_compiled_core():
            # The pure loop accepts as the stdlib does: a blocking accept()
            # would wait for the next connection when another worker took this one.
            self.server.socket.setblocking(False)
        self.server._workers = None  # its own stats(), not a roll-up
        done = threading.Event()
        reporter = threading.Thread(target=_report, args=(self.server, report_fd, parent, done),
                                    name="fastsockserver-report", daemon=True)
        reporter.start()
        drained = serve_here(self.server, self.drain_timeout, self.poll_interval,
                             signals=(signal.SIGTERM,), close=False, unblock=True)
        done.set()
        reporter.join(REPORT_EVERY * 4)
        return DRAINED if drained else NOT_DRAINED

    def _signal_workers(self, number, workers=None):
        for worker in list(workers if workers is not None else self.workers.values()):
            try:
                os.kill(worker.pid, number)
            except ProcessLookupError:
                pass

    def _retire(self, worker):
        worker.retiring = True
        self._signal_workers(signal.SIGTERM, [worker])

    def _reap(self):
        for pid in list(self.workers):  # not waitpid(-1): the program's other children are its own
            try:
                pid, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = pid, 0
            if not pid:
                continue
            worker = self.workers.pop(pid)
            self._retire_counters(worker)
            if self.slots is not None:
                self._close_unused_slots()
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == DRAINED
            if worker.retiring or self.stop_signals:
                if not clean:
                    self.all_drained = False
                continue
            lived = time.monotonic() - worker.started
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH else 0
            delay = 0.0 if not self.quick_deaths else min(
                BACKOFF_FIRST * 2 ** (self.quick_deaths - 1), BACKOFF_MAX)
            self.next_spawn = time.monotonic() + delay
            self.log("worker {} died ({}) after {:.2f} s; starting another in {:g} s{}".format(
                pid, _describe(status), lived, delay,
                " ({} quick deaths in a row)".format(self.quick_deaths)
                if self.quick_deaths > 1 else ""))

    # ------------------------------------------------------------ the loop
    def _on_signal(self, number, frame):
        self.pending.append(number)

    def _handle(self, number):
        if number in SIGNALS:
            self.stop_signals += 1
            # a second signal: the workers' serve() stops at once
            self._signal_workers(signal.SIGTERM)
        elif number == signal.SIGHUP:
            self.log("SIGHUP: replacing {} workers one by one".format(len(self.workers)))
            self.reload_queue = [pid for pid, w in self.workers.items() if not w.retiring]
        elif number == signal.SIGTTIN:
            self.target += 1
        elif number == signal.SIGTTOU and self.target > 1:
            self.target -= 1

    def _step_reload(self):
        if self.reload_new is not None and self.reload_new not in self.workers:
            self.reload_new = None  # it died before it was ready: start another
        while self.reload_queue and self.reload_queue[0] not in self.workers:
            self.reload_queue.pop(0)
        if not self.reload_queue:
            return
        if any(w.retiring for w in self.workers.values()):
            return  # the previous one is still draining
        if self.reload_new is None:
            if time.monotonic() >= self.next_spawn:
                self.reload_new = self._spawn(self.workers[self.reload_queue[0]].slot)
        elif self.workers[self.reload_new].ready:
            self._retire(self.workers[self.reload_queue.pop(0)])
            self.reload_new = None

    def _balance(self):
        serving = [w for w in self.workers.values() if not w.retiring]
        extra = 1 if self.reload_new is not None else 0
        if len(serving) < self.target and time.monotonic() >= self.next_spawn:
            for _ in range(self.target - len(serving) if not self.quick_deaths else 1):
                self._spawn()
        elif len(serving) > self.target + extra and not self.reload_queue:
            self._retire(max(serving, key=lambda w: w.started))  # the newest

    def run(self):
        """Fork, supervise until TERM/INT and every worker has exited; True
        when all drained within the deadline."""
        others = threads_besides_main()
        if threading.current_thread() is not threading.main_thread() or others:
            raise RuntimeError(
                "fastsockserver: worker processes are fork()s of this process, which must "
                "have no thread but the main one (a fork copies only the calling thread; "
                "locks other threads hold stay locked in the copy). Running: {}. Start "
                "them after the workers fork (in the handler, or the server's "
                "service_actions)".format(", ".join(t.name for t in others) or "not the main"))
        self.server._workers = self
        if self.slots is not None:
            # A SO_REUSEPORT socket cannot join a port bound without it: the
            # slots are bound anew (connections are refused in between).
            self.server.socket.close()
        handled = (*SIGNALS, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_write)
        previous = {number: signal.signal(number, self._on_signal) for number in handled}
        try:
            while True:
                while self.pending:
                    self._handle(self.pending.pop(0))
                self._reap()
                if self.stop_signals:
                    if not self.workers:
                        return self.all_drained
                else:
                    self._step_reload()
                    self._balance()
                pipes = {w.pipe: w for w in self.workers.values() if not w.ended}
                timeout = max(self.next_spawn - time.monotonic(), 0.0) + 0.01 \
                    if not self.stop_signals else None
                ready, _, _ = select.select([self._wake_read, *pipes], [], [],
                                            min(timeout, 1.0) if timeout is not None else 1.0)
                for fd in ready:
                    if fd == self._wake_read:
                        try:
                            os.read(self._wake_read, 512)
                        except BlockingIOError:
                            pass
                    else:
                        self._read_reports(pipes[fd])
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for number, handler in previous.items():
                signal.signal(number, handler)
            if self.workers:  # an exception here: no orphans
                self._signal_workers(signal.SIGKILL)
                for worker in list(self.workers.values()):
                    os.waitpid(worker.pid, 0)
                    self._retire_counters(worker)
                self.workers.clear()
            os.close(self._wake_read)
            os.close(self._wake_write)
            for listener in (self.slots or {}).values():
                listener.close()


def _report(server, fd, parent, done):
    """A worker's thread: its stats() to the parent every REPORT_EVERY
    seconds and once at the end; SIGTERM to itself when the parent is gone."""
    import json
    try:
        while True:
            finished = done.wait(REPORT_EVERY)
            os.write(fd, json.dumps(server.stats()).encode() + b"\n")
            if finished:
                return
            if os.getppid() != parent:  # systems without PR_SET_PDEATHSIG
                os.kill(os.getpid(), signal.SIGTERM)
    except OSError:  # the parent is gone: the pipe is broken
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        os.close(fd)


def die_with_parent():
    """Linux: SIGTERM when the parent dies (a SIGKILLed parent cannot tell us)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the reporter's getppid() check remains


def _is_compiled_core():
    from ._core_select import COMPILED
    return COMPILED


def install_workers(count, drain_timeout, reuse_port=False):
    """For ``run --workers N``: the first serve_forever() called in the main
    thread becomes the supervisor of N workers running that server; it
    returns (as after shutdown()) once SIGTERM/SIGINT has drained them."""
    from ._server import BaseServer
    serve_forever = BaseServer.serve_forever
    claimed = []

    def supervising_serve_forever(self, poll_interval=0.5):
        if claimed or threading.current_thread() is not threading.main_thread():
            return serve_forever(self, poll_interval)
        claimed.append(self)
        Supervisor(self, count, drain_timeout, poll_interval, reuse_port=reuse_port).run()

    supervising_serve_forever.__doc__ = serve_forever.__doc__
    BaseServer.serve_forever = supervising_serve_forever
