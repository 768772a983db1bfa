"""Worker processes (serve(workers=N), run --workers N) and inherited listeners
(systemd socket activation with the real systemd-socket-activate, run --fd N,
adopt_socket). fastsockserver only, pure and compiled; every server runs in a
subprocess that is killed at the end, every wait is bounded."""
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from support import (
    SUBPROCESS_TIMEOUT,
    WAIT,
    free_port,
    require_tool,
    subprocess_env,
    timing_is_the_subject,
    wait_for,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux: /proc, PR_SET_PDEATHSIG")

SERVER_SCRIPT = """
import json, os, sys, threading, time
import fastsockserver as ss
assert ss.COMPILED == {compiled!r}

class Handler(ss.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line.startswith(b"slow"):
                time.sleep(float(line.split()[1]))
            self.wfile.write(b"%d %s" % (os.getpid(), line))

class Server(ss.ThreadingTCPServer):
    daemon_threads = True
    def serve_forever(self, poll_interval=0.5):
        crash_log = os.environ.get("CRASH_LOG")
        if crash_log:  # every worker dies at start
            with open(crash_log, "a") as log:
                log.write("%d\\n" % os.getpid())
            raise RuntimeError("crash at start")
        super().serve_forever(poll_interval)

server = Server(("127.0.0.1", 0), Handler)
{before}
print(server.server_address[1], flush=True)
drained = ss.serve(server, drain_timeout={drain_timeout}, poll_interval=0.05, workers={workers},
                   reuse_port={reuse_port})
print("drained", drained, flush=True)
print(json.dumps(server.stats()), flush=True)
"""


def children(pid):
    """The pids of ``pid``'s child processes (Linux /proc)."""
    found = set()
    for task in os.listdir("/proc/{}/task".format(pid)):
        with open("/proc/{}/task/{}/children".format(pid, task)) as f:
            found.update(int(child) for child in f.read().split())
    return found


def gone(pid):
    """True when ``pid`` has exited (a zombie counts: it has exited)."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def ask(port, line=b"ping\n", sock=None):
    """One line to the server, its reply as (pid, text)."""
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        sock.sendall(line)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            reply += chunk
        pid, _, text = reply.partition(b" ")
        return int(pid), text
    finally:
        if own:
            sock.close()


@contextlib.contextmanager
def supervised(fast_impl, workers=2, drain_timeout=5.0, before="", env=None, reuse_port=False):
    """SERVER_SCRIPT in a subprocess: yields (process, port)."""
    name = "c" if fast_impl.COMPILED else "py"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT.format(
            compiled=fast_impl.COMPILED, workers=workers, drain_timeout=drain_timeout,
            before=before, reuse_port=reuse_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(subprocess_env(name), **(env or {})))
    try:
        port = int(proc.stdout.readline())
        if not (env or {}).get("CRASH_LOG"):
            assert wait_for(lambda: len(children(proc.pid)) == workers), children(proc.pid)
        yield proc, port
    finally:
        pids = children(proc.pid) if proc.poll() is None else set()
        proc.kill()
        proc.wait()
        for pid in pids:  # workers notice the parent's death; make sure anyway
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def finish(proc):
    """SIGTERM; the parent's output lines and stderr once it has exited."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    return out.splitlines(), err


# --------------------------------------------------------------- supervision

REUSE_PORT = pytest.mark.parametrize("reuse_port", [False, True], ids=["shared", "reuse_port"])


@REUSE_PORT
def test_workers_serve_drain_on_sigterm_and_roll_up_stats(fast_impl, reuse_port):
    with supervised(fast_impl, reuse_port=reuse_port) as (proc, port):
        workers = children(proc.pid)
        served = {ask(port)[0] for _ in range(20)}
        assert served <= workers and proc.pid not in served
        idle = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        assert ask(port, sock=idle)[1] == b"ping\n"
        busy = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        busy.sendall(b"slow 0.5\n")
        time.sleep(0.2)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert idle.recv(100) == b""  # idle keep-alive connection ended by the drain
        assert busy.recv(100).endswith(b" slow 0.5\n")  # the request in flight finished
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert time.monotonic() - start < 5.0
        assert proc.returncode == 0, err
        out = out.splitlines()
        assert out[0] == "drained True"
        stats = json.loads(out[1])
        assert stats["accepted"] == stats["finished"] == 22
        assert stats["active"] == 0 and stats["workers"] == 0 and stats["draining"]
        assert all(gone(pid) for pid in workers)
        idle.close()
        busy.close()


@REUSE_PORT
def test_a_worker_killed_mid_request_is_replaced(fast_impl, reuse_port):
    with supervised(fast_impl, reuse_port=reuse_port) as (proc, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        victim, _ = ask(port, sock=sock)
        sock.sendall(b"slow 30\n")
        time.sleep(0.6)  # the victim has reported its accepted connection (every 0.25 s)
        os.kill(victim, signal.SIGKILL)
        assert sock.recv(100) == b""  # its connection ends with it
        sock.close()
        # the other worker goes on serving, the parent starts a third
        for _ in range(10):
            assert ask(port)[0] != victim
        assert wait_for(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
        assert proc.poll() is None
        out, err = finish(proc)
        assert "worker {} died (killed by SIGKILL)".format(victim) in err
        assert proc.returncode == 0 and out[0] == "drained True", err
        stats = json.loads(out[1])  # the dead worker's last report is kept
        assert (stats["accepted"], stats["finished"]) == (11, 10), stats


PRINT_STATS_ON_SIGUSR1 = ("import signal\nsignal.signal(signal.SIGUSR1, "
                          "lambda *_: print(json.dumps(server.stats()), flush=True))")


@REUSE_PORT
def test_stats_roll_up_while_serving(fast_impl, reuse_port):
    with supervised(fast_impl, reuse_port=reuse_port, before=PRINT_STATS_ON_SIGUSR1) \
            as (proc, port):
        for _ in range(5):
            ask(port)
        busy = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        busy.sendall(b"slow 2\n")
        time.sleep(0.7)  # each worker reports every 0.25 s
        proc.send_signal(signal.SIGUSR1)
        stats = json.loads(proc.stdout.readline())
        assert (stats["accepted"], stats["finished"], stats["active"]) == (6, 5, 1), stats
        assert stats["workers"] == 2 and not stats["draining"]
        assert stats["waiting"] == 0  # the listening sockets' backlog, read by the parent
        busy.close()
        out, err = finish(proc)
        assert proc.returncode == 0, err


@timing_is_the_subject  # a quick death is one within QUICK_DEATH (1 s) of the fork
def test_a_worker_that_crashes_at_start_is_restarted_with_back_off(fast_impl, tmp_path):
    crash_log = tmp_path / "forks"
    with supervised(fast_impl, env={"CRASH_LOG": str(crash_log)}) as (proc, port):
        time.sleep(3.0)
        forks = len(crash_log.read_text().split())
        # back-off doubling from 0.1 s: about 8 forks in 3 s, not thousands
        assert 3 <= forks <= 14, forks
        assert proc.poll() is None
        out, err = finish(proc)
        assert "RuntimeError: crash at start" in err
        assert "quick deaths in a row" in err
        assert proc.returncode == 0


def test_workers_exit_when_the_parent_is_killed(fast_impl):
    with supervised(fast_impl) as (proc, port):
        workers = children(proc.pid)
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(b"slow 0.3\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_for(lambda: all(gone(pid) for pid in workers)), workers
        sock.close()


@REUSE_PORT
def test_sigttin_adds_and_sigttou_removes_a_worker(fast_impl, reuse_port):
    with supervised(fast_impl, reuse_port=reuse_port) as (proc, port):
        proc.send_signal(signal.SIGTTIN)
        assert wait_for(lambda: len(children(proc.pid)) == 3)
        for _ in range(3):  # never below one
            proc.send_signal(signal.SIGTTOU)
            time.sleep(0.2)
        assert wait_for(lambda: len(children(proc.pid)) == 1)
        time.sleep(0.3)
        assert len(children(proc.pid)) == 1
        assert ask(port)[1] == b"ping\n"
        out, err = finish(proc)
        assert proc.returncode == 0 and out[0] == "drained True", err


def test_workers_need_a_process_without_threads(fast_impl):
    before = "threading.Thread(target=time.sleep, args=(30,), name='busy', daemon=True).start()"
    name = "c" if fast_impl.COMPILED else "py"
    result = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT.format(compiled=fast_impl.COMPILED, workers=2,
                                                     drain_timeout=1, before=before,
                                                     reuse_port=False)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=subprocess_env(name))
    assert result.returncode == 1
    assert "RuntimeError" in result.stderr and "Running: busy" in result.stderr


def test_workers_must_be_positive(fast_impl):
    server = fast_impl.TCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        fast_impl.serve(server, workers=0)
    assert server.socket.fileno() == -1  # closed, as after serve()


def test_reuse_port_is_for_tcp(fast_impl):
    server = fast_impl.UDPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler)
    with pytest.raises(ValueError, match="reuse_port is for TCP servers"):
        fast_impl.serve(server, workers=2, reuse_port=True)


def test_reuse_port_is_not_for_an_inherited_socket(fast_impl):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = fast_impl.TCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler,
                                     bind_and_activate=False)
        fast_impl.adopt_socket(server, listener.dup())
        with pytest.raises(ValueError, match="not for an inherited listening socket"):
            fast_impl.serve(server, workers=2, reuse_port=True)


def spread(port, connections=32):
    """How many of ``connections`` opened at once each worker took, fewest first."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT)
             for _ in range(connections)]
    try:
        taken = {}
        for sock in socks:
            pid = ask(port, sock=sock)[0]
            taken[pid] = taken.get(pid, 0) + 1
        return sorted(taken.values())
    finally:
        for sock in socks:
            sock.close()


def test_reuse_port_spreads_connections(fast_impl):
    with supervised(fast_impl, reuse_port=True) as (proc, port):
        # the kernel hashes each connection to a worker's socket: fewer than 4
        # of 32 on one of two has a probability of about 1e-6
        counts = spread(port)
        assert len(counts) == 2 and counts[0] >= 4, counts
        out, err = finish(proc)
        assert proc.returncode == 0 and out[0] == "drained True", err


HTTP_SCRIPT = """
import http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
with http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler) as s:
    print("serving", flush=True)
    s.serve_forever()
print("returned", flush=True)
"""


@contextlib.contextmanager
def run_workers(fast_impl, tmp_path, *options, command=None, port=None, env=None):
    """``python -m fastsockserver run [options] HTTP_SCRIPT port`` serving tmp_path."""
    name = "c" if fast_impl.COMPILED else "py"
    (tmp_path / "index.html").write_text("hello")
    script = tmp_path / "server.py"
    script.write_text(HTTP_SCRIPT)
    port = port or free_port()
    argv = [*(command or []), sys.executable, "-m", "fastsockserver", "run", *options,
            str(script), str(port)]
    proc = subprocess.Popen(argv, cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(subprocess_env(name), **(env or {})))
    try:
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def http_load(port, stop, results, keep_alive):
    """Requests until ``stop``; every failure and refusal recorded."""
    conn = None
    while not stop.is_set():
        try:
            if conn is None or not keep_alive:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            conn.request("GET", "/index.html")
            response = conn.getresponse()
            body = response.read()
            results.append("ok" if response.status == 200 and body == b"hello" else "bad")
            if not keep_alive:
                conn.close()
        except ConnectionRefusedError:
            results.append("refused")
            conn = None
        except (OSError, http.client.HTTPException) as error:
            results.append(repr(error))
            conn = None


@REUSE_PORT
def test_sighup_replaces_workers_with_no_failed_request(fast_impl, tmp_path, reuse_port):
    options = ("--workers", "2") + (("--reuse-port",) if reuse_port else ())
    with run_workers(fast_impl, tmp_path, *options) as (proc, port):
        assert proc.stdout.readline().strip() == "serving"
        assert wait_for(lambda: len(children(proc.pid)) == 2)
        before = children(proc.pid)
        stop, results = threading.Event(), []
        clients = [threading.Thread(target=http_load, args=(port, stop, results, keep_alive))
                   for keep_alive in (True, True, False, False)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.5)
            proc.send_signal(signal.SIGHUP)
            replaced = wait_for(lambda: not (children(proc.pid) & before)
                                and len(children(proc.pid)) == 2, timeout=WAIT * 2)
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join(WAIT * 2)
        assert replaced, (before, children(proc.pid))
        failures = [result for result in results if result != "ok"]
        assert results.count("ok") > 100 and not failures, failures[:5]
        out, err = finish(proc)
        assert proc.returncode == 0 and out == ["returned"], err


# --------------------------------------------------------------- inherited listeners

def socket_activate(port, *more):
    tool = require_tool("systemd-socket-activate")
    # It passes on none of its own environment unless told: the sanitizer runs' runtime
    # and options (tools/run_tests.py --only asan / tsan) must reach the program.
    passed = ["-E" + name for name in ("SANITIZER_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                       "TSAN_OPTIONS") if name in os.environ]
    return [tool, "-l", "127.0.0.1:{}".format(port), *passed, *more]


def test_socket_activation_with_workers(fast_impl, tmp_path):
    port = free_port()
    with run_workers(fast_impl, tmp_path, "--workers", "2", port=free_port(),
                     command=socket_activate(port, "--fdname=web")) as (proc, _):
        # systemd-socket-activate starts the program on the first connection
        assert wait_for(lambda: _listening(port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT * 2)
        conn.request("GET", "/index.html")
        assert conn.getresponse().read() == b"hello"
        assert proc.stdout.readline().strip() == "serving"
        assert wait_for(lambda: len(children(proc.pid)) == 2)
        for _ in range(5):
            conn.request("GET", "/index.html")
            assert conn.getresponse().read() == b"hello"
        conn.close()
        out, err = finish(proc)
        assert proc.returncode == 0 and out == ["returned"], err
        assert "serving on inherited descriptor 3 (('127.0.0.1', {}))".format(port) in err


def test_run_fd_adopts_a_listener_of_ours(fast_impl, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        name = "c" if fast_impl.COMPILED else "py"
        (tmp_path / "index.html").write_text("hello")
        (tmp_path / "server.py").write_text(HTTP_SCRIPT)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastsockserver", "run", "--drain-timeout", "5",
             "--fd", str(listener.fileno()), "server.py", "1"],
            cwd=str(tmp_path), pass_fds=(listener.fileno(),),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(name))
        try:
            assert proc.stdout.readline().strip() == "serving"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            conn.request("GET", "/index.html")
            assert conn.getresponse().read() == b"hello"
            conn.close()
            out, err = finish(proc)
            assert proc.returncode == 0, err
        finally:
            proc.kill()
            proc.wait()


def run_with_fd3(fast_impl, tmp_path, shell_setup, timeout=SUBPROCESS_TIMEOUT):
    """``run server.py 1`` after ``shell_setup`` (sh, which execs python with its pid)."""
    name = "c" if fast_impl.COMPILED else "py"
    (tmp_path / "server.py").write_text(HTTP_SCRIPT)
    command = "{}; exec {} -m fastsockserver run server.py {}".format(
        shell_setup, sys.executable, free_port())
    return subprocess.Popen(["sh", "-c", command], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(name))


@pytest.mark.parametrize("setup, message", [
    ("exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1", "descriptor 3 is not a socket"),
    ("exec 3<&-; export LISTEN_PID=$$ LISTEN_FDS=1",
     "LISTEN_FDS=1 but descriptor 3 is not open"),
    ("export LISTEN_PID=$$ LISTEN_FDS=two", "LISTEN_FDS='two' is not a number"),
    ("exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b",
     "LISTEN_FDNAMES='a:b' names 2 descriptors, LISTEN_FDS=1 passes 1"),
])
def test_bad_inherited_descriptors_are_a_clear_error(fast_impl, tmp_path, setup, message):
    proc = run_with_fd3(fast_impl, tmp_path, setup)
    out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2 and message in err, err
    assert out == ""


def test_wrong_count_through_systemd_socket_activate(fast_impl, tmp_path):
    port = free_port()
    name = "c" if fast_impl.COMPILED else "py"
    (tmp_path / "server.py").write_text(HTTP_SCRIPT)
    # systemd passes one socket (fd 3); the program is told there are two
    proc = subprocess.Popen(
        socket_activate(port) + ["sh", "-c", "LISTEN_FDS=2 exec {} -m fastsockserver run "
                                 "server.py 1".format(sys.executable)],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(name))
    try:
        assert wait_for(lambda: _listening(port))
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 2 and "LISTEN_FDS=2 but descriptor 4 is not open" in err, err
    finally:
        proc.kill()
        proc.wait()


def _listening(port):
    """True once something listens on the loopback port (without connecting:
    a connection would start systemd-socket-activate's program)."""
    with open("/proc/net/tcp") as table:
        return any(line.split()[1] == "0100007F:{:04X}".format(port) and line.split()[3] == "0A"
                   for line in list(table)[1:])


def test_listen_pid_of_another_process_is_ignored(fast_impl, tmp_path):
    proc = run_with_fd3(fast_impl, tmp_path,
                        "exec 3</dev/null; export LISTEN_PID=1 LISTEN_FDS=1")
    try:
        # not for us: the program binds its own address, fd 3 is left alone
        assert proc.stdout.readline().strip() == "serving"
        out, err = finish(proc)
        assert "inherited" not in err
    finally:
        proc.kill()
        proc.wait()


def test_listen_fds_reads_and_unsets_the_environment(fast_impl, monkeypatch):
    from fastsockserver._listeners import listen_fds
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert listen_fds() == []
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ


def test_adopt_socket_checks_what_it_is_given(fast_impl):
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        server = fast_impl.TCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler,
                                     bind_and_activate=False)
        with pytest.raises(ValueError, match="not listening"):
            fast_impl.adopt_socket(server, bound.fileno())
        server.server_close()
        assert bound.fileno() != -1  # left open for its owner
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        server = fast_impl.TCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler,
                                     bind_and_activate=False)
        with pytest.raises(ValueError, match="SOCK_DGRAM socket; this server needs SOCK_STREAM"):
            fast_impl.adopt_socket(server, udp.fileno())
        server.server_close()
    read_end, write_end = os.pipe()
    server = fast_impl.TCPServer(("127.0.0.1", 0), fast_impl.BaseRequestHandler,
                                 bind_and_activate=False)
    with pytest.raises(ValueError, match="is not a socket"):
        fast_impl.adopt_socket(server, read_end)
    server.server_close()
    os.close(read_end)
    os.close(write_end)


def test_adopt_socket_serves_on_it(fast_impl, harness):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    class Echo(fast_impl.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    server = fast_impl.ThreadingTCPServer(("0.0.0.0", 9), Echo, bind_and_activate=False)
    assert fast_impl.adopt_socket(server, listener.fileno()) is server
    assert server.server_address == ("127.0.0.1", port) and server.socket.fileno() == \
        listener.detach()
    harness.servers.append(server)
    harness.serve(server)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
        client.sendall(b"hi\n")
        assert client.recv(10) == b"hi\n"


def test_run_rejects_bad_worker_counts():
    for value in ("0", "x", "-2"):
        result = subprocess.run([sys.executable, "-m", "fastsockserver", "run", "--workers",
                                 value, "x.py"], capture_output=True, text=True,
                                timeout=SUBPROCESS_TIMEOUT)
        assert result.returncode == 2 and "--workers takes a count >= 1" in result.stderr



def test_run_workers_with_a_thread_started_before_is_an_error(fast_impl, tmp_path):
    name = "c" if fast_impl.COMPILED else "py"
    script = tmp_path / "threaded.py"
    script.write_text(HTTP_SCRIPT.replace(
        "import http.server, sys",
        "import http.server, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), name='poller', daemon=True).start()"))
    result = subprocess.run(
        [sys.executable, "-m", "fastsockserver", "run", "--workers", "2", str(script),
         str(free_port())], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        env=subprocess_env(name))
    assert result.returncode == 1
    assert "RuntimeError" in result.stderr and "Running: poller" in result.stderr
