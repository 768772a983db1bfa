"""Fuzz target: http.server's request path under install() (_http_py, and its
compiled build fastsockserver._http) against the stdlib's: a request stream
fed to a handler of each, compared as tests/http_differential.py compares
them (handler state after each request, override calls, log lines, bytes
written, bytes left). http.client's _MAXLINE/_MAXHEADERS are lowered at the
fuzzer's choice so that inputs of a few KB reach both limits.

Input layout (see _fuzzing.Choices): _MAXLINE, _MAXHEADERS, the handler's
protocol_version, the methods it overrides, the reader, then the stream.
"""
import http.client

import _fuzzing
import http_differential as diff

MAXLINES = [http.client._MAXLINE, 8, 40, 1000]
MAXHEADERS = [http.client._MAXHEADERS, 0, 1, 3, 10]
PROTOCOLS = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.1 ", "HTTP/2.0"]
OVERRIDES = [()] * 4 + [(name,) for name in diff.OVERRIDABLE] + [
    ("log_message", "send_header"), ("parse_request", "end_headers"),
    ("address_string", "version_string", "flush_headers")]
READERS = ["buffered", "bytes"]
INSTRUMENTED = _fuzzing.LIBRARY + ("http", "email", "_http_server_stdlib", "_http_server_py")
MODULES = diff.implementations()


def test_one_input(data):
    choices = _fuzzing.Choices(data)
    maxline, maxheaders = choices.pick(MAXLINES), choices.pick(MAXHEADERS)
    protocol_version, overrides = choices.pick(PROTOCOLS), choices.pick(OVERRIDES)
    reader = choices.pick(READERS)
    wire = choices.rest()
    saved = http.client._MAXLINE, http.client._MAXHEADERS
    http.client._MAXLINE, http.client._MAXHEADERS = maxline, maxheaders
    try:
        found = diff.differences(wire, protocol_version, overrides, reader, MODULES)
    finally:
        http.client._MAXLINE, http.client._MAXHEADERS = saved
    if found:
        name, expected, got = found[0]
        raise AssertionError(
            "{}: the request path differs from the stdlib's\nstdlib {!r:.1500}\n"
            "   got {!r:.1500}\n_MAXLINE={} _MAXHEADERS={} protocol={} overrides={} "
            "reader={} wire={!r}".format(name, expected, got, maxline, maxheaders,
                                         protocol_version, overrides, reader, wire[:600]))


if __name__ == "__main__":
    _fuzzing.main(test_one_input, INSTRUMENTED)
