"""Helpers shared by tests/ and bench/ (bench/conftest.py imports this file)."""
import importlib.util
import os
import sys
import time

import fastsockserver
from fastsockserver import _env

PURE_COPY_NAME = "_fastsockserver_pure"
WAIT = 5.0  # upper bound of any single wait in the tests


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


def wait_for(predicate, timeout=WAIT, interval=0.01):
    """Poll predicate() until it is true (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
