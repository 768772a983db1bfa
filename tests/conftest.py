"""One fixture, ``impl``, runs each behaviour test on the stdlib ``socketserver``
(id ``stdlib``), fastsockserver in pure Python (``py``) and fastsockserver on
its compiled core (``c``).

The pure implementation is a second copy of the package loaded with
FASTSOCKSERVER_NO_EXTENSIONS=1, so both modes run in one process.
``--no-c-extensions`` (or the variable itself) skips the ``c`` runs.
"""
import importlib.util
import os
import socketserver as stdlib_socketserver
import sys

import pytest

import fastsockserver
from fastsockserver import _env

PURE_COPY_NAME = "_fastsockserver_pure"


def pytest_addoption(parser):
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="skip the tests of the compiled core")


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


def _compiled_module(config):
    if config.getoption("--no-c-extensions") or _env.NO_EXTENSIONS:
        pytest.skip("compiled core switched off (--no-c-extensions or {})".format(_env.ENV_VAR))
    if not fastsockserver.COMPILED:
        pytest.skip("the compiled core is not built (test_default_is_compiled fails for this)")
    return fastsockserver


@pytest.fixture(params=[
    pytest.param("stdlib"),
    pytest.param("py"),
    pytest.param("c", marks=pytest.mark.c_extension),
])
def impl(request):
    """The socketserver module under test: stdlib, fastsockserver pure, or compiled."""
    if request.param == "stdlib":
        return stdlib_socketserver
    if request.param == "py":
        return load_pure_copy()
    return _compiled_module(request.config)


@pytest.fixture(params=[
    pytest.param("py"),
    pytest.param("c", marks=pytest.mark.c_extension),
])
def fast_impl(request):
    """fastsockserver only (pure, compiled): for what the stdlib lacks or does differently."""
    if request.param == "py":
        return load_pure_copy()
    return _compiled_module(request.config)
