"""The product builds where the load generator cannot; ``info`` reports the build; one version.

test_core_builds_without_the_load_generator builds a wheel from a copy of the sources
with the load generator's platform test forced false (FASTSOCKSERVER_NO_LOADGEN=1, as on
macOS) and the core required, then imports it: ~30-60 s, once per test run.
"""
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import run_tests  # tools/, on the path once conftest.py has imported support

import fastsockserver
from fastsockserver import _env
from support import PORTABLE_RUN, TSAN_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = run_tests.BUILD_INPUTS


def _python(*args, env=None, cwd=None, timeout=60):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FASTSOCKSERVER_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_one_version():
    """The version is written once (fastsockserver.__version__); the metadata reads it."""
    assert importlib.metadata.version("fastsockserver") == fastsockserver.__version__
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject
    assert fastsockserver.__version__ not in pyproject


def test_info_reports_the_build():
    result = _python("-m", "fastsockserver", "info", env=_clean_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "fastsockserver " + fastsockserver.__version__
    report = dict(line.split(": ", 1) for line in lines[1:])
    assert set(report) == {"python", "platform", "core", "core features", "wait",
                           "system calls", "load generator (bench)"}
    assert sys.executable in report["python"]
    if fastsockserver.COMPILED:
        assert report["core"].startswith("compiled (") and "_core" in report["core"]
        assert "receive" in report["core features"]
    if sys.platform.startswith("linux") and fastsockserver.COMPILED:
        assert report["load generator (bench)"] == "available"
        if PORTABLE_RUN:
            assert report["wait"] == "poll()"
            assert report["system calls"] == (
                "wait poll, accept accept+fcntl, send no MSG_NOSIGNAL, share sched_yield "
                "(portable core: "
                "the macOS/BSD path, FASTSOCKSERVER_PORTABLE_CORE)")
        else:
            assert report["wait"].startswith("epoll")
            share = ("sched_yield" if sysconfig.get_config_var("Py_GIL_DISABLED")
                     else "futex hand-over")
            assert report["system calls"] == (
                "wait epoll, accept accept4, send MSG_NOSIGNAL, share " + share)


def test_info_says_why_pure():
    result = _python("-m", "fastsockserver", "info", env=_clean_env(**{_env.ENV_VAR: "1"}))
    assert result.returncode == 0, result.stderr
    assert "core: pure Python: {} is set".format(_env.ENV_VAR) in result.stdout
    assert "core features: none" in result.stdout
    assert "wait: PollSelector" in result.stdout
    assert ("system calls: wait PollSelector, accept socket.accept(), send socket.sendall(), "
            "share none "
            "(the stdlib's)") in result.stdout


def test_info_rejects_arguments():
    result = _python("-m", "fastsockserver", "info", "--bogus", env=_clean_env())
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.skipif(_env.NO_EXTENSIONS, reason="a pure-Python test run builds nothing")
def test_core_builds_without_the_load_generator(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(
                "*.so", "*.c", "*.html", "__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, source / name)
    env = _clean_env(FASTSOCKSERVER_NO_LOADGEN="1", FASTSOCKSERVER_REQUIRE_EXTENSIONS="1")
    built = _python("-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"),
                    str(source), env=env, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # Cython finds the core's declarations where it expects them (src/fastsockserver/_core.pxd
    # on setup.py's include path), not by the deprecated dotted file name.
    assert "Cythonizing" in built.stdout + built.stderr or "_core.pyx" in built.stdout
    assert "Dotted filenames" not in built.stdout + built.stderr
    # No warning in a normal build, Cython's or the C compiler's, for the core.
    warnings = [line for line in (built.stdout + built.stderr).splitlines()
                if re.search(r"\bwarning\b", line, re.IGNORECASE)
                and ("_core" in line or "critical_section" in line)]
    assert not warnings, warnings
    [wheel] = glob.glob(str(tmp_path / "dist" / "*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert [n for n in names if n.startswith("fastsockserver/_core.") and n.endswith(".so")]
    assert not [n for n in names if "_loadgen" in n]
    env = _clean_env(PYTHONPATH=str(tmp_path / "site"))
    probe = _python("-c", "import fastsockserver, fastsockserver._core as c; "
                    "assert fastsockserver.COMPILED; print(c.__file__)",
                    env=env, cwd=str(tmp_path))
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(tmp_path / "site"))
    info = _python("-m", "fastsockserver", "info", env=env, cwd=str(tmp_path))
    assert "load generator (bench): absent: fastsockserver._loadgen is not built" in info.stdout
    bench = _python("-m", "fastsockserver", "bench", "--workloads", "connrate",
                    env=env, cwd=str(tmp_path))
    assert bench.returncode == 1
    assert "the load generator is absent" in bench.stderr


def test_each_install_of_the_full_run_builds_in_a_tree_of_its_own(tmp_path, monkeypatch):
    """Two lanes install at once: each pip builds in a copy of the sources under its
    own venv, never in this tree (where a portable and a Linux build on one Python
    took each other's module), and the copy holds no build output."""
    commands = []

    class Done:
        returncode = 0
        stdout = ""

    monkeypatch.setattr(run_tests, "run", lambda cmd, env=None, log=None: (
        commands.append(cmd), Done())[1])
    runs = []
    for mode in ("compiled", run_tests.PORTABLE_CORE):
        run_ = run_tests.Run("3.13", sys.executable, mode)
        run_.venv = str(tmp_path / mode)
        run_tests.install(run_)
        assert run_.install_error is None
        runs.append(run_)
    installs = [cmd[-1] for cmd in commands if cmd[-1].endswith("]")]
    sources = [os.path.join(run_.venv, "source") for run_ in runs]
    assert [target.split("[")[0] for target in installs] == sources
    for source in sources:
        for name in SOURCES:
            assert os.path.exists(os.path.join(source, name)), name
        built = [os.path.join(top, name) for top, dirs, names in os.walk(source)
                 for name in names + dirs
                 if name.endswith((".so", ".c", ".egg-info")) or name == "__pycache__"]
        assert built == []


@pytest.mark.skipif(not os.environ.get("SANITIZER_PRELOAD"),
                    reason="only in the sanitizer run (tools/run_tests.py --only asan)")
def test_sanitizer_run_has_an_instrumented_core_and_the_runtimes():
    """`--only asan` tests what it says: the core calls into ASan, whose runtime
    (and UBSan's) this interpreter loaded; reports would stop the process."""
    import fastsockserver
    from fastsockserver import _core
    assert fastsockserver.COMPILED
    with open(_core.__file__, "rb") as f:
        core = f.read()
    assert b"__asan_report" in core and b"__ubsan_handle" in core
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert "libasan" in maps and "libubsan" in maps
    assert "LD_PRELOAD" not in os.environ  # not passed on to curl, openssl, haproxy


@pytest.mark.skipif(not TSAN_RUN,
                    reason="only in the ThreadSanitizer run (tools/run_tests.py --only tsan)")
def test_tsan_run_has_an_instrumented_core_and_interpreter():
    """`--only tsan` tests what it says: the core calls into TSan, on a free-threaded
    interpreter with the GIL off that is built with TSan itself (it loaded the runtime,
    not a preload), and reports stop the process."""
    import sysconfig

    from fastsockserver import _core
    assert fastsockserver.COMPILED
    with open(_core.__file__, "rb") as f:
        core = f.read()
    assert b"__tsan_func_entry" in core and b"__tsan_read" in core
    assert sysconfig.get_config_var("Py_GIL_DISABLED") and not sys._is_gil_enabled()
    assert "--with-thread-sanitizer" in sysconfig.get_config_var("CONFIG_ARGS")
    with open("/proc/self/maps") as f:
        assert "libtsan" in f.read()
    assert "LD_PRELOAD" not in os.environ
    options = os.environ["TSAN_OPTIONS"].split(":")
    assert "halt_on_error=1" in options
    assert any(o.startswith("log_path=") for o in options)


@pytest.mark.skipif(not TSAN_RUN,
                    reason="only in the ThreadSanitizer run (tools/run_tests.py --only tsan)")
def test_tsan_run_reports_a_race_in_instrumented_code(tmp_path):
    """A race in code built as the core is built (-fsanitize=thread) is caught with the
    run's options (its suppressions included), ends the process and leaves its report in
    a file, which is what fails the run; the same code with a lock is not reported."""
    if not shutil.which("gcc"):
        pytest.skip("no gcc")
    source = tmp_path / "racy.c"
    source.write_text(
        "#include <pthread.h>\n"
        "static volatile long counter;  /* each access stays one */\n"
        "static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;\n"
        "void racy_bump(long n) { for (long i = 0; i < n; i++) counter++; }\n"
        "void locked_bump(long n) { for (long i = 0; i < n; i++) {\n"
        "    pthread_mutex_lock(&lock); counter++; pthread_mutex_unlock(&lock); } }\n")
    library = tmp_path / "libracy.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-fsanitize=thread", "-g", "-O1",
                    str(source), "-o", str(library)], check=True, timeout=60)
    # Both threads in the function at once: the interpreter's own locking before it
    # (a thread's start, the barrier) orders nothing after it.
    script = ("import ctypes, sys, threading\n"
              "f = getattr(ctypes.CDLL(sys.argv[1]), sys.argv[2])\n"
              "barrier = threading.Barrier(2)\n"
              "def run():\n"
              "    barrier.wait()\n"
              "    f(1000000)\n"
              "threads = [threading.Thread(target=run) for _ in range(2)]\n"
              "[t.start() for t in threads]; [t.join() for t in threads]\n")
    results = {}
    for name in ("locked_bump", "racy_bump"):
        reports = tmp_path / name
        reports.mkdir()
        options = [o for o in os.environ["TSAN_OPTIONS"].split(":")
                   if not o.startswith("log_path=")]
        env = dict(os.environ, TSAN_OPTIONS=":".join(options + [
            "log_path=" + str(reports / "report")]))
        proc = subprocess.run([sys.executable, "-c", script, str(library), name], env=env,
                              capture_output=True, text=True, timeout=120)
        results[name] = proc.returncode, [p.read_text() for p in reports.iterdir()]
    assert results["locked_bump"] == (0, [])
    code, [report] = results["racy_bump"]
    assert code != 0
    assert "WARNING: ThreadSanitizer: data race" in report and "racy_bump" in report


def test_build_failures_are_read_as_setup_py_writes_them(tmp_path, monkeypatch):
    from fastsockserver import _core_select
    note = tmp_path / "_build_failures.txt"
    note.write_text("fastsockserver._core\tthe C compiler cc exited with status 1\n"
                    "fastsockserver._loadgen\tCython is not installed\n", encoding="utf-8")
    monkeypatch.setattr(_core_select, "BUILD_FAILURES", str(note))
    assert _core_select.build_failures() == {
        "fastsockserver._core": "the C compiler cc exited with status 1",
        "fastsockserver._loadgen": "Cython is not installed"}
    why = _core_select.why_not_compiled(ImportError("no"))
    assert why.startswith("its compile failed when this package was installed (the C "
                          "compiler cc exited with status 1); install a C compiler")
    assert "--no-cache-dir --force-reinstall" in why


def test_an_absent_core_is_called_absent_not_a_circular_import(tmp_path, monkeypatch):
    from fastsockserver import _core_select
    monkeypatch.setattr(_core_select, "BUILD_FAILURES", str(tmp_path / "none.txt"))
    assert _core_select.build_failures() == {}
    monkeypatch.setattr(_core_select, "CORE_NAME", "fastsockserver._no_such_core")
    why = _core_select.why_not_compiled(ImportError("cannot import name (circular import)"))
    assert why.startswith("fastsockserver._no_such_core is not in this installation")
    assert "circular" not in why
