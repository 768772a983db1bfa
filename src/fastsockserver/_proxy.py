"""TCPServer.proxy_protocol_from: the PROXY protocol (v1 and v2) header of a
load balancer, read on the thread (or child) that handles the connection.

HAProxy, AWS and GCP network load balancers and others (``send-proxy``,
``send-proxy-v2``) begin each connection to a backend with a header naming
the original client. With ``proxy_protocol_from`` set (addresses or networks
of the trusted proxies), ``read_header`` runs just before the TLS handshake
of ``ssl_context`` (the header precedes TLS) and before ``finish_request``:

- a connection from a trusted address must begin with a valid header, read
  within ``proxy_header_timeout`` seconds and exactly to its end (the
  request's own bytes stay in the socket); the handler's ``client_address``
  is then the original client's, a ProxiedAddress that also holds the
  parsed header (``proxy_header``, with v2's TLVs). A v2 LOCAL header
  (HAProxy's health checks), a v1 ``UNKNOWN`` one, and v2 UNSPEC or UNIX
  addresses keep the peer's address;
- a connection from elsewhere must not begin with one: its first bytes are
  peeked at (waiting up to ``proxy_header_timeout`` for them if it is
  silent), and a header there is a spoofing attempt.

A failure (no header, a partial, slow, oversized or malformed one, or one
from an untrusted address) is reported through ``handle_error`` (a
ProxyHeaderError), counted (``proxy_header_failures``) and closed by the
usual ``shutdown_request``; nobody else waits for it.

``verify_request`` runs on the loop before any of this: it sees the proxy's
address. The parser, ``parse``, is bounded (at most ``V1_MAX`` or
``V2_MAX`` bytes, fixed-size fields) and shared by both builds.
"""
import functools
import ipaddress
import socket
import struct
import time
from typing import NamedTuple, Optional, Tuple

from ._core_select import core

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the specification's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, length
# Addresses (at most 216 bytes, AF_UNIX) and TLVs: HAProxy's own stay well
# below; a longer declared length is refused before any of it is read.
V2_MAX = V2_FIXED + 2048
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # AF_INET, AF_INET6, AF_UNIX


class ProxyHeaderError(Exception):
    """A connection's PROXY protocol header is missing, malformed or not allowed."""


class ProxyHeader(NamedTuple):
    """What a header says. ``source`` and ``destination`` are None where the
    peer's own addresses apply (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC)."""

    version: int
    local: bool
    """v2 LOCAL: sent by the proxy itself (a health check), not for a client."""
    family: Optional[int]
    """socket.AF_INET, AF_INET6 or AF_UNIX; None: unspecified."""
    source: Optional[object]
    """(host, port) for AF_INET, (host, port, 0, 0) for AF_INET6 (the shapes
    accept() gives); the path (bytes) for AF_UNIX."""
    destination: Optional[object]
    tlvs: Tuple[Tuple[int, bytes], ...]
    """v2: the (type, value) of each TLV after the addresses, in order (e.g.
    0x01 ALPN, 0x02 authority, 0x03 CRC32C, 0x05 unique ID, 0x20 SSL, 0xE0 to
    0xEF the proxy's own; not interpreted, a CRC32C not checked); v1: ()."""


class ProxiedAddress(tuple):
    """The handler's client_address on a connection with a PROXY header: the
    original client's address (or the peer's, where the header keeps it), a
    plain tuple in all but ``proxy_header``, the ProxyHeader it came with."""

    def __new__(cls, address, proxy_header):
        self = super().__new__(cls, address)
        self.proxy_header = proxy_header
        return self

    def __reduce__(self):
        return ProxiedAddress, (tuple(self), self.proxy_header)


def parse(data):
    """The ProxyHeader that ``data`` (one whole header, nothing after it) holds.

    Raises ProxyHeaderError for anything else."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data):
    if len(data) > V1_MAX or not data.endswith(b"\r\n") or data.count(b"\n") != 1:
        raise ProxyHeaderError("PROXY v1 header not one line of at most 107 bytes")
    fields = data[:-2].split(b" ")
    if fields[1] == b"UNKNOWN":  # anything may follow; the peer's address applies
        return ProxyHeader(1, False, None, None, None, ())
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 header malformed")
    family = socket.AF_INET if fields[1] == b"TCP4" else socket.AF_INET6
    source_host, destination_host = (_v1_host(family, field) for field in fields[2:4])
    source_port, destination_port = (_v1_port(field) for field in fields[4:6])
    return ProxyHeader(1, False, family, _address(family, source_host, source_port),
                       _address(family, destination_host, destination_port), ())


def _v1_host(family, field):
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, field.decode("ascii")))
    except (UnicodeDecodeError, OSError, ValueError):
        raise ProxyHeaderError("PROXY v1 header: bad address {!r}".format(field)) from None


def _v1_port(field):
    # Decimal, no sign, no leading zero (the specification's form).
    if not (field.isdigit() and len(field) <= 5 and (field == b"0" or field[:1] != b"0")):
        raise ProxyHeaderError("PROXY v1 header: bad port {!r}".format(field))
    port = int(field)
    if port > 65535:
        raise ProxyHeaderError("PROXY v1 header: bad port {!r}".format(field))
    return port


def _parse_v2(data):
    if len(data) < V2_FIXED:
        raise ProxyHeaderError("PROXY v2 header truncated")
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if len(data) != V2_FIXED + length or len(data) > V2_MAX:
        raise ProxyHeaderError("PROXY v2 header: length {} does not match".format(length))
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise ProxyHeaderError("PROXY v2 header: version/command 0x{:02x}".format(
            version_command))
    local = version_command & 0xF == 0
    family_code, protocol = family_protocol >> 4, family_protocol & 0xF
    if family_code > 3 or protocol > 2:
        raise ProxyHeaderError("PROXY v2 header: family/protocol 0x{:02x}".format(
            family_protocol))
    size = _V2_ADDRESS_SIZES.get(family_code, 0)
    if length < size:
        raise ProxyHeaderError("PROXY v2 header: address block too short")
    block, tlvs = data[V2_FIXED:V2_FIXED + size], _tlvs(data, V2_FIXED + size)
    if local or not size:  # the proxy's own connection, or no addresses: the peer's apply
        return ProxyHeader(2, local, None, None, None, tlvs)
    if family_code == 0x3:
        source, destination = (path.split(b"\0", 1)[0] for path in (block[:108], block[108:]))
        return ProxyHeader(2, False, getattr(socket, "AF_UNIX", None), source, destination,
                           tlvs)
    family = socket.AF_INET if family_code == 0x1 else socket.AF_INET6
    width = 4 if family == socket.AF_INET else 16
    hosts = [socket.inet_ntop(family, block[i:i + width]) for i in (0, width)]
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * width)
    return ProxyHeader(2, False, family, _address(family, hosts[0], source_port),
                       _address(family, hosts[1], destination_port), tlvs)


def _tlvs(data, at):
    items = []
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyHeaderError("PROXY v2 header: a TLV cut short")
        kind, length = struct.unpack_from("!BH", data, at)
        at += 3 + length
        if at > len(data):
            raise ProxyHeaderError("PROXY v2 header: a TLV longer than the header")
        items.append((kind, data[at - length:at]))
    return tuple(items)


def _address(family, host, port):
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


# Reading: exactly the header's bytes, never more.

def _header_length(data):
    """The length of the header that ``data`` begins with, None while ``data``
    is too short to tell (all of it is header so far).

    Raises ProxyHeaderError when it cannot be a header, or one too long."""
    if data[:1] == V2_SIGNATURE[:1]:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("no PROXY protocol header")
        if len(data) < V2_FIXED:
            return None
        total = V2_FIXED + struct.unpack_from("!H", data, 14)[0]
        if total > V2_MAX:
            raise ProxyHeaderError("PROXY v2 header of {} bytes: more than {}".format(
                total, V2_MAX))
        return total
    if not V1_PREFIX.startswith(data[:6]):
        raise ProxyHeaderError("no PROXY protocol header")
    end = data.find(b"\n", 0, V1_MAX)
    if end >= 0:
        return end + 1
    if len(data) >= V1_MAX:
        raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
    return None


def _receive_header(sock, deadline):
    """The header's bytes, read within ``deadline`` (monotonic time). Each
    round peeks at what has arrived and takes what of it is header: usually
    one peek and one read in all."""
    head = b""
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise socket.timeout
            sock.settimeout(left)
            seen = sock.recv(V2_MAX - len(head), socket.MSG_PEEK)
            if not seen:
                raise ProxyHeaderError("connection closed within the PROXY protocol "
                                       "header ({} bytes)".format(len(head)))
            total = _header_length(head + seen)
            # All that was seen is header until its end is known (taking it
            # lets the next peek wait for more).
            wanted = len(seen) if total is None else min(len(seen), total - len(head))
            while wanted:
                chunk = sock.recv(wanted)  # arrived already (seen): does not wait
                if not chunk:
                    raise ProxyHeaderError("connection closed within the PROXY "
                                           "protocol header")
                head += chunk
                wanted -= len(chunk)
        except socket.timeout:
            raise ProxyHeaderError("no whole PROXY protocol header within "
                                   "proxy_header_timeout ({} bytes)".format(len(head))) from None
        if total is not None and len(head) == total:
            return head


def _looks_like_header(sock, deadline):
    """True when the connection's first bytes are a PROXY header's signature
    (peeked at; nothing is consumed). A silent connection is waited for up to
    ``deadline``, then taken for one without."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            head = sock.recv(len(V2_SIGNATURE), socket.MSG_PEEK)
        except socket.timeout:
            return False
        if not head:
            return False
        if head.startswith(V1_PREFIX) or head == V2_SIGNATURE:
            return True
        if not (V1_PREFIX.startswith(head) or V2_SIGNATURE.startswith(head)):
            return False
        time.sleep(0.005)  # a prefix of one: wait for the rest (a peek does not block on it)


_ONE = (str, ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
        ipaddress.IPv6Network)  # one address or network, not a list of them


@functools.lru_cache(maxsize=16)
def _networks(setting):
    items = (setting,) if isinstance(setting, _ONE) else setting
    return tuple(ipaddress.ip_network(item) for item in items)


def validate(server):
    """The trusted networks of the server's proxy_protocol_from, checked
    (None: off)."""
    setting = getattr(server, "proxy_protocol_from", None)
    if setting is None:
        return None
    if getattr(server, "socket_type", None) != socket.SOCK_STREAM or getattr(
            server, "address_family", None) not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("proxy_protocol_from applies to TCP servers, not {}".format(
            type(server).__name__))
    timeout = server.proxy_header_timeout
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")):
        raise ValueError("proxy_header_timeout must be a positive number of seconds, "
                         "not {!r}".format(timeout))
    try:
        if not isinstance(setting, _ONE):
            setting = tuple(setting)
        return _networks(setting)
    except (TypeError, ValueError) as exc:
        raise ValueError("proxy_protocol_from must be an address or network, or a list "
                         "of them ({}): {!r}".format(exc, setting)) from None


def trusted(networks, client_address):
    """True when the peer ``client_address`` is in one of ``networks``."""
    try:
        return _trusted_host(networks, client_address[0])
    except (TypeError, IndexError):
        return False


@functools.lru_cache(maxsize=256)  # the peers are the few proxies: parsed once each
def _trusted_host(networks, host):
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return any(address in network or (mapped is not None and mapped in network)
               for network in networks)


def read_header(server, request, client_address):
    """(client_address, ok): the original client's address from the header of
    a connection from a trusted proxy (or the peer's, where the header says
    so or the peer is not one), ok True; or, ok False, after a failure that
    was reported (handle_error) and counted."""
    try:
        networks = validate(server)
        deadline = time.monotonic() + server.proxy_header_timeout
        timeout = request.gettimeout()
        try:
            if not trusted(networks, client_address):
                if _looks_like_header(request, deadline):
                    raise ProxyHeaderError("a PROXY protocol header from {}, not a trusted "
                                           "proxy".format(client_address[0]))
                return client_address, True
            header = parse(_receive_header(request, deadline))
        finally:
            request.settimeout(timeout)
    except Exception:
        core.proxy_header_failed(server._serving_state)
        server.handle_error(request, client_address)
        return client_address, False
    if header.source is None or header.family not in (socket.AF_INET, socket.AF_INET6):
        return ProxiedAddress(client_address, header), True
    return ProxiedAddress(header.source, header), True
