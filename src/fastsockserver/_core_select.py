"""Which serving core is in use: the compiled ``_core``, or its pure twin ``_core_py``.

``FASTSOCKSERVER_NO_EXTENSIONS`` (read in ``_env``) asks for the twin; so
does a compiled core that cannot be imported (not built: no compiler, or an
sdist installed without Cython). ``WHY_PURE`` says which, for
``python -m fastsockserver info``. A core whose compile failed at install
time (setup.py records why, in ``_build_failures.txt``) is announced once
with a ``RuntimeWarning`` on import: pip does not show a successful build's
output, so this is where a user learns it.
"""
import os
import warnings

from . import _core_py
from ._env import ENV_VAR, NO_EXTENSIONS

CORE_NAME = __package__ + "._core"
BUILD_FAILURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_failures.txt")
REINSTALL = ("install a C compiler and Python's headers, then reinstall with "
             "`pip install --no-cache-dir --force-reinstall fastsockserver` "
             "(pip may otherwise reuse the pure build it cached; `pip cache remove "
             "fastsockserver` drops it)")


def build_failures(path=None):
    """{module name: why its build failed}, as setup.py recorded it at install time."""
    try:
        with open(path or BUILD_FAILURES, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t", 1) for line in f]
    except OSError:
        return {}
    return {row[0]: row[1] for row in rows if len(row) == 2}


def why_not_compiled(error):
    """Why ``import fastsockserver._core`` failed, in words a user can act on."""
    failed = build_failures().get(CORE_NAME)
    if failed is not None:
        return "its compile failed when this package was installed ({}); {}".format(
            failed, REINSTALL)
    import importlib.util  # (only to explain a failure)
    if importlib.util.find_spec(CORE_NAME) is None:
        # Python's own message here is about a "circular import": the module is
        # simply absent from the package.
        return ("{} is not in this installation (a pure-Python build: {} set when it was "
                "built, or a pure wheel)".format(CORE_NAME, ENV_VAR))
    return "the compiled core could not be imported: {}".format(error)


WHY_PURE = None
if NO_EXTENSIONS:
    core = _core_py
    WHY_PURE = "{} is set".format(ENV_VAR)
else:
    try:
        from . import _core as core
    except ImportError as exc:
        core = _core_py
        WHY_PURE = why_not_compiled(exc)
        if CORE_NAME in build_failures():
            warnings.warn("fastsockserver runs its pure-Python core, slower than the compiled "
                          "one: " + WHY_PURE + ". {}=1 asks for pure Python without this "
                          "warning.".format(ENV_VAR), RuntimeWarning)

COMPILED = core is not _core_py
