#!/usr/bin/env python3
"""Run the test suite on every Python 3.9-3.13 found on this machine.

    python3 tools/run_tests.py [--pythons 3.11,3.13] [--only compiled|pure] [pytest args ...]

For each interpreter: a fresh venv under .venvs/, ``pip install .[test]``
with the compiled core required (a failed compile fails the run), then
pytest. Behaviour tests run on stdlib, pure and compiled in that one run;
on the first interpreter the package is also installed pure
(FASTSOCKSERVER_NO_EXTENSIONS=1) and tested again, as a user without a
compiler would have it. Interpreters are looked up as pythonX.Y on PATH and
under ~/.pyenv/versions (or $PYENV_ROOT/versions). Command line tools the
tests drive (TOOLS: openssl) are installed with apt-get when missing.
The fuzz targets (tests/test_fuzz.py) run on one Python: the first compiled
install where atheris (the ``fuzz`` extra) installs; the run fails when it
installs on none.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
FUZZ_SECONDS_VAR = "FASTSOCKSERVER_FUZZ_SECONDS"  # 0: tests/test_fuzz.py does not fuzz


def _works(python, version):
    try:
        out = subprocess.run(
            [python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
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
TOOLS = {"openssl": "openssl"}


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


def run(cmd, env=None, log=None):
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.append(proc.stdout)
    return proc


def test_one(python, version, mode, pytest_args, fuzzing):
    """Install into a new venv and run pytest; returns (ok, summary line).
    ``fuzzing``: {"on": the version that fuzzes, or None; "failed": versions
    where atheris did not install}."""
    venv = os.path.join(ROOT, ".venvs", "py{}-{}".format(version, mode))
    shutil.rmtree(venv, ignore_errors=True)
    env = dict(os.environ)
    env.pop("FASTSOCKSERVER_NO_EXTENSIONS", None)
    env.pop("PYTHONPATH", None)
    if mode == "pure":
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    else:
        env["FASTSOCKSERVER_REQUIRE_EXTENSIONS"] = "1"
    vpython = os.path.join(venv, "bin", "python")
    steps = [
        [python, "-m", "venv", venv],
        [vpython, "-m", "pip", "install", "-q", "--upgrade", "pip"],
    ]
    try_fuzz = mode == "compiled" and fuzzing["on"] is None
    if try_fuzz:
        steps.append([vpython, "-m", "pip", "install", "-q", ".[test,fuzz]"])
    else:
        steps.append([vpython, "-m", "pip", "install", "-q", ".[test]"])
    for step in steps:
        proc = run(step, env=env)
        if proc.returncode != 0 and try_fuzz and step is steps[-1]:
            print(proc.stdout[-2000:])
            proc = run(step[:-1] + [".[test]"], env=env)  # without atheris
        if proc.returncode != 0:
            print(proc.stdout[-4000:])
            return False, "install failed"
    env[FUZZ_SECONDS_VAR] = "0"
    if try_fuzz:
        if run([vpython, "-c", "import atheris"], env=env).returncode == 0:
            fuzzing["on"] = version
            env[FUZZ_SECONDS_VAR] = os.environ.get(FUZZ_SECONDS_VAR, "20")
        else:
            fuzzing["failed"].append(version)
            print("!" * 70 + "\natheris did not install for Python {}: no fuzzing "
                  "on it\n".format(version) + "!" * 70, flush=True)
    # Test the installed package, not the source tree.
    cmd = [vpython, "-m", "pytest", "-p", "no:cacheprovider"] + pytest_args
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    return proc.returncode == 0, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythons", default=",".join(VERSIONS),
                        help="comma-separated versions to try (default: %(default)s)")
    parser.add_argument("--no-pure", action="store_true", help="skip the pure-Python install run")
    parser.add_argument("--only", choices=("compiled", "pure"),
                        help="only this kind of install, on each Python given (CI's matrix)")
    options, pytest_args = parser.parse_known_args()
    if not ensure_tools():
        return 1
    results = []
    fuzzing = {"on": None, "failed": []}
    found = [(v, find_python(v)) for v in options.pythons.split(",")]
    for version, python in found:
        if python is None:
            print("Python {}: not found, skipped".format(version))
    found = [(v, p) for v, p in found if p]
    if not found:
        print("no Python 3.9-3.13 found")
        return 1
    if options.only:
        runs = [(v, p, options.only) for v, p in found]
    else:
        runs = [(v, p, "compiled") for v, p in found]
        if not options.no_pure:
            runs.append(found[-1] + ("pure",))
    for version, python, mode in runs:
        start = time.monotonic()
        print("=" * 70, "Python {} ({}), {} install".format(version, python, mode), "=" * 70,
              sep="\n", flush=True)
        ok, summary = test_one(python, version, mode, pytest_args, fuzzing)
        results.append((version, mode, ok, summary, time.monotonic() - start))
    print("\n" + "=" * 70)
    passed = failed = 0
    for version, mode, ok, summary, seconds in results:
        print("Python {:5} {:8} {:4} {:6.0f}s  {}".format(
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
