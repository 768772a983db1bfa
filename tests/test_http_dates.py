"""install()'s http.server date methods: the stdlib's text for every clock
reading, made once a second; and how install() puts them in place."""
import decimal
import email.utils
import fractions
import http.server
import importlib.machinery
import importlib.util
import os
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsockserver import _http_patches as _http
from support import code_result, run_code

HYP = dict(deadline=None, database=None, derandomize=True, max_examples=300,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NAMES = ["date_time_string", "log_date_time_string"]


def fresh_http_server(patch=True):
    """A new copy of http.server (not in sys.modules; loaded by its file, past
    any sys.meta_path entry), patched as install() does if ``patch``."""
    loader = importlib.machinery.SourceFileLoader("http.server", http.server.__file__)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("http.server", loader))
    loader.exec_module(module)
    if patch:
        _http.patch_http_server(module)
    return module


class Dates:
    """A patched copy of http.server, its clock (time.time: each reading the
    next of ``set``'s, the last one repeated; ``reads`` counts them), and
    ``made``: the texts made, counted as calls of time.localtime and
    email.utils.formatdate."""

    def __init__(self, monkeypatch):
        self.set(0.0)
        self.made = 0
        monkeypatch.setattr(time, "time", self.read)
        for namespace, name in ((time, "localtime"), (email.utils, "formatdate")):
            monkeypatch.setattr(namespace, name, self._counted(getattr(namespace, name)))
        # after the counting functions are in: what the patch checks against
        self.module = fresh_http_server()
        self.Handler = self.module.BaseHTTPRequestHandler
        for name in NAMES:
            assert hasattr(vars(self.Handler)[name], "__wrapped__"), name

    def _counted(self, function):
        def counted(*args, **kwargs):
            self.made += 1
            return function(*args, **kwargs)
        return counted

    def set(self, *times):
        self.times = list(times)
        self.reads = 0

    def read(self):
        self.reads += 1
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]

    def kept(self, name):
        return vars(self.Handler)[name]

    def stdlib(self, name):
        return vars(self.Handler)[name].__wrapped__

    def handler(self, cls=None):
        cls = cls or self.Handler
        return cls.__new__(cls)  # the date methods use no request state

    def made_by(self, call, *args):
        """(call(*args), how many texts it made)"""
        before = self.made
        result = call(*args)
        return result, self.made - before


@pytest.fixture
def dates(monkeypatch):
    return Dates(monkeypatch)


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
def test_every_reading_gives_the_stdlibs_text(dates, name, start, readings, repeat):
    # Readings within a few seconds of ``start``: many in a second already kept.
    kept, stdlib, h = dates.kept(name), dates.stdlib(name), dates.handler()
    for second, fraction in readings:
        for _ in range(repeat):  # the same reading again: from what was kept
            dates.set(start + second + fraction)
            expected = stdlib(h)
            assert kept(h) == expected


@pytest.mark.parametrize("name", NAMES)
def test_the_text_is_made_once_a_second(dates, name):
    kept, h = dates.kept(name), dates.handler()
    dates.set(1_800_000_000.25)
    texts = [dates.made_by(kept, h) for _ in range(5)]
    dates.set(1_800_000_000.75)
    texts.append(dates.made_by(kept, h))
    assert [made for text, made in texts] == [1, 0, 0, 0, 0, 0]
    assert len({text for text, made in texts}) == 1
    dates.set(1_800_000_001.25)
    assert dates.made_by(kept, h) != (texts[0][0], 1)
    dates.set(1_800_000_000.5)  # the clock stepped back: made again
    assert dates.made_by(kept, h) == (texts[0][0], 1)


@pytest.mark.parametrize("name", NAMES)
def test_the_clock_is_read_once_a_call(dates, name):
    # As by the stdlib's: a scripted clock (a mock's side_effect list, say)
    # gives each call its next reading, here across second ends and back.
    readings = [1_800_000_000.9999, 1_800_000_001.0001, 1_800_000_000.5, 1_800_000_000.6,
                1_800_000_000.9999995, 1_800_000_001.5, 1_800_000_000.2]
    kept, stdlib, h = dates.kept(name), dates.stdlib(name), dates.handler()
    expected = []
    for reading in readings:
        dates.set(reading)
        expected.append(stdlib(h))
    dates.set(*readings, 0.0)
    assert [kept(h) for _ in readings] == expected
    assert dates.reads == len(readings)


def test_a_timestamp_argument_goes_to_the_stdlib(dates):
    dates.set(1_800_000_000.5)
    kept, stdlib = dates.kept("date_time_string"), dates.stdlib("date_time_string")
    h = dates.handler()
    for timestamp in (0, 1_000_000_000.75, 1_800_000_000.5, None):
        assert kept(h, timestamp) == stdlib(h, timestamp)
        assert kept(h, timestamp=timestamp) == stdlib(h, timestamp=timestamp)
    # none of them kept a text: the clock's is made
    assert dates.made_by(kept, h) == (stdlib(h), 1)
    with pytest.raises(TypeError):  # what formatdate says of a bad timestamp
        stdlib(h, "noon")
    with pytest.raises(TypeError):
        kept(h, "noon")


def answer(method, h):
    try:
        return "text", method(h)
    except Exception as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("readings", [
    [1_800_000_000], [decimal.Decimal("1800000000.5")], [fractions.Fraction(3_600_000_001, 2)],
    [float("nan")], [float("inf")], ["noon"], [None, None, 1_000_000_000.5]],
    ids=["int", "decimal", "fraction", "nan", "inf", "str", "none"])
def test_an_odd_clock_gets_the_stdlibs_answer(dates, name, readings):
    # (a test double for time.time, say): whatever the stdlib does with it,
    # text or error, reading the clock as often, also after a text of a
    # float reading has been kept; nothing is kept from such a reading
    kept, stdlib, h = dates.kept(name), dates.stdlib(name), dates.handler()
    dates.set(*readings)
    expected = answer(stdlib, h), dates.reads
    dates.set(1_800_000_000.25)
    kept(h)
    for _ in range(2):
        dates.set(*readings)
        assert (answer(kept, h), dates.reads) == expected


@pytest.mark.parametrize("name", NAMES)
def test_a_replaced_module_global_gets_the_stdlibs_answer(dates, name):
    # A test's mock.patch("http.server.time") or of email.utils.formatdate:
    # the stdlib's method sees it at once, so the kept one does too.
    kept, h = dates.kept(name), dates.handler()
    dates.set(1_800_000_000.25)
    kept(h)  # a text kept for this second
    fake_time = types.SimpleNamespace(time=lambda: 1_000_000_000.5, localtime=time.localtime)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dates.module, "time", fake_time)
        assert kept(h) == dates.stdlib(name)(h)
        assert "2001" in kept(h)
    fake_utils = types.SimpleNamespace(formatdate=lambda *args, **kwargs: "replaced")
    replacements = {"date_time_string": [(email.utils, "formatdate", fake_utils.formatdate),
                                         (email, "utils", fake_utils)],
                    "log_date_time_string": [(time, "localtime", lambda now: time.gmtime(0))]}
    for namespace, attribute, replacement in replacements[name]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(namespace, attribute, replacement)
            assert kept(h) == dates.stdlib(name)(h)
            assert "replaced" in kept(h) or "1970" in kept(h)
    assert kept(h) == dates.stdlib(name)(h) and "2027" in kept(h)  # and back


def test_a_subclass_month_names_are_its_own(dates):
    dates.set(1_800_000_000.5)  # 2027-01-15
    kept = dates.kept("log_date_time_string")

    class Lower(dates.Handler):
        monthname = [None] + [m.lower() for m in dates.Handler.monthname[1:]]
    assert dates.made_by(kept, dates.handler())[0].split("/")[1] == "Jan"
    assert dates.made_by(kept, dates.handler(Lower)) == (kept(dates.handler(Lower)), 1)
    assert kept(dates.handler(Lower)).split("/")[1] == "jan"
    assert dates.made_by(kept, dates.handler())[0].split("/")[1] == "Jan"


class NameList(list):
    pass


class Shouting:
    """A month name whose text changes (a lazy translation, say)."""
    loud = False

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name.upper() if Shouting.loud else self.name


@pytest.mark.parametrize("names", [list, NameList, tuple], ids=["list", "list-subclass", "tuple"])
def test_month_names_changed_in_place_are_seen(dates, names):
    dates.set(1_800_000_000.5)  # January
    kept = dates.kept("log_date_time_string")

    class Own(dates.Handler):
        monthname = names([None, "Jan"] + [Shouting(m) for m in dates.Handler.monthname[2:]])
    h = dates.handler(Own)
    assert kept(h).split("/")[1] == "Jan"
    if names is tuple:
        Own.monthname = (None, "Ja.") + Own.monthname[2:]
    else:
        Own.monthname[1] = "Ja."
    assert dates.made_by(kept, h)[0].split("/")[1] == "Ja."
    dates.set(1_805_544_000.5)  # March: a name whose text changes
    text, made = dates.made_by(kept, h)
    assert text.split("/")[1] == "Mar" and made == 1
    assert dates.made_by(kept, h) == (text, 0)  # kept while the text is the same
    Shouting.loud = True
    try:
        assert kept(h).split("/")[1] == "MAR" and kept(h) == dates.stdlib("log_date_time_string")(h)
    finally:
        Shouting.loud = False


def other_date_time_string(self, timestamp=None):
    # a later Python's, say: other names and constants
    return email.utils.formatdate(timestamp, localtime=True)


def other_log_date_time_string(self):
    year, month, day, hh, mm, ss, x, y, z = time.localtime(time.time())
    return "%04d-%02d-%02d %02d:%02d:%02d" % (year, month, day, hh, mm, ss)


def same_names_date_time_string(self, timestamp=None):
    if timestamp is None:
        timestamp = time.time()
    return email.utils.formatdate(timestamp)  # (no usegmt)


def formatdate_alias(*args, **kwargs):
    return email.utils.formatdate(*args, **kwargs)


def same_constants_date_time_string(self, timestamp=None):
    return formatdate_alias(timestamp, usegmt=True)


def other_parameters_date_time_string(self, when=None):
    if when is None:
        when = time.time()
    return email.utils.formatdate(when, usegmt=True)


def same_format_log_date_time_string(self):
    year, month, day, hh, mm, ss, x, y, z = time.gmtime(time.time())
    return "%02d/%3s/%04d %02d:%02d:%02d" % (day, self.monthname[month], year, hh, mm, ss)


@pytest.mark.parametrize("name, function", [
    ("date_time_string", other_date_time_string),
    ("date_time_string", same_names_date_time_string),
    ("date_time_string", same_constants_date_time_string),
    ("date_time_string", other_parameters_date_time_string),
    ("log_date_time_string", other_log_date_time_string),
    ("log_date_time_string", same_format_log_date_time_string)])
def test_a_method_that_does_something_else_is_left_alone(name, function):
    # even one claiming to be the module's own, with the stdlib's parameters
    module = fresh_http_server(patch=False)
    function.__module__ = module.__name__
    setattr(module.BaseHTTPRequestHandler, name, function)
    _http.patch_http_server(module)
    assert vars(module.BaseHTTPRequestHandler)[name] is function
    other = NAMES[1 - NAMES.index(name)]  # the other one is still patched
    assert hasattr(vars(module.BaseHTTPRequestHandler)[other], "__wrapped__")


def test_a_module_with_its_own_time_is_left_alone():
    module = fresh_http_server(patch=False)
    module.time = types.SimpleNamespace(time=time.time, localtime=time.localtime)
    _http.patch_http_server(module)
    for name in NAMES:
        assert not hasattr(vars(module.BaseHTTPRequestHandler)[name], "__wrapped__")


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
def test_a_new_time_zone_is_seen_within_the_second(dates, time_zone, zones):
    dates.set(1_805_544_000.5)  # 2027-03-20 12:00 UTC
    kept, stdlib = dates.kept("log_date_time_string"), dates.stdlib("log_date_time_string")
    h = dates.handler()
    time_zone(zones[0])
    first = kept(h)
    assert first == stdlib(h) == kept(h)
    time_zone(zones[1])
    assert dates.made_by(kept, h) == (stdlib(h), 1)
    assert first != stdlib(h)


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
    MINE = date_time_string
fastsockserver.install()
import http.server

def state(module):
    methods = vars(module.BaseHTTPRequestHandler)
    def one(method):
        if method is MINE:
            return "mine"
        if hasattr(method, "__wrapped__"):  # the module's own, wrapped
            return method.__wrapped__.__code__.co_filename == module.__file__
        return "untouched"
    return {name: one(methods[name]) for name in ("date_time_string", "log_date_time_string")}

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
    assert state["installed"] == {"date_time_string": "mine", "log_date_time_string": True}


def test_without_install_http_server_is_untouched():
    out = run_code("""
        import fastsockserver
        import http.server
        for name in ("date_time_string", "log_date_time_string"):
            assert not hasattr(vars(http.server.BaseHTTPRequestHandler)[name], "__wrapped__")
    """)
    assert out.returncode == 0, out.stderr
