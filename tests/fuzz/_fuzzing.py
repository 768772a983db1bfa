"""What the fuzz targets (tests/fuzz/fuzz_*.py) share: the fuzzer's bytes read
as choices, the implementations compared with the stdlib, and main().

Each target defines ``test_one_input(data)``: it reads a scenario from the
bytes, runs it on the stdlib and on fastsockserver (pure, and compiled when
built) and raises AssertionError at any difference. Inputs are decoded here,
not with atheris.FuzzedDataProvider, so that a saved input (a seed, a
regression) replays without atheris, on every Python.

    python tests/fuzz/fuzz_rfile.py [libFuzzer options] [CORPUS_DIR ...]
    python tests/fuzz/fuzz_rfile.py --replay FILE ...     (no atheris needed)

A target that does not apply to this build (its module absent, say) exits
with NOT_APPLICABLE after saying why.
"""
import gc
import os
import sys
import types

FUZZ_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(FUZZ_DIR)
if TESTS_DIR not in sys.path:  # support.py, fuzz_reader.py, test_http_headers.py
    sys.path.insert(0, TESTS_DIR)

import fastsockserver  # noqa: E402
from support import load_pure_copy  # noqa: E402

NOT_APPLICABLE = 5  # not libFuzzer's: 77 (-error_exitcode) is a failing input
# The package, and its pure-Python copy (support.load_pure_copy).
LIBRARY = ("fastsockserver", "_fastsockserver_pure")


class Choices:
    """The fuzzer's bytes, consumed from the front as a scenario's choices.
    Past the end every choice is the first one: each input means something."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def pick(self, options):
        return options[self.byte() % len(options)]

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def rest(self):
        return self.take(len(self.data))


def implementations():
    """(name, module) for fastsockserver pure, and compiled when it is built."""
    found = [("py", load_pure_copy())]
    if fastsockserver.COMPILED:
        found.append(("c", fastsockserver))
    return found


def main(test_one_input, instrumented, what=None):
    """Fuzz ``test_one_input`` with atheris (libFuzzer options in sys.argv), or
    replay files with ``--replay``. ``instrumented``: the names of the modules
    (and their submodules) whose Python functions give coverage; ``what``: what
    test_one_input checks, when it is not every implementation against the stdlib."""
    if sys.argv[1:2] == ["--replay"]:
        for path in sys.argv[2:]:
            with open(path, "rb") as f:
                test_one_input(f.read())
        print("replayed {} input(s): no difference".format(len(sys.argv) - 2))
        return
    import atheris
    print("fuzzing: {}".format(what or "the stdlib against " + ", ".join(
        name for name, _ in implementations())), flush=True)
    # Coverage comes from Python code (the pure core, the stdlib's modules
    # involved); the compiled core is compared, not coverage-instrumented.
    # Only those modules: atheris.instrument_all() takes ~30 s to start.
    for function in [obj for obj in gc.get_objects() if type(obj) is types.FunctionType]:
        module = getattr(function, "__module__", None) or ""
        if module.split(".")[0] in instrumented:
            atheris.instrument_func(function)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
