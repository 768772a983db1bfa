"""Build of the compiled core ``fastsockserver._core`` (from ``src/_core.pyx``) and of the
benchmark's load generator ``fastsockserver._loadgen`` (from ``src/_loadgen.pyx``).

Switches, all environment variables (one place for build settings):
  FASTSOCKSERVER_NO_EXTENSIONS=1     build no extension: a pure-Python install
  FASTSOCKSERVER_REQUIRE_EXTENSIONS=1  a failed compile fails the build (wheels, CI)
  FASTSOCKSERVER_CYTHON_ANNOTATE=1   also write the annotated HTML (build/annotate/)
  FASTSOCKSERVER_CYTHON_TRACE=1      debug build: line tracing, no optimisation
Without FASTSOCKSERVER_REQUIRE_EXTENSIONS a failed compile falls back to the
pure-Python package, which behaves the same.
"""
import importlib.util
import os
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

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    # Not freethreading_compatible: the core's hand-offs between the loop and
    # handler threads rely on the GIL (a free-threaded build re-enables it).
}
if TRACE:
    COMPILER_DIRECTIVES.update(linetrace=True, profile=True)


class OptionalBuildExt(build_ext):
    """Falls back to pure Python when the compiler fails, unless the core is required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # the compiler is missing or failed
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc):
        if REQUIRE:
            raise
        print("*" * 70, file=sys.stderr)
        print("fastsockserver: building the compiled core failed ({}); installing the "
              "pure-Python package, which behaves the same but is slower.".format(exc),
              file=sys.stderr)
        print("*" * 70, file=sys.stderr)


def _extensions():
    if NO_EXTENSIONS:
        return []
    macros = [("CYTHON_TRACE_NOGIL", "1"), ("CYTHON_TRACE", "1")] if TRACE else []
    extensions = [
        Extension(
            name,
            sources=[source],
            define_macros=macros,
            extra_compile_args=["-O0", "-g"] if TRACE else ["-O2"],
        )
        for name, source in (
            ("fastsockserver._core", "src/_core.pyx"),
            # the load generator of ``python -m fastsockserver bench``
            ("fastsockserver._loadgen", "src/_loadgen.pyx"),
        )
    ]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        print("fastsockserver: Cython is not available; installing pure Python.", file=sys.stderr)
        return []
    return cythonize(
        extensions,
        compiler_directives=COMPILER_DIRECTIVES,
        annotate=ANNOTATE,
        build_dir="build/cython",
    )


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
