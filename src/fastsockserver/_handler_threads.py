"""ThreadingMixIn's handler threads: reused (WorkerPool), and taking requests themselves.

Starting a thread costs ~70 us of the ~200 us the stdlib spends per
connection. A pool keeps finished threads waiting for the next request, and
starts a new one whenever none is idle: concurrency is never capped, so a
request never waits for another request's handler. Idle threads retire
after ``IDLE_SECONDS``; ``close()`` retires all idle threads and makes busy
ones retire when their request ends, or, for a drained server, leaves the idle
ones to the next pool of the process that needs a thread (a restart).

Where the plan has ``handlers_take`` (see _plan), a handler thread whose
request is done takes the next one itself (the core's ``take_pending``),
saving the loop's wake-up and a hand-over: ``run_then_take_pending``. The
loop then gives a request to a thread already on its way to take one
(``hand_to_taker``) rather than start a new thread. ``serving_begins`` /
``serving_ends`` bracket that in serve_forever().
"""
import _thread
import collections
import socket
import sys
import threading
import weakref

from ._at_fork import forget_in_child
from ._core_select import core

IDLE_SECONDS = 5.0


# Idle non-daemon threads would keep the interpreter from exiting: at exit,
# before threading joins non-daemon threads, idle ones are retired (busy ones
# finish their request first, as the stdlib's per-request threads would).
_live_non_daemon_pools = weakref.WeakSet()


def _close_all_pools():
    for pool in list(_live_non_daemon_pools):
        pool.close()


if hasattr(threading, "_register_atexit"):  # 3.9+: runs before the joins
    threading._register_atexit(_close_all_pools)
else:  # pragma: no cover
    import atexit
    atexit.register(_close_all_pools)


# States of servers whose handler threads take requests (serve_forever
# running with plan.handlers_take).
_states_with_takers = weakref.WeakSet()


def _after_fork_in_child():
    """The threads of this process's pools, and the handler threads taking
    requests, stayed in the parent: forget them."""
    WorkerPool.process_generation += 1
    for state in list(_states_with_takers):
        # Queue nothing for takers that are not here, and let no thread of the
        # child take from the listener the parent serves.
        state.take_pending_from = None
        state.takers = 0
        queued, state.handoff = state.handoff, collections.deque()
        for request, _, _ in queued or ():  # the parent serves them; close our copies
            if isinstance(request, socket.socket):  # not a datagram's (data, listener)
                request.close()
    _states_with_takers.clear()


class _Worker:
    __slots__ = ("pool", "job", "wakeup", "thread")

    def __init__(self, pool, job, daemon):
        self.pool = pool
        self.job = job
        self.wakeup = _thread.allocate_lock()
        self.wakeup.acquire()  # held: released by whoever hands over a job
        self.thread = threading.Thread(target=self._run, daemon=daemon)

    def _run(self):
        job = self.job
        while job is not None:
            self.job = None
            after = None
            try:
                after = job[0](*job[1])
            except BaseException:
                # Reported as an uncaught exception of a per-request thread
                # would be (the default hook ignores SystemExit); the worker
                # itself carries on.
                try:
                    threading.excepthook(threading.ExceptHookArgs(
                        (*sys.exc_info(), self.thread)))
                except BaseException:
                    sys.excepthook(*sys.exc_info())
            job = None  # drop the request before waiting
            job = self.pool._wait_for_job(self, after)


class WorkerPool:
    """Runs ``function(*args)`` on an idle thread, or on a new one if none is idle."""

    # Bumped in each fork()ed child: the threads of a pool made before the
    # fork do not exist there. Comparing it with ``generation`` saves a
    # getpid() system call per request.
    process_generation = 0
    # Threads started by every pool of this process, read by the soak (approximate
    # with the GIL off: informational).
    threads_started = 0

    def __init__(self, daemon):
        self.daemon = daemon
        self.generation = WorkerPool.process_generation
        self._idle = []  # a stack: the most recently idle (cache-warm) thread first
        self._closed = False
        forget_in_child(_after_fork_in_child)  # a child has none of its threads
        if not daemon:
            _live_non_daemon_pools.add(self)

    def submit(self, function, args):
        """Hand ``function(*args)`` to a thread: an idle one of this pool, else one a
        drained server left (``close(leave=True)``), else a new one. Returns the
        Thread unless it was this pool's already (the server joins it at close)."""
        job = (function, args)
        while True:
            try:
                worker = self._idle.pop()
            except IndexError:
                break
            worker.job = job
            worker.wakeup.release()
            return None
        worker = _left_threads(self.daemon)._take()
        if worker is not None:
            worker.pool = self
            worker.job = job
            worker.wakeup.release()
            return worker.thread
        worker = _Worker(self, job, self.daemon)
        WorkerPool.threads_started += 1
        worker.thread.start()
        return worker.thread

    def _wait_for_job(self, worker, after=None):
        """Park ``worker`` until a job (returned) or retirement (None). ``after``:
        what the last job returned, called once the worker is idle (a request's
        slot goes back only when this thread can take the next request: at
        max_threads the loop then reuses it, not starts another)."""
        if self._closed or self.generation != WorkerPool.process_generation:
            # In a fork()ed child the thread ends with its request, as the
            # stdlib's would: parked, it would keep the child alive.
            if after is not None:
                after()
            return None
        self._idle.append(worker)
        if after is not None:
            after()
        if self._closed:
            # close() ran while we were joining the idle list: it may have
            # missed us, so leave unless submit() took us meanwhile.
            if self._retire(worker):
                return None
        while True:
            if worker.wakeup.acquire(timeout=IDLE_SECONDS):
                return worker.job
            # (worker.pool: close(leave=True) may have moved it to the left threads)
            if worker.pool._retire(worker):
                return None
            # submit() popped us after the timeout and is about to release.

    def _retire(self, worker):
        try:
            self._idle.remove(worker)
        except ValueError:
            return False  # submit() or close() took it: a release is coming
        return True

    def _take(self):
        try:
            return self._idle.pop()  # ours now: its _retire() fails, a release is coming
        except IndexError:
            return None

    def close(self, leave=False):
        """Retire idle threads now, busy ones when their request ends. With
        ``leave``, idle threads are left to the next pool of this process that
        needs one (they retire after IDLE_SECONDS if none does): returns their
        Thread objects, whose requests are done."""
        self._closed = True
        left = []
        successors = _left_threads(self.daemon) if leave else None
        while True:
            try:
                worker = self._idle.pop()
            except IndexError:
                return left
            if successors is not None and not successors._closed:
                worker.pool = successors
                successors._idle.append(worker)
                left.append(worker.thread)
                continue
            worker.job = None
            worker.wakeup.release()


# Idle handler threads a drained server's close() left for a successor, by daemon
# flag: a server restarted in this process (drain(), server_close(), a new server
# on the same listener) reuses them instead of starting as many new ones. With
# the GIL off, each new thread takes fresh allocator pages while those of the
# threads that ended stay in part in use: restarts would step RSS up.
_left = {}


def _left_threads(daemon):
    pool = _left.get(daemon)
    if pool is None or pool.generation != WorkerPool.process_generation:
        pool = _left[daemon] = WorkerPool(daemon)  # (a fork()ed child's are not here)
    return pool


def serving_begins(state):
    """serve_forever() starts with handlers taking: requests may be queued for takers."""
    state.handoff = collections.deque()
    forget_in_child(_after_fork_in_child)  # (first: a fork after the add has it)
    _states_with_takers.add(state)


def serving_ends(server, state, process):
    """After serving: requests still queued for takers go to ``process``
    (each had a taker on its way, so normally none is left). Their tickets
    were reserved and never claimed: given back first, process() reserves anew."""
    _states_with_takers.discard(state)
    handoff = core.withdraw_handoff(state)
    try:
        while handoff:
            request, client_address, ticket = handoff.popleft()
            if ticket.abandon():
                process(request, client_address)
    finally:
        while handoff:  # left by an exception that ends serve_forever()
            request, _, ticket = handoff.popleft()
            if ticket.abandon():
                server.shutdown_request(request)


def run_request(server, ticket, request, client_address):
    """process_request_thread under ``ticket`` (reserved by the dispatcher),
    claimed first. Returns the ticket's release, for the pool to call once this
    thread is idle again; released here if the request ends in an exception
    that leaves the thread."""
    if not ticket.claim():
        return None  # the dispatcher gave it up (interrupted): the request is its
    try:
        server.process_request_thread(request, client_address)
    except BaseException:
        ticket.release()
        raise
    return ticket.release


def run_request_alone(server, ticket, request, client_address):
    """run_request on a thread of its own (reuse_threads False): released at its end."""
    release = run_request(server, ticket, request, client_address)
    if release is not None:
        release()


def run_then_take_pending(server, ticket, request, client_address):
    """run_request, then the requests the core gives this thread, in turn, each
    under its own ticket (take_pending's come claimed). A ticket goes back once
    the next is taken, or, when there is none, as run_request's does: once this
    thread is idle, so that ``active`` at 0 (a drain's end) means every handler
    thread is idle, and a drained server's close() leaves them all to its
    successor (one still on its way would retire: server_close() joins every
    thread that is not idle)."""
    if not ticket.claim():
        return None
    state = ticket.state
    take_pending, begin_grace = core.take_pending, core.begin_grace
    while True:
        begin_grace()
        try:
            server.process_request_thread(request, client_address)
            request = client_address = None
            item = take_pending(server, state)
        except BaseException:
            ticket.release()
            raise
        if item is None:
            return ticket.release
        ticket.release()
        request, client_address, ticket = item
