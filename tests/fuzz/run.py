"""Run the fuzz targets (tests/fuzz/fuzz_*.py) under atheris, each for a bounded time.

    python tests/fuzz/run.py [--seconds 20] [--work DIR] [TARGET ...]

Each target starts from its checked-in seed corpus (tests/fuzz/corpus/TARGET)
and keeps what it finds in DIR/TARGET (default build/fuzz/, not in git); a
failing input is written to DIR/TARGET-artifacts/. One line per target:
executions, coverage and features (libFuzzer's cov/ft, of the Python code
atheris instruments), corpus size, and crash or not (or not applicable to
this build, and why). Exit status 1 when a target failed, 2 when atheris is
not installed (said loudly: nothing ran).
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import time

FUZZ_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, FUZZ_DIR)
import _fuzzing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(FUZZ_DIR))
TARGETS = sorted(os.path.basename(path)[len("fuzz_"):-len(".py")]
                 for path in glob.glob(os.path.join(FUZZ_DIR, "fuzz_*.py")))
# Instrumenting every loaded function takes seconds before the first input.
STARTUP_ALLOWANCE = 240
STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def run_target(target, seconds, work):
    corpus = os.path.join(work, target)
    artifacts = os.path.join(work, target + "-artifacts")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    log_path = os.path.join(work, target + ".log")
    cmd = [sys.executable, os.path.join(FUZZ_DIR, "fuzz_{}.py".format(target)),
           "-max_total_time={}".format(seconds), "-timeout=10", "-rss_limit_mb=2048",
           "-print_final_stats=1", "-artifact_prefix={}/".format(artifacts),
           corpus, os.path.join(FUZZ_DIR, "corpus", target)]
    start = time.monotonic()
    with open(log_path, "w") as log:
        try:
            returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=seconds + STARTUP_ALLOWANCE).returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    with open(log_path) as log:
        output = log.read()
    statuses = STATUS.findall(output)
    execs = re.search(r"stat::number_of_executed_units: (\d+)", output)
    execs = execs.group(1) if execs else (statuses[-1][0] if statuses else "0")
    cov, ft, corp = statuses[-1][1:] if statuses else ("?", "?", "?")
    if returncode == _fuzzing.NOT_APPLICABLE:
        print("{:14} SKIPPED, not applicable here: {}".format(
            target, output.strip().splitlines()[-1]), flush=True)
        return True
    ok = returncode == 0
    print("{:14} {:>8} executions in {:4.0f} s, cov {}, ft {}, corpus {}: {}".format(
        target, execs, time.monotonic() - start, cov, ft, corp,
        "no crash" if ok else "FAILED ({}), log {}".format(returncode, log_path)), flush=True)
    if not ok:
        print("\n".join(line for line in output.splitlines()[-60:]
                        if not line.startswith(("INFO:", "WARNING:"))))
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="per target (%(default)s)")
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "fuzz"))
    parser.add_argument("targets", nargs="*", help="of: " + ", ".join(TARGETS))
    options = parser.parse_args(argv)
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error("no such target: " + ", ".join(sorted(unknown)))
    options.targets = options.targets or TARGETS
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("!" * 70 + "\nFUZZING DID NOT RUN: atheris is not installed for {} ({}).\n"
              "pip install atheris (wheels: CPython on x86_64 Linux)\n".format(
                  sys.executable, sys.version.split()[0]) + "!" * 70)
        return 2
    print("fuzzing {} for {} s each, Python {}".format(
        ", ".join(options.targets), options.seconds, sys.version.split()[0]), flush=True)
    results = [run_target(target, options.seconds, options.work) for target in options.targets]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
