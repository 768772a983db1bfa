"""The server side of ``python -m fastsockserver bench``: one server per process.

Run as ``python -m fastsockserver._bench.servers --kind KIND --impl IMPL``.
The process binds (port 0: the kernel picks), prints one JSON line
``{"port": N, ...}`` (or ``{"error": "..."}`` and exits 1), then serves and
answers commands read line by line on stdin, each with one JSON line on stdout:

``mark``   start of a measurement: note the process's CPU times.
``stats``  CPU seconds since ``mark`` (self, and reaped children for fork),
           peak RSS, thread count.
``quit``   (or end of input) exit at once.

It also exits by itself after ``--max-seconds``. The ``shutdown`` kind
measures in-process how long ``shutdown()`` takes, prints the times and exits.
The ``drain`` kind is the ``http`` server run as a service: for fastsockserver
``serve(server, drain_timeout=DRAIN_TIMEOUT)`` (SIGTERM drains it, then the
process prints ``{"drained": ...}`` and exits), for the stdlib
``serve_forever()`` with SIGTERM's default disposition (the process dies).
The ``slowloris`` kind is the ``http`` server with fastsockserver's limits on
slow clients (the stdlib has none).
The ``tls-connrate`` and ``tls-echo`` kinds are ``connrate`` and ``echo-stream``
over TLS, with the certificate of ``--tls-dir``: the stdlib with a wrapped
listener (``server.socket = ctx.wrap_socket(...)``, whose handshakes run in
``get_request()`` on the loop's thread), fastsockserver with
``server.ssl_context = ctx`` (handshakes on the handler threads), the peers
with ``loop.create_server(..., ssl=ctx)``.

``--workers N`` (compiled and pure, N > 1): a process forked from this one
runs ``fastsockserver.serve(server, workers=N)`` (``--reuse-port``: with
``reuse_port=True``) (it has no thread: a fork
keeps only the forking one); ``stats`` adds the CPU of that process and its
workers, read from /proc while they run.

The http peers (``waitress``, ``cheroot``, ``gunicorn``, ``wsgiref-stdlib``,
``wsgiref-compiled``) serve ``hello_app``, a WSGI app with the http.server
handler's response; each says its port only once it has answered a GET /
(``--start-timeout``). gunicorn runs as its arbiter in this process and one
worker forked from it, on a socket bound here (``fd://``); ``stats`` adds the
worker's CPU, and quit or the time bound kills and reaps it.

The handler code is the same for the three ``socketserver`` implementations
(``stdlib``, ``compiled``, ``pure``): only the module it comes from differs.
The parent sets FASTSOCKSERVER_NO_EXTENSIONS=1 for ``pure``. ``stdlib-nodelay``
(http only) is the stdlib with the handler's ``disable_nagle_algorithm = True``.
"""
import argparse
import json
import os
import resource
import sys
import threading
import time

SOCKETSERVER_IMPLS = ("stdlib", "compiled", "pure")
# The http cases also run the stdlib with disable_nagle_algorithm = True:
# without Nagle's ~40 ms stall, what is left is the stdlib's own cost.
STDLIB_NODELAY = "stdlib-nodelay"
STDLIB_IMPLS = ("stdlib", STDLIB_NODELAY)  # the stdlib's socketserver
PEER_IMPLS = ("asyncio", "uvloop", "gevent")
# The http cases' peers: the WSGI servers people pick instead, each serving
# hello_app (the same 13 bytes as the http.server handler), and wsgiref's
# WSGIServer on the stdlib's socketserver and on fastsockserver's.
HTTP_PEER_IMPLS = ("waitress", "cheroot", "gunicorn")
WSGIREF_IMPLS = ("wsgiref-stdlib", "wsgiref-compiled")
# What each peer runs as: the settings of issue 28's table.
HTTP_PEER_SETTINGS = {
    "waitress": "waitress.create_server(app, threads=4)",
    "cheroot": "cheroot.wsgi.Server(addr, app), defaults (10 threads, backlog 5)",
    "gunicorn": "gunicorn gthread: 1 worker, 4 threads, access log off",
    "wsgiref-stdlib": "ThreadingMixIn + wsgiref's WSGIServer, stdlib socketserver",
    "wsgiref-compiled": "ThreadingMixIn + wsgiref's WSGIServer after fastsockserver.install()",
}
# The module whose absence skips a peer.
PEER_MODULES = {"asyncio": "asyncio", "uvloop": "uvloop", "gevent": "gevent",
                "waitress": "waitress", "cheroot": "cheroot", "gunicorn": "gunicorn"}
# The compiled core on a free-threaded CPython with the GIL switched on
# (PYTHON_GIL=1): the cpu case's baseline for what free-threading buys.
GIL_ON = "compiled-gil"
FREE_THREADED = getattr(sys, "_is_gil_enabled", None) is not None and \
    bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
KINDS = ("connrate", "echo-stream", "echo-base", "udp-threading", "udp-sync",
         "http", "fork", "shutdown", "overload", "drain", "slowloris",
         "tls-connrate", "tls-echo", "cpu")
TLS_KINDS = ("tls-connrate", "tls-echo")
HTTP_KINDS = ("http", "drain", "slowloris")
OVERLOAD_MAX_THREADS = 32
DRAIN_TIMEOUT = 10.0
# slowloris: fastsockserver's limits, each set only where the library has it
SLOWLORIS_MAX_THREADS = 64
SLOWLORIS_FIRST_BYTE_TIMEOUT = 10.0   # TCPServer: a new connection's first byte
SLOWLORIS_HEADERS_TIMEOUT = 2.0       # StreamRequestHandler: first byte to end of head
SLOWLORIS_IDLE_TIMEOUT = 10.0         # StreamRequestHandler: between requests

HTTP_BODY = b"Hello, world!"  # 13 bytes
# What the servers' start-up check sends (and every http case's server answers).
HTTP_PROBE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
# cpu: iterations of pure-Python arithmetic per request, ~200 us on CPython 3.13
# here; fixed, so every implementation and GIL mode does the same work.
CPU_WORK_ITERATIONS = 4000


def cpu_work(iterations=CPU_WORK_ITERATIONS):
    total = 0
    for i in range(iterations):
        total += i * i
    return total


class StartError(Exception):
    """The server could not start; the message says why, in one line."""


def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def socketserver_module(impl):
    """The ``socketserver`` module of the implementation under test."""
    if impl in STDLIB_IMPLS:
        import socketserver
        return socketserver
    import fastsockserver
    if impl == GIL_ON and not (FREE_THREADED and sys._is_gil_enabled()):
        raise StartError("compiled-gil needs a free-threaded CPython run with PYTHON_GIL=1")
    if impl in ("compiled", GIL_ON) and not fastsockserver.COMPILED:
        raise StartError("the compiled core of fastsockserver is not built (or "
                         "FASTSOCKSERVER_NO_EXTENSIONS is set)")
    if impl == "pure" and fastsockserver.COMPILED:
        raise StartError("pure mode asked for but the compiled core was loaded")
    return fastsockserver


# ---------------------------------------------------------------- socketserver servers

def make_socketserver(kind, impl, address, tls_dir=None, tls_key="ec"):
    if impl == STDLIB_NODELAY and kind != "http":
        raise StartError("stdlib-nodelay is for the http kind only")
    mod = socketserver_module(impl)

    class LineEcho(mod.StreamRequestHandler):
        """connrate / fork: one line in, the same line out, done."""
        def handle(self):
            self.wfile.write(self.rfile.readline())

    class StreamEcho(mod.StreamRequestHandler):
        """echo-stream: echo line after line until the client closes."""
        work = None  # called before each reply (cpu)

        def handle(self):
            readline = self.rfile.readline
            write = self.wfile.write
            work = self.work
            while True:
                line = readline()
                if not line:
                    break
                if work is not None:
                    work()
                write(line)

    class BaseEcho(mod.BaseRequestHandler):
        """echo-base: recv / sendall until the client closes."""
        def handle(self):
            recv = self.request.recv
            sendall = self.request.sendall
            while True:
                data = recv(65536)
                if not data:
                    break
                sendall(data)

    class WorkingLineEcho(mod.StreamRequestHandler):
        """overload: one line in, 1 ms of work (a wait, as for a database), the line out."""
        def handle(self):
            line = self.rfile.readline()
            time.sleep(0.001)
            self.wfile.write(line)

    class WorkingStreamEcho(StreamEcho):
        """cpu: line after line, each answered after CPU_WORK_ITERATIONS of Python work."""
        work = staticmethod(cpu_work)

    class DatagramEcho(mod.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())

    if kind == "connrate":
        return mod.ThreadingTCPServer(address, LineEcho)
    if kind == "echo-stream":
        return mod.ThreadingTCPServer(address, StreamEcho)
    if kind == "cpu":
        if FREE_THREADED and sys._is_gil_enabled() != (impl == GIL_ON):
            # (PYTHON_GIL set for the whole bench, or a module that switched it on)
            raise StartError("cpu: the GIL is {} in the {} server".format(
                "on" if sys._is_gil_enabled() else "off", impl))
        return mod.ThreadingTCPServer(address, WorkingStreamEcho)
    if kind in TLS_KINDS:
        server = mod.ThreadingTCPServer(address,
                                        LineEcho if kind == "tls-connrate" else StreamEcho)
        context = _tls_context(tls_dir, tls_key)
        if impl in STDLIB_IMPLS:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        else:
            server.ssl_context = context
        return server
    if kind == "overload":
        server = mod.ThreadingTCPServer(address, WorkingLineEcho)
        if hasattr(mod.ThreadingMixIn, "max_threads"):  # fastsockserver only
            server.max_threads = OVERLOAD_MAX_THREADS
        return server
    if kind == "echo-base":
        return mod.ThreadingTCPServer(address, BaseEcho)
    if kind == "udp-threading":
        return mod.ThreadingUDPServer(address, DatagramEcho)
    if kind == "udp-sync":
        return mod.UDPServer(address, DatagramEcho)
    if kind == "fork":
        if not hasattr(mod, "ForkingTCPServer"):
            raise StartError("no ForkingTCPServer on this platform")
        return mod.ForkingTCPServer(address, LineEcho)
    if kind in HTTP_KINDS:
        if impl not in STDLIB_IMPLS:
            mod.install()  # before http.server is imported
        if "http.server" in sys.modules:
            raise StartError("http.server was imported before install()")
        import http.server
        if impl != "stdlib" and http.server.socketserver is not mod:
            raise StartError("install() did not take: http.server uses the stdlib")

        class Hello(http.server.BaseHTTPRequestHandler):
            # The only change from the defaults: HTTP/1.1, for keep-alive
            # (and for stdlib-nodelay, Nagle off as fastsockserver has it).
            protocol_version = "HTTP/1.1"
            if impl == STDLIB_NODELAY:
                disable_nagle_algorithm = True

            def log_request(self, code="-", size="-"):
                pass   # no access log, as the WSGI peers have none by default

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(HTTP_BODY)))
                self.end_headers()
                self.wfile.write(HTTP_BODY)

        if kind != "slowloris":
            return http.server.ThreadingHTTPServer(address, Hello)
        server_class = http.server.ThreadingHTTPServer
        if hasattr(mod.TCPServer, "first_byte_timeout"):
            server_class = type("SlowlorisHTTPServer", (server_class,),
                                {"first_byte_timeout": SLOWLORIS_FIRST_BYTE_TIMEOUT})
        if hasattr(mod.StreamRequestHandler, "headers_timeout"):
            Hello.headers_timeout = SLOWLORIS_HEADERS_TIMEOUT
        if hasattr(mod.StreamRequestHandler, "idle_timeout"):
            Hello.idle_timeout = SLOWLORIS_IDLE_TIMEOUT
        server = server_class(address, Hello)
        if hasattr(mod.ThreadingMixIn, "max_threads"):
            server.max_threads = SLOWLORIS_MAX_THREADS
        return server
    raise StartError("no {} server for {}".format(kind, impl))


def measure_shutdown(impl, address, count, sleep):
    """Seconds each ``shutdown()`` took to return, ``count`` times, ``sleep`` s after serving."""
    mod = socketserver_module(impl)
    times = []
    with mod.TCPServer(address, mod.BaseRequestHandler) as server:
        for _ in range(count):
            thread = threading.Thread(target=server.serve_forever)  # default poll_interval
            thread.start()
            time.sleep(sleep)
            start = time.perf_counter()
            server.shutdown()
            times.append(time.perf_counter() - start)
            thread.join(10)
    return times


def _tls_context(tls_dir, tls_key="ec"):
    if not tls_dir:
        raise StartError("the tls kinds need --tls-dir (the certificate's directory)")
    from .tlsclients import server_context
    try:
        return server_context(tls_dir, tls_key)
    except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
        raise StartError("the certificate of {}: {}".format(tls_dir, exc)) from None


# ---------------------------------------------------------------- peers

def _asyncio_server(kind, impl, address, tls_dir=None, tls_key="ec"):
    import asyncio
    if impl == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise StartError("uvloop not installed") from None
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    class LineEcho(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = b""

        def data_received(self, data):
            self.buffer += data
            end = self.buffer.find(b"\n")
            if end >= 0:
                self.transport.write(self.buffer[:end + 1])
                self.transport.close()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class DatagramEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    host, port = address
    if kind == "connrate":
        server = loop.run_until_complete(loop.create_server(LineEcho, host, port))
    elif kind in ("echo-stream", "echo-base"):
        server = loop.run_until_complete(loop.create_server(Echo, host, port))
    elif kind in TLS_KINDS:
        server = loop.run_until_complete(loop.create_server(
            LineEcho if kind == "tls-connrate" else Echo, host, port,
            ssl=_tls_context(tls_dir, tls_key)))
    elif kind in ("udp-threading", "udp-sync"):
        transport, _ = loop.run_until_complete(
            loop.create_datagram_endpoint(DatagramEcho, local_addr=(host, port)))
        return loop, transport.get_extra_info("sockname")[1]
    else:
        raise StartError("no {} server for {}".format(kind, impl))
    return loop, server.sockets[0].getsockname()[1]


def _gevent_server(kind, address):
    try:
        from gevent.server import DatagramServer, StreamServer
    except ImportError:
        raise StartError("gevent not installed") from None

    def line_echo(sock, addr):
        rfile = sock.makefile("rb")
        sock.sendall(rfile.readline())
        rfile.close()
        sock.close()

    def echo(sock, addr):
        recv = sock.recv
        sendall = sock.sendall
        while True:
            data = recv(65536)
            if not data:
                break
            sendall(data)
        sock.close()

    class DatagramEcho(DatagramServer):
        def handle(self, data, address):
            self.socket.sendto(data, address)

    if kind == "connrate":
        server = StreamServer(address, line_echo)
    elif kind in ("echo-stream", "echo-base"):
        server = StreamServer(address, echo)
    elif kind in ("udp-threading", "udp-sync"):
        server = DatagramEcho(address)
    else:
        raise StartError("no {} server for gevent".format(kind))
    server.init_socket()
    return server, server.socket.getsockname()[1]


# ---------------------------------------------------------------- http peers (WSGI)

def hello_app(environ, start_response):
    """The WSGI app every http peer serves: the http.server handler's response."""
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HTTP_BODY)))])
    return [HTTP_BODY]


def probe_http(host, port, timeout):
    """Send HTTP_PROBE until a 200 with HTTP_BODY comes back (``timeout`` s in all);
    raises StartError with what went wrong last. A server can be listening before it
    answers (gunicorn's worker boots after its arbiter has bound)."""
    import socket
    deadline = time.monotonic() + timeout
    problem = "no attempt"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StartError("no answer to GET / within {:g} s: {}".format(timeout, problem))
        try:
            with socket.create_connection((host, port), timeout=left) as sock:
                sock.sendall(HTTP_PROBE)
                response = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    response += chunk
            head, _, body = response.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if status.split()[1:2] == [b"200"] and body == HTTP_BODY:
                return
            problem = "unexpected response {!r}".format(response[:200])
        except OSError as exc:
            problem = str(exc) or type(exc).__name__
        time.sleep(0.05)


def _wsgiref_server(kind, impl, address):
    if kind != "http":
        raise StartError("no {} server for {}".format(kind, impl))
    if impl == "wsgiref-compiled":
        import fastsockserver
        if not fastsockserver.COMPILED:
            raise StartError("the compiled core of fastsockserver is not built (or "
                             "FASTSOCKSERVER_NO_EXTENSIONS is set)")
        fastsockserver.install()   # before wsgiref (and http.server) is imported
    import http.server
    import socketserver
    from wsgiref import simple_server
    if (impl == "wsgiref-compiled") != (http.server.socketserver.__name__ == "fastsockserver"):
        raise StartError("{}: wsgiref is on the wrong socketserver ({})".format(
            impl, http.server.socketserver.__name__))

    class QuietHandler(simple_server.WSGIRequestHandler):
        def log_request(self, code="-", size="-"):
            pass   # no access log, as the other http servers here

    class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
        daemon_threads = True

    server = ThreadingWSGIServer(address, QuietHandler)
    server.set_app(hello_app)
    return server


def _waitress_server(kind, address):
    if kind != "http":
        raise StartError("no {} server for waitress".format(kind))
    try:
        import waitress
    except ImportError:
        raise StartError("waitress not installed") from None
    server = waitress.create_server(hello_app, host=address[0], port=address[1], threads=4)
    return server, int(server.effective_port)


def _cheroot_server(kind, address):
    if kind != "http":
        raise StartError("no {} server for cheroot".format(kind))
    try:
        from cheroot import wsgi
    except ImportError:
        raise StartError("cheroot not installed") from None
    server = wsgi.Server(address, hello_app)
    server.prepare()   # binds; port 0 becomes the kernel's choice in bind_addr
    return server, server.bind_addr[1]


def _gunicorn_application(address, when_ready):
    """A gunicorn application (gthread, 1 worker, 4 threads) serving hello_app, and
    its port.

    The listening socket is bound here and handed over as ``fd://N``: a port in
    use is an OSError at once (gunicorn itself would retry for 5 s and log the
    reason lines before its last). ``when_ready(arbiter)`` runs in this process
    once gunicorn has the socket, before the worker is forked. The worker dies
    with this process (PR_SET_PDEATHSIG): a bench that kills the server leaves
    no worker behind."""
    import socket
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise StartError("gunicorn not installed") from None
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(2048)   # gunicorn's default backlog

    def post_fork(arbiter, worker):
        from fastsockserver._workers import die_with_parent
        die_with_parent()

    class BenchApplication(BaseApplication):
        def load_config(self):
            settings = {
                "bind": ["fd://{}".format(listener.fileno())], "workers": 1,
                "worker_class": "gthread", "threads": 4, "accesslog": None,
                "loglevel": "warning", "control_socket_disable": True,
                "when_ready": when_ready, "post_fork": post_fork,
            }
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self):
            return hello_app

    application = BenchApplication()
    application.listener = listener   # open until gunicorn has taken it (fromfd dups it)
    return application, listener.getsockname()[1]


# ---------------------------------------------------------------- control

def _descendants_peak_rss_kib(pid):
    """The sum of the peak RSS (VmHWM) of ``pid``'s running descendants, KiB."""
    total = 0
    for child in _descendants(pid):
        try:
            with open("/proc/{}/status".format(child)) as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue   # exited meanwhile
    return total


def _peak_rss_kib(usage):
    """This process's peak resident set size, KiB.

    On Linux ru_maxrss also counts the process this one was exec'd from:
    the bench's own process, forked by Popen, whose size would show up as
    every server's. VmHWM is this program's own peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return usage.ru_maxrss


def _descendants(pid):
    """``pid``'s child processes, their children, and so on (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir("/proc/{}/task".format(parent)):
                with open("/proc/{}/task/{}/children".format(parent, task)) as f:
                    todo.extend(int(child) for child in f.read().split())
        except OSError:
            continue
        if parent != pid:
            found.append(parent)
    return found


def _live_cpu(pids):
    """(user, system) CPU seconds of running processes, from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        try:
            with open("/proc/{}/stat".format(pid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


class Accounting:
    """CPU and memory of this process (and its reaped children) from getrusage;
    with ``tree``, the CPU of its running descendants too (worker processes)."""

    def __init__(self, tls_failures=None, tree=False):
        # tls kinds, fastsockserver: the server's count of failed handshakes
        self.tls_failures = tls_failures
        self.tree = tree
        self.mark()

    def _times(self):
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        if self.tree:
            user, system = _live_cpu(_descendants(os.getpid()))
            kids = _Times(kids.ru_utime + user, kids.ru_stime + system, kids.ru_maxrss)
        return me, kids

    def mark(self):
        self.start = self._times()
        self.tls_failures_start = self.tls_failures() if self.tls_failures else None
        self.start_wall = time.monotonic()
        self.peak_threads = threading.active_count()

    def sample_threads(self):
        """Every 10 ms: the most threads seen since mark()."""
        while True:
            self.peak_threads = max(self.peak_threads, threading.active_count())
            time.sleep(0.01)

    def stats(self):
        me, kids = self._times()
        me0, kids0 = self.start
        return {
            "cpu_user": me.ru_utime - me0.ru_utime,
            "cpu_sys": me.ru_stime - me0.ru_stime,
            "children_cpu_user": kids.ru_utime - kids0.ru_utime,
            "children_cpu_sys": kids.ru_stime - kids0.ru_stime,
            "wall": time.monotonic() - self.start_wall,
            "maxrss_kib": _peak_rss_kib(me),
            "children_maxrss_kib": kids.ru_maxrss,
            # with tree (gunicorn's worker, --workers): the running processes' peaks
            "descendants_maxrss_kib": _descendants_peak_rss_kib(os.getpid()) if self.tree
            else 0,
            "threads": threading.active_count(),
            "peak_threads": self.peak_threads,
            "tls_handshake_failures": None if self.tls_failures is None
            else self.tls_failures() - self.tls_failures_start,
        }


class _Times:
    __slots__ = ("ru_utime", "ru_stime", "ru_maxrss")

    def __init__(self, utime, stime, maxrss):
        self.ru_utime, self.ru_stime, self.ru_maxrss = utime, stime, maxrss


def serve_with_workers(server, workers, reuse_port=False):
    """Fork the supervisor of ``workers`` worker processes; the serve function
    of this process waits for it (a worker's stats are the supervisor's)."""
    import traceback

    import fastsockserver
    from fastsockserver._workers import die_with_parent
    # The supervisor starts once this process has closed its copy of the
    # listening socket: with reuse_port it binds new sockets to that port,
    # which fails while a socket without SO_REUSEPORT holds it.
    ready_read, ready_write = os.pipe()
    supervisor = os.fork()
    if supervisor == 0:
        status = 1
        try:
            os.close(ready_write)
            os.read(ready_read, 1)
            die_with_parent()  # this process's quit (os._exit) drains the workers
            fastsockserver.serve(server, workers=workers, reuse_port=reuse_port)
            status = 0
        except BaseException:
            traceback.print_exc()  # (os._exit below would swallow it)
        finally:
            sys.stderr.flush()
            os._exit(status)
    server.socket.close()  # served by the workers only
    os.close(ready_read)
    os.close(ready_write)  # the supervisor's read returns

    def serve():
        os.waitpid(supervisor, 0)
    return serve


# Called before this process exits on quit, end of input or --max-seconds
# (os._exit runs no atexit handler): gunicorn's worker is ended here.
_BEFORE_EXIT = []


def _exit(status):
    for function in _BEFORE_EXIT:
        try:
            function()
        except Exception:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _end_children():
    """SIGKILL this process's descendants and reap its children."""
    import signal
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass   # a grandchild, or reaped already (gunicorn's SIGCHLD handler)


def control_loop(accounting):
    """Answer ``mark`` / ``stats`` / ``quit`` on stdin; exit the process on quit or EOF."""
    for line in sys.stdin:
        command = line.strip()
        if command == "mark":
            accounting.mark()
            _emit({"ok": True})
        elif command == "stats":
            _emit(accounting.stats())
        elif command == "quit":
            break
        else:
            _emit({"error": "unknown command {!r}".format(command)})
    _exit(0)


def _pin(cpu):
    """Pin to core ``cpu``; None: every core. (The bench pins itself to the
    client's core before it starts servers, and a child inherits that.)"""
    if not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu} if cpu is not None else range(os.cpu_count() or 1))
    except OSError:
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastsockserver._bench.servers")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--impl", required=True,
                        choices=SOCKETSERVER_IMPLS + (STDLIB_NODELAY, GIL_ON) + PEER_IMPLS
                        + HTTP_PEER_IMPLS + WSGIREF_IMPLS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="exit by itself after this long")
    parser.add_argument("--shutdown-count", type=int, default=3)
    parser.add_argument("--shutdown-sleep", type=float, default=0.1)
    parser.add_argument("--tls-dir", help="tls kinds: the directory of the certificates "
                        "(tlsclients.make_certificates)")
    parser.add_argument("--tls-key", default="ec", choices=("ec", "rsa2048"),
                        help="tls kinds: the server certificate's key (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="compiled and pure: worker processes (serve(workers=N))")
    parser.add_argument("--reuse-port", action="store_true",
                        help="with --workers: serve(..., reuse_port=True)")
    parser.add_argument("--start-timeout", type=float, default=20.0,
                        help="http peers: seconds to answer a first GET / (default "
                        "%(default)s)")
    args = parser.parse_args(argv)
    _pin(args.cpu)
    # Whatever happens, this process does not outlive its time bound.
    killer = threading.Timer(args.max_seconds, _exit, (3,))
    killer.daemon = True
    killer.start()

    address = (args.host, args.port)
    server = None   # the peers on asyncio have a loop instead
    try:
        if args.kind == "shutdown":
            if args.impl not in SOCKETSERVER_IMPLS:
                raise StartError("no shutdown measurement for {}".format(args.impl))
            times = measure_shutdown(args.impl, address, args.shutdown_count,
                                     args.shutdown_sleep)
            _emit({"shutdown_s": times, "pid": os.getpid()})
            return 0
        if args.impl in SOCKETSERVER_IMPLS + (STDLIB_NODELAY, GIL_ON):
            server = make_socketserver(args.kind, args.impl, address, args.tls_dir,
                                       args.tls_key)
            port = server.server_address[1]
            serve = server.serve_forever
        elif args.impl in HTTP_PEER_IMPLS + WSGIREF_IMPLS:
            serve = _start_http_peer(args, address)
        elif args.impl == "gevent":
            if args.kind in TLS_KINDS:
                raise StartError("no {} server for gevent".format(args.kind))
            server, port = _gevent_server(args.kind, address)
            serve = server.serve_forever
        else:
            loop, port = _asyncio_server(args.kind, args.impl, address, args.tls_dir,
                                         args.tls_key)
            serve = loop.run_forever
    except StartError as exc:
        _emit({"error": str(exc)})
        return 1
    except OSError as exc:
        _emit({"error": "{} (binding {}:{})".format(exc, args.host, args.port)})
        return 1
    except Exception as exc:
        _emit({"error": "{}: {}".format(type(exc).__name__, exc)})
        return 1

    if args.impl in HTTP_PEER_IMPLS + WSGIREF_IMPLS:
        serve()   # (it says its port itself, once it answers)
        return 0
    if args.kind == "drain" and args.impl not in STDLIB_IMPLS:
        import fastsockserver

        def serve():
            drained = fastsockserver.serve(server, drain_timeout=DRAIN_TIMEOUT)
            _emit({"drained": drained})

    if args.workers > 1:
        if args.impl not in SOCKETSERVER_IMPLS[1:] or args.kind in ("drain", "shutdown"):
            _emit({"error": "--workers is for fastsockserver's load kinds"})
            return 1
        serve = serve_with_workers(server, args.workers, args.reuse_port)
    tls_failures = None
    if args.kind in TLS_KINDS and getattr(server, "ssl_context", None) is not None:
        def tls_failures():
            return server.stats()["tls_handshake_failures"]
    accounting = Accounting(tls_failures, tree=args.workers > 1)
    threading.Thread(target=control_loop, args=(accounting,), daemon=True).start()
    # Peak threads are a figure of these kinds; elsewhere the sampler's wake-ups
    # would only add noise.
    if args.kind in ("overload", "slowloris"):
        threading.Thread(target=accounting.sample_threads, daemon=True).start()
    limits = None
    if args.kind == "slowloris":
        limits = _limits(server)
    elif args.kind in TLS_KINDS:   # where the handshakes run, and how long they may take
        limits = _tls_limits(server, args.impl)
    _emit({"port": port, "pid": os.getpid(), "python": sys.version.split()[0],
           "limits": limits})
    serve()
    return 0


def _start_http_peer(args, address):
    """A WSGI peer, bound; returns its serve function, which first checks (on a
    thread) that it answers GET / within --start-timeout and then says its port.
    A peer that does not answer is an error line and exit status 1."""
    if args.workers > 1:
        raise StartError("--workers is for fastsockserver's load kinds")

    def announce(port, tree=False):
        try:
            probe_http(args.host, port, args.start_timeout)
        except StartError as exc:
            _emit({"error": "{}: {}".format(args.impl, exc)})
            _exit(1)
        accounting = Accounting(tree=tree)
        _emit({"port": port, "pid": os.getpid(), "python": sys.version.split()[0],
               "limits": None, "peer": HTTP_PEER_SETTINGS[args.impl]})
        threading.Thread(target=control_loop, args=(accounting,), daemon=True).start()

    def announce_later(port, tree=False):
        threading.Thread(target=announce, args=(port, tree), daemon=True).start()

    if args.impl == "gunicorn":
        _BEFORE_EXIT.append(_end_children)

        def when_ready(arbiter):
            announce_later(port, tree=True)
        application, port = _gunicorn_application(address, when_ready)
        return application.run
    if args.impl == "waitress":
        server, port = _waitress_server(args.kind, address)
        serve = server.run
    elif args.impl == "cheroot":
        server, port = _cheroot_server(args.kind, address)
        serve = server.serve
    else:
        server = _wsgiref_server(args.kind, args.impl, address)
        port = server.server_address[1]
        serve = server.serve_forever

    def announce_and_serve():
        announce_later(port)
        serve()
    return announce_and_serve


def _limits(server):
    """The slow-client limits the slowloris server has (None where the library has none)."""
    handler = server.RequestHandlerClass
    return {
        "max_threads": getattr(server, "max_threads", None),
        "first_byte_timeout": getattr(server, "first_byte_timeout", None),
        "headers_timeout": getattr(handler, "headers_timeout", None),
        "idle_timeout": getattr(handler, "idle_timeout", None),
    }


def _tls_limits(server, impl):
    if impl in PEER_IMPLS:   # create_server's default ssl_handshake_timeout
        return {"handshake_on": "the event loop, nonblocking", "ssl_handshake_timeout": 60.0}
    if getattr(server, "ssl_context", None) is None:
        return {"handshake_on": "the loop's thread, in get_request()",
                "ssl_handshake_timeout": None}
    return {"handshake_on": "the handler thread",
            "ssl_handshake_timeout": server.ssl_handshake_timeout}


if __name__ == "__main__":
    sys.exit(main())
