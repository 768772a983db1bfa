"""The bad clients of the bench's ``slowloris`` case, in a process of their own.

Run as ``python -m fastsockserver._bench.slowclients --port P --idle N --trickle M``.
It keeps N idle connections (connected, sending nothing) and M trickling
ones ("GET / HTTP/1.1\\r\\n", then one header byte about every second, the
head never finished) open to the server; a connection the server closes is
opened again. New connections are opened at a bounded rate, with a bounded
number of connects in progress, each given CONNECT_TIMEOUT seconds. One
thread, one epoll set, nonblocking sockets. Loopback addresses only.

It prints one JSON line ``{"ready": true|false, ...counters}`` once every
connection is open, or ``--ready-seconds`` after it started (false: fewer
were open), then answers ``stats`` on stdin with the counters; ``quit`` (or
end of input) closes every socket and exits. It also exits by itself after
``--max-seconds``.
"""
import argparse
import errno
import ipaddress
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time

CONNECT_RATE = 5000.0       # new connections per second, at most
CONNECT_BURST = 5           # ... and at most this many at once: the stdlib's listen
# backlog is 5, and a connection the full backlog refuses waits a second or more
# for the kernel to try again
PACE = 0.001                # while connections are missing, new ones start this often
CONNECTS_IN_PROGRESS = 256  # at most this many connects under way at once
CONNECT_TIMEOUT = 3.0       # a connect not done by then is closed (the server's
# backlog was full and the kernel dropped the SYN) and tried again
TRICKLE_INTERVAL = 1.0      # seconds between a trickling connection's bytes
TICK = 0.01                 # seconds between looks at connects and trickle bytes due
REQUEST_LINE = b"GET / HTTP/1.1\r\n"
# Sent a byte at a time, over and over: header lines, never the empty line
# that would end the head.
TRICKLE_BYTES = b"X-Slow: 1\r\n"


def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Conn:
    """One slow connection: idle, or trickling."""

    __slots__ = ("sock", "trickle", "open", "since", "next_send", "sent")

    def __init__(self, sock, trickle, now):
        self.sock = sock
        self.trickle = trickle
        self.open = False
        self.since = now       # connect started (then: opened)
        self.next_send = 0.0
        self.sent = 0          # trickle bytes sent


class SlowClients:
    def __init__(self, host, port, idle, trickle):
        self.address = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.want = {False: idle, True: trickle}
        self.count = {False: 0, True: 0}    # connections open or connecting, by kind
        self.conns = {}                     # fd -> Conn
        # the connections a tick looks at (not the idle open ones: at 10,000 a
        # scan of all would take the client's core from the good clients)
        self.pending = set()                # connects under way
        self.trickling = set()              # open trickling connections
        self.selector = selectors.DefaultSelector()
        self.tokens = 0.0
        self.last_refill = time.monotonic()
        self.connecting = 0
        self.counters = {
            "connects": 0, "connect_errors": 0, "connect_timeouts": 0,
            "closed_by_server_idle": 0, "closed_by_server_trickle": 0,
            "trickle_bytes": 0, "bytes_received": 0,
        }

    def stats(self):
        connecting = {False: 0, True: 0}
        for conn in self.pending:
            connecting[conn.trickle] += 1
        out = dict(self.counters)
        out.update(idle_open=self.count[False] - connecting[False],
                   trickle_open=self.count[True] - connecting[True],
                   connecting=self.connecting, idle_wanted=self.want[False],
                   trickle_wanted=self.want[True])
        return out

    def all_open(self):
        return self.connecting == 0 and all(
            self.count[kind] == self.want[kind] for kind in (False, True))

    def _start_connect(self, trickle, now):
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.counters["connect_errors"] += 1
            return
        conn = Conn(sock, trickle, now)
        self.conns[sock.fileno()] = conn
        self.count[trickle] += 1
        self.connecting += 1
        self.pending.add(conn)
        self.counters["connects"] += 1
        self.selector.register(sock, selectors.EVENT_WRITE, conn)

    def _drop(self, conn, counter=None):
        if counter:
            self.counters[counter] += 1
        if not conn.open:
            self.connecting -= 1
        self.pending.discard(conn)
        self.trickling.discard(conn)
        self.count[conn.trickle] -= 1
        del self.conns[conn.sock.fileno()]
        self.selector.unregister(conn.sock)
        conn.sock.close()

    def _connected(self, conn, now):
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop(conn, "connect_errors")
            return
        conn.open = True
        conn.since = now
        self.connecting -= 1
        self.pending.discard(conn)
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.trickle:
            self.trickling.add(conn)
            conn.next_send = now + TRICKLE_INTERVAL
            self._send(conn, REQUEST_LINE)

    def _send(self, conn, data):
        try:
            conn.sock.send(data)
        except BlockingIOError:
            pass   # a full send buffer: the server is not reading; the byte is skipped
        except OSError:
            self._drop(conn, "closed_by_server_trickle")

    def _readable(self, conn):
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.counters["bytes_received"] += len(data)  # a 408 or such: the close follows
            return
        self._drop(conn, "closed_by_server_trickle" if conn.trickle else "closed_by_server_idle")

    def missing(self):
        return any(self.count[kind] < self.want[kind] for kind in (False, True))

    def open_missing(self, now):
        """Start connects for what is missing, within the rate."""
        self.tokens = min(CONNECT_BURST,
                          self.tokens + (now - self.last_refill) * CONNECT_RATE)
        self.last_refill = now
        for trickle in (True, False):   # the few trickling ones first
            while (self.count[trickle] < self.want[trickle] and self.tokens >= 1
                   and self.connecting < CONNECTS_IN_PROGRESS):
                self.tokens -= 1
                self._start_connect(trickle, now)

    def tick(self, now):
        """Expire slow connects, send the trickle bytes that are due."""
        for conn in [c for c in self.pending if now - c.since > CONNECT_TIMEOUT]:
            self._drop(conn, "connect_timeouts")
        for conn in list(self.trickling):
            if now >= conn.next_send:
                conn.next_send += TRICKLE_INTERVAL
                if conn.next_send < now:
                    conn.next_send = now + TRICKLE_INTERVAL
                byte = TRICKLE_BYTES[conn.sent % len(TRICKLE_BYTES):][:1]
                conn.sent += 1
                self.counters["trickle_bytes"] += 1
                self._send(conn, byte)

    def close(self):
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()
        self.selector.close()


def run(clients, ready_seconds, deadline):
    """Keep the connections up until ``quit``, end of input, or the deadline."""
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    clients.selector.register(stdin, selectors.EVENT_READ, None)
    started = time.monotonic()
    ready_sent = False
    pending = b""
    next_tick = started
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= next_tick:
            clients.tick(now)
            next_tick = now + TICK
        if clients.missing():
            clients.open_missing(now)
        if not ready_sent and (clients.all_open() or now - started >= ready_seconds):
            _emit(dict(clients.stats(), ready=clients.all_open(),
                       seconds=time.monotonic() - started))
            ready_sent = True
        wait = max(0.0, next_tick - time.monotonic())
        if clients.missing():
            wait = min(wait, PACE)
        for key, events in clients.selector.select(wait):
            conn = key.data
            if conn is None:
                try:
                    chunk = os.read(stdin, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    command = line.strip().decode("ascii", "replace")
                    if command == "quit":
                        return
                    if command == "stats":
                        _emit(clients.stats())
                    else:
                        _emit({"error": "unknown command {!r}".format(command)})
                continue
            if conn.sock.fileno() < 0 or clients.conns.get(conn.sock.fileno()) is not conn:
                continue   # dropped earlier in this batch
            if not conn.open:
                clients._connected(conn, time.monotonic())
            else:
                clients._readable(conn)


def raise_open_files_limit(needed):
    """Raise this process's soft open-files limit towards ``needed`` (up to the hard
    limit); returns the limit now in force (a large number for no limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastsockserver._bench.slowclients")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--trickle", type=int, default=100)
    parser.add_argument("--ready-seconds", type=float, default=30.0,
                        help="report readiness by then even if not every connection is open")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="exit by itself after this long")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("loopback addresses only, not {}".format(args.host))
    if args.idle < 0 or args.trickle < 0:
        parser.error("--idle and --trickle must be >= 0")
    killer = threading.Timer(args.max_seconds + 5, os._exit, (3,))  # a last resort
    killer.daemon = True
    killer.start()
    needed = args.idle + args.trickle + CONNECTS_IN_PROGRESS + 64
    limit = raise_open_files_limit(needed)
    if limit < needed:
        _emit({"error": "the open-files limit is {} and {} connections need about {} "
                        "(ulimit -n)".format(limit, args.idle + args.trickle, needed)})
        return 1
    clients = SlowClients(args.host, args.port, args.idle, args.trickle)
    try:
        run(clients, args.ready_seconds, time.monotonic() + args.max_seconds)
    finally:
        clients.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
