"""Which implementation is in use: the compiled core by default, pure Python
when FASTSOCKSERVER_NO_EXTENSIONS asks for it. Checked in fresh subprocesses.

test_default_is_compiled FAILS (never skips) when the compiled core is not
built or not used: a wheel or dev install without it is a broken build.
"""
import json
import os
import subprocess
import sys

import pytest

from fastsockserver import _env

PROBE = r"""
import importlib.util, json, sys
import fastsockserver
from fastsockserver import _core_select, _core_py
info = {
    "compiled": fastsockserver.COMPILED,
    "core_is_twin": _core_select.core is _core_py,
    "core_in_use": _core_select.core.__name__,
    "why_pure": _core_select.WHY_PURE,
    "top_level_core": importlib.util.find_spec("_core") is not None,
}
try:
    from fastsockserver import _core
    info["core_name"] = _core.__name__
except ImportError as exc:
    info["core_name"] = None
print(json.dumps(info))
"""


def probe(value):
    """Run PROBE with FASTSOCKSERVER_NO_EXTENSIONS=value (None: unset)."""
    env = dict(os.environ)
    env.pop(_env.ENV_VAR, None)
    if value is not None:
        env[_env.ENV_VAR] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_is_compiled():
    if _env.NO_EXTENSIONS:
        # the test run itself asked for pure Python: the subprocess, which
        # inherits the variable, must report pure
        env_value = os.environ.get(_env.ENV_VAR)
        info = probe(env_value)
        assert info["compiled"] is False and info["core_is_twin"] is True
        pytest.skip("{}={!r} in this test run".format(_env.ENV_VAR, env_value))
    info = probe(None)
    assert info["compiled"] is True, (
        "the compiled core fastsockserver._core is not built or not in use")
    assert info["core_is_twin"] is False
    assert info["core_in_use"] == "fastsockserver._core"


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", " on "])
def test_no_extensions_gives_pure(value):
    info = probe(value)
    assert info["compiled"] is False
    assert info["core_is_twin"] is True
    assert info["core_in_use"] == "fastsockserver._core_py"
    assert _env.ENV_VAR in info["why_pure"]


@pytest.mark.parametrize("value", ["0", "false", "", "no", "off", "False"])
def test_falsy_values_give_compiled(value):
    if _env.NO_EXTENSIONS:
        pytest.skip("{} set in this test run".format(_env.ENV_VAR))
    info = probe(value)
    assert info["compiled"] is True
    assert info["core_is_twin"] is False


def test_core_module_name_and_no_top_level_core():
    info = probe(None)
    assert info["top_level_core"] is False, "a top-level _core module is importable"
    if _env.NO_EXTENSIONS:
        pytest.skip("{} set in this test run".format(_env.ENV_VAR))
    assert info["core_name"] == "fastsockserver._core"


def test_no_top_level_core_in_this_process():
    import importlib.util
    assert importlib.util.find_spec("_core") is None


def test_env_parser():
    for value in ("1", "true", "yes", "on", "anything"):
        assert _env.is_set(value) is True
    for value in (None, "", "0", "false", "no", "off", " OFF "):
        assert _env.is_set(value) is False
    assert _env.no_extensions({}) is False
    assert _env.no_extensions({_env.ENV_VAR: "1"}) is True


def test_pure_and_compiled_expose_the_same_api():
    """PEP 399: the same public names in both modes."""
    code = ("import fastsockserver, json; print(json.dumps(sorted("
            "n for n in dir(fastsockserver) if not n.startswith('_'))))")
    results = []
    for value in ("1", "0"):
        env = dict(os.environ, **{_env.ENV_VAR: value})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout))
    assert results[0] == results[1]


# Modules a server does not need until it uses what needs them: importing them on
# `import fastsockserver` made it 3-4x slower to import than socketserver, and made
# every ForkingMixIn child a copy of a larger process.
IMPORTED_WHERE_USED = ("typing", "json", "re", "traceback", "importlib.util", "http.client",
                       "email", "ssl")


@pytest.mark.parametrize("no_extensions", ["", "1"], ids=["default", "pure"])
def test_import_loads_no_module_a_server_may_not_use(no_extensions):
    code = ("import sys; before = set(sys.modules); import fastsockserver; "
            "print(fastsockserver.COMPILED, ' '.join(sorted(set(sys.modules) - before)))")
    env = dict(os.environ, **{_env.ENV_VAR: no_extensions})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    compiled, *loaded = result.stdout.split()
    loaded = set(loaded)
    assert "fastsockserver._server" in loaded  # the probe itself works
    not_loaded = set(IMPORTED_WHERE_USED)
    if compiled == "False" and not no_extensions:
        # An install without the compiled core says why on import (_core_select), which
        # asks importlib.util whether the module is there at all.
        not_loaded.discard("importlib.util")
    assert not loaded & not_loaded, sorted(loaded & not_loaded)
