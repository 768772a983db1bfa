"""Which serving core is in use: the compiled ``_core``, or its pure twin ``_core_py``.

``FASTSOCKSERVER_NO_EXTENSIONS`` (read in ``_env``) asks for the twin; so
does a compiled core that cannot be imported (not built: no compiler, or an
sdist installed without Cython). ``WHY_PURE`` says which, for
``python -m fastsockserver info``.
"""
from . import _core_py
from ._env import ENV_VAR, NO_EXTENSIONS

WHY_PURE = None
if NO_EXTENSIONS:
    core = _core_py
    WHY_PURE = "{} is set".format(ENV_VAR)
else:
    try:
        from . import _core as core
    except ImportError as exc:
        core = _core_py
        WHY_PURE = "the compiled core could not be imported: {}".format(exc)

COMPILED = core is not _core_py
