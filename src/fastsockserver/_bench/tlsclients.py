"""The TLS clients of the bench's ``tls-*`` workloads, and their certificates.

``TlsLoadGen`` drives TLS with the ssl module: one thread, one epoll set,
nonblocking sockets, a timeout on every request. It has the interface and the
figures of the compiled ``_loadgen.LoadGen`` (modes ``connrate`` and
``persistent``), so a TLS case is measured as any other load case.

Why Python and not OpenSSL from C in ``_loadgen.pyx``: most of a handshake's
cost is OpenSSL's own (key exchange, signature check), which the ssl module
calls as C code would; OpenSSL's headers would also become a build
requirement of the load generator. What Python adds is per-event overhead,
and that is measured: every run reports the client's CPU per request
(``client_us_per_req``) and its share of its core, so a saturated client is
seen, not guessed.

``connrate``: each slot connects, makes a full TLS 1.3 handshake (the client
never offers a session to resume), sends the message, reads it back, closes.
``persistent``: each slot keeps one TLS connection and sends the message
again once the whole response is in.

``make_certificates`` writes a CA and two server certificates for the same name
(subjectAltName IP:127.0.0.1), one with an EC P-256 key and one with an RSA-2048
key (``SERVER_KEYS``), with the ``openssl`` command line tool.
"""
import errno
import ipaddress
import os
import select
import shutil
import socket
import ssl
import subprocess
import time

# The compiled load generator's kinds, and "tls": a handshake that failed
ERROR_KINDS = ("refused", "reset", "timeout", "closed", "bad_response", "no_source_port",
               "other", "tls")
BACKOFF = 0.01          # seconds after an error before the slot tries again
TIMEOUT_TICK = 0.005    # seconds between looks for requests past their timeout
SOURCE_PORT_TRIES = 8

# Slot states
IDLE, CONNECTING, HANDSHAKE, SENDING, RECEIVING, BACKOFF_WAIT = range(6)
IN_FLIGHT = (CONNECTING, HANDSHAKE, SENDING, RECEIVING)

# The server's key types: {name: (certificate file, key file, openssl -newkey arguments)}
SERVER_KEYS = {
    "ec": ("server.pem", "server.key",
           ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")),
    "rsa2048": ("server-rsa2048.pem", "server-rsa2048.key",
                ("-newkey", "rsa:2048", "-nodes")),
}
CA_CERT = "ca.pem"
# The DER of a certificate's subjectPublicKeyInfo algorithm: which key the server used
_KEY_ALGORITHMS = ((b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01", "ec"),            # ecPublicKey
                   (b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01", "rsa"))  # rsaEncryption


def make_certificates(directory):
    """A CA and the server certificates of SERVER_KEYS for 127.0.0.1 in ``directory``;
    returns None, or a one-line reason why they could not be made."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return "the openssl command line tool is not installed (it makes the certificates)"
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    commands = [
        # keyUsage on the CA: Python 3.13's default client context verifies strictly
        # (VERIFY_X509_STRICT) and refuses a CA certificate without it.
        ["req", "-x509", *SERVER_KEYS["ec"][2], "-keyout", "ca.key", "-out", CA_CERT,
         "-days", "2", "-subj", "/CN=fastsockserver bench CA",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    for certificate, key, newkey in SERVER_KEYS.values():
        commands += [
            ["req", *newkey, "-keyout", key, "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "server.csr", "-CA", CA_CERT, "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", certificate, "-extfile", "server.ext"],
        ]
    for args in commands:
        try:
            done = subprocess.run([openssl, *args], cwd=directory, capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "openssl {} failed: {}".format(args[0], exc)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return "openssl {} failed: {}".format(args[0], lines[-1] if lines else
                                                  "exit code {}".format(done.returncode))
    return None


def server_context(directory, key="ec"):
    """The servers' context: TLS 1.3 only, the bench's certificate with a ``key`` of
    SERVER_KEYS."""
    certificate, key_file, _ = SERVER_KEYS[key]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(os.path.join(directory, certificate),
                            os.path.join(directory, key_file))
    return context


def client_context(directory):
    """The clients' context: TLS 1.3 only, the server's certificate checked against
    the bench's CA and 127.0.0.1, as a real client would."""
    context = ssl.create_default_context(cafile=os.path.join(directory, CA_CERT))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class Slot:
    """One client: its connection and the request it has in flight."""

    __slots__ = ("sock", "state", "start", "deadline", "sent", "received", "served",
                 "events")

    def __init__(self):
        self.sock = None
        self.state = IDLE
        self.start = 0.0      # the request's start (connrate: before its connect)
        self.deadline = 0.0   # the request's timeout, or the end of a back-off
        self.sent = 0
        self.received = 0
        self.served = 0       # requests completed on the current connection
        self.events = 0       # registered with epoll (0: not registered)


class TlsLoadGen:
    """A TLS load generator with the interface and figures of ``_loadgen.LoadGen``."""

    def __init__(self, mode, host, port, message, *, concurrency=32, timeout=5.0,
                 cert_dir):
        if mode not in ("connrate", "persistent"):
            raise ValueError("mode must be connrate or persistent, not {!r}".format(mode))
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("loopback addresses only, not {}".format(host))
        if not message:
            raise ValueError("an empty message")
        self.mode = mode
        self.address = (host, port)
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.message = message
        self.timeout = timeout
        self.context = client_context(cert_dir)
        self.slots = [Slot() for _ in range(concurrency)]
        self.by_fd = {}
        self.epoll = select.epoll()
        self.closed = False
        # connrate: source ports outside the kernel's ephemeral range, as the compiled
        # load generator binds them, so that TIME_WAIT never exhausts that range
        self.ports = []
        if mode == "connrate":
            from .. import _loadgen
            self.ports = [p for first, last in _loadgen.default_source_ports()
                          for p in range(first, last + 1)]
        self.port_cursor = 0
        self._reset_counts()

    def _reset_counts(self):
        self.latencies = []
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.errors_served = dict.fromkeys(ERROR_KINDS, 0)
        self.connects = 0
        self.handshakes = 0
        self.port_retries = 0
        self.server_key = None   # "ec" or "rsa": the key of the certificate the server sent

    # -------------------------------------------------------- sockets and epoll

    def _want(self, slot, events):
        if slot.events == events:
            return
        fd = slot.sock.fileno()
        if slot.events:
            self.epoll.modify(fd, events)
        else:
            self.epoll.register(fd, events)
            self.by_fd[fd] = slot
        slot.events = events

    def _drop(self, slot):
        if slot.sock is not None:
            if slot.events:
                fd = slot.sock.fileno()
                self.epoll.unregister(fd)
                del self.by_fd[fd]
            slot.sock.close()
        slot.sock = None
        slot.events = 0
        slot.served = 0

    def _fail(self, slot, kind, now, record):
        if record:
            self.errors[kind] += 1
            if slot.served:
                self.errors_served[kind] += 1
        self._drop(slot)
        slot.state = BACKOFF_WAIT
        slot.deadline = now + BACKOFF

    @staticmethod
    def _kind(exc):
        """The error kind of an exception from the ssl module or a socket."""
        if isinstance(exc, ssl.SSLEOFError):
            return "closed"
        if isinstance(exc, ssl.SSLError):
            return "tls"
        return _errno_kind(exc.errno)

    def _socket(self):
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect(self):
        """(socket or None, connect_ex's errno) of a new nonblocking connect. connrate:
        from a source port of our own, the next one tried where a port is taken or
        its 4-tuple is still in TIME_WAIT, SOURCE_PORT_TRIES times at most."""
        if not self.ports:
            sock = self._socket()
            return sock, sock.connect_ex(self.address)
        for _ in range(SOURCE_PORT_TRIES):
            sock = self._socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            port = self.ports[self.port_cursor]
            self.port_cursor = (self.port_cursor + 1) % len(self.ports)
            try:
                sock.bind((self.host, port))
                err = sock.connect_ex(self.address)
            except OSError as exc:
                err = exc.errno
            if err not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return sock, err
            self.port_retries += 1
            sock.close()
        return None, errno.EADDRNOTAVAIL

    def _open(self, slot, now, record):
        slot.sock, err = self._connect()
        slot.served = 0
        self.connects += 1
        if err not in (0, errno.EINPROGRESS):
            self._fail(slot, _errno_kind(err), now, record)
            return
        slot.state = CONNECTING
        self._want(slot, select.EPOLLOUT)

    def _start(self, slot, now, record):
        slot.start = now
        slot.deadline = now + self.timeout
        slot.sent = 0
        slot.received = 0
        if slot.sock is None:
            self._open(slot, now, record)
        else:
            slot.state = SENDING
            self._send(slot, now, record)

    def _connected(self, slot, now, record):
        err = slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(slot, _errno_kind(err), now, record)
            return
        # The same file descriptor, now under the SSLSocket: epoll's entry stays.
        plain = slot.sock
        slot.sock = self.context.wrap_socket(plain, server_hostname=self.host,
                                             do_handshake_on_connect=False)
        slot.state = HANDSHAKE
        self._handshake(slot, now, record)

    def _handshake(self, slot, now, record):
        try:
            slot.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(slot, select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self._want(slot, select.EPOLLOUT)
            return
        except OSError as exc:
            self._fail(slot, self._kind(exc), now, record)
            return
        if record:
            self.handshakes += 1
        if self.server_key is None:
            der = slot.sock.getpeercert(binary_form=True) or b""
            self.server_key = next((name for oid, name in _KEY_ALGORITHMS if oid in der), "?")
        slot.state = SENDING
        self._send(slot, now, record)

    def _send(self, slot, now, record):
        try:
            while slot.sent < len(self.message):
                slot.sent += slot.sock.send(self.message[slot.sent:])
        except (ssl.SSLWantWriteError, BlockingIOError):
            self._want(slot, select.EPOLLOUT)
            return
        except ssl.SSLWantReadError:
            self._want(slot, select.EPOLLIN)
            return
        except OSError as exc:
            self._fail(slot, self._kind(exc), now, record)
            return
        slot.state = RECEIVING
        self._want(slot, select.EPOLLIN)
        self._receive(slot, now, record)

    def _receive(self, slot, now, record):
        want = len(self.message)
        sock = slot.sock
        try:
            while slot.received < want:
                data = sock.recv(65536)
                if not data:
                    self._fail(slot, "closed", now, record)
                    return
                slot.received += len(data)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except ssl.SSLWantWriteError:
            self._want(slot, select.EPOLLOUT)
            return
        except OSError as exc:
            self._fail(slot, self._kind(exc), now, record)
            return
        if slot.received > want:
            self._fail(slot, "bad_response", now, record)
            return
        if record:
            self.latencies.append(time.monotonic() - slot.start)
        slot.served += 1
        slot.state = IDLE
        if self.mode == "connrate":
            self._drop(slot)

    def _on_event(self, slot, now, record):
        state = slot.state
        if state == CONNECTING:
            self._connected(slot, now, record)
        elif state == HANDSHAKE:
            self._handshake(slot, now, record)
        elif state == SENDING:
            self._send(slot, now, record)
        elif state == RECEIVING:
            self._receive(slot, now, record)
        elif slot.events:   # an idle persistent connection the server closed or wrote to
            self._fail(slot, "closed", now, record)

    # -------------------------------------------------------- the loop

    def _loop(self, end, record, start_new):
        poll = self.epoll.poll
        by_fd = self.by_fd
        slots = self.slots
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if now >= next_tick:
                busy = False
                for slot in slots:
                    state = slot.state
                    if state in IN_FLIGHT:
                        busy = True
                        if now >= slot.deadline:
                            self._fail(slot, "timeout", now, record)
                    elif state == BACKOFF_WAIT and now >= slot.deadline:
                        slot.state = IDLE
                    if start_new and slot.state == IDLE:
                        self._start(slot, now, record)
                        busy = True
                if not start_new and not busy:
                    return
                next_tick = now + TIMEOUT_TICK
            for fd, _ in poll(max(0.0, min(next_tick, end) - now)):
                slot = by_fd.get(fd)
                if slot is None:
                    continue
                self._on_event(slot, time.monotonic(), record)
                if start_new and slot.state == IDLE:
                    self._start(slot, time.monotonic(), record)

    def run(self, seconds, record=True):
        """Drive the load for ``seconds``; the figures of this run, as LoadGen.run's."""
        if self.closed:
            raise ValueError("run() on a closed TlsLoadGen")
        if not 0 < seconds <= 3600:
            raise ValueError("seconds must be in (0, 3600]")
        self._reset_counts()
        cpu0 = time.thread_time()
        start = time.monotonic()
        self._loop(start + seconds, record, True)
        end = time.monotonic()
        cpu = time.thread_time() - cpu0
        elapsed = end - start
        if not record:
            return {"elapsed": elapsed}
        inflight = [s for s in self.slots if s.state in IN_FLIGHT]
        requests = len(self.latencies)
        result = {
            "elapsed": elapsed,
            "requests": requests,
            "rps": requests / elapsed if elapsed > 0 else 0.0,
            "client_cpu": cpu,
            "client_cpu_pct": 100.0 * cpu / elapsed if elapsed > 0 else 0.0,
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "errors_on_served": dict(self.errors_served),
            "errors_on_served_total": sum(self.errors_served.values()),
            "errors_on_new": {k: self.errors[k] - self.errors_served[k] for k in ERROR_KINDS},
            "errors_on_new_total": sum(self.errors.values()) - sum(self.errors_served.values()),
            "close_responses": 0,
            "connects": self.connects,
            "handshakes": self.handshakes,
            "server_key": self.server_key,
            "source_port_retries": self.port_retries,
            "stale_datagrams": 0,
            "samples": requests,
            "samples_truncated": False,
            "inflight_at_end": len(inflight),
            "oldest_inflight_ms": max((end - s.start for s in inflight), default=0.0) * 1e3,
        }
        result.update(_percentiles(self.latencies))
        return result

    def warm_up(self, seconds, max_seconds):
        """As LoadGen.warm_up: unrecorded load, then (persistent) on until every slot's
        connection has completed a request, ``max_seconds`` at most."""
        if self.closed:
            raise ValueError("warm_up() on a closed TlsLoadGen")
        total = 0.0
        step = seconds
        while True:
            total += self.run(step, record=False)["elapsed"]
            if self.mode == "connrate":
                return total
            if all(slot.served for slot in self.slots) or total >= max_seconds:
                return total
            step = min(0.05, max_seconds - total) if max_seconds > total else 0.01

    def drain(self, max_seconds=1.0):
        """Start nothing new; wait (up to ``max_seconds``) for the requests in flight."""
        if self.closed:
            return
        self._loop(time.monotonic() + max_seconds, False, False)
        self._reset_counts()

    def close(self):
        if self.closed:
            return
        for slot in self.slots:
            self._drop(slot)
            slot.state = IDLE
        self.epoll.close()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _errno_kind(err):
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if err == errno.ETIMEDOUT:
        return "timeout"
    if err in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return "no_source_port"
    return "other"


def _percentiles(latencies):
    """The latency figures LoadGen reports (ms, nearest rank), from seconds."""
    names = ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "lat_p999_ms")
    if not latencies:
        return dict.fromkeys(names + ("lat_max_ms", "lat_mean_ms"))
    ordered = sorted(latencies)
    n = len(ordered)
    out = {}
    for name, q in zip(names, (0.5, 0.9, 0.99, 0.999)):
        index = min(n - 1, max(0, int(q * n + 0.999999999) - 1))
        out[name] = ordered[index] * 1e3
    out["lat_max_ms"] = ordered[-1] * 1e3
    out["lat_mean_ms"] = sum(ordered) / n * 1e3
    return out
