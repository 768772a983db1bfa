"""Fuzz target: how the compiled core takes a request off a listener (batched
accept4 / recvfrom in C, _core.pyx _take_one, reached here through
take_pending) against the stdlib's get_request (socket.accept / recvfrom):
the datagram's bytes cut at max_packet_size, and the peer address decoded
from the kernel's sockaddr (abstract and filesystem AF_UNIX names of any
bytes, unbound clients, IPv4, IPv6).

The pure core takes requests with the stdlib's own get_request, so only the
compiled core is compared here.

Input layout (see _fuzzing.Choices): the transport, how the client is bound,
its name (length, bytes), max_packet_size, then the datagram or the bytes the
client sends on its connection.
"""
import os
import select
import shutil
import socket
import sys
import tempfile

import _fuzzing

import fastsockserver
from support import ipv6_available, outcome, recv_to_end, set_linger_zero

KINDS = [("unix", socket.SOCK_DGRAM), ("unix", socket.SOCK_STREAM),
         ("ipv4", socket.SOCK_DGRAM), ("ipv4", socket.SOCK_STREAM),
         ("ipv6", socket.SOCK_DGRAM), ("ipv6", socket.SOCK_STREAM)]
BINDINGS = ["unbound", "abstract", "path"]
PACKET_SIZES = ["default", 0, 1, 5, -1, "exact", "one less"]
# sun_path holds 108 bytes; the directory's name takes some of them.
MAX_NAME = 80
WAIT = 2.0  # loopback delivery is immediate; this only bounds a lost one
# The target itself too ("__main__"): its branches (transport, binding, error)
# are most of the Python code on this path.
INSTRUMENTED = ("__main__", "socket", "socketserver")
DIRECTORY = tempfile.mkdtemp(prefix="fz")


HAS_IPV6 = ipv6_available()
LOOPBACK = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


class Server:
    """What _take_one reads of a server."""

    def __init__(self, max_packet_size):
        self.max_packet_size = max_packet_size


def stdlib_take(server, listener):
    if listener.type == socket.SOCK_STREAM:
        return listener.accept()
    data, address = listener.recvfrom(server.max_packet_size)
    return (data, listener), address


def core_take(server, listener):
    """take_pending's (request, client_address), its claimed ticket released."""
    state = fastsockserver._core.ServingState()
    state.take_pending_from = listener
    taken = fastsockserver._core.take_pending(server, state)
    if taken is None:
        return None
    request, address, ticket = taken
    ticket.release()
    return request, address


def exchange(take, family, kind, binding, name, packet_size, payload):
    """One request taken by ``take``, described: what the server sees."""
    made = []
    try:
        listener = socket.socket(socket.AF_UNIX if family == "unix" else LOOPBACK[family][0], kind)
        made.append(listener)
        if family == "unix":
            listener.bind(os.path.join(DIRECTORY, "listener"))
            target = listener.getsockname()
        else:
            listener.bind((LOOPBACK[family][1], 0))
            target = listener.getsockname()
        if kind == socket.SOCK_STREAM:
            listener.listen(1)
        listener.setblocking(False)
        client = socket.socket(listener.family, kind)
        made.append(client)
        if family != "unix":
            client.bind((LOOPBACK[family][1], 0))
        elif binding == "abstract":
            client.bind(b"\0" + name)
        elif binding == "path":
            client.bind(os.path.join(DIRECTORY.encode(), b"c-" + name))
        client_name = client.getsockname()
        if kind == socket.SOCK_STREAM:
            client.connect(target)
            client.sendall(payload)
        else:
            client.sendto(payload, target)
        if packet_size == "default":
            packet_size = fastsockserver.UDPServer.max_packet_size
        elif packet_size == "exact":
            packet_size = len(payload)
        elif packet_size == "one less":
            packet_size = len(payload) - 1
        if not select.select([listener], [], [], WAIT)[0]:
            return "nothing arrived"
        result = outcome(lambda: take(Server(packet_size), listener))
        if result[0] != "ok":
            return result
        if result[1] is None:
            return "nothing taken"
        request, address = result[1]
        address = "the client's name" if address == client_name else address
        if kind == socket.SOCK_STREAM:
            made.append(request)
            timeout = request.gettimeout()  # the stdlib's: blocking, as accept() leaves it
            request.settimeout(WAIT)
            client.shutdown(socket.SHUT_WR)
            return ("connection", request.family, request.type, request.proto,
                    timeout, recv_to_end(request), address)
        data, sock = request
        return ("datagram", data, sock is listener, address)
    finally:
        for sock in made:
            if sock.type == socket.SOCK_STREAM and sock.family != socket.AF_UNIX:
                # Closed with a reset: no TIME_WAIT, whose thousands would use
                # up the ephemeral ports (EADDRINUSE here, and for the machine).
                set_linger_zero(sock)
            sock.close()
        for entry in os.listdir(DIRECTORY):
            os.unlink(os.path.join(DIRECTORY, entry))


def test_one_input(data):
    choices = _fuzzing.Choices(data)
    family, kind = choices.pick(KINDS)
    if family == "ipv6" and not HAS_IPV6:
        family = "ipv4"
    binding = choices.pick(BINDINGS)
    name = choices.take(choices.byte() % (MAX_NAME + 1))
    if binding == "path":  # one file name: no "/", no NUL, not empty
        name = name.replace(b"/", b"_").replace(b"\0", b"_") or b"_"
    packet_size = choices.pick(PACKET_SIZES)
    payload = choices.rest()
    expected = exchange(stdlib_take, family, kind, binding, name, packet_size, payload)
    got = exchange(core_take, family, kind, binding, name, packet_size, payload)
    if got != expected:
        raise AssertionError(
            "the core's take differs from the stdlib's get_request\nstdlib {!r:.600}\n"
            "  core {!r:.600}\n{} {} {} name={!r} max_packet_size={!r} payload={!r:.200}"
            .format(expected, got, family, kind.name, binding, name, packet_size, payload))


def main():
    if not fastsockserver.COMPILED:
        print("fuzz_take: the compiled core is not built: nothing to compare")
        sys.exit(_fuzzing.NOT_APPLICABLE)
    try:
        _fuzzing.main(test_one_input, INSTRUMENTED, what="the stdlib against c")
    finally:
        shutil.rmtree(DIRECTORY, ignore_errors=True)


if __name__ == "__main__":
    main()
