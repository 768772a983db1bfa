"""The compiled core and its pure twin implement the interface declared in ``_core_api``:
every function with the declared parameters, the same ServingState fields and methods,
and the server classes call nothing of a core that the interface does not declare."""
import ast
import inspect
import os

import pytest

from fastsockserver import _core_api, _core_py, _core_select


def _cores():
    cores = [pytest.param(_core_py, id="py")]
    try:
        from fastsockserver import _core
    except ImportError:
        pass  # test_implementation.test_default_is_compiled reports a missing core
    else:
        cores.append(pytest.param(_core, id="c"))
    return cores


def _parameters(function):
    """(name, kind, default) of each parameter: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.fixture(params=_cores())
def core(request):
    return request.param


def test_the_declaration_lists_each_function_it_declares():
    declared = sorted(name for name, value in vars(_core_api).items()
                      if inspect.isfunction(value))
    assert declared == sorted(_core_api.FUNCTIONS)


@pytest.mark.parametrize("name", _core_api.FUNCTIONS)
def test_every_function_with_the_declared_parameters(core, name):
    function = getattr(core, name, None)
    assert callable(function), "{} has no function {}".format(core.__name__, name)
    assert _parameters(function) == _parameters(getattr(_core_api, name))


def test_the_serving_state(core):
    state = core.ServingState()
    for field in _core_api.ServingState.FIELDS:
        assert hasattr(state, field), field
    assert (state.accept_backoff, state.accept_resume_at) == (0.0, 0.0)
    assert (state.handoff, state.takers, state.take_pending_from) == (None, 0, None)
    state.takers += 2  # writable from Python: _handler_threads and tests set them
    state.handoff = []
    assert (state.takers, state.handoff) == (2, [])
    with pytest.raises(AttributeError):
        state.not_a_field = 1  # declared fields only (slots / cdef class)
    for method in ("accept_failed", "accept_recovered"):
        assert _parameters(getattr(core.ServingState, method)) == _parameters(
            getattr(_core_api.ServingState, method))


def test_the_back_off_is_the_same_in_both(core):
    import errno
    state = core.ServingState()
    state.accept_failed(errno.ECONNABORTED)  # not a resource error: no back-off
    assert state.accept_backoff == 0.0
    backoffs = []
    for _ in range(10):
        state.accept_failed(errno.EMFILE)
        backoffs.append(state.accept_backoff)
    assert backoffs[:3] == [_core_api.BACKOFF_FIRST, 2 * _core_api.BACKOFF_FIRST,
                            4 * _core_api.BACKOFF_FIRST]
    assert backoffs[-1] == _core_api.BACKOFF_MAX
    assert state.accept_resume_at > 0
    state.accept_failed(None)  # an OSError without errno
    state.accept_recovered()
    assert (state.accept_backoff, state.accept_resume_at) == (0.0, 0.0)


def test_features_are_declared_ones(core):
    assert isinstance(core.FEATURES, frozenset)
    assert core.FEATURES <= _core_api.ALL_FEATURES


def test_system_calls_are_described(core):
    assert set(core.SYSTEM_CALLS) == set(_core_api.SYSTEM_CALL_KINDS)
    assert all(isinstance(value, str) and value for value in core.SYSTEM_CALLS.values())
    assert isinstance(core.PORTABLE_CORE, bool)


def test_the_pure_twin_lists_no_features():
    """Its loop calls _handle_request_noblock() for every request: the plan must
    never give it a listener or handler threads that take."""
    assert _core_py.FEATURES == frozenset()


def test_the_server_classes_call_only_declared_core_names():
    """Every ``core.<name>`` in the package's Python sources is declared."""
    package = os.path.dirname(_core_select.__file__)
    declared = set(_core_api.FUNCTIONS) | {"ServingState", "FEATURES", "__file__",
                                            "SYSTEM_CALLS", "PORTABLE_CORE"}
    used = set()
    for filename in os.listdir(package):
        if not filename.endswith(".py") or filename in ("_core_py.py", "_core_api.py"):
            continue
        with open(os.path.join(package, filename), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        used |= {node.attr for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                 and node.value.id == "core"}
    assert "serve" in used and "take_pending" in used  # the scan finds them
    assert used <= declared, sorted(used - declared)
