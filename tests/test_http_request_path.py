"""install()'s request path for http.server (fastsockserver._http_py and its
compiled build, fastsockserver._http) against the stdlib's, on a generated
corpus of request streams: the same handler state after each request, the
same calls of overridden methods, log lines, bytes written and bytes left.
See tests/http_differential.py for how each side runs."""
import contextlib
import http.client
import io
import os
import random
import subprocess
import sys

import http_differential as diff
import pytest

import fastsockserver
from fastsockserver import _http_select

MODULES = diff.implementations()
CORPUS = diff.corpus(3000)


def test_both_builds_compared_where_built():
    names = [name for name, _ in MODULES]
    assert names[:2] == ["stdlib", "py"]
    assert ("c" in names) == (_http_select.http_paths()[-1] is not diff._http_py)


def _check(wire, *scenario):
    found = diff.differences(wire, *scenario, modules=MODULES)
    assert not found, "{}: {!r} under {}\nstdlib {!r:.2000}\n   got {!r:.2000}".format(
        found[0][0], wire[:300], scenario, found[0][1], found[0][2])


@pytest.mark.parametrize("part", range(10))
def test_corpus_same_as_stdlib(part):
    rng = random.Random(part)
    for wire in CORPUS[part::10]:
        _check(wire, *diff.scenario(rng))


OVERRIDE_WIRES = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"POST //b HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
    b"GET /c HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"BREW / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"x" * 70000 + b"\r\n\r\n",
    b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.x\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("protocol_version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("override", diff.OVERRIDABLE)
def test_each_override_called_as_the_stdlib_calls_it(protocol_version, override):
    calls = []
    for wire in OVERRIDE_WIRES:
        calls += diff.outcome(MODULES[0][1], wire, protocol_version, (override,))["calls"]
        _check(wire, protocol_version, (override,))
    # The check has a subject (an HTTP/1.0 server never answers Expect).
    assert calls or (override, protocol_version) == ("handle_expect_100", "HTTP/1.0")


class _Text(str):
    def __str__(self):
        return "told " + str.__str__(self)


# Per request: (how server_version is set, the Date text). send_response's
# Server and Date lines are kept by their texts' identity: every change of
# them, and texts that are not exact str, must give the stdlib's lines.
_VERSIONS = [("class", "BaseHTTP/0.6", "Mon, 07 Dec 2026 10:00:00 GMT"),
             ("class", "BaseHTTP/0.6", "Mon, 07 Dec 2026 10:00:00 GMT"),
             ("instance", "Mine/1.0", "Mon, 07 Dec 2026 10:00:01 GMT"),
             ("class", "Other/2.0", _Text("Mon, 07 Dec 2026 10:00:01 GMT")),
             ("instance", _Text("Str/3.0"), _Text("Mon, 07 Dec 2026 10:00:01 GMT")),
             ("class", "Caf\xe9/1", "Mon, 07 Dec 2026 10:00:02 GMT"),
             ("class", "Snow\u2603/1", "Mon, 07 Dec 2026 10:00:03 GMT")]


def _with_changing_versions(module):
    handler = module.BaseHTTPRequestHandler
    Handler = type("Handler", (handler,), {"protocol_version": "HTTP/1.1"})
    handler = Handler.__new__(Handler)
    handler.server, handler.client_address = object(), ("127.0.0.1", 40000)
    handler.wfile = io.BytesIO()
    heads = []
    for where, version, date in _VERSIONS:
        handler.__dict__.pop("server_version", None)
        setattr(handler if where == "instance" else Handler, "server_version", version)
        Handler.date_time_string = lambda self, timestamp=None, date=date: date
        handler.request_version, handler.requestline = "HTTP/1.1", "GET / HTTP/1.1"
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                handler.send_response(200)
        except UnicodeEncodeError as exc:
            heads.append(("raised", str(exc)))
        heads.append(list(handler.__dict__.pop("_headers_buffer", [])))
    return heads


def test_server_and_date_lines_follow_every_change_of_their_texts():
    expected = _with_changing_versions(MODULES[0][1])
    assert "raised" in str(expected) and "told" in str(expected)  # (cases it has)
    for name, module in MODULES[1:]:
        assert _with_changing_versions(module) == expected, name


def _bare_handler(module, **attributes):
    Handler = type("Handler", (module.BaseHTTPRequestHandler,), attributes)
    handler = Handler.__new__(Handler)
    handler.request_version, handler.requestline = "HTTP/1.1", "GET / HTTP/1.1"
    handler.wfile = io.BytesIO()
    return handler


def _result(call):
    try:
        return call()
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _header_that_fails_to_encode(module):
    # The stdlib makes the head's buffer before the line: the buffer stays.
    handler = _bare_handler(module)
    raised = _result(lambda: handler.send_header("X-Name", "\u20ac"))
    return raised, _result(handler.end_headers), handler.wfile.getvalue()


def _versions_that_are_not_str(module):
    seen = []

    class Version(str):
        def __add__(self, other):
            seen.append("server_version + %r" % other)
            return str.__add__(self, other)

    def sys_version(self):
        seen.append("sys_version read")
        return "Python/3"

    results = []
    for server_version, system in [(None, None), (Version("Srv/1"), property(sys_version)),
                                   (None, property(sys_version)), ("Srv/2", 3)]:
        handler = _bare_handler(module, server_version=server_version, sys_version=system,
                                log_request=lambda self, *args: None,
                                date_time_string=lambda self, timestamp=None: "D")
        results.append(_result(lambda: handler.send_response(200)))
        results.append(list(handler.__dict__.get("_headers_buffer", [])))
    return results, seen


@pytest.mark.parametrize("case", [_header_that_fails_to_encode, _versions_that_are_not_str])
def test_response_head_errors_and_order_as_the_stdlib(case):
    expected = case(MODULES[0][1])
    for name, module in MODULES[1:]:
        assert case(module) == expected, name


class _LimitsChangedMidHead(io.BufferedReader):
    """As if another thread changed http.client's limits while a head is read."""

    def __init__(self, raw, limits):
        super().__init__(raw)
        self.calls, self.limits = 0, limits

    def readline(self, size=-1):
        self.calls += 1
        if self.calls == 3:  # the request line, one header line, then this
            http.client._MAXHEADERS, http.client._MAXLINE = self.limits
        return super().readline(size)


@pytest.mark.parametrize("limits", [(2, 65536), (100, 20)], ids=["headers", "line"])
def test_header_limits_read_line_by_line_as_the_stdlib(limits):
    wire = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: " + b"x" * 40 + b"\r\n\r\n"
    answers = []
    for name, module in MODULES:
        handler = _bare_handler(module, protocol_version="HTTP/1.1", do_GET=diff._answer,
                                log_message=lambda self, *args: None)
        handler.server, handler.client_address = diff._Server(), ("127.0.0.1", 40000)
        handler.rfile = _LimitsChangedMidHead(io.BytesIO(wire), limits)
        saved = http.client.parse_headers, http.client._MAXHEADERS, http.client._MAXLINE
        http.client.parse_headers = (diff.stdlib_parse_headers if name == "stdlib"
                                     else diff.fast_parse_headers)
        try:
            handler.handle_one_request()
        finally:
            http.client.parse_headers, http.client._MAXHEADERS, http.client._MAXLINE = saved
        answers.append((name, handler.wfile.getvalue().split(b"\r\n")[0]))
    assert answers[0][1].startswith(b"HTTP/1.1 431 ")  # (the limit changed mid-head)
    assert answers == [(name, answers[0][1]) for name, _ in MODULES]


def test_a_difference_is_seen(monkeypatch):
    """The comparison is live: a fast path that gets the path wrong fails it."""
    wire = b"GET //x HTTP/1.1\r\nHost: y\r\n\r\n"
    assert not diff.differences(wire, modules=MODULES)
    fast = MODULES[1][1].BaseHTTPRequestHandler
    original = fast.parse_request

    def wrong(self):
        result = original(self)
        self.path = self.path + "?"
        return result
    monkeypatch.setattr(fast, "parse_request", wrong)
    assert diff.differences(wire, modules=MODULES)


@pytest.mark.parametrize("no_extensions", ["", "1"])
def test_compiled_path_is_the_default_where_built(no_extensions):
    """As the core: the compiled build where it is built, the pure one with
    FASTSOCKSERVER_NO_EXTENSIONS; and install() puts that one's methods on
    BaseHTTPRequestHandler."""
    code = ("import fastsockserver; fastsockserver.install(); import http.server; "
            "import inspect; from fastsockserver import _http_select as s; "
            "m = http.server.BaseHTTPRequestHandler.send_response; "
            "print(s.http_path.__name__, s.COMPILED, inspect.unwrap(m).__module__, "
            "type(m).__name__)")
    env = dict(os.environ, FASTSOCKSERVER_NO_EXTENSIONS=no_extensions)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    name, compiled, wrapped, kind = out.stdout.split()
    assert wrapped == "http.server"
    built = fastsockserver.COMPILED  # the core is built: so is the request path
    if built and not no_extensions:
        assert (name, compiled) == ("fastsockserver._http", "True")
        assert kind == "cython_function_or_method"
    else:
        assert (name, compiled, kind) == ("fastsockserver._http_py", "False", "function")
