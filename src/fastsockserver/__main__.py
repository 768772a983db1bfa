"""Command line: ``python -m fastsockserver {run,bench,info} ...``."""
import runpy
import sys

RUN_USAGE = """usage: python -m fastsockserver run [options] script.py [args ...]
       python -m fastsockserver run [options] -m module [args ...]

Runs an unmodified program with fastsockserver installed as socketserver.
--drain-timeout SECONDS: the first SIGTERM or SIGINT drains every server in
    serve_forever() (no new connections, requests in progress finish, idle
    keep-alive connections end), then the program goes on as after
    shutdown(); a second signal, or handlers still running 2 s after the
    deadline, end the process at once.
--workers N: the first serve_forever() called (in the main thread, with no
    other thread started) forks N worker processes that serve its socket and
    supervises them: SIGTERM/SIGINT drains them all (--drain-timeout, default
    30), SIGHUP replaces them one by one, SIGTTIN/SIGTTOU add/remove one.
--reuse-port: with --workers, each worker serves a SO_REUSEPORT listening
    socket of its own (TCP): connections spread evenly over the workers;
    SIGTTOU resets what waits on the removed worker's socket.
--fd N (repeatable): the first servers that bind take these inherited
    listening sockets instead, in order (their own address is ignored).
    Sockets passed by systemd (LISTEN_FDS, LISTEN_PID) are taken the same way."""

OPTIONS = ("--drain-timeout", "--workers", "--fd")
FLAGS = ("--reuse-port",)


def _options(argv):
    """The leading options: ({name: [values]}, the rest) or (None, why)."""
    found = {}
    while argv and (argv[0] in FLAGS or argv[0].split("=", 1)[0] in OPTIONS):
        if argv[0] in FLAGS:
            found[argv[0]], argv = [True], argv[1:]
            continue
        name, has_value, value = argv[0].partition("=")
        if not has_value:
            if len(argv) < 2:
                return None, "{} takes a value".format(name)
            value, argv = argv[1], argv[2:]
        else:
            argv = argv[1:]
        try:
            number = float(value) if name == "--drain-timeout" else int(value)
            if not number >= (1 if name == "--workers" else 0):
                raise ValueError
        except ValueError:
            kind = {"--drain-timeout": "seconds >= 0", "--workers": "a count >= 1",
                    "--fd": "a descriptor number"}[name]
            return None, "{} takes {}, not {!r}".format(name, kind, value)
        found.setdefault(name, []).append(number)
    return found, argv


def _run(argv):
    import os
    if not argv or argv[0] in ("-h", "--help"):
        print(RUN_USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    from . import install
    options, argv = _options(argv)
    if options is None:
        print("fastsockserver run: " + argv, file=sys.stderr)
        return 2
    if not argv:
        print(RUN_USAGE, file=sys.stderr)
        return 2
    from . import _listeners
    try:
        fds = options.get("--fd") or [fd for fd, _ in _listeners.listen_fds()]
        for fd in fds:  # checked before the program runs: a clear error, not a late one
            _listeners.inherited_socket(fd, None).detach()
    except ValueError as error:
        print("fastsockserver run: {}".format(error), file=sys.stderr)
        return 2
    _listeners.for_run[:] = fds
    drain_timeout = options.get("--drain-timeout", [None])[-1]
    workers = options.get("--workers", [1])[-1]
    if workers > 1:
        from ._workers import install_workers
        install_workers(workers, 30.0 if drain_timeout is None else drain_timeout,
                        reuse_port="--reuse-port" in options)
    elif drain_timeout is not None:
        from ._service import install_drain_on_signals
        install_drain_on_signals(drain_timeout)
    if argv[0] == "-m":
        if len(argv) < 2:
            print(RUN_USAGE, file=sys.stderr)
            return 2
        install()
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    script = argv[0]
    if not os.path.isfile(script):
        print("fastsockserver run: no such file: {}".format(script), file=sys.stderr)
        return 2
    install()
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


def _bench(argv):
    from ._bench import main  # imported only when asked for
    return main(argv)


def _info(argv):
    from ._info import main
    return main(argv)


USAGE = """usage: python -m fastsockserver {bench | info | run} [--help] ...

fastsockserver: a drop-in, Cython-accelerated replacement for socketserver.

commands:
  run    run an unmodified program with fastsockserver installed as socketserver
         (python -m fastsockserver run server.py ... | run -m http.server ...),
         optionally draining on SIGTERM, in worker processes, or on inherited
         listening sockets
  bench  benchmark the stdlib's socketserver against fastsockserver (and
         asyncio, uvloop, gevent where installed) on this machine
  info   the version, the Python, and whether the compiled core is in use (and
         why not)

`python -m fastsockserver COMMAND --help` describes each command's options."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": _run, "bench": _bench, "info": _info}
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
