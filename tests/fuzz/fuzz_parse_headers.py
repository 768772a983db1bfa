"""Fuzz target: install()'s http.client.parse_headers (_http_patches) against
the stdlib's: the same message (headers, defects, payload, as_string), the
same exception (LineTooLong, "got more than N headers", the email parser's),
the same bytes left in the stream after the header block.

The block is read from a BytesIO or from a handler's rfile over a socketpair
(the stdlib's rfile for the stdlib's parser, the library's for its own:
head_read() then sees a real reader). http.client's _MAXLINE/_MAXHEADERS are
lowered at the fuzzer's choice so that inputs of a few KB reach both limits.
The comparison is tests/test_http_headers.py's.

Input layout (see _fuzzing.Choices): _MAXLINE, _MAXHEADERS, the reader, the
message class, then the bytes on the wire.
"""
import http.client
import importlib
import io
import socket
import socketserver

import _fuzzing
from test_http_headers import outcome_from, stdlib_parse_headers

from support import make_handler

MAXLINES = [http.client._MAXLINE, 8, 40, 1000]
MAXHEADERS = [http.client._MAXHEADERS, 0, 1, 3, 10]
READERS = ["bytes", "socket"]
INSTRUMENTED = _fuzzing.LIBRARY + ("http", "email", "socket", "socketserver")


class OwnMessage(http.client.HTTPMessage):
    """A caller's class: the patch hands such blocks to the email parser."""


CLASSES = [http.client.HTTPMessage, http.client.HTTPMessage, OwnMessage]

PARSERS = [(name, module, importlib.import_module(module.__name__ + "._http_patches")
            ._make_parse_headers(http.client))
           for name, module in _fuzzing.implementations()]


def parse_outcome(parse, module, reader, wire, message_class):
    if reader == "bytes":
        return outcome_from(parse, io.BytesIO(wire), _class=message_class)
    server_end, peer = socket.socketpair()
    handler = None
    try:
        handler = make_handler(module, server_end)
        peer.sendall(wire)  # a few KB at most: fits the socket's buffer
        peer.shutdown(socket.SHUT_WR)
        return outcome_from(parse, handler.rfile, _class=message_class)
    finally:
        if handler is not None:
            handler.rfile.close()
        server_end.close()
        peer.close()


def test_one_input(data):
    choices = _fuzzing.Choices(data)
    maxline, maxheaders = choices.pick(MAXLINES), choices.pick(MAXHEADERS)
    reader, message_class = choices.pick(READERS), choices.pick(CLASSES)
    wire = choices.rest()
    saved = http.client._MAXLINE, http.client._MAXHEADERS
    http.client._MAXLINE, http.client._MAXHEADERS = maxline, maxheaders
    try:
        expected = parse_outcome(stdlib_parse_headers, socketserver, reader, wire,
                                 message_class)
        for name, module, parse in PARSERS:
            got = parse_outcome(parse, module, reader, wire, message_class)
            if got != expected:
                raise AssertionError(
                    "{}: parse_headers differs from the stdlib's\nstdlib {!r:.600}\n"
                    "   got {!r:.600}\n_MAXLINE={} _MAXHEADERS={} reader={} class={} wire={!r}"
                    .format(name, expected, got, maxline, maxheaders, reader,
                            message_class.__name__, wire[:600]))
    finally:
        http.client._MAXLINE, http.client._MAXHEADERS = saved


if __name__ == "__main__":
    _fuzzing.main(test_one_input, INSTRUMENTED)
