"""Strict request framing (``BaseHTTPRequestHandler.strict_framing`` under
install(), _framing.py): off, http.server answers every head as the stdlib
does; on, a head that request smuggling uses gets a 400 naming the rule, the
connection is closed and the refusal counted, and every other head is
answered as the stdlib does.

The servers are http.server's, each from a fresh copy of the module built on
the implementation under test (``impl``, ``fast_impl``) and, for fastsockserver,
patched as install() patches it (http_server_module); they serve a corpus of
request heads (CORPUS) over loopback, one connection each.
"""
import http.client
import http.server
import importlib
import importlib.machinery
import importlib.util
import re
import socket
import socketserver as stdlib_socketserver
import sys
import threading
import types

import pytest

from fastsockserver._framing import framing_violation
from support import WAIT, bounded, recv_to_end

# ---------------------------------------------------------------- the function

CR, LF = b"\r", b"\n"


def head(*field_lines, request_line=b"GET / HTTP/1.1", end=b"\r\n"):
    return [request_line + end] + [line + end for line in field_lines] + [b"\r\n"]


@pytest.mark.parametrize("lines, reason", [
    (head(b"Host: a"), None),
    (head(), None),
    (head(b"Content-Length: 5"), None),
    (head(b"Content-Length:5"), None),
    (head(b"Content-Length: \t005 "), None),  # OWS is not part of the value (RFC 9110 §5.5)
    (head(b"X: caf\xe9", b"X: a\tb", b"Y:", b"!#$%&'*+-.^_`|~09azAZ: v"), None),
    (head(b"Host: a")[:-1], None),  # 3.15's _read_headers: no blank line
    (head(b"Host: a")[:-1] + [b""], None),  # the head ended by the end of input
    ([b"GET / HTTP/1.1\r\n"], None),
    ([], None),
    (head(b"Host: a", end=b"\n"), "line not ended by CRLF"),
    (head(b"Host: a")[:1] + [b"Host: a\n", b"\r\n"], "line not ended by CRLF"),
    (head(b"Host: a")[:1] + [b"Host: a"], "line not ended by CRLF"),
    (head(b"Host: a")[:1] + [b"X: y\n", b"\r\n"], "line not ended by CRLF"),
    (head(b"X: a\rb"), "bare CR"),
    (head(b"X: a\rContent-Length: 5"), "bare CR"),
    (head(b"Host: a", request_line=b"GET /\r HTTP/1.1"), "bare CR"),
    ([b"GET / HTTP/1.1\r\n", b"X: a\nb\r\n"], "bare LF"),
    (head(b"X: a\x00b"), "NUL in the head"),
    (head(b"X\x00: a"), "NUL in the head"),
    (head(request_line=b"GET /\x00 HTTP/1.1"), "NUL in the head"),
    (head(b"X: a", b" folded"), "obs-fold (a field line beginning with whitespace)"),
    (head(b"X: a", b"\tfolded"), "obs-fold (a field line beginning with whitespace)"),
    (head(b" Host: a"), "obs-fold (a field line beginning with whitespace)"),
    (head(b"no colon"), "field line without a colon"),
    (head(b"Host : a"), "whitespace between a field name and its colon"),
    (head(b"Transfer-Encoding\t: chunked"), "whitespace between a field name and its colon"),
    (head(b": no name"), "field name not a token"),
    (head(b"Bad Name: x"), "field name not a token"),
    (head(b"X@: y"), "field name not a token"),
    (head(b"\xdc: y"), "field name not a token"),
    (head(b"X\x7f: y"), "field name not a token"),
    (head(b"X: a\x01"), "control character in a field value"),
    (head(b"X: a\x0bb"), "control character in a field value"),
    (head(b"Content-Length: 5\x0c"), "control character in a field value"),
    (head(b"X: a\x7f"), "control character in a field value"),
    (head(b"Content-Length: 5", b"Content-Length: 5"), "Content-Length repeated"),
    (head(b"Content-Length: 0", b"content-length: 5"), "Content-Length repeated"),
    (head(b"Content-Length: 5, 5"), "Content-Length not a decimal number"),
    (head(b"Content-Length: +5"), "Content-Length not a decimal number"),
    (head(b"Content-Length: -0"), "Content-Length not a decimal number"),
    (head(b"Content-Length: 5_0"), "Content-Length not a decimal number"),
    (head(b"Content-Length: 0x5"), "Content-Length not a decimal number"),
    (head(b"Content-Length: 5\xa0"), "Content-Length not a decimal number"),
    (head(b"Content-Length:"), "Content-Length not a decimal number"),
    (head(b"Content-Length: 9223372036854775807"), None),
    (head(b"Content-Length: 0009223372036854775807"), None),
    (head(b"Content-Length: 9223372036854775808"), "Content-Length too large"),
    (head(b"Content-Length: 18446744073709551617"), "Content-Length too large"),
    (head(b"Transfer-Encoding: chunked"), "Transfer-Encoding (the handler does not decode one)"),
    (head(b"Transfer-Encoding: chunked", b"Content-Length: 5"),
     "Transfer-Encoding with Content-Length"),
    (head(b"Content-Length: 5", b"tRANSFER-ENCODING: x"), "Transfer-Encoding with Content-Length"),
])
def test_framing_violation(lines, reason):
    assert framing_violation(lines) == reason


@pytest.mark.parametrize("field_lines, request_line, reason", [
    ([b"Transfer-Encoding: chunked"], b"POST / HTTP/1.1", None),
    ([b"Transfer-Encoding: Chunked "], b"POST / HTTP/1.1", None),
    ([b"Transfer-Encoding: chunked"], b"POST / HTTP/2.1", None),
    ([b"Transfer-Encoding: chunked"], b"POST / HTTP/1.0", "Transfer-Encoding before HTTP/1.1"),
    ([b"Transfer-Encoding: chunked"], b"GET /", "Transfer-Encoding before HTTP/1.1"),
    ([b"Transfer-Encoding: chunked"], b"POST / HTTP/x", "Transfer-Encoding before HTTP/1.1"),
    ([b"Transfer-Encoding: chunked,"], b"POST / HTTP/1.1", "empty element in Transfer-Encoding"),
    ([b"Transfer-Encoding: ,chunked"], b"POST / HTTP/1.1", "empty element in Transfer-Encoding"),
    ([b"Transfer-Encoding: chunked, gzip"], b"POST / HTTP/1.1",
     "final transfer coding not chunked"),
    ([b"Transfer-Encoding: xchunked"], b"POST / HTTP/1.1", "final transfer coding not chunked"),
    ([b"Transfer-Encoding: identity"], b"POST / HTTP/1.1", "final transfer coding not chunked"),
    ([b"Transfer-Encoding: chunked;x=1"], b"POST / HTTP/1.1", "final transfer coding not chunked"),
    ([b"Transfer-Encoding: gzip, chunked"], b"POST / HTTP/1.1",
     "transfer coding other than chunked"),
    ([b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"], b"POST / HTTP/1.1",
     "transfer coding other than chunked"),
    ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], b"POST / HTTP/1.1",
     "chunked applied more than once"),
    ([b"Transfer-Encoding: chunked", b"Content-Length: 3"], b"POST / HTTP/1.1",
     "Transfer-Encoding with Content-Length"),
])
def test_framing_violation_of_a_handler_that_decodes_chunked(field_lines, request_line, reason):
    lines = head(*field_lines, request_line=request_line)
    assert framing_violation(lines, decodes_chunked=True) == reason
    assert framing_violation(lines) is not None  # without: any Transfer-Encoding


# ---------------------------------------------------------------- http.server on an implementation

_MODULES = {}


def http_server_module(impl, parse_headers=None):
    """A fresh http.server built on ``impl`` (a socketserver module); for
    fastsockserver, with install()'s patches: its http.server patch, and an
    http.client whose parse_headers is install()'s (or ``parse_headers``)."""
    key = (impl.__name__, parse_headers)
    if key in _MODULES:
        return _MODULES[key]
    loader = importlib.machinery.SourceFileLoader("http.server", http.server.__file__)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("http.server",
                                                                             loader))
    saved = sys.modules["socketserver"]
    sys.modules["socketserver"] = impl  # what `import socketserver` gives after install()
    try:
        loader.exec_module(module)
    finally:
        sys.modules["socketserver"] = saved
    if impl is not stdlib_socketserver:
        patches = importlib.import_module(impl.__name__ + "._http_patches")
        client = types.SimpleNamespace(**vars(http.client))
        client.parse_headers = parse_headers or patches._make_parse_headers(http.client)
        module.http = types.SimpleNamespace(client=client)  # http.server's only use of it
        patches.patch_http_server(module)
    _MODULES[key] = module
    return module


def handler_class(module, **attributes):
    """A handler that answers every method it knows with what it parsed (and
    the body, read by Content-Length as handlers do), and records its log
    lines (without the date) and the requests it handled."""
    class Handler(module.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        records = []  # (kind, text) in order, across connections
        body_read = 2  # halves of the body read: 2, 1 or 0
        lock = threading.Lock()

        def record(self, kind, text):
            with self.lock:
                self.records.append((kind, text))

        def answer(self):
            self.record("handled", self.requestline)
            try:
                length = max(0, min(int(self.headers.get("Content-Length", 0)), 1 << 17))
            except ValueError:
                length = 0
            body = self.rfile.read(length * self.body_read // 2) if length else b""
            text = repr((self.command, self.path, self.request_version,
                         self.headers.items(), body)).encode("latin-1", "replace")
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(text)

        do_GET = do_POST = do_PUT = do_HEAD = answer

        def log_message(self, format, *args):
            self.record("log", self.address_string() + " " + format % args)

    for name, value in attributes.items():
        setattr(Handler, name, value)
    Handler.records = []
    return Handler


DATE = re.compile(rb"\r\nDate: [^\r\n]*")


def exchange(address, wire, half_close=True):
    """What the server sends back for ``wire`` on a new connection, up to its
    end of it (the Date header's value blanked). ``half_close``: the client
    says it has nothing more to send; else the server alone ends it."""
    with socket.create_connection(address, timeout=WAIT) as client:
        client.sendall(wire)
        if half_close:
            client.shutdown(socket.SHUT_WR)
        return DATE.sub(b"\r\nDate: -", recv_to_end(client))


def replay(harness, module, cases, half_close=lambda case: True, **attributes):
    """[(what was sent back, the handler's records)] for each case, and the server."""
    handler = handler_class(module, **attributes)
    server = harness.server(module.ThreadingHTTPServer, ("127.0.0.1", 0), handler)
    harness.serve(server)
    results = []
    for case in cases:
        wire = bounded(exchange, server.server_address, case.wire, half_close(case))
        with handler.lock:
            records, handler.records[:] = list(handler.records), []
        results.append((wire, records))
    return results, server


# ---------------------------------------------------------------- the corpus

class Case(types.SimpleNamespace):
    """``wire``: the bytes sent; ``reason``: the rule its head breaks (None:
    none; "stdlib": refused by the stdlib before the check), known from how
    the case was built, not from framing_violation."""


# (request line, whether the stdlib reads the headers after it)
REQUEST_LINES = [
    (b"GET / HTTP/1.1", True), (b"POST /submit HTTP/1.1", True), (b"HEAD / HTTP/1.1", True),
    (b"PUT /x?y=1 HTTP/1.0", True), (b"GET //evil HTTP/1.1", True), (b"BREW / HTTP/1.1", True),
    (b"GET /", True), (b"GET / HTTP/0.9", True), (b"GET / HTTP/01.01", True),
    (b"GET / HTTP/1.10", True), (b"GET  /  HTTP/1.1", True),
    (b"POST /", False), (b"GET / HTTP/2.0", False), (b"GET / HTTP/1", False),
    (b"GET / http/1.1", False), (b"GET / HTTP/1.1.1", False), (b"GET / HTTP/a.b", False),
    (b"GET / HTTP/1.1 x", False),
]

CL_TE = "Transfer-Encoding with Content-Length"
TE = "Transfer-Encoding (the handler does not decode one)"
CL_NUMBER = "Content-Length not a decimal number"
FOLD = "obs-fold (a field line beginning with whitespace)"
NAME = "field name not a token"
CONTROL = "control character in a field value"
LINE_END = "line not ended by CRLF"

# (field lines, body, reason)
FIELD_SETS = [
    ([b"Host: a"], b"", None),
    ([], b"", None),
    ([b"Host: a", b"Content-Length: 5"], b"hello", None),
    ([b"Content-Length: 0"], b"", None),
    ([b"Content-Length: 005"], b"hello", None),
    ([b"Content-Length:5 "], b"hello", None),
    ([b"Content-Length: 7"], b"hel", None),  # a short body
    ([b"Connection: close"], b"", None),
    ([b"Connection: keep-alive", b"Accept: */*", b"Accept: text/plain"], b"", None),
    ([b"Expect: 100-continue", b"Content-Length: 2"], b"ok", None),
    ([b"X: caf\xe9", b"X-Tab: a\tb", b"Empty:", b"!#$%&'*+-.^_`|~09azAZ: v"], b"", None),
    ([b"Content-Type: multipart/form-data; boundary=x"], b"", None),
    ([b"X: a\x85b"], b"", None),  # NEL: obs-text, no line end for the email parser
    ([b"H%d: v" % i for i in range(99)], b"", None),
    ([b"H%d: v" % i for i in range(100)], b"", "stdlib"),  # 431 Too many headers
    ([b"Content-Length: 5", b"Content-Length: 5"], b"hello", "Content-Length repeated"),
    ([b"Content-Length: 0", b"Content-Length: 5"], b"hello", "Content-Length repeated"),
    ([b"Content-Length: 5, 5"], b"hello", CL_NUMBER),
    ([b"Content-Length: +5"], b"hello", CL_NUMBER),
    ([b"Content-Length: -1"], b"", CL_NUMBER),
    ([b"Content-Length: 5_0"], b"hello", CL_NUMBER),
    ([b"Content-Length: 5\xa0"], b"hello", CL_NUMBER),
    ([b"Content-Length: 0x5"], b"hello", CL_NUMBER),
    ([b"Content-Length: 5\x0b"], b"hello", CONTROL),
    ([b"Content-Length: \x1c5"], b"hello", CONTROL),
    ([b"Content-Length: 99999999999999999999"], b"", "Content-Length too large"),
    ([b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n", TE),
    ([b"tRANSFER-ENCODING: chunked"], b"0\r\n\r\n", TE),
    ([b"Transfer-Encoding: xchunked"], b"", TE),
    ([b"Transfer-Encoding: chunked", b"Content-Length: 3"], b"0\r\n\r\n", CL_TE),
    ([b"Content-Length: 3", b"Transfer-Encoding: chunked"], b"0\r\n\r\n", CL_TE),
    ([b"Content-Length: 3", b"Transfer-Encoding: identity"], b"abc", CL_TE),
    ([b"Transfer-Encoding : chunked"], b"0\r\n\r\n",
     "whitespace between a field name and its colon"),
    ([b"Transfer-Encoding:\x0bchunked"], b"0\r\n\r\n", CONTROL),
    ([b"X: a", b" Transfer-Encoding: chunked"], b"", FOLD),
    ([b"X: a", b"\tfolded"], b"", FOLD),
    ([b" Host: a"], b"", FOLD),
    ([b"X: a\rContent-Length: 5"], b"hello", "bare CR"),
    ([b"X: a\r"], b"", "bare CR"),
    ([b"X: a\x00b"], b"", "NUL in the head"),
    ([b"Bad Name: x"], b"", NAME),
    ([b": no name"], b"", NAME),
    ([b"X@: y"], b"", NAME),
    ([b"\xdcber: y"], b"", NAME),
    ([b"no colon at all"], b"", "field line without a colon"),
    ([b"X: a\x01b"], b"", CONTROL),
    ([b"X: a\x7f"], b"", CONTROL),
]


def build_corpus():
    cases = []
    for request_line, reads_headers in REQUEST_LINES:
        for fields, body, reason in FIELD_SETS:
            wire = b"".join(line + b"\r\n" for line in [request_line] + fields) + b"\r\n" + body
            cases.append(Case(wire=wire, reason=reason if reads_headers else "stdlib"))
        # every line ended by LF alone, a LF-ended line among CRLF ones
        wire = b"".join(line + b"\n" for line in [request_line, b"Host: a"]) + b"\n"
        cases.append(Case(wire=wire, reason=LINE_END if reads_headers else "stdlib"))
        wire = request_line + b"\r\nHost: a\nAccept: */*\r\n\r\n"
        cases.append(Case(wire=wire, reason=LINE_END if reads_headers else "stdlib"))
    # Heads of the longest lines http.client and http.server read, and one byte
    # more (431, 414). Only where the server reads the whole head: one that
    # closes with bytes unread resets the connection, and the client may lose
    # the answer.
    cases.append(Case(wire=b"GET / HTTP/1.1\r\nX: " + b"a" * (65536 - 5) + b"\r\n\r\n",
                      reason=None))
    cases.append(Case(wire=b"GET / HTTP/1.1\r\nX: " + b"a" * (65536 - 4) + b"\r\n\r\n",
                      reason="stdlib"))
    # no request at all; a request line too long (414); one of exactly the longest
    cases.append(Case(wire=b"\r\n", reason="stdlib"))
    cases.append(Case(wire=b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n\r\n", reason="stdlib"))
    cases.append(Case(wire=b"GET /" + b"a" * (65537 - 16) + b" HTTP/1.1\r\n\r\n", reason=None))
    return cases


CORPUS = build_corpus()
SMUGGLING = [case for case in CORPUS if case.reason not in (None, "stdlib")]

_STDLIB_RESULTS = []


def stdlib_results(harness):
    """The stdlib's answers to CORPUS (made once)."""
    if not _STDLIB_RESULTS:
        _STDLIB_RESULTS.extend(replay(harness, http_server_module(stdlib_socketserver),
                                      CORPUS)[0])
    return _STDLIB_RESULTS


def test_the_corpus_covers_each_rule():
    assert len(CORPUS) > 850
    reasons = {case.reason for case in CORPUS}
    assert reasons >= {None, "stdlib", "Content-Length repeated", CL_NUMBER, CL_TE, TE, FOLD,
                       "bare CR", "NUL in the head", NAME, CONTROL, LINE_END,
                       "whitespace between a field name and its colon",
                       "field line without a colon", "Content-Length too large"}


def differences(results, expected):
    return [(case.wire[:200], got, want)
            for case, got, want in zip(CORPUS, results, expected) if got != want]


def test_strict_off_every_answer_is_the_stdlibs(impl, harness):
    # impl's stdlib run compares the stdlib with itself: the comparison is
    # stable (no time, address or order in what is compared).
    results, server = replay(harness, http_server_module(impl), CORPUS)
    assert differences(results, stdlib_results(harness)) == []
    if impl is not stdlib_socketserver:
        assert server.stats()["framing_rejections"] == 0


def strict_expected(case, stdlib_result):
    """What a strict server sends back, and records, for ``case``."""
    if case.reason in (None, "stdlib"):
        return stdlib_result
    request_line = case.wire.split(b"\n", 1)[0].rstrip(b"\r\n").decode("latin-1")
    message = "Bad request framing ({})".format(case.reason)
    records = [("log", "127.0.0.1 code 400, message " + message),
               ("log", '127.0.0.1 "{}" 400 -'.format(request_line))]
    return None, records


def test_strict_on_refuses_smuggling_and_serves_the_rest(fast_impl, harness):
    expected = stdlib_results(harness)
    # Refused heads: the client keeps its side open, so the server alone ends
    # the connection (within WAIT, or bounded() fails).
    results, server = replay(harness, http_server_module(fast_impl), CORPUS,
                             half_close=lambda case: case.reason in (None, "stdlib"),
                             strict_framing=True)
    wrong = []
    for case, (wire, records), stdlib_result in zip(CORPUS, results, expected):
        want_wire, want_records = strict_expected(case, stdlib_result)
        if want_wire is None:  # refused: a 400 naming the rule, Connection: close, nothing else
            status = "HTTP/1.1 400 Bad request framing ({})\r\n".format(case.reason).encode()
            words = case.wire.split(b"\n", 1)[0].split()
            http09 = len(words) == 2 or words[-1] == b"HTTP/0.9"  # no status line, no headers
            page = "Message: Bad request framing ({}).".format(case.reason).encode()
            if http09:
                ok = wire.startswith(b"<!DOCTYPE HTML") and page in wire  # the page alone
            else:
                head_only = words[0] == b"HEAD"  # send_error sends no page
                ok = (wire.startswith(status) and wire.count(b"HTTP/1.1 ") == 1
                      and b"\r\nConnection: close\r\n" in wire
                      and (wire.endswith(b"\r\n\r\n") if head_only else page in wire))
            ok = ok and records == want_records
        else:
            ok = (wire, records) == (want_wire, want_records)
        if not ok:
            wrong.append((case.wire[:200], case.reason, wire[:300], records))
    assert wrong == []
    assert server.stats()["framing_rejections"] == len(SMUGGLING) > 200


# ---------------------------------------------------------------- pipelined smuggling

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


# A request that a front end reading the framing one way forwards as one, and
# http.server (Content-Length first, no chunked decoding) reads as two.
PIPELINED = {
    # the front end takes the last Content-Length, http.server the first
    "CL.CL": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
              % len(SMUGGLED) + SMUGGLED),
    # the front end decodes the chunks (CL.TE: Content-Length first, TE.CL: the other
    # way); http.server reads Content-Length's 4 bytes of them, the chunk size line
    "CL.TE": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + chunk(SMUGGLED) + b"0\r\n\r\n"),
    "TE.CL": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Length: 4\r\n\r\n" + chunk(SMUGGLED) + b"0\r\n\r\n"),
    # the front end decodes the chunks; http.server reads no body
    "TE.0": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             + SMUGGLED),
    # the front end sees one field (bare CR inside a value), the email parser two
    "CR.CL": (b"POST / HTTP/1.1\r\nHost: a\r\nX: y\rContent-Length: 0\r\nContent-Length: %d"
              b"\r\n\r\n" % len(SMUGGLED) + SMUGGLED),
}


def handled(records):
    return [text for kind, text in records if kind == "handled"]


@pytest.mark.parametrize("name", sorted(PIPELINED))
def test_pipelined_smuggling_reaches_the_handler_only_with_strict_off(fast_impl, harness, name):
    cases = [Case(wire=PIPELINED[name], reason=None)]
    module = http_server_module(fast_impl)
    (off,), _ = replay(harness, module, cases)
    assert "GET /smuggled HTTP/1.1" in handled(off[1])  # the attack works on the stdlib's rules
    (on,), server = replay(harness, module, cases, half_close=lambda case: False,
                           strict_framing=True)
    assert handled(on[1]) == []
    assert on[0].startswith(b"HTTP/1.1 400 Bad request framing (")
    assert on[0].count(b"HTTP/1.1 ") == 1  # one response: the 400
    assert server.stats()["framing_rejections"] == 1


# ---------------------------------------------------------------- a body left unread

NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
CL_0 = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED


@pytest.mark.parametrize("body_read", [0, 1])
def test_a_body_left_unread_is_not_taken_for_the_next_request(fast_impl, harness, body_read):
    """CL.0: a handler that reads none or part of a request's body (a do_POST
    or do_GET that ignores it); with strict_framing the rest is not read as
    a request: the connection ends after the one answer, nothing more is
    handled or sent, and the refusal is counted and logged."""
    cases = [Case(wire=CL_0 + NEXT, reason=None)]
    module = http_server_module(fast_impl)
    (off,), _ = replay(harness, module, cases, body_read=body_read)
    if body_read == 0:
        assert "GET /smuggled HTTP/1.1" in handled(off[1])  # the attack works on the stdlib's rules
    (on,), server = replay(harness, module, cases, half_close=lambda case: False,
                           strict_framing=True, body_read=body_read)
    assert handled(on[1]) == ["POST / HTTP/1.1"]
    assert on[0].count(b"HTTP/1.1 ") == 1 and on[0].startswith(b"HTTP/1.1 200 ")
    unread = len(SMUGGLED) - len(SMUGGLED) * body_read // 2
    assert ("log", "127.0.0.1 Request body left unread (%d bytes): connection closed"
            % unread) in on[1]
    assert server.stats()["framing_rejections"] == 1


def test_a_body_read_whole_keeps_the_connection(fast_impl, harness):
    last = NEXT.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    # (a body longer than rfile's buffer: read with more than one recv)
    big = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50000\r\n\r\n" + b"x" * 50000
    cases = [Case(wire=CL_0 + big + last, reason=None)]
    (on,), server = replay(harness, http_server_module(fast_impl), cases,
                           half_close=lambda case: False, strict_framing=True)
    assert handled(on[1]) == ["POST / HTTP/1.1", "POST / HTTP/1.1", "GET /next HTTP/1.1"]
    assert on[0].count(b"HTTP/1.1 200 ") == 3
    assert server.stats()["framing_rejections"] == 0


# ---------------------------------------------------------------- the handler's choices

def test_strict_framing_is_off_by_default_and_only_under_install(fast_impl):
    assert http_server_module(fast_impl).BaseHTTPRequestHandler.strict_framing is False
    assert http_server_module(fast_impl).BaseHTTPRequestHandler.decodes_chunked is False
    assert not hasattr(http_server_module(stdlib_socketserver).BaseHTTPRequestHandler,
                       "strict_framing")


CHUNKED_POST = b"POST / %s\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n0\r\n\r\n"


@pytest.mark.parametrize("version, coding, reason", [
    (b"HTTP/1.1", b"chunked", None),
    (b"HTTP/1.0", b"chunked", "Transfer-Encoding before HTTP/1.1"),
    (b"HTTP/1.1", b"gzip, chunked", "transfer coding other than chunked"),
    (b"HTTP/1.1", b"chunked, gzip", "final transfer coding not chunked"),
])
def test_a_handler_that_decodes_chunked(fast_impl, harness, version, coding, reason):
    cases = [Case(wire=CHUNKED_POST % (version, coding), reason=reason)]
    ((wire, records),), server = replay(harness, http_server_module(fast_impl), cases,
                                        strict_framing=True, decodes_chunked=True)
    if reason is None:
        assert handled(records) == ["POST / HTTP/1.1"] and wire.startswith(b"HTTP/1.1 200 ")
    else:
        assert handled(records) == []
        assert wire.startswith("HTTP/1.1 400 Bad request framing ({})".format(reason).encode())
    assert server.stats()["framing_rejections"] == (reason is not None)


def test_a_parse_request_calling_the_stdlibs_is_checked(fast_impl, harness):
    module = http_server_module(fast_impl)
    calls = []

    def parse_request(self):
        calls.append("before")
        parsed = module.BaseHTTPRequestHandler.parse_request(self)
        calls.append(parsed)
        return parsed
    cases = [Case(wire=PIPELINED["CL.CL"]), Case(wire=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")]
    results, server = replay(harness, module, cases, strict_framing=True,
                             parse_request=parse_request)
    assert calls == ["before", False, "before", True]
    assert results[0][0].startswith(b"HTTP/1.1 400 Bad request framing (Content-Length repeated)")
    assert handled(results[1][1]) == ["GET / HTTP/1.1"]
    assert server.stats()["framing_rejections"] == 1


def test_a_parse_request_of_its_own_is_not_checked(fast_impl, harness):
    # strict_framing applies where the head goes through the stdlib's
    # parse_request under install(); one that reads the head itself decides
    # for itself (the difference from a checked one, on purpose).
    module = http_server_module(fast_impl)

    def parse_request(self):
        words = self.raw_requestline.decode("latin-1").split()
        self.command, self.path, self.request_version = words
        self.requestline = " ".join(words)
        self.headers = module.http.client.parse_headers(self.rfile)
        self.close_connection = True
        return True
    ((wire, records),), server = replay(harness, module, [Case(wire=PIPELINED["CL.CL"])],
                                        strict_framing=True, parse_request=parse_request)
    assert handled(records) == ["POST / HTTP/1.1"] and wire.startswith(b"HTTP/1.1 200 ")
    assert server.stats()["framing_rejections"] == 0


def test_strict_refuses_a_head_it_could_not_check(fast_impl, harness):
    # http.client.parse_headers replaced by another than install()'s: the
    # lines are not seen, so strict framing refuses rather than passes.
    stdlib_parse_headers = getattr(http.client.parse_headers, "__wrapped__",
                                   http.client.parse_headers)
    module = http_server_module(fast_impl, parse_headers=stdlib_parse_headers)
    cases = [Case(wire=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")]
    ((wire, records),), server = replay(harness, module, cases, half_close=lambda case: False,
                                        strict_framing=True)
    assert wire.startswith(b"HTTP/1.1 400 Bad request framing "
                           b"(head not read by install()'s parse_headers)")
    assert handled(records) == []
    (((wire, records),), _) = replay(harness, module, cases)
    assert handled(records) == ["GET / HTTP/1.1"]  # strict off: served
