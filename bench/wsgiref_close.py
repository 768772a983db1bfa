"""wsgiref's threaded server on fastsockserver (install()), a connection per
request (HTTP/1.0), driven by the bench's compiled load generator: req/s of
the stdlib, of install() without its wsgiref methods ("unpatched": wsgiref's
own write/send_headers, five writes per response) and of install().
Server on CPU 0, client on CPU 1; runs alternate, medians printed.

    python bench/wsgiref_close.py [seconds] [repetitions]
"""
import os
import subprocess
import sys

from fastsockserver._loadgen import LoadGen

SERVER = r"""
import os, sys
os.sched_setaffinity(0, {0})
kind = sys.argv[1]
if kind != "stdlib":
    import fastsockserver
    fastsockserver.install()
import socketserver, wsgiref.handlers, wsgiref.simple_server as ws
if kind == "unpatched":
    for name in ("write", "send_headers"):
        setattr(wsgiref.handlers.BaseHandler, name,
                getattr(wsgiref.handlers.BaseHandler, name).__wrapped__)
BODY = b"Hello, world\n"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [BODY]
class Quiet(ws.WSGIRequestHandler):
    def log_message(self, *args):  # access logging off, as in the baseline
        pass
class Server(socketserver.ThreadingMixIn, ws.WSGIServer):
    daemon_threads = True
    request_queue_size = 128
server = Server(("127.0.0.1", 0), Quiet)
server.set_app(app)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
REQUEST = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"


def cpu_seconds(pid):
    """The process's user + system CPU time so far (all its threads)."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(kind, seconds):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        with LoadGen("connrate", "127.0.0.1", port, REQUEST, concurrency=32, http=True) as gen:
            gen.warm_up(0.5, 3.0)
            cpu = cpu_seconds(proc.pid)
            result = gen.run(seconds)
            cpu = cpu_seconds(proc.pid) - cpu
        return result["rps"], cpu * 1e6 / max(result["requests"], 1), result["errors_total"]
    finally:
        proc.kill()
        proc.wait()


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    os.sched_setaffinity(0, {1})
    kinds = ["stdlib", "unpatched", "install"]
    rates = {kind: [] for kind in kinds}
    costs = {kind: [] for kind in kinds}
    for _ in range(reps):
        for kind in kinds:
            rps, cost, errors = one_run(kind, seconds)
            rates[kind].append(rps)
            costs[kind].append(cost)
            print("  {:10s} {:9.0f} req/s {:7.1f} server CPU us/req  errors {}".format(
                kind, rps, cost, errors), flush=True)
    for kind in kinds:
        print("{:10s} median {:9.0f} req/s {:7.1f} server CPU us/req".format(
            kind, sorted(rates[kind])[reps // 2], sorted(costs[kind])[reps // 2]))


if __name__ == "__main__":
    main()
