"""Summaries, the printed table, the JSON document and the optional chart of a bench run."""
import json
import os
import platform
import statistics
import sys
import time

SATURATED_CLIENT_PCT = 90.0
# slowloris: the goals of issue #16 for fastsockserver under slow clients
SLOWLORIS_GOAL_P99_MS = 10.0
SLOWLORIS_GOAL_OF_BASELINE = 0.80   # good-client throughput, against the run without them
SLOWLORIS_GOAL_EXTRA_THREADS = 4    # server threads <= max_threads + this
SLOWLORIS_GOAL_RSS_MIB = 64.0


def median(values):
    """The median of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


_median = median


def summarize_load(reps):
    """Medians (min–max where it matters) over the repetitions of one case and implementation."""
    if not reps:
        return None
    rps = [r["rps"] for r in reps]
    errors = {}
    for r in reps:
        for kind, count in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    client = [r["client_cpu_pct"] for r in reps]
    lat_max = [r["lat_max_ms"] for r in reps if r["lat_max_ms"] is not None]
    return {
        "rps": _median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "requests": sum(r["requests"] for r in reps),
        "lat_p50_ms": _median(r["lat_p50_ms"] for r in reps),
        "lat_p99_ms": _median(r["lat_p99_ms"] for r in reps),
        "lat_p999_ms": _median(r["lat_p999_ms"] for r in reps),
        "lat_max_ms": max(lat_max) if lat_max else None,
        "server_us_per_req": _median(r["server_us_per_req"] for r in reps),
        "server_cpu_pct": _median(r["server_cpu_pct"] for r in reps),
        "neighbour_cpu_pct": _median(r.get("neighbour_cpu_pct") for r in reps),
        "server_rss_mib": max(r["server_rss_mib"] for r in reps),
        "server_peak_threads": max(r.get("server_peak_threads") or 0 for r in reps),
        "server_children_rss_mib": max(r["server_children_rss_mib"] for r in reps),
        "errors": errors,
        "errors_total": sum(errors.values()),
        "client_cpu_pct": _median(client),
        "client_us_per_req": _median(r.get("client_us_per_req") for r in reps),
        "client_cpu_pct_max": max(client),
        "client_saturated": max(client) > SATURATED_CLIENT_PCT,
        "contended_reps": sum(1 for r in reps if r.get("contended")),
        "inflight_at_end": _median(r["inflight_at_end"] for r in reps),
        "oldest_inflight_ms": _median(r.get("oldest_inflight_ms") for r in reps),
        "server_tls_handshake_failures": _sum(r.get("server_tls_handshake_failures")
                                              for r in reps),
        "reps": len(reps),
    }


def summarize_open(reps):
    """One open-loop rate of one implementation: medians over the repetitions; the
    worst latency, late sends, unfinished requests and errors over all of them."""
    if not reps:
        return None
    errors = {}
    for r in reps:
        for kind, count in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return {
        "offered_rate": median(r["offered_rate"] for r in reps),
        "rps": median(r["rps"] for r in reps),
        "scheduled": sum(r["scheduled"] for r in reps),
        "lat_p50_ms": median(r["lat_p50_ms"] for r in reps),
        "lat_p99_ms": median(r["lat_p99_ms"] for r in reps),
        "lat_p999_ms": median(r["lat_p999_ms"] for r in reps),
        "lat_max_ms": max((r["lat_max_ms"] for r in reps if r["lat_max_ms"] is not None),
                          default=None),
        "server_us_per_req": median(r["server_us_per_req"] for r in reps),
        "late_sends": sum(r["late_sends"] for r in reps),
        "send_lag_max_ms": max(r["send_lag_max_ms"] for r in reps),
        "loadgen_late_sends": sum(r["loadgen_late_sends"] for r in reps),
        "loadgen_lag_max_ms": max(r["loadgen_lag_max_ms"] for r in reps),
        "unfinished": sum(r["unfinished"] for r in reps),
        "errors": errors,
        "errors_total": sum(errors.values()),
        "client_cpu_pct": median(r["client_cpu_pct"] for r in reps),
        "contended_reps": sum(1 for r in reps if r.get("contended")),
        "reps": len(reps),
    }


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def summarize_drain(reps):
    """Medians of the counts and times over the repetitions; failures summed."""
    exits = [r["signal_to_exit_s"] for r in reps]
    on_served, on_new = {}, {}
    for r in reps:
        for total, part in ((on_served, r["errors_on_served"]), (on_new, r["errors_on_new"])):
            for kind, count in part.items():
                total[kind] = total.get(kind, 0) + count
    return {
        "rps": _median(r["rps"] for r in reps),
        "requests_before_signal": _median(r["requests_before_signal"] for r in reps),
        "requests_after_signal": _median(r["requests_after_signal"] for r in reps),
        "close_responses_after_signal": _median(r["close_responses_after_signal"]
                                                for r in reps),
        "errors_before_signal": sum(r["errors_before_signal"] for r in reps),
        "errors_on_served": on_served,
        "errors_on_served_total": sum(on_served.values()),
        "errors_on_new": on_new,
        "errors_on_new_total": sum(on_new.values()),
        "signal_to_exit_s": _median(exits),
        "signal_to_exit_s_max": None if None in exits else max(exits),
        "not_exited": sum(1 for e in exits if e is None),
        "exit_codes": sorted(set(r["exit_code"] for r in reps if r["exit_code"] is not None)),
        "drained": [r["drained"] for r in reps],
        "server_rss_mib": max(r["server_rss_mib"] for r in reps),
        "server_tracebacks": sum(r["server_tracebacks"] for r in reps),
        "reps": len(reps),
    }


def summarize_shutdown(reps):
    samples = [ms for r in reps for ms in r["shutdown_ms"]]
    if not samples:
        return None
    return {"shutdown_ms": _median(samples), "shutdown_ms_min": min(samples),
            "shutdown_ms_max": max(samples), "samples": len(samples), "reps": len(reps)}


def add_ratios(case, results):
    """Each implementation against the stdlib: > 1 is better (faster, less CPU, quicker)."""
    base = results.get("stdlib", {}).get("summary")
    for impl, entry in results.items():
        summary = entry.get("summary")
        if not summary:
            continue
        if case.mode == "drain":
            continue   # counts of failures: no ratio to the stdlib
        if case.mode == "shutdown":
            if base and summary["shutdown_ms"]:
                summary["ratio"] = base["shutdown_ms"] / summary["shutdown_ms"]
            else:
                summary["ratio"] = None
            continue
        summary["ratio"] = (summary["rps"] / base["rps"]
                            if base and base["rps"] else None)
        if base and base["server_us_per_req"] and summary["server_us_per_req"]:
            summary["cpu_ratio"] = base["server_us_per_req"] / summary["server_us_per_req"]
        else:
            summary["cpu_ratio"] = None


def add_baseline_ratios(document):
    """slowloris and tls-stall: each implementation's good-client throughput against
    its own run without the slow clients (slowloris/baseline, tls-connrate), when
    both ran."""
    cases = {case["case"]: case for case in document["cases"]}
    for name, baseline in (("slowloris", "slowloris/baseline"), ("tls-stall", "tls-connrate")):
        if name in cases:
            _add_baseline_ratios(cases[name], cases.get(baseline))


def _add_baseline_ratios(attacked, baseline):
    for impl, entry in attacked["results"].items():
        summary = entry.get("summary")
        if not summary:
            continue
        base = ((baseline or {}).get("results", {}).get(impl) or {}).get("summary")
        summary["of_baseline"] = (summary["rps"] / base["rps"]
                                  if base and base["rps"] else None)
        reps = entry["reps"]
        summary["slow_clients_ready_reps"] = sum(1 for r in reps if r["slow_clients_ready"])
        for key in ("idle_open", "trickle_open"):
            summary["slow_" + key] = min(r["slow_clients_at_start"][key] for r in reps)
        for key in ("closed_by_server_idle", "closed_by_server_trickle"):
            summary["slow_" + key] = sum(r["slow_clients_at_end"][key] for r in reps)
        fds = [r["server_fds_at_start"] for r in reps if r["server_fds_at_start"] is not None]
        summary["server_fds_at_start"] = min(fds) if fds else None
        settle = [r["server_settle_s"] for r in reps if r.get("server_settle_s") is not None]
        summary["server_settle_s_max"] = max(settle) if settle else None


def slowloris_goals(summary, max_threads):
    """{goal: met (bool, None if not measured)} for one implementation's summary."""
    of_baseline = summary.get("of_baseline")
    p99 = summary.get("lat_p99_ms")
    return {
        "p99": None if p99 is None else p99 <= SLOWLORIS_GOAL_P99_MS,
        "throughput": None if of_baseline is None
        else of_baseline >= SLOWLORIS_GOAL_OF_BASELINE,
        "threads": summary["server_peak_threads"] <= max_threads + SLOWLORIS_GOAL_EXTRA_THREADS,
        "rss": summary["server_rss_mib"] <= SLOWLORIS_GOAL_RSS_MIB,
    }


# ---------------------------------------------------------------- text

def _num(value, digits=0):
    if value is None:
        return "-"
    if digits == 0:
        return "{:,.0f}".format(value)
    return "{:,.{}f}".format(value, digits)


def _ms(value):
    if value is None:
        return "-"
    if value >= 100:
        return "{:,.0f}".format(value)
    if value >= 10:
        return "{:.1f}".format(value)
    return "{:.2f}".format(value)


def _ratio(value):
    return "-" if value is None else "{:.2f}x".format(value)


def _table(header, rows, right):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def format_report(document):
    """The printed table: one block per case."""
    out = []
    meta = document["meta"]
    settings = document["settings"]
    out.append("fastsockserver bench: Python {} ({}), {} cores, server on core {}, "
               "client on core {}".format(
                   meta["python_version"], meta["python_implementation"], meta["cpu_count"],
                   _dash(settings["server_cpu"]), _dash(settings["client_cpu"])))
    out.append("{} repetitions x {} s after {} s warm-up; medians (min-max); 'x stdlib' > 1 is "
               "better; srv us/req = server CPU per request".format(
                   settings["reps"], settings["duration"], settings["warmup"]))
    if settings.get("neighbour"):
        out.append("--neighbour: a CPU-bound process shared the server's core in every "
                   "repetition")
    for case in document["cases"]:
        out.append("")
        out.append("{}: {}".format(case["case"], case["description"]))
        results = case["results"]
        if case["mode"] == "shutdown":
            header = ["impl", "shutdown ms (min-max)", "x stdlib", "samples"]
            rows = []
            for impl, entry in results.items():
                s = entry.get("summary")
                if not s:
                    rows.append([impl, entry.get("reason") or entry["status"], "", ""])
                    continue
                rows.append([impl, "{} ({}-{})".format(_ms(s["shutdown_ms"]),
                                                        _ms(s["shutdown_ms_min"]),
                                                        _ms(s["shutdown_ms_max"])),
                             _ratio(s.get("ratio")), s["samples"]])
            out.extend(_table(header, rows, right={2, 3}))
            continue
        if case["mode"] == "drain":
            out.extend(_drain_table(results))
            continue
        header = ["impl", case["unit"] + " (min-max)", "x stdlib", "p50 ms", "p99 ms",
                  "p99.9 ms", "srv us/req", "x stdlib cpu", "srv RSS MiB", "errors",
                  "client cpu"]
        rows = []
        notes = []
        contended = []
        for impl, entry in results.items():
            s = entry.get("summary")
            if not s:
                rows.append([impl, entry.get("reason") or entry["status"]] + [""] * 9)
                continue
            rss = s["server_rss_mib"]
            if s.get("server_children_rss_mib") and case["case"] == "fork":
                rss_text = "{:.1f}+{:.1f}".format(rss, s["server_children_rss_mib"])
            else:
                rss_text = "{:.1f}".format(rss)
            client = "{:.0f}%".format(s["client_cpu_pct"])
            if s["client_saturated"]:
                client += " SATURATED"
            if case["case"].startswith("tls-"):   # the Python TLS client: its cost shows
                client += ", {} us/req".format(_num(s.get("client_us_per_req"), 1))
            errors = str(s["errors_total"])
            if s["errors_total"]:
                errors += " (" + ", ".join("{} {}".format(k, v) for k, v in s["errors"].items()
                                           if v) + ")"
            if s.get("contended_reps"):
                contended.append("{} {}/{}".format(impl, s["contended_reps"], s["reps"]))
            if entry.get("server_tracebacks"):
                notes.append("{}: the server printed {} traceback(s)".format(
                    impl, entry["server_tracebacks"]))
            if s.get("neighbour_cpu_pct") is not None:
                notes.append("{}: with the CPU-bound neighbour on its core the server used "
                             "{:.0f}% of the core, the neighbour {:.0f}%".format(
                                 impl, s["server_cpu_pct"], s["neighbour_cpu_pct"]))
            if case["case"] == "overload":
                notes.append("{}: at most {} server threads".format(
                    impl, s["server_peak_threads"]))
            if case["case"] == "tls-stall":
                notes.append(_tls_stall_note(impl, s, entry.get("server_limits")))
                if "do_handshake" in (entry.get("server_last_traceback") or ""):
                    notes.append(
                        "{}: the last traceback is a handshake that failed: a stalled "
                        "connection closed by the bench at the end of a repetition, or by "
                        "the server's ssl_handshake_timeout (reported through handle_error, "
                        "as the library does)".format(impl))
            if case["case"] == "slowloris":
                notes.append(_slowloris_note(impl, s))
                last = entry.get("server_last_traceback") or ""
                if "BrokenPipeError" in last and "do_GET" in last:
                    notes.append(
                        "{}: the last traceback is a BrokenPipeError in do_GET: when the "
                        "slow clients close, http.server takes a trickling connection's "
                        "head, cut short by end-of-file, for a whole request, and the "
                        "response meets the closed socket".format(impl))
            rows.append([
                impl,
                "{} ({}-{})".format(_num(s["rps"]), _num(s["rps_min"]), _num(s["rps_max"])),
                _ratio(s.get("ratio")),
                _ms(s["lat_p50_ms"]), _ms(s["lat_p99_ms"]), _ms(s["lat_p999_ms"]),
                _num(s["server_us_per_req"], 1), _ratio(s.get("cpu_ratio")),
                rss_text, errors, client,
            ])
            wrk = entry.get("wrk")
            if wrk:
                if "error" in wrk:
                    notes.append("{}: wrk: {}".format(impl, wrk["error"]))
                else:
                    notes.append("{}: wrk {} req/s ({:+.1f}% against the built-in generator), "
                                 "p50 {} ms, p99 {} ms".format(
                                     impl, _num(wrk["rps"]), 100 * (wrk["agreement"] - 1),
                                     _ms(wrk.get("lat_p50_ms")), _ms(wrk.get("lat_p99_ms"))))
        if contended:
            notes.insert(0, "another process used the pinned cores (figures may be low) in "
                         "repetitions of: " + ", ".join(contended))
        waitress = (results.get("waitress") or {}).get("summary")
        if waitress and waitress["server_us_per_req"]:
            # issue 28's measure: server CPU per request against waitress, same run
            for impl in ("compiled", "pure", "wsgiref-compiled"):
                s = (results.get(impl) or {}).get("summary")
                if s and s["server_us_per_req"]:
                    notes.append("{}: {} the server CPU per request of waitress "
                                 "({} us)".format(
                                     impl, _ratio(s["server_us_per_req"]
                                                  / waitress["server_us_per_req"]),
                                     _num(waitress["server_us_per_req"], 1)))
        nodelay = (results.get("stdlib-nodelay") or {}).get("summary")
        if nodelay and nodelay["rps"]:
            for impl in ("compiled", "pure"):
                s = (results.get(impl) or {}).get("summary")
                if s:
                    notes.append("{}: {} the throughput of stdlib-nodelay".format(
                        impl, _ratio(s["rps"] / nodelay["rps"])))
        out.extend(_table(header, rows, right=set(range(1, 11))))
        for note in notes:
            out.append("  note: " + note)
        out.extend(_open_loop_table(results))
    if document["messages"]:
        out.append("")
        out.extend(document["messages"])
    return "\n".join(out)


def _open_loop_table(results):
    """--rate: one row per implementation and arrival rate."""
    if not any(entry.get("open_loop") for entry in results.values()):
        return []
    header = ["impl", "load", "due req/s", "answered req/s", "p50 ms", "p99 ms",
              "p99.9 ms", "max ms", "srv us/req", "late sends (loadgen)", "unfinished",
              "errors"]
    rows, notes, contended = [], [], []
    for impl, entry in results.items():
        open_loop = entry.get("open_loop")
        if not open_loop:
            continue
        if open_loop.get("error"):
            notes.append("{}: {}".format(impl, open_loop["error"]))
        for part in open_loop["fractions"]:
            s = part.get("summary")
            load = "{:.0%}".format(part["fraction"])
            if not s:
                rows.append([impl, load, _num(part["rate"]),
                             part.get("skipped") or "not run"] + [""] * 8)
                continue
            if s["contended_reps"]:
                contended.append("{} at {} {}/{}".format(impl, load, s["contended_reps"],
                                                         s["reps"]))
            rows.append([impl, load, _num(s["offered_rate"]), _num(s["rps"]),
                         _ms(s["lat_p50_ms"]), _ms(s["lat_p99_ms"]), _ms(s["lat_p999_ms"]),
                         _ms(s["lat_max_ms"]), _num(s["server_us_per_req"], 1),
                         "{} ({})".format(_num(s["late_sends"]),
                                          _num(s["loadgen_late_sends"])),
                         _num(s["unfinished"]), _errors_text(s["errors_total"], s["errors"])])
    if contended:
        notes.append("another process used the pinned cores (latencies may be high) in "
                     "repetitions of: " + ", ".join(contended))
    lines = ["  open loop (--rate): requests due at a fixed rate, a fraction ('load') of "
             "each server's own maximum above; latency from each request's due time"]
    lines.extend(_table(header, rows, right=set(range(1, 11))))
    for note in notes:
        lines.append("  note: " + note)
    lines.append("  note: late sends: requests sent over 1 ms after their due time, because "
                 "every connection was busy or the load generator was behind; (loadgen): "
                 "over 1 ms late after a connection was free, the load generator's own "
                 "lateness (its latency is in the figures: many mean a busy client core); "
                 "unfinished: not answered by the end, counted in the percentiles with the "
                 "time they had waited")
    return lines


def _drain_table(results):
    header = ["impl", "req before SIGTERM", "req after", "failed: served conns (all reps)",
              "failed: new conns (all reps)", "SIGTERM to exit s (max)", "exit code",
              "drained"]
    rows = []
    for impl, entry in results.items():
        s = entry.get("summary")
        if not s:
            rows.append([impl, entry.get("reason") or entry["status"]] + [""] * 6)
            continue
        exit_s = _num(s["signal_to_exit_s"], 3)
        if s["not_exited"]:
            exit_s += " ({} not exited)".format(s["not_exited"])
        else:
            exit_s += " ({})".format(_num(s["signal_to_exit_s_max"], 3))
        rows.append([impl, _num(s["requests_before_signal"]), _num(s["requests_after_signal"]),
                     _errors_text(s["errors_on_served_total"], s["errors_on_served"]),
                     _errors_text(s["errors_on_new_total"], s["errors_on_new"]),
                     exit_s, ",".join(str(c) for c in s["exit_codes"]) or "-",
                     "-" if all(d is None for d in s["drained"])
                     else ",".join("yes" if d else "no" for d in s["drained"])])
    lines = _table(header, rows, right={1, 2, 6})
    for impl, entry in results.items():
        s = entry.get("summary")
        if s and s["server_tracebacks"]:
            lines.append("  note: {}: the server printed {} traceback(s)".format(
                impl, s["server_tracebacks"]))
    lines.append("  note: failed on served conns: requests on a connection that had had a "
                 "response (the server had accepted it: the goal is 0); on new conns: refused, "
                 "reset in the listen backlog, or closed before a first response (each client "
                 "tries again every 10 ms: the count grows with the time the load goes on)")
    return lines


def _errors_text(total, kinds):
    text = str(total)
    if total:
        text += " (" + ", ".join("{} {}".format(k, v) for k, v in kinds.items() if v) + ")"
    return text


def _slowloris_note(impl, s):
    from .servers import SLOWLORIS_MAX_THREADS
    goals = slowloris_goals(s, SLOWLORIS_MAX_THREADS)

    def met(name):
        return {True: "met", False: "MISSED", None: "not measured"}[goals[name]]
    of_baseline = s.get("of_baseline")
    return ("{}: {} of the throughput without the slow clients (goal >= {:.0f}%: {}); p99 {} ms "
            "(goal <= {:g}: {}); at most {} server threads (goal <= {}: {}); RSS {:.1f} MiB "
            "(goal <= {:g}: {}); slow clients open at the start (fewest): {} idle, {} "
            "trickling, server process's open files {}; closed by the server (and "
            "reopened): {} idle, {} trickling{}".format(
                impl, "-" if of_baseline is None else "{:.0f}%".format(100 * of_baseline),
                100 * SLOWLORIS_GOAL_OF_BASELINE, met("throughput"), _ms(s["lat_p99_ms"]),
                SLOWLORIS_GOAL_P99_MS, met("p99"), s["server_peak_threads"],
                SLOWLORIS_MAX_THREADS + SLOWLORIS_GOAL_EXTRA_THREADS, met("threads"),
                s["server_rss_mib"], SLOWLORIS_GOAL_RSS_MIB, met("rss"), s["slow_idle_open"],
                s["slow_trickle_open"], _num(s["server_fds_at_start"]),
                s["slow_closed_by_server_idle"], s["slow_closed_by_server_trickle"],
                "" if s["requests"] else "; no good client had a response in the measured "
                "time ({} requests waiting at its end)".format(_num(s["inflight_at_end"]))))


def _tls_stall_note(impl, s, limits):
    of_baseline = s.get("of_baseline")
    failures = s.get("server_tls_handshake_failures")
    where = ""
    if limits:
        timeout = limits["ssl_handshake_timeout"]
        where = "handshakes on {} ({}); ".format(
            limits["handshake_on"], "no time limit" if timeout is None
            else "ssl_handshake_timeout {:g} s".format(timeout))
    return ("{}: {}{} of its tls-connrate throughput; stalled connections open at the start "
            "(fewest): {}; closed by the server (and reopened): {}{}{}".format(
                impl, where,
                "-" if of_baseline is None else "{:.0f}%".format(100 * of_baseline),
                s["slow_idle_open"], s["slow_closed_by_server_idle"],
                "" if failures is None else "; failed handshakes the server counted in the "
                "measured time: {}".format(failures),
                "" if s["requests"] else "; no good client had a response in the measured "
                "time ({} requests waiting at its end, the oldest for {} ms)".format(
                    _num(s["inflight_at_end"]), _ms(s.get("oldest_inflight_ms")))))


def _dash(value):
    return "-" if value is None else value


# ---------------------------------------------------------------- metadata, JSON, chart

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _version(name):
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:
        return None


def metadata():
    import fastsockserver
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": list(platform.python_build()),
        "python_compiler": platform.python_compiler(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "loadavg": _read("/proc/loadavg"),
        "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range"),
        "tcp_tw_reuse": _read("/proc/sys/net/ipv4/tcp_tw_reuse"),
        "somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "fastsockserver_version": fastsockserver.__version__,
        "fastsockserver_compiled": fastsockserver.COMPILED,
        "peers": {name: _version(name)
                  for name in ("uvloop", "gevent", "waitress", "cheroot", "gunicorn")},
        "matplotlib": _version("matplotlib"),
    }


def write_json(document, path):
    with open(path, "w") as f:
        json.dump(document, f, indent=1, sort_keys=False)
        f.write("\n")


# One colour per implementation, the same in every chart: fastsockserver in blues,
# the stdlib in greys, the event loops in greens, the WSGI servers in warm colours.
IMPL_COLOURS = {
    "stdlib": "#7f7f7f",
    "stdlib-nodelay": "#bdbdbd",
    "compiled": "#1f5fbf",
    "pure": "#8fb8e8",
    "compiled-gil": "#0b2a5c",
    "asyncio": "#2ca02c",
    "uvloop": "#98df8a",
    "gevent": "#bcbd22",
    "waitress": "#ff7f0e",
    "cheroot": "#8c564b",
    "gunicorn": "#9467bd",
    "wsgiref-stdlib": "#e377c2",
    "wsgiref-compiled": "#17becf",
}
OTHER_COLOUR = "#444444"
CONTENDED_HATCH = "///"


def impl_colour(impl):
    """The chart colour of ``impl``; worker variants (compiled-w2) take their base's."""
    from .workloads import split_workers
    return IMPL_COLOURS.get(impl) or IMPL_COLOURS.get(split_workers(impl)[0], OTHER_COLOUR)


def _chart_rows(case):
    """(impl, throughput, p99 ms, contended reps, reps,
    open loop [(fraction, p99 ms, contended reps)])
    of one load or shutdown case, for the implementations that have figures."""
    rows = []
    for impl, entry in case["results"].items():
        s = entry.get("summary")
        if not s:
            continue
        if case["mode"] == "shutdown":
            rows.append((impl, s["shutdown_ms"], None, 0, s["reps"], []))
            continue
        if "lat_p99_ms" not in s:
            continue   # drain: counts, not a throughput
        open_loop = [(part["fraction"], part["summary"]["lat_p99_ms"],
                      part["summary"].get("contended_reps", 0))
                     for part in (entry.get("open_loop") or {}).get("fractions", [])
                     if part.get("summary")]
        rows.append((impl, s["rps"], s["lat_p99_ms"], s.get("contended_reps", 0),
                     s["reps"], open_loop))
    return rows


def _label(value, unit_ms=False):
    if value is None:
        return "-"
    return _ms(value) if unit_ms else _num(value)


def make_chart(document):
    """The chart's matplotlib figure, or an error line (str). A row per case: its
    throughput (or shutdown time) and its p99 per implementation, as labelled
    horizontal bars on linear axes; with --rate, a third panel of the open loop's p99
    at each load. Each implementation has its colour of IMPL_COLOURS; a bar whose
    repetitions met another process on the pinned cores is hatched."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return "plot skipped: matplotlib not installed (pip install fastsockserver[plot])"
    cases = [(case, _chart_rows(case)) for case in document["cases"]]
    cases = [(case, rows) for case, rows in cases if rows]
    if not cases:
        return "plot skipped: no figures to plot"
    with_open = any(row[5] for _, rows in cases for row in rows)
    columns = 3 if with_open else 2
    heights = [1.0 + 0.32 * len(rows)
               for _, rows in cases]
    fig, axes = plt.subplots(len(cases), columns, squeeze=False,
                             figsize=(5.2 * columns, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights})
    contended_any = any(part[2] for _, rows in cases for row in rows for part in row[5])
    for (case, rows), panel in zip(cases, axes):
        names = [row[0] for row in rows]
        ys = list(range(len(rows)))[::-1]   # the first implementation on top
        colours = [impl_colour(name) for name in names]
        hatches = [CONTENDED_HATCH if row[3] else None for row in rows]
        contended_any = contended_any or any(hatches)
        shutdown = case["mode"] == "shutdown"
        first = "shutdown() ms (lower is better)" if shutdown else \
            "{} (higher is better)".format(case["unit"])
        _bars(panel[0], ys, [row[1] for row in rows], colours, hatches, names,
              [_label(row[1], shutdown) + (" *" if row[3] else "") for row in rows])
        panel[0].set_title("{}: {}".format(case["case"], first), fontsize=9, loc="left")
        if shutdown:
            panel[1].axis("off")
        else:
            _bars(panel[1], ys, [row[2] for row in rows], colours, hatches, names,
                  [_label(row[2], True) + (" *" if row[3] else "") for row in rows])
            panel[1].set_title("{}: p99 latency, ms (lower is better)".format(case["case"]),
                               fontsize=9, loc="left")
        if with_open:
            _open_loop_bars(panel[2], rows, colours, case["case"])
    meta = document["meta"]
    settings = document["settings"]
    title = ("fastsockserver bench: Python {}, {}; {} repetitions x {} s, medians; server "
             "on core {}, load generator on core {}".format(
                 meta["python_version"], meta.get("cpu_model") or "", settings["reps"],
                 settings["duration"], _dash(settings["server_cpu"]),
                 _dash(settings["client_cpu"])))
    fig.suptitle(title, fontsize=9)
    if contended_any:
        fig.legend(handles=[Patch(facecolor="white", edgecolor="black",
                                  hatch=CONTENDED_HATCH)],
                   labels=["* another process used the pinned cores in some "
                           "repetitions: figures may be off"],
                   loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.03 if contended_any else 0, 1, 0.97))
    return fig


def _bars(ax, ys, values, colours, hatches, names, labels):
    shown = [v if v is not None else 0 for v in values]
    bars = ax.barh(ys, shown, color=colours, edgecolor="black", linewidth=0.4)
    for bar, hatch in zip(bars, hatches):
        if hatch:
            bar.set_hatch(hatch)
    ax.set_xscale("linear")
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8)
    top = max(shown) if any(shown) else 1.0
    ax.set_xlim(0, top * 1.3)   # room for the labels
    for y, value, label in zip(ys, shown, labels):
        ax.text(value + top * 0.01, y, label, va="center", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)


def _open_loop_bars(ax, rows, colours, name):
    """The open loop's p99 per implementation, a thin bar per load, labelled with it."""
    fractions = sorted({part[0] for row in rows for part in row[5]})
    if not fractions:
        ax.axis("off")
        return
    step = 0.8 / len(fractions)
    top = max((part[1] or 0 for row in rows for part in row[5]), default=0) or 1.0
    for index, (row, colour) in enumerate(zip(rows, colours)):
        y0 = len(rows) - 1 - index
        figures = {part[0]: part[1:] for part in row[5]}
        for k, fraction in enumerate(fractions):
            p99, contended = figures.get(fraction, (None, 0))
            y = y0 + 0.4 - step * (k + 0.5)
            ax.barh(y, p99 or 0, height=step * 0.9, color=colour, edgecolor="black",
                    linewidth=0.3, alpha=1.0 - 0.5 * k / max(1, len(fractions) - 1),
                    hatch=CONTENDED_HATCH if contended else None)
            ax.text((p99 or 0) + top * 0.01, y, "{:.0%}: {}{}".format(
                fraction, _label(p99, True), " *" if contended else ""),
                va="center", fontsize=6)
    ax.set_xscale("linear")
    ax.set_xlim(0, top * 1.35)
    ax.set_yticks(range(len(rows))[::-1])
    ax.set_yticklabels([row[0] for row in rows], fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("{}: open loop p99 ms at each load (--rate)".format(name), fontsize=9,
                 loc="left")


def write_plot(document, path):
    """Write the chart (make_chart) to ``path``; returns an error line or None."""
    fig = make_chart(document)
    if isinstance(fig, str):
        return fig
    import matplotlib.pyplot as plt
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        return "plot not written: {}".format(exc)
    finally:
        plt.close(fig)
    return None
