"""Command line: ``python -m fastsockserver {run,bench,info} ...``."""
import runpy
import sys

RUN_USAGE = """usage: python -m fastsockserver run [--drain-timeout SECONDS] script.py [args ...]
       python -m fastsockserver run [--drain-timeout SECONDS] -m module [args ...]

Runs an unmodified program with fastsockserver installed as socketserver.
--drain-timeout: the first SIGTERM or SIGINT drains every server in
serve_forever() (no new connections, requests in progress finish, idle
keep-alive connections end), then the program goes on as after shutdown();
a second signal, or handlers still running 2 s after the deadline, end the
process at once."""


def _run(argv):
    import os
    if not argv or argv[0] in ("-h", "--help"):
        print(RUN_USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    from . import install
    if argv[0] == "--drain-timeout" or argv[0].startswith("--drain-timeout="):
        if "=" in argv[0]:
            value, argv = argv[0].partition("=")[2], argv[1:]
        else:
            value, argv = (argv[1] if len(argv) > 1 else ""), argv[2:]
        try:
            drain_timeout = float(value)
            if not drain_timeout >= 0:
                raise ValueError
        except ValueError:
            print("fastsockserver run: --drain-timeout takes seconds >= 0, not {!r}".format(
                value), file=sys.stderr)
            return 2
        if not argv:
            print(RUN_USAGE, file=sys.stderr)
            return 2
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": _run, "bench": _bench, "info": _info}
    if not argv or argv[0] not in commands:
        names = " | ".join(sorted(commands))
        print("usage: python -m fastsockserver {%s} ..." % names, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
