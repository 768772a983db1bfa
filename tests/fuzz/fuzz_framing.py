"""Fuzz target: http.server's request handling under install(), strict_framing
off and on (fastsockserver._framing), against the stdlib's http.server.

Each input is a client's bytes, fed to a handler's rfile (no socket: a
BytesIO, so pipelined requests are served one after the other as on a
connection). For each implementation (pure, compiled):

- strict_framing off: every request answered as the stdlib answers it: the
  same bytes written (the Date header's value apart), the same log lines (the
  date apart), the same requests reaching the handler;
- strict_framing on: the same, request by request, up to the first whose head
  framing_violation() refuses (judged on the lines the stdlib read for it,
  where the stdlib read a whole head); that one gets a 400 naming the rule,
  its log lines say so, it does not reach the handler, and nothing after it
  is served.

The servers' modules and handler are tests/test_http_framing.py's.

Input layout (see _fuzzing.Choices): whether the handler decodes chunked
bodies itself (decodes_chunked), then the bytes on the wire.
"""
import io
import re
import socketserver

import _fuzzing
from test_http_framing import handler_class, http_server_module

from fastsockserver._framing import framing_violation

INSTRUMENTED = _fuzzing.LIBRARY + ("http",)
DATE = re.compile(rb"\r\nDate: [^\r\n]*")


class RecordingReader(io.BytesIO):
    """The wire, recording each line read (the request line, the header lines)."""

    def __init__(self, wire, requests):
        super().__init__(wire)
        self.requests = requests

    def readline(self, size=-1):
        line = super().readline(size)
        self.requests[-1]["lines"].append(line)
        return line


def serve(module, wire, **attributes):
    """[{lines, written, records}] for each request handle_one_request took."""
    base = handler_class(module, **attributes)
    requests = []

    class Handler(base):
        def handle_one_request(self):
            requests.append({"lines": [], "start": self.wfile.tell(), "records": None})
            start = len(self.records)
            try:
                return super().handle_one_request()
            finally:
                requests[-1]["records"] = self.records[start:]

    handler = Handler.__new__(Handler)  # no socket: setup() and finish() are the test's
    handler.rfile = RecordingReader(wire, requests)
    handler.wfile = io.BytesIO()
    handler.client_address = ("127.0.0.1", 0)
    handler.server = handler.request = None
    handler.handle()
    written = handler.wfile.getvalue()
    ends = [request["start"] for request in requests[1:]] + [len(written)]
    for request, end in zip(requests, ends):
        request["written"] = DATE.sub(b"\r\nDate: -", written[request.pop("start"):end])
    return requests


def refused_by_the_rules(stdlib_request, decodes_chunked):
    """framing_violation's reason for a request the stdlib read a whole head of, or None."""
    lines = stdlib_request["lines"]
    logged = [text for kind, text in stdlib_request["records"] if kind == "log"]
    if len(lines) < 2 or any(" code 431, " in text or " code 414, " in text for text in logged):
        return None  # no head read, or http.client stopped reading it: the check never ran
    return framing_violation(lines, decodes_chunked)


def check(name, wire, decodes_chunked, stdlib, off, on):
    def differ(what, got, expected):
        raise AssertionError("{}: {} differs from the stdlib\nstdlib {!r:.800}\n   got {!r:.800}\n"
                             "decodes_chunked={} wire={!r:.600}".format(
                                 name, what, expected, got, decodes_chunked, wire))
    if off != stdlib:
        differ("strict_framing off", off, stdlib)
    for index, expected in enumerate(stdlib):
        reason = refused_by_the_rules(expected, decodes_chunked)
        if reason is None:
            if index >= len(on) or on[index] != expected:
                differ("strict_framing on, request {} (not refused by the rules)".format(index),
                       on[index:index + 1], expected)
            continue
        refused = on[index:]
        request_line = expected["lines"][0].decode("latin-1").rstrip("\r\n")
        message = "Bad request framing ({})".format(reason)
        records = [("log", "127.0.0.1 code 400, message " + message),
                   ("log", '127.0.0.1 "{}" 400 -'.format(request_line))]
        if (len(refused) != 1 or refused[0]["records"] != records
                or refused[0]["lines"] != expected["lines"]
                or (message.encode("latin-1") not in refused[0]["written"]
                    and not request_line.startswith("HEAD "))):  # HEAD: no error page
            differ("strict_framing on, request {} (refused: {})".format(index, reason),
                   refused, records)
        return
    if len(on) != len(stdlib):
        differ("strict_framing on, the requests served", on, stdlib)


STDLIB = http_server_module(socketserver)
MODULES = [(name, http_server_module(package)) for name, package in _fuzzing.implementations()]


def test_one_input(data):
    choices = _fuzzing.Choices(data)
    decodes_chunked = choices.pick([False, True])
    wire = choices.rest()
    stdlib = serve(STDLIB, wire, decodes_chunked=decodes_chunked)
    for name, module in MODULES:
        off = serve(module, wire, decodes_chunked=decodes_chunked)
        on = serve(module, wire, decodes_chunked=decodes_chunked, strict_framing=True)
        check(name, wire, decodes_chunked, stdlib, off, on)


if __name__ == "__main__":
    _fuzzing.main(test_one_input, INSTRUMENTED, what=(
        "http.server with strict_framing off and on against the stdlib's, on "
        + ", ".join(name for name, _ in MODULES)))
