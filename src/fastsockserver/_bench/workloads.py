"""Workloads of ``python -m fastsockserver bench`` and how one measurement runs.

A workload (``echo``) has one or more cases (``echo/stream``, ``echo/base``);
each case names a server kind (see ``servers.py``), a load-generator mode and
the message, and the implementations it applies to.
"""
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .._env import ENV_VAR
from .servers import (
    DRAIN_TIMEOUT,
    GIL_ON,
    HTTP_PEER_IMPLS,
    PEER_IMPLS,
    SLOWLORIS_MAX_THREADS,
    SOCKETSERVER_IMPLS,
    STDLIB_IMPLS,
    STDLIB_NODELAY,
    WSGIREF_IMPLS,
)

HOST = "127.0.0.1"
# `bench --workers 1,2`: these cases also run fastsockserver with worker
# processes, as implementations named "compiled-w2" (unpinned: they use every core).
WORKER_CASES = ("connrate", "http", "http-close")
WORKER_IMPLS = SOCKETSERVER_IMPLS[1:]


REUSE_PORT_SUFFIX = "-reuse_port"  # bench --reuse-port: serve(..., reuse_port=True)


def with_workers(impl, workers, reuse_port=False):
    if workers == 1:
        return impl
    return "{}-w{}{}".format(impl, workers, REUSE_PORT_SUFFIX if reuse_port else "")


def split_workers(impl):
    """("compiled", 2, False) for "compiled-w2"; (impl, 1, False) for the others."""
    name = impl[:-len(REUSE_PORT_SUFFIX)] if impl.endswith(REUSE_PORT_SUFFIX) else impl
    base, sep, count = name.rpartition("-w")
    if sep and base in WORKER_IMPLS and count.isdigit() and int(count) > 1:
        return base, int(count), name != impl
    return impl, 1, False
WITH_PEERS = SOCKETSERVER_IMPLS + PEER_IMPLS
ALL_IMPLS = (STDLIB_IMPLS + SOCKETSERVER_IMPLS[1:] + (GIL_ON,) + PEER_IMPLS + HTTP_PEER_IMPLS
             + WSGIREF_IMPLS)
# The http cases: http.server on each socketserver, and the WSGI peers serving the
# same response. wsgiref answers HTTP/1.0 and closes: http-close only.
HTTP_IMPLS = SOCKETSERVER_IMPLS + (STDLIB_NODELAY,) + HTTP_PEER_IMPLS
CONCURRENCY = 32
OVERLOAD_CLIENTS = 1000
SLOWLORIS_IDLE = 10000
SLOWLORIS_TRICKLE = 100
TLS_STALL = 1   # tls-stall: connections that open TCP and never start TLS
# The TLS peers are asyncio's and uvloop's (loop.create_server(..., ssl=ctx)).
TLS_IMPLS = SOCKETSERVER_IMPLS + ("asyncio", "uvloop")
# drain: the load goes on after SIGTERM until the server process has exited (at most
# DRAIN_TIMEOUT + DRAIN_EXIT_MARGIN seconds), then DRAIN_TAIL seconds more.
DRAIN_EXIT_MARGIN = 5.0
DRAIN_TAIL = 0.25
DRAIN_STEP = 0.02   # the load runs in steps this long while the process is alive

LINE64 = b"x" * 63 + b"\n"
LINE1K = b"x" * 1023 + b"\n"
DATAGRAM64 = b"x" * 64
HTTP_KEEPALIVE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HTTP_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str            # "echo/stream"
    workload: str        # "echo"
    kind: str            # the server kind of servers.py
    mode: str            # load generator mode, or "shutdown"
    message: bytes
    description: str
    impls: tuple = SOCKETSERVER_IMPLS
    http: bool = False
    unit: str = "req/s"
    concurrency: int = CONCURRENCY
    # slowloris: idle and trickling connections are kept open during the run
    slow_clients: bool = False
    # persistent connections kept from one repetition to the next (False: new
    # ones each time, which connect after the slow clients are in place)
    keep_clients: bool = True
    # the clients speak TLS 1.3 (tlsclients.TlsLoadGen); the servers get the
    # bench's certificate, with this key (tlsclients.SERVER_KEYS)
    tls: bool = False
    tls_key: str = "ec"
    # the server process may use every core (its threads run in parallel
    # where there is no GIL); else it is pinned to one
    all_cores: bool = False


CASES = (
    Case("connrate", "connrate", "connrate", "connrate", LINE64,
         "connect, 64-byte line echo, close; 32 clients "
         "(ThreadingTCPServer + StreamRequestHandler)", WITH_PEERS, unit="conn/s"),
    Case("echo/stream", "echo", "echo-stream", "persistent", LINE1K,
         "32 persistent connections, 1 KiB request/response "
         "(ThreadingTCPServer + StreamRequestHandler readline/write)", WITH_PEERS),
    Case("echo/base", "echo", "echo-base", "persistent", LINE1K,
         "32 persistent connections, 1 KiB request/response "
         "(ThreadingTCPServer + BaseRequestHandler recv/sendall)"),
    Case("cpu", "cpu", "cpu", "persistent", LINE64,
         "32 persistent connections, 64-byte line echo after ~200 us of pure-Python work "
         "per request (ThreadingTCPServer + StreamRequestHandler; the server on every core). "
         "On a free-threaded CPython: stdlib and compiled with the GIL off, compiled-gil "
         "with PYTHON_GIL=1", ("stdlib", "compiled", GIL_ON), all_cores=True),
    Case("udp/threading", "udp", "udp-threading", "udp", DATAGRAM64,
         "64-byte datagrams, 32 outstanding "
         "(ThreadingUDPServer + DatagramRequestHandler)", WITH_PEERS, unit="dgram/s"),
    Case("udp/sync", "udp", "udp-sync", "udp", DATAGRAM64,
         "64-byte datagrams, 32 outstanding (UDPServer + DatagramRequestHandler)",
         unit="dgram/s"),
    Case("http", "http", "http", "persistent", HTTP_KEEPALIVE,
         "http.server.ThreadingHTTPServer, HTTP/1.1 keep-alive, 13-byte body, "
         "32 connections, no access log; waitress, cheroot, gunicorn: a WSGI app with the "
         "same response", HTTP_IMPLS, http=True),
    Case("http-close", "http-close", "http", "connrate", HTTP_CLOSE,
         "http.server.ThreadingHTTPServer, a connection per request, 13-byte body, "
         "32 clients, no access log; waitress, cheroot, gunicorn, wsgiref: a WSGI app "
         "with the same response", HTTP_IMPLS + WSGIREF_IMPLS, http=True),
    Case("overload", "overload", "overload", "connrate", LINE64,
         "1,000 clients at once: connect, 64-byte line echo after 1 ms of handler "
         "work, close (ThreadingTCPServer; fastsockserver with max_threads = 32, "
         "the stdlib has no limit)", unit="conn/s", concurrency=OVERLOAD_CLIENTS),
    Case("slowloris/baseline", "slowloris", "slowloris", "persistent", HTTP_KEEPALIVE,
         "slowloris without its slow clients: the same server and 32 keep-alive http "
         "clients", http=True, keep_clients=False),
    Case("slowloris", "slowloris", "slowloris", "persistent", HTTP_KEEPALIVE,
         "{idle:,} idle connections (send nothing) and {trickle:,} trickling ones (a "
         "header byte a second) held open, then 32 keep-alive clients as in http "
         "(ThreadingHTTPServer; fastsockserver with max_threads = " +
         str(SLOWLORIS_MAX_THREADS) + " and the slow-client timeouts it has, the stdlib "
         "has none)", http=True, slow_clients=True, keep_clients=False),
    Case("drain", "drain", "drain", "drain", HTTP_KEEPALIVE,
         "SIGTERM under 32-client keep-alive http load (ThreadingHTTPServer; "
         "fastsockserver in serve(drain_timeout={:g}), the stdlib in serve_forever() "
         "and the default SIGTERM)".format(DRAIN_TIMEOUT), http=True, unit="requests"),
    Case("tls-connrate", "tls-connrate", "tls-connrate", "connrate", LINE64,
         "TLS 1.3: connect, full handshake (no session resumption), 64-byte line echo, "
         "close; 32 clients (ThreadingTCPServer + StreamRequestHandler; the stdlib with a "
         "wrapped listener, fastsockserver with ssl_context)", TLS_IMPLS, unit="conn/s",
         tls=True),
    Case("tls-connrate/rsa2048", "tls-connrate", "tls-connrate", "connrate", LINE64,
         "as tls-connrate, with an RSA-2048 server certificate (the server signs each "
         "handshake with RSA: more server CPU per handshake than EC P-256)", TLS_IMPLS,
         unit="conn/s", tls=True, tls_key="rsa2048"),
    Case("tls-echo", "tls-echo", "tls-echo", "persistent", LINE1K,
         "TLS 1.3: 32 persistent connections, 1 KiB request/response (ThreadingTCPServer + "
         "StreamRequestHandler readline/write; the stdlib with a wrapped listener, "
         "fastsockserver with ssl_context)", TLS_IMPLS, tls=True),
    Case("tls-stall", "tls-stall", "tls-connrate", "connrate", LINE64,
         "{stall:,} connection(s) held open that connect and never start TLS, then 32 "
         "clients as in tls-connrate (the stdlib's wrapped listener handshakes on the "
         "loop's thread; fastsockserver's ssl_context on the handler threads, within "
         "its default ssl_handshake_timeout)", TLS_IMPLS, unit="conn/s", tls=True,
         slow_clients=True, keep_clients=False),
    Case("fork", "fork", "fork", "connrate", LINE64,
         "ForkingTCPServer: connect, 64-byte line echo, close; 32 clients", unit="conn/s"),
    Case("shutdown", "shutdown", "shutdown", "shutdown", b"",
         "time for shutdown() to return, 0.1 s after serve_forever() started "
         "(default poll_interval)", unit="ms"),
)
CASES_BY_NAME = {case.name: case for case in CASES}
WORKLOADS = tuple(dict.fromkeys(case.workload for case in CASES))


def select_cases(names):
    """The cases for workload or case names; returns (cases, unknown names)."""
    chosen, unknown = [], []
    for name in names:
        matches = [c for c in CASES if c.workload == name or c.name == name]
        if not matches:
            unknown.append(name)
        for case in matches:
            if case not in chosen:
                chosen.append(case)
    chosen.sort(key=CASES.index)
    return chosen, unknown


class ServerError(Exception):
    """A server process that failed to start or stopped answering (one-line message)."""


class SlowClientsError(ServerError):
    """The slow clients' process failed (one-line message)."""


class ChildProcess:
    """A helper process spoken to in JSON lines over its stdin/stdout."""

    error = ServerError
    name = "the server"

    def _spawn(self, cmd, env):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=env, close_fds=True)
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    def _readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error("no answer from {} within {:.0f} s".format(self.name, timeout))
            if self._selector.select(left):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise self.error("{} exited ({})".format(self.name, self._why_dead()))
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            raise self.error("unreadable answer from {}: {!r}".format(self.name, line[:200]))

    def _why_dead(self):
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        lines = self.stderr_text().strip().splitlines()
        last = lines[-1] if lines else "no message"
        code = self.proc.returncode
        return "exit code {}: {}".format(code, last) if code is not None else last

    def stderr_text(self):
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def request(self, command, timeout=15.0):
        if self.proc.poll() is not None:
            raise self.error("{} exited ({})".format(self.name, self._why_dead()))
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            raise self.error("{} exited ({})".format(self.name, self._why_dead())) from None
        answer = self._readline(timeout)
        if "error" in answer:
            raise self.error(answer["error"])
        return answer

    def tracebacks(self):
        """(count, last one) of the tracebacks the server printed (handle_error and such)."""
        text = self.stderr_text()
        marker = "Traceback (most recent call last)"
        count = text.count(marker)
        if not count:
            return 0, None
        last = text[text.rindex(marker):]
        return count, "\n".join(last.splitlines()[:40])

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._selector.close()

    def close(self):
        self.stop()
        self.stderr.close()


class ServerProcess(ChildProcess):
    """One server of ``servers.py`` in a subprocess, spoken to over its stdin/stdout."""

    def __init__(self, case, impl, *, port=0, cpu=None, max_seconds=600.0, extra=()):
        self.case = case
        self.impl = impl
        impl, workers, reuse_port = split_workers(impl)
        if workers > 1 or case.all_cores:
            cpu = None
        if workers > 1:
            extra = [*extra, "--workers", str(workers)] + (["--reuse-port"] if reuse_port else [])
        self.port = None
        self.cpu = cpu   # the core it is pinned to (None: every core)
        self.info = {}
        env = dict(os.environ)
        env.pop(ENV_VAR, None)
        if impl == "pure":
            env[ENV_VAR] = "1"
        if impl == GIL_ON:
            env["PYTHON_GIL"] = "1"
        cmd = [sys.executable, "-m", "fastsockserver._bench.servers",
               "--kind", case.kind, "--impl", impl, "--host", HOST, "--port", str(port),
               "--max-seconds", "{:.0f}".format(max_seconds)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        cmd += list(extra)
        self._spawn(cmd, env)

    def wait_ready(self, timeout=30.0):
        """The server's first line: its port (raises ServerError if it failed to start)."""
        info = self._readline(timeout)
        if "error" in info:
            raise ServerError(info["error"])
        self.info = info
        self.port = info.get("port")
        return info


class SlowClientsProcess(ChildProcess):
    """The slowloris case's idle and trickling connections (``slowclients.py``)."""

    error = SlowClientsError
    name = "the slow clients' process"

    def __init__(self, port, idle, trickle, max_seconds):
        from .slowclients import CONNECT_RATE
        total = idle + trickle
        # Every connection opened at CONNECT_RATE, and time for connects the
        # server leaves waiting (a full backlog): past that, the run goes on
        # with the connections that are open, and says how many.
        self.ready_seconds = total / CONNECT_RATE + 10.0
        cmd = [sys.executable, "-m", "fastsockserver._bench.slowclients",
               "--host", HOST, "--port", str(port),
               "--idle", str(idle), "--trickle", str(trickle),
               "--ready-seconds", "{:.1f}".format(self.ready_seconds),
               "--max-seconds", "{:.0f}".format(self.ready_seconds + max_seconds)]
        self._spawn(cmd, dict(os.environ))

    def wait_ready(self):
        """The counters once every connection is open (or the time for it is up)."""
        info = self._readline(self.ready_seconds + 15.0)
        if "error" in info:
            raise SlowClientsError(info["error"])
        return info


@dataclass
class Settings:
    duration: float = 1.0
    warmup: float = 0.25
    timeout: float = 5.0
    reps: int = 3
    shutdown_count: int = 3
    server_cpu: int = None
    client_cpu: int = None
    base_port: int = 0
    slowloris_idle: int = SLOWLORIS_IDLE
    slowloris_trickle: int = SLOWLORIS_TRICKLE
    tls_stall: int = TLS_STALL
    tls_dir: str = None   # the certificates of the tls cases (tlsclients.make_certificates)
    # --rate: the open loop's arrival rates, as fractions of each server's maximum
    rate_fractions: tuple = ()
    # --neighbour: a CPU-bound process pinned to the server's core in each repetition
    neighbour: bool = False
    extra: dict = field(default_factory=dict)


def open_loop_applies(case):
    """The open loop (--rate) runs where the compiled load generator drives TCP."""
    return case.mode in ("persistent", "connrate") and not case.tls and not case.slow_clients


def slow_client_counts(case, settings):
    """(idle, trickling) connections a case holds open beside its measured clients."""
    if not case.slow_clients:
        return 0, 0
    if case.tls:
        return settings.tls_stall, 0   # a stalled TLS client is an idle TCP connection
    return settings.slowloris_idle, settings.slowloris_trickle


def server_args(case, settings):
    """The case's extra arguments of ``servers.py``."""
    return ["--tls-dir", settings.tls_dir, "--tls-key", case.tls_key] if case.tls else []


def core_times():
    """{cpu: (busy, total)} jiffies of each core, from /proc/stat ({} where unreadable)."""
    times = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *values = line.split()
                user, nice, system, idle, iowait, irq, softirq, steal = (
                    int(v) for v in (values + ["0"] * 8)[:8])
                busy = user + nice + system + irq + softirq + steal
                times[int(name[3:])] = (busy, busy + idle + iowait)
    except (OSError, ValueError):
        pass
    return times


def _busy_pct(before, after, cpu):
    if cpu is None or cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total > 0 else None


# --neighbour: a process that only computes, pinned to the server's core (a
# service's CPU is shared with other work). The server's CPU share against it
# is server_cpu_pct; its own is neighbour_cpu_pct.
NEIGHBOUR_CODE = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\n" \
    "sys.stdout.write('ready\\n')\nsys.stdout.flush()\nwhile True:\n    pass\n"


class Neighbour:
    """The --neighbour process of one repetition (a context manager); ``cpu_seconds()``
    reads its CPU time (None where /proc is not readable)."""

    def __init__(self, cpu):
        self.proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR_CODE, str(cpu)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     close_fds=True)
        self.proc.stdout.readline()   # pinned: it computes from here on

    def cpu_seconds(self):
        try:   # its run time in ns (precise; /proc/PID/stat counts ticks)
            with open("/proc/{}/schedstat".format(self.proc.pid)) as f:
                return int(f.read().split()[0]) * 1e-9
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def _neighbour(server, settings):
    """A Neighbour for this repetition, or a context that does nothing."""
    if settings.neighbour and server.cpu is not None:
        return Neighbour(server.cpu)
    return contextlib.nullcontext()


def _neighbour_start(neighbour):
    """(its CPU seconds, now) as the measured part begins; None without a neighbour."""
    if neighbour is None:
        return None
    cpu = neighbour.cpu_seconds()
    return None if cpu is None else (cpu, time.monotonic())


def _neighbour_cpu(neighbour, start, result):
    """The neighbour's CPU share between ``start`` and now (None without one): over
    its own wall time, not the load generator's ``elapsed``, which leaves out the
    run's start and end (a share of 160 % was seen that way)."""
    if start is None:
        return None
    end = neighbour.cpu_seconds()
    wall = time.monotonic() - start[1]
    return 100.0 * (end - start[0]) / wall if end is not None and wall > 0 else None


def new_loadgen(case, server, settings):
    if case.tls:
        from .tlsclients import TlsLoadGen
        return TlsLoadGen(case.mode, HOST, server.port, case.message,
                          concurrency=case.concurrency, timeout=settings.timeout,
                          cert_dir=settings.tls_dir)
    from .. import _loadgen
    mode = "persistent" if case.mode == "drain" else case.mode  # drain: keep-alive load
    return _loadgen.LoadGen(mode, HOST, server.port, case.message,
                            concurrency=case.concurrency, timeout=settings.timeout,
                            http=case.http)


def measure(case, server, settings, lg=None):
    """One repetition of a load case against a running server: a dict of figures.

    ``lg``: a load generator kept from an earlier repetition (persistent connections stay
    open between repetitions, so connection set-up is paid once); else a new one is made
    and closed.
    """
    return _repetition(
        case, server, settings, lg,
        lambda lg: lg.warm_up(settings.warmup, settings.warmup + settings.timeout),
        lambda lg: lg.run(settings.duration))


def measure_open(case, server, settings, rate, lg=None):
    """One open-loop repetition at ``rate`` requests/s (``LoadGen.run_open``): an
    unmeasured --warmup at the same rate, then --duration of schedule and up to
    --timeout more for the last requests. The figures of measure(), and the open
    loop's (offered_rate, late_sends, unfinished, ...)."""
    def warm_up(lg):
        if rate * settings.warmup >= 1:
            lg.run_open(rate, settings.warmup, max_wait=settings.timeout, record=False)

    return _repetition(
        case, server, settings, lg, warm_up,
        lambda lg: lg.run_open(rate, settings.duration, max_wait=settings.timeout))


def _repetition(case, server, settings, lg, warm_up, run):
    """measure()'s and measure_open()'s repetition: ``warm_up(lg)`` unmeasured, then
    ``run(lg)`` measured, with the server's figures (and the --neighbour's) over it."""
    own = lg is None
    if own:
        lg = new_loadgen(case, server, settings)
    try:
        with _neighbour(server, settings) as neighbour:
            warm_up(lg)
            server.request("mark")
            start = _neighbour_start(neighbour)
            before = core_times()
            result = run(lg)
            after = core_times()
            result["neighbour_cpu_pct"] = _neighbour_cpu(neighbour, start, result)
            stats = server.request("stats")
        lg.drain(min(settings.timeout, 2.0))
    finally:
        if own:
            lg.close()
    return _add_server_figures(result, stats, before, after, settings)


def _add_server_figures(result, stats, before, after, settings):
    """The load generator's ``result`` with the server's figures (``stats``) and the
    cores' business (``before``, ``after``: core_times())."""
    cpu = (stats["cpu_user"] + stats["cpu_sys"]
           + stats["children_cpu_user"] + stats["children_cpu_sys"])
    requests = result["requests"]
    result.update({
        "server_cpu_s": cpu,
        "server_cpu_self_s": stats["cpu_user"] + stats["cpu_sys"],
        "server_cpu_children_s": stats["children_cpu_user"] + stats["children_cpu_sys"],
        "server_cpu_pct": 100.0 * cpu / result["elapsed"],
        "server_us_per_req": cpu / requests * 1e6 if requests else None,
        # what the client paid for each request: with TLS, mostly its handshakes
        "client_us_per_req": result["client_cpu"] / requests * 1e6 if requests else None,
        # the server's processes that run (gunicorn's arbiter and worker, a --workers
        # supervisor and its workers); fork's reaped children apart
        "server_rss_mib": (stats["maxrss_kib"] + stats.get("descendants_maxrss_kib", 0))
        / 1024.0,
        "server_children_rss_mib": stats["children_maxrss_kib"] / 1024.0,
        "server_threads_at_end": stats["threads"],
        # tls cases, fastsockserver: handshakes the server counted as failed (None elsewhere)
        "server_tls_handshake_failures": stats.get("tls_handshake_failures"),
        "server_peak_threads": stats["peak_threads"],
        # How busy the two cores were, whoever used them: well above what the server or
        # the client used means another process competed and the figures may be low.
        "server_core_busy_pct": _busy_pct(before, after, settings.server_cpu),
        "client_core_busy_pct": _busy_pct(before, after, settings.client_cpu),
        "loadavg": _loadavg(),
    })
    result["contended"] = _contended(result)
    return result


CONTENTION_POINTS = 25.0


def _contended(result):
    """True when a pinned core was busier than our process on it by CONTENTION_POINTS
    (on the server's core: our process and the --neighbour)."""
    server_busy = result["server_core_busy_pct"]
    client_busy = result["client_core_busy_pct"]
    ours = result["server_cpu_pct"] + (result.get("neighbour_cpu_pct") or 0.0)
    return bool(
        (server_busy is not None and server_busy - ours > CONTENTION_POINTS)
        or (client_busy is not None
            and client_busy - result["client_cpu_pct"] > CONTENTION_POINTS))


def _loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measure_shutdown(case, impl, settings, port=0):
    """One repetition of the shutdown case: a new process measures ``shutdown_count`` times."""
    server = ServerProcess(case, impl, port=port, cpu=settings.server_cpu,
                           max_seconds=60 + settings.shutdown_count * 2,
                           extra=["--shutdown-count", str(settings.shutdown_count)])
    try:
        info = server._readline(30 + settings.shutdown_count * 2)
        if "error" in info:
            raise ServerError(info["error"])
        return {"shutdown_ms": [t * 1e3 for t in info["shutdown_s"]]}
    finally:
        server.close()


def measure_with_slow_clients(case, server, settings, max_seconds):
    """One repetition of the slowloris or tls-stall case: the slow clients' connections
    are opened first (at a bounded rate), then the good clients connect and are
    measured."""
    idle, trickle = slow_client_counts(case, settings)
    slow = SlowClientsProcess(server.port, idle, trickle, max_seconds)
    try:
        at_start = slow.wait_ready()
        if case.tls:
            # a few connections: taken in at once, unless the server is stuck
            server_fds = _settled_fd_count(server.info.get("pid"), most=2.0, still=0.3)
        else:
            server_fds = _settled_fd_count(server.info.get("pid"))
        figures = measure(case, server, settings)
        at_end = slow.request("stats")
    finally:
        slow.close()
    # The server is pinned to the core the other implementations' servers use
    # next: the stdlib's ~10,000 threads all wake for their end-of-file when
    # the slow clients go, which can take that core for tens of seconds.
    settle_s = _wait_until_quiet(server.info.get("pid"))
    figures.update({
        "server_settle_s": settle_s,
        "slow_clients_ready": at_start.pop("ready"),
        "slow_clients_ready_s": at_start.pop("seconds"),
        "slow_clients_at_start": at_start,
        "slow_clients_at_end": at_end,
        "server_fds_at_start": server_fds,
    })
    return figures


def _fd_count(pid):
    try:
        return len(os.listdir("/proc/{}/fd".format(pid)))
    except (OSError, TypeError):
        return None


def _proc_threads(pid):
    try:
        with open("/proc/{}/status".format(pid)) as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError, TypeError):
        pass
    return None


QUIET_THREADS = 100   # a slowloris server at rest: at most max_threads (64) and a few more
QUIET_FDS = 200       # ... and its listener, pipes and a few connections


def _wait_until_quiet(pid, most=60.0):
    """Seconds until the server process has closed the slow clients' connections and
    ended their threads (``most`` at most); None where /proc is not there."""
    started = time.monotonic()
    while True:
        threads, fds = _proc_threads(pid), _fd_count(pid)
        if threads is None or fds is None:
            return None
        elapsed = time.monotonic() - started
        if (threads <= QUIET_THREADS and fds <= QUIET_FDS) or elapsed >= most:
            return elapsed
        time.sleep(0.1)


def _settled_fd_count(pid, most=10.0, still=2.5):
    """The server process's open files once their count stops growing (``still`` s
    unchanged, ``most`` s at most); None where /proc is not there.

    A connect can complete on the client's side before the server has taken
    the connection in: when the listen backlog was full the kernel dropped the
    handshake's last ACK, and the connection joins the backlog only when the
    server's SYN-ACK is sent again (1 s later, then 2 s after that, ...). The
    stdlib's backlog is 5. ``still`` covers two of those retries."""
    count = _fd_count(pid)
    if count is None:
        return None
    started = changed = time.monotonic()
    while time.monotonic() - started < most and time.monotonic() - changed < still:
        time.sleep(0.1)
        now = _fd_count(pid)
        if now is None:
            return count
        if now > count:
            changed = time.monotonic()
        count = max(count, now)
    return _fd_count(pid)


def _add_errors(total, part):
    for kind, count in part.items():
        total[kind] = total.get(kind, 0) + count


def measure_drain(case, impl, settings, port=0):
    """One repetition of the drain case, in a new server process: load, SIGTERM, the load
    going on until the process has exited, then a short tail."""
    bound = DRAIN_TIMEOUT + DRAIN_EXIT_MARGIN
    server = ServerProcess(case, impl, port=port, cpu=settings.server_cpu,
                           max_seconds=60 + settings.warmup + settings.timeout
                           + settings.duration + bound)
    try:
        server.wait_ready()
        lg = new_loadgen(case, server, settings)
        try:
            lg.warm_up(settings.warmup, settings.warmup + settings.timeout)
            server.request("mark")
            before = lg.run(settings.duration)
            stats = server.request("stats")
            exited = []

            def wait_for_exit():
                server.proc.wait()
                exited.append(time.monotonic())

            waiter = threading.Thread(target=wait_for_exit, daemon=True)
            waiter.start()
            signalled = time.monotonic()
            os.kill(server.proc.pid, signal.SIGTERM)
            steps = []
            while not exited and time.monotonic() - signalled < bound:
                steps.append(lg.run(DRAIN_STEP))
            steps.append(lg.run(DRAIN_TAIL))
            load_after_s = time.monotonic() - signalled
            lg.drain(min(settings.timeout, 2.0))
        finally:
            lg.close()
        waiter.join(0.1)
        exit_s = exited[0] - signalled if exited else None
        drained = None
        if exited and server.info:   # fastsockserver's serve() said how the drain went
            try:
                drained = server._readline(1.0).get("drained")
            except ServerError:
                pass
        exit_code = server.proc.returncode
        tracebacks, last_traceback = server.tracebacks()
    finally:
        server.close()
    errors, on_served, on_new = {}, {}, {}
    for step in steps:
        _add_errors(errors, step["errors"])
        _add_errors(on_served, step["errors_on_served"])
        _add_errors(on_new, step["errors_on_new"])
    return {
        "rps": before["rps"],
        "lat_p50_ms": before["lat_p50_ms"],
        "lat_p99_ms": before["lat_p99_ms"],
        "errors_before_signal": before["errors_total"],
        "requests_before_signal": before["requests"],
        "requests_after_signal": sum(step["requests"] for step in steps),
        "close_responses_after_signal": sum(step["close_responses"] for step in steps),
        "errors": errors,
        "errors_total": sum(errors.values()),
        "errors_on_served": on_served,
        "errors_on_served_total": sum(on_served.values()),
        "errors_on_new": on_new,
        "errors_on_new_total": sum(on_new.values()),
        "signal_to_exit_s": exit_s,
        "exit_code": exit_code,
        "drained": drained,
        "load_after_signal_s": load_after_s,
        "server_rss_mib": stats["maxrss_kib"] / 1024.0,
        "client_cpu_pct": before["client_cpu_pct"],
        "server_tracebacks": tracebacks,
        "server_last_traceback": last_traceback,
    }
