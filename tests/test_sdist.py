"""The sdist as a user gets it: complete, installable without a compiler, and honest about it.

One test, ~1 minute: builds the sdist of this tree, installs it into a fresh venv with a C
compiler that fails (``CC=/bin/false``), and checks that the install falls back to pure
Python and says so where a user looks (a warning on import, ``info``, ``bench``), then runs
a few test files from the unpacked sdist against that install. The build needs setuptools
and Cython: from the running environment when it has them (no index needed), else
through pip's build isolation.
"""
import glob
import importlib.util
import os
import subprocess
import sys
import tarfile
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run from the unpacked sdist: quick, and they import conftest.py, support.py and tools/.
SDIST_TESTS = ["tests/test_cli.py", "tests/test_parity_construction.py",
               "tests/test_api_parity.py"]
# What the tests need beyond the package, by name (the test extra also has the linters).
TEST_REQUIREMENTS = ["pytest>=7", "hypothesis>=6"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTSOCKSERVER_", "PIP_NO_")) and k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(args, timeout=600, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    return result


def _can_build_here():
    """The build backend's requirements are importable here: no build isolation needed."""
    if importlib.util.find_spec("Cython") is None:
        return False
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is not installed (it comes with the test extra)")
    out = tmp_path_factory.mktemp("sdist")
    args = [sys.executable, "-m", "build", "--sdist", "--outdir", str(out)]
    if _can_build_here():
        args.append("--no-isolation")
    result = _run(args + [ROOT], env=_env(FASTSOCKSERVER_NO_EXTENSIONS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = glob.glob(str(out / "fastsockserver-*.tar.gz"))
    return path


def test_sdist_is_complete(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = _run(["git", "ls-files"], cwd=ROOT)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: " + tracked.stderr.strip())
    wanted = {name for name in tracked.stdout.splitlines()
              if not name.startswith((".ci/", ".github/")) and name != ".gitignore"}
    assert sorted(wanted - names) == []
    assert "src/fastsockserver/_build_failures.txt" not in names


def test_failed_compile_installs_pure_python_says_so_and_its_tests_run(sdist, tmp_path):
    with tarfile.open(sdist) as archive:
        # (the "data" filter where this Python has it: 3.12+, and security releases before)
        archive.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                        else {}))
    [unpacked] = glob.glob(str(tmp_path / "fastsockserver-*"))
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    env = _env(CC="/bin/false")
    installed = _run([python, "-m", "pip", "install", "--no-cache-dir", sdist] + TEST_REQUIREMENTS,
                     env=env)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    imported = _run([python, "-c", "import fastsockserver; print(fastsockserver.COMPILED)"],
                    env=_env(), cwd=str(tmp_path))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "False\n"
    # Once per process, with the real reason and the way out of pip's wheel cache.
    assert imported.stderr.count("RuntimeWarning: fastsockserver runs its pure-Python core") == 1
    assert "the C compiler /bin/false exited with status 1" in imported.stderr
    assert "pip install --no-cache-dir --force-reinstall fastsockserver" in imported.stderr

    info = _run([python, "-m", "fastsockserver", "info"], env=_env(), cwd=str(tmp_path))
    assert info.returncode == 0, info.stderr
    assert ("core: pure Python: its compile failed when this package was installed "
            "(the C compiler /bin/false exited with status 1)") in info.stdout
    assert "circular import" not in info.stdout
    bench = _run([python, "-m", "fastsockserver", "bench", "--workloads", "connrate"],
                 env=_env(), cwd=str(tmp_path))
    assert bench.returncode == 1
    assert ("the load generator is absent: fastsockserver._loadgen is not built: its compile "
            "failed when this package was installed") in bench.stderr

    # The user asked for pure Python: no warning.
    quiet = _run([python, "-c", "import fastsockserver"],
                 env=_env(FASTSOCKSERVER_NO_EXTENSIONS="1"), cwd=str(tmp_path))
    assert quiet.returncode == 0 and quiet.stderr == ""

    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS],
                 env=_env(), cwd=unpacked)
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout.splitlines()[-1]
