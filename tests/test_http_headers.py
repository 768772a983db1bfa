"""install()'s http.client.parse_headers: the same message as the stdlib's
(the email parser) for any header block, built without the parser for plain
ones; and how install() puts it in place."""
import email.generator
import functools
import http.client
import io
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsockserver import _http_patches as _http
from fastsockserver import _http_py
from fastsockserver._http_select import http_paths
from support import code_result, run_code

HYP = dict(deadline=None, database=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow])

stdlib_parse_headers = getattr(http.client.parse_headers, "__wrapped__",
                               http.client.parse_headers)
fast_parse_headers = _http._make_parse_headers(http.client)


class _SameBoundaryGenerator(email.generator.Generator):
    """Message.as_string()'s generator, with one boundary where it makes one up
    (a multipart message without one): it draws a random one, even into an
    encoded header."""

    @classmethod
    def _make_boundary(cls, text=None):
        return "made-up-boundary"


def _as_string(message):
    text = io.StringIO()
    _SameBoundaryGenerator(text, mangle_from_=False, maxheaderlen=0,
                           policy=message.policy).flatten(message)
    return text.getvalue()


def described(message):
    """Everything the parser sets on a message, comparable across two parses."""
    state = dict(vars(message))
    state["defects"] = [(type(d), str(d)) for d in state["defects"]]
    if isinstance(state["_payload"], list):  # parts (message/*, multipart/*)
        state["_payload"] = [described(part) for part in state["_payload"]]
    return type(message), state, _as_string(message)


def outcome(parse, block, **kwargs):
    return outcome_from(parse, io.BytesIO(block), **kwargs)


def outcome_from(parse, fp, **kwargs):
    """The message parse(fp) gives (or its error), and the bytes left in fp."""
    try:
        result = described(parse(fp, **kwargs))
    except Exception as exc:  # the same error from both, or the test fails
        result = (type(exc), exc.args)
    return result, fp.read()  # and the same bytes left for the body


# Header names of the characters the email parser's headerRE allows in one.
NAME_CHARS = "".join(chr(c) for c in range(0x21, 0x7f) if c != 0x3a)
names = st.one_of(
    st.sampled_from(["Host", "Content-Length", "Content-Type", "Connection",
                     "Accept", "X-Forwarded-For", "content-type"]),
    st.text(NAME_CHARS, min_size=1, max_size=12))
values = st.one_of(
    st.sampled_from(["127.0.0.1", "close", "text/plain; charset=utf-8", "", " ",
                     "\t x \t", "a:b:c", "  leading", "trailing  "]),
    st.text("".join(chr(c) for c in range(0x20, 0x7f)) + "\t", max_size=30))
ends = st.sampled_from(["\r\n", "\n"])
plain_lines = st.builds(lambda n, v, e: (n + ":" + v + e).encode("ascii"), names, values, ends)
# Lines the email parser treats in its own ways: continuations, line breaks of
# str.splitlines, bytes beyond ASCII, no name, a space in the name, a unix
# "From " line, parts types, a bare "\r", no line end at the end of input.
odd_lines = st.sampled_from([
    b" continued\r\n", b"\tcontinued\n", b"X: a\rb\r\n", b"X: a\x0bb\r\n",
    b"X: a\x0cb\r\n", b"X: a\x1cb\r\n", b"X: caf\xe9\r\n", b"X: a\x85b\r\n",
    b": no name\r\n", b"Bad Name: x\r\n", b"no colon at all\r\n",
    b"From someone\r\n", b"From: someone\r\n",
    b"Content-Type: multipart/form-data; boundary=xyz\r\n",
    b"content-TYPE:Message/rfc822\n", b"Content-Type: message/delivery-status\r\n",
    b"X: \x00\r\n", b"X\x7f: y\r\n", b"X: y\r\r\n", b"X: y",
])
terminators = st.sampled_from([b"\r\n", b"\n", b""])


@settings(max_examples=300, **HYP)
@given(st.lists(plain_lines, max_size=12), terminators, st.binary(max_size=8))
def test_plain_blocks_same_message_without_the_email_parser(lines, end, body):
    block = b"".join(lines) + end
    parts_type = any(line.lower().startswith(b"content-type:") and (
        b"multipart" in line.lower() or b"message" in line.lower()) for line in lines)
    fast = _http._plain_message(http.client, http.client._read_headers(io.BytesIO(block)))
    assert (fast is None) == parts_type  # only a parts type sends a plain block on
    data = block + (body if end else b"")
    assert outcome(fast_parse_headers, data) == outcome(stdlib_parse_headers, data)


@settings(max_examples=400, **HYP)
@given(st.lists(st.one_of(plain_lines, odd_lines), max_size=10), terminators,
       st.binary(max_size=8))
def test_any_block_same_message_as_the_stdlib(lines, end, body):
    data = b"".join(lines) + end + body
    assert outcome(fast_parse_headers, data) == outcome(stdlib_parse_headers, data)


# Each build of the request path (pure, and compiled where built): pairs_by_scan
# is what the compiled build runs on every block, pairs_by_regex the pure one.
BUILDS = [pytest.param(path, id="py" if path is _http_py else "c") for path in http_paths()]


def _as_read(block):
    """``block``'s lines as readline gives them, up to its end."""
    return io.BytesIO(block).readlines() + [b""]


@pytest.mark.parametrize("build", BUILDS)
@settings(max_examples=400, **HYP)
@given(st.lists(st.one_of(plain_lines, odd_lines), max_size=10), terminators,
       st.lists(st.binary(max_size=12), max_size=4))
def test_scan_finds_the_pairs_the_regular_expressions_find(build, lines, end, items):
    as_read = _as_read(b"".join(lines) + end)
    assert build.pairs_by_scan(as_read) == build.pairs_by_regex(as_read)
    # Any other items: where the scan finds pairs, they are the regex's; it
    # may refuse (None: the email parser's) a line split over two items.
    found = build.pairs_by_scan(items)
    assert found is None or found == build.pairs_by_regex(items)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("lines", [
    [], [b""], [b"\r\n"], [b"\n"], [b"\r"], [b"A:\r\n", b""], [b"A: \t\r\n"],
    [b":\r\n"], [b"A\r\n"], [b"A: b\r\r\n"], [b"A: b\x00\r\n"], [b"A: b\x7f\r\n"],
    [b"A:b\n", b"\n", b"B:c\n"], [b"A:b\n", b"\r\n", b"", b""], [b"A:b"],
    [b"A:\tb\t\n", b"\n"], [b"\x80: b\n"], [b"A: \x80\n"],
])
def test_scan_edges(build, lines):
    assert build.pairs_by_scan(lines) == build.pairs_by_regex(lines)


@pytest.mark.parametrize("build", BUILDS)
def test_scan_refuses_what_is_not_one_line_per_bytes_item(build):
    assert build.pairs_by_regex([b"Ho", b"st: x\r\n"]) == [("Host", "x")]
    assert build.pairs_by_scan([b"Ho", b"st: x\r\n"]) is None
    assert build.pairs_by_scan([bytearray(b"Host: x\r\n")]) is None
    assert build.pairs_by_scan([b"Host: x\r\n", memoryview(b"\r\n")]) is None


@pytest.mark.parametrize("block", [
    b"X: " + b"a" * 70000 + b"\r\n\r\n",                        # LineTooLong
    b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n",  # too many headers
    b"", b"\r\n", b"\n", b"Host: x\r\n",
])
def test_limits_and_edges_as_the_stdlib(block):
    assert outcome(fast_parse_headers, block) == outcome(stdlib_parse_headers, block)


def test_other_message_class_goes_to_the_email_parser():
    class Headers(http.client.HTTPMessage):
        pass
    block = b"Host: x\r\nAccept: */*\r\n\r\n"
    fast = outcome(fast_parse_headers, block, _class=Headers)
    assert fast == outcome(stdlib_parse_headers, block, _class=Headers)
    assert fast[0][0] is Headers


def test_plain_block_is_not_parsed_by_the_email_parser(monkeypatch):
    # The point of it: a typical request's headers never reach email.parser.
    def refuse(*args, **kwargs):
        raise AssertionError("email parser used")
    monkeypatch.setattr(http.client.email.parser.Parser, "parsestr", refuse)
    message = fast_parse_headers(io.BytesIO(
        b"Host: 127.0.0.1:8000\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\nbody"))
    assert message.items() == [("Host", "127.0.0.1:8000"), ("User-Agent", "curl/8"),
                               ("Accept", "*/*")]
    with pytest.raises(AssertionError, match="email parser used"):
        fast_parse_headers(io.BytesIO(b"Host: x\r\n folded\r\n\r\n"))


INSTALL_STATE = r"""
import json, sys, importlib, importlib.util
import fastsockserver
before = "http.client" in sys.modules
fastsockserver.install()
fastsockserver.install()
# Asking for the spec without importing does not use the hook up; its loader
# answers as the real one does.
source = importlib.util.find_spec("http.client").loader.get_source("http.client")
import http.client, inspect, io
import fastsockserver._http_patches as h

def patched(module):
    f = module.parse_headers
    return (getattr(f, "__wrapped__", None) is not None
            and f.__code__ is not f.__wrapped__.__code__
            and not hasattr(f.__wrapped__, "__wrapped__")
            and str(inspect.signature(f)) == str(inspect.signature(f.__wrapped__)))

state = {
    "before": before,
    "source": "def parse_headers" in source,
    "patched": patched(http.client),
    "loaders": [type(http.client.__loader__).__name__,
                type(http.client.__spec__.loader).__name__],
    "getsource": "def parse_headers" in inspect.getsource(http.client),
    "hooks": sum(isinstance(f, h._PatchOnImport) for f in sys.meta_path),
    "parsed": http.client.parse_headers(io.BytesIO(b"A: 1\r\n\r\n")).items(),
}
module = importlib.reload(http.client)
state["reloaded"] = [patched(module), type(module.__spec__.loader).__name__]
del sys.modules["http.client"]
import http.client
state["imported_again"] = patched(sys.modules["http.client"])
print(json.dumps(state))
"""


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
@pytest.mark.parametrize("imported_first", [False, True], ids=["later", "first"])
def test_install_patches_http_client(pure, imported_first):
    code = ("import http.client\n" if imported_first else "") + INSTALL_STATE
    state = code_result(code, pure)
    assert state == {
        "before": imported_first, "source": True, "patched": True,
        "loaders": ["SourceFileLoader", "SourceFileLoader"], "getsource": True,
        "hooks": 1, "parsed": [["A", "1"]],
        "reloaded": [True, "SourceFileLoader"], "imported_again": True,
    }


def test_without_install_http_client_is_untouched():
    out = run_code("""
        import fastsockserver, sys
        import http.client
        assert not hasattr(http.client.parse_headers, "__wrapped__")
        assert not any(type(f).__module__ == "fastsockserver._http_patches" for f in sys.meta_path)
    """)
    assert out.returncode == 0, out.stderr


class FakeClient:
    """An http.client-like module for patch_http_client's checks."""
    __name__ = "http.client"
    HTTPMessage = http.client.HTTPMessage
    _read_headers = staticmethod(http.client._read_headers)


def _module_with(parse_headers):
    module = FakeClient()
    module.parse_headers = parse_headers
    return module


def test_patch_needs_the_parse_headers_it_stands_in_for():
    module = _module_with(stdlib_parse_headers)
    _http.patch_http_client(module)
    assert module.parse_headers.__wrapped__ is stdlib_parse_headers

    def later_version(fp, _class=http.client.HTTPMessage, *, _max_headers=None):
        pass
    later_version.__module__ = "http.client"

    def someone_elses(fp, _class=http.client.HTTPMessage):
        pass

    wrapped = functools.wraps(stdlib_parse_headers)(lambda fp, _class=None: None)
    for other in (later_version, someone_elses, wrapped):
        module = _module_with(other)
        _http.patch_http_client(module)
        assert module.parse_headers is other  # left as it is


@pytest.mark.skipif(not hasattr(http.client, "_parse_header_lines"), reason="Python 3.12+")
def test_a_replaced_parse_header_lines_gets_every_block(monkeypatch):
    seen = []

    def recording(lines, _class=http.client.HTTPMessage):
        seen.append(lines)
        return "theirs"
    monkeypatch.setattr(http.client, "_parse_header_lines", recording)
    assert fast_parse_headers(io.BytesIO(b"Host: x\r\n\r\n")) == "theirs"
    assert seen == [[b"Host: x\r\n", b"\r\n"]]


# The later form of parse_headers and _read_headers (CPython's development branch for
# 3.15): the header count limit is an argument, and the lines no longer end with the blank
# one. Written here in that form (the same parameters and names), as a module of its own,
# so that its patch is checked on every Python.
LATER_FORM = '''
import email.parser

def _read_headers(fp, max_headers):
    headers = []
    if max_headers is None:
        max_headers = _MAXHEADERS
    while True:
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise LineTooLong("header line")
        if line in (b"\\r\\n", b"\\n", b""):
            break
        headers.append(line)
        if len(headers) > max_headers:
            raise HTTPException(f"got more than {max_headers} headers")
    return headers

def _parse_header_lines(header_lines, _class=HTTPMessage):
    text = b"".join(header_lines).decode("iso-8859-1")
    return email.parser.Parser(_class=_class).parsestr(text)

def parse_headers(fp, _class=HTTPMessage, *, _max_headers=None):
    headers = _read_headers(fp, _max_headers)
    return _parse_header_lines(headers, _class)
'''


def later_form_module():
    module = types.ModuleType("http.client")
    module.__dict__.update(_MAXLINE=http.client._MAXLINE, _MAXHEADERS=http.client._MAXHEADERS,
                           LineTooLong=http.client.LineTooLong,
                           HTTPException=http.client.HTTPException,
                           HTTPMessage=http.client.HTTPMessage)
    exec(LATER_FORM, vars(module))
    return module


def test_the_later_form_is_patched():
    module = later_form_module()
    original = module.parse_headers
    _http.patch_http_client(module)
    assert module.parse_headers is not original
    assert module.parse_headers.__wrapped__ is original


@settings(max_examples=300, **HYP)
@given(st.lists(st.one_of(plain_lines, odd_lines), max_size=10), terminators,
       st.binary(max_size=8), st.sampled_from([None, 0, 2, 5]))
def test_the_later_form_same_message_and_limit(lines, end, body, max_headers):
    module = later_form_module()
    original = module.parse_headers
    _http.patch_http_client(module)
    data = b"".join(lines) + end + body
    kwargs = {} if max_headers is None else {"_max_headers": max_headers}
    assert outcome(module.parse_headers, data, **kwargs) == outcome(original, data, **kwargs)


def test_the_later_form_only_with_its_own_read_headers():
    """A later parse_headers beside a _read_headers of the 3.9-3.13 form is
    neither form: left as it is."""
    module = later_form_module()
    exec(EARLIER_READ_HEADERS, vars(module))
    original = module.parse_headers
    _http.patch_http_client(module)
    assert module.parse_headers is original


EARLIER_READ_HEADERS = '''
def _read_headers(fp):
    headers = []
    while True:
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise LineTooLong("header line")
        headers.append(line)
        if len(headers) > _MAXHEADERS:
            raise HTTPException("got more than %d headers" % _MAXHEADERS)
        if line in (b"\\r\\n", b"\\n", b""):
            break
    return headers
'''
