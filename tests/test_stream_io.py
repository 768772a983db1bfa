"""StreamRequestHandler's rfile/wfile against the stdlib's, byte for byte.

fastsockserver gives the handler an rfile whose raw stream is
``_SocketReaderIO`` (socket.SocketIO with the core's ``socketio_readinto``)
and a wfile whose ``write`` is the core's ``socket_writer_write``. Every test
here runs the same scenario over ``socketserver.StreamRequestHandler`` and
over ``impl.StreamRequestHandler`` and compares what each operation returned
or raised (type, errno, message).

The reader scenarios are deterministic on purpose: chunks are sent either
before the first operation, or one at a time by a feeder thread that sends
the next chunk only when the reading thread is blocked in recvfrom/poll
(read from /proc/self/task/<tid>/syscall) and every byte sent so far has
been received; so each raw read sees the same bytes in every run, and
read1/peek/readinto1 results can be compared exactly. Without that
/proc file (not Linux) the scenarios that need the feeder are skipped.
"""
import array
import errno
import fcntl
import importlib
import io
import os
import platform
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastsockserver
from support import (
    CERTFILE,
    HERE,
    WAIT,
    make_handler,
    outcome,
    races_on_purpose,
    set_linger_zero,
    wait_for,
)

# socket.timeout is TimeoutError from 3.10 on; a class of its own named "timeout" on 3.9.
TIMEOUT_NAME = socket.timeout.__name__

SIOCINQ = 0x541B   # FIONREAD: bytes in the receive queue
SIOCOUTQ = 0x5411  # TIOCOUTQ: TCP: bytes sent and not yet acknowledged

# System calls in which a thread waiting for socket data sleeps.
_WAIT_SYSCALLS = {
    "x86_64": {"45": "recvfrom", "7": "poll", "271": "ppoll", "23": "select", "270": "pselect6"},
    "aarch64": {"207": "recvfrom", "73": "ppoll", "72": "pselect6"},
}.get(platform.machine())


def _can_watch_syscalls():
    if not _WAIT_SYSCALLS or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/task/{}/syscall".format(threading.get_native_id())) as f:
            f.read()
        return True
    except OSError:
        return False


CAN_FEED = _can_watch_syscalls()


def is_compiled(mod):
    return mod is fastsockserver and fastsockserver.COMPILED


# --------------------------------------------------------------- sockets

def unix_pair():
    a, b = socket.socketpair()
    return a, b


def tcp_pair():
    """(server side, client side) of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        client.settimeout(None)
        listener.settimeout(WAIT)
        server, _ = listener.accept()
        server.settimeout(None)
    return server, client


def make_pair(transport):
    """(server side, client side) of a "unix", "tcp" or "tls" connection."""
    if transport == "tls":
        return tls_pair()  # (section 4)
    return unix_pair() if transport == "unix" else tcp_pair()


def ioctl_int(sock, request):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]


def tcp_state(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


TCP_ESTABLISHED = 1


def wait_until(predicate, timeout=WAIT, what="condition"):
    """wait_for() at a finer interval, failing with ``what`` if time runs out."""
    if not wait_for(predicate, timeout, interval=0.0005):
        raise AssertionError("timed out waiting for " + what)


def close_handler(h):
    for f in (h.wfile, h.rfile):
        try:
            f.close()
        except OSError:
            pass


def check_handler_objects(mod, h):
    if type(h.connection) is socket.socket and h.rbufsize == -1 and is_compiled(mod):
        from fastsockserver import _core
        assert type(h.rfile.raw).__name__ == "_SocketReaderIO"
        assert type(h.rfile.raw).readinto is _core.socketio_readinto
        assert type(h.wfile).write is _core.socket_writer_write
    if type(h.connection) is socket.socket and h.rbufsize == -1 and mod is not socketserver:
        # rfile.raw is built without SocketIO.__init__: the same state as makefile's.
        if not h.rfile.closed:
            reference = h.connection.makefile("rb")
            try:
                assert vars(h.rfile.raw) == vars(reference.raw)
                assert h.rfile.mode == reference.mode and h.rfile.name == reference.name
                assert h.rfile.raw.readable() and not h.rfile.raw.writable()
            finally:
                reference.close()


# --------------------------------------------------------------- reader model

BUFFER_SIZE = 8192  # io.DEFAULT_BUFFER_SIZE: rfile's buffer


def needs_more(op, arg, avail, inq=0):
    """Whether ``op`` must wait for bytes beyond ``avail`` (no EOF yet);
    ``inq`` of them are still in the socket, the rest in rfile's buffer."""
    if op == "read":
        return arg is None or arg < 0 or len(avail) < arg
    if op == "readinto":
        return arg > 0 and len(avail) < arg
    if op == "readinto1":
        # CPython's readinto1 reads the socket once, directly into the
        # caller's buffer, when more than a buffer's worth is still wanted
        # after the buffered bytes, even if some were buffered.
        buffered = len(avail) - inq
        if arg == 0:
            return False
        if buffered and arg - buffered <= BUFFER_SIZE:
            return False
        return inq == 0
    if op == "read1":
        return arg != 0 and not avail
    if op == "peek":
        return not avail
    if op == "next" or (op == "readline" and (arg is None or arg < 0)):
        return b"\n" not in avail
    if op == "readline":
        return arg > 0 and b"\n" not in avail[:arg] and len(avail) < arg
    if op == "readlines":
        if arg is None or arg <= 0:
            return True
        pos = length = 0
        while True:
            idx = avail.find(b"\n", pos)
            if idx < 0:
                return True
            line_length = idx + 1 - pos
            pos = idx + 1
            if line_length > arg - length:
                return False
            length += line_length
    raise AssertionError(op)


def perform(rfile, op, arg):
    """Run one operation; (trace entry, bytes consumed or None if unknown)."""
    if op == "read":
        res = outcome(lambda: rfile.read() if arg is None else rfile.read(arg))
        used = len(res[1]) if res[0] == "ok" and res[1] is not None else 0
    elif op in ("readinto", "readinto1"):
        buf = bytearray(b"\xa5" * arg)
        meth = getattr(rfile, op)
        res = outcome(lambda: meth(buf))
        if res[0] == "ok":
            n = res[1]
            res = ("ok", n, bytes(buf))
            used = n or 0
    elif op == "read1":
        res = outcome(lambda: rfile.read1(arg))
        used = len(res[1]) if res[0] == "ok" and res[1] is not None else 0
    elif op == "peek":
        res = outcome(lambda: rfile.peek(arg))
        used = 0
    elif op == "readline":
        res = outcome(lambda: rfile.readline() if arg is None else rfile.readline(arg))
        used = len(res[1]) if res[0] == "ok" else 0
    elif op == "readlines":
        res = outcome(lambda: rfile.readlines() if arg is None else rfile.readlines(arg))
        used = sum(map(len, res[1])) if res[0] == "ok" else 0
    elif op == "next":
        res = outcome(lambda: next(rfile))
        used = len(res[1]) if res[0] == "ok" else 0
    else:
        raise AssertionError(op)
    if res[0] != "ok":
        used = None
    return (op, arg) + res, used


class Feeder(threading.Thread):
    """Sends the scenario's events one at a time, each only once the reading
    thread is blocked waiting for data and has taken every byte sent so far."""

    def __init__(self, run, reader_tid, delay):
        super().__init__(daemon=True)
        self.run_ = run
        self.reader_tid = reader_tid
        self.delay = delay
        self.done = threading.Event()
        self.error = None

    def reader_waiting(self):
        with open("/proc/self/task/{}/syscall".format(self.reader_tid)) as f:
            fields = f.read().split()
        name = _WAIT_SYSCALLS.get(fields[0]) if fields else None
        if name is None:
            return False
        if name == "recvfrom":
            return int(fields[1], 16) == self.run_.reader.fileno()
        return True

    def run(self):
        try:
            while not self.done.is_set() and self.run_.next_event < len(self.run_.events):
                deadline = time.monotonic() + WAIT
                while not self.done.is_set():
                    if ioctl_int(self.run_.reader, SIOCINQ) == 0 and self.reader_waiting():
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError("reader never waited for data")
                    time.sleep(0.0003)
                if self.done.is_set():
                    return
                if self.delay:
                    time.sleep(self.delay)
                self.run_.send_next()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


PREFEED_BUDGET = 32 * 1024


class ReaderRun:
    """One scenario over one handler class."""

    def __init__(self, mod, sc):
        self.mod = mod
        self.sc = sc
        self.events = list(sc["chunks"]) + ([sc["end"]] if sc["end"] != "none" else [])
        self.next_event = 0
        self.sent = bytearray()
        self.ended = False

    def send_next(self):
        event = self.events[self.next_event]
        tcp = self.sc["transport"] == "tcp"
        if isinstance(event, bytes):
            self.peer.sendall(event)
            self.sent += event
            if tcp:  # acknowledged: in the reader's receive queue
                wait_until(lambda: ioctl_int(self.peer, SIOCOUTQ) == 0, what="ACK")
        else:
            if event == "shutdown":
                self.peer.shutdown(socket.SHUT_WR)
            else:  # close, reset (linger 0 for TCP, unread data for AF_UNIX)
                self.peer.close()
            if tcp:
                wait_until(lambda: tcp_state(self.reader) != TCP_ESTABLISHED, what="FIN/RST")
            self.ended = True
        self.next_event += 1

    def run(self):
        sc = self.sc
        trace = []
        self.reader, self.peer = make_pair(sc["transport"])
        self.peer.settimeout(WAIT)  # a send that cannot go through fails the test, never hangs it
        h = None
        watchdog_fired = []

        def watchdog():
            watchdog_fired.append(True)
            try:
                self.reader.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        try:
            if sc["end"] == "reset":
                if sc["transport"] == "tcp":
                    set_linger_zero(self.peer)
                else:
                    self.reader.sendall(b"unread")  # peer.close() then resets
            h = make_handler(self.mod, self.reader, timeout=sc["timeout"])
            check_handler_objects(self.mod, h)
            rfile = h.rfile
            # Prefed chunks go out before anyone reads: only as many as surely
            # fit in the socket buffers (measured on Linux 6: a unix socketpair
            # takes 278 one-byte sends, and blocks after 705 + 3 x 16384 bytes).
            # The rest is fed when the reader waits, as for any later chunk.
            budget = PREFEED_BUDGET
            while self.next_event < min(sc["prefeed"], len(self.events)):
                event = self.events[self.next_event]
                if isinstance(event, bytes):
                    budget -= len(event) + 1024
                    if budget < 0:
                        break
                self.send_next()
            consumed = 0
            timed_out = False
            for op, arg, feed in sc["ops"]:
                avail = bytes(self.sent[consumed:])
                blocking_possible = not (self.ended or timed_out or sc["timeout"] == 0.0)
                feeder = None
                inq = ioctl_int(self.reader, SIOCINQ) if blocking_possible else 0
                if blocking_possible and needs_more(op, arg, avail, inq):
                    rest = avail + b"".join(e for e in self.events[self.next_event:]
                                            if isinstance(e, bytes))
                    if sc["timeout"] is None:
                        if not CAN_FEED or (sc["end"] == "none" and needs_more(
                                op, arg, rest, len(rest) - len(avail) + inq)):
                            trace.append((op, arg, "skipped: would wait forever"))
                            continue
                        feed = True
                    if CAN_FEED and feed and (sc["timeout"] is None or sc["timeout"] >= 0.5):
                        feeder = Feeder(self, threading.get_native_id(), sc["delay"])
                timer = threading.Timer(WAIT, watchdog)
                timer.start()
                try:
                    if feeder:
                        feeder.start()
                    entry, used = perform(rfile, op, arg)
                finally:
                    timer.cancel()
                    if feeder:
                        feeder.done.set()
                        feeder.join(WAIT)
                        assert not feeder.is_alive()
                        if feeder.error:
                            raise feeder.error
                    timer.join(WAIT)
                assert not watchdog_fired, "the scenario model let {}({}) wait".format(op, arg)
                trace.append(entry)
                if entry[2] == "raise" and entry[3] == TIMEOUT_NAME:
                    timed_out = True
                if used is None:
                    if blocking_possible and not timed_out and not self.ended:
                        break  # bytes consumed unknown: the model cannot go on
                    used = 0
                consumed += used
            trace.append(("closed", outcome(rfile.close)))
        finally:
            if h is not None:
                close_handler(h)
            self.reader.close()
            self.peer.close()
        return trace


# --------------------------------------------------------------- strategies

def _split(payload, cuts, max_chunk):
    chunks, pos = [], 0
    for cut in cuts:
        if pos >= len(payload):
            break
        chunks.append(payload[pos:pos + min(cut, max_chunk)])
        pos += len(chunks[-1])
    while pos < len(payload):
        chunks.append(payload[pos:pos + max_chunk])
        pos += len(chunks[-1])
    return chunks


payloads = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"\n", b"\r\n", b"a", b"line\n", b"x" * 100, b"\n\n\n", b"\0"]),
             max_size=300).map(b"".join),
    st.builds(lambda part, times: part * times,
              st.binary(min_size=1, max_size=64), st.integers(1, 4096)),  # up to 256 KiB
    st.builds(lambda part, times: part * times,
              st.sampled_from([b"a\n", b"line of text\r\n", b"\n" * 7 + b"x" * 500]),
              st.integers(100, 20000)).map(lambda p: p[:262144]),
)


args = st.one_of(st.integers(-2, 12), st.integers(0, 300), st.integers(0, 70000))


operations = st.one_of(
    st.tuples(st.just("read"), st.one_of(st.none(), args)),
    st.tuples(st.sampled_from(["read1", "peek", "readinto", "readinto1"]),
              st.one_of(st.integers(0, 12), st.integers(0, 300), st.integers(0, 70000))),
    st.tuples(st.just("readline"), st.one_of(st.none(), args)),
    st.tuples(st.just("readlines"), st.one_of(st.none(), args)),
    st.tuples(st.just("next"), st.none()),
).flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.booleans()))


@st.composite
def reader_scenarios(draw):
    transport = draw(st.sampled_from(["unix", "tcp"]))
    payload = draw(payloads)
    if transport == "tcp":
        payload = payload[:65536]
    max_chunk = 16384 if transport == "unix" else 4096
    chunks = _split(payload, draw(st.lists(st.integers(1, max_chunk), max_size=12)), max_chunk)
    end = draw(st.sampled_from(["none", "shutdown", "close", "reset"]))
    n_events = len(chunks) + (end != "none")
    return {
        "transport": transport,
        "chunks": chunks,
        "end": end,
        "prefeed": draw(st.integers(0, n_events)),
        "timeout": draw(st.sampled_from([None, None, None, 0.5, 0.0, 0.05])),
        "delay": draw(st.sampled_from([0, 0, 0.001, 0.003])),
        "ops": draw(st.lists(operations, min_size=1, max_size=10)),
    }


HYP = dict(deadline=None, database=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.large_base_example,
                                  HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------- 1. reader equivalence

@settings(max_examples=100, **HYP)
@given(sc=reader_scenarios())
def test_rfile_matches_stdlib(impl, sc):
    expected = ReaderRun(socketserver, sc).run()
    got = ReaderRun(impl, sc).run()
    assert got == expected


def test_feeder_available_on_linux():
    """The /proc-driven feeder is what makes blocking reads comparable."""
    if not sys.platform.startswith("linux") or not _WAIT_SYSCALLS:
        pytest.skip("feeder needs Linux x86_64/aarch64")
    assert CAN_FEED


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("end", ["shutdown", "close", "reset"])
def test_rfile_fixed_scenarios(impl, transport, end):
    """A few hand-written scenarios: lines in pieces, then the end event."""
    payload = b"".join(b"line %d\n" % i for i in range(200)) + b"tail without newline"
    sc = {
        "transport": transport, "chunks": _split(payload, [1, 2, 5, 100, 3000], 4096),
        "end": end, "prefeed": 2, "timeout": None, "delay": 0.001,
        "ops": [("readline", None, True), ("read1", 5, False), ("peek", 1, False),
                ("readline", 3, False), ("next", None, False), ("readinto", 700, False),
                ("readinto1", 100000, False), ("readlines", 500, False), ("read", 10, False),
                ("read", None, False), ("read", 1, False), ("readline", None, False),
                ("read1", 10, False), ("next", None, False)],
    }
    expected = ReaderRun(socketserver, sc).run()
    assert expected[-2][2:] == ("raise", "StopIteration", None, "")
    assert ReaderRun(impl, sc).run() == expected


@pytest.mark.parametrize("timeout", [None, 0.5])
def test_rfile_big_fed_scenario(impl, timeout):
    """256 KiB in 16 KiB pieces, each sent only once the reader waits for it."""
    if not CAN_FEED:
        pytest.skip("needs /proc/self/task/<tid>/syscall")
    payload = b"".join(b"%d:%s\n" % (i, b"y" * (i % 97)) for i in range(5000))[:262144]
    sc = {
        "transport": "unix", "chunks": _split(payload, [16384] * 16, 16384),
        "end": "shutdown", "prefeed": 0, "timeout": timeout, "delay": 0,
        "ops": [("read", 100000, True), ("readline", None, True), ("read1", 70000, True),
                ("readinto1", 100000, True), ("readlines", 30000, True), ("peek", 10, True),
                ("readinto", 20000, True), ("next", None, True), ("read", None, True)],
    }
    expected = ReaderRun(socketserver, sc).run()
    assert expected[-2][2] == "ok" and expected[-2][3]  # read() got the rest
    assert ReaderRun(impl, sc).run() == expected


# --------------------------------------------------------------- 2. writer

def _writer_value(kind, data):
    if kind == "bytes":
        return bytes(data)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "slice":
        return memoryview(b"--" + data + b"--")[2:2 + len(data)]
    if kind == "array":
        return memoryview(array.array("i", data[:len(data) // 4 * 4]))
    raise AssertionError(kind)


def _write_and_receive(mod, transport, values):
    reader, peer = make_pair(transport)
    h = make_handler(mod, reader)
    try:
        check_handler_objects(mod, h)
        results = [outcome(lambda: h.wfile.write(v)) for v in values]
        reader.shutdown(socket.SHUT_WR)
        peer.settimeout(WAIT)
        received = bytearray()
        while True:
            part = peer.recv(1 << 20)
            if not part:
                break
            received += part
        return results, bytes(received)
    finally:
        close_handler(h)
        reader.close()
        peer.close()


@settings(max_examples=40, **HYP)
@given(transport=st.sampled_from(["unix", "tcp"]),
       items=st.lists(st.tuples(st.sampled_from(["bytes", "bytearray", "memoryview", "slice",
                                                 "array"]),
                                st.one_of(st.binary(max_size=40), st.binary(max_size=70000))),
                      max_size=6))
def test_wfile_write_matches_stdlib(impl, transport, items):
    values = [_writer_value(kind, data) for kind, data in items]
    expected = _write_and_receive(socketserver, transport, values)
    got = _write_and_receive(impl, transport, values)
    assert got == expected
    assert got[1] == b"".join(bytes(memoryview(v).cast("B")) for v in values)
    assert [r[1] for r in got[0]] == [memoryview(v).nbytes for v in values]


def test_wfile_write_misuse_matches_stdlib(impl):
    values = ["text", None, 12, memoryview(b"abcdef")[::2], memoryview(array.array("d", [1.5]))]
    expected = _write_and_receive(socketserver, "unix", values)
    assert _write_and_receive(impl, "unix", values) == expected


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_wfile_large_write_to_slow_reader(impl, transport):
    data = os.urandom(1 << 16) * 64  # 4 MiB
    reader, peer = make_pair(transport)
    h = make_handler(impl, reader)
    received = bytearray()
    errors = []

    def slow_read():
        try:
            peer.settimeout(WAIT)
            while True:
                part = peer.recv(65536)
                if not part:
                    return
                received.extend(part)
                time.sleep(0.0005)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=slow_read)
    t.start()
    try:
        assert h.wfile.write(data) == len(data)
        reader.shutdown(socket.SHUT_WR)
        t.join(WAIT * 2)
        assert not t.is_alive()
        assert not errors
        assert bytes(received) == data
    finally:
        close_handler(h)
        reader.close()
        peer.close()
        t.join(WAIT)


def _write_after(mod, transport, what, payloads):
    reader, peer = make_pair(transport)
    h = make_handler(mod, reader)
    try:
        if what == "peer reset":
            if transport == "tcp":
                set_linger_zero(peer)
            else:
                reader.sendall(b"unread")
            peer.close()
            if transport == "tcp":
                wait_until(lambda: tcp_state(reader) != TCP_ESTABLISHED, what="RST")
        elif what == "peer closed":
            peer.close()
            if transport == "tcp":
                wait_until(lambda: tcp_state(reader) != TCP_ESTABLISHED, what="FIN")
        elif what == "own shutdown":
            reader.shutdown(socket.SHUT_WR)
        elif what == "socket closed":
            h.rfile.close()  # the socket's last makefile reference: close() closes the fd
            reader.close()
        else:
            raise AssertionError(what)
        trace = []
        for p in payloads:
            trace.append(outcome(lambda: h.wfile.write(p)))
            if what == "peer closed" and transport == "tcp" and len(trace) == 1:
                # the peer answers the first segment with a RST
                wait_until(lambda: tcp_state(reader) != 8, what="RST after data")  # 8: CLOSE_WAIT
        return trace
    finally:
        close_handler(h)
        reader.close()
        peer.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("what", ["peer reset", "peer closed", "own shutdown", "socket closed"])
def test_wfile_write_errors_match_stdlib(impl, transport, what):
    payloads = [b"x" * 10, b"y" * 100000, b"z", bytearray(b"w" * 5)]
    expected = _write_after(socketserver, transport, what, payloads)
    assert any(r[0] == "raise" for r in expected)
    assert _write_after(impl, transport, what, payloads) == expected


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("what", ["peer reset", "own shutdown"])
def test_wfile_empty_write_reports_error_as_stdlib(request, impl, transport, what):
    """write(b"") is sendall(b""): one send() of 0 bytes, which reports EPIPE
    after shutdown(SHUT_WR) and a pending ECONNRESET after a reset."""
    payloads = [b"", b"", memoryview(b""), b"x", b""]
    expected = _write_after(socketserver, transport, what, payloads)
    assert expected[0][0] == "raise"
    assert _write_after(impl, transport, what, payloads) == expected


def test_wfile_empty_write_on_closed_socket(impl):
    payloads = [b"", b"x"]
    expected = _write_after(socketserver, "unix", "socket closed", payloads)
    assert expected[0][1:3] == ("OSError", errno.EBADF)
    assert _write_after(impl, "unix", "socket closed", payloads) == expected


def _write_timeout(mod, transport, payloads):
    reader, peer = make_pair(transport)
    h = make_handler(mod, reader, timeout=0.2)
    try:
        return [outcome(lambda: h.wfile.write(p)) for p in payloads]
    finally:
        close_handler(h)
        reader.close()
        peer.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_wfile_write_timeout_matches_stdlib(impl, transport):
    payloads = [b"x" * (16 << 20)]  # the peer never reads
    expected = _write_timeout(socketserver, transport, payloads)
    got = _write_timeout(impl, transport, payloads)
    assert expected == [("raise", TIMEOUT_NAME, None, "timed out")]
    assert got == expected


def _write_into_part_free_buffer(mod):
    """AF_UNIX: the send buffer between 1/4 and fully used, where send()
    takes more bytes but poll() does not report the socket writable."""
    reader, peer = unix_pair()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    h = make_handler(mod, reader, timeout=0.2)
    try:
        reader.setblocking(False)
        sent = 0
        while True:
            try:
                sent += reader.send(b"f" * 1024)
            except BlockingIOError:
                break
        reader.settimeout(0.2)
        peer.settimeout(WAIT)
        got = 0
        while got < sent // 2:
            got += len(peer.recv(min(1024, sent // 2 - got)))
        return [outcome(lambda: h.wfile.write(b"w" * 100))]
    finally:
        close_handler(h)
        reader.close()
        peer.close()


def test_wfile_write_when_not_pollable_writable(request, impl):
    """The stdlib's sendall with a timeout polls for POLLOUT before send():
    with the AF_UNIX send buffer over 1/4 full it waits, and times out."""
    expected = _write_into_part_free_buffer(socketserver)
    assert expected == [("raise", TIMEOUT_NAME, None, "timed out")]
    assert _write_into_part_free_buffer(impl) == expected


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_wfile_empty_write_timeout_matches_stdlib(request, impl, transport):
    """With the send buffer full, the stdlib's sendall(b"") waits for room and times out."""
    payloads = [b"x" * (16 << 20), b""]
    expected = _write_timeout(socketserver, transport, payloads)
    assert expected[1][:2] == ("raise", TIMEOUT_NAME)
    assert _write_timeout(impl, transport, payloads) == expected


# --------------------------------------------------------------- 3. failure paths, misuse

READ_OPS = [("read", 1), ("read", None), ("read1", 1), ("peek", 1), ("readinto", 3),
            ("readinto1", 3), ("readline", None), ("readlines", None), ("next", None)]


def _read_after(mod, transport, what):
    reader, peer = make_pair(transport)
    h = make_handler(mod, reader, timeout=0.05 if what == "timed out" else None)
    trace = []
    try:
        check_handler_objects(mod, h)
        peer.sendall(b"ab\ncd\nef")
        if transport == "tcp":
            wait_until(lambda: ioctl_int(peer, SIOCOUTQ) == 0, what="ACK")
        if what not in ("timed out", "peer reset"):
            peer.shutdown(socket.SHUT_WR)  # nothing below may wait
        trace.append(perform(h.rfile, "read", 2)[0])
        if what == "rfile closed":
            h.rfile.close()
        elif what == "socket closed":  # rfile still holds the descriptor
            reader.close()
        elif what == "socket detached":  # descriptor gone under rfile
            socket.socket(fileno=reader.detach()).close()
        elif what == "timed out":
            trace.append(perform(h.rfile, "read", 100)[0])
        elif what == "peer reset":
            if transport == "tcp":
                set_linger_zero(peer)
            else:
                reader.sendall(b"unread")
            peer.close()
            if transport == "tcp":
                wait_until(lambda: tcp_state(reader) != TCP_ESTABLISHED, what="RST")
        else:
            raise AssertionError(what)
        for op, arg in READ_OPS:
            trace.append(perform(h.rfile, op, arg)[0])
        trace.append(("raw", outcome(lambda: h.rfile.raw.readinto(bytearray(4)))))
        return trace
    finally:
        close_handler(h)
        reader.close()
        peer.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("what", ["rfile closed", "socket closed", "socket detached",
                                  "timed out", "peer reset"])
def test_rfile_failure_paths_match_stdlib(impl, transport, what):
    expected = _read_after(socketserver, transport, what)
    got = _read_after(impl, transport, what)
    assert got == expected
    if what == "rfile closed":
        assert expected[1][2:4] == ("raise", "ValueError")
    if what == "timed out":
        assert expected[1][2:4] == ("raise", TIMEOUT_NAME)
        assert expected[2][2:] == ("raise", "OSError", None, "cannot read from timed out object")


def _while_waiting(mod, transport, what):
    """rfile waits for data (nothing sent yet), then ``what`` happens."""
    import signal
    reader, peer = make_pair(transport)
    if what == "SO_RCVTIMEO":  # a kernel timeout set by hand, not settimeout()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50000))
    h = make_handler(mod, reader)
    trace = []
    old_handler = safety = None
    safety_fired = []
    try:
        check_handler_objects(mod, h)
        if what == "peer reset":
            def reset():
                time.sleep(0.1)
                if transport == "tcp":
                    set_linger_zero(peer)
                else:
                    reader.sendall(b"unread")
                peer.close()
            threading.Thread(target=reset, daemon=True).start()
        elif what.startswith("signal handler"):
            # To this thread (the main one), so that its wait is interrupted (EINTR).
            if what == "signal handler raises":
                def interrupted(signum, frame):
                    raise KeyboardInterrupt("alarm")
            else:
                def interrupted(signum, frame):
                    pass
                threading.Timer(0.3, peer.sendall, (b"late\n",)).start()
            old_handler = signal.signal(signal.SIGALRM, interrupted)
            threading.Timer(0.1, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGALRM)).start()

            # Should the handler not run at once, the read ends some time
            # later with these bytes, and the trace says so.
            def fire():
                safety_fired.append(True)
                peer.sendall(b"handler never ran\n")
            safety = threading.Timer(2.0, fire)
            safety.start()
        try:
            trace.append(("first", outcome(lambda: h.rfile.readline())))
        except KeyboardInterrupt as e:  # outcome() records Exception only
            trace.append(("first", "KeyboardInterrupt", str(e)))
        if what == "SO_RCVTIMEO":
            peer.sendall(b"later\n")
            trace.append(("then", outcome(lambda: h.rfile.readline())))
        if safety_fired:
            trace.append("the signal handler ran only once data came")
        return trace
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGALRM, old_handler)
        if safety is not None:
            safety.cancel()
            safety.join()
        close_handler(h)
        reader.close()
        peer.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("what", ["peer reset", "SO_RCVTIMEO", "signal handler raises",
                                  "signal handler returns"])
def test_rfile_wait_interrupted_matches_stdlib(impl, transport, what):
    expected = _while_waiting(socketserver, transport, what)
    got = _while_waiting(impl, transport, what)
    assert got == expected
    if what == "signal handler raises":
        assert expected == [("first", "KeyboardInterrupt", "alarm")]
    if what == "signal handler returns":  # PEP 475: the wait goes on
        assert expected == [("first", ("ok", b"late\n"))]


def _raw_readinto_misuse(mod):
    reader, peer = make_pair("unix")
    h = make_handler(mod, reader)
    try:
        peer.sendall(b"abcdef")
        raw = h.rfile.raw
        return [outcome(lambda: type(raw.readinto(b)).__name__)
                for b in (bytearray(2), memoryview(bytearray(2)), array.array("b", [0, 0]))]
    finally:
        close_handler(h)
        reader.close()
        peer.close()


def test_raw_readinto_buffers_match_stdlib(impl):
    assert _raw_readinto_misuse(impl) == _raw_readinto_misuse(socketserver)


def _raw_readinto_bad(mod, buf):
    reader, peer = make_pair("unix")
    h = make_handler(mod, reader)
    try:
        peer.sendall(b"abcdef")
        return outcome(lambda: h.rfile.raw.readinto(buf))
    finally:
        close_handler(h)
        reader.close()
        peer.close()


@pytest.mark.parametrize("buf", [b"abc", memoryview(bytearray(10))[::2], None, 5, "s"],
                         ids=["bytes", "strided", "none", "int", "str"])
def test_raw_readinto_unwritable_buffer_matches_stdlib(request, impl, buf):
    """rfile.raw.readinto() of a read-only or non-contiguous buffer, or of no
    buffer at all: the stdlib's TypeError, message included."""
    assert _raw_readinto_bad(impl, buf) == _raw_readinto_bad(socketserver, buf)


def test_concurrent_readline_threads(impl):
    """Two threads reading lines from one rfile, one writing through wfile."""
    reader, peer = make_pair("unix")
    h = make_handler(impl, reader, timeout=WAIT)
    lines = [b"%d %s\n" % (i, b"x" * (i % 300)) for i in range(3000)]
    got = [[], []]
    errors = []

    def read_lines(k):
        try:
            for line in h.rfile:
                got[k].append(line)
                h.wfile.write(b"ok")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def drain():
        peer.settimeout(WAIT)
        try:
            while peer.recv(65536):
                pass
        except OSError:
            pass

    threads = [threading.Thread(target=read_lines, args=(k,)) for k in (0, 1)]
    drainer = threading.Thread(target=drain)
    try:
        drainer.start()
        for t in threads:
            t.start()
        peer.sendall(b"".join(lines))
        peer.shutdown(socket.SHUT_WR)
        for t in threads:
            t.join(WAIT * 2)
            assert not t.is_alive()
        assert not errors
        # Only pieces of the stream, never more bytes than were sent. (Two
        # threads iterating one BufferedReader do not always get whole lines
        # or all of them: the stdlib's own reader does that too.)
        stream = b"".join(lines)
        everything = got[0] + got[1]
        assert everything
        assert all(type(piece) is bytes and piece in stream for piece in everything)
        assert sum(map(len, everything)) <= len(stream)
    finally:
        try:
            reader.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for t in threads:
            t.join(WAIT)
        drainer.join(WAIT)
        assert not drainer.is_alive()
        close_handler(h)
        reader.close()
        peer.close()


@races_on_purpose  # the socket closed under a thread in recv: TSan reports just that
def test_close_while_another_thread_reads(impl):
    """Closing rfile and the socket under a reading thread: only Python exceptions."""
    for _ in range(20):
        reader, peer = make_pair("unix")
        h = make_handler(impl, reader, timeout=0.01)
        seen = []
        stop = threading.Event()

        def spin():
            buf = bytearray(64)
            while not stop.is_set():
                r = outcome(lambda: h.rfile.raw.readinto(buf))
                seen.append(r[0] if r[0] == "ok" else r[1])
                if r[1:2] == (TIMEOUT_NAME,):
                    h.rfile.raw._timeout_occurred = False

        t = threading.Thread(target=spin)
        try:
            t.start()
            peer.sendall(b"q" * 5000)
            time.sleep(0.002)
            h.rfile.close()
            reader.close()
            time.sleep(0.005)
        finally:
            stop.set()
            t.join(WAIT)
            assert not t.is_alive()
            close_handler(h)
            reader.close()
            peer.close()
        assert set(seen) <= {"ok", "ValueError", TIMEOUT_NAME, "OSError"}


# --------------------------------------------------------------- 4. TLS

def tls_pair(**server_options):
    """(server SSLSocket, client SSLSocket) over loopback TCP; ``server_options`` go to
    the server side's wrap_socket."""
    if not os.path.exists(CERTFILE):
        pytest.skip("no test certificate at " + CERTFILE)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(CERTFILE)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    raw_server, raw_client = tcp_pair()
    raw_server.settimeout(WAIT)
    raw_client.settimeout(WAIT)
    result = {}

    def client_side():
        try:
            result["client"] = client_ctx.wrap_socket(raw_client)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=client_side)
    t.start()
    try:
        server = server_ctx.wrap_socket(raw_server, server_side=True, **server_options)
    except Exception:
        raw_server.close()
        raise
    finally:
        t.join(WAIT)
        assert not t.is_alive()
    if "error" in result:
        server.close()
        raw_client.close()
        raise result["error"]
    return server, result["client"]


def test_tls_round_trip(impl):
    server, client = tls_pair()
    h = make_handler(impl, server)
    try:
        # the stdlib's makefile(); fastsockserver's reader, which reads through the
        # SSLSocket's own recv_into (its between-requests rules apply to TLS too)
        library_reader = getattr(getattr(impl, "_stream_io", None), "_SocketReaderIO", None)
        assert type(h.rfile.raw) is (library_reader or socket.SocketIO)
        lines = [b"hello %d %s\n" % (i, b"z" * (i * 37 % 5000)) for i in range(60)]
        client.sendall(b"".join(lines))
        for line in lines:
            assert h.rfile.readline() == line
            assert h.wfile.write(memoryview(line.upper())) == len(line)
        h.wfile.write(b"")
        h.wfile.write(b"w" * 300000)
        back = bytearray()
        want = sum(map(len, lines)) + 300000
        while len(back) < want:
            part = client.recv(65536)  # an SSLError here: bytes sent around the TLS layer
            assert part
            back += part
        assert bytes(back) == b"".join(lines).upper() + b"w" * 300000
    finally:
        close_handler(h)
        server.close()
        client.close()


def test_tls_through_compiled_reader_and_writer(fast_impl):
    """The core's functions themselves, given an SSLSocket, decrypt and encrypt."""
    import io
    server, client = tls_pair()
    try:
        rfile = io.BufferedReader(fast_impl._stream_io._SocketReaderIO(server, "rb"))
        wfile = fast_impl._stream_io._SocketWriter(server)
        client.sendall(b"secret line\nmore")
        assert rfile.readline() == b"secret line\n"
        assert rfile.read(4) == b"more"
        assert wfile.write(b"plain?") == 6
        assert client.recv(100) == b"plain?"
        rfile.close()
    finally:
        server.close()
        client.close()


def _tls_read_after(mod, what):
    """Reads on a TLS connection around its end or a timeout, as READ_OPS see them."""
    server, client = tls_pair(suppress_ragged_eofs=what != "ragged end, not suppressed")
    h = make_handler(mod, server, timeout=0.05 if what == "timed out" else None)
    trace = []
    try:
        client.sendall(b"ab\ncd\nef")
        trace.append(perform(h.rfile, "read", 2)[0])
        if what.startswith("ragged end"):  # TCP's end, no close_notify
            socket.socket(fileno=client.detach()).close()
        elif what == "close_notify":
            client.settimeout(0.2)
            try:
                client.unwrap()  # sends close_notify; the server's answer may not come
            except (OSError, ValueError):
                pass
            client.close()
        elif what == "peer reset":
            raw = socket.socket(fileno=client.detach())
            set_linger_zero(raw)
            raw.close()
        elif what != "timed out":
            raise AssertionError(what)
        for op, arg in READ_OPS:
            trace.append(perform(h.rfile, op, arg)[0])
        trace.append(("raw", outcome(lambda: h.rfile.raw.readinto(bytearray(4)))))
        trace.append(("raw empty", outcome(lambda: h.rfile.raw.readinto(bytearray()))))
        return trace
    finally:
        close_handler(h)
        server.close()
        client.close()


@pytest.mark.parametrize("what", ["ragged end", "ragged end, not suppressed", "close_notify",
                                  "peer reset", "timed out"])
def test_tls_rfile_ends_and_timeouts_match_stdlib(impl, what):
    expected = _tls_read_after(socketserver, what)
    assert _tls_read_after(impl, what) == expected
    if what == "ragged end, not suppressed":  # SSLEOFError (3.9: ConnectionResetError)
        assert ("raise",) in [step[2:3] for step in expected]
    if what == "timed out":
        assert ("raise", TIMEOUT_NAME) in [step[2:4] for step in expected]
        assert expected[-2][1][-1] == "cannot read from timed out object"


@settings(max_examples=15, **HYP)
@given(items=st.lists(st.tuples(st.sampled_from(["bytes", "bytearray", "memoryview", "slice",
                                                 "array"]),
                                st.one_of(st.binary(max_size=40), st.binary(max_size=70000))),
                      max_size=5))
def test_tls_wfile_write_matches_stdlib(impl, items):
    values = [_writer_value(kind, data) for kind, data in items]
    expected = _write_and_receive(socketserver, "tls", values)
    got = _write_and_receive(impl, "tls", values)
    assert got == expected
    assert got[1] == b"".join(bytes(memoryview(v).cast("B")) for v in values)


def test_tls_wfile_write_misuse_matches_stdlib(impl):
    values = ["text", None, 12, memoryview(b"abcdef")[::2], memoryview(array.array("d", [1.5]))]
    expected = _write_and_receive(socketserver, "tls", values)
    assert _write_and_receive(impl, "tls", values) == expected


def test_tls_unwrapped_connection_goes_on_in_plain(impl):
    server, client = tls_pair()
    h = make_handler(impl, server)
    try:
        client.sendall(b"secret\n")
        assert h.rfile.readline() == b"secret\n"
        unwrapped = []
        t = threading.Thread(target=lambda: unwrapped.append(client.unwrap()))
        t.start()
        plain = server.unwrap()  # the handler's SSLSocket now has no SSL object
        t.join(WAIT)
        plain_client = unwrapped[0]
        plain_client.sendall(b"in clear\n")
        assert h.rfile.readline() == b"in clear\n"
        assert h.wfile.write(b"back\n") == 5
        assert plain_client.recv(100) == b"back\n"
        plain.close()
        plain_client.close()
    finally:
        close_handler(h)
        server.close()
        client.close()


def test_tls_rfile_and_wfile_call_no_python_in_ssl_module(fast_impl):
    """The compiled rfile and wfile call the SSL object's read and write
    directly: no frame of ssl.py (SSLSocket.recv_into, read, sendall, send,
    pending) per request. The pure core calls the stdlib's path."""
    server, client = tls_pair()
    h = make_handler(fast_impl, server)
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == ssl.__file__:
            calls.append(frame.f_code.co_name)

    try:
        client.sendall(b"line\n" * 50)
        sys.setprofile(profile)
        try:
            for _ in range(50):
                h.rfile.readline()
                h.wfile.write(b"back\n")
        finally:
            sys.setprofile(None)
        if is_compiled(fast_impl):
            assert calls == []
        else:
            assert "recv_into" in calls and "sendall" in calls
    finally:
        close_handler(h)
        server.close()
        client.close()


# --------------------------------------------------------------- 5. fuzz target

def test_fuzz_reader_short_run():
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "fuzz_reader.py"), "200", "--seed", "1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "200 iterations" in proc.stdout


# --------------------------------------------------------------- the reader's position

position_operations = st.lists(st.tuples(
    st.sampled_from(["read", "read1", "peek", "readinto", "readinto1", "readline"]),
    st.one_of(st.integers(0, 12), st.integers(0, 300), st.integers(0, 70000))), max_size=12)


@settings(max_examples=60, **HYP)
@given(payload=payloads, ops=position_operations)
@example(payload=b"line\n" * 12000, ops=[("read", 20000), ("readline", 70000), ("read1", 300),
                                         ("peek", 12), ("readinto", 9000), ("read", 70000)])
def test_reader_position_counts_what_the_handler_read(fast_impl, payload, ops):
    """_stream_io.reader_position (strict framing's measure of a body left
    unread): the difference of two is what the reads between them returned,
    whatever BufferedReader kept in its buffer, from counting's first call on
    (a read before it fills the buffer first)."""
    stream_io = importlib.import_module(fast_impl.__name__ + "._stream_io")
    left, right = socket.socketpair()
    with left, right:
        right.sendall(payload[:65536] + b"\n")  # (fits the socket buffer: no wait)
        right.shutdown(socket.SHUT_WR)  # no read waits: the end is there
        rfile = stream_io.make_reader(left)
        try:
            consumed = len(rfile.readline(5))
            start = stream_io.reader_position(rfile)
            consumed = 0
            for name, n in ops:
                if name in ("readinto", "readinto1"):
                    got = getattr(rfile, name)(bytearray(n))
                elif name == "peek":
                    rfile.peek(n)
                    got = 0
                else:
                    got = len(getattr(rfile, name)(n))
                consumed += got
                assert stream_io.reader_position(rfile) - start == consumed
        finally:
            rfile.close()
        assert stream_io.reader_position(rfile) is None  # closed


def test_reader_position_is_none_for_another_rfile(fast_impl):
    stream_io = importlib.import_module(fast_impl.__name__ + "._stream_io")
    left, right = socket.socketpair()
    with left, right:
        rfile = left.makefile("rb")
        with rfile:
            assert stream_io.reader_position(rfile) is None
        assert stream_io.reader_position(io.BufferedReader(io.BytesIO(b"ab"))) is None
