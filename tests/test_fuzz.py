"""The fuzz targets of tests/fuzz/: each run under atheris for a bounded time
(FASTSOCKSERVER_FUZZ_SECONDS each, default 20; tools/run_tests.py runs them
on one Python), their seed corpora replayed without atheris, and the inputs
they found as regression tests."""
import importlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import time

import pytest

import fastsockserver
from support import WAIT, bounded, make_handler, outcome

FUZZ_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
sys.path.insert(0, FUZZ_DIR)

import run as fuzz_runner  # noqa: E402  (tests/fuzz/run.py)

TARGETS = fuzz_runner.TARGETS
SECONDS_VAR = "FASTSOCKSERVER_FUZZ_SECONDS"
# Targets that compare the compiled core only (the pure core runs the stdlib's code there).
COMPILED_ONLY = {"take"}


def target_module(request, name):
    if name in COMPILED_ONLY and not fastsockserver.COMPILED:
        pytest.skip("the compiled core is not built: fuzz_{} compares it alone".format(name))
    module = importlib.import_module("fuzz_" + name)
    if getattr(module, "ABSENT", None):  # fuzz_proxy without fastsockserver._proxy
        pytest.skip(module.ABSENT)
    directory = getattr(module, "DIRECTORY", None)  # fuzz_take's socket files
    if directory is not None:
        request.addfinalizer(lambda: shutil.rmtree(directory, ignore_errors=True))
    return module


def test_targets_found():
    assert set(TARGETS) >= {"rfile", "parse_headers", "take", "proxy", "framing",
                            "http_request"}, TARGETS


@pytest.mark.parametrize("name", TARGETS)
def test_seed_corpus_replays_without_difference(request, name):
    module = target_module(request, name)
    seeds = sorted(os.listdir(os.path.join(FUZZ_DIR, "corpus", name)))
    assert len(seeds) >= 3, "tests/fuzz/corpus/{} needs its seeds".format(name)
    for seed in seeds:
        with open(os.path.join(FUZZ_DIR, "corpus", name, seed), "rb") as f:
            bounded(module.test_one_input, f.read())


def test_targets_report_a_difference(request, monkeypatch):
    """A target whose implementation differs raises: the comparison is live."""
    module = target_module(request, "parse_headers")
    name, implementation, parse = module.PARSERS[0]

    def wrong(fp, _class=None):
        message = parse(fp, _class=_class)
        message["X-Added"] = "by the test"
        return message
    monkeypatch.setattr(module, "PARSERS", [(name, implementation, wrong)])
    with pytest.raises(AssertionError, match="differs from the stdlib"):
        module.test_one_input(bytes([0, 0, 0, 0]) + b"Host: a\r\n\r\n")


def test_http_request_target_reports_a_difference(request, monkeypatch):
    """fuzz_http_request's comparison is live too: a fast path whose header
    lines differ is caught."""
    module = target_module(request, "http_request")
    fast = module.MODULES[1][1].BaseHTTPRequestHandler
    original = fast.send_header

    def wrong(self, keyword, value):
        return original(self, keyword, value + " ")
    monkeypatch.setattr(fast, "send_header", wrong)
    with pytest.raises(AssertionError, match="differs from the stdlib"):
        module.test_one_input(bytes(5) + b"GET / HTTP/1.1\r\n\r\n")


def test_framing_target_reports_a_difference(request, monkeypatch):
    """fuzz_framing raises when strict framing and its rules disagree."""
    module = target_module(request, "framing")
    smuggling = (b"\x00POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n"
                 b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    module.test_one_input(smuggling)
    monkeypatch.setattr(module, "framing_violation", lambda lines, decodes_chunked=False: None)
    with pytest.raises(AssertionError, match="differs from the stdlib"):
        module.test_one_input(smuggling)


def _atheris_expected():
    """Where atheris has wheels: CPython on x86_64 Linux, with the GIL."""
    return (sys.platform == "linux" and platform.machine() == "x86_64"
            and platform.python_implementation() == "CPython"
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_for_a_bounded_time(request, name, tmp_path, capsys):
    seconds = int(os.environ.get(SECONDS_VAR, "20"))
    if seconds == 0:
        pytest.skip("{}=0: the fuzz targets run on another Python of this run".format(
            SECONDS_VAR))
    target_module(request, name)
    try:
        import atheris  # noqa: F401
    except ImportError:
        if not _atheris_expected():
            pytest.skip("atheris has no wheel for this platform/build: {} {}".format(
                platform.machine(), sys.version.split()[0]))
        pytest.fail("atheris is not installed: the fuzz targets cannot run "
                    "(pip install -e '.[test,fuzz]'; or {}=0 to leave them out)".format(
                        SECONDS_VAR))
    proc = subprocess.run(
        [sys.executable, os.path.join(FUZZ_DIR, "run.py"), "--seconds", str(seconds),
         "--work", str(tmp_path), name],
        capture_output=True, text=True, timeout=seconds + fuzz_runner.STARTUP_ALLOWANCE + 60)
    with capsys.disabled():  # the executions and coverage, in the run's output
        sys.stdout.write("\n" + proc.stdout.strip().splitlines()[-1] + "\n"
                         if proc.stdout.strip() else "\n")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


# ------------------------------------------------------------ what the fuzzers found

def test_rfile_found_empty_readinto_on_reset_connection():
    # fuzz_rfile, first minute: the compiled core's readinto of an empty
    # buffer on a reset connection raised ECONNRESET (then read b"") where
    # the stdlib returns 0 (and then raises ECONNRESET on the next read).
    importlib.import_module("fuzz_rfile").test_one_input(bytes([3, 1, 10, 1, 0, 0, 0, 0, 0]))


@pytest.mark.parametrize("wire", [b"Content-Type:multipart/;boundary\r--",
                                  b"Content-Type:multipart/\xff;boundary\r--"])
def test_parse_headers_found_made_up_boundary(wire):
    # fuzz_parse_headers, after 6 minutes, then again (minimized): the
    # comparison itself differed, stdlib against stdlib, as as_string() makes
    # up a random boundary for such a multipart message, also inside an
    # encoded header (the second) (test_http_headers.described).
    importlib.import_module("fuzz_parse_headers").test_one_input(bytes([0, 0, 0, 0]) + wire)


def _empty_readinto(mod, what):
    reader, peer = socket.socketpair()
    handler = make_handler(mod, reader)
    try:
        if what == "reset":
            reader.sendall(b"unread")
            peer.close()
        elif what == "timeout":
            reader.settimeout(WAIT / 10)
        # "nothing": a blocking socket with nothing to read
        return [outcome(lambda: handler.rfile.raw.readinto(bytearray(0))),
                outcome(lambda: handler.rfile.raw.readinto(memoryview(bytearray(4))[:0]))]
    finally:
        handler.rfile.close()
        reader.close()
        peer.close()


@pytest.mark.parametrize("what", ["reset", "nothing", "timeout"])
def test_empty_readinto_returns_at_once_as_stdlib(impl, what):
    # socket.recv_into makes no system call for an empty buffer: it neither
    # waits (the compiled core waited for data on a blocking socket) nor
    # reports the connection's pending error.
    assert bounded(_empty_readinto, impl, what) == [("ok", 0), ("ok", 0)]


def _empty_readinto_with_deadlines(mod, when):
    reader, peer = socket.socketpair()
    rfile = mod._stream_io.make_reader(reader, idle_timeout=60, headers_timeout=60)
    try:
        if when == "inside a request":  # the head's deadline runs
            peer.sendall(b"G")
            assert rfile.raw.readinto(bytearray(1)) == 1
        started = time.monotonic()
        result = rfile.raw.readinto(bytearray(0))
        return result, time.monotonic() - started < WAIT
    finally:
        rfile.close()
        reader.close()
        peer.close()


@pytest.mark.parametrize("when", ["between requests", "inside a request"])
def test_empty_readinto_returns_at_once_with_idle_and_headers_timeouts(fast_impl, when):
    # The same as without them (the stdlib has none): the pure core waited
    # for data there, the compiled core did not.
    assert bounded(_empty_readinto_with_deadlines, fast_impl, when) == (0, True)
