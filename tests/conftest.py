"""Fixtures: ``impl`` runs a test on the stdlib ``socketserver`` (id ``stdlib``),
fastsockserver in pure Python (``py``) and on its compiled core (``c``);
``fast_impl`` on the last two only; ``harness`` and ``blocking`` for servers.

The pure implementation is a second copy of the package loaded with
FASTSOCKSERVER_NO_EXTENSIONS=1, so both modes run in one process.
``--no-c-extensions`` (or the variable itself) skips the ``c`` runs.
"""
import queue
import socketserver as stdlib_socketserver
import threading

import pytest

import fastsockserver
from fastsockserver import _env
from support import TSAN_RUN, Harness, load_pure_copy

# Under ThreadSanitizer (tools/run_tests.py --only tsan) the tests of the stdlib and of
# the pure-Python copy are left out: they run no C of ours (CPython's own CI runs its
# tests under TSan), and the instrumented interpreter runs them 5-15 times slower.
_NOT_UNDER_TSAN = ("stdlib", "py")


def pytest_collection_modifyitems(config, items):
    if not TSAN_RUN:
        return
    kept, left_out = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(isinstance(value, str) and value in _NOT_UNDER_TSAN
               for value in params.values()):
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_addoption(parser):
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="skip the tests of the compiled core")


def _compiled_module(config):
    if config.getoption("--no-c-extensions") or _env.NO_EXTENSIONS:
        pytest.skip("compiled core switched off (--no-c-extensions or {})".format(_env.ENV_VAR))
    if not fastsockserver.COMPILED:
        pytest.skip("the compiled core is not built (test_default_is_compiled fails for this)")
    return fastsockserver


@pytest.fixture(params=[
    pytest.param("stdlib"),
    pytest.param("py"),
    pytest.param("c", marks=pytest.mark.c_extension),
])
def impl(request):
    """The socketserver module under test: stdlib, fastsockserver pure, or compiled."""
    if request.param == "stdlib":
        return stdlib_socketserver
    if request.param == "py":
        return load_pure_copy()
    return _compiled_module(request.config)


@pytest.fixture(params=[
    pytest.param("py"),
    pytest.param("c", marks=pytest.mark.c_extension),
])
def fast_impl(request):
    """fastsockserver only (pure, compiled): for what the stdlib lacks or does differently."""
    if request.param == "py":
        return load_pure_copy()
    return _compiled_module(request.config)


@pytest.fixture
def harness():
    """A Harness whose servers, threads, clients and directories are cleaned up
    after the test, even when an assertion failed (every wait is bounded)."""
    h = Harness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def blocking():
    """What blocking_handler() needs: its handler threads block until ``release``."""
    ns = type("NS", (), {})()
    ns.started = queue.Queue()
    ns.release = threading.Event()
    ns.finished = []
    try:
        yield ns
    finally:
        ns.release.set()
