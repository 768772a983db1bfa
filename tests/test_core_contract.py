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


def test_core_owned_fields_are_read_only_from_python():
    """The compiled state refuses a write from Python to a field only the core
    changes (under its section); the pure twin cannot refuse, and its users are
    held to the same rule by test_no_module_writes_a_core_owned_field."""
    _core = pytest.importorskip("fastsockserver._core")
    state = _core.ServingState()
    for field in _core_api.ServingState.CORE_OWNED:
        with pytest.raises(AttributeError):
            setattr(state, field, getattr(state, field))


def test_no_module_writes_a_core_owned_field():
    """No Python source of the package assigns to a CORE_OWNED field of a state
    (``state.active = ...``, ``+=``): only the cores' own functions do."""
    package = os.path.dirname(_core_select.__file__)
    owned = set(_core_api.ServingState.CORE_OWNED)
    writes = []
    for filename in sorted(os.listdir(package)):
        if not filename.endswith(".py") or filename in ("_core_py.py", "_core_api.py"):
            continue
        with open(os.path.join(package, filename), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                       else [])
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr in owned:
                        writes.append("{}:{} .{}".format(filename, node.lineno, part.attr))
    assert not writes, writes


@pytest.mark.parametrize("method", ["reserve", "claim", "abandon", "release"])
def test_ticket_methods_as_declared(core, method):
    assert _parameters(getattr(core.Ticket, method)) == _parameters(
        getattr(_core_api.Ticket, method))


def test_a_ticket_goes_back_exactly_once(core):
    """Whatever is called in whatever order, ``active`` goes up once and down once."""
    state = core.ServingState()
    ticket = core.Ticket(state)
    assert ticket.abandon() is True and state.active == 0  # nothing reserved yet
    ticket = core.Ticket(state)
    ticket.reserve()
    ticket.reserve()
    assert state.active == 1 and ticket.status == _core_api.TICKET_RESERVED
    assert ticket.claim() is True and ticket.claim() is False
    assert ticket.abandon() is False and state.active == 1  # a thread runs it
    ticket.release()
    ticket.release()
    assert (state.active, state.finished) == (0, 1)
    assert ticket.status == _core_api.TICKET_RELEASED
    given_up = core.Ticket(state)
    given_up.reserve()
    assert given_up.abandon() is True and state.active == 0
    assert given_up.claim() is False  # the thread it was meant for does nothing
    given_up.release()
    assert (state.active, state.finished) == (0, 1)


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
    declared = set(_core_api.FUNCTIONS) | set(_core_api.CLASSES) | {
        "FEATURES", "__file__", "SYSTEM_CALLS", "PORTABLE_CORE"}
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
