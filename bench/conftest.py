"""Micro benchmarks (pytest-benchmark) of the hot paths on stdlib / pure / compiled.

Run: ``pytest bench/`` (add ``--benchmark-only``, ``--benchmark-compare`` as usual).
The ``impl`` fixture gives the socketserver module under test; pure mode is a
second copy of the package loaded with FASTSOCKSERVER_NO_EXTENSIONS=1, as in
tests/conftest.py, so the three run in one process.
"""
import importlib.util
import os
import socketserver as stdlib_socketserver
import sys

import pytest

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark")

import fastsockserver  # noqa: E402
from fastsockserver import _env  # noqa: E402

PURE_COPY_NAME = "_fastsockserver_pure"   # the same name as tests/conftest.py uses


def load_pure_copy():
    """fastsockserver imported again, under another name, in pure-Python mode."""
    if PURE_COPY_NAME in sys.modules:
        return sys.modules[PURE_COPY_NAME]
    package_dir = os.path.dirname(fastsockserver.__file__)
    spec = importlib.util.spec_from_file_location(
        PURE_COPY_NAME, os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir])
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get(_env.ENV_VAR)
    os.environ[_env.ENV_VAR] = "1"
    sys.modules[PURE_COPY_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PURE_COPY_NAME]
        raise
    finally:
        if saved is None:
            del os.environ[_env.ENV_VAR]
        else:
            os.environ[_env.ENV_VAR] = saved
    assert not module.COMPILED
    return module


@pytest.fixture(params=["stdlib", "pure", "compiled"])
def impl(request):
    """The socketserver module under test."""
    if request.param == "stdlib":
        return stdlib_socketserver
    if request.param == "pure":
        return load_pure_copy()
    if _env.NO_EXTENSIONS or not fastsockserver.COMPILED:
        pytest.skip("the compiled core is not in use")
    return fastsockserver


@pytest.fixture
def bench(benchmark, request):
    """``benchmark`` grouped by test function, so the three implementations sit together."""
    benchmark.group = request.node.originalname
    return benchmark
