"""``install()``: make ``import socketserver`` give fastsockserver."""
import sys
import warnings


def _stdlib_socketserver_users(stdlib_module):
    """Names of loaded modules that hold the stdlib module or subclass its classes."""
    stdlib_classes = tuple(
        obj for obj in vars(stdlib_module).values()
        if isinstance(obj, type) and obj.__module__ == "socketserver")
    users = []
    for name, module in list(sys.modules.items()):
        if module is None or module is stdlib_module or name == "socketserver":
            continue
        try:
            values = list(vars(module).values())
        except TypeError:
            continue
        for value in values:
            if value is stdlib_module or (
                    isinstance(value, type) and stdlib_classes
                    and issubclass(value, stdlib_classes)):
                users.append(name)
                break
    return sorted(users)


def install():
    """Make ``import socketserver`` return fastsockserver from now on.

    Call it before importing ``http.server``, ``xmlrpc.server``,
    ``wsgiref.simple_server`` or any other module built on socketserver.
    Modules imported earlier keep the stdlib classes they already hold: if
    there are any, a ``RuntimeWarning`` names them. It also gives
    ``http.client`` a ``parse_headers`` that returns the same message without
    the email parser for plain header blocks, and ``http.server``'s
    ``BaseHTTPRequestHandler`` a ``date_time_string`` and
    ``log_date_time_string`` that make their text once a second, and
    ``strict_framing`` (default False: the stdlib's behaviour; see
    _framing) with the ``parse_request`` that honours it (now where
    the module is loaded, and whenever it is imported or reloaded; each
    stdlib function is its replacement's ``__wrapped__``). Calling it again
    is a no-op. Returns None.
    """
    fast = sys.modules[__name__.rpartition(".")[0]]
    previous = sys.modules.get("socketserver")
    if previous is fast:
        return
    sys.modules["socketserver"] = fast
    from ._http_patches import patch_http_modules  # (re, the parsers: not on import)
    patch_http_modules()
    if previous is None:
        return
    users = _stdlib_socketserver_users(previous)
    if users:
        warnings.warn(
            "fastsockserver.install() was called after these modules had "
            "imported the stdlib socketserver, so they still use it: "
            + ", ".join(users)
            + ". Call install() before importing them, or start the program "
            "with 'python -m fastsockserver run'.",
            RuntimeWarning, stacklevel=2)
