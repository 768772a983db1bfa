"""``python -m fastsockserver bench`` and its compiled load generator, kept fast (seconds each)."""
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

import fastsockserver
from fastsockserver import _env
from support import WALL_SCALE, fork_then_threads, free_port, timing_is_the_subject

loadgen = pytest.importorskip("fastsockserver._loadgen",
                              reason="the load generator is not built (pure install)")
pytestmark = pytest.mark.skipif(_env.NO_EXTENSIONS, reason="pure-Python mode")


def bench(*args, env=None, timeout=120):
    environ = dict(os.environ)
    environ.pop(_env.ENV_VAR, None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastsockserver", "bench", *args],
                          capture_output=True, text=True, timeout=timeout, env=environ)


# ---------------------------------------------------------------- the CLI

@contextlib.contextmanager
def _busy_port_followed_by_a_free_one():
    """A listening port P such that P + 1 could be bound when we looked."""
    for _ in range(50):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            busy.close()
            continue
        busy.listen()
        try:
            yield port
        finally:
            busy.close()
        return
    pytest.skip("no port P with P + 1 free found")


def test_unknown_workload_and_impl_one_line_each_rest_runs():
    out = bench("--workloads", "shutdown,bogus", "--impls", "stdlib,nope",
                "--reps", "1", "--shutdown-count", "1", "-q")
    assert out.returncode == 2
    bogus = [line for line in out.stderr.splitlines() if "bogus" in line]
    nope = [line for line in out.stderr.splitlines() if "nope" in line]
    assert len(bogus) == 1 and "unknown workload" in bogus[0]
    assert len(nope) == 1 and "unknown implementation" in nope[0]
    assert "shutdown:" in out.stdout and "stdlib" in out.stdout   # the rest ran


def test_nothing_valid_to_run():
    out = bench("--workloads", "bogus", "-q")
    assert out.returncode == 2
    assert "unknown workload 'bogus'" in out.stderr


def test_pure_mode_needs_compiled_build():
    out = bench("--workloads", "udp", env={_env.ENV_VAR: "1"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the compiled build" in lines[0]


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_overload_stays_within_max_threads(tmp_path):
    """1,000 clients at once: fastsockserver's handler threads stay at max_threads (32);
    the stdlib's grow with the clients."""
    from fastsockserver._bench import servers
    path = tmp_path / "out.json"
    out = bench("--workloads", "overload", "--reps", "1", "--duration", "0.5",
                "--impls", "stdlib,compiled", "--json", str(path))
    assert out.returncode == 0, out.stderr
    [case] = json.loads(path.read_text())["cases"]
    compiled = case["results"]["compiled"]["summary"]
    # the loop, the control thread, the sampler, the time-bound timer; a handler
    # thread that just ended may not yet be idle when the loop starts the next one
    assert compiled["server_peak_threads"] <= servers.OVERLOAD_MAX_THREADS + 5
    assert compiled["rps"] > 0
    assert "at most" in out.stdout and "server threads" in out.stdout


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_drain_figures(tmp_path):
    """SIGTERM under load: the stdlib dies at once; fastsockserver's serve() drains,
    then the process exits by itself (code 0), well within the drain timeout."""
    from fastsockserver._bench import servers, workloads
    path = tmp_path / "drain.json"
    started = time.monotonic()
    out = bench("--workloads", "drain", "--reps", "1", "--duration", "0.3",
                "--impls", "stdlib,compiled", "--json", str(path))
    assert time.monotonic() - started < 30 * WALL_SCALE
    assert out.returncode == 0, out.stderr
    [case] = json.loads(path.read_text())["cases"]
    assert case["mode"] == "drain"
    results = case["results"]
    bound = servers.DRAIN_TIMEOUT + workloads.DRAIN_EXIT_MARGIN
    for impl in ("stdlib", "compiled"):
        assert results[impl]["status"] == "ok", results[impl]
        [rep] = results[impl]["reps"]
        assert rep["requests_before_signal"] > 0 and rep["errors_before_signal"] == 0
        assert rep["requests_after_signal"] >= 0
        assert 0 <= rep["signal_to_exit_s"] < bound
        assert rep["load_after_signal_s"] >= rep["signal_to_exit_s"]
        for split in ("errors_on_served", "errors_on_new"):
            assert rep[split + "_total"] == sum(rep[split].values())
        assert rep["errors_on_served_total"] + rep["errors_on_new_total"] \
            == rep["errors_total"]
        s = results[impl]["summary"]
        assert s["errors_on_served_total"] == rep["errors_on_served_total"]
        assert s["not_exited"] == 0
        assert rep["server_tracebacks"] == 0, rep["server_last_traceback"]
    stdlib, compiled = results["stdlib"]["reps"][0], results["compiled"]["reps"][0]
    assert stdlib["exit_code"] == -15 and stdlib["drained"] is None
    assert compiled["exit_code"] == 0 and compiled["drained"] is True
    assert "failed: served conns" in out.stdout and "SIGTERM to exit s" in out.stdout
    # A drain loses no request the server had accepted. The library tells the
    # clients with "Connection: close" on the responses of a drain; until it
    # does, the keep-alive race (a request sent as the server ends an idle
    # connection) loses requests, and this check cannot hold yet.
    if compiled["close_responses_after_signal"] == 0:
        pytest.xfail("no Connection: close in a drain yet: {} request(s) failed on served "
                     "connections".format(compiled["errors_on_served_total"]))
    assert compiled["errors_on_served_total"] == 0, compiled["errors_on_served"]


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_slowloris_small_run(tmp_path):
    """200 idle and 10 trickling connections: the stdlib holds a thread for each;
    fastsockserver stays within max_threads (and, with first_byte_timeout and
    headers_timeout, keeps serving its good clients)."""
    from fastsockserver._bench import servers
    path = tmp_path / "slow.json"
    started = time.monotonic()
    out = bench("--workloads", "slowloris", "--reps", "1", "--duration", "0.5",
                "--timeout", "2", "--impls", "stdlib,compiled", "--slowloris-idle", "200",
                "--slowloris-trickle", "10", "--json", str(path))
    assert time.monotonic() - started < 45 * WALL_SCALE
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["slowloris_idle"] == 200
    cases = {c["case"]: c for c in doc["cases"]}
    assert set(cases) == {"slowloris", "slowloris/baseline"}
    assert cases["slowloris"]["description"].startswith("200 idle connections")
    for impl in ("stdlib", "compiled"):
        base = cases["slowloris/baseline"]["results"][impl]["summary"]
        assert base["rps"] > 0 and base["errors_total"] == 0
        entry = cases["slowloris"]["results"][impl]
        assert entry["status"] == "ok", entry
        s = entry["summary"]
        [rep] = entry["reps"]
        assert s["slow_idle_open"] == 200 and s["slow_trickle_open"] == 10, rep
        assert rep["slow_clients_ready"] is True
        assert rep["server_fds_at_start"] > 0
        assert s["of_baseline"] == pytest.approx(s["rps"] / base["rps"])
        for key in ("lat_p99_ms", "lat_p999_ms", "server_rss_mib", "server_peak_threads"):
            assert key in s
    stdlib = cases["slowloris"]["results"]["stdlib"]
    assert stdlib["server_limits"] == dict.fromkeys(
        ("max_threads", "first_byte_timeout", "headers_timeout", "idle_timeout"))
    # a thread per slow connection it has taken in, on top of its good clients' (most
    # of the 210 on a quiet machine: 231 threads against 36 without them; its listen
    # backlog is 5, and the kernel retries a connection the full backlog dropped
    # later, so far fewer when the machine is busy: 61, below compiled's cap, in a
    # full CI run)
    stdlib_base = cases["slowloris/baseline"]["results"]["stdlib"]["summary"]
    assert stdlib["summary"]["server_peak_threads"] > stdlib_base["server_peak_threads"]
    assert stdlib["summary"]["rps"] > 0
    compiled = cases["slowloris"]["results"]["compiled"]
    limits = compiled["server_limits"]
    assert limits["max_threads"] == servers.SLOWLORIS_MAX_THREADS
    # the loop, the control thread, the sampler, the time-bound timer; a handler
    # thread that just ended may not yet be idle when the loop starts the next one
    assert compiled["summary"]["server_peak_threads"] <= servers.SLOWLORIS_MAX_THREADS + 5
    assert "of the throughput without the slow clients" in out.stdout
    if limits["first_byte_timeout"] is not None and limits["headers_timeout"] is not None:
        # idle connections wait in the loop, trickling ones lose their thread
        # after headers_timeout: the good clients are served
        assert compiled["summary"]["rps"] > 0 and compiled["summary"]["errors_total"] == 0


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_tiny_run_has_every_figure(tmp_path):
    path = tmp_path / "out.json"
    plot = tmp_path / "out.png"
    started = time.monotonic()
    out = bench("--workloads", "connrate,udp,shutdown", "--reps", "1", "--duration", "0.5",
                "--impls", "stdlib,compiled", "--shutdown-count", "1", "--json", str(path),
                "--plot", str(plot))
    assert time.monotonic() - started < 60
    assert out.returncode in (0, 1), out.stderr   # 1: only when matplotlib is missing
    assert "rep 1/1" in out.stderr    # progress on stderr
    doc = json.loads(path.read_text())
    for key in ("python_version", "platform", "cpu_count", "cpu_model", "kernel",
                "fastsockserver_version", "fastsockserver_compiled"):
        assert key in doc["meta"]
    assert doc["settings"]["reps"] == 1
    cases = {c["case"]: c for c in doc["cases"]}
    assert set(cases) == {"connrate", "udp/threading", "udp/sync", "shutdown"}
    for name in ("connrate", "udp/threading", "udp/sync"):
        for impl in ("stdlib", "compiled"):
            entry = cases[name]["results"][impl]
            assert entry["status"] == "ok", entry
            s = entry["summary"]
            for key in ("rps", "lat_p50_ms", "lat_p99_ms", "lat_p999_ms", "server_us_per_req",
                        "server_rss_mib", "ratio", "client_cpu_pct"):
                assert s[key] > 0, (name, impl, key, s[key])
            assert s["lat_p50_ms"] <= s["lat_p99_ms"] <= s["lat_p999_ms"]
            assert set(s["errors"]) >= {"refused", "reset", "timeout"}
            assert s["errors_total"] == 0, s["errors"]
            assert isinstance(s["client_saturated"], bool)
            rep = entry["reps"][0]
            assert rep["server_cpu_s"] > 0 and rep["client_cpu"] > 0
        assert cases[name]["results"]["stdlib"]["summary"]["ratio"] == 1.0
    for impl in ("stdlib", "compiled"):
        s = cases["shutdown"]["results"][impl]["summary"]
        assert s["shutdown_ms"] > 0 and s["ratio"] > 0
    table = out.stdout
    assert "connrate" in table and "x stdlib" in table and "p99.9 ms" in table
    if out.returncode == 0:
        assert plot.stat().st_size > 1000


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command line tool is not installed")


@needs_openssl
@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_tls_connrate_and_echo_small_run(tmp_path):
    """A full TLS 1.3 handshake per connection, and persistent TLS connections: every
    request answered, and the client's own cost per request reported."""
    path = tmp_path / "tls.json"
    started = time.monotonic()
    out = bench("--workloads", "tls-connrate,tls-echo", "--reps", "1", "--duration", "0.3",
                "--warmup", "0.1", "--impls", "stdlib,compiled", "--json", str(path))
    assert time.monotonic() - started < 30 * WALL_SCALE
    assert out.returncode == 0, out.stderr
    cases = {c["case"]: c for c in json.loads(path.read_text())["cases"]}
    assert set(cases) == {"tls-connrate", "tls-connrate/rsa2048", "tls-echo"}
    for name, case in cases.items():
        for impl in ("stdlib", "compiled"):
            entry = case["results"][impl]
            assert entry["status"] == "ok", entry
            s = entry["summary"]
            assert s["rps"] > 0 and s["errors_total"] == 0, (name, impl, s["errors"])
            assert s["errors"]["tls"] == 0
            assert s["client_us_per_req"] > 0 and s["server_us_per_req"] > 0
            assert isinstance(s["client_saturated"], bool)
            [rep] = entry["reps"]
            # the certificate the client was sent (the echo's connections came in the warm-up)
            assert rep["server_key"] == {"tls-connrate/rsa2048": "rsa", "tls-connrate": "ec",
                                         "tls-echo": None}[name]
            if name.startswith("tls-connrate"):
                # a handshake for each request, give or take the 32 in flight at the
                # start and at the end of the run
                assert rep["requests"] > 0
                assert abs(rep["handshakes"] - rep["requests"]) <= 32
            else:   # the connections were made in the warm-up
                assert rep["handshakes"] == 0
            assert rep["server_tls_handshake_failures"] == (0 if impl == "compiled" else None)
            assert entry["server_tracebacks"] == 0, entry.get("server_last_traceback")
    assert "us/req" in out.stdout and "tls-echo: TLS 1.3" in out.stdout


@needs_openssl
@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_tls_stall_freezes_the_stdlib_not_fastsockserver(tmp_path):
    """Two connections that never start TLS: the stdlib's wrapped listener is stuck in
    the first one's handshake and its good clients time out; fastsockserver's
    handshakes are on the handler threads, and its good clients are served."""
    path = tmp_path / "stall.json"
    started = time.monotonic()
    out = bench("--workloads", "tls-stall", "--tls-stall", "2", "--reps", "1",
                "--duration", "1", "--warmup", "0.1", "--timeout", "0.5",
                "--impls", "stdlib,compiled", "--json", str(path))
    assert time.monotonic() - started < 40
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["tls_stall"] == 2
    [case] = doc["cases"]
    assert case["description"].startswith("2 connection(s) held open")
    for impl in ("stdlib", "compiled"):
        entry = case["results"][impl]
        assert entry["status"] == "ok", entry
        [rep] = entry["reps"]
        assert rep["slow_clients_ready"] is True
        assert rep["slow_clients_at_start"]["idle_open"] == 2
    stdlib = case["results"]["stdlib"]["summary"]
    assert stdlib["requests"] == 0 and stdlib["errors"]["timeout"] > 0
    compiled = case["results"]["compiled"]["summary"]
    assert compiled["requests"] > 0
    assert case["results"]["stdlib"]["server_limits"]["ssl_handshake_timeout"] is None
    assert case["results"]["compiled"]["server_limits"]["handshake_on"] == "the handler thread"
    assert "stdlib: handshakes on the loop's thread, in get_request() (no time limit); - of " \
        "its tls-connrate throughput" in out.stdout   # tls-connrate did not run
    assert "no good client had a response" in out.stdout


@needs_openssl
def test_tls_loadgen_refused_timed_out_and_loopback_only(tmp_path):
    from fastsockserver._bench import tlsclients
    assert tlsclients.make_certificates(str(tmp_path)) is None
    with tlsclients.TlsLoadGen("connrate", "127.0.0.1", free_port(), b"x\n", concurrency=4,
                               timeout=1.0, cert_dir=str(tmp_path)) as lg:
        started = time.monotonic()
        result = lg.run(0.3)
    assert time.monotonic() - started < 1.0
    assert result["requests"] == 0 and result["errors"]["refused"] > 0
    assert result["errors_total"] == result["errors"]["refused"] < 4 * 0.3 / 0.01 + 8
    with socket.socket() as silent:   # listens, never accepts: no handshake ever
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        with tlsclients.TlsLoadGen("persistent", "127.0.0.1", silent.getsockname()[1],
                                   b"x\n", concurrency=2, timeout=0.1,
                                   cert_dir=str(tmp_path)) as lg:
            result = lg.run(0.35)
    assert result["requests"] == 0 and result["errors"]["timeout"] >= 2
    assert result["handshakes"] == 0
    with pytest.raises(ValueError, match="loopback"):
        tlsclients.TlsLoadGen("connrate", "192.0.2.1", 443, b"x\n", cert_dir=str(tmp_path))


def test_tls_without_openssl_is_skipped_with_one_line(monkeypatch, capsys):
    from fastsockserver._bench import tlsclients
    monkeypatch.setattr(tlsclients.shutil, "which", lambda name: None)
    from fastsockserver import _bench
    code = _bench.main(["--workloads", "tls-connrate,tls-stall,shutdown", "--impls", "stdlib",
                        "--reps", "1", "--shutdown-count", "1", "--no-pin", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    [line] = [line for line in captured.err.splitlines() if "openssl" in line]
    assert line.startswith("skipped: tls-connrate, tls-connrate/rsa2048, tls-stall: the openssl "
                           "command line tool")
    assert "shutdown:" in captured.out and "tls-connrate:" not in captured.out


def test_port_in_use_and_missing_peer_one_line_each(tmp_path):
    # The first server's port is taken: that server fails with one line, the next one runs.
    with _busy_port_followed_by_a_free_one() as port:
        out = bench("--workloads", "echo/base", "--impls", "stdlib,pure", "--reps", "1",
                    "--duration", "0.2", "--warmup", "0.1", "--port", str(port), "-q",
                    "--json", str(tmp_path / "o.json"))
    assert out.returncode == 1
    failed = [line for line in out.stderr.splitlines() if "failed to start" in line]
    assert len(failed) == 1 and "stdlib" in failed[0] and "in use" in failed[0]
    doc = json.loads((tmp_path / "o.json").read_text())
    results = doc["cases"][0]["results"]
    assert results["stdlib"]["status"] == "failed"
    assert results["pure"]["status"] == "ok" and results["pure"]["summary"]["rps"] > 0


@pytest.mark.parametrize("peer", ("uvloop", "waitress", "gunicorn"))
def test_missing_peer_is_skipped(monkeypatch, capsys, peer):
    from fastsockserver import _bench
    monkeypatch.setattr(_bench, "_peer_missing", lambda impl: impl == peer)
    code = _bench.main(["--workloads", "shutdown", "--impls", peer + ",stdlib", "--reps", "1",
                        "--shutdown-count", "1", "--no-pin", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    assert "skipped: {0} not installed (pip install {0})".format(peer) \
        in captured.err.splitlines()
    assert "stdlib" in captured.out


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_cpu_small_run(tmp_path):
    """The cpu case: the same work per request for every implementation; on a
    free-threaded CPython also the compiled core with the GIL switched on."""
    from fastsockserver._bench.servers import FREE_THREADED
    path = tmp_path / "out.json"
    out = bench("--workloads", "cpu", "--impls", "stdlib,compiled,compiled-gil", "--reps", "1",
                "--duration", "0.3", "--warmup", "0.1", "-q", "--json", str(path))
    assert out.returncode == 0, out.stderr
    results = json.loads(path.read_text())["cases"][0]["results"]
    ran = ("stdlib", "compiled", "compiled-gil") if FREE_THREADED else ("stdlib", "compiled")
    assert set(results) == set(ran)
    for impl in ran:
        assert results[impl]["status"] == "ok", results[impl]
        assert results[impl]["summary"]["rps"] > 0
        assert results[impl]["summary"]["errors_total"] == 0
    if not FREE_THREADED:
        assert "skipped: compiled-gil needs a free-threaded CPython" in out.stderr.splitlines()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs sched_setaffinity and two cores")
def test_an_unpinned_server_gets_every_core_back():
    """The bench pins itself to the client's core before it starts servers: a
    server meant for every core (cpu, --workers) must not inherit that one core."""
    out = subprocess.run([sys.executable, "-c", (
        "import os; os.sched_setaffinity(0, {0})\n"
        "from fastsockserver._bench.servers import _pin\n"
        "_pin(None); print(len(os.sched_getaffinity(0)))")],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(os.sched_getaffinity(0)) > 1


@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_cpu_refuses_a_gil_that_is_not_the_one_named(tmp_path):
    """PYTHON_GIL=1 for the whole bench on a free-threaded CPython: the "compiled"
    server would not be the GIL-off one the case compares, so it fails to start,
    in one line. Elsewhere, compiled-gil alone leaves nothing to run."""
    from fastsockserver._bench.servers import FREE_THREADED
    if FREE_THREADED:
        out = bench("--workloads", "cpu", "--impls", "compiled", "--reps", "1",
                    "--duration", "0.2", "--warmup", "0.1", "-q", env={"PYTHON_GIL": "1"})
        assert out.returncode == 1
        failed = [line for line in out.stderr.splitlines() if "failed to start" in line]
        assert len(failed) == 1 and "the GIL is on in the compiled server" in failed[0]
    else:
        out = bench("--workloads", "cpu", "--impls", "compiled-gil", "-q")
        assert out.returncode == 2
        assert "skipped: compiled-gil needs a free-threaded CPython" in out.stderr


# ---------------------------------------------------------------- the load generator

def test_loadgen_counts_refused_and_stops_by_time():
    port = free_port()   # nothing listens there
    with loadgen.LoadGen("connrate", "127.0.0.1", port, b"x\n", concurrency=4,
                         timeout=1.0) as lg:
        started = time.monotonic()
        result = lg.run(0.3)
    assert time.monotonic() - started < 1.0
    assert result["requests"] == 0
    assert result["errors"]["refused"] > 0
    assert result["errors_total"] == result["errors"]["refused"]
    # one back-off per error and slot: a bounded count, not a spin
    assert result["errors"]["refused"] < 4 * 0.3 / 0.01 + 8


def test_loadgen_times_out_on_a_silent_server():
    with socket.socket() as silent:   # listens, never accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"x\n", concurrency=2,
                             timeout=0.1) as lg:
            started = time.monotonic()
            result = lg.run(0.35)
            assert time.monotonic() - started < 1.0
    assert result["requests"] == 0
    assert result["errors"]["timeout"] >= 2


def _echo_server(kind=socket.SOCK_STREAM, http=False, stop_after=None):
    """A tiny echo (or HTTP) server in a thread; returns (port, stop)."""
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stopping = threading.Event()
    body = b"Hello, world!"
    response = (b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\nX: y\r\n\r\n" + body)

    def serve_conn(conn):
        with conn:
            data = b""
            while not stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                if http:
                    data += chunk
                    while b"\r\n\r\n" in data:
                        _, _, data = data.partition(b"\r\n\r\n")
                        conn.sendall(response)
                else:
                    conn.sendall(chunk)

    def serve():
        srv.settimeout(0.05)
        while not stopping.is_set():
            try:
                if kind == socket.SOCK_DGRAM:
                    data, addr = srv.recvfrom(65536)
                    srv.sendto(data, addr)
                else:
                    conn, _ = srv.accept()
                    conn.settimeout(None)
                    threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()
            except socket.timeout:
                continue
            except OSError:
                return

    if kind == socket.SOCK_STREAM:
        srv.listen(64)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(2)
        srv.close()
    return port, stop


@pytest.mark.parametrize("mode,kind,http", [
    ("persistent", socket.SOCK_STREAM, False),
    ("connrate", socket.SOCK_STREAM, False),
    ("persistent", socket.SOCK_STREAM, True),
    ("udp", socket.SOCK_DGRAM, False),
])
def test_loadgen_modes_complete_requests(mode, kind, http):
    port, stop = _echo_server(kind, http=http)
    message = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if http else b"y" * 63 + b"\n"
    try:
        with loadgen.LoadGen(mode, "127.0.0.1", port, message, concurrency=4, timeout=2.0,
                             http=http) as lg:
            lg.warm_up(0.05, 1.0)
            result = lg.run(0.3)
            lg.drain(1.0)
    finally:
        stop()
    assert result["requests"] > 10, result
    assert result["errors_total"] == 0, result["errors"]
    assert 0 < result["lat_p50_ms"] <= result["lat_p99_ms"] <= result["lat_max_ms"]
    assert result["samples"] == result["requests"]


def test_loadgen_server_gone_mid_run():
    port, stop = _echo_server()
    with loadgen.LoadGen("connrate", "127.0.0.1", port, b"z\n", concurrency=4,
                         timeout=0.5) as lg:
        threading.Timer(0.15, stop).start()
        started = time.monotonic()
        result = lg.run(0.5)
        assert time.monotonic() - started < 1.5
    assert result["requests"] > 0
    assert result["errors_total"] > 0


def _http_server(responses):
    """An HTTP server in a thread that answers the requests of each connection with
    ``responses`` (an iterable) in turn, then closes it; returns (port, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.05)
    port = srv.getsockname()[1]
    stopping = threading.Event()

    def serve_conn(conn):
        with conn:
            data = b""
            for response in responses:
                while b"\r\n\r\n" not in data and not stopping.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    data += chunk
                _, _, data = data.partition(b"\r\n\r\n")
                conn.sendall(response)

    def serve():
        while not stopping.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(2.0)
            threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(2)
        srv.close()
    return port, stop


def _response(*headers):
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + \
        b"Content-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("header", [b"Connection: close", b"connection: CLOSE",
                                    b"CONNECTION:close", b"Connection: keep-alive, Close"])
def test_loadgen_http_connection_close_opens_a_new_connection(header):
    """After a response with Connection: close (any case, or among other tokens) the
    slot opens a new connection: not an error, and no request is sent on the old one."""
    port, stop = _http_server([_response(b"X-A: 1"), _response(header)])
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n",
                             concurrency=4, timeout=2.0, http=True) as lg:
            # no warm_up(): it waits for every slot's connection to have served at
            # once, which a connection closed every second response rarely allows
            result = lg.run(0.3)
            lg.drain(1.0)
    finally:
        stop()
    assert result["requests"] > 20, result
    assert result["errors_total"] == 0, result["errors"]
    # every second response closes: about half the requests open a connection
    assert result["close_responses"] >= result["requests"] // 2 - 4
    assert result["connects"] >= result["close_responses"] - 4


def test_loadgen_http_keep_alive_and_lookalikes_keep_the_connection():
    port, stop = _http_server(itertools.repeat(_response(
        b"Connection: keep-alive", b"X-Connection: close", b"Connection: closed")))
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n",
                             concurrency=2, timeout=2.0, http=True) as lg:
            lg.warm_up(0.05, 1.0)
            result = lg.run(0.2)
            lg.drain(1.0)
    finally:
        stop()
    assert result["requests"] > 10 and result["errors_total"] == 0, result
    assert result["close_responses"] == 0 and result["connects"] == 0


def test_loadgen_errors_split_by_served_connections():
    """A connection closed after its first response (no Connection: close) fails its
    second request: an error on a served connection. Refused connects are on new ones."""
    port, stop = _http_server([_response()])
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n",
                             concurrency=2, timeout=1.0, http=True) as lg:
            result = lg.run(0.3)
    finally:
        stop()
    assert result["requests"] > 0
    assert result["errors_on_served_total"] > 0
    assert result["errors_on_served"]["closed"] + result["errors_on_served"]["reset"] \
        == result["errors_on_served_total"]
    for kind, count in result["errors"].items():
        assert result["errors_on_served"][kind] + result["errors_on_new"][kind] == count
    assert result["errors_on_new_total"] + result["errors_on_served_total"] \
        == result["errors_total"]
    with loadgen.LoadGen("persistent", "127.0.0.1", free_port(), b"x\n", concurrency=2,
                         timeout=1.0) as lg:
        refused = lg.run(0.1)
    assert refused["errors_on_new"]["refused"] == refused["errors_total"] > 0
    assert refused["errors_on_served_total"] == 0


def test_loadgen_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        loadgen.LoadGen("connrate", "192.0.2.1", 80, b"x\n")


def test_source_ports_are_outside_the_ephemeral_range():
    lo, hi = loadgen.ephemeral_range()
    for first, last in loadgen.default_source_ports():
        assert first <= last and (last < lo or first > hi) and first > 1024


@timing_is_the_subject
def test_http_runs_the_stdlib_without_nagle_as_a_reference(tmp_path):
    path = tmp_path / "nodelay.json"
    # A warm-up longer than a SYN retransmit (1 s): the stdlib's listen backlog of 5 can
    # drop some of the connections at first (a p50 of 1,076 ms was seen without it).
    out = bench("--workloads", "http", "--impls", "stdlib,stdlib-nodelay,pure", "--reps", "1",
                "--duration", "0.5", "--warmup", "1.5", "-q", "--json", str(path))
    assert out.returncode == 0, out.stderr
    results = json.loads(path.read_text())["cases"][0]["results"]
    assert [results[i]["status"] for i in ("stdlib", "stdlib-nodelay", "pure")] == ["ok"] * 3
    # The reference has Nagle off: no ~40 ms stall per response. The stall is a
    # fixed timer added to whatever the machine's load adds to both, so the
    # difference is compared, not the ratio (a loaded machine once gave 13 ms
    # against 44 ms).
    p50 = {impl: results[impl]["summary"]["lat_p50_ms"] for impl in results}
    assert p50["stdlib"] - p50["stdlib-nodelay"] > 25, p50
    assert "pure: " in out.stdout and "the throughput of stdlib-nodelay" in out.stdout


def test_stdlib_nodelay_is_for_http_only():
    from fastsockserver._bench import servers, workloads
    assert [case.name for case in workloads.CASES if "stdlib-nodelay" in case.impls] \
        == ["http", "http-close"]
    with pytest.raises(servers.StartError, match="http kind only"):
        servers.make_socketserver("connrate", "stdlib-nodelay", ("127.0.0.1", 0))


# ---------------------------------------------------------------- cross-check with wrk

@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
def test_http_agrees_with_wrk(tmp_path):
    path = tmp_path / "wrk.json"
    seen = []
    for _ in range(2):   # a second try: shared machines have single slow runs
        out = bench("--workloads", "http", "--impls", "compiled", "--reps", "1",
                    "--duration", "2", "--wrk", "-q", "--json", str(path))
        assert out.returncode == 0, out.stderr
        entry = json.loads(path.read_text())["cases"][0]["results"]["compiled"]
        wrk = entry["wrk"]
        assert "error" not in wrk, wrk
        assert wrk["socket_errors"] == 0 and wrk["non_2xx"] == 0
        seen.append((wrk["rps"], entry["summary"]["rps"]))
        if abs(wrk["agreement"] - 1) <= 0.15:
            return
    pytest.fail("wrk and the built-in generator disagree by more than 15%: "
                "(wrk, built-in) req/s = {}".format(seen))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_server_rss_is_the_servers_own_not_the_bench_process():
    """ru_maxrss after exec counts the forked parent too: a 300 MiB bench
    process made every server report >= 300 MiB."""
    from fastsockserver._bench import workloads
    case = workloads.select_cases(["echo/base"])[0][0]
    ballast = bytearray(300 * 1024 * 1024)  # touched: resident in this process
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    server = workloads.ServerProcess(case, "stdlib", max_seconds=60)
    try:
        server.wait_ready()
        stats = server.request("stats")
    finally:
        server.close()
        del ballast
    assert 0 < stats["maxrss_kib"] < 200 * 1024


# ---------------------------------------------------------------- --workers

@pytest.mark.skipif(not fastsockserver.COMPILED, reason="compiled core not built")
@fork_then_threads  # the bench's threads are running when it forks the workers
def test_workers_dimension_runs_worker_processes(tmp_path):
    path = tmp_path / "workers.json"
    out = bench("--workloads", "http,echo", "--impls", "compiled", "--workers", "1,2",
                "--reuse-port", "--reps", "1", "--duration", "0.5", "-q", "--json", str(path))
    assert out.returncode == 0, out.stderr
    cases = {case["case"]: case["results"] for case in json.loads(path.read_text())["cases"]}
    assert list(cases["http"]) == ["compiled", "compiled-w2", "compiled-w2-reuse_port"]
    assert list(cases["echo/stream"]) == ["compiled"]  # not a connection or http case
    for impl in ("compiled", "compiled-w2", "compiled-w2-reuse_port"):
        entry = cases["http"][impl]
        assert entry["status"] == "ok" and entry["summary"]["errors_total"] == 0, entry
        # the workers' CPU is counted: a server cannot answer for free
        assert entry["reps"][0]["server_cpu_children_s"] > 0 or impl == "compiled"
        assert entry["summary"]["server_us_per_req"] > 0
    assert "compiled-w2" in out.stdout


def test_workers_option_is_checked():
    for value in ("0", "x", "1,100"):
        out = bench("--workers", value, "--workloads", "http")
        assert out.returncode == 2 and "--workers takes counts in 1..64" in out.stderr


def test_worker_impl_names():
    from fastsockserver._bench import workloads
    assert workloads.split_workers("compiled-w2") == ("compiled", 2, False)
    assert workloads.split_workers("pure-w3-reuse_port") == ("pure", 3, True)
    assert workloads.split_workers("stdlib-nodelay") == ("stdlib-nodelay", 1, False)
    assert workloads.split_workers("stdlib-w2") == ("stdlib-w2", 1, False)
    assert workloads.with_workers("pure", 1) == "pure"
    assert workloads.with_workers("compiled", 2, reuse_port=True) == "compiled-w2-reuse_port"


# ---------------------------------------------------------------- the http peers (WSGI)

def _needs_peer(impl):
    from fastsockserver._bench.servers import PEER_MODULES
    module = PEER_MODULES.get(impl)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip("{} is not installed (pip install '.[bench]')".format(module))


def _http_response(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return response
            response += chunk


def _head_fields(response):
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in lines)
    return status.split(b" ", 2)[1], {k.lower(): v for k, v in fields.items()}, body


def _alive(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


HTTP_PEERS = ("waitress", "cheroot", "gunicorn", "wsgiref-stdlib", "wsgiref-compiled")


@pytest.mark.parametrize("impl", HTTP_PEERS)
def test_http_peer_answers_the_bench_request_like_http_server(impl):
    """Each peer gives the http.server handler's status, Content-Type, Content-Length and
    body, to the load generator in the cases it is in; quit ends it and its children."""
    _needs_peer(impl)
    from fastsockserver._bench import servers, workloads
    if impl == "wsgiref-compiled" and not fastsockserver.COMPILED:
        pytest.skip("compiled core not built")
    case = workloads.CASES_BY_NAME["http-close"]
    reference = workloads.ServerProcess(case, "pure", max_seconds=60)
    peer = workloads.ServerProcess(case, impl, max_seconds=60)
    try:
        reference.wait_ready()
        peer.wait_ready()
        expected = _head_fields(_http_response(reference.port, workloads.HTTP_CLOSE))
        status, fields, body = _head_fields(_http_response(peer.port, workloads.HTTP_CLOSE))
        assert (status, body) == (expected[0], expected[2]) == (b"200", servers.HTTP_BODY)
        for name in (b"content-type", b"content-length"):
            assert fields[name] == expected[1][name], (name, fields)
        children = servers._descendants(peer.info["pid"])
        assert len(children) == (1 if impl == "gunicorn" else 0), children
        own = peer.request("stats")
        # gunicorn's RSS counts its worker (where the app runs) with its arbiter
        assert (own["descendants_maxrss_kib"] > 0) == (impl == "gunicorn"), own
        for name in ("http", "http-close"):
            this = workloads.CASES_BY_NAME[name]
            if impl not in this.impls:
                continue
            with workloads.new_loadgen(this, peer, workloads.Settings(timeout=5.0)) as lg:
                lg.warm_up(0.1, 5.0)
                result = lg.run(0.3)
                lg.drain(2.0)
            # Every response parses; cheroot's defaults (request_queue_size 5, at most
            # 10 keep-alive connections waiting) can refuse or close a connection.
            assert result["requests"] > 0 and result["errors"]["bad_response"] == 0, \
                (name, result)
    finally:
        reference.close()
        peer.close()
    assert peer.proc.returncode == 0, peer.stderr_text()[-2000:]
    assert not [pid for pid in children if _alive(pid)]   # gunicorn's worker ended too


def test_wsgiref_is_in_http_close_only_and_peers_in_both_http_cases():
    from fastsockserver._bench import workloads
    http, close = (workloads.CASES_BY_NAME[n].impls for n in ("http", "http-close"))
    for impl in ("waitress", "cheroot", "gunicorn"):
        assert impl in http and impl in close
    for impl in ("wsgiref-stdlib", "wsgiref-compiled"):
        assert impl not in http and impl in close   # HTTP/1.0: one request a connection


@pytest.mark.parametrize("impl", ("waitress", "cheroot", "gunicorn", "wsgiref-stdlib"))
def test_http_peer_that_cannot_start_is_one_error_and_no_process_left(impl):
    _needs_peer(impl)
    from fastsockserver._bench import workloads
    case = workloads.CASES_BY_NAME["http"]
    with _busy_port_followed_by_a_free_one() as port:
        server = workloads.ServerProcess(case, impl, port=port, max_seconds=60)
        started = time.monotonic()
        try:
            with pytest.raises(workloads.ServerError) as failure:
                server.wait_ready(timeout=30)
        finally:
            server.close()
    # (gunicorn tries to bind 5 times, 1 s apart)
    assert time.monotonic() - started < 30 * WALL_SCALE
    message = str(failure.value)
    assert "\n" not in message and "in use" in message.lower(), message
    assert server.proc.returncode not in (None, 0)


def test_http_probe_gives_up_in_time_on_a_server_that_never_answers():
    from fastsockserver._bench import servers
    with socket.socket() as silent:   # listens, never accepts
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(servers.StartError, match="no answer to GET / within 0.5 s"):
            servers.probe_http("127.0.0.1", silent.getsockname()[1], 0.5)
        assert time.monotonic() - started < 3


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None,
                    reason="gunicorn is not installed (pip install '.[bench]')")
def test_gunicorn_worker_dies_with_a_killed_server():
    """The bench SIGKILLs a server that does not quit: gunicorn's worker must not
    outlive its arbiter."""
    from fastsockserver._bench import servers, workloads
    server = workloads.ServerProcess(workloads.CASES_BY_NAME["http"], "gunicorn",
                                     max_seconds=60)
    try:
        server.wait_ready()
        [worker] = servers._descendants(server.info["pid"])
        server.proc.kill()
        server.proc.wait(5)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        server.close()


# ---------------------------------------------------------------- the open loop (--rate)

def _slow_line_server(delay_for):
    """A line echo on one thread, one connection at a time, that sleeps
    ``delay_for(n)`` seconds before answering its n-th line; returns (port, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.05)
    stopping = threading.Event()

    def serve():
        count = 0
        while not stopping.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.05)
                data = b""
                while not stopping.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                    while b"\n" in data:
                        line, _, data = data.partition(b"\n")
                        time.sleep(delay_for(count))
                        count += 1
                        try:
                            conn.sendall(line + b"\n")
                        except OSError:
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(2)
        srv.close()
    return srv.getsockname()[1], stop


def test_open_loop_counts_latency_from_the_due_time_behind_a_slow_server():
    """One connection, a server that takes 20 ms a request, 100 requests a second due:
    the closed loop sees 20 ms a request (it only sends when the last one is answered:
    coordinated omission); the open loop sees the queue grow, ~10 ms more per request,
    and counts the requests still waiting at the end."""
    port, stop = _slow_line_server(lambda n: 0.02)
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"x\n", concurrency=1,
                             timeout=5.0) as lg:
            closed = lg.run(0.3)
            lg.drain(1.0)
            result = lg.run_open(100, 1.0, max_wait=0.3)
    finally:
        stop()
    assert result["scheduled"] == 100 and result["offered_rate"] == 100
    # every due request is answered, failed, or counted as unfinished: none is dropped
    assert result["requests"] + result["errors_total"] + result["unfinished"] == 100, result
    assert result["unfinished"] > 0   # the server can answer ~65 in 1.3 s, at best
    assert result["samples"] == result["requests"] + result["unfinished"]
    # at least half went out late, or not at all: the one connection was busy at their
    # due time (on a busy machine the server answers fewer: more never go out)
    assert result["late_sends"] + result["unfinished"] >= 50, result
    assert result["send_lag_max_ms"] >= 200
    # ... the server's doing, not the load generator's: it sends as soon as a slot is free
    assert result["loadgen_late_sends"] * 2 < result["late_sends"], result
    assert result["loadgen_lag_max_ms"] < result["send_lag_max_ms"]
    # the median request waited for ~25 others: 5x the service time is a low bound
    assert result["lat_p50_ms"] >= 100, result
    assert closed["lat_p50_ms"] < result["lat_p50_ms"]


def test_open_loop_shows_a_stall_in_the_tail_that_the_closed_loop_hides():
    """A server that stalls 300 ms once: every request due during the stall waits for
    its end. At 200/s over 1 s, ~40 of 200 are due in the stall's first 200 ms and
    wait >= 100 ms: p90 at least 100 ms."""
    port, stop = _slow_line_server(lambda n: 0.3 if n == 20 else 0.0)
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, b"x\n", concurrency=1,
                             timeout=5.0) as lg:
            result = lg.run_open(200, 1.0, max_wait=2.0)
    finally:
        stop()
    assert result["scheduled"] == 200
    assert result["requests"] + result["errors_total"] + result["unfinished"] == 200
    assert result["lat_p90_ms"] >= 100, result
    assert result["lat_max_ms"] >= 250


def test_open_loop_keeps_the_rate_on_a_fast_server_and_checks_its_arguments():
    port, stop = _echo_server(http=True)
    message = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with loadgen.LoadGen("persistent", "127.0.0.1", port, message, concurrency=4,
                             timeout=2.0, http=True) as lg:
            lg.run_open(200, 0.1, record=False)   # warm-up: connections open
            result = lg.run_open(500, 0.4, max_wait=2.0)
            for bad in ((0, 1.0), (-5, 1.0), (100, 0), (1, 0.5)):   # the last: no request
                with pytest.raises(ValueError):
                    lg.run_open(*bad)
        with loadgen.LoadGen("udp", "127.0.0.1", port, b"y" * 64) as udp:
            with pytest.raises(ValueError, match="TCP"):
                udp.run_open(100, 0.1)
    finally:
        stop()
    assert result["scheduled"] == 200
    assert result["requests"] == 200 and result["errors_total"] == 0, result
    assert result["unfinished"] == 0 and result["samples"] == 200
    assert 0 < result["lat_p50_ms"] <= result["lat_p99_ms"] <= result["lat_max_ms"]


def test_rate_runs_the_open_loop_at_fractions_of_each_servers_maximum(tmp_path):
    path = tmp_path / "rate.json"
    out = bench("--workloads", "echo/base,udp/sync", "--impls", "pure", "--reps", "1",
                "--duration", "0.3", "--warmup", "0.1", "--rate", "0.25,0.5", "-q",
                "--json", str(path))
    assert out.returncode == 0, out.stderr
    assert "--rate: no open loop for udp/sync" in out.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["rate_fractions"] == [0.25, 0.5]
    cases = {case["case"]: case for case in doc["cases"]}
    assert "open_loop" not in cases["udp/sync"]["results"]["pure"]
    entry = cases["echo/base"]["results"]["pure"]
    open_loop = entry["open_loop"]
    assert open_loop["max_rps"] == entry["summary"]["rps"] > 0
    assert [part["fraction"] for part in open_loop["fractions"]] == [0.25, 0.5]
    for part in open_loop["fractions"]:
        assert part["rate"] == pytest.approx(part["fraction"] * open_loop["max_rps"])
        [rep] = part["reps"]
        assert rep["offered_rate"] == part["rate"]
        assert rep["scheduled"] == int(part["rate"] * 0.3)
        assert rep["requests"] + rep["errors_total"] + rep["unfinished"] == rep["scheduled"]
        s = part["summary"]
        assert s["lat_p50_ms"] <= s["lat_p99_ms"] <= s["lat_p999_ms"] <= s["lat_max_ms"]
        assert s["server_us_per_req"] > 0
    assert "open loop (--rate)" in out.stdout and "due req/s" in out.stdout
    assert "25%" in out.stdout and "50%" in out.stdout


@pytest.mark.parametrize("value", ["0", "2.5", "x", ","])
def test_rate_fractions_are_checked(value):
    out = bench("--rate", value, "--workloads", "echo/base")
    assert out.returncode == 2 and "--rate takes fractions in (0, 2]" in out.stderr


def test_bench_help_documents_every_option():
    out = bench("--help")
    assert out.returncode == 0, out.stderr
    from fastsockserver import _bench
    parser_help = out.stdout
    for option in ("--workloads", "--impls", "--reps", "--duration", "--rate", "--plot",
                   "--json", "--soak", "--workers", "--wrk"):
        assert option in parser_help
    # every option has a help text of its own
    import argparse
    captured = {}
    real_parse = argparse.ArgumentParser.parse_args

    def keep(self, *args, **kwargs):
        captured["parser"] = self
        return real_parse(self, *args, **kwargs)
    argparse.ArgumentParser.parse_args = keep
    try:
        _bench._parse(["--workloads", "echo"])
    finally:
        argparse.ArgumentParser.parse_args = real_parse
    for action in captured["parser"]._actions:
        assert action.help, action.option_strings
    for impl in ("waitress", "cheroot", "gunicorn", "wsgiref-stdlib", "wsgiref-compiled"):
        assert impl in parser_help


# ---------------------------------------------------------------- the chart

def _chart_document(impls, contended=()):
    """A bench document with an http case (and open loop) and a shutdown case."""
    def load(i, impl):
        return {"status": "ok", "summary": {
            "rps": 1000.0 * (i + 1), "lat_p99_ms": 0.5 * (i + 1), "reps": 3,
            "contended_reps": 1 if impl in contended else 0},
            "open_loop": {"max_rps": 1000.0 * (i + 1), "fractions": [
                {"fraction": 0.5, "rate": 500.0 * (i + 1),
                 "summary": {"lat_p99_ms": 0.25 * (i + 1),
                             "contended_reps": 1 if impl in contended else 0}}]}}
    return {
        "meta": {"python_version": "3.x", "cpu_model": "test"},
        "settings": {"reps": 3, "duration": 1.0, "server_cpu": 0, "client_cpu": 1},
        "cases": [
            {"case": "http", "mode": "persistent", "unit": "req/s",
             "results": {impl: load(i, impl) for i, impl in enumerate(impls)}},
            {"case": "shutdown", "mode": "shutdown", "unit": "ms",
             "results": {impl: {"status": "ok", "summary": {"shutdown_ms": 400.0, "reps": 3}}
                         for impl in impls}},
        ],
    }


def _bar_colours(ax):
    """{implementation: (face colour, hatch)} of a chart panel's bars."""
    names = [t.get_text() for t in ax.get_yticklabels()]
    ys = list(ax.get_yticks())
    found = {}
    for patch in ax.patches:
        y = patch.get_y() + patch.get_height() / 2
        name = names[min(range(len(ys)), key=lambda k: abs(ys[k] - y))]
        found.setdefault(name, (patch.get_facecolor(), patch.get_hatch()))
    return found


def test_chart_colours_are_fixed_values_labelled_contended_hatched_axes_linear():
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the [plot] extra)")
    from matplotlib.colors import to_rgba

    from fastsockserver._bench import report
    impls = ["stdlib", "compiled", "waitress", "gunicorn", "wsgiref-compiled"]
    charts = [report.make_chart(_chart_document(order, contended={"waitress"}))
              for order in (impls, impls[::-1], impls[2:])]
    try:
        for fig in charts:
            throughput, p99, open_p99 = fig.axes[:3]
            for ax in (throughput, p99, open_p99):
                assert ax.get_xscale() == "linear"
                for impl, (colour, hatch) in _bar_colours(ax).items():
                    assert colour == to_rgba(report.IMPL_COLOURS[impl]), impl
                    assert bool(hatch) == (impl == "waitress"), (impl, hatch)
            texts = {t.get_text() for ax in fig.axes for t in ax.texts}
            # values on the bars; the contended one marked
            assert {"1,000", "3,000 *", "0.50", "50%: 0.25", "400"} & texts
            assert "3,000 *" in texts or "1,000 *" in texts
            legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
            assert any("another process used the pinned cores" in t for t in legend)
        assert report.impl_colour("compiled-w2") == report.IMPL_COLOURS["compiled"]
        assert len(set(report.IMPL_COLOURS.values())) == len(report.IMPL_COLOURS)
        from fastsockserver._bench.workloads import ALL_IMPLS
        assert set(ALL_IMPLS) <= set(report.IMPL_COLOURS)
    finally:
        import matplotlib.pyplot as plt
        for fig in charts:
            plt.close(fig)


def test_plot_says_where_it_wrote(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the [plot] extra)")
    plot = tmp_path / "chart.png"
    out = bench("--workloads", "shutdown", "--impls", "stdlib,pure", "--reps", "1",
                "--shutdown-count", "1", "-q", "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    assert "chart written to {}".format(plot) in out.stderr.splitlines()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_neighbour_shares_the_servers_core_and_is_reported(tmp_path):
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to pin the server and the client")
    path = tmp_path / "neighbour.json"
    started = time.monotonic()
    out = bench("--workloads", "echo/base", "--impls", "stdlib,compiled", "--reps", "1",
                "--duration", "0.3", "--warmup", "0.1", "--neighbour", "-q",
                "--json", str(path))
    assert time.monotonic() - started < 60
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["neighbour"] is True
    results = doc["cases"][0]["results"]
    for impl in ("stdlib", "compiled"):
        rep = results[impl]["reps"][0]
        # the neighbour computed on the server's core while the server served
        # (shares only: how the core is split is what the run reports)
        assert 0 < rep["neighbour_cpu_pct"] <= 105, rep
        assert rep["server_cpu_pct"] > 0 and rep["requests"] > 0, rep
        assert results[impl]["summary"]["neighbour_cpu_pct"] == rep["neighbour_cpu_pct"]
        assert "{}: with the CPU-bound neighbour on its core the server used".format(
            impl) in out.stdout
    assert "--neighbour: a CPU-bound process shared the server's core" in out.stdout
    # no neighbour process is left running
    assert not [line for line in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
        if "while True" in line and "sched_setaffinity" in line]
