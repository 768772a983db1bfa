"""install()'s wsgiref.handlers.BaseHandler.write and send_headers (_http_py,
pure and compiled) against the stdlib's: the same bytes written to stdout,
the same error output and handler state, for a range of WSGI applications and
handler variants; the head and first chunk leave in one write where the
methods involved are the stdlib's own, each piece as the stdlib writes it
otherwise. And wsgiref.simple_server's get_environ: the same environ, in the
same order, for generated requests."""
import email.parser
import http.client
import importlib.util
import io
import wsgiref.handlers
import wsgiref.simple_server

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsockserver import _http_patches, _http_py
from fastsockserver._http_select import http_paths


def _fresh_handlers(name):
    spec = importlib.util.spec_from_file_location(name, wsgiref.handlers.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.format_date_time = lambda timestamp: "Sun, 06 Dec 2026 23:59:59 GMT"
    return module


MODULES = [("stdlib", _fresh_handlers("wsgiref._handlers_stdlib"))]
for _path in http_paths():
    _name = "py" if _path is _http_py else "c"
    _module = _fresh_handlers("wsgiref._handlers_" + _name)
    _http_patches.patch_wsgiref_handlers(_module, _path)
    assert hasattr(_module.BaseHandler.write, "__wrapped__")
    MODULES.append((_name, _module))


def app_one_chunk(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\n"]


def app_chunks(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"", b"a", b"bc", b""]


def app_empty(environ, start_response):
    start_response("204 No Content", [])
    return []


def app_write_callable(environ, start_response):
    write = start_response("200 OK", [("X-A", "1"), ("Date", "mine"), ("Server", "mine")])
    write(b"first ")
    write(b"second")
    return [b" third"]


def app_latin1_status(environ, start_response):
    start_response("200 \xe9t\xe9", [("X-\xe9", "\xff")])
    return [b"x"]


def app_raises(environ, start_response):
    start_response("200 OK", [])
    raise ValueError("the app failed")


def app_raises_after_body(environ, start_response):
    start_response("200 OK", [])
    yield b"part"
    raise ValueError("the app failed later")


def app_bad_status(environ, start_response):
    start_response("200 \u20ac", [])  # not latin-1: fails as the status line is made
    return [b"x"]


APPS = [app_one_chunk, app_chunks, app_empty, app_write_callable, app_latin1_status,
        app_raises, app_raises_after_body, app_bad_status]


class Recording(io.BytesIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))
        return super().write(data)


VARIANTS = {
    "plain": {},
    "http/0.9": {"environ": {"SERVER_PROTOCOL": "HTTP/0.9"}},
    "cgi": {"origin_server": False},
    "no server_software": {"server_software": None},
    "own send_preamble": {"override": "send_preamble"},
    "own _write": {"override": "_write"},
    "own send_headers": {"override": "send_headers"},
    "own client_is_modern": {"override": "client_is_modern"},
    "own cleanup_headers": {"override": "cleanup_headers"},
}


def run(module, app, variant):
    calls = []
    namespace = {"origin_server": variant.get("origin_server", True),
                 "server_software": variant.get("server_software", "WSGIServer/0.2")}
    name = variant.get("override")
    if name:
        def recorded(self, *args):
            calls.append((name, args))
            return getattr(super(Handler, self), name)(*args)
        namespace[name] = recorded
    Handler = type("Handler", (module.SimpleHandler,), namespace)
    environ = {"SERVER_PROTOCOL": "HTTP/1.0", "REQUEST_METHOD": "GET", "SERVER_NAME": "x",
               "SERVER_PORT": "80"}
    environ.update(variant.get("environ", {}))
    stdout, stderr = Recording(), io.StringIO()
    handler = Handler(io.BytesIO(), stdout, stderr, environ, multithread=True)
    handler.log_exception = lambda exc_info: stderr.write(
        "{}: {}\n".format(exc_info[0].__name__, exc_info[1]))
    try:
        handler.run(app)
        raised = None
    except Exception as exc:
        raised = (type(exc).__name__, str(exc))
    state = {k: getattr(handler, k, None) for k in ("status", "bytes_sent", "headers_sent")}
    return {"out": stdout.getvalue(), "err": stderr.getvalue(), "raised": raised,
            "state": state, "calls": calls}, stdout.writes


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("app", APPS, ids=[a.__name__ for a in APPS])
def test_same_bytes_as_stdlib(app, variant):
    expected, stdlib_writes = run(MODULES[0][1], app, VARIANTS[variant])
    for name, module in MODULES[1:]:
        got, writes = run(module, app, VARIANTS[variant])
        assert got == expected, name
        if variant in ("own send_preamble", "own _write"):
            assert writes == stdlib_writes, name  # each piece as the stdlib writes it


@pytest.mark.parametrize("name", [name for name, _ in MODULES[1:]])
def test_head_and_first_chunk_in_one_write(name):
    module = dict(MODULES)[name]
    _, stdlib_writes = run(MODULES[0][1], app_one_chunk, {})
    _, writes = run(module, app_one_chunk, {})
    assert len(stdlib_writes) == 5  # status, Date, Server, headers, body
    assert writes == [b"".join(stdlib_writes)]


# ---------------------------------------------------------------- get_environ

def _fresh_simple_server(name):
    spec = importlib.util.spec_from_file_location(name, wsgiref.simple_server.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STDLIB_SERVER = _fresh_simple_server("wsgiref._simple_server_stdlib")
PATCHED_SERVERS = []
for _path in http_paths():
    _module = _fresh_simple_server("wsgiref._simple_server_" + ("py" if _path is _http_py else "c"))
    _http_patches.patch_wsgiref_simple_server(_module, _path)
    assert hasattr(_module.WSGIRequestHandler.get_environ, "__wrapped__")
    PATCHED_SERVERS.append(_module)


class _Server:
    base_environ = {"SERVER_NAME": "localhost", "GATEWAY_INTERFACE": "CGI/1.1",
                    "SERVER_PORT": "8000", "REMOTE_HOST": "", "CONTENT_LENGTH": "",
                    "SCRIPT_NAME": ""}


class _OwnMessage(http.client.HTTPMessage):
    pass


def _environ(module, headers, path, host_name):
    namespace = {}
    if host_name:  # up to 3.12, REMOTE_HOST comes from address_string()
        namespace["address_string"] = lambda self: "client.example"
    handler_class = type("Handler", (module.WSGIRequestHandler,), namespace)
    handler = handler_class.__new__(handler_class)
    handler.server, handler.client_address = _Server(), ("127.0.0.1", 40000)
    handler.request_version, handler.command, handler.path = "HTTP/1.1", "POST", path
    handler.headers = headers
    return list(handler.get_environ().items())


_NAMES = st.sampled_from(["Host", "Content-Type", "content-type", "CONTENT-LENGTH",
                          "Content-Length", "X-Dup", "x-dup", "Content_Type", "Http-X",
                          "Remote-Addr", "Query-String", "Accept"])
_VALUES = st.text(st.sampled_from(" \tab=;/%\xe9\xff0123456789"), max_size=8)
_PATHS = st.sampled_from(["/", "/a%20b", "/a?x=1&y=%41", "/?", "/%e9?q", "/a?b?c", "/%zz"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=8), path=_PATHS,
       host_name=st.booleans(), message_class=st.sampled_from(
           [http.client.HTTPMessage, _OwnMessage]))
def test_get_environ_same_as_stdlib(fields, path, host_name, message_class):
    block = "".join("{}: {}\r\n".format(name, value) for name, value in fields) + "\r\n"
    messages = [email.parser.Parser(_class=message_class).parsestr(block)]
    if message_class is http.client.HTTPMessage:
        plain = _http_py.plain_message(http.client, block.encode("iso-8859-1").splitlines(True))
        if plain is not None:  # the message install()'s parse_headers makes of it
            messages.append(plain)
    for headers in messages:
        expected = _environ(STDLIB_SERVER, headers, path, host_name)
        for module in PATCHED_SERVERS:
            assert _environ(module, headers, path, host_name) == expected
