"""Habits as tests: the linters over the sources, and the public stub held to the runtime.

The tools come with the ``test`` extra; their settings live in pyproject.toml.
"""
import os
import subprocess
import sys

import pytest

from support import TSAN_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_SOURCES = ["src", "tests", "bench", "tools", "docs", "setup.py"]


def _run(*args):
    env = dict(os.environ)
    # cython-lint runs pycodestyle from PATH: the one beside this interpreter.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_ruff_lint_and_import_order():
    result = _run("-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                  *PYTHON_SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(sys.version_info < (3, 10), reason=(
    "cython-lint for Python 3.9 (0.18) fails on Cython 3.3's parse tree; the sources "
    "are linted by the runs on 3.10+"))
def test_cython_lint():
    sources = sorted(os.path.join(folder, name) for folder in ("src", "src/fastsockserver")
                     for name in os.listdir(os.path.join(ROOT, folder))
                     if name.endswith((".pyx", ".pxd")))
    assert "src/_core.pyx" in sources and "src/fastsockserver/_core.pxd" in sources
    result = _run("-c", "import sys; from cython_lint.cython_lint import main; sys.exit(main())",
                  *sources)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(TSAN_RUN, reason="mypy on the instrumented interpreter outlasts its 300 s; "
                    "every other lane runs it")
def test_the_stub_matches_the_runtime():
    """mypy.stubtest: src/fastsockserver/__init__.pyi against the installed package."""
    result = _run("-m", "mypy.stubtest", "fastsockserver",
                  "--mypy-config-file", os.path.join(ROOT, "pyproject.toml"),
                  "--allowlist", os.path.join(ROOT, "tests", "stubtest_allowlist.txt"))
    assert result.returncode == 0, result.stdout + result.stderr
