#!/usr/bin/env python3
"""Run the tests: the full matrix (what CI runs), or a quick run for contributors.

    python3 tools/run_tests.py --quick     # this interpreter, as any user, <= 10 minutes
    python3 tools/run_tests.py             # every Python 3.9-3.15 found, 3.13t; CI
    python3 tools/run_tests.py [--pythons 3.11,3.13]
                               [--only compiled|pure|portable-core|asan|tsan] [pytest args ...]

``--quick``: this interpreter, a fresh venv under .venvs/ with the compiled core
required, the whole suite once but the bench's own tests (every behaviour test
runs on stdlib, pure and compiled in that one process: the ``impl`` fixture). Nothing is installed
system-wide and root is not needed: a test whose real component (haproxy,
systemd-socket-activate, openssl, a free-threaded CPython) is absent is skipped
with its reason, and pytest lists the skips at the end.

The full run: for each interpreter a fresh venv, ``pip install .[test]`` (built in a copy of the
sources under the venv: two lanes install at once) with the
compiled core required (a failed compile fails the run), then pytest on that
run's scope (SCOPES below: the whole suite on the oldest and newest Python and
the free-threaded one; the drop-in contract on the others; the install without
a compiler, with the sdist test; the core's own tests on the portable build). Interpreters are
looked up as pythonX.Y (X.Yt: free-threaded) on PATH and under ~/.pyenv/versions
(or $PYENV_ROOT/versions). Command line tools the tests drive (TOOLS: openssl,
haproxy, systemd-socket-activate) are installed with apt-get when missing, and
the run requires them (FASTSOCKSERVER_REQUIRE_TOOLS=1: a missing one fails its
tests instead of skipping them). Two runs go on at once (--lanes), each lane
taking the longest run still waiting and installing the next one it takes while
the current one's tests run; pytest's output is printed as it comes, each line
after its run's [version mode]. A run's few failures (RERUN_AT_MOST) run again
alone, once; the run passes if they pass then, listed as FLAKY under the final
table, where every failure's line is repeated.

FREE_THREADED ("3.13t") is a free-threaded CPython 3.13 run with the GIL off
(PYTHON_GIL unset: a module that did not declare itself safe would switch it
on, and tests/test_free_threading.py checks that it stays off). Where none is
found as above, tools/free_threaded_python.py builds one from Debian's source
package (cached in ~/.cache/fastsockserver; the first time ~6 minutes); if that
cannot be done here, the run fails.

Sanitizer runs, one kind each, not part of the default run: ``--only asan``
(the core built with AddressSanitizer and UBSan, on an interpreter run with
their runtimes preloaded) and ``--only tsan`` (the core built with
ThreadSanitizer, on FREE_THREADED's TSan build from
``tools/free_threaded_python.py --tsan``). Every process of the run writes its
sanitizer reports to files; any report fails the run, whatever pytest said.

The fuzz targets (tests/test_fuzz.py) run on one Python: the first run of the
whole suite where atheris (the ``fuzz`` extra) installs; the full run fails
when it installs on none. The 60 s soak (``bench --soak``, tests/test_soak.py)
runs on the newest Python's compiled run; every run of the whole suite soaks
10 s. The docs are built (strict) on the newest Python's compiled run.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import free_threaded_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
FREE_THREADED = "3.13t"
FUZZ_SECONDS_VAR = "FASTSOCKSERVER_FUZZ_SECONDS"  # 0: tests/test_fuzz.py does not fuzz
# tests/test_soak.py runs `bench --soak` this long where it is set: on the
# compiled run of the newest Python with the GIL (every run soaks 10 s, the
# free-threaded one too; 10 s is too short to judge RSS growth, and with the GIL
# off RSS follows the handler-thread count: see the README).
SOAK_SECONDS_VAR = "FASTSOCKSERVER_SOAK_SECONDS"
SOAK_SECONDS = "60"


# What an interpreter says it is: "3.13", or "3.14t" for a free-threaded build.
_VERSION_OF = ("import sys, sysconfig, venv; print('%d.%d%s' % (*sys.version_info[:2], "
               "'t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))")


def _works(python, version):
    try:
        out = subprocess.run([python, "-c", _VERSION_OF],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_python(version):
    candidates = [shutil.which("python" + version)]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    pattern = os.path.join(pyenv_root, "versions", version + ".*", "bin", "python" + version)
    candidates += sorted(glob.glob(pattern), reverse=True)
    for python in candidates:
        if python and _works(python, version):
            return python
    return None


# Command line tools the tests use as they are (real components, not mocks),
# and the Debian package that has each.
TOOLS = {"openssl": "openssl", "haproxy": "haproxy", "systemd-socket-activate": "systemd"}


def ensure_tools():
    """Install the missing TOOLS with apt-get where we can (root on Debian);
    False, with why, when one is still missing: the run then fails loudly."""
    missing = {tool: package for tool, package in TOOLS.items() if not shutil.which(tool)}
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        packages = sorted(set(missing.values()))
        print("installing " + ", ".join(packages) + " (apt-get)", flush=True)
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], stdout=subprocess.DEVNULL)
        missing = {tool: package for tool, package in missing.items() if not shutil.which(tool)}
    for tool, package in missing.items():
        print("MISSING: the tests need the {} command (Debian package {})".format(
            tool, package))
    return not missing


# ---------------------------------------------------------------- the portable-core run
# The compiled core as macOS and the BSDs compile it (poll instead of epoll, accept +
# fcntl instead of accept4, no MSG_NOSIGNAL), built on Linux by setup.py's switch and
# tested with the whole suite once more, on one Python (the newest found) to keep the
# run's time in check. The tests read the same variable (tests/test_portable_core.py
# fails if the core in use is not that build).
PORTABLE_CORE = "portable-core"
PORTABLE_CORE_ENV = {"FASTSOCKSERVER_PORTABLE_CORE": "1"}


# ---------------------------------------------------------------- what each run tests
# The whole suite runs on the oldest and the newest Python found and on the
# free-threaded one. The Pythons between run what differs from one Python to the
# next: the stdlib API fastsockserver mirrors (socketserver, http.server, the
# handlers' rfile/wfile), held to the stdlib of that Python by the parity tests
# and CPython's own suites, and the rules tests/test_python_versions.py checks
# version by version. The core is one C source whatever the Python; its
# behaviour (drain, limits, TLS, workers, robustness) is version-independent
# and the oldest and newest bracket the C-API it compiles against, so those
# tests running there lose nothing that a middle version alone could catch.
# The install without a compiler runs what depends on how the package was
# installed; the pure core itself runs in every run (the ``py`` parameter).
# The portable build's own code is the core's system calls: its tests.
WHOLE_SUITE = "whole suite"
SCOPES = {
    WHOLE_SUITE: [],
    "the drop-in contract": [
        "tests/test_api_parity.py", "tests/test_parity_construction.py",
        "tests/test_parity_handlers.py", "tests/test_parity_hooks.py",
        "tests/test_parity_mixins.py", "tests/test_parity_serving.py",
        "tests/test_cpython_suites.py", "tests/test_python_versions.py",
        "tests/test_install.py", "tests/test_http_headers.py", "tests/test_http_dates.py",
        "tests/test_stream_io.py", "tests/test_implementation.py",
        "tests/test_sourcecode.py",
    ],
    "the install without a compiler": [
        "tests/test_implementation.py", "tests/test_build.py", "tests/test_sdist.py",
        "tests/test_api_parity.py",
        "tests/test_parity_serving.py", "tests/test_install.py", "tests/test_cpython_suites.py",
        "tests/test_bench.py",
    ],
    "the core's own paths": [
        "tests/test_portable_core.py", "tests/test_loop_end_of_request.py",
        "tests/test_loop_handoff.py", "tests/test_loop_receive_path.py",
        "tests/test_core_contract.py", "tests/test_handler_threads.py",
        "tests/test_stream_io.py", "tests/test_robustness.py", "tests/test_slow_clients.py",
        "tests/test_parity_serving.py", "tests/test_service.py", "tests/test_fuzz.py",
    ],
}
PURE_SCOPE = "the install without a compiler"
PORTABLE_SCOPE = "the core's own paths"
MIDDLE_SCOPE = "the drop-in contract"
# The docs (docs/, tests/test_docs.py) are built strictly on one run: there the
# `docs` extra is installed and a missing Sphinx fails instead of skipping.
REQUIRE_DOCS_VAR = "FASTSOCKSERVER_REQUIRE_DOCS"
REQUIRE_TOOLS_VAR = "FASTSOCKSERVER_REQUIRE_TOOLS"  # tests/support.py require_tool()


class Run:
    """One interpreter and kind of install, what it tests, and its venv once made."""

    def __init__(self, version, python, mode, scope=WHOLE_SUITE, soak=False, docs=False,
                 fuzz=False):
        self.version, self.python, self.mode, self.scope = version, python, mode, scope
        self.soak, self.docs, self.fuzz = soak, docs, fuzz
        self.venv = os.path.join(ROOT, ".venvs", "py{}-{}".format(version, mode))
        self.vpython = os.path.join(self.venv, "bin", "python")
        self.env = None
        self.reports = None     # a sanitizer run's reports directory
        self.fuzzing = False    # atheris installed: test_fuzz fuzzes here
        self.install_log = []
        self.install_error = None
        self.install_seconds = 0.0
        self.failures = []      # pytest's FAILED/ERROR lines
        self.flaky = []         # those that passed when run again alone

    @property
    def name(self):
        return "Python {} ({}), {} install: {}".format(self.version, self.python, self.mode,
                                                        self.scope)


def run(cmd, env=None, log=None):
    """``cmd`` with its output captured; printed at once, or kept in ``log``."""
    line = "$ " + " ".join(cmd)
    if log is None:
        print(line, flush=True)
    else:
        log.append(line + "\n")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if log is not None and proc.returncode != 0:
        log.append(proc.stdout[-4000:])
    return proc


def _install_env(run_):
    env = dict(os.environ)
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    env.pop("PYTHONPATH", None)
    for name in PORTABLE_CORE_ENV:
        env.pop(name, None)
    env.pop("PYTHON_GIL", None)  # free-threaded: the GIL stays off unless a module asks for it
    if run_.mode == "pure":
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    else:
        env["FASTSOCKSERVER_REQUIRE_EXTENSIONS"] = "1"
    if run_.mode == "asan":
        env["FASTSOCKSERVER_SANITIZE"] = SANITIZERS
    if run_.mode == TSAN:
        # The interpreter itself is instrumented (it links the TSan runtime): the
        # options hold from the venv's creation on, and a report in the install
        # steps (pip runs on it) counts as any other.
        env["FASTSOCKSERVER_SANITIZE"] = "thread"
        run_.reports = os.path.join(ROOT, ".venvs", "py{}-{}-reports".format(
            run_.version, run_.mode))
        shutil.rmtree(run_.reports, ignore_errors=True)
        os.makedirs(run_.reports)
        env.update(tsan_env(run_.reports))
    if run_.mode == PORTABLE_CORE:
        env.update(PORTABLE_CORE_ENV)
    return env


# What a wheel is built from (setup.py, pyproject.toml and what they name).
BUILD_INPUTS = ["src", "setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"]


def build_source(run_):
    """A private copy of BUILD_INPUTS for ``run_``'s install to build in.

    pip builds a local project in its own tree, and setuptools and Cython write
    build/ there: two installs at once in one tree (the lanes') read each other's
    half-written files, and on one Python each can take the other's module
    (measured: a portable core in the compiled run, and a failed install)."""
    source = os.path.join(run_.venv, "source")
    for name in BUILD_INPUTS:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(source, name), ignore=shutil.ignore_patterns(
                "__pycache__", "*.so", "*.c", "*.html", "*.egg-info", "_build_failures.txt"))
        else:
            os.makedirs(source, exist_ok=True)
            shutil.copy(path, source)
    return source


def install(run_):
    """Make ``run_``'s venv and install the package into it; its output is kept
    in ``run_.install_log`` (this may run while another run's tests print)."""
    start = time.monotonic()
    log = run_.install_log
    shutil.rmtree(run_.venv, ignore_errors=True)
    run_.env = env = _install_env(run_)
    vpython = run_.vpython
    source = build_source(run_)
    steps = [
        [run_.python, "-m", "venv", run_.venv],
        [vpython, "-m", "pip", "install", "-q", "--upgrade", "pip"],
    ]
    # Free-threaded: wheels only, since sdists of some test dependencies
    # build Rust extensions, which cannot be fetched here.
    binary = ["--only-binary=:all:"] if run_.version.endswith("t") else []
    extras = "test" + (",docs" if run_.docs else "")
    if run_.fuzz:
        # --prefer-binary: an older atheris wheel (2.3.0 on 3.9), not a newer
        # sdist that needs a libFuzzer-enabled clang to build.
        steps.append([vpython, "-m", "pip", "install", "-q", "--prefer-binary", *binary,
                      "{}[{},fuzz]".format(source, extras)])
    else:
        steps.append([vpython, "-m", "pip", "install", "-q", *binary,
                      "{}[{}]".format(source, extras)])
    for step in steps:
        proc = run(step, env=env, log=log)
        if proc.returncode != 0 and run_.fuzz and step is steps[-1]:
            proc = run(step[:-1] + ["{}[{}]".format(source, extras)], env=env,
                       log=log)  # no atheris
        if proc.returncode != 0:
            run_.install_error = "install failed" + _reports_found(run_.reports)
            break
    if run_.fuzz and run_.install_error is None:
        run_.fuzzing = run([vpython, "-c", "import atheris"], env=env,
                           log=log).returncode == 0
    run_.install_seconds = time.monotonic() - start


def pytest_command(run_, pytest_args):
    """The pytest command line and its environment for an installed ``run_``."""
    env = dict(run_.env)
    env[FUZZ_SECONDS_VAR] = "0"
    env.pop(SOAK_SECONDS_VAR, None)
    env[REQUIRE_TOOLS_VAR] = "1"
    if run_.soak:
        env[SOAK_SECONDS_VAR] = os.environ.get(SOAK_SECONDS_VAR, SOAK_SECONDS)
    if run_.docs:
        env[REQUIRE_DOCS_VAR] = "1"
    if run_.fuzzing:
        env[FUZZ_SECONDS_VAR] = os.environ.get(FUZZ_SECONDS_VAR, "20")
    vpython = run_.vpython
    if run_.scope == WHOLE_SUITE:
        # Built, installed without a compiler and tested from the unpacked sdist: what
        # the package is does not depend on the interpreter, so once, with the install
        # without a compiler (PURE_SCOPE).
        pytest_args = ["--ignore=tests/test_sdist.py", *pytest_args]
    if run_.mode == "asan":
        run_.reports = os.path.join(run_.venv, "sanitizer-reports")
        os.makedirs(run_.reports, exist_ok=True)
        env.update(sanitizer_env(run_.reports))
        vpython = sanitized_python(run_.venv)
    # Test the installed package, not the source tree. Files given on the command
    # line replace the scope's.
    files = [] if any(arg.startswith("tests") for arg in pytest_args) else SCOPES[run_.scope]
    # The slowest tests of each run, for whoever keeps the run under its 30 minutes.
    return [vpython, "-m", "pytest", "-p", "no:cacheprovider", "--durations=8", *files,
            *pytest_args], env


_print_lock = threading.Lock()


def say(tag, text):
    """Print ``text`` (one or more lines) at once, each line after ``tag``: two
    lanes of runs print at the same time."""
    lines = text.splitlines() or [""]
    with _print_lock:
        for line in lines:
            sys.stdout.write(tag + line + "\n")
        sys.stdout.flush()


# The fuzz targets run on one run only: the first run of the whole suite to begin its
# tests with atheris installed claims them.
_fuzz_claim = {"version": None}
_fuzz_lock = threading.Lock()


def test_installed(run_, pytest_args, tag=""):
    """pytest in ``run_``'s venv, its output printed as it comes (each line after
    ``tag``); (ok, summary line)."""
    say(tag, "".join(run_.install_log))
    if run_.install_error:
        return False, run_.install_error
    if run_.fuzz:
        with _fuzz_lock:
            if run_.fuzzing and _fuzz_claim["version"] is None:
                _fuzz_claim["version"] = run_.version
            else:
                if not run_.fuzzing:
                    say(tag, "!" * 70 + "\natheris did not install for Python {}: no "
                        "fuzzing on it\n".format(run_.version) + "!" * 70)
                run_.fuzzing = False
    cmd, env = pytest_command(run_, pytest_args)
    say(tag, "$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    last = "(no output)"
    for line in proc.stdout:
        say(tag, line.rstrip("\n"))
        if line.strip():
            last = line.strip()
        if line.startswith(("FAILED ", "ERROR ")):
            # Repeated under the final table: CI keeps only the end of the output.
            run_.failures.append(line.strip())
    proc.wait()
    summary = last
    if run_.reports is not None:
        found = _reports_found(run_.reports)
        if found:
            return False, summary + found
        summary += "; 0 sanitizer reports"
    elif proc.returncode != 0 and 0 < len(run_.failures) <= RERUN_AT_MOST:
        if _passes_alone(run_, cmd, env, tag):
            run_.flaky, run_.failures = run_.failures, []
            return True, summary + "; FLAKY: the failed tests passed when run again alone"
    return proc.returncode == 0, summary


# A run with a few failures runs them again, alone, once (as CPython's regrtest
# does): the suite's timing tests share 2 cores with another lane. The run passes
# if they all pass then; the final table still lists them as flaky.
RERUN_AT_MOST = 3


def _passes_alone(run_, cmd, env, tag):
    """Run the tests of ``run_.failures`` again, in one pytest; whether all passed."""
    node_ids = [line.split(" ", 1)[1].split(" - ", 1)[0] for line in run_.failures]
    files = {node_id.split("::", 1)[0] for node_id in node_ids}
    if not all(os.path.isfile(os.path.join(ROOT, f)) for f in files):
        return False  # an error at collection, or an odd id: not a test to re-run
    rerun = [arg for arg in cmd if not arg.startswith("tests")] + node_ids
    say(tag, "re-running the failed tests alone:\n$ " + " ".join(rerun))
    proc = subprocess.run(rerun, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    say(tag, proc.stdout)
    return proc.returncode == 0


def _reports_found(reports):
    """Print the sanitizer reports in ``reports`` (every process of the run,
    subprocesses too, writes its own file there); "" when there are none, else
    "; N sanitizer report(s)" for the summary line."""
    if reports is None or not os.path.isdir(reports):
        return ""
    found = sorted(os.listdir(reports))
    for name in found:
        with open(os.path.join(reports, name), errors="replace") as report:
            print("=" * 30, name, "=" * 30, report.read(), sep="\n")
    return "; {} sanitizer report(s)".format(len(found)) if found else ""


# `--only asan`: the core built with these sanitizers (setup.py's
# FASTSOCKSERVER_SANITIZE), run on an interpreter that is not: their
# runtimes are preloaded, and every report is an error.
SANITIZERS = "address,undefined"


def sanitized_python(venv):
    """The venv's interpreter started with the sanitizer runtimes preloaded: a
    wrapper that is sys.executable, so the tests' Python subprocesses get them
    too, while other programs they start (curl, openssl) do not (a .pth file
    takes LD_PRELOAD out of each interpreter's environment once it is up)."""
    wrapper = os.path.join(venv, "bin", "python-sanitized")
    with open(wrapper, "w") as f:
        f.write('#!/bin/bash\nLD_PRELOAD="$SANITIZER_PRELOAD" '
                'exec -a "$0" "$(dirname "$0")/python" "$@"\n')
    os.chmod(wrapper, 0o755)
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "fastsockserver_sanitized.pth"), "w") as f:
        f.write("import os; os.environ.pop('LD_PRELOAD', None)\n")
    return wrapper


def sanitizer_env(reports):
    """LD_PRELOAD and the options of gcc's ASan and UBSan runtimes; reports go to
    files in ``reports`` (a process that exits nonzero on purpose in a test still
    leaves its report there)."""
    libraries = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run(["gcc", "-print-file-name=" + name], capture_output=True,
                              text=True).stdout.strip()
        if not os.path.isabs(path):
            raise SystemExit("the sanitizer runtime {} was not found (gcc)".format(name))
        libraries.append(path)
    common = "halt_on_error=1:log_path=" + os.path.join(reports, "report")
    return {
        "SANITIZER_PRELOAD": " ".join(libraries),
        # Python's own allocations at exit are not the core's: no leak check.
        "ASAN_OPTIONS": common + ":detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": common + ":print_stacktrace=1",
    }


# `--only tsan`: the core built with -fsanitize=thread, on the free-threaded
# interpreter built with ThreadSanitizer too (an uninstrumented interpreter's
# locking is invisible to TSan, which then reports races that are not).
TSAN = "tsan"


# Races in CPython 3.13 itself that its own suppressions file does not list yet.
TSAN_SUPPRESSIONS = os.path.join(ROOT, "tools", "tsan_suppressions.txt")


def tsan_env(reports):
    """TSAN_OPTIONS for the run: the first report ends the process with its
    report in a file under ``reports``. Suppressed: races in CPython itself only,
    CPython's own list (Tools/tsan/ of its source) and TSAN_SUPPRESSIONS, joined
    in one file beside ``reports``."""
    cpython = free_threaded_python.tsan_suppressions()
    if not os.path.exists(cpython):
        raise SystemExit("CPython's TSan suppressions file is missing: " + cpython)
    suppressions = reports.rstrip(os.sep) + "-suppressions.txt"
    with open(suppressions, "w") as out:
        for path in (cpython, TSAN_SUPPRESSIONS):
            with open(path) as f:
                out.write("# {}\n{}\n".format(path, f.read()))
    return {"TSAN_OPTIONS": ":".join([
        "halt_on_error=1", "log_path=" + os.path.join(reports, "report"),
        "suppressions=" + suppressions, "second_deadlock_stack=1"])}


def find_free_threaded():
    """FREE_THREADED's interpreter: one found as any other, else the one
    tools/free_threaded_python.py builds (raises its Unavailable, saying why)."""
    return find_python(FREE_THREADED) or free_threaded_python.free_threaded_python()


# Minutes each kind of run took in CI's last full run (2 lanes on 2 cores), to start
# the longest first (see run_all): the oldest Python's whole suite fuzzes too.
MINUTES = {WHOLE_SUITE: 12, MIDDLE_SCOPE: 3, PURE_SCOPE: 2, PORTABLE_SCOPE: 4}
FREE_THREADED_MINUTES = 13  # the whole suite with the GIL off


def minutes(run_):
    if run_.version == FREE_THREADED and run_.scope == WHOLE_SUITE:
        return FREE_THREADED_MINUTES
    return MINUTES.get(run_.scope, MINUTES[WHOLE_SUITE])


def plan_runs(options, found, free_threaded):
    """The runs of this invocation, in order (see SCOPES)."""
    if options.only:
        return [Run(v, p, options.only) for v, p in found + free_threaded]
    runs = []
    for i, (version, python) in enumerate(found):
        oldest, newest = i == 0, i == len(found) - 1
        if oldest or newest:
            runs.append(Run(version, python, "compiled", WHOLE_SUITE, soak=newest,
                            docs=newest))
        else:
            runs.append(Run(version, python, "compiled", MIDDLE_SCOPE))
    runs += [Run(v, p, "compiled") for v, p in free_threaded]
    if found:
        version, python = found[-1]
        if not options.no_pure:
            runs.append(Run(version, python, "pure", PURE_SCOPE))
        if not options.no_portable_core:
            runs.append(Run(version, python, PORTABLE_CORE, PORTABLE_SCOPE))
    # The fuzz targets on one whole-suite run where atheris installs (see test_installed).
    for run_ in runs:
        run_.fuzz = run_.mode == "compiled" and run_.scope == WHOLE_SUITE
    return runs


def run_lane(queue, take, pytest_args, results):
    """Runs taken from ``queue`` in turn until it is empty; the next one taken (and
    installed) while the current one's tests run."""
    run_ = take(queue)
    if run_ is None:
        return
    install(run_)
    while run_ is not None:
        start = time.monotonic()
        following = take(queue)
        installing = None
        if following is not None:
            installing = threading.Thread(target=install, args=(following,), daemon=True)
            installing.start()
        tag = "[{} {}] ".format(run_.version, run_.mode)
        say(tag, "=" * 60 + "\n" + run_.name + "\n" + "=" * 60)
        ok, summary = test_installed(run_, pytest_args, tag)
        seconds = time.monotonic() - start + run_.install_seconds
        results.append((run_, ok, summary, seconds))
        say(tag, "{} in {:.0f} s (install {:.0f} s): {}".format(
            "ok" if ok else "FAILED", seconds, run_.install_seconds, summary))
        if installing is not None:
            installing.join()
        run_ = following


def run_all(runs, pytest_args, lanes=1):
    """The runs, ``lanes`` at once, each lane taking the longest run still waiting
    (the suite's waits are bounded and measure what does not depend on load: two
    runs share 2 cores); [(run, ok, summary, seconds)] in the runs' order."""
    queue = sorted(runs, key=lambda r: -minutes(r))
    lock = threading.Lock()

    def take(queue):
        with lock:
            return queue.pop(0) if queue else None

    results = []
    threads = [threading.Thread(target=run_lane, args=(queue, take, pytest_args, results))
               for _ in range(max(1, lanes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.sort(key=lambda result: runs.index(result[0]))
    fuzzed = [_fuzz_claim["version"]] if _fuzz_claim["version"] else []
    return results, fuzzed


def report(results, fuzzed, runs, started):
    print("\n" + "=" * 70)
    passed = failed = 0
    for run_, ok, summary, seconds in results:
        print("Python {:5} {:13} {:4} {:6.0f}s  {}".format(
            run_.version, run_.mode, "ok" if ok else "FAIL", seconds, summary))
        for count, word in re.findall(r"(\d+) (passed|failed|errors?)", summary):
            if word == "passed":
                passed += int(count)
            else:
                failed += int(count)
        if not ok and not re.search(r"\d+ (failed|errors?)", summary):
            failed += 1  # an install failure or crash counts as a failure
    print("total: {} passed, {} failed; {:.0f} s".format(
        passed, failed, time.monotonic() - started))
    for run_, ok, _, _ in results:
        for failure in run_.failures:
            print("[{} {}] {}".format(run_.version, run_.mode, failure))
        for failure in run_.flaky:
            print("[{} {}] FLAKY (passed alone): {}".format(run_.version, run_.mode, failure))
    tried = [r.version for r in runs if r.fuzz]
    if fuzzed:
        print("fuzz targets: run on Python {}".format(fuzzed[0]))
    elif tried:
        print("FUZZ TARGETS DID NOT RUN: atheris installed on none of Python {}".format(
            ", ".join(tried)))
        return 1
    return 0 if all(ok for _, ok, _, _ in results) else 1


def quick(pytest_args):
    """--quick: this interpreter, its whole suite once, as any user."""
    started = time.monotonic()
    version = "%d.%d%s" % (sys.version_info[:2] + (
        "t" if __import__("sysconfig").get_config_var("Py_GIL_DISABLED") else "",))
    run_ = Run(version, sys.executable, "compiled")
    run_.venv = os.path.join(ROOT, ".venvs", "quick-py{}".format(version))
    run_.vpython = os.path.join(run_.venv, "bin", "python")
    print("=" * 70, run_.name + " (quick)", "=" * 70, sep="\n", flush=True)
    install(run_)
    sys.stdout.write("".join(run_.install_log))
    if run_.install_error:
        print(run_.install_error)
        return 1
    # The bench's own tests (minutes of load runs) are the full run's: the quick run
    # measured 634 s with them, over its 10 minutes.
    cmd, env = pytest_command(run_, ["--ignore=tests/test_bench.py", *pytest_args])
    env.pop(REQUIRE_TOOLS_VAR)  # absent components skip, with their reason
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print("quick run: {} in {:.0f} s (the full matrix: python3 tools/run_tests.py)".format(
        "passed" if rc == 0 else "FAILED", time.monotonic() - started))
    return rc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="this interpreter only, whole suite, nothing installed "
                        "system-wide; tests whose tool is absent are skipped")
    parser.add_argument("--pythons", default=",".join(VERSIONS + [FREE_THREADED]),
                        help="comma-separated versions to try (default: %(default)s)")
    parser.add_argument("--lanes", type=int, default=2,
                        help="runs going on at once (default %(default)s; each line of "
                        "output begins with its run's [version mode])")
    parser.add_argument("--no-pure", action="store_true", help="skip the pure-Python install run")
    parser.add_argument("--no-portable-core", action="store_true",
                        help="skip the run on the core built as on macOS/BSD")
    parser.add_argument("--only", choices=("compiled", "pure", PORTABLE_CORE, "asan", TSAN),
                        help="only this kind of install, on each Python given, whole suite "
                        "(CI's matrix; asan: the core built with AddressSanitizer and UBSan, "
                        "`make asan`; tsan: with ThreadSanitizer, on {} only, "
                        "`make tsan`)".format(FREE_THREADED))
    options, pytest_args = parser.parse_known_args()
    if options.quick:
        return quick(pytest_args)
    started = time.monotonic()
    if not ensure_tools():
        return 1
    failures = []
    wanted = options.pythons.split(",")
    if options.only == TSAN:
        for version in wanted:
            if version != FREE_THREADED:
                print("Python {}: skipped (tsan runs on {} only)".format(version, FREE_THREADED))
        wanted = [v for v in wanted if v == FREE_THREADED]
    found = [(v, find_python(v)) for v in wanted if v != FREE_THREADED]
    for version, python in found:
        if python is None:
            print("Python {}: not found, skipped".format(version))
    found = [(v, p) for v, p in found if p]
    free_threaded = []
    if FREE_THREADED in wanted:
        try:
            if options.only == TSAN:
                python = free_threaded_python.free_threaded_python(tsan=True)
            else:
                python = find_free_threaded()
            free_threaded.append((FREE_THREADED, python))
        except free_threaded_python.Unavailable as exc:
            print("FREE-THREADED PYTHON UNAVAILABLE: {}".format(exc), flush=True)
            failures.append(FREE_THREADED)
    if not found and not free_threaded:
        print("no Python 3.9-3.15 found")
        return 1
    runs = plan_runs(options, found, free_threaded)
    lanes = 1 if options.only else options.lanes
    print("the runs, in {} lane(s):".format(lanes),
          *("  " + r.name for r in runs), sep="\n", flush=True)
    results, fuzzed = run_all(runs, pytest_args, lanes)
    rc = report(results, fuzzed, runs, started)
    if failures:
        print("FAILED: free-threaded CPython unavailable (see above)")
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
