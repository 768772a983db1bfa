"""Fuzz target: fastsockserver's rfile against socketserver's, byte for byte.

    python tests/fuzz_reader.py ITERATIONS [--seed N] [--impl c|py]
    python tests/fuzz_reader.py --atheris [atheris/libFuzzer options]

Each iteration builds the handler's rfile (StreamRequestHandler.setup) over
one end of a socketpair for both implementations, sends the same chunks to
both (all before the first read, so no timing is involved), optionally ends
the stream (shutdown, close, or close with unread data: ECONNRESET), and
runs the same random operations on both readers, also on ``rfile.raw``
directly; the socket is non-blocking when the stream is not ended, so no
operation waits. Any difference in results or exceptions raises
AssertionError with the scenario. Uses atheris when asked and installed,
else a seeded random loop.
"""
import argparse
import os
import random
import socket
import socketserver
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fastsockserver  # noqa: E402
from support import load_pure_copy, make_handler, outcome  # noqa: E402

OPS = ["read", "read_all", "read1", "peek", "readinto", "readinto1", "readline",
       "readline_limit", "readlines", "next", "raw_readinto"]


def do(rfile, op, n):
    if op == "read":
        return outcome(lambda: rfile.read(n))
    if op == "read_all":
        return outcome(rfile.read)
    if op == "read1":
        return outcome(lambda: rfile.read1(n))
    if op == "peek":
        return outcome(lambda: rfile.peek(n))
    if op in ("readinto", "readinto1", "raw_readinto"):
        buf = bytearray(b"\x5a" * max(n, 0))
        meth = rfile.raw.readinto if op == "raw_readinto" else getattr(rfile, op)
        r = outcome(lambda: meth(buf))
        return r + (bytes(buf),) if r[0] == "ok" else r
    if op == "readline":
        return outcome(rfile.readline)
    if op == "readline_limit":
        return outcome(lambda: rfile.readline(n))
    if op == "readlines":
        return outcome(lambda: rfile.readlines(n))
    if op == "next":
        return outcome(lambda: next(rfile))
    raise AssertionError(op)


def scenario(rng):
    alphabet = rng.choice([b"ab\n", b"\n", bytes(range(256)), b"x\r\n", b"line\n" * 3])
    size = rng.choice([0, 1, 10, 100, 5000, 70000, 200000])
    payload = bytes(rng.choice(alphabet) for _ in range(min(size, 3000)))
    if size > 3000:
        payload = (payload * (size // max(len(payload), 1) + 1))[:size]
    chunks, pos = [], 0
    while pos < len(payload):
        n = rng.choice([1, 2, 7, 100, 4096, 8192, 8193, 65536])
        chunks.append(payload[pos:pos + n])
        pos += n
    end = rng.choice(["none", "shutdown", "close", "reset"])
    ops = [(rng.choice(OPS), rng.choice([-1, 0, 1, 2, 5, 80, 8191, 8192, 8193, 100000]))
           for _ in range(rng.randint(1, 12))]
    ops = [(op, max(n, 0) if op in ("readinto", "readinto1", "raw_readinto") else n)
           for op, n in ops]
    if rng.random() < 0.1:
        ops.insert(rng.randint(0, len(ops)), ("close", 0))
    return chunks, end, ops


def run(mod, chunks, end, ops):
    reader, peer = socket.socketpair()
    trace = []
    h = None
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        if end == "reset":
            reader.sendall(b"unread")
        h = make_handler(mod, reader)
        if mod is not socketserver and mod.COMPILED:
            from fastsockserver import _core
            assert type(h.rfile.raw).readinto is _core.socketio_readinto
        for c in chunks:
            peer.sendall(c)
        if end == "shutdown":
            peer.shutdown(socket.SHUT_WR)
        elif end in ("close", "reset"):
            peer.close()
        else:
            reader.settimeout(0.0)  # nothing may wait: reads end with None/partial data
        for op, n in ops:
            if op == "close":
                trace.append(("close", outcome(h.rfile.close)))
                continue
            trace.append((op, n, do(h.rfile, op, n)))
        return trace
    finally:
        if h is not None:
            h.rfile.close()
        reader.close()
        peer.close()


def one(rng, mod):
    compare(mod, *scenario(rng))


def compare(mod, chunks, end, ops):
    """Run the scenario on the stdlib and on ``mod``; AssertionError at the first difference."""
    expected = run(socketserver, chunks, end, ops)
    got = run(mod, chunks, end, ops)
    if got != expected:
        for i, (a, b) in enumerate(zip(expected, got)):
            if a != b:
                raise AssertionError("difference at op {}: stdlib {!r:.300} vs {!r:.300}\n"
                                     "chunks={} end={} ops={}".format(
                                         i, a, b, [len(c) for c in chunks], end, ops))
        raise AssertionError("trace lengths differ")


def target_module(which):
    if which == "c":
        if not fastsockserver.COMPILED:
            sys.exit("the compiled core is not in use")
        return fastsockserver
    return load_pure_copy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("iterations", nargs="?", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", choices=["c", "py"],
                        default="c" if fastsockserver.COMPILED else "py")
    parser.add_argument("--atheris", action="store_true", help="run under atheris (libFuzzer)")
    args, rest = parser.parse_known_args(argv)
    mod = target_module(args.impl)
    if args.atheris:
        import atheris

        def test_one_input(data):
            one(random.Random(data), mod)
        atheris.Setup([sys.argv[0]] + rest, test_one_input)
        atheris.Fuzz()
        return
    rng = random.Random(args.seed)
    for _ in range(args.iterations):
        one(rng, mod)
    print("fuzz_reader: {} iterations, impl {}, no difference".format(args.iterations, args.impl))


if __name__ == "__main__":
    main()
