"""Fuzz target: the PROXY protocol v1/v2 header reader and parser
(fastsockserver._proxy, TCPServer.proxy_protocol_from), where that module is
in the build. There is no stdlib parser to compare with; what must hold for
any bytes a peer sends:

- parse(data) returns a ProxyHeader or raises ProxyHeaderError, nothing else;
- _receive_header, reading the bytes from a socketpair, takes exactly one
  header and leaves every byte after it in the socket (or raises
  ProxyHeaderError); _header_length of any prefix of a header is None or the
  header's length;
- a parsed header written out again from the specification (the encoder
  below, independent of the parser) parses to the same ProxyHeader.

Both builds share the module; it is run from the compiled package and from
the pure copy. Input layout: the bytes on the wire, as they are.
"""
import importlib
import socket
import struct
import sys
import time

import _fuzzing

from support import recv_to_end

MODULES = []
for _name, _package in _fuzzing.implementations():
    try:
        MODULES.append((_name, importlib.import_module(_package.__name__ + "._proxy")))
    except ImportError:
        pass
ABSENT = None if MODULES else (
    "fastsockserver._proxy is not in this build (the PROXY protocol: branch proxyproto)")
INSTRUMENTED = _fuzzing.LIBRARY
WAIT = 5.0  # the peer has shut its side: nothing here waits for bytes

_V2_FAMILY_CODES = {socket.AF_INET: 0x1, socket.AF_INET6: 0x2}
if hasattr(socket, "AF_UNIX"):
    _V2_FAMILY_CODES[socket.AF_UNIX] = 0x3


def encode(header, family_protocol_low=0x1):
    """The wire form of ``header``, written from the PROXY protocol
    specification. v2: STREAM protocol unless told; UNSPEC for no family."""
    if header.version == 1:
        if header.family is None:
            return b"PROXY UNKNOWN\r\n"
        return "PROXY {} {} {} {} {}\r\n".format(
            "TCP4" if header.family == socket.AF_INET else "TCP6",
            header.source[0], header.destination[0], header.source[1],
            header.destination[1]).encode("ascii")
    if header.family is None:
        block, family_code = b"", 0
    elif header.family == socket.AF_INET or header.family == socket.AF_INET6:
        family_code = _V2_FAMILY_CODES[header.family]
        block = b"".join(socket.inet_pton(header.family, a[0])
                         for a in (header.source, header.destination))
        block += struct.pack("!HH", header.source[1], header.destination[1])
    else:
        family_code = 0x3
        block = header.source.ljust(108, b"\0") + header.destination.ljust(108, b"\0")
    tlvs = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in header.tlvs)
    body = block + tlvs
    command = 0x20 if header.local else 0x21
    return (b"\r\n\r\n\x00\r\nQUIT\n" + struct.pack(
        "!BBH", command, family_code << 4 | family_protocol_low, len(body)) + body)


def check_parse(name, proxy, data):
    try:
        header = proxy.parse(data)
    except proxy.ProxyHeaderError:
        return None
    assert type(header) is proxy.ProxyHeader, (name, data, header)
    if header.family is not None or header.version == 1:
        again = proxy.parse(encode(header))
        # v2 LOCAL/UNSPEC keep their TLVs; v1 UNKNOWN's rest of line is dropped.
        assert again == header, (name, data, header, again)
    return header


def receive(proxy, data):
    """(head or the error's text, the bytes left in the socket)."""
    reader, peer = socket.socketpair()
    try:
        peer.sendall(data)  # a few KB at most: fits the socket's buffer
        peer.shutdown(socket.SHUT_WR)
        try:
            head = proxy._receive_header(reader, time.monotonic() + WAIT)
        except proxy.ProxyHeaderError as exc:
            head = exc
        reader.settimeout(WAIT)
        return head, recv_to_end(reader)
    finally:
        reader.close()
        peer.close()


def test_one_input(data):
    data = bytes(data)
    for name, proxy in MODULES:
        check_parse(name, proxy, data)
        head, rest = receive(proxy, data)
        if isinstance(head, Exception):
            continue
        assert data == head + rest, (name, data, head, rest)  # nothing past the header read
        total = len(head)
        for cut in range(len(head)):
            assert proxy._header_length(head[:cut]) in (None, total), (name, head, cut)
        assert proxy._header_length(head) == total, (name, head)
        check_parse(name, proxy, head)


def main():
    if ABSENT:
        print("fuzz_proxy: " + ABSENT)
        sys.exit(_fuzzing.NOT_APPLICABLE)
    _fuzzing.main(test_one_input, INSTRUMENTED, what="the PROXY header properties on " + ", ".join(
        name for name, _ in MODULES))


if __name__ == "__main__":
    main()
