"""Chooses the wait loop: the compiled core, or its pure-Python twin.

Everything else in the package is shared; only the functions of the loop
module differ between the two modes.
"""
from . import _pyloop
from ._env import NO_EXTENSIONS

loop = _pyloop
if not NO_EXTENSIONS:
    try:
        from . import _core as loop
    except ImportError:  # not built (no compiler, or an sdist install without Cython)
        loop = _pyloop

COMPILED = loop is not _pyloop
