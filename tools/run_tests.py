#!/usr/bin/env python3
"""Run the test suite on every Python 3.9-3.15 found on this machine.

    python3 tools/run_tests.py [--pythons 3.11,3.13]
                               [--only compiled|pure|portable-core|asan|tsan] [pytest args ...]

For each interpreter: a fresh venv under .venvs/, ``pip install .[test]``
with the compiled core required (a failed compile fails the run), then
pytest. Behaviour tests run on stdlib, pure and compiled in that one run;
on the first interpreter the package is also installed pure
(FASTSOCKSERVER_NO_EXTENSIONS=1) and tested again, as a user without a
compiler would have it; and on the last one the core is built with the
system calls of macOS and the BSDs (see PORTABLE_CORE below) and tested
again. Interpreters are looked up as pythonX.Y (X.Yt: free-threaded) on PATH
and under ~/.pyenv/versions (or $PYENV_ROOT/versions). Command line tools the
tests drive (TOOLS: openssl, haproxy,
systemd-socket-activate) are installed with apt-get when missing.

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

The fuzz targets (tests/test_fuzz.py) run on one Python: the first compiled
install where atheris (the ``fuzz`` extra) installs; the run fails when it
installs on none. The 60 s soak (``bench --soak``, tests/test_soak.py) runs on
the newest Python's compiled run; every run soaks 10 s.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
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


def run(cmd, env=None, log=None):
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.append(proc.stdout)
    return proc


def test_one(python, version, mode, pytest_args, fuzzing, soak=False):
    """Install into a new venv and run pytest; returns (ok, summary line).
    ``fuzzing``: {"on": the version that fuzzes, or None; "failed": versions
    where atheris did not install}."""
    venv = os.path.join(ROOT, ".venvs", "py{}-{}".format(version, mode))
    shutil.rmtree(venv, ignore_errors=True)
    env = dict(os.environ)
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    env.pop("PYTHONPATH", None)
    for name in PORTABLE_CORE_ENV:
        env.pop(name, None)
    env.pop("PYTHON_GIL", None)  # free-threaded: the GIL stays off unless a module asks for it
    if mode == "pure":
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    else:
        env["FASTSOCKSERVER_REQUIRE_EXTENSIONS"] = "1"
    if mode == "asan":
        env["FASTSOCKSERVER_SANITIZE"] = SANITIZERS
    reports = None
    if mode == TSAN:
        # The interpreter itself is instrumented (it links the TSan runtime): the
        # options hold from the venv's creation on, and a report in the install
        # steps (pip runs on it) counts as any other.
        env["FASTSOCKSERVER_SANITIZE"] = "thread"
        reports = os.path.join(ROOT, ".venvs", "py{}-{}-reports".format(version, mode))
        shutil.rmtree(reports, ignore_errors=True)
        os.makedirs(reports)
        env.update(tsan_env(reports))
    if mode == PORTABLE_CORE:
        env.update(PORTABLE_CORE_ENV)
    vpython = os.path.join(venv, "bin", "python")
    steps = [
        [python, "-m", "venv", venv],
        [vpython, "-m", "pip", "install", "-q", "--upgrade", "pip"],
    ]
    # Free-threaded: wheels only, since sdists of some test dependencies
    # build Rust extensions, which cannot be fetched here.
    binary = ["--only-binary=:all:"] if version.endswith("t") else []
    try_fuzz = mode == "compiled" and fuzzing["on"] is None
    if try_fuzz:
        # --prefer-binary: an older atheris wheel (2.3.0 on 3.9), not a newer
        # sdist that needs a libFuzzer-enabled clang to build.
        steps.append([vpython, "-m", "pip", "install", "-q", "--prefer-binary", *binary,
                      ".[test,fuzz]"])
    else:
        steps.append([vpython, "-m", "pip", "install", "-q", *binary, ".[test]"])
    for step in steps:
        proc = run(step, env=env)
        if proc.returncode != 0 and try_fuzz and step is steps[-1]:
            print(proc.stdout[-2000:])
            proc = run(step[:-1] + [".[test]"], env=env)  # without atheris
        if proc.returncode != 0:
            print(proc.stdout[-4000:])
            return False, "install failed" + _reports_found(reports)
    env[FUZZ_SECONDS_VAR] = "0"
    env.pop(SOAK_SECONDS_VAR, None)
    if soak:
        env[SOAK_SECONDS_VAR] = os.environ.get(SOAK_SECONDS_VAR, SOAK_SECONDS)
    if try_fuzz:
        if run([vpython, "-c", "import atheris"], env=env).returncode == 0:
            fuzzing["on"] = version
            env[FUZZ_SECONDS_VAR] = os.environ.get(FUZZ_SECONDS_VAR, "20")
        else:
            fuzzing["failed"].append(version)
            print("!" * 70 + "\natheris did not install for Python {}: no fuzzing "
                  "on it\n".format(version) + "!" * 70, flush=True)
    if mode == "asan":
        reports = os.path.join(venv, "sanitizer-reports")
        os.makedirs(reports)
        env.update(sanitizer_env(reports))
        vpython = sanitized_python(venv)
    # Test the installed package, not the source tree.
    cmd = [vpython, "-m", "pytest", "-p", "no:cacheprovider"] + pytest_args
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    if reports is not None:
        found = _reports_found(reports)
        if found:
            return False, summary + found
        summary += "; 0 sanitizer reports"
    return proc.returncode == 0, summary


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythons", default=",".join(VERSIONS + [FREE_THREADED]),
                        help="comma-separated versions to try (default: %(default)s)")
    parser.add_argument("--no-pure", action="store_true", help="skip the pure-Python install run")
    parser.add_argument("--no-portable-core", action="store_true",
                        help="skip the run on the core built as on macOS/BSD")
    parser.add_argument("--only", choices=("compiled", "pure", PORTABLE_CORE, "asan", TSAN),
                        help="only this kind of install, on each Python given (CI's matrix; "
                        "asan: the core built with AddressSanitizer and UBSan, `make asan`; "
                        "tsan: with ThreadSanitizer, on {} only, `make tsan`)".format(
                            FREE_THREADED))
    options, pytest_args = parser.parse_known_args()
    if not ensure_tools():
        return 1
    results = []
    fuzzing = {"on": None, "failed": []}
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
            results.append((FREE_THREADED, options.only or "compiled", False,
                            "free-threaded CPython unavailable (see above)", 0.0))
    if not found and not free_threaded and not results:
        print("no Python 3.9-3.15 found")
        return 1
    if options.only:
        runs = [(v, p, options.only) for v, p in found + free_threaded]
    else:
        runs = [(v, p, "compiled") for v, p in found + free_threaded]
        if not options.no_pure and found:
            runs.append(found[-1] + ("pure",))
        if not options.no_portable_core and found:
            runs.append(found[-1] + (PORTABLE_CORE,))
    for version, python, mode in runs:
        start = time.monotonic()
        print("=" * 70, "Python {} ({}), {} install".format(version, python, mode), "=" * 70,
              sep="\n", flush=True)
        soak = mode == "compiled" and found and version == found[-1][0]
        ok, summary = test_one(python, version, mode, pytest_args, fuzzing, soak)
        results.append((version, mode, ok, summary, time.monotonic() - start))
    print("\n" + "=" * 70)
    passed = failed = 0
    for version, mode, ok, summary, seconds in results:
        print("Python {:5} {:13} {:4} {:6.0f}s  {}".format(
            version, mode, "ok" if ok else "FAIL", seconds, summary))
        for count, word in re.findall(r"(\d+) (passed|failed|errors?)", summary):
            if word == "passed":
                passed += int(count)
            else:
                failed += int(count)
        if not ok and not re.search(r"\d+ (failed|errors?)", summary):
            failed += 1  # an install failure or crash counts as a failure
    print("total: {} passed, {} failed".format(passed, failed))
    if fuzzing["on"]:
        print("fuzz targets: run on Python {}".format(fuzzing["on"]))
    elif fuzzing["failed"]:
        print("FUZZ TARGETS DID NOT RUN: atheris installed on none of Python {}".format(
            ", ".join(fuzzing["failed"])))
        return 1
    return 0 if all(ok for _, _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
