"""Micro benchmarks (pytest-benchmark) of the hot paths on stdlib / pure / compiled.

Run: ``pytest bench/`` (add ``--benchmark-only``, ``--benchmark-compare`` as usual).
The ``impl`` fixture gives the socketserver module under test; pure mode is a
second copy of the package loaded with FASTSOCKSERVER_NO_EXTENSIONS=1, as in
tests/conftest.py, so the three run in one process.
"""
import os
import socketserver as stdlib_socketserver
import sys

import pytest

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark")

import fastsockserver  # noqa: E402
from fastsockserver import _env  # noqa: E402

# The pure-Python copy of the package, loaded as the tests load it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from support import load_pure_copy  # noqa: E402


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
