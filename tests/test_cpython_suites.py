"""CPython's own tests of socketserver and of the modules built on it, run
against fastsockserver (tests/cpython_suite.py) in both modes."""
import os
import subprocess
import sys

import pytest

from fastsockserver import _env
from support import HERE

RUNNER = os.path.join(HERE, "cpython_suite.py")
MODULES = ["test.test_socketserver", "test.test_httpservers", "test.test_xmlrpc",
           "test.test_wsgiref"]
TIMEOUT = 180


def _has_test_support():
    out = subprocess.run([sys.executable, "-c", "import test.support"],
                         capture_output=True, timeout=60)
    return out.returncode == 0


HAS_TEST_SUPPORT = _has_test_support()


@pytest.mark.parametrize("mode", [pytest.param("c", marks=pytest.mark.c_extension), "py"])
@pytest.mark.parametrize("module", MODULES)
def test_cpython_suite(module, mode, request):
    if not HAS_TEST_SUPPORT:
        pytest.skip("this interpreter has no test.support (CPython's test package)")
    env = dict(os.environ)
    if mode == "py":
        env[_env.ENV_VAR] = "1"
    else:
        if request.config.getoption("--no-c-extensions") or _env.NO_EXTENSIONS:
            pytest.skip("compiled core switched off")
        env.pop(_env.ENV_VAR, None)
    try:
        out = subprocess.run([sys.executable, RUNNER, module], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT, cwd=HERE)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("{} did not finish within {} s:\n{}".format(
            module, TIMEOUT, (exc.stderr or b"")[-3000:]))
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-5000:]
    if "SKIP:" in out.stdout:
        pytest.skip(out.stdout.strip())
    expected = "compiled" if mode == "c" else "pure"
    assert "({}), Python".format(expected) in out.stdout, output[-2000:]
    last = [line for line in out.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("OK"), output[-3000:]
    assert "Ran 0 tests" not in out.stderr
