"""``python -m fastsockserver bench --soak SECONDS`` (fastsockserver/_bench/soak.py).

Every run of the suite soaks the installed core for SHORT_SOAK seconds with one
request lost on purpose (the verdict must find it, and only it; RSS is not judged
on so short a run); the soak of the command line, FASTSOCKSERVER_SOAK_SECONDS
long (tools/run_tests.py sets 60 on one Python), runs where that is set, and
must pass. The verdict's arithmetic is tested apart.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from fastsockserver._bench import soak
from support import SANITIZED

SOAK_SECONDS_VAR = "FASTSOCKSERVER_SOAK_SECONDS"
SHORT_SOAK = 10.0
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the soak's TLS server needs certificates (openssl)")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="the soak reads the server's figures from /proc")


def _checks(verdict):
    return {name: ok for name, ok, _ in verdict["checks"]}


@needs_openssl
@needs_proc
def test_short_soak_finds_the_one_request_lost_on_purpose_and_nothing_else():
    document = soak.run_soak(SHORT_SOAK, say=lambda line: None, lose_one=True)
    report = soak.format_report(document)
    verdict = document["verdict"]
    dropped = document["server_stats"]["lost_on_purpose"]
    assert dropped is not None, report
    assert [(r["id"], r["server"]) for r in verdict["lost"]] == \
        [(dropped, "read, not answered")], report
    assert not verdict["passed"] and "LOST: id {}".format(dropped) in report, report
    checks = _checks(verdict)
    assert not checks.pop("lost requests")
    # A 1.5 s warm-up is too short to judge RSS growth on: the long soak does.
    checks.pop("RSS growth after warm-up")
    assert all(checks.values()), report
    # every kind of client ran, and the two events happened
    assert set(verdict["answered"]) == {"http", "echo", "tls", "udp", "echo-half-close"}
    assert len(verdict["faults"]) == 11 and all(verdict["faults"].values()), verdict["faults"]
    events = {event["event"]: event for event in document["events"]}
    assert set(events) == {"exhaust", "restart"}, document["events"]
    assert all(events["restart"]["drained"].values()), events["restart"]
    # the faults reached the server's limits
    stats = document["server_stats"]
    assert stats["tls"]["tls_handshake_failures"] > 0, stats
    assert sum(stats[name]["first_byte_timeouts"] for name in ("http", "echo", "tls")) > 0
    assert stats["http"]["idle_timeouts"] > 0 and stats["http"]["headers_timeouts"] > 0
    assert sum(stats[name]["drained"] for name in ("http", "echo", "tls")) > 0
    assert stats["beyond_ledger"] == 0


@needs_openssl
@needs_proc
def test_the_clients_end_when_the_server_stops_answering(monkeypatch):
    """A soak server that stops answering (one that died: under ThreadSanitizer, a
    report ends it) fails the run with its error, and the client threads end by
    themselves: a process whose soak failed still exits."""
    made = []
    make_clients = soak.Clients.__init__

    def recorded(self, *args):
        make_clients(self, *args)
        made.append(self)

    def command(self, text, timeout=60.0, wait=True):
        raise RuntimeError("the soak server did not answer (for this test)")

    monkeypatch.setattr(soak.Clients, "__init__", recorded)
    monkeypatch.setattr(soak.ServerProcess, "command", command)
    try:
        with pytest.raises(RuntimeError, match="for this test"):
            soak.run_soak(SHORT_SOAK, say=lambda line: None)
        [clients] = made
        deadline = time.monotonic() + soak.CLIENT_TIMEOUT + 10
        while any(t.is_alive() for t in clients.threads) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [t.name for t in clients.threads if t.is_alive()] == []
    finally:
        for clients in made:  # (should the test fail: no thread outlives it)
            clients.stop.set()



@needs_openssl
@needs_proc
@pytest.mark.skipif(not os.environ.get(SOAK_SECONDS_VAR),
                    reason="{} is not set (tools/run_tests.py sets it on one Python)".format(
                        SOAK_SECONDS_VAR))
def test_soak_command_passes(tmp_path):
    seconds = float(os.environ[SOAK_SECONDS_VAR])
    figures = tmp_path / "soak.json"
    out = subprocess.run(
        [sys.executable, "-m", "fastsockserver", "bench", "--soak", str(seconds),
         "--json", str(figures), "-q"],
        capture_output=True, text=True, timeout=seconds + 180)
    print(out.stdout, out.stderr)
    document = json.loads(figures.read_text())
    checks = _checks(document["verdict"])
    if SANITIZED:   # ASan's quarantine keeps freed memory: RSS grows by design there
        checks.pop("RSS growth after warm-up")
    assert all(checks.values()), out.stdout
    assert out.returncode == (0 if document["verdict"]["passed"] else 1)
    assert "verdict: " in out.stdout


def test_soak_seconds_are_checked():
    out = subprocess.run([sys.executable, "-m", "fastsockserver", "bench", "--soak", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--soak takes seconds in 10..86400" in out.stderr


# ---------------------------------------------------------------- the verdict's arithmetic

def _tally(unanswered=(), wrong=(), answered=None):
    tally = soak.Tally()
    tally.unanswered = list(unanswered)
    tally.wrong = list(wrong)
    tally.answered = dict(answered or {"http": 3})
    return tally


def _samples(rss, fds=10, threads=5):
    return [{"t": float(t), "rss_kib": r, "fds": fds, "threads": threads}
            for t, r in enumerate(rss)]


BASE = {"rss_kib": 1000, "fds": 10, "threads": 5}


def _judge(ledger, tally, samples=None, final=None):
    samples = samples or _samples([1000] * 10)
    return soak.judge(ledger, tally, samples, BASE, final or dict(BASE), 2.0, True)


def test_verdict_read_but_unanswered_is_lost_unread_is_closed_cleanly():
    ledger = bytes([0, 2, 2, 2, 1, 2, 0])
    tally = _tally(unanswered=[(4, "http", "reset"), (5, "echo", "EOFError"),
                               (6, "http", "refused")])
    verdict = _judge(ledger, tally)
    assert [(r["id"], r["server"]) for r in verdict["lost"]] == \
        [(4, "read, not answered"), (5, "answered")]
    assert verdict["closed_cleanly"] == {"refused": 1}
    assert not verdict["passed"] and not _checks(verdict)["lost requests"]


def test_verdict_passes_only_when_every_check_does():
    ledger = bytes([0, 2, 2, 2, 0])
    assert _judge(ledger, _tally(unanswered=[(4, "udp", "timeout")]))["passed"]
    assert not _judge(ledger, _tally(wrong=[(1, "tls", "b'x'")]))["passed"]
    # the server's ledger shows fewer answers than the clients counted
    assert not _checks(_judge(ledger, _tally(answered={"http": 4})))["ledger agrees"]
    verdict = _judge(ledger, _tally(), final=dict(BASE, fds=11))
    assert not verdict["passed"] and not _checks(verdict)["descriptors"]
    verdict = _judge(ledger, _tally(), final=dict(BASE, threads=6))
    assert not verdict["passed"] and not _checks(verdict)["threads"]
    verdict = soak.judge(ledger, _tally(), _samples([1000] * 10), BASE, dict(BASE), 2.0, False)
    assert not verdict["passed"] and not _checks(verdict)["server still serves"]


def test_rss_growth_is_the_fitted_line_after_the_warm_up():
    flat = _samples([5000, 1000, 1000, 1000, 1000])   # the warm-up's first sample is ignored
    assert soak.rss_growth_pct(flat, 1.0) == pytest.approx(0.0)
    rising = _samples([1000 + 10 * t for t in range(11)])  # +100 on 1000 over the run
    assert soak.rss_growth_pct(rising, 0.0) == pytest.approx(10.0)
    noisy = _samples([1000, 1040, 980, 1020, 1000, 1010, 990])
    assert abs(soak.rss_growth_pct(noisy, 0.0)) < 5.0
    assert soak.rss_growth_pct(_samples([1000, 1000]), 0.0) is None
    verdict = _judge(bytes([0, 2, 2, 2]), _tally(), samples=rising)
    assert not _checks(verdict)["RSS growth after warm-up"]


def test_request_ids_only_from_the_marked_form():
    assert soak._request_id(b"/id-123") == 123
    assert soak._request_id(b"id-7") == 7
    for garbage in (b"123", b"", b"id-", b"id-12x", b"id--3", b"\x00id-", b"id-" + b"9" * 20):
        assert soak._request_id(garbage) is None, garbage
