"""Build of the compiled core ``fastsockserver._core`` (from ``src/_core.pyx``, declared in
``src/fastsockserver/_core.pxd``), of http.server's request path ``fastsockserver._http``
(the pure ``src/fastsockserver/_http_py.py`` compiled unchanged, typed by
``src/fastsockserver/_http.pxd``: one source, two builds; see _http_source) and, on Linux
only, of the benchmark's load generator ``fastsockserver._loadgen`` (from
``src/_loadgen.pyx``: epoll, RUSAGE_THREAD).

Switches, all environment variables (one place for build settings):
  FASTSOCKSERVER_NO_EXTENSIONS=1       build no extension: a pure-Python install
  FASTSOCKSERVER_REQUIRE_EXTENSIONS=1  a failed compile of the core fails the build
                                       (wheels, CI); the load generator is never required
  FASTSOCKSERVER_NO_LOADGEN=1          do not build the load generator (as on non-Linux)
  FASTSOCKSERVER_CYTHON_ANNOTATE=1     also write the annotated HTML (build/cython/src/)
  FASTSOCKSERVER_CYTHON_TRACE=1        debug build: line tracing, no optimisation
  FASTSOCKSERVER_SANITIZE=address,undefined
                                       the core built with -fsanitize=... (AddressSanitizer,
                                       UBSan; `make asan`); run it with the sanitizer
                                       runtimes preloaded (tools/run_tests.py --only asan)
  FASTSOCKSERVER_SANITIZE=thread       the same with ThreadSanitizer (`make tsan`), for an
                                       interpreter built with it (tools/run_tests.py
                                       --only tsan; tools/free_threaded_python.py --tsan)
  FASTSOCKSERVER_PORTABLE_CORE=1       compile the core as on macOS and the BSDs (poll,
                                       accept + fcntl, no MSG_NOSIGNAL), to run that path
                                       on Linux; `python -m fastsockserver info` says which
Without FASTSOCKSERVER_REQUIRE_EXTENSIONS a failed compile of the core falls back
to the pure-Python package, which behaves the same.
"""
import importlib.util
import os
import re
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_env_module():
    # The package's own parser of FASTSOCKSERVER_NO_EXTENSIONS, loaded by path
    # so that setup.py and the package read the variable the same way.
    path = os.path.join(HERE, "src", "fastsockserver", "_env.py")
    spec = importlib.util.spec_from_file_location("_fastsockserver_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_env = _load_env_module()
NO_EXTENSIONS = _env.NO_EXTENSIONS
REQUIRE = _env.is_set(os.environ.get("FASTSOCKSERVER_REQUIRE_EXTENSIONS"))
ANNOTATE = _env.is_set(os.environ.get("FASTSOCKSERVER_CYTHON_ANNOTATE"))
TRACE = _env.is_set(os.environ.get("FASTSOCKSERVER_CYTHON_TRACE"))
SANITIZE = os.environ.get("FASTSOCKSERVER_SANITIZE", "").strip()
PORTABLE = _env.is_set(os.environ.get("FASTSOCKSERVER_PORTABLE_CORE"))
# The load generator uses Linux-only calls; `python -m fastsockserver bench`
# says so where it is absent.
LOADGEN = (sys.platform.startswith("linux")
           and not _env.is_set(os.environ.get("FASTSOCKSERVER_NO_LOADGEN")))
CORE = "fastsockserver._core"
HTTP_PATH = "fastsockserver._http"
CYTHON = importlib.util.find_spec("Cython") is not None
LOADGEN_NAME = "fastsockserver._loadgen"

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    # The core guards what its threads share itself (critical sections, see
    # src/_core.pyx): a free-threaded CPython keeps the GIL off on import.
    "freethreading_compatible": True,
}
if TRACE:
    COMPILER_DIRECTIVES.update(linetrace=True, profile=True)


# Why an extension is absent, written into the built package (one line each:
# module, a tab, the reason) and read by fastsockserver._core_select and _info:
# pip shows a successful build's output only with -v, so the package itself
# must say that its compile failed (a warning on import, `info`, `bench`).
BUILD_FAILURES = "_build_failures.txt"


def _reason(exc):
    """One line for a failed build: the compiler's command shortened to its program."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    command = re.match(r"Command '\['([^']*)'.*' returned non-zero exit status (-?\d+)", text)
    if command:
        return "the C compiler {} exited with status {}".format(*command.groups())
    return text


class OptionalBuildExt(build_ext):
    """Falls back to pure Python when the compiler fails, unless the core is required.

    The load generator is bench tooling: its failure never fails the build.
    """

    def run(self):
        self._failures = {}
        try:
            super().run()
        except Exception as exc:  # the compiler is missing or failed
            self._fallback(CORE, exc)
        self._record_failures()

    def build_extension(self, ext):
        try:
            if not CYTHON:
                raise RuntimeError("Cython is not installed (pip installs it from "
                                   "pyproject.toml's build requirements unless run with "
                                   "--no-build-isolation)")
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(ext.name, exc)

    def _fallback(self, name, exc):
        if name == LOADGEN_NAME:
            message = ("building the benchmark's load generator failed ({}); the package "
                       "works without it, `python -m fastsockserver bench` does not.")
        elif REQUIRE:
            raise exc
        else:
            message = ("building the compiled core failed ({}); installing the "
                       "pure-Python package, which behaves the same but is slower.")
        self._failures.setdefault(name, _reason(exc))
        print("*" * 70, file=sys.stderr)
        print("fastsockserver: " + message.format(exc), file=sys.stderr)
        print("*" * 70, file=sys.stderr)

    def _record_failures(self):
        # The package's folder in the build (or the source tree, for an editable
        # install): where the core's module would have been written.
        path = os.path.join(os.path.dirname(self.get_ext_fullpath(CORE)), BUILD_FAILURES)
        if not self._failures:
            if os.path.exists(path):  # a failure of an earlier build, fixed since
                os.remove(path)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for name, reason in sorted(self._failures.items()):
                f.write("{}\t{}\n".format(name, reason))


def _switches_file(macros, compile_args):
    """A file that holds the C compiler's switches, rewritten only when they change.

    The extensions depend on it: the compiled module's path is the same with
    any switches, so without it build_ext would keep a module built with the
    others (a portable core in a Linux install, or the reverse)."""
    path = os.path.join(HERE, "build", "c-switches.txt")
    text = repr((macros, compile_args)) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _http_source():
    """The pure ``_http_py.py`` as ``build/http/_http.py``, the name Cython
    makes the module's init function of (``PyInit__http``); rewritten only
    when it differs, or its C types (``src/fastsockserver/_http.pxd``, which
    cythonize does not count among the copy's dependencies) changed since, so
    an unchanged source is not compiled again."""
    package = os.path.join(HERE, "src", "fastsockserver")
    with open(os.path.join(package, "_http_py.py"), "rb") as f:
        text = f.read()
    path = os.path.join(HERE, "build", "http", "_http.py")
    try:
        with open(path, "rb") as f:
            if (f.read() == text and os.path.getmtime(path)
                    >= os.path.getmtime(os.path.join(package, "_http.pxd"))):
                return os.path.relpath(path, HERE)
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text)
    return os.path.relpath(path, HERE)


def _extensions():
    if NO_EXTENSIONS:
        return []
    macros = [("CYTHON_TRACE_NOGIL", "1"), ("CYTHON_TRACE", "1")] if TRACE else []
    if PORTABLE:
        macros.append(("FSS_PORTABLE_CORE", "1"))  # read in src/_core.pyx's C block
    compile_args = ["-O0", "-g"] if TRACE else ["-O2"]
    link_args = []
    if SANITIZE:
        # Every report stops the process (halt_on_error in the run's options),
        # so the suite fails on the first one.
        sanitize = ["-fsanitize=" + SANITIZE, "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", "-g"]
        compile_args, link_args = ["-O1"] + sanitize, sanitize
    switches = _switches_file(macros, compile_args)
    sources = [(CORE, "src/_core.pyx"), (HTTP_PATH, _http_source())]
    if LOADGEN:
        sources.append((LOADGEN_NAME, "src/_loadgen.pyx"))
    extensions = [
        Extension(
            name,
            sources=[source],
            depends=[switches],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
        for name, source in sources
    ]
    if not CYTHON:
        if REQUIRE:
            raise ImportError("FASTSOCKSERVER_REQUIRE_EXTENSIONS is set and Cython is not "
                              "installed")
        # Passed on all the same: OptionalBuildExt records why each is absent.
        return extensions
    from Cython.Build import cythonize
    return cythonize(
        extensions,
        compiler_directives=COMPILER_DIRECTIVES,
        annotate=ANNOTATE,
        build_dir="build/cython",
        # Cython finds the declarations of the module fastsockserver._core as
        # fastsockserver/_core.pxd on its include path (a package-shaped path; the
        # dotted file name beside the .pyx is deprecated).
        include_path=["src"],
    )


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
