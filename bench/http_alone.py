"""http.server's own per-request code run alone: a keep-alive handler fed N
pipelined GETs from memory, its responses written to memory, its log lines to
/dev/null. No sockets, no threads: what the handler's Python code costs.

    python bench/http_alone.py [stdlib|install] [requests] [repeats] [log|quiet]

"quiet": the handler overrides log_message with a no-op (access logging off,
as in baseline.md's server comparison).

Prints the median microseconds per request. Under callgrind, pass a small
request count and compare instruction counts between runs.
"""
import io
import os
import sys
import time

which = sys.argv[1] if len(sys.argv) > 1 else "install"
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
REPEATS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
QUIET = (sys.argv[4] if len(sys.argv) > 4 else "log") == "quiet"
if which == "install":
    import fastsockserver
    fastsockserver.install()
import http.server  # noqa: E402

BODY = b"Hello, world\n"
REQUEST = (b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"User-Agent: wrk\r\nAccept: */*\r\n\r\n")


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # as the project's bench: keep-alive

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    if QUIET:
        def log_message(self, format, *args):
            pass


class Server:
    pass


def run(count):
    handler = Hello.__new__(Hello)
    handler.server = Server()
    handler.client_address = ("127.0.0.1", 40000)
    handler.rfile = io.BytesIO(REQUEST * count)
    handler.wfile = io.BytesIO()
    start = time.perf_counter()
    handler.handle()
    elapsed = time.perf_counter() - start
    return elapsed, handler.wfile.getvalue()


sys.stderr = open(os.devnull, "w")
times = sorted(run(COUNT)[0] / COUNT * 1e6 for _ in range(REPEATS))
print("{}: {:.2f} us/request (median of {} x {})".format(which, times[len(times) // 2],
                                                           REPEATS, COUNT))
