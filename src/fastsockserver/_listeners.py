"""Listening sockets a server did not bind: systemd socket activation
(``LISTEN_FDS``), ``run --fd N``, ``adopt_socket(server, fd)``.

The adoption itself happens in one place, TCPServer.server_bind (UDPServer
and the Unix servers inherit it): a server with a socket to adopt takes it
instead of binding, so what a subclass adds after its super().server_bind()
(http.server's server_name and server_port) still runs.
"""
import errno
import os
import socket
import sys

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor

# Descriptors for `run`: taken in order by the servers that bind in the program.
for_run: "list[int]" = []


def listen_fds(unset_environment=True):
    """systemd socket activation: ``[(fd, name), ...]`` passed with
    ``LISTEN_FDS``/``LISTEN_PID`` (and ``LISTEN_FDNAMES``), in order; ``[]``
    when none were passed or they are for another process (``LISTEN_PID``,
    as sd_listen_fds does). A malformed count, names that do not match it, or a
    descriptor that is not open raise ValueError. The variables are removed
    from the environment (unset_environment), so child processes do not take
    them for theirs."""
    count, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    names = os.environ.get("LISTEN_FDNAMES")
    try:
        if count is None or pid is None:
            return []
        if not pid.strip().isdigit() or int(pid) != os.getpid():
            return []
        if not count.strip().isdigit():
            raise ValueError("LISTEN_FDS={!r} is not a number of descriptors".format(count))
        fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))
        labels = names.split(":") if names is not None else ["unknown"] * len(fds)
        if len(labels) != len(fds):
            raise ValueError("LISTEN_FDNAMES={!r} names {} descriptors, LISTEN_FDS={} "
                             "passes {}".format(names, len(labels), count, len(fds)))
        for fd in fds:
            try:
                os.set_inheritable(fd, False)  # as sd_listen_fds: not into exec()ed children
            except OSError as error:
                raise ValueError("LISTEN_FDS={} but descriptor {} is not open ({})".format(
                    count, fd, os.strerror(error.errno))) from None
        return list(zip(fds, labels))
    finally:
        if unset_environment:
            for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)


def inherited_socket(fd, socket_type=socket.SOCK_STREAM):
    """A socket object for descriptor ``fd`` (family and type read from it),
    checked: a socket, of ``socket_type`` (None: any), and listening if a
    stream one.
    ValueError says what is wrong; the descriptor is left open then."""
    if isinstance(fd, socket.socket):
        sock = fd
    else:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            why = "is not a socket" if error.errno == errno.ENOTSOCK else \
                "cannot be used ({})".format(os.strerror(error.errno or 0))
            raise ValueError("descriptor {} {}".format(fd, why)) from None
    if socket_type is not None and sock.type != socket_type:
        _release(sock, fd)
        raise ValueError("descriptor {} is a {} socket; this server needs {}".format(
            fd, sock.type.name, socket.SocketKind(socket_type).name))
    if sock.type == socket.SOCK_STREAM and \
            not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        _release(sock, fd)
        raise ValueError("descriptor {} is a stream socket that is not listening".format(fd))
    return sock


def _release(sock, fd):
    if not isinstance(fd, socket.socket):
        sock.detach()  # the caller's descriptor: leave it open


_INET = (socket.AF_INET, socket.AF_INET6)


def adopt_pending(server):
    """In server_bind: take the socket this server is to adopt, if any.
    True when it did (the caller then skips bind())."""
    sock = server.__dict__.pop("_adopt", None)
    if sock is None and for_run:
        sock = inherited_socket(for_run.pop(0), server.socket_type)
        print("fastsockserver: serving on inherited descriptor {} ({}) instead of binding "
              "{!r}".format(sock.fileno(), _address(sock), server.server_address),
              file=sys.stderr, flush=True)
    if sock is None:
        return False
    same = sock.family == server.address_family or (
        sock.family in _INET and server.address_family in _INET)
    if not same:
        raise ValueError("descriptor {} is an {} socket; {} uses {}".format(
            sock.fileno(), sock.family.name, type(server).__name__,
            socket.AddressFamily(server.address_family).name))
    server.socket.close()
    server.socket = sock
    server._inherited_socket = True  # serve(reuse_port=True) cannot bind beside it
    server.address_family = sock.family
    server.server_address = sock.getsockname()
    return True


def _address(sock):
    try:
        return sock.getsockname()
    except OSError:
        return "?"


def adopt_socket(server, fd):
    """Serve on a listening socket the server did not bind: ``fd`` (a
    descriptor or a socket object; family and type read from it). For a
    server made with ``bind_and_activate=False``: runs its server_bind()
    (which takes the socket instead of binding) and server_activate()."""
    server._adopt = inherited_socket(fd, server.socket_type)
    try:
        server.server_bind()
        server.server_activate()
    except BaseException:
        server.__dict__.pop("_adopt", None)
        raise
    return server
