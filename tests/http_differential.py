"""http.server's request path under install() (fastsockserver._http_py and its
compiled build) against the stdlib's: one request stream fed to a handler of
each, everything compared. Used by tests/test_http_request_path.py and
tests/fuzz/fuzz_http_request.py.

Each side is its own copy of http.server's source, executed anew: the
stdlib's left as it is, the others patched with _http_patches.patch_http_server
and one build. The handler reads the stream from memory and runs
handle_one_request until the stdlib's handle() would stop, recording after
each request what it set (command, path, request_version, requestline,
close_connection, headers as tests/test_http_headers.py describes them), the
calls of the methods a scenario overrides, the log lines and the bytes it
wrote. http.client.parse_headers is the stdlib's while the stdlib's copy runs,
install()'s while a patched one does.
"""
import contextlib
import http.client
import http.server
import importlib.util
import io
import random
import sys

from test_http_headers import described, fast_parse_headers, stdlib_parse_headers

from fastsockserver import _http_patches, _http_py
from fastsockserver._http_select import http_paths

LOG_TIME = "06/Dec/2026 23:59:59"
DATE = "Sun, 06 Dec 2026 23:59:59 GMT"
BODY = b"Hello, world\n"

# Methods a scenario may override in its handler (each records its call,
# then does what the stdlib's does, through super()).
OVERRIDABLE = ("parse_request", "handle_one_request", "send_response", "send_response_only",
               "send_header", "end_headers", "flush_headers", "log_message", "log_request",
               "log_error", "send_error", "version_string", "address_string",
               "handle_expect_100")


def _fresh_http_server(name):
    spec = importlib.util.spec_from_file_location(name, http.server.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def implementations():
    """(name, http.server copy): the stdlib's first, then one per build of
    the fast path that patched its copy."""
    found = [("stdlib", _fresh_http_server("_http_server_stdlib"))]
    for path in http_paths():
        name = "py" if path is _http_py else "c"
        module = _fresh_http_server("_http_server_" + name)
        _http_patches.patch_http_server(module, path)
        # (the fast methods carry the stdlib's as __wrapped__)
        assert hasattr(module.BaseHTTPRequestHandler.parse_request, "__wrapped__"), name
        found.append((name, module))
    return found


def handler_class(module, protocol_version, overrides):
    calls = []

    def recording(name):
        def method(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return getattr(super(Handler, self), name)(*args, **kwargs)
        return method

    namespace = {name: recording(name) for name in overrides}
    namespace.update(
        protocol_version=protocol_version,
        # The clock read apart: the texts are the same on both sides
        # (install()'s per-second texts have their own tests).
        log_date_time_string=lambda self: LOG_TIME,
        date_time_string=lambda self, timestamp=None: DATE,
        do_GET=_answer, do_POST=_answer, do_HEAD=_answer, do_OPTIONS=_close_answer)
    Handler = type("Handler", (module.BaseHTTPRequestHandler,), namespace)
    return Handler, calls


def _answer(self):
    self.send_response(200)
    self.send_header("Content-Type", "text/plain")
    self.send_header("Content-Length", str(len(BODY)))
    self.end_headers()
    if self.command != "HEAD":
        self.wfile.write(BODY)


def _close_answer(self):
    self.send_response(204, "No \xe9 content")
    self.send_header("Connection", "close")
    self.send_header("X-Code", self.headers.get("X-Code", "none"))
    self.end_headers()


class _Server:
    pass


def _described(headers):
    """test_http_headers.described, or where the message cannot be written
    (3.13's generator refuses a value with a line break str.splitlines
    knows, such as \x0b), its state and the error."""
    try:
        return described(headers)
    except Exception as exc:
        state = dict(vars(headers))
        state["defects"] = [(type(d), str(d)) for d in state["defects"]]
        if isinstance(state["_payload"], list):  # parts (message/*, multipart/*)
            state["_payload"] = [_described(part) for part in state["_payload"]]
        return "not writable", type(exc).__name__, str(exc), state


_STATE = ("command", "path", "request_version", "requestline", "close_connection",
          "raw_requestline")


def outcome(module, wire, protocol_version="HTTP/1.1", overrides=(), reader="buffered"):
    """What a handler of the http.server copy ``module`` does with ``wire``."""
    Handler, calls = handler_class(module, protocol_version, overrides)
    handler = Handler.__new__(Handler)
    handler.server = _Server()
    handler.client_address = ("127.0.0.1", 40000)
    source = io.BytesIO(wire)
    handler.rfile = io.BufferedReader(source) if reader == "buffered" else source
    handler.wfile = io.BytesIO()
    log = io.StringIO()
    requests = []
    parse_headers = stdlib_parse_headers if module.__name__.endswith("stdlib") \
        else fast_parse_headers
    saved = http.client.parse_headers
    http.client.parse_headers = parse_headers
    try:
        with contextlib.redirect_stderr(log):
            handler.close_connection = True
            while True:  # handle()'s loop, one request at a time
                try:
                    handler.handle_one_request()
                except Exception as exc:  # the same from every side, or it differs
                    requests.append(("raised", type(exc).__name__, str(exc)))
                    break
                state = {name: getattr(handler, name, "<unset>") for name in _STATE}
                headers = getattr(handler, "headers", None)
                state["headers"] = None if headers is None else _described(headers)
                state["_headers_buffer"] = getattr(handler, "_headers_buffer", "<unset>")
                requests.append(state)
                if handler.close_connection:
                    break
                handler.__dict__.pop("headers", None)
    finally:
        http.client.parse_headers = saved
    return {"requests": requests, "calls": calls, "log": log.getvalue(),
            "wire": handler.wfile.getvalue(), "left": source.read()}


def differences(wire, protocol_version="HTTP/1.1", overrides=(), reader="buffered",
                modules=None):
    """[(name, stdlib's outcome, its outcome)] for each implementation that differs."""
    modules = modules or implementations()
    expected = outcome(modules[0][1], wire, protocol_version, overrides, reader)
    found = []
    for name, module in modules[1:]:
        got = outcome(module, wire, protocol_version, overrides, reader)
        if got != expected:
            found.append((name, expected, got))
    return found


# ---------------------------------------------------------------- the corpus

METHODS = ["GET", "GET", "POST", "HEAD", "OPTIONS", "PUT", "get", "G\xe9T", "", "GET\x85"]
PATHS = ["/", "/hello", "//x", "///a//b", "/p?q=1&r", "*", "http://h/x", "/\xe9", "/a\x00b",
         "/a\\b", "/\x1bx", "/%20", "/" + "p" * 200]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/3",
            "HTTP/1.10", "HTTP/01.1", "HTTP/1", "HTTP/1.1.1", "http/1.1",
            "HTTP/1.\xb2", "HTTP/\xb9.1",
            "HTTP/1_0.1", "HTTP/ 1.1", "HTTP/+1.1", "HTTP/12345678901.1", "HTTP/1.-1",
            "HTTP/1.1\x85", "HTTP/1.1 extra", "", "HTTP/2", "HTTP/1.1\x0b"]
SEPARATORS = [" ", " ", "  ", "\t", " \x0c", "\x1c", "\xa0"]
LINE_ENDS = ["\r\n", "\r\n", "\n", "\r\r\n", " \r\n", ""]
HEADERS = [
    "Host: 127.0.0.1:8080", "User-Agent: wrk", "Accept: */*", "Content-Length: 0",
    "Connection: close", "Connection: keep-alive", "connection: Keep-Alive",
    "CONNECTION: CLOSE", "Connection:  close ", "Connection: upgrade", "Expect: 100-continue",
    "expect: 100-Continue", "Expect: 100-continue, x", "X-Code: \xe9t\xe9", "X-Empty:",
    "X-Tab:\tvalue\t", " continued line", "\tcontinued", "NoColon", ": no name",
    "X Space: y", "Content-Type: multipart/form-data; boundary=x",
    "Content-Type: message/rfc822", "Content-Type: text/plain", "From nobody",
    "X-Bare-CR: a\rb", "X-VT: a\x0bb", "X-Long: " + "v" * 300, "Connection: close, te",
]


def random_head(rng):
    """One request head (bytes) drawn from the pools above."""
    if rng.random() < 0.04:
        return rng.choice([b"", b"\r\n", b"\n", b"GET\r\n", b" \r\n", b"GET /\r\n",
                           b"POST /\r\n", b"GET / HTTP/1.1"])
    # Half the request lines well formed: those take the fast path.
    version = rng.choice(VERSIONS if rng.random() < 0.5 else VERSIONS[:4])
    words = [rng.choice(METHODS[:4] if rng.random() < 0.6 else METHODS), rng.choice(PATHS),
             version]
    if rng.random() < 0.1:
        words = words[:rng.choice([1, 2, 2])] if rng.random() < 0.8 else words + ["more"]
    separator = rng.choice(SEPARATORS) if rng.random() < 0.3 else " "
    line = separator.join(words) + rng.choice(LINE_ENDS[:3] if rng.random() < 0.7 else LINE_ENDS)
    headers = [rng.choice(HEADERS) for _ in range(rng.choice([0, 1, 2, 3, 5]))]
    end = rng.choice(["\r\n", "\r\n", "\n"])
    head = line + "".join(h + end for h in headers)
    if rng.random() < 0.9:
        head += end
    return head.encode("latin-1")


def boundary_heads():
    """Heads at the limits: 65536/65537-byte request lines, header lines of
    _MAXLINE bytes and one more, 99/100/101 headers, nothing at all."""
    heads = []
    for length in (65535, 65536, 65537, 70000):
        # the request line's bytes including its end
        path = "/" + "a" * (length - len("GET  HTTP/1.1\r\n") - 1)
        heads.append(("GET " + path + " HTTP/1.1\r\n\r\n").encode())
    for length in (65535, 65536, 65537):
        value = "v" * (length - len("X-Long: \r\n"))
        heads.append(("GET / HTTP/1.1\r\nX-Long: " + value + "\r\n\r\n").encode())
    for count in (99, 100, 101):
        heads.append(("GET / HTTP/1.1\r\n"
                      + "".join("X-%d: %d\r\n" % (i, i) for i in range(count))
                      + "\r\n").encode())
    heads.append(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the stream ends in the head
    return heads


def corpus(count, seed=28):
    """``count`` request streams: boundary heads, then generated ones, one to
    three requests each (pipelined)."""
    rng = random.Random(seed)
    streams = boundary_heads()
    while len(streams) < count:
        streams.append(b"".join(random_head(rng) for _ in range(rng.choice([1, 1, 2, 3]))))
    return streams[:count]


def scenario(rng):
    """A handler scenario: (protocol_version, overrides, reader)."""
    protocol_version = rng.choice(["HTTP/1.1", "HTTP/1.0"])
    overrides = ()
    if rng.random() < 0.3:
        overrides = tuple(sorted(rng.sample(OVERRIDABLE, rng.choice([1, 2, 3]))))
    return protocol_version, overrides, rng.choice(["buffered", "bytes"])


if __name__ == "__main__":  # a quick look: python tests/http_differential.py
    print(sys.version)
