"""``python -m fastsockserver bench``: the stdlib, fastsockserver and peers under the same load.

Each server runs in its own process (``servers.py``), pinned to one core; the
compiled load generator (``fastsockserver._loadgen``) runs in this process,
pinned to another. Implementations are alternated (A B C A B C ...) over the
repetitions; the warm-up is not measured; every run stops by itself.

The http cases also run the servers people pick instead (waitress, cheroot,
gunicorn) and wsgiref on both socketservers, each serving the same response.
With ``--rate``, a load case's closed-loop repetitions (each server's maximum:
their median throughput) are followed by open-loop ones at fractions of that
maximum (``LoadGen.run_open``): requests due at a fixed rate, latency counted
from the due time (``run_open_loop``).
"""
import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from .. import _env
from .._info import loadgen_status
from . import report
from .servers import FREE_THREADED, GIL_ON, HTTP_PEER_SETTINGS, PEER_MODULES
from .slowclients import CONNECT_RATE, raise_open_files_limit
from .tlsclients import make_certificates
from .workloads import (
    ALL_IMPLS,
    HOST,
    SLOWLORIS_IDLE,
    SLOWLORIS_TRICKLE,
    TLS_STALL,
    WORKER_CASES,
    WORKER_IMPLS,
    WORKLOADS,
    ServerError,
    ServerProcess,
    Settings,
    SlowClientsError,
    measure,
    measure_drain,
    measure_open,
    measure_shutdown,
    measure_with_slow_clients,
    new_loadgen,
    open_loop_applies,
    select_cases,
    server_args,
    slow_client_counts,
    with_workers,
)

PROG = "python -m fastsockserver bench"
# --rate without a value: a quarter, half and three quarters of each server's
# maximum (light, normal and busy; above ~80 % any server's queue dominates).
DEFAULT_RATE_FRACTIONS = "0.25,0.5,0.75"


# The implementations the epilog of --help describes.
IMPL_HELP = {
    "stdlib": "the stdlib's socketserver (and http.server on it)",
    "stdlib-nodelay": "http cases: the stdlib with disable_nagle_algorithm = True",
    "compiled": "fastsockserver, compiled core",
    "pure": "fastsockserver, pure Python (FASTSOCKSERVER_NO_EXTENSIONS=1)",
    "compiled-gil": "cpu case, free-threaded CPython: compiled with PYTHON_GIL=1",
    "asyncio": "an asyncio Protocol server (echo, connrate, udp, tls cases)",
    "uvloop": "the same on uvloop",
    "gevent": "a gevent StreamServer / DatagramServer",
}
IMPL_HELP.update(HTTP_PEER_SETTINGS)


def _epilog():
    width = max(len(name) for name in ALL_IMPLS)
    lines = ["implementations (--impls; a peer not installed is skipped, saying what to "
             "install):"]
    lines += ["  {}  {}".format(name.ljust(width), IMPL_HELP[name]) for name in ALL_IMPLS]
    lines += ["", "The http peers serve a WSGI app that answers as the http.server handler "
              "does (200, text/plain,", "13 bytes); no server writes an access log. Each "
              "server runs in its own process, pinned", "to one core, the load generator "
              "on another. Example:",
              "  {} --workloads http,http-close --rate --plot bench.png".format(PROG)]
    return "\n".join(lines)


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Benchmark socketserver implementations on loopback.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, from: {} (or a case such as echo/base); "
                             "default: all".format(", ".join(WORKLOADS)))
    parser.add_argument("--impls", default=",".join(ALL_IMPLS),
                        help="comma-separated, from: {}; default: all (peers when "
                             "installed)".format(", ".join(ALL_IMPLS)))
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, default=1.0,
                        help="measured seconds per repetition (default 1.0)")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="unmeasured seconds before each repetition (default 0.2)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="timeout of each request, seconds (default 5)")
    parser.add_argument("--shutdown-count", type=int, default=2,
                        help="shutdown() timings per repetition (default 2)")
    parser.add_argument("--slowloris-idle", type=int, default=SLOWLORIS_IDLE, metavar="N",
                        help="slowloris: idle connections (default {})".format(SLOWLORIS_IDLE))
    parser.add_argument("--slowloris-trickle", type=int, default=SLOWLORIS_TRICKLE,
                        metavar="N", help="slowloris: trickling connections (default "
                                          "{})".format(SLOWLORIS_TRICKLE))
    parser.add_argument("--tls-stall", type=int, default=TLS_STALL, metavar="N",
                        help="tls-stall: connections that never start TLS (default {}); "
                             "clients stuck behind them count as timeouts once --duration "
                             "is longer than --timeout".format(TLS_STALL))
    parser.add_argument("--workers", default="1", metavar="N,N",
                        help="worker process counts for fastsockserver in the {} cases "
                        "(default 1: one process; N > 1 runs as compiled-wN, "
                        "unpinned)".format(", ".join(WORKER_CASES)))
    parser.add_argument("--reuse-port", action="store_true",
                        help="with --workers N > 1: also run each setting with a SO_REUSEPORT "
                        "socket per worker (compiled-wN-reuse_port)")
    parser.add_argument("--port", type=int, default=0,
                        help="first server port (servers take PORT, PORT+1, ...); "
                             "default 0: the kernel picks")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the metadata")
    parser.add_argument("--plot", metavar="FILE.png", help="a chart (needs matplotlib)")
    parser.add_argument("--wrk", action="store_true",
                        help="also run wrk against the http case, as a cross-check")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--neighbour", action="store_true",
                        help="a CPU-bound process pinned to the server's core during each "
                        "repetition (warm-up included), as on a shared machine: the server's "
                        "CPU share and the neighbour's are reported (pinned servers only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--rate", nargs="?", const=DEFAULT_RATE_FRACTIONS, metavar="FRACTIONS",
                        help="also an open-loop latency run per load case: after the usual "
                        "(closed-loop) repetitions, whose median throughput is each server's "
                        "maximum, requests arrive at a fixed rate of FRACTIONS of that "
                        "maximum (comma-separated, in (0, 2]; default {}), each rate for "
                        "--duration seconds a repetition after --warmup at that rate. "
                        "Latency counts from each request's scheduled send time, so time "
                        "spent queued behind a slow or stalled server is in p50/p99/p99.9 "
                        "(no coordinated omission); requests not answered --timeout after "
                        "the last scheduled one count with the time they waited. Cases "
                        "driven by the compiled load generator over TCP only (not udp, tls, "
                        "slowloris, drain, shutdown)".format(DEFAULT_RATE_FRACTIONS))
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead of the workloads: a mixed run under faults (resets, "
                        "garbage, silent and trickling clients, a spell of descriptor "
                        "exhaustion, a drain and restart) that samples the server's RSS, "
                        "descriptors and threads every second and ends with a verdict "
                        "(exit status 1 if it fails); --json keeps the samples")
    args = parser.parse_args(argv)
    if args.soak is not None and not 10 <= args.soak <= 86400:
        parser.error("--soak takes seconds in 10..86400")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if not 0 < args.warmup <= 60:
        parser.error("--warmup must be in (0, 60]")
    if not 0 < args.timeout <= 60:
        parser.error("--timeout must be in (0, 60]")
    if args.shutdown_count < 1:
        parser.error("--shutdown-count must be at least 1")
    try:
        args.workers = sorted({int(n) for n in _split(args.workers)})
    except ValueError:
        args.workers = []
    if not args.workers or not all(1 <= n <= 64 for n in args.workers):
        parser.error("--workers takes counts in 1..64, like 1,2")
    if not 0 <= args.port < 65536:
        parser.error("--port must be in 0..65535")
    if args.rate is None:
        args.rate = ()
    else:
        try:
            args.rate = tuple(dict.fromkeys(float(f) for f in _split(args.rate)))
        except ValueError:
            args.rate = ()
        if not args.rate or not all(0 < f <= 2 for f in args.rate):
            parser.error("--rate takes fractions in (0, 2], like 0.25,0.5,0.75")
    # Each connection is a socket here and one in the server (the open-files
    # limit, 20,000 on many systems), and a source port from the ephemeral range.
    if not 0 <= args.slowloris_idle <= 50000 or not 0 <= args.slowloris_trickle <= 5000:
        parser.error("--slowloris-idle must be in 0..50000, --slowloris-trickle in 0..5000")
    if not 0 <= args.tls_stall <= 1000:
        parser.error("--tls-stall must be in 0..1000")
    return args


def _drop_failed(run, results, live, case, impl, reason, reps_skipped):
    """Record that ``impl`` failed in ``case``: one line, no more repetitions of it."""
    results[impl].update(status="failed", reason=reason)
    run.say("{} {}: {}".format(case.name, impl, reason))
    run.failed = True
    live.remove(impl)
    run.done += reps_skipped


def _with_workers(case, impls, workers, reuse_port):
    """The case's implementations with the --workers settings of fastsockserver's."""
    if case.name not in WORKER_CASES or workers == [1]:
        return impls
    settings = [(n, False) for n in workers] + [(n, True) for n in workers if reuse_port and n > 1]
    return [variant for impl in impls
            for variant in ([with_workers(impl, n, reuse) for n, reuse in settings]
                            if impl in WORKER_IMPLS else [impl])]


def _split(text):
    return [part.strip() for part in text.split(",") if part.strip()]


class Run:
    """One bench invocation: progress on stderr, messages collected for the report."""

    def __init__(self, args):
        self.args = args
        self.messages = []
        self.failed = False
        self.started = time.monotonic()
        self.done = 0
        self.total = 0
        self.next_port = args.port

    def say(self, line, keep=True):
        """A line for the user: on stderr at once, and in the report (keep)."""
        print(line, file=sys.stderr, flush=True)
        if keep:
            self.messages.append(line)

    def progress(self, line):
        if not self.args.quiet:
            print("[{:>3}/{}] {:5.0f}s  {}".format(self.done, self.total,
                                                   time.monotonic() - self.started, line),
                  file=sys.stderr, flush=True)

    def port(self):
        if not self.next_port:
            return 0
        port = self.next_port
        self.next_port += 1
        return port


def _peer_missing(impl):
    return importlib.util.find_spec(PEER_MODULES[impl]) is None


def _pin(args):
    """(server core, client core); pins this process (the client) when there are two cores."""
    if args.no_pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    server_cpu, client_cpu = cpus[0], cpus[1]
    os.sched_setaffinity(0, {client_cpu})
    return server_cpu, client_cpu


def _fmt_rate(value):
    return "{:,.0f}".format(value)


def run_load_case(run, case, impls, settings):
    results = {impl: {"status": "pending", "reps": []} for impl in impls}
    per_run = settings.warmup + settings.duration + 1.0
    if case.slow_clients:   # the slow clients' connections open before each repetition
        per_run += sum(slow_client_counts(case, settings)) / CONNECT_RATE + 20.0
    max_seconds = 60 + settings.reps * len(impls) * (per_run + settings.timeout + 2)
    if open_loop_applies(case):
        max_seconds += (settings.reps * len(impls) * len(settings.rate_fractions)
                        * (per_run + 2 * settings.timeout + 2))
    servers = {}
    loadgens = {}   # persistent connections are kept across repetitions
    run.progress("{}: starting {} server(s)".format(case.name, len(impls)))
    for impl in impls:
        servers[impl] = ServerProcess(case, impl, port=run.port(), cpu=settings.server_cpu,
                                      max_seconds=max_seconds,
                                      extra=server_args(case, settings))
    try:
        live = []
        for impl in impls:
            try:
                servers[impl].wait_ready()
                live.append(impl)
            except ServerError as exc:
                reason = "server failed to start: {}".format(exc)
                results[impl].update(status="failed", reason=reason)
                run.say("{} {}: {}".format(case.name, impl, reason))
                run.failed = True
                run.done += settings.reps
        for rep in range(settings.reps):
            for impl in list(live):
                run.done += 1
                try:
                    if case.slow_clients:
                        figures = measure_with_slow_clients(case, servers[impl], settings,
                                                            max_seconds=per_run + 30)
                    else:
                        if case.keep_clients and case.mode == "persistent" \
                                and impl not in loadgens:
                            loadgens[impl] = new_loadgen(case, servers[impl], settings)
                        figures = measure(case, servers[impl], settings, loadgens.get(impl))
                except SlowClientsError as exc:
                    _drop_failed(run, results, live, case, impl, str(exc),
                                 settings.reps - rep - 1)
                    continue
                except ServerError as exc:
                    _drop_failed(run, results, live, case, impl,
                                 "server stopped answering: {}".format(exc),
                                 settings.reps - rep - 1)
                    continue
                results[impl]["reps"].append(figures)
                flag = " client SATURATED" if figures["client_cpu_pct"] > \
                    report.SATURATED_CLIENT_PCT else ""
                errs = " errors {}".format(figures["errors_total"]) \
                    if figures["errors_total"] else ""
                if figures["contended"]:
                    flag += " (another process used the cores: figures may be low)"
                if case.tls and figures["client_us_per_req"] is not None:
                    flag += "  client {} us/req".format(
                        report._num(figures["client_us_per_req"], 1))
                if case.slow_clients and case.tls:
                    flag += "  {} stalled open{}".format(
                        figures["slow_clients_at_start"]["idle_open"],
                        "" if figures["slow_clients_ready"] else " (not all)")
                elif case.slow_clients:
                    slow = figures["slow_clients_at_start"]
                    flag += "  {} idle + {} trickling open{}, {} server threads".format(
                        slow["idle_open"], slow["trickle_open"],
                        "" if figures["slow_clients_ready"] else " (not all)",
                        figures["server_peak_threads"])
                run.progress("{} {} rep {}/{}: {} {}  p99 {} ms  srv {} us/req{}{}".format(
                    case.name, impl, rep + 1, settings.reps, _fmt_rate(figures["rps"]),
                    case.unit, report._ms(figures["lat_p99_ms"]),
                    report._num(figures["server_us_per_req"], 1), errs, flag))
        if settings.rate_fractions and open_loop_applies(case):
            run_open_loop(run, case, results, live, servers, loadgens, settings)
        if run.args.wrk and case.name == "http":
            for impl in live:
                wrk = run_wrk(servers[impl].port, settings.duration, settings.client_cpu)
                results[impl]["wrk"] = wrk
    finally:
        for lg in loadgens.values():
            lg.close()
        for impl, server in servers.items():
            server.stop()
            count, last = server.tracebacks()
            if server.info.get("limits"):
                results[impl]["server_limits"] = server.info["limits"]
            results[impl]["server_tracebacks"] = count
            if last:
                results[impl]["server_last_traceback"] = last
            server.close()
    for impl, entry in results.items():
        if entry["reps"]:
            entry["summary"] = report.summarize_load(entry["reps"])
            if entry["status"] == "pending":
                entry["status"] = "ok"
            wrk = entry.get("wrk")
            if wrk and "rps" in wrk and entry["summary"]["rps"]:
                wrk["agreement"] = wrk["rps"] / entry["summary"]["rps"]
    return results


def run_open_loop(run, case, results, live, servers, loadgens, settings):
    """--rate: each live implementation at each fraction of its own maximum (its median
    closed-loop throughput), interleaved as the closed loop is; figures go to
    ``results[impl]["open_loop"]``."""
    entries = {}
    for impl in live:
        maximum = report.median([r["rps"] for r in results[impl]["reps"]])
        entries[impl] = results[impl]["open_loop"] = {
            "max_rps": maximum,
            "fractions": [{"fraction": f, "rate": f * (maximum or 0), "reps": []}
                          for f in settings.rate_fractions]}
    going = list(live)
    for rep in range(settings.reps):
        for index, fraction in enumerate(settings.rate_fractions):
            for impl in list(going):
                run.done += 1
                entry = entries[impl]["fractions"][index]
                if entry["rate"] * settings.duration < 1:
                    entry["skipped"] = "under one request in --duration at this rate"
                    continue
                try:
                    figures = measure_open(case, servers[impl], settings, entry["rate"],
                                           loadgens.get(impl))
                except ServerError as exc:
                    entries[impl]["error"] = "server stopped answering: {}".format(exc)
                    run.say("{} {} open loop: {}".format(case.name, impl,
                                                         entries[impl]["error"]))
                    run.failed = True
                    going.remove(impl)
                    run.done += (settings.reps - rep) * len(settings.rate_fractions) \
                        - index - 1
                    continue
                entry["reps"].append(figures)
                run.progress("{} {} open loop {:.0%} rep {}/{}: {} req/s due, p50 {} p99 {} "
                             "p99.9 {} ms{}{}".format(
                                 case.name, impl, fraction, rep + 1, settings.reps,
                                 _fmt_rate(entry["rate"]), report._ms(figures["lat_p50_ms"]),
                                 report._ms(figures["lat_p99_ms"]),
                                 report._ms(figures["lat_p999_ms"]),
                                 "  {} unfinished".format(figures["unfinished"])
                                 if figures["unfinished"] else "",
                                 " (another process used the cores)"
                                 if figures["contended"] else ""))
    for impl in live:
        for entry in entries[impl]["fractions"]:
            entry["summary"] = report.summarize_open(entry["reps"])


def run_process_case(run, case, impls, settings, measure_one, describe, summarize):
    """A case whose repetitions each start a server process of their own (shutdown,
    drain): ``measure_one(case, impl, settings, port=...)`` gives a repetition's
    figures, ``describe(figures)`` its progress line's end, ``summarize(reps)`` the
    summary."""
    results = {impl: {"status": "pending", "reps": []} for impl in impls}
    live = list(impls)
    for rep in range(settings.reps):
        for impl in list(live):
            run.done += 1
            try:
                figures = measure_one(case, impl, settings, port=run.port())
            except ServerError as exc:
                _drop_failed(run, results, live, case, impl,
                             "failed: {}".format(exc), settings.reps - rep - 1)
                continue
            results[impl]["reps"].append(figures)
            run.progress("{} {} rep {}/{}: {}".format(
                case.name, impl, rep + 1, settings.reps, describe(figures)))
    for entry in results.values():
        if entry["reps"]:
            entry["summary"] = summarize(entry["reps"])
            if entry["status"] == "pending":
                entry["status"] = "ok"
    return results


def _describe_shutdown(figures):
    return "{} ms".format(", ".join(report._ms(ms) for ms in figures["shutdown_ms"]))


def _describe_drain(figures):
    return ("{} requests before SIGTERM, {} after; failed: {} on served connections, {} on "
            "new ones; exit after {} s".format(
                figures["requests_before_signal"], figures["requests_after_signal"],
                figures["errors_on_served_total"], figures["errors_on_new_total"],
                report._num(figures["signal_to_exit_s"], 3)))


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text):
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(match.group(1)) * _WRK_UNITS[match.group(2)] if match else None


def run_wrk(port, duration, cpu=None):
    """wrk against the http server (one thread, 32 connections): its figures, or an error."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"error": "wrk not installed"}
    seconds = max(1, int(round(duration)))
    cmd = [wrk, "-t1", "-c32", "-d{}s".format(seconds), "--latency",
           "http://{}:{}/".format(HOST, port)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return {"error": "wrk did not finish in time"}
    match = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
    if out.returncode != 0 or not match:
        return {"error": "wrk failed: {}".format((out.stderr or out.stdout).strip()[-200:])}
    result = {"rps": float(match.group(1)), "command": " ".join(cmd)}
    for name, key in (("50%", "lat_p50_ms"), ("99%", "lat_p99_ms")):
        found = re.search(r"^\s*{}\s+(\S+)".format(re.escape(name)), out.stdout, re.M)
        result[key] = _wrk_ms(found.group(1)) if found else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out.stdout)
    result["socket_errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.soak is not None:   # (no load generator: it runs on the pure core too)
        from . import soak
        return soak.main(args.soak, json_path=args.json, quiet=args.quiet)
    if _env.NO_EXTENSIONS:
        print("fastsockserver bench: the load generator needs the compiled build "
              "({} is set: pure-Python mode)".format(_env.ENV_VAR), file=sys.stderr)
        return 1
    available, why_not = loadgen_status()
    if not available:
        print("fastsockserver bench: the load generator is absent: {}. `python -m "
              "fastsockserver info` shows the build.".format(why_not), file=sys.stderr)
        return 1

    run = Run(args)
    bad_input = False
    cases, unknown = select_cases(_split(args.workloads))
    for name in unknown:
        run.say("unknown workload {!r} (known: {}); skipping it".format(
            name, ", ".join(WORKLOADS)))
        bad_input = True
    impls = []
    for name in _split(args.impls):
        if name not in ALL_IMPLS:
            run.say("unknown implementation {!r} (known: {}); skipping it".format(
                name, ", ".join(ALL_IMPLS)))
            bad_input = True
        elif name in PEER_MODULES and _peer_missing(name):
            run.say("skipped: {} not installed (pip install {})".format(
                name, PEER_MODULES[name]))
        elif name == GIL_ON and not FREE_THREADED:
            run.say("skipped: {} needs a free-threaded CPython".format(name))
        elif name not in impls:
            impls.append(name)
    if not cases or not impls:
        run.say("fastsockserver bench: nothing to run")
        return 2

    server_cpu, client_cpu = _pin(args)
    settings = Settings(duration=args.duration, warmup=args.warmup, timeout=args.timeout,
                        reps=args.reps, shutdown_count=args.shutdown_count,
                        server_cpu=server_cpu, client_cpu=client_cpu, base_port=args.port,
                        slowloris_idle=args.slowloris_idle,
                        slowloris_trickle=args.slowloris_trickle, tls_stall=args.tls_stall,
                        rate_fractions=args.rate, neighbour=args.neighbour)
    if args.neighbour and server_cpu is None:
        run.say("--neighbour: no server core is pinned (--no-pin, or one core): no neighbour")
    plan = [(case, _with_workers(case, [impl for impl in impls if impl in case.impls],
                                 args.workers, args.reuse_port)) for case in cases]
    certificates = None
    if any(case.tls and case_impls for case, case_impls in plan):
        certificates = tempfile.TemporaryDirectory(prefix="fastsockserver-bench-tls-")
        problem = make_certificates(certificates.name)
        if problem:
            # as for a missing peer: one line, and the rest runs
            run.say("skipped: {}: {}".format(
                ", ".join(case.name for case, _ in plan if case.tls), problem))
            plan = [(case, case_impls) for case, case_impls in plan if not case.tls]
            certificates.cleanup()
            certificates = None
        else:
            settings.tls_dir = certificates.name
    run.total = sum(len(case_impls) * args.reps
                    * (1 + (len(args.rate) if open_loop_applies(case) else 0))
                    for case, case_impls in plan)
    if args.rate:
        without = [case.name for case, case_impls in plan
                   if case_impls and not open_loop_applies(case)]
        if without:
            run.say("--rate: no open loop for {} (not driven by the compiled load "
                    "generator over TCP)".format(", ".join(without)))
    document = {
        "meta": report.metadata(),
        "settings": {
            "workloads": [case.name for case in cases], "impls": impls,
            "reps": args.reps, "duration": args.duration, "warmup": args.warmup,
            "timeout": args.timeout, "shutdown_count": args.shutdown_count,
            "concurrency": 32, "host": HOST, "server_cpu": server_cpu,
            "client_cpu": client_cpu, "argv": list(sys.argv[1:] if argv is None else argv),
            "slowloris_idle": args.slowloris_idle, "slowloris_trickle": args.slowloris_trickle,
            "tls_stall": args.tls_stall, "rate_fractions": list(args.rate),
            "neighbour": args.neighbour and server_cpu is not None,
        },
        "cases": [],
        "messages": run.messages,
    }
    for case, case_impls in plan:
        if not case_impls:
            run.say("{}: none of the chosen implementations applies (it takes: {})".format(
                case.name, ", ".join(case.impls)))
            continue
        if case.slow_clients:
            # The server holds a socket per slow connection (the stdlib takes them
            # all): its open-files limit, inherited from this process, must allow it.
            slow = sum(slow_client_counts(case, settings))
            needed = slow + 1024
            limit = raise_open_files_limit(needed)
            if limit < needed:
                run.say("{}: skipped: {:,} connections need an open-files limit of about "
                        "{:,}; it is {:,} (ulimit -n)".format(case.name, slow, needed, limit))
                run.failed = True
                run.done += len(case_impls) * args.reps
                continue
        if case.mode == "shutdown":
            results = run_process_case(run, case, case_impls, settings, measure_shutdown,
                                       _describe_shutdown, report.summarize_shutdown)
        elif case.mode == "drain":
            results = run_process_case(run, case, case_impls, settings, measure_drain,
                                       _describe_drain, report.summarize_drain)
        else:
            results = run_load_case(run, case, case_impls, settings)
        report.add_ratios(case, results)
        description = case.description
        if case.slow_clients:
            description = description.format(idle=args.slowloris_idle,
                                             trickle=args.slowloris_trickle,
                                             stall=args.tls_stall)
        document["cases"].append({
            "case": case.name, "workload": case.workload, "description": description,
            "mode": case.mode, "unit": case.unit, "results": results,
        })
    if certificates is not None:   # (else the object's finalizer removes the directory)
        certificates.cleanup()
    report.add_baseline_ratios(document)
    document["elapsed_s"] = time.monotonic() - run.started
    document["meta"]["loadavg_after"] = report._read("/proc/loadavg")
    plotted = False
    if args.plot:
        problem = report.write_plot(document, args.plot)
        if problem:
            run.say(problem)
            run.failed = True
        else:
            plotted = True
    if args.json:
        report.write_json(document, args.json)
    print(report.format_report(document), flush=True)
    if args.json:
        print("figures written to {}".format(os.path.abspath(args.json)), file=sys.stderr)
    if plotted:
        print("chart written to {}".format(os.path.abspath(args.plot)), file=sys.stderr)
    if bad_input:
        return 2
    return 1 if run.failed else 0
