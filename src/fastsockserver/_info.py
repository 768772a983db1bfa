"""``python -m fastsockserver info``: what a user asks when something is slow."""
import platform
import sys

from ._core_api import EPOLL, SYSTEM_CALL_KINDS

LOADGEN_NAME = "fastsockserver._loadgen"


def loadgen_status():
    """(True, None) when the benchmark's load generator imports; else (False, why)."""
    try:
        from . import _loadgen  # noqa: F401
    except ImportError as exc:
        if not sys.platform.startswith("linux"):
            return False, "it is built on Linux only (this is {})".format(sys.platform)
        from ._core_select import REINSTALL, build_failures
        failed = build_failures().get(LOADGEN_NAME)
        if failed is not None:
            return False, ("{} is not built: its compile failed when this package was "
                           "installed ({}); {}".format(LOADGEN_NAME, failed, REINSTALL))
        return False, "{} is not built ({})".format(LOADGEN_NAME, exc)
    return True, None


def _wait_in_use(core, compiled):
    if not compiled:
        from ._core_py import _ServerSelector
        return "{} (selectors, as the stdlib)".format(_ServerSelector.__name__)
    if EPOLL in core.FEATURES:
        return ("epoll where the core takes requests in itself; poll() where a hook "
                "it would replace is overridden")
    return "poll()"


def _system_calls(core, compiled):
    calls = ", ".join("{} {}".format(kind, core.SYSTEM_CALLS[kind]) for kind in SYSTEM_CALL_KINDS)
    if not compiled:
        return calls + " (the stdlib's)"
    if core.PORTABLE_CORE:
        return calls + " (portable core: the macOS/BSD path, FASTSOCKSERVER_PORTABLE_CORE)"
    return calls


def lines():
    """The report, a line each."""
    from . import __version__
    from ._core_select import COMPILED, WHY_PURE, core
    build = sys.implementation.name + " " + platform.python_version()
    if hasattr(sys, "_is_gil_enabled"):
        build += ", free-threaded build, GIL {}".format(
            "enabled" if sys._is_gil_enabled() else "disabled")
    available, why_not = loadgen_status()
    return [
        "fastsockserver {}".format(__version__),
        "python: {} ({})".format(build, sys.executable),
        "platform: {} {}".format(platform.system(), platform.machine()),
        "core: " + ("compiled ({})".format(core.__file__) if COMPILED
                    else "pure Python: " + WHY_PURE),
        "core features: {}".format(", ".join(sorted(core.FEATURES)) or "none"),
        "wait: " + _wait_in_use(core, COMPILED),
        "system calls: " + _system_calls(core, COMPILED),
        "load generator (bench): " + ("available" if available else "absent: " + why_not),
    ]


USAGE = """usage: python -m fastsockserver info

Prints, a line each: fastsockserver's version; the Python running it (and,
on a free-threaded build, whether the GIL is on); the platform; the core in
use, compiled or pure Python and why; the core's features; the wait it uses
(epoll, poll() or selectors); its system calls; and whether the benchmark's
load generator is built (and why not)."""


def main(argv):
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv:
        print(USAGE, file=sys.stderr)
        return 2
    for line in lines():
        print(line)
    return 0
