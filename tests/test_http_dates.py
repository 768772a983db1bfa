"""install()'s http.server date methods: the stdlib's text for every clock
reading, made once a second; and how install() puts them in place."""
import http.server
import decimal
import fractions
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastsockserver import _http

from test_install import code_result, run_code

HYP = dict(deadline=None, database=None, derandomize=True, max_examples=300,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

Handler = http.server.BaseHTTPRequestHandler


def stdlib_method(name):
    function = Handler.__dict__[name]
    return getattr(function, "__wrapped__", function)  # this process may have run install()


NAMES = ["date_time_string", "log_date_time_string"]


class Clock:
    """time.time() for the code under test: each reading the next of ``times``,
    the last one repeated; ``reads`` counts them."""

    def __init__(self, monkeypatch, *times):
        self.set(*times)
        monkeypatch.setattr(time, "time", self)

    def set(self, *times):
        self.times = list(times)
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def kept_and_counted(name):
    """(the kept method as patch_http_server makes it, the list its calls
    for a new text are recorded in)."""
    calls = []
    original = stdlib_method(name)
    text_at, inputs = {
        "date_time_string": (original, _http._no_inputs),
        "log_date_time_string": (_http._log_date_time_at, _http._month_names)}[name]

    def counted(self, *args, **kwargs):
        calls.append(args)
        return text_at(self, *args, **kwargs)
    return _http._kept_for_the_second(original, counted, inputs), calls


def handler(cls=Handler):
    return cls.__new__(cls)  # the date methods use no request state


# Whole seconds from before 1970 to after 2038, and fractions that include
# the last and first microsecond of a second, where formatdate rounds up.
seconds = st.integers(-10**8, 4 * 10**9)
fraction_parts = st.one_of(
    st.floats(0.0, 1.0, exclude_max=True),
    st.sampled_from([0.0, 1e-7, 5e-7, 1e-6, 2e-6, 0.5, 0.999998, 0.999999, 0.9999995, 0.9999999]))


@pytest.mark.parametrize("name", NAMES)
@settings(**HYP)
@given(start=seconds, readings=st.lists(st.tuples(st.integers(-1, 2), fraction_parts),
                                         min_size=1, max_size=12),
       repeat=st.integers(1, 3))
def test_every_reading_gives_the_stdlibs_text(monkeypatch, name, start, readings, repeat):
    # Readings within a few seconds of ``start``: many in a second already kept.
    clock = Clock(monkeypatch, 0.0)
    kept, calls = kept_and_counted(name)
    original = stdlib_method(name)
    h = handler()
    for second, fraction in readings:
        for _ in range(repeat):  # the same reading again: from what was kept
            clock.set(start + second + fraction)
            expected = original(h)
            clock.set(start + second + fraction)
            assert kept(h) == expected


@pytest.mark.parametrize("name", NAMES)
def test_the_stdlib_runs_once_a_second(monkeypatch, name):
    clock = Clock(monkeypatch, 1_800_000_000.25)
    kept, calls = kept_and_counted(name)
    h = handler()
    texts = [kept(h) for _ in range(5)]
    clock.set(1_800_000_000.75)
    texts.append(kept(h))
    assert len(calls) == 1 and len(set(texts)) == 1
    clock.set(1_800_000_001.25)
    assert kept(h) != texts[0] and len(calls) == 2
    clock.set(1_800_000_000.5)  # the clock stepped back: made again
    assert kept(h) == texts[0] and len(calls) == 3


@pytest.mark.parametrize("name", NAMES)
def test_the_clock_is_read_once_a_call(monkeypatch, name):
    # As by the stdlib's: a scripted clock (a mock's side_effect list, say)
    # gives each call its next reading, here across second ends and back.
    readings = [1_800_000_000.9999, 1_800_000_001.0001, 1_800_000_000.5, 1_800_000_000.6,
                1_800_000_000.9999995, 1_800_000_001.5, 1_800_000_000.2]
    clock = Clock(monkeypatch, 0.0)
    original = stdlib_method(name)
    h = handler()
    expected = []
    for reading in readings:
        clock.set(reading)
        expected.append(original(h))
    kept, calls = kept_and_counted(name)
    clock.set(*readings, 0.0)
    assert [kept(h) for _ in readings] == expected
    assert clock.reads == len(readings)


def test_a_timestamp_argument_goes_to_the_stdlib(monkeypatch):
    Clock(monkeypatch, 1_800_000_000.5)
    kept, calls = kept_and_counted("date_time_string")
    h = handler()
    original = stdlib_method("date_time_string")
    for timestamp in (0, 1_000_000_000.75, 1_800_000_000.5):
        assert kept(h, timestamp) == original(h, timestamp)
        assert kept(h, timestamp=timestamp) == original(h, timestamp=timestamp)
    assert kept(h, None) == original(h, None)
    assert calls == []  # none of them made or kept a text of the clock's
    assert kept(h) == original(h) and len(calls) == 1
    with pytest.raises(TypeError):  # what formatdate says of a bad timestamp
        original(h, "noon")
    with pytest.raises(TypeError):
        kept(h, "noon")


def answer(method, h):
    try:
        return "text", method(h)
    except Exception as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reading", [
    1_800_000_000, decimal.Decimal("1800000000.5"), fractions.Fraction(3_600_000_001, 2),
    float("nan"), float("inf"), "noon", None],
    ids=["int", "decimal", "fraction", "nan", "inf", "str", "none"])
def test_an_odd_clock_gets_the_stdlibs_answer(monkeypatch, name, reading):
    # (a test double for time.time, say): whatever the stdlib does with it,
    # text or error, also after a text of a float reading has been kept
    clock = Clock(monkeypatch, reading)
    kept, calls = kept_and_counted(name)
    h = handler()
    expected = answer(stdlib_method(name), h)
    clock.set(1_800_000_000.25)
    kept(h)
    clock.set(reading)
    assert [answer(kept, h) for _ in range(2)] == [expected] * 2
    assert len(calls) == 3  # nothing kept from such a reading


def test_a_subclass_month_names_are_its_own(monkeypatch):
    Clock(monkeypatch, 1_800_000_000.5)  # 2027-01-15
    kept, calls = kept_and_counted("log_date_time_string")

    class Lower(Handler):
        monthname = [None] + [m.lower() if m else m for m in Handler.monthname[1:]]
    assert kept(handler()).split("/")[1] == "Jan"
    assert kept(handler(Lower)).split("/")[1] == "jan"
    assert kept(handler()).split("/")[1] == "Jan"
    assert len(calls) == 3


def test_month_names_changed_in_place_are_seen(monkeypatch):
    Clock(monkeypatch, 1_800_000_000.5)  # January
    kept, calls = kept_and_counted("log_date_time_string")

    class Own(Handler):
        monthname = list(Handler.monthname)
    h = handler(Own)
    assert kept(h).split("/")[1] == "Jan"
    Own.monthname[1] = "Ja."
    assert kept(h).split("/")[1] == "Ja."
    assert len(calls) == 2


@pytest.fixture
def time_zone():
    """Sets TZ (and time.tzset()s); the process's own is back afterwards."""
    if not hasattr(time, "tzset"):
        pytest.skip("no time.tzset")
    before = os.environ.get("TZ")

    def set_zone(value):
        os.environ["TZ"] = value
        time.tzset()
    yield set_zone
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize("zones", [
    ("UTC0", "XYZ-3"), ("AAA0", "AAA-3"),
    # the same names and offsets, another start of summer time: 2027-03-20
    # is in it for the first only
    ("EST5EDT,M3.2.0,M11.1.0", "EST5EDT,M4.1.0,M10.5.0")],
    ids=["other-names", "same-names", "same-names-and-offsets"])
def test_a_new_time_zone_is_seen_within_the_second(monkeypatch, time_zone, zones):
    Clock(monkeypatch, 1_805_544_000.5)  # 2027-03-20 12:00 UTC
    kept, calls = kept_and_counted("log_date_time_string")
    h = handler()
    original = stdlib_method("log_date_time_string")
    time_zone(zones[0])
    first = kept(h)
    assert first == original(h)
    time_zone(zones[1])
    assert kept(h) == original(h) != first
    assert len(calls) == 2


INSTALL_STATE = r"""
import json, sys, importlib
import fastsockserver
if FIRST:
    import http.server
if MINE:
    import http.server
    def date_time_string(self, timestamp=None):
        return "mine"
    date_time_string.__module__ = "http.server"  # even claiming to be the stdlib's
    http.server.BaseHTTPRequestHandler.date_time_string = date_time_string
fastsockserver.install()
import http.server

def state(module):
    methods = vars(module.BaseHTTPRequestHandler)
    return {name: (hasattr(methods[name], "__wrapped__")
                   and methods[name].__wrapped__.__code__.co_filename == module.__file__)
            for name in ("date_time_string", "log_date_time_string")}

import inspect
out = {"installed": state(http.server),
       # the module's own loader, not install()'s: its source is found
       "loader": ("def date_time_string" in inspect.getsource(http.server)
                  and type(http.server.__loader__) is type(http.server.__spec__.loader)
                  and "Patch" not in type(http.server.__loader__).__name__)}
out["reloaded"] = state(importlib.reload(http.server))
del sys.modules["http.server"]
import http.server
out["imported_again"] = state(http.server)
print(json.dumps(out))
"""


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
@pytest.mark.parametrize("first", [False, True], ids=["later", "first"])
def test_install_patches_http_server(pure, first):
    both = {"date_time_string": True, "log_date_time_string": True}
    assert code_result("FIRST, MINE = {}, False\n".format(first) + INSTALL_STATE, pure) == {
        "installed": both, "loader": True, "reloaded": both, "imported_again": both}


def test_install_leaves_a_replaced_method_alone():
    state = code_result("FIRST, MINE = False, True\n" + INSTALL_STATE)
    assert state["installed"] == {"date_time_string": False, "log_date_time_string": True}


def test_without_install_http_server_is_untouched():
    out = run_code("""
        import fastsockserver
        import http.server
        for name in ("date_time_string", "log_date_time_string"):
            assert not hasattr(vars(http.server.BaseHTTPRequestHandler)[name], "__wrapped__")
    """)
    assert out.returncode == 0, out.stderr
