"""Run one of CPython's own test modules against fastsockserver.

    python tests/cpython_suite.py test.test_socketserver

Installs fastsockserver as ``socketserver`` before the test module (and
http.server, xmlrpc.server, wsgiref it imports) is loaded, checks that the
swap took, then runs the module with unittest. The implementation (compiled
or pure) follows FASTSOCKSERVER_NO_EXTENSIONS as everywhere else.
"""
import importlib
import sys
import unittest

import fastsockserver

# CPython tests that cannot apply to a drop-in, each with its reason.
# MiscTestCase.test_all checks __module__ == "socketserver"; it is replaced by
# the same check on fastsockserver's own names (see _test_all_fastsockserver).
REPLACED = {
    "test.test_socketserver": {"MiscTestCase.test_all"},
}


def _test_all_fastsockserver(self):
    # Objects defined in fastsockserver (reported as __module__ "fastsockserver")
    # are exactly __all__, and __all__ holds every name the stdlib exports.
    import socketserver
    self.assertIs(socketserver, fastsockserver)
    expected = [name for name in dir(fastsockserver)
                if not name.startswith("_")
                and getattr(getattr(fastsockserver, name), "__module__", None) == "fastsockserver"]
    expected.append("COMPILED")  # a bool: it has no __module__
    self.assertCountEqual(fastsockserver.__all__, expected)


def main(module_name):
    fastsockserver.install()
    if "socketserver" in sys.modules and sys.modules["socketserver"] is not fastsockserver:
        sys.exit("socketserver is not fastsockserver")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print("SKIP: {} cannot be imported: {}".format(module_name, exc))
        return 0
    for name in ("socketserver",):
        if name in vars(module):
            assert vars(module)[name] is fastsockserver, "the swap did not take"
    for dependent in ("http.server", "xmlrpc.server", "wsgiref.simple_server"):
        loaded = sys.modules.get(dependent)
        if loaded is not None and hasattr(loaded, "socketserver"):
            assert loaded.socketserver is fastsockserver, dependent + " uses the stdlib"

    for qualname in REPLACED.get(module_name, ()):
        class_name, method = qualname.split(".")
        if qualname == "MiscTestCase.test_all":
            setattr(getattr(module, class_name), method, _test_all_fastsockserver)

    print("fastsockserver {} ({}), Python {}".format(
        fastsockserver.__version__,
        "compiled" if fastsockserver.COMPILED else "pure",
        sys.version.split()[0]))
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
