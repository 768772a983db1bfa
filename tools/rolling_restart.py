#!/usr/bin/env python3
"""Rolling restart behind a real HAProxy: how many requests fail?

    python3 tools/rolling_restart.py [--clients 32] [--duration 60] [--settle 2] [--reload]

Starts HAProxy (the ``haproxy`` command, Debian's package; in the foreground,
on free loopback ports, killed at the end) balancing over two backends, each
``python -m fastsockserver run --drain-timeout 5`` of a small keep-alive
``http.server`` program behind ``send-proxy-v2``. Client threads send GETs
through HAProxy on keep-alive connections while the backends are restarted one
after the other, again and again until ``--duration`` ends: SIGTERM (the
backend drains and exits), start it again, wait until HAProxy's health check
sees it up, let the load settle, then the other. Prints the requests served,
the failed ones (with why) and the restarts; exit status 1 if any failed.
With ``--reload`` each backend runs ``--workers 2`` and is reloaded instead:
SIGHUP, after which its supervisor replaces its workers one by one; the next
backend's turn comes once both new workers have answered requests.
tests/test_haproxy.py runs the same scenario, shorter. The HAProxy settings
are docs/workers.rst's recipe (ROLLING below).
"""
import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

WAIT = 10.0  # upper bound of any single wait

HAPROXY_GLOBAL = """\
global
    maxconn 512
    stats socket {admin} mode 600 level admin
defaults
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    timeout check 1s
"""

# The settings that make a restart lossless (docs/workers.rst's recipe): health
# checks every 200 ms taking a server out after one failure; a request that
# meets a refused or reset connection, or a keep-alive connection the
# draining backend closed (empty response), is sent again, to the other
# server (redispatch). HAProxy retries what it still holds: requests
# without a body (or with one, given `option http-buffer-request`).
ROLLING = """\
frontend fe
    mode http
    bind 127.0.0.1:{port}
    default_backend be
backend be
    mode http
    balance roundrobin
    option httpchk GET /health
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch 1
    default-server check inter 200ms fall 1 rise 2 send-proxy-v2
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""

BACKEND = """\
import os
import http.server

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.proxy_protocol_from = "127.0.0.1"
server.serve_forever()
"""


def wait_until(predicate, timeout=WAIT, interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 that was free when asked, for HAProxy and the backends
    to bind in other processes: below the kernel's ephemeral range, where client
    connections (this run's, and whatever else runs) take their source ports."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(ephemeral_low, 10001))
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below {}".format(ephemeral_low))


class HAProxy:
    """``haproxy -db -f <directory>/haproxy.cfg`` with the given sections; close() kills it."""

    def __init__(self, directory, config):
        binary = shutil.which("haproxy")
        if not binary:
            raise RuntimeError("the haproxy command is needed (Debian: apt-get install haproxy)")
        self.admin = os.path.join(directory, "admin.sock")
        path = os.path.join(directory, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(HAPROXY_GLOBAL.format(admin=self.admin) + textwrap.dedent(config))
        self.log = open(os.path.join(directory, "haproxy.log"), "w+")
        self.proc = subprocess.Popen([binary, "-db", "-f", path], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self):
        """Until every frontend listens (asked on the stats socket: a probe
        connection would reach a backend, which would count it)."""
        def ready():
            if self.proc.poll() is not None:  # e.g. a port taken meanwhile
                raise RuntimeError("haproxy exited:\n" + self.output())
            try:
                rows = self.stats()
            except OSError:  # the stats socket is not there yet
                return False
            frontends = [row for row in rows if row["svname"] == "FRONTEND"]
            return frontends and all(row["status"] == "OPEN" for row in frontends)
        if not wait_until(ready):
            raise RuntimeError("haproxy not ready:\n" + self.output())

    def command(self, line):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(self.admin)
            sock.sendall(line.encode() + b"\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data.decode()
                data += chunk

    def stats(self):
        """The rows of ``show stat``, as dicts."""
        lines = self.command("show stat").splitlines()
        names = lines[0].lstrip("# ").split(",")
        return [dict(zip(names, line.split(","))) for line in lines[1:] if line]

    def server_status(self, backend):
        """{server name: status} of ``backend`` ("UP", "DOWN", "UP 1/2"...)."""
        return {row["svname"]: row["status"] for row in self.stats()
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.log.close()


class Backend:
    """``python -m fastsockserver run --drain-timeout 5 [--workers N] <program>`` on ``port``."""

    def __init__(self, program, port, env, workers=None):
        self.program, self.port, self.env, self.proc = program, port, env, None
        self.workers = workers

    def start(self):
        env = dict(self.env, PORT=str(self.port))
        options = ["--workers", str(self.workers)] if self.workers else []
        # stderr to a file: a pipe nobody reads would fill with the tracebacks
        # of connections HAProxy resets, and stop the process writing them.
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastsockserver", "run", "--drain-timeout", "5", *options,
             self.program], env=env, stderr=self.stderr)

    def stop(self):
        """SIGTERM: the server drains and the program ends; (exit status, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(WAIT)
        self.stderr.seek(0)
        err = self.stderr.read()
        self.stderr.close()
        return self.proc.returncode, err

    def children(self):
        """The pids of the backend's child processes (its workers)."""
        pids = set()
        for task in os.listdir("/proc/{}/task".format(self.proc.pid)):
            try:
                with open("/proc/{}/task/{}/children".format(self.proc.pid, task)) as f:
                    pids.update(int(pid) for pid in f.read().split())
            except OSError:  # the thread ended
                pass
        return pids

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        if self.proc is not None:
            self.stderr.close()


class Load:
    """Client threads, each with an HTTP/1.1 keep-alive connection to HAProxy,
    sending GETs with ``pause`` seconds between them; every failed request is
    counted (with why), every backend pid that answered recorded."""

    def __init__(self, port, clients, pause=0.002):
        self.port, self.pause, self.stop = port, pause, threading.Event()
        self.ok, self.failed, self.pids, self.lock = 0, [], set(), threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        while not self.stop.is_set():
            body = None
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise http.client.HTTPException("status {}".format(response.status))
                pid = int(body)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failed.append("{!r} (body {!r})".format(exc, body))
                conn.close()  # a new connection for the next request
                continue
            with self.lock:
                self.ok += 1
                self.pids.add(pid)
            time.sleep(self.pause)
        conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(WAIT)
        if any(t.is_alive() for t in self.threads):
            raise RuntimeError("a client thread did not end")


class Result:
    def __init__(self, load, restarts, seconds, served_by):
        self.ok, self.failed, self.pids = load.ok, list(load.failed), set(load.pids)
        self.restarts, self.seconds = restarts, seconds
        self.served_by = served_by  # every backend process started, by pid


RELOAD_WORKERS = 2


def run(directory, clients, restarts=None, duration=None, settle=1.0, env=None, reload=False):
    """The scenario: ``restarts`` backend restarts (or as many as fit in
    ``duration`` seconds), each followed by ``settle`` seconds of load.
    ``reload``: SIGHUP to a backend of RELOAD_WORKERS workers instead of a restart."""
    program = os.path.join(directory, "backend.py")
    with open(program, "w") as f:
        f.write(BACKEND)
    env = dict(os.environ if env is None else env)
    workers = RELOAD_WORKERS if reload else None
    backends = [Backend(program, free_port(), env, workers),
                Backend(program, free_port(), env, workers)]
    port = free_port()
    proxy = load = None
    started = []
    try:
        for backend in backends:
            backend.start()
            started.append(backend.proc.pid)
        proxy = HAProxy(directory, ROLLING.format(port=port, a=backends[0].port,
                                                  b=backends[1].port))
        proxy.wait_ready()
        if not wait_until(lambda: proxy.server_status("be") == {"a": "UP", "b": "UP"}):
            raise RuntimeError("backends not up: {}".format(proxy.server_status("be")))
        start = time.monotonic()
        load = Load(port, clients)
        time.sleep(settle)
        done = 0
        while (done < restarts) if restarts is not None else (
                time.monotonic() - start < duration - settle):
            name, backend = "ab"[done % 2], backends[done % 2]
            if reload:
                before = backend.children()
                backend.proc.send_signal(signal.SIGHUP)

                def replaced():  # all its workers are new ones
                    now = backend.children()
                    return len(now) == RELOAD_WORKERS and not now & before
                if not wait_until(replaced, timeout=3 * WAIT):
                    raise RuntimeError("backend {}'s workers were not replaced: {} -> {}".format(
                        name, before, backend.children()))
                started.extend(sorted(backend.children()))
                done += 1
                time.sleep(settle)
                continue
            status, err = backend.stop()
            if status != 0:
                raise RuntimeError("backend {} exited with {}: {}".format(name, status, err))
            backend.start()
            started.append(backend.proc.pid)
            if not wait_until(lambda: proxy.server_status("be")[name] == "UP"):
                raise RuntimeError("backend {} not up again: {}".format(
                    name, proxy.server_status("be")))
            done += 1
            time.sleep(settle)
        load.finish()
        return Result(load, done, time.monotonic() - start, started)
    finally:
        if load is not None:
            load.stop.set()
        for backend in backends:
            backend.kill()
        if proxy is not None:
            proxy.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of load after each backend is up again")
    parser.add_argument("--reload", action="store_true",
                        help="backends of {} workers, reloaded with SIGHUP instead of "
                        "restarted".format(RELOAD_WORKERS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rolling") as directory:
        result = run(directory, args.clients, duration=args.duration, settle=args.settle,
                     reload=args.reload)
    print("{} clients, {:.1f} s, {} {}: {} requests served ({:.0f}/s), {} failed".format(
        args.clients, result.seconds, result.restarts,
        "reloads (SIGHUP)" if args.reload else "restarts", result.ok,
        result.ok / result.seconds, len(result.failed)))
    for line in result.failed[:20]:
        print("  failed: " + line)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
