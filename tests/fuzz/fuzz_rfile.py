"""Fuzz target: StreamRequestHandler's rfile (readline, read(n), read(),
read1, readinto, peek, readlines, iteration, rfile.raw.readinto) against the
stdlib's, over a socketpair fed the fuzzer's bytes in fuzzer-chosen chunks.

The scenario runner and the comparison are tests/fuzz_reader.py's: all bytes
are sent before the first read and a stream that is not ended is
non-blocking, so no input waits. headers_timeout/idle_timeout are unset.

Input layout (see _fuzzing.Choices): how the stream ends, the operations
(one byte each for the operation and its size), a repeat count for the
payload, the chunk sizes, then the payload.
"""
import _fuzzing
import fuzz_reader

ENDS = ["none", "shutdown", "close", "reset"]
OPS = fuzz_reader.OPS + ["close"]
# Sizes around the reader's 8192-byte buffer, and the ends of the range.
SIZES = [-1, 0, 1, 2, 5, 80, 8191, 8192, 8193, 100000]
# The payload repeated to pass the buffer size with inputs of a few KB.
REPEATS = [1, 1, 1, 1, 2, 3, 17, 32]
CHUNKS = [1, 2, 3, 7, 64, 100, 4095, 4096, 4097, 8191, 8192, 8193, 65536]
MAX_OPS = 16
MAX_CHUNK_CHOICES = 8
# All chunks are sent before the first read: the socket's buffer must hold
# them, and each small one costs a buffer's overhead there. The last chunk
# takes what is left.
MAX_CHUNKS = 64

MODULES = _fuzzing.implementations()
INSTRUMENTED = _fuzzing.LIBRARY + ("socket", "socketserver", "fuzz_reader")


def scenario(data):
    """(chunks, end, ops) as fuzz_reader.run takes them, from the bytes."""
    choices = _fuzzing.Choices(data)
    end = choices.pick(ENDS)
    ops = []
    for _ in range(1 + choices.byte() % MAX_OPS):
        op = choices.pick(OPS)
        size_code = choices.byte()
        # A listed size, or a small one: the fuzzer reaches every size below 246.
        size = SIZES[size_code] if size_code < len(SIZES) else size_code - len(SIZES)
        ops.append((op, size))
    repeat = choices.pick(REPEATS)
    sizes = [choices.pick(CHUNKS) for _ in range(1 + choices.byte() % MAX_CHUNK_CHOICES)]
    payload = choices.rest() * repeat
    chunks, pos, i = [], 0, 0
    while pos < len(payload):
        size = sizes[i % len(sizes)] if len(chunks) < MAX_CHUNKS - 1 else len(payload)
        chunks.append(payload[pos:pos + size])
        pos += len(chunks[-1])
        i += 1
    return chunks, end, ops


def test_one_input(data):
    chunks, end, ops = scenario(data)
    for name, module in MODULES:
        fuzz_reader.compare(module, chunks, end, ops)


if __name__ == "__main__":
    _fuzzing.main(test_one_input, INSTRUMENTED)
